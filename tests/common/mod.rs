//! Shared test harness: the app in-process on port 0 with its own SQLite file, the real binary
//! as a child process, a settable clock, and waiting on observable conditions.

pub mod engine;
pub mod process;
pub mod twin;
pub mod web;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use runbookd::auth::{Role, Token, TokenSecret, TokenTable};
use runbookd::clock::Clock;
use runbookd::config::{Config, ConfigSource};
use runbookd::startup::Application;
use runbookd::store::Store;
use serde_json::Value;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, SqliteConnection};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const INGEST_TOKEN: &str = "test-ingest-token-0123456789abcdef";
pub const AGENT_TOKEN: &str = "test-agent-token-0123456789abcdef";
pub const APPROVER_TOKEN: &str = "test-approver-token-0123456789abcdef";
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";

/// One token per role, named after the role.
pub fn role_tokens() -> TokenTable {
    // Parsed like a configured secret, so the tests' tokens meet the same strength rules.
    let token = |name, role| Token::new(name, role, &TokenSecret::parse(token_for(role)).unwrap());
    TokenTable::new(vec![
        token("ingest", Role::Ingest),
        token("agent", Role::Agent),
        token("approver", Role::Approver),
        token("admin", Role::Admin),
    ])
}

/// The link-signing key of the service whose database is `db`: the file beside it.
pub fn link_key(db: &Path) -> Vec<u8> {
    let mut path = db.as_os_str().to_owned();
    path.push(".link-key");
    runbookd::notify::links::read_key(Path::new(&path)).unwrap()
}

pub fn token_for(role: Role) -> &'static str {
    match role {
        Role::Ingest => INGEST_TOKEN,
        Role::Agent => AGENT_TOKEN,
        Role::Approver => APPROVER_TOKEN,
        Role::Admin => ADMIN_TOKEN,
    }
}

/// A clock that only moves when a test moves it.
pub struct TestClock(Mutex<DateTime<Utc>>);

impl TestClock {
    pub fn new() -> Self {
        Self(Mutex::new(
            Utc.with_ymd_and_hms(2026, 11, 26, 3, 0, 0).unwrap(),
        ))
    }

    pub fn advance(&self, by: chrono::Duration) {
        *self.0.lock().unwrap() += by;
    }
}

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

/// A payload from `tests/fixtures/reference/`.
pub fn reference(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/reference")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The app, in this process, on a free loopback port, with its own database file.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub clock: Arc<TestClock>,
    pub db_path: PathBuf,
    /// The app's own store, for tests that set up state the engine would.
    pub store: Store,
    dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> Self {
        Self::spawn_engine(adjust, None).await
    }

    /// As [`Self::spawn_with`], with the engine's worker driving runs on `engine`.
    pub async fn spawn_engine(
        adjust: impl FnOnce(&mut Config),
        engine: Option<runbookd::startup::EngineParts>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..Config::default()
        };
        config.database.path = dir.path().join("runbookd.db");
        adjust(&mut config);
        let clock = Arc::new(TestClock::new());
        // As `runbookd serve` does: the sinks' secrets are read once, from the environment.
        let notify = config
            .resolve_notify(&ConfigSource::default(), &|var| std::env::var(var).ok())
            .expect("the test's [notify] is valid");
        let app = Application::build(&config, role_tokens(), notify, clock.clone(), engine)
            .await
            .expect("the app builds");
        let address = format!("http://{}", app.local_addr());
        let store = app.store().clone();
        let (tx, rx) = oneshot::channel();
        let server = tokio::spawn(app.run_until(async {
            let _ = rx.await;
        }));
        Self {
            address,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            clock,
            db_path: config.database.path,
            store,
            dir,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// POSTs `body` as JSON with a bearer token.
    pub async fn post_json(&self, path: &str, token: &str, body: &str) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("the request completes")
    }

    /// GETs `path` as admin and returns the JSON body, asserting 200.
    pub async fn get_json(&self, path: &str) -> Value {
        let response = self
            .client
            .get(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// POSTs an Alertmanager webhook `body` with the ingest token.
    pub async fn post_alertmanager(&self, body: &str) -> reqwest::Response {
        self.post_json("/webhook/alertmanager", INGEST_TOKEN, body)
            .await
    }

    /// `GET /api/v1/incidents/{id}` as admin, asserting 200.
    pub async fn get_incident(&self, id: i64) -> Value {
        self.get_json(&format!("/api/v1/incidents/{id}")).await
    }

    /// Approves approval `id` as the approver, asserting 200.
    pub async fn approve(&self, id: i64) {
        self.decide(id, "approve").await;
    }

    /// Rejects approval `id` as the approver, asserting 200.
    pub async fn reject(&self, id: i64) {
        self.decide(id, "reject").await;
    }

    async fn decide(&self, id: i64, verb: &str) {
        let path = format!("/api/v1/approvals/{id}/{verb}");
        let response = self.post_json(&path, APPROVER_TOKEN, "").await;
        let status = response.status();
        assert_eq!(
            status,
            200,
            "POST {path}: {}",
            response.text().await.unwrap_or_default()
        );
    }

    /// A separate connection to the app's database file, as an operator's sqlite3 would be.
    pub async fn db(&self) -> SqliteConnection {
        SqliteConnectOptions::new()
            .filename(&self.db_path)
            .connect()
            .await
            .unwrap()
    }

    /// Rows in `table`.
    pub async fn count(&self, table: &str) -> i64 {
        let mut db = self.db().await;
        let count = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&mut db)
            .await
            .unwrap();
        db.close().await.unwrap();
        count
    }

    /// Asks for a graceful shutdown and waits for it; keeps the database directory.
    pub async fn stop(mut self) -> tempfile::TempDir {
        self.shutdown.take().unwrap().send(()).unwrap();
        self.server
            .take()
            .unwrap()
            .await
            .unwrap()
            .expect("the app stops cleanly");
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }
}

/// Polls `check` until it returns `Some`, or panics after `within`. For conditions made true
/// in their own time by an outside process (Alertmanager, the service binary) or by the app's
/// own tasks talking over real sockets (its worker on the twin, its notifier to a sink); the
/// deadline is wall-clock, since paused tokio time would race past it while they wait on I/O.
/// What the app's clock decides (ages, expiries, windows) is moved with `TestClock::advance`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
    }
}

/// GETs `url` with `token` and reads its JSON body; `None` while the service cannot answer
/// yet. For polls on the real binary, which starts and works in its own time.
pub async fn fetch_json(client: &reqwest::Client, url: &str, token: &str) -> Option<Value> {
    client
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// A store on a fresh SQLite file, migrated, and the directory that holds it.
pub async fn temp_store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&runbookd::config::DatabaseConfig {
        path: dir.path().join("runbookd.db"),
        busy_timeout_ms: 5_000,
    })
    .await
    .unwrap();
    (store, dir)
}

/// The repository's pbs-backup-stale playbook, as a run pins it.
pub fn pbs_playbook() -> &'static runbookd::playbook::PlaybookVersion {
    static PLAYBOOK: std::sync::LazyLock<runbookd::playbook::PlaybookVersion> =
        std::sync::LazyLock::new(|| {
            runbookd::playbook::PlaybookVersion::of(include_str!(
                "../../playbooks/pbs-backup-stale.yaml"
            ))
        });
    &PLAYBOOK
}

/// A new run of pbs-backup-stale for `target` (of `incident`, if any), leased by a worker for
/// 60 s, as the engine would hold it before it asks for an approval.
pub async fn leased_run(
    store: &Store,
    incident: Option<i64>,
    target: &str,
    now: DateTime<Utc>,
) -> runbookd::store::runs::Lease {
    use runbookd::store::runs::{Created, NewRun};
    let run = NewRun {
        incident_id: incident,
        playbook: "pbs-backup-stale",
        version: pbs_playbook(),
        target,
        dry_run: false,
        actor: "engine",
        facts: serde_json::json!({}),
    };
    let Created::New(_) = store.create_run(run, now).await.unwrap() else {
        panic!("a new run for {target}")
    };
    let (lease, _) = store
        .acquire_run("worker", Duration::from_secs(60), now)
        .await
        .unwrap()
        .expect("the new run is free to lease");
    lease
}
