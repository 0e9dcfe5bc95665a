//! Runs driven end to end against the twin: every scenario ends resolved, escalated or waiting
//! for approval, with exactly the mutating requests its cause calls for; approvals continue a
//! parked run; pause stops at the next boundary and resume continues.

use crate::common;

use std::time::Duration;

use common::engine::{Setup, setup};
use runbookd::store::approvals::ApprovalStatus;
use runbookd::store::runs::RunState;
use runbookd::store::safety::Switch;
use serde_json::json;

const RESTART: &str = "pbs timeout -k 5 120 systemctl restart proxmox-backup proxmox-backup-proxy";
/// The canary on ruapehu, then a full backup on every PVE host (through ruapehu's API).
const BACKUPS: [&str; 4] = [
    "ruapehu POST /api2/json/nodes/ruapehu/vzdump",
    "ruapehu POST /api2/json/nodes/hikurangi/vzdump",
    "ruapehu POST /api2/json/nodes/pihanga/vzdump",
    "ruapehu POST /api2/json/nodes/ruapehu/vzdump",
];

#[tokio::test]
async fn stale_nfs_restarts_once_verifies_and_resolves() {
    let s = setup("stale-nfs").await;
    let id = s.start().await;
    s.settle().await;
    let run = s.run(id).await;
    assert_eq!(run.state, RunState::Resolved, "{:?}", run.outcome);
    let outcome = run.outcome.unwrap().0;
    assert_eq!(outcome["cause"], "stale_nfs_handles");
    let mut expected = vec![RESTART.to_owned()];
    expected.extend(BACKUPS.iter().map(|b| b.to_string()));
    assert_eq!(s.mutations(), expected);
    let steps: Vec<String> = s
        .engine
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
}

#[tokio::test]
async fn estale_mixed_and_pbs_down_restart_once_and_resolve() {
    for (scenario, cause) in [
        ("stale-nfs-estale", "stale_nfs_handles"),
        ("mixed", "stale_nfs_handles"),
        ("pbs-down", "pbs_services_down"),
    ] {
        let s = setup(scenario).await;
        let id = s.start().await;
        s.settle().await;
        let run = s.run(id).await;
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
        assert_eq!(s.mutations(), expected, "{scenario}");
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
    }
}

#[tokio::test]
async fn healthy_changes_nothing_and_resolves() {
    let s = setup("healthy").await;
    let id = s.start().await;
    s.settle().await;
    let run = s.run(id).await;
    assert_eq!(
        (run.state, run.outcome.unwrap().0["cause"].clone()),
        (RunState::Resolved, json!("nothing_stale"))
    );
    assert!(s.mutations().is_empty(), "{:?}", s.mutations());
}

#[tokio::test]
async fn nfs_unmounted_asks_once_for_the_whole_remount_then_remounts_restarts_and_resolves() {
    let s = setup("nfs-unmounted").await;
    let id = s.start().await;
    s.settle().await;
    assert_eq!(s.run(id).await.state, RunState::WaitingApproval);
    assert!(s.mutations().is_empty());
    let pending = s
        .engine
        .store
        .approvals(Some(ApprovalStatus::Pending), 10)
        .await
        .unwrap();
    assert_eq!(
        pending[0].command,
        "umount -l /mnt/pbs-datastore\n\
         mount /mnt/pbs-datastore\n\
         systemctl restart proxmox-backup proxmox-backup-proxy\n\
         systemctl is-active proxmox-backup proxmox-backup-proxy",
        "the one approval lists every command of the sequence"
    );
    assert_eq!(s.approve_pending().await, "lazy_unmount");
    s.settle().await;
    let run = s.run(id).await;
    assert_eq!(run.state, RunState::Resolved, "{:?}", run.outcome);
    assert_eq!(
        s.engine.store.approvals_for_run(id).await.unwrap().len(),
        1,
        "one tap: the later steps of the sequence do not ask again"
    );
    let mutations = s.mutations();
    assert_eq!(
        &mutations[..3],
        [
            "pbs timeout -k 5 30 umount -l /mnt/pbs-datastore",
            "pbs timeout -k 5 60 mount /mnt/pbs-datastore",
            RESTART
        ]
    );
}

#[tokio::test]
async fn causes_that_need_a_human_wait_and_unknown_ones_escalate() {
    for (scenario, step) in [
        ("cert-mismatch", "set_storage_fingerprint"),
        ("pbs-vm-stopped", "start_pbs_vm"),
        ("job-disabled", "enable_backup_job"),
    ] {
        let s = setup(scenario).await;
        let id = s.start().await;
        s.settle().await;
        assert_eq!(
            s.run(id).await.state,
            RunState::WaitingApproval,
            "{scenario}"
        );
        let pending = s
            .engine
            .store
            .approvals(Some(ApprovalStatus::Pending), 10)
            .await
            .unwrap();
        assert_eq!(pending[0].step, step, "{scenario}");
        assert!(s.mutations().is_empty(), "{scenario}: {:?}", s.mutations());
    }
    let s = setup("hung-nfs").await;
    let id = s.start().await;
    s.settle().await;
    let run = s.run(id).await;
    assert_eq!(run.state, RunState::Escalated);
    assert!(
        run.outcome.unwrap().0["reason"]
            .as_str()
            .unwrap()
            .contains("no known cause matched")
    );
}

#[tokio::test]
async fn decommissioned_only_resolves_and_offers_cleanup() {
    let s = setup("decommissioned-only").await;
    let id = s.start().await;
    s.settle().await;
    let run = s.run(id).await;
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
    assert!(s.mutations().is_empty());
}

#[tokio::test]
async fn pause_holds_runs_and_resume_continues() {
    let s = setup("stale-nfs").await;
    s.engine
        .store
        .set_switch(Switch::Paused, true, "alice", s.now())
        .await
        .unwrap();
    let id = s.start().await;
    assert!(
        !s.engine.work_once().await.unwrap(),
        "nothing is taken while paused"
    );
    assert_eq!(s.run(id).await.step, None);
    s.engine
        .store
        .set_switch(Switch::Paused, false, "alice", s.now())
        .await
        .unwrap();
    s.settle().await;
    assert_eq!(s.run(id).await.state, RunState::Resolved);
    assert_eq!(s.run(id).await.step.as_deref(), Some("done"));
}

#[tokio::test]
async fn dry_run_changes_nothing_but_records_every_command() {
    let s = setup("stale-nfs").await;
    s.engine
        .store
        .set_switch(Switch::DryRun, true, "alice", s.now())
        .await
        .unwrap();
    let id = s.start().await;
    s.settle().await;
    assert!(s.mutations().is_empty(), "{:?}", s.mutations());
    let attempts = s.engine.store.step_attempts(id).await.unwrap();
    assert_eq!(
        attempts[0].command,
        "systemctl restart proxmox-backup proxmox-backup-proxy"
    );
    assert_eq!(
        attempts[0].error.as_deref(),
        Some("dry run: recorded, not executed")
    );
}

#[tokio::test]
async fn flaky_ssh_and_an_unreachable_host_still_end_the_run_in_time() {
    for scenario in ["flaky-ssh", "host-unreachable"] {
        let s = setup(scenario).await;
        let id = s.start().await;
        let started = std::time::Instant::now();
        s.settle().await;
        let run = s.run(id).await;
        assert!(run.state.is_final(), "{scenario}: {:?}", run.state);
        assert_eq!(
            run.outcome.unwrap().0["cause"],
            "nothing_stale",
            "{scenario}: dropped connections are retried"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{scenario}: {:?}",
            started.elapsed()
        );
        assert!(s.mutations().is_empty(), "{scenario}");
    }
}

impl Setup {
    /// Writes `facts` (raw text) and `step` into run `id` as an operator's sqlite3 would.
    async fn overwrite(&self, id: i64, facts: &str, step: Option<&str>) {
        use sqlx::{ConnectOptions, Connection};
        let mut db = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&self.db_path)
            .connect()
            .await
            .unwrap();
        sqlx::query("UPDATE runs SET facts = ?, step = ? WHERE id = ?")
            .bind(facts)
            .bind(step)
            .bind(id)
            .execute(&mut db)
            .await
            .unwrap();
        db.close().await.unwrap();
    }
}

#[tokio::test]
async fn corrupt_progress_escalates_with_the_reason_and_never_resolves() {
    let s = setup("stale-nfs").await;
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
        let id = s.start_as(&format!("corrupt-{i}")).await;
        s.overwrite(id, facts, step).await;
        s.settle().await;
        let run = s.run(id).await;
        assert_eq!(run.state, RunState::Escalated, "{facts}: {:?}", run.outcome);
        let outcome = run.outcome.unwrap().0;
        assert!(
            outcome["reason"].as_str().unwrap().contains(reason),
            "{facts}: {outcome}"
        );
    }
    assert!(s.mutations().is_empty(), "{:?}", s.mutations());
}

#[tokio::test]
async fn a_step_the_playbook_does_not_have_escalates() {
    let s = setup("stale-nfs").await;
    let id = s.start().await;
    let facts = r#"{"version": 1, "labels": {"backup_type": "vm", "backup_id": "451"},
        "cause": "stale_nfs_handles", "plan": ["restart_pbs_v0", "groups_fresh"], "remediation_len": 1}"#;
    s.overwrite(id, facts, Some("restart_pbs_v0")).await;
    s.settle().await;
    let run = s.run(id).await;
    assert_eq!(run.state, RunState::Escalated, "{:?}", run.outcome);
    assert_eq!(
        run.outcome.unwrap().0["reason"],
        "the run's plan names step 'restart_pbs_v0', which its playbook does not have"
    );
    assert!(s.mutations().is_empty(), "{:?}", s.mutations());
    assert!(s.engine.store.step_attempts(id).await.unwrap().is_empty());
}
