//! Notifications and one-tap links: an approval request reaches a local receiver as ntfy,
//! webhook and Slack payloads carrying signed links; each link works once, for its one
//! decision, until it expires; tampered, swapped, expired and replayed links are refused and
//! audited; retries are audited per attempt; a dead sink holds nothing up; no secret reaches the
//! audit trail or the log.

use crate::common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{TestApp, eventually, leased_run};
use runbookd::clock::Clock as _;
use runbookd::config::NotifyConfig;
use runbookd::notify::links::LinkSigner;
use runbookd::store::approvals::{
    ApprovalAction, ApprovalRequest, ApprovalStatus, Decision, OnTimeout,
};
use runbookd::store::runs::Ending;
use runbookd::store::safety::{Blocked, Limits};
use serde_json::{Value, json};
use sqlx::{ConnectOptions, Row};

const WAIT: Duration = Duration::from_secs(20);
const SINK_TOKEN: &str = "ntfy-sink-token-0123456789";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    authorization: Option<String>,
    body: Value,
}

impl Received {
    /// The URL of an ntfy message's `index`th action button (0 Approve, 1 Reject, 2 Open).
    fn action_url(&self, index: usize) -> String {
        self.body["actions"][index]["url"]
            .as_str()
            .unwrap_or_else(|| panic!("no action {index} in {}", self.body))
            .to_owned()
    }
}

/// A local HTTP receiver that records what it gets and fails the first `fail_first`
/// requests with 500.
#[derive(Clone)]
struct Receiver {
    address: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

#[derive(Clone)]
struct ReceiverState {
    received: Arc<Mutex<Vec<Received>>>,
    fail_first: Arc<AtomicU32>,
}

async fn record(
    State(state): State<ReceiverState>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    if state
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    state.received.lock().unwrap().push(Received {
        path: uri.path().to_owned(),
        authorization: headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned()),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    StatusCode::OK
}

impl Receiver {
    async fn start(fail_first: u32) -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let state = ReceiverState {
            received: received.clone(),
            fail_first: Arc::new(AtomicU32::new(fail_first)),
        };
        let router = axum::Router::new()
            .fallback(axum::routing::post(record))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { address, received }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    fn on(&self, path: &str) -> Vec<Received> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Waits for the first message on `path` whose body has `event`-like field `key` = `value`.
    async fn wait_for(&self, path: &str, key: &str, value: &str) -> Received {
        eventually(&format!("{key}={value} on {path}"), WAIT, || async {
            self.on(path)
                .into_iter()
                .find(|r| r.body.pointer(key).and_then(Value::as_str) == Some(value))
        })
        .await
    }
}

/// A loopback port with nothing listening on it: port 1, privileged, so no test can take it
/// (a freed ephemeral port could be). Checked, so the test fails clearly if it is open here.
async fn closed_port() -> SocketAddr {
    let closed: SocketAddr = "127.0.0.1:1".parse().unwrap();
    match tokio::net::TcpStream::connect(closed).await {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => closed,
        other => panic!("this test needs {closed} to refuse connections; got {other:?}"),
    }
}

/// `[notify]` with `sinks` (TOML `[[sinks]]` tables, their token file in `secrets`), `extra`
/// settings, and fast, small retry settings.
fn notify_config(extra: &str, sinks: &str, secrets: &Path) -> NotifyConfig {
    let token_file = secrets.join("ntfy.token");
    let text = format!(
        "poll_interval_ms = 20\nbackoff_initial_ms = 5\nbackoff_max_ms = 20\nattempts = 3\n{extra}\n{}",
        sinks.replace("TOKEN_FILE", &token_file.display().to_string())
    );
    toml::from_str(&text).unwrap()
}

/// The app with `sinks` and `extra` settings (see [`notify_config`]), and the directory
/// holding the sinks' token file.
async fn app_with(extra: &str, sinks: &str) -> (TestApp, tempfile::TempDir) {
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("ntfy.token");
    std::fs::write(&token_file, format!("{SINK_TOKEN}\n")).unwrap();
    // Owner-only, as runbookd requires of a secret file.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let notify = notify_config(extra, sinks, secrets.path());
    let app = TestApp::spawn_with(|config| config.notify = notify).await;
    (app, secrets)
}

/// The app started again on the database at `db_path`, now with `sinks`.
async fn reopen(db_path: PathBuf, secrets: &Path, sinks: &str) -> TestApp {
    let notify = notify_config("", sinks, secrets);
    TestApp::spawn_with(|config| {
        config.notify = notify;
        config.database.path = db_path;
    })
    .await
}

const NTFY: &str = "[[sinks]]\nname = \"phone\"\nkind = \"ntfy\"\nurl = \"URL\"\ntopic = \"runbookd-alerts\"\ntoken_file = \"TOKEN_FILE\"\n";

fn ntfy_sink(receiver: &Receiver) -> String {
    NTFY.replace("URL", &receiver.url("/"))
}

/// A run for `target` parked on an approval of `remount_datastore` that expires in
/// `expires_in`.
async fn approval(app: &TestApp, target: &str, expires_in: Duration) -> (i64, i64) {
    let command = "umount -l /mnt/datastore && mount /mnt/datastore";
    parked_on(
        app,
        target,
        ("remount_datastore", command, "high"),
        expires_in,
    )
    .await
}

/// A run for `target` parked on an approval of `(step, command, risk)` expiring in
/// `expires_in`: its run id and the approval's id.
async fn parked_on(
    app: &TestApp,
    target: &str,
    (step, command, risk): (&str, &str, &str),
    expires_in: Duration,
) -> (i64, i64) {
    let now = app.clock.now();
    let lease = leased_run(&app.store, None, target, now).await;
    let request = ApprovalRequest {
        step,
        command,
        risk,
        evidence: json!({"nfs_mounted": false}),
        expires_in,
        on_timeout: OnTimeout::Reject,
        actions: vec![ApprovalAction {
            step: step.to_owned(),
            host: Some(target.to_owned()),
            command: command.to_owned(),
            changes: None,
        }],
    };
    let id = app
        .store
        .request_approval(&lease, request, now)
        .await
        .unwrap();
    (lease.run_id, id)
}

async fn post_link(app: &TestApp, url: &str) -> (u16, Value) {
    let response = app
        .client
        .post(url)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Audit rows with `action`, oldest first: (actor, detail).
async fn audit(app: &TestApp, action: &str) -> Vec<(String, Value)> {
    let mut db = app.db().await;
    sqlx::query("SELECT actor, detail FROM audit_events WHERE action = ? ORDER BY id")
        .bind(action)
        .fetch_all(&mut db)
        .await
        .unwrap()
        .into_iter()
        .map(|row| {
            let detail: String = row.get("detail");
            (row.get("actor"), serde_json::from_str(&detail).unwrap())
        })
        .collect()
}

/// Every audit row as text, to search for secrets.
async fn audit_text(app: &TestApp) -> String {
    let mut db = app.db().await;
    let rows = sqlx::query("SELECT actor, action, detail FROM audit_events")
        .fetch_all(&mut db)
        .await
        .unwrap();
    rows.iter()
        .map(|row| {
            format!(
                "{} {} {}\n",
                row.get::<String, _>("actor"),
                row.get::<String, _>("action"),
                row.get::<String, _>("detail")
            )
        })
        .collect()
}

async fn link_key(app: &TestApp) -> Vec<u8> {
    common::link_key(&app.db_path)
}

fn token_of(link: &str) -> &str {
    link.rsplit('/').next().unwrap()
}

/// An approval request on `target` with its own step name, so its message can be told apart.
async fn approval_named(app: &TestApp, target: &str, step: &str) -> i64 {
    let ten_minutes = Duration::from_secs(600);
    parked_on(app, target, (step, "true", "low"), ten_minutes)
        .await
        .1
}

fn titled(receiver: &Receiver, step: &str) -> usize {
    receiver
        .on("/")
        .iter()
        .filter(|r| r.body["title"].as_str().is_some_and(|t| t.contains(step)))
        .count()
}

async fn wait_titled(receiver: &Receiver, step: &str) {
    eventually(&format!("the message about {step}"), WAIT, || async {
        (titled(receiver, step) > 0).then_some(())
    })
    .await;
}

mod cursor;
mod links;
mod sinks;
