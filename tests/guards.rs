//! Never break what is running: guarded steps against the twin. A PBS restart waits, with its
//! reason shown, while a vzdump task runs and acts only after the task ends; inside a mute
//! window it never acts and the run escalates after `max_wait`; an approval whose window (set
//! in the playbook) passes with nobody deciding ends the run rejected and escalated.

use crate::common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::TestClock;
use common::twin::name;
use runbookd::clock::Clock;
use runbookd::config::{Config, DatabaseConfig, Overrides};
use runbookd::engine::dispatch::Dispatcher;
use runbookd::engine::estate::Estate;
use runbookd::engine::intake::{IntakeService, Lifecycle};
use runbookd::engine::worker::{Engine, PinnedPlaybooks};
use runbookd::exec::command::Vmid;
use runbookd::exec::pve::{PveApi, PveClient, VzdumpStart};
use runbookd::lab::Lab;
use runbookd::lab::control::OffsetClock;
use runbookd::playbook::{self, PlaybookFile, PlaybookVersion};
use runbookd::store::Store;
use runbookd::store::approvals::ApprovalStatus;
use runbookd::store::audit::AuditDetail;
use runbookd::store::runs::{Run, RunState};
use runbookd::store::safety::Limits;
use serde_json::Value;

const SHIPPED: &str = include_str!("../playbooks/pbs-backup-stale.yaml");
const RESTART: &str = "systemctl restart proxmox-backup proxmox-backup-proxy";

struct Setup {
    lab: Lab,
    engine: Arc<Engine>,
    intake: IntakeService,
    clock: Arc<dyn Clock>,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

/// The twin on `clock`, and an engine on the same clock running the shipped playbook as
/// `edit` changes its text. Guards re-check and polls run every few milliseconds.
async fn setup(scenario: &str, clock: Arc<dyn Clock>, edit: impl FnOnce(&str) -> String) -> Setup {
    let lab_dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(lab_dir.path(), scenario, clock.clone())
        .await
        .unwrap();
    lab.with_world(|w| w.vzdump_duration = Duration::ZERO);
    let path = lab.write_files().unwrap();
    let (config, source) = Config::load(Some(&path), &Overrides::default()).unwrap();
    let inventory = config.resolve_inventory(&source, &|_| None).unwrap();
    // Runs pin their playbook's text, so the quick re-checks are written into it.
    let text = edit(SHIPPED);
    let quick = [
        ("      every: 30s", "      every: 50ms"),
        (
            "every: 15s }\n    risk: none\n    timeout: 2h",
            "every: 10ms }\n    risk: none\n    timeout: 1s",
        ),
    ];
    let text = quick.iter().fold(text, |text, (slow, fast)| {
        assert!(text.contains(slow), "the playbook has {slow:?}");
        text.replace(slow, fast)
    });
    let file = PlaybookFile {
        path: "p.yaml".into(),
        playbook: playbook::parse(Path::new("p.yaml"), &text).unwrap(),
        version: PlaybookVersion::of(&text),
    };
    let db = tempfile::tempdir().unwrap();
    let store = Store::open(&DatabaseConfig {
        path: db.path().join("g.db"),
        busy_timeout_ms: 5_000,
    })
    .await
    .unwrap();
    let wake = Arc::new(tokio::sync::Notify::new());
    let estate = Arc::new(Estate::connect(&inventory).unwrap());
    let dispatcher =
        Dispatcher::new(std::slice::from_ref(&file), estate.clone(), wake.clone()).unwrap();
    let intake = IntakeService::new(
        store.clone(),
        Some(Arc::new(dispatcher)),
        Lifecycle::default(),
    );
    let engine = Engine {
        store,
        estate,
        playbooks: Arc::new(vec![file.playbook]),
        pinned: PinnedPlaybooks::default(),
        clock: clock.clone(),
        owner: "worker-1".into(),
        lease_for: Duration::from_secs(60),
        limits: Limits {
            cooldown: Duration::ZERO,
            hourly_budget: 20,
            breaker_after: 3,
        },
        wake,
        idle: Duration::from_millis(500),
    };
    Setup {
        lab,
        engine: Arc::new(engine),
        intake,
        clock,
        _dirs: (lab_dir, db),
    }
}

impl Setup {
    /// The reference Alertmanager notification through intake and dispatch: its run's id.
    async fn start(&self) -> i64 {
        let body = common::reference("alertmanager-v4.json");
        let delivery = runbookd::intake::parse(body.as_bytes(), None).unwrap();
        let caller = runbookd::auth::Principal {
            name: "alertmanager".into(),
            role: runbookd::auth::Role::Ingest,
        };
        let outcomes = self
            .intake
            .accept(&delivery, &body, &caller, self.clock.now())
            .await
            .unwrap();
        outcomes[0].run_id.expect("the playbook matches")
    }

    /// A worker driving the next run, in the background.
    fn work(&self) -> tokio::task::JoinHandle<bool> {
        let engine = self.engine.clone();
        tokio::spawn(async move { engine.work_once().await.unwrap() })
    }

    async fn run(&self, id: i64) -> Run {
        self.engine.store.run(id).await.unwrap().unwrap()
    }

    /// The run's `step.waiting` events' details.
    async fn waiting_events(&self, id: i64) -> Vec<Value> {
        let events = self.engine.store.run_timeline(id, 1000).await.unwrap();
        events
            .into_iter()
            .filter_map(|e| match e.detail {
                AuditDetail::StepWaiting(waiting) => serde_json::to_value(waiting).ok(),
                _ => None,
            })
            .collect()
    }

    /// Waits until the run shows it waits for its guard; returns what it shows.
    async fn shown_waiting(&self, id: i64) -> Value {
        common::eventually(
            "the run to show why it waits",
            Duration::from_secs(30),
            || async {
                let waiting = self.run(id).await.facts.0.get("waiting").cloned()?;
                (waiting["status"] == "waiting for its guard").then_some(waiting)
            },
        )
        .await
    }

    /// Every mutating request the twin received, with when it arrived.
    fn mutations(&self) -> Vec<(chrono::DateTime<chrono::Utc>, String)> {
        self.lab.with_world(|w| {
            w.received
                .iter()
                .map(|r| (r.at, format!("{} {}", r.host, r.text)))
                .filter(|(_, t)| {
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
}

async fn finished(worker: tokio::task::JoinHandle<bool>) {
    tokio::time::timeout(Duration::from_secs(60), worker)
        .await
        .expect("the worker ends the run within a minute")
        .unwrap();
}

#[tokio::test]
async fn a_restart_waits_for_a_running_vzdump_and_acts_only_after_it_ends() {
    let clock = Arc::new(OffsetClock::default());
    let mut s = setup("stale-nfs", clock.clone(), str::to_owned).await;
    let control = s.lab.start_control(clock).await.unwrap();
    let http = reqwest::Client::new();
    let control_url = |path: &str| format!("http://{control}{path}");
    // A long backup of VM 451, started as PVE's scheduler would.
    let long = http
        .put(control_url("/vzdump?ms=600000"))
        .send()
        .await
        .unwrap();
    assert_eq!(long.status(), 200);
    let pve = PveClient::new(&s.lab.pve_endpoint("ruapehu")).unwrap();
    let VzdumpStart::Task(upid) = pve
        .vzdump(
            &name("ruapehu"),
            &[Vmid::new(451).unwrap()],
            &name("pbs-pihanga"),
        )
        .await
        .unwrap()
    else {
        panic!("VM 451 is on ruapehu")
    };
    let task_ends = s.lab.with_world(|w| {
        w.tasks
            .iter()
            .find(|t| t.upid == upid)
            .map(|t| t.ends)
            .unwrap()
    });
    let short = http.put(control_url("/vzdump?ms=0")).send().await.unwrap();
    assert_eq!(short.status(), 200);

    let id = s.start().await;
    let worker = s.work();
    let waiting = s.shown_waiting(id).await;
    assert_eq!(waiting["step"], "restart_pbs");
    assert!(
        waiting["reason"]
            .as_str()
            .unwrap()
            .contains("probe 'vzdump_running' says the step may not act"),
        "{waiting}"
    );
    assert_eq!(waiting["saw"]["data"]["tasks"][0]["upid"], upid.as_str());
    let events = s.waiting_events(id).await;
    assert_eq!(events[0]["step"], "restart_pbs", "audited: {events:?}");
    assert_eq!(events[0]["reason"], waiting["reason"]);
    assert_eq!(s.run(id).await.state, RunState::Running);
    assert!(
        !s.mutations().iter().any(|(_, m)| m.contains(RESTART)),
        "nothing restarted while the backup runs: {:?}",
        s.mutations()
    );

    let advanced = http
        .post(control_url("/clock/advance?seconds=601"))
        .send()
        .await
        .unwrap();
    assert_eq!(advanced.status(), 200);
    finished(worker).await;
    let run = s.run(id).await;
    assert_eq!(run.state, RunState::Resolved, "{:?}", run.outcome);
    let restarts: Vec<_> = s
        .mutations()
        .into_iter()
        .filter(|(_, m)| m.contains(RESTART))
        .collect();
    assert_eq!(restarts.len(), 1, "{restarts:?}");
    assert!(
        restarts[0].0 >= task_ends,
        "the restart ({}) came after the backup ended ({task_ends})",
        restarts[0].0
    );
}

#[tokio::test]
async fn inside_a_mute_window_the_restart_never_acts_and_the_run_escalates_after_max_wait() {
    // The test clock reads 03:00 UTC: the freeze covers it, and outlasts max_wait.
    let clock = Arc::new(TestClock::new());
    let s = setup("stale-nfs", clock.clone(), |text| {
        text.replace(
            "change_freeze: []",
            "change_freeze: [{ times: [\"02:00-04:00\"], location: UTC }]",
        )
        .replace("max_wait: 4h", "max_wait: 10m")
    })
    .await;
    let id = s.start().await;
    let worker = s.work();
    let waiting = s.shown_waiting(id).await;
    assert_eq!(waiting["step"], "restart_pbs");
    assert_eq!(
        waiting["reason"], "muted: inside time interval 'change_freeze'",
        "{waiting}"
    );
    assert_eq!(s.waiting_events(id).await[0]["reason"], waiting["reason"]);

    clock.advance(chrono::Duration::minutes(11));
    finished(worker).await;
    let run = s.run(id).await;
    assert_eq!(run.state, RunState::Escalated);
    let reason = run.outcome.unwrap().0["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        reason.contains("step 'restart_pbs' did not act")
            && reason.contains("max_wait")
            && reason.contains("change_freeze"),
        "{reason}"
    );
    assert_eq!(s.mutations(), [], "the twin received no mutating command");
}

#[tokio::test]
async fn a_worker_that_resumes_a_guarded_wait_keeps_its_start_so_max_wait_bounds_the_whole_wait() {
    let clock = Arc::new(TestClock::new());
    let s = setup("stale-nfs", clock.clone(), |text| {
        text.replace(
            "change_freeze: []",
            "change_freeze: [{ times: [\"02:00-04:00\"] }]",
        )
        .replace("max_wait: 4h", "max_wait: 10m")
    })
    .await;
    let id = s.start().await;
    let first = s.work();
    let waiting = s.shown_waiting(id).await;
    // The first worker dies mid-wait; its lease (60 s) expires.
    first.abort();
    let _ = first.await;
    clock.advance(chrono::Duration::minutes(6));
    let second = s.work();
    common::eventually(
        "the second worker to take the run",
        Duration::from_secs(30),
        || async { (s.run(id).await.attempt == 2).then_some(()) },
    )
    .await;
    // Ten minutes after the wait began (four after the second worker took over), it gives up.
    clock.advance(chrono::Duration::minutes(4) + chrono::Duration::seconds(1));
    finished(second).await;
    let run = s.run(id).await;
    assert_eq!(run.state, RunState::Escalated, "{:?}", run.facts);
    assert_eq!(run.facts.0["waiting"]["since"], waiting["since"]);
    assert_eq!(s.mutations(), []);
}

#[tokio::test]
async fn an_approval_window_of_two_seconds_expires_into_a_rejected_and_escalated_run() {
    let clock = Arc::new(TestClock::new());
    let s = setup("nfs-unmounted", clock.clone(), |text| {
        text.replace("approval_window: 1h", "approval_window: 2s")
    })
    .await;
    let id = s.start().await;
    finished(s.work()).await;
    assert_eq!(s.run(id).await.state, RunState::WaitingApproval);
    let store = &s.engine.store;
    let approval = store.approvals_for_run(id).await.unwrap().remove(0);
    assert_eq!(
        approval.expires_at - approval.requested_at,
        chrono::Duration::seconds(2)
    );
    assert_eq!(approval.on_timeout, "reject");
    assert_eq!(store.expire_approvals(clock.now()).await.unwrap(), 0);

    clock.advance(chrono::Duration::seconds(3));
    assert_eq!(store.expire_approvals(clock.now()).await.unwrap(), 1);
    let approval = store.approval(approval.id).await.unwrap().unwrap();
    assert_eq!(approval.status, ApprovalStatus::Expired);
    let run = s.run(id).await;
    assert_eq!(run.state, RunState::Escalated);
    let outcome = run.outcome.unwrap().0;
    assert!(
        outcome["reason"]
            .as_str()
            .unwrap()
            .contains("expired with nobody deciding; on_timeout is reject"),
        "{outcome}"
    );
    assert!(
        !s.engine.work_once().await.unwrap(),
        "nothing is left to run"
    );
    assert_eq!(s.mutations(), [], "no mutating command ran");
}
