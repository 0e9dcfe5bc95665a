//! Steps against the twin, with every rule around them: approval by automation level and
//! policy, dry-run, the cooldown, `only_if`, and the step attempt written around the effect.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::twin::Twin;
use runbookd::config::{Config, DatabaseConfig, Overrides};
use runbookd::engine::diagnose::diagnose;
use runbookd::engine::estate::Estate;
use runbookd::engine::step::{StepContext, StepOutcome, run_step};
use runbookd::intake::Labels;
use runbookd::playbook::{self, Playbook};
use runbookd::store::Store;
use runbookd::store::approvals::ApprovalStatus;
use runbookd::store::runs::{Created, Lease, NewRun, RunState};
use runbookd::store::safety::{Blocked, Limits};

const LIMITS: Limits = Limits {
    cooldown: Duration::ZERO,
    hourly_budget: 10,
    breaker_after: 3,
};

struct Bench {
    twin: Twin,
    store: Store,
    estate: Estate,
    playbook: Playbook,
    facts: BTreeMap<String, serde_json::Value>,
    _db: tempfile::TempDir,
}

impl Bench {
    async fn new(scenario: &str) -> Self {
        let twin = Twin::start(scenario).await;
        twin.lab.with_world(|w| w.vzdump_duration = Duration::ZERO);
        let path = twin.lab.write_files().unwrap();
        let (config, source) = Config::load(Some(&path), &Overrides::default()).unwrap();
        let estate =
            Estate::connect(&config.resolve_inventory(&source, &|_| None).unwrap()).unwrap();
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/playbooks/pbs-backup-stale.yaml"
        ))
        .unwrap();
        let playbook = playbook::parse(Path::new("p.yaml"), &text).unwrap();
        let labels = Labels::parse(
            [("backup_type", "vm"), ("backup_id", "451")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
        .unwrap();
        let facts = diagnose(
            &playbook,
            &estate,
            &labels,
            twin.lab.with_world(|w| w.now()),
        )
        .await
        .unwrap()
        .facts;
        twin.lab.with_world(|w| w.received.clear());
        let db = tempfile::tempdir().unwrap();
        let store = Store::open(&DatabaseConfig {
            path: db.path().join("s.db"),
            busy_timeout_ms: 5_000,
        })
        .await
        .unwrap();
        Self {
            twin,
            store,
            estate,
            playbook,
            facts,
            _db: db,
        }
    }

    async fn lease(&self) -> Lease {
        let run = NewRun {
            incident_id: None,
            playbook: "pbs-backup-stale",
            version: common::pbs_playbook(),
            target: "pbs",
            dry_run: false,
            actor: "engine",
            facts: serde_json::json!({}),
        };
        assert!(matches!(
            self.store
                .create_run(run, self.twin.clock_now())
                .await
                .unwrap(),
            Created::New(_)
        ));
        self.store
            .acquire_run("worker", Duration::from_secs(60), self.twin.clock_now())
            .await
            .unwrap()
            .unwrap()
            .0
    }

    async fn step(
        &self,
        lease: &Lease,
        name: &str,
        dry_run: bool,
        approved: bool,
        limits: Limits,
    ) -> StepOutcome {
        let parameters = BTreeMap::new();
        let ctx = StepContext {
            store: &self.store,
            lease,
            estate: &self.estate,
            playbook: &self.playbook,
            parameters: &parameters,
            facts: &self.facts,
            clock: self.twin.clock.as_ref(),
            dry_run,
            limits,
            approved,
            sequence: None,
        };
        run_step(&ctx, name, &self.playbook.steps[name])
            .await
            .unwrap()
    }

    fn ssh_texts(&self) -> Vec<String> {
        self.twin.lab.with_world(|w| {
            w.received
                .iter()
                .filter(|r| r.channel == "ssh")
                .map(|r| r.text.clone())
                .collect()
        })
    }
}

trait Now {
    fn clock_now(&self) -> chrono::DateTime<chrono::Utc>;
}

impl Now for Twin {
    fn clock_now(&self) -> chrono::DateTime<chrono::Utc> {
        self.lab.with_world(|w| w.now())
    }
}

#[tokio::test]
async fn a_restart_runs_once_with_its_attempt_recorded_and_the_cooldown_blocks_another() {
    let bench = Bench::new("stale-nfs").await;
    let lease = bench.lease().await;
    let cooldown = Limits {
        cooldown: Duration::from_secs(1800),
        ..LIMITS
    };
    assert_eq!(
        bench
            .step(&lease, "restart_pbs", false, false, cooldown)
            .await,
        StepOutcome::Done
    );
    assert_eq!(
        bench.ssh_texts(),
        ["timeout -k 5 120 systemctl restart proxmox-backup proxmox-backup-proxy"]
    );
    let attempts = bench.store.step_attempts(lease.run_id).await.unwrap();
    assert_eq!(
        (attempts[0].status.as_str(), attempts[0].exit_status),
        ("finished", Some(0))
    );
    assert_eq!(
        attempts[0].command,
        "systemctl restart proxmox-backup proxmox-backup-proxy"
    );
    assert_eq!(attempts[0].host.as_deref(), Some("pbs"));

    // The same run may re-run its own step after a crash; a second run may not restart again.
    bench
        .store
        .finish_run(
            &lease,
            runbookd::store::runs::Ending::Resolved,
            &serde_json::json!({}),
            bench.twin.clock_now(),
        )
        .await
        .unwrap();
    let second = bench.lease().await;
    let again = bench
        .step(&second, "restart_pbs", false, false, cooldown)
        .await;
    assert!(
        matches!(again, StepOutcome::Blocked(Blocked::Cooldown { .. })),
        "{again:?}"
    );
    assert_eq!(bench.ssh_texts().len(), 1, "PBS was not restarted again");
}

#[tokio::test]
async fn a_high_risk_step_parks_the_run_on_an_approval_with_the_exact_command() {
    let bench = Bench::new("nfs-unmounted").await;
    let lease = bench.lease().await;
    let StepOutcome::NeedsApproval(id) = bench
        .step(&lease, "mount_datastore", false, false, LIMITS)
        .await
    else {
        panic!("standard automation asks before a high-risk step");
    };
    let approval = bench.store.approval(id).await.unwrap().unwrap();
    assert_eq!(
        (
            approval.status,
            approval.command.as_str(),
            approval.risk.as_str()
        ),
        (ApprovalStatus::Pending, "mount /mnt/pbs-datastore", "high")
    );
    assert_eq!(approval.evidence.0["nfs_mounted"], false);
    assert_eq!(
        bench.store.run(lease.run_id).await.unwrap().unwrap().state,
        RunState::WaitingApproval
    );
    assert!(bench.ssh_texts().is_empty(), "nothing ran");
}

#[tokio::test]
async fn dry_run_records_the_command_and_runs_nothing() {
    let bench = Bench::new("stale-nfs").await;
    let lease = bench.lease().await;
    let outcome = bench.step(&lease, "restart_pbs", true, false, LIMITS).await;
    assert_eq!(
        outcome,
        StepOutcome::Rehearsed("systemctl restart proxmox-backup proxmox-backup-proxy".into())
    );
    assert!(bench.ssh_texts().is_empty());
    let attempts = bench.store.step_attempts(lease.run_id).await.unwrap();
    assert_eq!(
        attempts[0].error.as_deref(),
        Some("dry run: recorded, not executed")
    );
}

#[tokio::test]
async fn an_approved_fingerprint_fix_and_a_canary_backup_work() {
    let bench = Bench::new("cert-mismatch").await;
    let lease = bench.lease().await;
    assert_eq!(
        bench
            .step(&lease, "set_storage_fingerprint", false, true, LIMITS)
            .await,
        StepOutcome::Done
    );
    assert!(bench.twin.lab.with_world(|w| w.fingerprint_matches()));
    assert_eq!(
        bench
            .step(&lease, "canary_backup", false, false, LIMITS)
            .await,
        StepOutcome::Done
    );
    let canary_fresh = bench.twin.lab.with_world(|w| {
        w.group(runbookd::lab::estate::GuestKind::Lxc, 200)
            .unwrap()
            .last_backup
            == w.now()
    });
    assert!(canary_fresh, "the canary's group was backed up just now");
}

#[tokio::test]
async fn only_if_false_skips_and_nothing_runs() {
    let bench = Bench::new("healthy").await;
    let lease = bench.lease().await;
    let outcome = bench
        .step(&lease, "start_pbs_vm", false, true, LIMITS)
        .await;
    assert!(matches!(outcome, StepOutcome::Skipped(_)), "{outcome:?}");
    assert!(bench.ssh_texts().is_empty());
}
