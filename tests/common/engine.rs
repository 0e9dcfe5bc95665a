//! The engine in this process against the twin, two ways: the app with its own worker and
//! dispatcher ([`spawn_app`]), and, for tests that must see a worker's every pass (a run not
//! taken while paused, a late repeat starting nothing), intake in front of a worker driven step
//! by step (`settle`). Time is the twin's settable clock.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use runbookd::auth::{Principal, Role};
use runbookd::clock::Clock;
use runbookd::config::{Config, DatabaseConfig, EngineConfig, Overrides};
use runbookd::engine::dispatch::Dispatcher;
use runbookd::engine::estate::Estate;
use runbookd::engine::intake::{AlertOutcome, IntakeService, Lifecycle};
use runbookd::engine::worker::{Engine, PinnedPlaybooks};
use runbookd::playbook::{self, PlaybookFile, PlaybookVersion};
use runbookd::store::Store;
use runbookd::store::approvals::{ApprovalStatus, Decision};
use runbookd::store::intake::IntakeAction;
use runbookd::store::runs::Run;

use super::TestApp;
use super::twin::Twin;

pub struct Setup {
    pub twin: Twin,
    pub engine: Engine,
    pub intake: IntakeService,
    pub db_path: std::path::PathBuf,
    _db: tempfile::TempDir,
}

/// The twin in `scenario`, the repository's PBS playbook (polling without waiting), and the
/// default incident lifecycle.
pub async fn setup(scenario: &str) -> Setup {
    setup_with(scenario, Lifecycle::default()).await
}

pub async fn setup_with(scenario: &str, lifecycle: Lifecycle) -> Setup {
    let twin = Twin::start(scenario).await;
    twin.lab.with_world(|w| w.vzdump_duration = Duration::ZERO);
    let path = twin.lab.write_files().unwrap();
    let (config, source) = Config::load(Some(&path), &Overrides::default()).unwrap();
    let mut inventory = config.resolve_inventory(&source, &|_| None).unwrap();
    if let Some(ssh) = &mut inventory.ssh {
        ssh.connect_timeout = Duration::from_secs(1);
    }
    let text = quick_playbook();
    let file = PlaybookFile {
        path: "p.yaml".into(),
        playbook: playbook::parse(Path::new("p.yaml"), &text).unwrap(),
        version: PlaybookVersion::of(&text),
    };
    let db = tempfile::tempdir().unwrap();
    let db_path = db.path().join("e.db");
    let store = runbookd::store::Store::open(&DatabaseConfig {
        path: db_path.clone(),
        busy_timeout_ms: 5_000,
    })
    .await
    .unwrap();
    let estate = Arc::new(Estate::connect(&inventory).unwrap());
    let engine = worker(
        store.clone(),
        estate,
        vec![file.clone()],
        twin.clock.clone(),
    );
    let dispatcher = Dispatcher::new(
        std::slice::from_ref(&file),
        engine.estate.clone(),
        engine.wake.clone(),
    )
    .unwrap();
    let intake = IntakeService::new(store, Some(Arc::new(dispatcher)), lifecycle);
    Setup {
        twin,
        engine,
        intake,
        db_path,
        _db: db,
    }
}

/// The repository's PBS playbook, polling without waiting: the twin's clock stands still.
/// Runs pin the text, so the text says so.
pub fn quick_playbook() -> String {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/playbooks/pbs-backup-stale.yaml"
    ))
    .unwrap();
    let slow = "every: 15s }\n    risk: none\n    timeout: 2h";
    assert!(text.contains(slow), "groups_fresh polls every 15 s for 2 h");
    text.replace(slow, "every: 10ms }\n    risk: none\n    timeout: 1s")
}

/// A worker on `store` with the application's default limits (no cooldown, 20 actions an
/// hour, the breaker after 3), as `serve` builds one, for a test to step by hand.
pub fn worker(
    store: Store,
    estate: Arc<Estate>,
    playbooks: Vec<PlaybookFile>,
    clock: Arc<dyn Clock>,
) -> Engine {
    let config = EngineConfig::default();
    Engine {
        store,
        estate,
        playbooks: Arc::new(playbooks.into_iter().map(|f| f.playbook).collect()),
        pinned: PinnedPlaybooks::default(),
        clock,
        owner: "worker-1".into(),
        lease_for: Duration::from_secs(config.lease_secs),
        limits: config.limits(),
        wake: Arc::new(tokio::sync::Notify::new()),
        idle: Duration::from_millis(config.idle_poll_ms),
    }
}

/// The app in this process, its own worker and dispatcher driving [`quick_playbook`] on the
/// twin in `scenario` (backups finish at once); `adjust` as for [`TestApp::spawn_with`].
pub async fn spawn_app(scenario: &str, adjust: impl FnOnce(&mut Config)) -> (TestApp, Twin) {
    let twin = Twin::start(scenario).await;
    twin.lab.with_world(|w| w.vzdump_duration = Duration::ZERO);
    let app = TestApp::spawn_engine(adjust, Some(quick_parts(&twin))).await;
    (app, twin)
}

/// A second worker on `app`'s database and the twin, for the one look a test must see a
/// worker take (the app's own worker cannot be stepped).
pub fn stepped_worker(app: &TestApp, twin: &Twin) -> Engine {
    let parts = quick_parts(twin);
    worker(
        app.store.clone(),
        parts.estate,
        parts.playbooks,
        app.clock.clone(),
    )
}

/// [`quick_playbook`] and executors on the twin, as the app's engine takes them.
fn quick_parts(twin: &Twin) -> runbookd::startup::EngineParts {
    let playbooks = tempfile::tempdir().unwrap();
    std::fs::write(
        playbooks.path().join("pbs-backup-stale.yaml"),
        quick_playbook(),
    )
    .unwrap();
    twin.engine_parts(playbooks.path())
}

impl Setup {
    /// The reference Alertmanager notification through intake, as the HTTP endpoint takes it;
    /// the run it started.
    pub async fn start(&self) -> i64 {
        self.start_as("5f1c2a9e7b3d4c10").await
    }

    /// The reference notification as another alert (its own `fingerprint`), so it opens an
    /// incident of its own; the run it started.
    pub async fn start_as(&self, fingerprint: &str) -> i64 {
        let body = super::reference("alertmanager-v4.json")
            .replace("\"5f1c2a9e7b3d4c10\"", &format!("{fingerprint:?}"));
        let outcomes = self.deliver(&body, None).await;
        assert_eq!(outcomes[0].action, IntakeAction::Opened, "{outcomes:?}");
        outcomes[0].run_id.expect("the playbook matches")
    }

    /// Approves the one pending approval as alice; the step it was for.
    pub async fn approve_pending(&self) -> String {
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

    /// `body` through intake, from `source` (or sniffed), now on the twin's clock.
    pub async fn deliver(&self, body: &str, source: Option<&str>) -> Vec<AlertOutcome> {
        let declared = source.map(|s| runbookd::intake::declared_source(s).unwrap());
        let delivery = runbookd::intake::parse(body.as_bytes(), declared).unwrap();
        let caller = Principal {
            name: "alertmanager".into(),
            role: Role::Ingest,
        };
        self.intake
            .accept(&delivery, body, &caller, self.now())
            .await
            .unwrap()
    }

    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.twin.lab.with_world(|w| w.now())
    }

    /// Works until no run needs a worker.
    pub async fn settle(&self) {
        for _ in 0..20 {
            if !self.engine.work_once().await.unwrap() {
                return;
            }
        }
        panic!("the engine never settled");
    }

    /// Rows in `table`, through a connection of its own.
    pub async fn count(&self, table: &str) -> i64 {
        use sqlx::{ConnectOptions, Connection};
        let mut db = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&self.db_path)
            .connect()
            .await
            .unwrap();
        let count = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&mut db)
            .await
            .unwrap();
        db.close().await.unwrap();
        count
    }

    pub async fn run(&self, id: i64) -> Run {
        self.engine.store.run(id).await.unwrap().unwrap()
    }

    /// Every mutating request the twin received, in order.
    pub fn mutations(&self) -> Vec<String> {
        self.twin.mutations()
    }
}
