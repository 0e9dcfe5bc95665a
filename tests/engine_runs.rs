//! Runs driven end to end against the twin: every scenario ends resolved, escalated or waiting
//! for approval, with exactly the mutating requests its cause calls for; approvals continue a
//! parked run; pause stops at the next boundary and resume continues.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::twin::Twin;
use runbookd::config::{Config, DatabaseConfig, Overrides};
use runbookd::engine::dispatch::Dispatcher;
use runbookd::engine::estate::Estate;
use runbookd::engine::worker::Engine;
use runbookd::playbook;
use runbookd::playbook::compiled::Action;
use runbookd::store::Store;
use runbookd::store::approvals::{ApprovalStatus, Decision};
use runbookd::store::runs::{Run, RunState};
use runbookd::store::safety::{Limits, Switch};
use serde_json::json;

struct Setup {
    twin: Twin,
    engine: Engine,
    _db: tempfile::TempDir,
}

async fn setup(scenario: &str) -> Setup {
    let twin = Twin::start(scenario).await;
    twin.lab.with_world(|w| w.vzdump_duration = Duration::ZERO);
    let path = twin.lab.write_files().unwrap();
    let (config, source) = Config::load(Some(&path), &Overrides::default()).unwrap();
    let mut inventory = config.resolve_inventory(&source, &|_| None).unwrap();
    if let Some(ssh) = &mut inventory.ssh {
        ssh.connect_timeout = Duration::from_secs(1);
    }
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/playbooks/pbs-backup-stale.yaml"
    ))
    .unwrap();
    let mut playbook = playbook::parse(Path::new("p.yaml"), &text).unwrap();
    // The twin's clock stands still: poll without waiting.
    if let Some(step) = playbook.steps.get_mut("groups_fresh") {
        let Action::Poll(poll) = &mut step.action else {
            panic!("groups_fresh polls")
        };
        poll.every = Duration::from_millis(10);
        step.timeout = Duration::from_secs(1);
    }
    let db = tempfile::tempdir().unwrap();
    let store = Store::open(&DatabaseConfig {
        path: db.path().join("e.db"),
        busy_timeout_ms: 5_000,
    })
    .await
    .unwrap();
    let wake = Arc::new(tokio::sync::Notify::new());
    let engine = Engine {
        store,
        estate: Arc::new(Estate::connect(&inventory).unwrap()),
        playbooks: Arc::new(vec![playbook]),
        clock: twin.clock.clone(),
        owner: "worker-1".into(),
        lease_for: Duration::from_secs(60),
        limits: Limits {
            cooldown: Duration::ZERO,
            hourly_budget: 20,
            breaker_after: 3,
        },
        wake: wake.clone(),
    };
    Setup {
        twin,
        engine,
        _db: db,
    }
}

impl Setup {
    /// The reference Alertmanager notification, through intake and dispatch as the HTTP
    /// endpoint takes it: an incident, then its run.
    async fn start(&self) -> i64 {
        let body = common::reference("alertmanager-v4.json");
        let delivery = runbookd::intake::parse(body.as_bytes(), None).unwrap();
        let caller = runbookd::auth::Principal {
            name: "alertmanager".into(),
            role: runbookd::auth::Role::Ingest,
        };
        let outcomes = self
            .engine
            .store
            .record_delivery(&delivery, &body, &caller, self.now())
            .await
            .unwrap();
        let dispatcher = Dispatcher {
            playbooks: self.engine.playbooks.to_vec(),
            wake: self.engine.wake.clone(),
            estate: self.engine.estate.clone(),
        };
        let incident = outcomes[0].incident_id.unwrap();
        dispatcher
            .start(
                &self.engine.store,
                incident,
                &delivery.alerts[0],
                self.now(),
            )
            .await
            .unwrap()
            .expect("the playbook matches")
    }

    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.twin.lab.with_world(|w| w.now())
    }

    /// Works until no run needs a worker.
    async fn settle(&self) {
        for _ in 0..20 {
            if !self.engine.work_once().await.unwrap() {
                return;
            }
        }
        panic!("the engine never settled");
    }

    async fn run(&self, id: i64) -> Run {
        self.engine.store.run(id).await.unwrap().unwrap()
    }

    /// Every mutating request the twin received, in order.
    fn mutations(&self) -> Vec<String> {
        self.twin.lab.with_world(|w| {
            w.received
                .iter()
                .map(|r| format!("{} {}", r.host, r.text))
                .filter(|t| {
                    t.contains(" POST ")
                        || t.contains(" PUT ")
                        || t.contains(" DELETE ")
                        || ["restart", "qm start", " mount ", "umount"]
                            .iter()
                            .any(|m| t.contains(m))
                })
                .collect()
        })
    }

    async fn approve_pending(&self) -> String {
        let pending = self
            .engine
            .store
            .approvals(Some(ApprovalStatus::Pending), 10)
            .await
            .unwrap();
        assert_eq!(pending.len(), 1, "{pending:?}");
        self.engine
            .store
            .decide(pending[0].id, Decision::Approve, "alice", None, self.now())
            .await
            .unwrap();
        pending[0].step.clone()
    }
}

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
