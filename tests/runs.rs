//! Run state transitions: one active run per target, fenced leases, step attempts written
//! around side effects, parking for approval, cancellation. Against a real SQLite file.

use crate::common;

use std::time::Duration;

use chrono::{TimeZone, Utc};
use futures::future::join_all;
use runbookd::store::approvals::{ApprovalRequest, OnTimeout};
use runbookd::store::runs::{Created, Ending, NewRun, RunError, RunState, StepResult};
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

fn new_run(target: &str) -> NewRun<'_> {
    NewRun {
        incident_id: None,
        playbook: "pbs-backup-stale",
        version: &PLAYBOOK,
        target,
        dry_run: false,
        actor: "engine",
        facts: serde_json::json!({}),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_for_one_target_make_one_run() {
    let (store, _dir) = common::temp_store().await;
    let results = join_all((0..50).map(|_| store.create_run(new_run("pbs"), t(0)))).await;
    let created: Vec<Created> = results.into_iter().map(Result::unwrap).collect();
    let new: Vec<i64> = created
        .iter()
        .filter_map(|c| match c {
            Created::New(id) => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(new.len(), 1);
    assert!(
        created
            .iter()
            .all(|c| matches!(c, Created::New(id) | Created::AlreadyActive(id) if *id == new[0]))
    );
    // Another target is independent.
    assert!(matches!(
        store.create_run(new_run("other"), t(0)).await.unwrap(),
        Created::New(_)
    ));
}

#[tokio::test]
async fn fenced_attempts_ignore_stale_workers() {
    let (store, _dir) = common::temp_store().await;
    let Created::New(id) = store.create_run(new_run("pbs"), t(0)).await.unwrap() else {
        panic!()
    };
    let (a, _) = store
        .acquire_run("worker-a", LEASE, t(0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((a.run_id, a.attempt), (id, 1));
    store
        .advance(
            &a,
            "diagnose",
            &json!({"nfs_mounted": true}),
            "diagnosis started",
            t(1),
        )
        .await
        .unwrap();
    assert!(
        store
            .acquire_run("worker-b", LEASE, t(29))
            .await
            .unwrap()
            .is_none(),
        "the lease still holds"
    );

    // Worker A stalls past its lease; B takes over where A was.
    let (b, run) = store
        .acquire_run("worker-b", LEASE, t(31))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.attempt, 2);
    assert_eq!(run.step.as_deref(), Some("diagnose"));
    assert_eq!(run.facts.0, json!({"nfs_mounted": true}));

    // Everything A tries now changes nothing.
    assert!(matches!(
        store
            .advance(&a, "remediate", &json!({}), "late", t(32))
            .await,
        Err(RunError::LeaseLost { .. })
    ));
    assert!(matches!(
        store.heartbeat(&a, LEASE, t(32)).await,
        Err(RunError::LeaseLost { .. })
    ));
    assert!(matches!(
        store
            .step_started(&a, "restart", Some("pbs"), "systemctl restart x", t(32))
            .await,
        Err(RunError::LeaseLost { .. })
    ));
    assert!(matches!(
        store
            .finish_run(&a, Ending::Resolved, &json!({}), t(32))
            .await,
        Err(RunError::LeaseLost { .. })
    ));
    assert!(
        store.step_attempts(id).await.unwrap().is_empty(),
        "a stale worker never starts a side effect"
    );

    store
        .finish_run(&b, Ending::Resolved, &json!({"cause": "stale_nfs"}), t(33))
        .await
        .unwrap();
    let run = store.run(id).await.unwrap().unwrap();
    assert_eq!((run.state, run.attempt), (RunState::Resolved, 2));
    let actions: Vec<String> = store
        .run_timeline(id, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| format!("{} {}", e.actor, e.action))
        .collect();
    assert_eq!(
        actions,
        [
            "engine run.created",
            "worker-a run.leased",
            "worker-a run.advanced",
            "worker-b run.leased",
            "worker-b run.finished"
        ]
    );
}

#[tokio::test]
async fn heartbeats_keep_the_lease() {
    let (store, _dir) = common::temp_store().await;
    store.create_run(new_run("pbs"), t(0)).await.unwrap();
    let (a, _) = store
        .acquire_run("worker-a", LEASE, t(0))
        .await
        .unwrap()
        .unwrap();
    store.heartbeat(&a, LEASE, t(20)).await.unwrap();
    assert!(
        store
            .acquire_run("worker-b", LEASE, t(45))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .acquire_run("worker-b", LEASE, t(51))
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn a_step_is_written_started_before_and_finished_after_its_side_effect() {
    let (store, _dir) = common::temp_store().await;
    let Created::New(id) = store.create_run(new_run("pbs"), t(0)).await.unwrap() else {
        panic!()
    };
    let (a, _) = store
        .acquire_run("worker-a", LEASE, t(0))
        .await
        .unwrap()
        .unwrap();
    let step = store
        .step_started(
            &a,
            "restart_pbs",
            Some("pbs"),
            "systemctl restart proxmox-backup proxmox-backup-proxy",
            t(1),
        )
        .await
        .unwrap();
    let started = store.step_attempts(id).await.unwrap();
    assert_eq!(
        (started[0].status.as_str(), started[0].finished_at),
        ("started", None)
    );

    // The worker dies mid-step; the new worker sees the unfinished attempt.
    let (b, _) = store
        .acquire_run("worker-b", LEASE, t(60))
        .await
        .unwrap()
        .unwrap();
    let unfinished: Vec<_> = store
        .step_attempts(id)
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.status == "started")
        .collect();
    assert_eq!(unfinished.len(), 1);
    assert_eq!(unfinished[0].run_attempt, 1);

    // A late finish from the dead worker is refused: the attempt stays `started`, for its new
    // holder's recheck. The holder's own attempt is recorded when it finishes.
    let result = StepResult {
        exit_status: Some(0),
        stdout: Some(String::new()),
        duration: Duration::from_millis(1200),
        ..Default::default()
    };
    assert!(matches!(
        store.step_finished(&a, step, &result, t(61)).await,
        Err(RunError::LeaseLost { .. })
    ));
    assert_eq!(store.step_attempts(id).await.unwrap()[0].status, "started");
    let again = store
        .step_started(&b, "restart_pbs", Some("pbs"), "systemctl restart x", t(62))
        .await
        .unwrap();
    store
        .step_finished(&b, again, &result, t(63))
        .await
        .unwrap();
    let finished = &store.step_attempts(id).await.unwrap()[1];
    assert_eq!(
        (
            finished.status.as_str(),
            finished.exit_status,
            finished.duration_ms,
            finished.run_attempt
        ),
        ("finished", Some(0), Some(1200), 2)
    );
}

#[tokio::test]
async fn cancelling_stops_the_worker_at_its_next_write_and_frees_the_target() {
    let (store, _dir) = common::temp_store().await;
    let Created::New(id) = store.create_run(new_run("pbs"), t(0)).await.unwrap() else {
        panic!()
    };
    let (a, _) = store
        .acquire_run("worker-a", LEASE, t(0))
        .await
        .unwrap()
        .unwrap();
    store
        .cancel_run(id, "alertmanager", "the source resolved the alert", t(1))
        .await
        .unwrap();
    assert!(matches!(
        store
            .advance(&a, "remediate", &json!({}), "next", t(2))
            .await,
        Err(RunError::LeaseLost { .. })
    ));
    assert!(matches!(
        store.cancel_run(id, "x", "again", t(3)).await,
        Err(RunError::Final {
            state: "cancelled",
            ..
        })
    ));
    assert!(matches!(
        store.cancel_run(999, "x", "none", t(3)).await,
        Err(RunError::NotFound(999))
    ));
    assert!(
        matches!(store.create_run(new_run("pbs"), t(4)).await.unwrap(), Created::New(x) if x != id)
    );
    let run = store.run(id).await.unwrap().unwrap();
    assert_eq!(run.state, RunState::Cancelled);
    assert_eq!(
        run.outcome.unwrap().0["reason"],
        "the source resolved the alert"
    );
}

/// `runs(ids)` loads a page's runs in one query: each that exists, keyed by id.
#[tokio::test]
async fn runs_by_id_returns_those_that_exist() {
    let (store, _dir) = common::temp_store().await;
    let mut ids = Vec::new();
    for target in ["pbs", "pve-1", "pve-2"] {
        let Created::New(id) = store.create_run(new_run(target), t(0)).await.unwrap() else {
            panic!("a new run for {target}")
        };
        ids.push(id);
    }
    assert!(store.runs(&[]).await.unwrap().is_empty());
    let found = store
        .runs(&[ids[2], ids[0], ids[2], 999_999])
        .await
        .unwrap();
    let mut keys: Vec<i64> = found.keys().copied().collect();
    keys.sort_unstable();
    assert_eq!(keys, [ids[0], ids[2]]);
    assert_eq!(found[&ids[0]].target, "pbs");
    assert_eq!(found[&ids[2]].target, "pve-2");
}

#[tokio::test]
async fn a_frozen_worker_that_lost_its_lease_writes_nothing() {
    let (store, _dir) = common::temp_store().await;
    let Created::New(id) = store.create_run(new_run("pbs"), t(0)).await.unwrap() else {
        panic!()
    };
    let (a, _) = store
        .acquire_run("worker-a", LEASE, t(0))
        .await
        .unwrap()
        .unwrap();
    let step = store
        .step_started(&a, "restart_pbs", Some("pbs"), "systemctl restart x", t(1))
        .await
        .unwrap();
    // A freezes past its lease; B takes the run over.
    let (b, _) = store
        .acquire_run("worker-b", LEASE, t(40))
        .await
        .unwrap()
        .unwrap();
    let before = store.run(id).await.unwrap().unwrap();
    let trail = store.run_timeline(id, 100).await.unwrap().len();

    // A wakes up and carries on as if it still held the run.
    let result = StepResult {
        exit_status: Some(0),
        duration: Duration::from_millis(5),
        ..Default::default()
    };
    let lost = |r: Result<(), RunError>| matches!(r, Err(RunError::LeaseLost { .. }));
    assert!(lost(store.step_finished(&a, step, &result, t(41)).await));
    assert!(lost(
        store
            .advance(
                &a,
                "check_pbs_active",
                &json!({"late": true}),
                "late",
                t(41)
            )
            .await
    ));
    assert!(lost(
        store
            .finish_run(&a, Ending::Resolved, &json!({"late": true}), t(41))
            .await
    ));
    let request = ApprovalRequest {
        step: "restart_pbs",
        command: "systemctl restart x",
        risk: "high",
        evidence: json!({}),
        expires_in: Duration::from_secs(3600),
        on_timeout: OnTimeout::Reject,
        actions: Vec::new(),
    };
    assert!(matches!(
        store.request_approval(&a, request, t(41)).await,
        Err(RunError::LeaseLost { .. })
    ));

    // Nothing changed: the run, its step attempt, approvals, the trail.
    let after = store.run(id).await.unwrap().unwrap();
    assert_eq!(
        (
            after.state,
            &after.step,
            &after.facts.0,
            after.attempt,
            &after.lease_owner,
            &after.outcome.as_ref().map(|o| o.0.clone())
        ),
        (
            before.state,
            &before.step,
            &before.facts.0,
            before.attempt,
            &before.lease_owner,
            &before.outcome.as_ref().map(|o| o.0.clone())
        )
    );
    assert_eq!(after.lease_owner.as_deref(), Some("worker-b"));
    let attempts = store.step_attempts(id).await.unwrap();
    assert_eq!(
        (
            attempts.len(),
            attempts[0].status.as_str(),
            attempts[0].exit_status
        ),
        (1, "started", None)
    );
    assert!(store.approvals_for_run(id).await.unwrap().is_empty());
    assert_eq!(store.run_timeline(id, 100).await.unwrap().len(), trail);
    // The holder's writes still go through.
    store
        .finish_run(&b, Ending::Resolved, &json!({}), t(42))
        .await
        .unwrap();
}
