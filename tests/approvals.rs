//! Approvals: a waiting run holds no worker; a decision is made once; expiry follows
//! `on_timeout`; cancelling a run cancels what it waited for.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use futures::future::join_all;
use runbookd::config::DatabaseConfig;
use runbookd::store::Store;
use runbookd::store::approvals::{
    ApprovalError, ApprovalRequest, ApprovalStatus, Decided, Decision, OnTimeout,
};
use runbookd::store::runs::{Created, Lease, NewRun, RunError, RunState};
use serde_json::json;

/// The repository's playbook, as a run pins it.
static PLAYBOOK: std::sync::LazyLock<runbookd::playbook::PlaybookVersion> =
    std::sync::LazyLock::new(|| {
        runbookd::playbook::PlaybookVersion::of(include_str!("../playbooks/pbs-backup-stale.yaml"))
    });

const LEASE: Duration = Duration::from_secs(30);

fn t(seconds: i64) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 26, 3, 0, 0).unwrap() + chrono::Duration::seconds(seconds)
}

/// A store with one run parked on an approval of `remount_nfs` that expires in 10 minutes.
async fn waiting(on_timeout: OnTimeout) -> (Store, tempfile::TempDir, i64, i64, Lease) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&DatabaseConfig {
        path: dir.path().join("a.db"),
        busy_timeout_ms: 5_000,
    })
    .await
    .unwrap();
    let run = NewRun {
        incident_id: None,
        playbook: "pbs-backup-stale",
        version: &PLAYBOOK,
        target: "pbs",
        dry_run: false,
        actor: "engine",
        facts: serde_json::json!({}),
    };
    let Created::New(run_id) = store.create_run(run, t(0)).await.unwrap() else {
        panic!()
    };
    let (lease, _) = store
        .acquire_run("worker-a", LEASE, t(0))
        .await
        .unwrap()
        .unwrap();
    let request = ApprovalRequest {
        step: "remount_nfs",
        command: "umount -l /mnt/pbs-datastore",
        risk: "high",
        evidence: json!({"nfs_mounted": false}),
        expires_in: Duration::from_secs(600),
        on_timeout,
        actions: Vec::new(),
    };
    let approval = store.request_approval(&lease, request, t(1)).await.unwrap();
    (store, dir, run_id, approval, lease)
}

#[tokio::test]
async fn a_waiting_run_holds_no_worker_and_an_approval_sends_it_back() {
    let (store, _dir, run_id, approval, lease) = waiting(OnTimeout::Reject).await;
    assert_eq!(
        store.run(run_id).await.unwrap().unwrap().state,
        RunState::WaitingApproval
    );
    assert!(
        store
            .acquire_run("worker-b", LEASE, t(3600))
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        store.advance(&lease, "x", &json!({}), "late", t(2)).await,
        Err(RunError::LeaseLost { .. })
    ));

    let decided = store
        .decide(approval, Decision::Approve, "alice", Some("go"), t(60))
        .await
        .unwrap();
    assert_eq!(decided, Decided::Now(ApprovalStatus::Approved));
    let (_, run) = store
        .acquire_run("worker-b", LEASE, t(61))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.step.as_deref(), Some("remount_nfs"));
    let approval = store.approval(approval).await.unwrap().unwrap();
    assert_eq!(
        (approval.decided_by.as_deref(), approval.comment.as_deref()),
        (Some("alice"), Some("go"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_decisions_at_once_give_one() {
    let (store, _dir, run_id, approval, _) = waiting(OnTimeout::Reject).await;
    let results = join_all([
        store.decide(approval, Decision::Approve, "alice", None, t(60)),
        store.decide(approval, Decision::Reject, "bob", None, t(60)),
    ])
    .await;
    let results: Vec<Decided> = results.into_iter().map(Result::unwrap).collect();
    let first: Vec<&Decided> = results
        .iter()
        .filter(|d| matches!(d, Decided::Now(_)))
        .collect();
    assert_eq!(first.len(), 1, "{results:?}");
    let Decided::Now(status) = first[0] else {
        unreachable!()
    };
    let second = results
        .iter()
        .find(|d| matches!(d, Decided::Already { .. }))
        .unwrap();
    assert!(
        matches!(second, Decided::Already { status: s, .. } if s == status),
        "the second reports the first: {results:?}"
    );
    let run = store.run(run_id).await.unwrap().unwrap();
    let expected = if *status == ApprovalStatus::Approved {
        RunState::Pending
    } else {
        RunState::Escalated
    };
    assert_eq!(run.state, expected);
}

#[tokio::test]
async fn a_rejection_escalates_the_run() {
    let (store, _dir, run_id, approval, _) = waiting(OnTimeout::Reject).await;
    store
        .decide(
            approval,
            Decision::Reject,
            "bob",
            Some("not at 3 am"),
            t(60),
        )
        .await
        .unwrap();
    let run = store.run(run_id).await.unwrap().unwrap();
    assert_eq!(run.state, RunState::Escalated);
    assert_eq!(run.outcome.unwrap().0["comment"], "not at 3 am");
}

#[tokio::test]
async fn an_expired_approval_cannot_be_approved_and_follows_on_timeout() {
    let (store, _dir, run_id, approval, _) = waiting(OnTimeout::Reject).await;
    assert!(matches!(
        store
            .decide(approval, Decision::Approve, "alice", None, t(601))
            .await,
        Err(ApprovalError::Expired(..))
    ));
    assert_eq!(store.expire_approvals(t(601)).await.unwrap(), 1);
    assert_eq!(
        store.approval(approval).await.unwrap().unwrap().status,
        ApprovalStatus::Expired
    );
    assert_eq!(
        store.run(run_id).await.unwrap().unwrap().state,
        RunState::Escalated
    );
    assert_eq!(store.expire_approvals(t(700)).await.unwrap(), 0);

    let (store, _dir, run_id, _, _) = waiting(OnTimeout::Approve).await;
    assert_eq!(store.expire_approvals(t(601)).await.unwrap(), 1);
    assert_eq!(
        store.run(run_id).await.unwrap().unwrap().state,
        RunState::Pending,
        "on_timeout: approve continues"
    );
}

#[tokio::test]
async fn cancelling_the_run_cancels_its_pending_approval() {
    let (store, _dir, run_id, approval, _) = waiting(OnTimeout::Reject).await;
    store
        .cancel_run(
            run_id,
            "alertmanager",
            "the source resolved the alert",
            t(30),
        )
        .await
        .unwrap();
    let approval = store.approval(approval).await.unwrap().unwrap();
    assert_eq!(approval.status, ApprovalStatus::Cancelled);
    assert_eq!(
        store
            .approvals(Some(ApprovalStatus::Pending), 10)
            .await
            .unwrap()
            .len(),
        0
    );
    assert_eq!(store.approvals(None, 10).await.unwrap().len(), 1);
}

/// If a run's state is changed behind runbookd's back (an operator's sqlite3), its pending
/// approval cannot be decided: a decision that moves no run would be recorded for nothing.
#[tokio::test]
async fn an_approval_whose_run_no_longer_waits_cannot_be_decided_and_nothing_changes() {
    use sqlx::{ConnectOptions, Connection};
    let (store, dir, run_id, approval, _) = waiting(OnTimeout::Reject).await;
    let mut sqlite3 = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.path().join("a.db"))
        .connect()
        .await
        .unwrap();
    sqlx::query("UPDATE runs SET state = 'running' WHERE id = ?")
        .bind(run_id)
        .execute(&mut sqlite3)
        .await
        .unwrap();
    let audit_rows = || async {
        let mut db = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.path().join("a.db"))
            .connect()
            .await
            .unwrap();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_events")
            .fetch_one(&mut db)
            .await
            .unwrap();
        db.close().await.unwrap();
        n
    };
    let audit_before = audit_rows().await;

    for decision in [Decision::Approve, Decision::Reject] {
        let refused = store
            .decide(approval, decision, "alice", Some("go"), t(60))
            .await;
        let Err(error @ ApprovalError::RunNotWaiting { .. }) = refused else {
            panic!("{decision:?} of an approval whose run is not waiting: {refused:?}");
        };
        assert!(
            error.to_string().contains("is not waiting for approval"),
            "{error}"
        );
    }
    let unchanged = store.approval(approval).await.unwrap().unwrap();
    assert_eq!(unchanged.status, ApprovalStatus::Pending);
    assert_eq!(unchanged.decided_by, None);
    assert_eq!(unchanged.comment, None);
    let run = store.run(run_id).await.unwrap().unwrap();
    assert_eq!(run.state, RunState::Running);
    assert_eq!(run.outcome, None);
    assert_eq!(audit_rows().await, audit_before);
    sqlite3.close().await.unwrap();
}
