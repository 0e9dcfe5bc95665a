//! Runs driven end to end against the twin by the app's own worker and dispatcher: every
//! scenario ends resolved, escalated or waiting for approval, with exactly the mutating
//! requests its cause calls for; approvals continue a parked run; pause stops at the next
//! boundary and resume continues.

use crate::common;

use std::time::Duration;

use common::engine::{spawn_app, stepped_worker};
use common::{ADMIN_TOKEN, TestApp, eventually, reference};
use runbookd::store::approvals::ApprovalStatus;
use runbookd::store::intake::IntakeAction;
use runbookd::store::runs::{Run, RunState};
use serde_json::{Value, json};

const RESTART: &str = "pbs timeout -k 5 120 systemctl restart proxmox-backup proxmox-backup-proxy";
/// The canary on ruapehu, then a full backup on every PVE host (through ruapehu's API).
const BACKUPS: [&str; 4] = [
    "ruapehu POST /api2/json/nodes/ruapehu/vzdump",
    "ruapehu POST /api2/json/nodes/hikurangi/vzdump",
    "ruapehu POST /api2/json/nodes/pihanga/vzdump",
    "ruapehu POST /api2/json/nodes/ruapehu/vzdump",
];

/// Longer than any scenario here takes, flaky SSH's retries included.
const WITHIN: Duration = Duration::from_secs(60);

/// The reference Alertmanager notification through the app's webhook; the run it started.
async fn start(app: &TestApp) -> i64 {
    start_as(app, "5f1c2a9e7b3d4c10").await
}

/// The reference notification as another alert (its own `fingerprint`), so it opens an
/// incident of its own; the run it started.
async fn start_as(app: &TestApp, fingerprint: &str) -> i64 {
    let body = reference("alertmanager-v4.json")
        .replace("\"5f1c2a9e7b3d4c10\"", &format!("{fingerprint:?}"));
    let response = app.post_alertmanager(&body).await;
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.unwrap();
    let alert = &answer["incidents"][0];
    assert_eq!(alert["action"], json!(IntakeAction::Opened), "{answer}");
    alert["run_id"].as_i64().expect("the playbook matches")
}

/// Run `id` once the worker has nothing left to do with it: ended, or waiting for a human.
async fn settled(app: &TestApp, id: i64) -> Run {
    eventually(&format!("run {id} to end or wait"), WITHIN, || async {
        let run = app.store.run(id).await.unwrap().unwrap();
        (run.state.is_final() || run.state == RunState::WaitingApproval).then_some(run)
    })
    .await
}

/// POSTs `body` to an operations endpoint as the admin, asserting 200.
async fn operate(app: &TestApp, path: &str, body: &str) {
    let response = app.post_json(path, ADMIN_TOKEN, body).await;
    assert_eq!(response.status(), 200, "POST {path}");
}

async fn pending(app: &TestApp) -> Vec<runbookd::store::approvals::Approval> {
    app.store
        .approvals(Some(ApprovalStatus::Pending), 10)
        .await
        .unwrap()
}

/// Approves the one pending approval through the API; its step.
async fn approve_pending(app: &TestApp) -> String {
    let pending = pending(app).await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    app.approve(pending[0].id).await;
    pending[0].step.clone()
}

/// Writes `facts` (raw text) and `step` into run `id` as an operator's sqlite3 would.
async fn overwrite(app: &TestApp, id: i64, facts: &str, step: Option<&str>) {
    use sqlx::Connection;
    let mut db = app.db().await;
    sqlx::query("UPDATE runs SET facts = ?, step = ? WHERE id = ?")
        .bind(facts)
        .bind(step)
        .bind(id)
        .execute(&mut db)
        .await
        .unwrap();
    db.close().await.unwrap();
}

/// The reference notification as the alert with `fingerprint`, its run held by pause while
/// `facts` and `step` are written into it, then resumed: the run as the worker left it.
async fn run_with_progress(
    app: &TestApp,
    fingerprint: &str,
    facts: &str,
    step: Option<&str>,
) -> (i64, Run) {
    operate(app, "/api/v1/pause", "").await;
    let id = start_as(app, fingerprint).await;
    overwrite(app, id, facts, step).await;
    operate(app, "/api/v1/resume", "").await;
    (id, settled(app, id).await)
}

#[tokio::test]
async fn stale_nfs_restarts_once_verifies_and_resolves() {
    let (app, twin) = spawn_app("stale-nfs", |_| {}).await;
    let id = start(&app).await;
    let run = settled(&app, id).await;
    assert_eq!(run.state, RunState::Resolved, "{:?}", run.outcome);
    let outcome = run.outcome.unwrap().0;
    assert_eq!(outcome["cause"], "stale_nfs_handles");
    let mut expected = vec![RESTART.to_owned()];
    expected.extend(BACKUPS.iter().map(|b| b.to_string()));
    assert_eq!(twin.mutations(), expected);
    let steps: Vec<String> = app
        .store
        .step_attempts(id)
        .await
        .unwrap()
        .into_iter()
        .map(|a| format!("{} {}", a.step, a.status))
        .collect();
    assert_eq!(
        steps,
        [
            "restart_pbs finished",
            "check_pbs_active finished",
            "canary_backup finished",
            "full_backup finished",
            "groups_fresh finished"
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn estale_mixed_and_pbs_down_restart_once_and_resolve() {
    for (scenario, cause) in [
        ("stale-nfs-estale", "stale_nfs_handles"),
        ("mixed", "stale_nfs_handles"),
        ("pbs-down", "pbs_services_down"),
    ] {
        let (app, twin) = spawn_app(scenario, |_| {}).await;
        let id = start(&app).await;
        let run = settled(&app, id).await;
        assert_eq!(
            run.state,
            RunState::Resolved,
            "{scenario}: {:?}",
            run.outcome
        );
        let outcome = run.outcome.unwrap().0;
        assert_eq!(outcome["cause"], cause, "{scenario}");
        let mut expected = vec![RESTART.to_owned()];
        expected.extend(BACKUPS.iter().map(|b| b.to_string()));
        assert_eq!(twin.mutations(), expected, "{scenario}");
        if scenario == "mixed" {
            assert_eq!(
                outcome["report"]["stale_decommissioned"]
                    .as_array()
                    .unwrap()
                    .len(),
                8,
                "the decommissioned groups are reported"
            );
        }
        app.stop().await;
    }
}

#[tokio::test]
async fn healthy_changes_nothing_and_resolves() {
    let (app, twin) = spawn_app("healthy", |_| {}).await;
    let id = start(&app).await;
    let run = settled(&app, id).await;
    assert_eq!(
        (run.state, run.outcome.unwrap().0["cause"].clone()),
        (RunState::Resolved, json!("nothing_stale"))
    );
    assert!(twin.mutations().is_empty(), "{:?}", twin.mutations());
    app.stop().await;
}

#[tokio::test]
async fn nfs_unmounted_asks_once_for_the_whole_remount_then_remounts_restarts_and_resolves() {
    let (app, twin) = spawn_app("nfs-unmounted", |_| {}).await;
    let id = start(&app).await;
    assert_eq!(settled(&app, id).await.state, RunState::WaitingApproval);
    assert!(twin.mutations().is_empty());
    assert_eq!(
        pending(&app).await[0].command,
        "umount -l /mnt/pbs-datastore\n\
         mount /mnt/pbs-datastore\n\
         systemctl restart proxmox-backup proxmox-backup-proxy\n\
         systemctl is-active proxmox-backup proxmox-backup-proxy",
        "the one approval lists every command of the sequence"
    );
    assert_eq!(approve_pending(&app).await, "lazy_unmount");
    let run = settled(&app, id).await;
    assert_eq!(run.state, RunState::Resolved, "{:?}", run.outcome);
    assert_eq!(
        app.store.approvals_for_run(id).await.unwrap().len(),
        1,
        "one tap: the later steps of the sequence do not ask again"
    );
    let mutations = twin.mutations();
    assert_eq!(
        &mutations[..3],
        [
            "pbs timeout -k 5 30 umount -l /mnt/pbs-datastore",
            "pbs timeout -k 5 60 mount /mnt/pbs-datastore",
            RESTART
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn causes_that_need_a_human_wait_and_unknown_ones_escalate() {
    for (scenario, step) in [
        ("cert-mismatch", "set_storage_fingerprint"),
        ("pbs-vm-stopped", "start_pbs_vm"),
        ("job-disabled", "enable_backup_job"),
    ] {
        let (app, twin) = spawn_app(scenario, |_| {}).await;
        let id = start(&app).await;
        assert_eq!(
            settled(&app, id).await.state,
            RunState::WaitingApproval,
            "{scenario}"
        );
        assert_eq!(pending(&app).await[0].step, step, "{scenario}");
        assert!(
            twin.mutations().is_empty(),
            "{scenario}: {:?}",
            twin.mutations()
        );
        app.stop().await;
    }
    let (app, _twin) = spawn_app("hung-nfs", |_| {}).await;
    let id = start(&app).await;
    let run = settled(&app, id).await;
    assert_eq!(run.state, RunState::Escalated);
    assert!(
        run.outcome.unwrap().0["reason"]
            .as_str()
            .unwrap()
            .contains("no known cause matched")
    );
    app.stop().await;
}

#[tokio::test]
async fn decommissioned_only_resolves_and_offers_cleanup() {
    let (app, twin) = spawn_app("decommissioned-only", |_| {}).await;
    let id = start(&app).await;
    let run = settled(&app, id).await;
    assert_eq!(run.state, RunState::Resolved);
    let outcome = run.outcome.unwrap().0;
    assert_eq!(outcome["offer"], json!(["forget_decommissioned_groups"]));
    assert_eq!(
        outcome["report"]["stale_decommissioned"]
            .as_array()
            .unwrap()
            .len(),
        8
    );
    assert!(twin.mutations().is_empty());
    app.stop().await;
}

/// The app's worker runs by itself, so a second worker on the same database takes the one
/// look this test must see: while paused, it finds nothing to take.
#[tokio::test]
async fn pause_holds_runs_and_resume_continues() {
    let (app, twin) = spawn_app("stale-nfs", |_| {}).await;
    operate(&app, "/api/v1/pause", "").await;
    let id = start(&app).await;
    assert!(
        !stepped_worker(&app, &twin).work_once().await.unwrap(),
        "nothing is taken while paused"
    );
    assert_eq!(app.store.run(id).await.unwrap().unwrap().step, None);
    operate(&app, "/api/v1/resume", "").await;
    let run = settled(&app, id).await;
    assert_eq!(run.state, RunState::Resolved);
    assert_eq!(run.step.as_deref(), Some("done"));
    app.stop().await;
}

#[tokio::test]
async fn dry_run_changes_nothing_but_records_every_command() {
    let (app, twin) = spawn_app("stale-nfs", |_| {}).await;
    operate(
        &app,
        "/api/v1/dry-run",
        r#"{"enabled": true, "reason": "rehearsal"}"#,
    )
    .await;
    let id = start(&app).await;
    settled(&app, id).await;
    assert!(twin.mutations().is_empty(), "{:?}", twin.mutations());
    let attempts = app.store.step_attempts(id).await.unwrap();
    assert_eq!(
        attempts[0].command,
        "systemctl restart proxmox-backup proxmox-backup-proxy"
    );
    assert_eq!(
        attempts[0].error.as_deref(),
        Some("dry run: recorded, not executed")
    );
    app.stop().await;
}

#[tokio::test]
async fn flaky_ssh_and_an_unreachable_host_still_end_the_run() {
    for scenario in ["flaky-ssh", "host-unreachable"] {
        let (app, twin) = spawn_app(scenario, |_| {}).await;
        let id = start(&app).await;
        // Within `settled`'s bound: the retries and timeouts are bounded.
        let run = settled(&app, id).await;
        assert!(run.state.is_final(), "{scenario}: {:?}", run.state);
        assert_eq!(
            run.outcome.unwrap().0["cause"],
            "nothing_stale",
            "{scenario}: dropped connections are retried"
        );
        assert!(twin.mutations().is_empty(), "{scenario}");
        app.stop().await;
    }
}

#[tokio::test]
async fn corrupt_progress_escalates_with_the_reason_and_never_resolves() {
    let (app, twin) = spawn_app("stale-nfs", |_| {}).await;
    let labels =
        r#""labels": {"backup_type": "vm", "backup_id": "451", "datastore": "pbs-datastore"}"#;
    for (i, (facts, step, reason)) in [
        ("{\"labels\": {\"backup_id\": 45", None, "cannot be decoded"),
        ("not json at all", Some("restart_pbs"), "cannot be decoded"),
        (
            &*format!(r#"{{"version": 2, {labels}, "plan": ["restart_pbs"]}}"#),
            Some("restart_pbs"),
            "version 2",
        ),
        (
            &*format!(r#"{{"version": 1, {labels}, "plan": ["restart_pbs"]}}"#),
            Some("labels"),
            "not in its plan",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let (_, run) = run_with_progress(&app, &format!("corrupt-{i}"), facts, step).await;
        assert_eq!(run.state, RunState::Escalated, "{facts}: {:?}", run.outcome);
        let outcome = run.outcome.unwrap().0;
        assert!(
            outcome["reason"].as_str().unwrap().contains(reason),
            "{facts}: {outcome}"
        );
    }
    assert!(twin.mutations().is_empty(), "{:?}", twin.mutations());
    app.stop().await;
}

#[tokio::test]
async fn a_step_the_playbook_does_not_have_escalates() {
    let (app, twin) = spawn_app("stale-nfs", |_| {}).await;
    let facts = r#"{"version": 1, "labels": {"backup_type": "vm", "backup_id": "451"},
        "cause": "stale_nfs_handles", "plan": ["restart_pbs_v0", "groups_fresh"], "remediation_len": 1}"#;
    let (id, run) =
        run_with_progress(&app, "5f1c2a9e7b3d4c10", facts, Some("restart_pbs_v0")).await;
    assert_eq!(run.state, RunState::Escalated, "{:?}", run.outcome);
    assert_eq!(
        run.outcome.unwrap().0["reason"],
        "the run's plan names step 'restart_pbs_v0', which its playbook does not have"
    );
    assert!(twin.mutations().is_empty(), "{:?}", twin.mutations());
    assert!(app.store.step_attempts(id).await.unwrap().is_empty());
    app.stop().await;
}
