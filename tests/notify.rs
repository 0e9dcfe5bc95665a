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

#[tokio::test]
async fn an_ntfy_approve_link_works_once_and_every_bad_use_is_refused_and_audited() {
    let receiver = Receiver::start(0).await;
    let (app, _secrets) = app_with("", &ntfy_sink(&receiver)).await;
    let (run_id, approval_id) = approval(&app, "pbs", Duration::from_secs(600)).await;

    let message = receiver.wait_for("/", "/topic", "runbookd-alerts").await;
    let body = &message.body;
    assert_eq!(
        message.authorization.as_deref(),
        Some(format!("Bearer {SINK_TOKEN}").as_str())
    );
    assert!(
        body["title"]
            .as_str()
            .unwrap()
            .contains("remount_datastore"),
        "{body:#}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("umount -l /mnt/datastore"),
        "{body:#}"
    );
    let actions = body["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 3, "{body:#}");
    assert_eq!(
        (
            &actions[0]["action"],
            &actions[0]["label"],
            &actions[0]["method"]
        ),
        (&json!("http"), &json!("Approve"), &json!("POST"))
    );
    assert_eq!(
        (&actions[1]["action"], &actions[1]["label"]),
        (&json!("http"), &json!("Reject"))
    );
    assert_eq!(
        (&actions[2]["action"], &actions[2]["label"]),
        (&json!("view"), &json!("Open"))
    );
    let approve = actions[0]["url"].as_str().unwrap().to_owned();
    let reject = actions[1]["url"].as_str().unwrap().to_owned();
    assert_eq!(
        actions[2]["url"],
        app.url(&format!("/approvals/{approval_id}")),
        "Open is the approval's web page"
    );
    assert!(approve.starts_with(&app.url("/links/")), "{approve}");
    assert_ne!(approve, reject);

    // The confirmation page shows the step and changes nothing.
    let page = app.client.get(&approve).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    let html = page.text().await.unwrap();
    assert!(html.contains("umount -l /mnt/datastore"), "{html}");
    assert!(html.contains("<form method=\"post\">"), "{html}");
    assert!(!html.contains("<script"), "{html}");
    let pending = |app: &TestApp| {
        let store = app.store.clone();
        async move { store.approval(approval_id).await.unwrap().unwrap() }
    };
    assert_eq!(pending(&app).await.status, ApprovalStatus::Pending);

    // The approve link with its decision swapped to reject: the signature no longer holds.
    let mut bytes = URL_SAFE_NO_PAD.decode(token_of(&approve)).unwrap();
    assert_eq!(bytes[9], b'a', "the decision byte");
    bytes[9] = b'r';
    let swapped = app.url(&format!("/links/{}", URL_SAFE_NO_PAD.encode(&bytes)));
    let (status, answer) = post_link(&app, &swapped).await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (403, &json!("forbidden"))
    );
    // One character changed.
    let mut tampered = approve.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let (status, _) = post_link(&app, &tampered).await;
    assert_eq!(status, 403);
    assert_eq!(pending(&app).await.status, ApprovalStatus::Pending);

    // The real link approves, as the sink.
    let (status, answer) = post_link(&app, &approve).await;
    assert_eq!(status, 200, "{answer:#}");
    assert_eq!(answer["decided_now"], true);
    assert_eq!(answer["approval"]["status"], "approved");
    assert_eq!(answer["approval"]["decided_by"], "link:phone");
    let decided = pending(&app).await;
    assert_eq!(
        (decided.status, decided.decided_by.as_deref()),
        (ApprovalStatus::Approved, Some("link:phone"))
    );

    // A replay is refused; the reject link reports the first decision and changes nothing.
    let (status, answer) = post_link(&app, &approve).await;
    assert_eq!((status, &answer["error"]["code"]), (410, &json!("gone")));
    let (status, answer) = post_link(&app, &reject).await;
    assert_eq!(status, 200, "{answer:#}");
    assert_eq!(answer["decided_now"], false);
    assert_eq!(answer["approval"]["status"], "approved");
    assert_eq!(pending(&app).await.status, ApprovalStatus::Approved);

    let decisions = audit(&app, "approval.decided").await;
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    assert_eq!(decisions[0].0, "link:phone");
    let refused = audit(&app, "link.refused").await;
    let reasons: Vec<&str> = refused
        .iter()
        .map(|(_, d)| d["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["bad_signature", "bad_signature", "used"]);
    assert_eq!(refused[0].1["approval_id"], Value::Null, "unverified");
    assert_eq!(refused[0].1["remote"], "127.0.0.1");
    assert_eq!(refused[2].1["approval_id"], approval_id);
    assert_eq!(refused[2].0, "link:phone");
    let mut db = app.db().await;
    let refused_on_run: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_events WHERE action = 'link.refused' AND run_id = ?",
    )
    .bind(run_id)
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(refused_on_run, 1, "the replay is on the run's timeline");

    // No key, link or sink token in the audit trail.
    let text = audit_text(&app).await;
    let key = link_key(&app).await;
    for secret in [
        hex::encode(&key),
        URL_SAFE_NO_PAD.encode(&key),
        token_of(&approve).to_owned(),
        token_of(&reject).to_owned(),
        SINK_TOKEN.to_owned(),
    ] {
        assert!(!text.contains(&secret), "a secret in the audit trail");
    }
    let attempts = eventually("the delivery's audit", WAIT, || async {
        let attempts = audit(&app, "notify.attempt").await;
        (!attempts.is_empty()).then_some(attempts)
    })
    .await;
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0].1["sink"], "phone");
    assert_eq!(attempts[0].1["outcome"], "delivered");
    assert!(
        !attempts[0]
            .1
            .to_string()
            .contains(&receiver.address.to_string()),
        "no sink URL in the audit"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_link_expires_with_its_lifetime_and_the_refusal_is_audited() {
    let receiver = Receiver::start(0).await;
    let (app, _secrets) = app_with("link_ttl_secs = 60", &ntfy_sink(&receiver)).await;
    let (_, approval_id) = approval(&app, "pbs", Duration::from_secs(600)).await;
    let message = receiver.wait_for("/", "/topic", "runbookd-alerts").await;
    let approve = message.action_url(0);

    app.clock.advance(chrono::Duration::seconds(61));
    let (status, answer) = post_link(&app, &approve).await;
    assert_eq!((status, &answer["error"]["code"]), (410, &json!("gone")));
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
    let page = app.client.get(&approve).send().await.unwrap();
    assert_eq!(page.status(), 410, "the page refuses it too");
    let approval = app.store.approval(approval_id).await.unwrap().unwrap();
    assert_eq!(
        approval.status,
        ApprovalStatus::Pending,
        "the approval itself has not expired"
    );
    let refused = audit(&app, "link.refused").await;
    assert_eq!(refused.len(), 2, "{refused:?}");
    for (_, detail) in &refused {
        assert_eq!(detail["reason"], "expired");
        assert_eq!(detail["approval_id"], approval_id);
        assert_eq!(detail["decision"], "approve");
    }
    assert_eq!(
        (&refused[0].1["method"], &refused[1].1["method"]),
        (&json!("POST"), &json!("GET"))
    );
    app.stop().await;
}

#[tokio::test]
async fn two_simultaneous_uses_of_one_link_decide_once() {
    let receiver = Receiver::start(0).await;
    let (app, _secrets) = app_with("", &ntfy_sink(&receiver)).await;
    let (_, approval_id) = approval(&app, "pbs", Duration::from_secs(600)).await;
    let message = receiver.wait_for("/", "/topic", "runbookd-alerts").await;
    let reject = message.action_url(1);

    // All released at once, so the uses really overlap.
    const USES: usize = 20;
    let start = Arc::new(tokio::sync::Barrier::new(USES));
    let uses: Vec<_> = (0..USES)
        .map(|_| {
            let (client, url, start) = (app.client.clone(), reject.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                let response = client
                    .post(&url)
                    .header("accept", "application/json")
                    .send()
                    .await
                    .unwrap();
                response.status().as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for used in uses {
        statuses.push(used.await.unwrap());
    }
    statuses.sort();
    let mut expected = vec![410; USES];
    expected[0] = 200;
    assert_eq!(statuses, expected, "exactly one decides");
    let approval = app.store.approval(approval_id).await.unwrap().unwrap();
    assert_eq!(approval.status, ApprovalStatus::Rejected);
    assert_eq!(audit(&app, "approval.decided").await.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn webhook_and_slack_payloads_carry_the_links_and_every_event_is_sent() {
    let receiver = Receiver::start(0).await;
    let sinks = format!(
        "[[sinks]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}\"\n\n\
         [[sinks]]\nname = \"chat\"\nkind = \"slack\"\nurl = \"{}\"\nevents = [\"approval_requested\"]\n\n\
         [[sinks]]\nname = \"trusted\"\nkind = \"webhook\"\nurl = \"{}\"\nlinks = true\nevents = [\"approval_requested\"]\n",
        receiver.url("/hook"),
        receiver.url("/chat/T000/B000/secret-part"),
        receiver.url("/trusted"),
    );
    let (app, _secrets) = app_with("", &sinks).await;
    let (run_id, approval_id) = approval(&app, "pbs", Duration::from_secs(600)).await;

    let hook = receiver
        .wait_for("/hook", "/event", "approval_requested")
        .await;
    let body = &hook.body;
    assert_eq!(hook.authorization, None);
    assert_eq!(body["run"]["id"], run_id);
    assert_eq!(body["approval"]["id"], approval_id);
    assert_eq!(body["approval"]["step"], "remount_datastore");
    assert_eq!(
        body["approval"]["command"],
        "umount -l /mnt/datastore && mount /mnt/datastore"
    );
    assert_eq!(body["approval"]["risk"], "high");
    assert!(body["approval"]["expires_at"].is_string());
    // A webhook may feed a program (the agent's pipeline): no working links unless asked for.
    assert_eq!(
        body["links"]["open"],
        app.url(&format!("/approvals/{approval_id}"))
    );
    assert_eq!(body["links"]["approve"], Value::Null, "{body:#}");
    assert_eq!(body["links"]["reject"], Value::Null, "{body:#}");
    assert!(!body.to_string().contains("/links/"), "{body:#}");
    let trusted = receiver
        .wait_for("/trusted", "/event", "approval_requested")
        .await;
    let approve = trusted.body["links"]["approve"].as_str().unwrap();
    let reject = trusted.body["links"]["reject"].as_str().unwrap();
    assert!(approve.starts_with(&app.url("/links/")));
    assert!(reject.starts_with(&app.url("/links/")));

    let chat = eventually("the slack message", WAIT, || async {
        receiver
            .on("/chat/T000/B000/secret-part")
            .into_iter()
            .next()
    })
    .await;
    let blocks = chat.body["blocks"].as_array().unwrap();
    assert!(
        chat.body["text"]
            .as_str()
            .unwrap()
            .contains("remount_datastore")
    );
    assert_eq!(blocks[0]["type"], "section");
    assert_eq!(blocks[1]["type"], "actions");
    let buttons = blocks[1]["elements"].as_array().unwrap();
    let labels: Vec<&str> = buttons
        .iter()
        .map(|b| b["text"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["Approve", "Reject", "Open"]);
    let slack_approve = buttons[0]["url"].as_str().unwrap();
    assert!(slack_approve.starts_with(&app.url("/links/")));
    assert_ne!(slack_approve, approve, "each sink gets its own links");
    // A Slack button opens the confirmation page; its form makes the decision.
    let page = app.client.get(slack_approve).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let answer = app.client.post(slack_approve).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    assert!(
        answer
            .text()
            .await
            .unwrap()
            .contains("approved by link:chat")
    );

    // A rejection by REST escalates its run: that is sent to the webhook only.
    // The approved run is back in the queue; nothing drives it in this test.
    app.store
        .cancel_run(run_id, "test", "not driven here", app.clock.now())
        .await
        .unwrap();
    let (_, second) = approval(&app, "pbs-1", Duration::from_secs(600)).await;
    // Both sinks hear of it before it is decided (the notifier skips decided approvals).
    eventually("the second approval on both sinks", WAIT, || async {
        let heard = |path: &str| {
            receiver.on(path).iter().any(|r| {
                r.body.pointer("/approval/id") == Some(&json!(second))
                    || r.body["text"].as_str().is_some_and(|t| t.contains("pbs-1"))
            })
        };
        (heard("/hook") && heard("/chat/T000/B000/secret-part")).then_some(())
    })
    .await;
    let response = app
        .post_json(
            &format!("/api/v1/approvals/{second}/reject"),
            common::APPROVER_TOKEN,
            "",
        )
        .await;
    assert_eq!(response.status(), 200);
    let escalated = receiver.wait_for("/hook", "/event", "run_escalated").await;
    assert!(
        escalated.body["reason"]
            .as_str()
            .unwrap()
            .contains("rejected by approver"),
        "{:#}",
        escalated.body
    );

    // A run that resolves, one that escalates, and a tripped breaker.
    let now = app.clock.now();
    let resolved = leased_run(&app.store, None, "pbs-resolved", now).await;
    app.store
        .finish_run(
            &resolved,
            Ending::Resolved,
            &json!({"cause": "stale_nfs_handles"}),
            now,
        )
        .await
        .unwrap();
    let done = receiver.wait_for("/hook", "/event", "run_resolved").await;
    assert_eq!(done.body["run"]["id"], resolved.run_id);
    assert_eq!(
        done.body["links"]["open"],
        app.url("/"),
        "no incident: the home page"
    );

    let failed = leased_run(&app.store, None, "pbs-2", now).await;
    app.store
        .finish_run(
            &failed,
            Ending::Escalated,
            &json!({"reason": "the canary backup failed"}),
            now,
        )
        .await
        .unwrap();
    receiver
        .wait_for("/hook", "/reason", "the canary backup failed")
        .await;

    let limits = Limits {
        cooldown: Duration::ZERO,
        hourly_budget: 100,
        breaker_after: 1,
    };
    for _ in 0..2 {
        let lease = leased_run(&app.store, None, "pbs-2", now).await;
        let verdict = app
            .store
            .reserve_action(&lease, "restart_pbs", "pbs-2", limits, now)
            .await
            .unwrap();
        assert!(
            matches!(verdict, Err(Blocked::Breaker { .. })),
            "{verdict:?}"
        );
        app.store
            .finish_run(&lease, Ending::Resolved, &json!({}), now)
            .await
            .unwrap();
    }
    let breaker = receiver
        .wait_for("/hook", "/event", "breaker_tripped")
        .await;
    assert!(breaker.body["title"].as_str().unwrap().contains("pbs-2"));
    // Both blocked runs' resolutions arrive after the breaker events were read.
    eventually("both later resolutions", WAIT, || async {
        let resolved = receiver
            .on("/hook")
            .iter()
            .filter(|r| r.body["event"] == "run_resolved")
            .count();
        (resolved == 3).then_some(())
    })
    .await;
    let breakers = receiver
        .on("/hook")
        .iter()
        .filter(|r| r.body["event"] == "breaker_tripped")
        .count();
    assert_eq!(
        breakers, 1,
        "one notification per trip, not per blocked action"
    );
    assert_eq!(
        receiver.on("/chat/T000/B000/secret-part").len(),
        2,
        "the slack sink wants approvals only"
    );
    assert!(
        !audit_text(&app).await.contains("secret-part"),
        "no sink URL in the audit trail"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_flaky_sink_is_retried_and_a_dead_one_stops_nothing_else() {
    let flaky = Receiver::start(2).await;
    let phone = Receiver::start(0).await;
    let dead = closed_port().await;
    let sinks = format!(
        "[[sinks]]\nname = \"flaky\"\nkind = \"webhook\"\nurl = \"{}\"\n\n\
         [[sinks]]\nname = \"dead\"\nkind = \"webhook\"\nurl = \"http://{dead}/hook\"\n\n{}",
        flaky.url("/flaky"),
        ntfy_sink(&phone),
    );
    let (app, _secrets) = app_with("", &sinks).await;
    let (_, approval_id) = approval(&app, "pbs", Duration::from_secs(600)).await;

    let message = phone.wait_for("/", "/topic", "runbookd-alerts").await;
    flaky
        .wait_for("/flaky", "/event", "approval_requested")
        .await;
    let approve = message.action_url(0);
    let (status, _) = post_link(&app, &approve).await;
    assert_eq!(status, 200);
    assert_eq!(
        app.store
            .approval(approval_id)
            .await
            .unwrap()
            .unwrap()
            .status,
        ApprovalStatus::Approved
    );

    let by_sink = |attempts: &[(String, Value)], sink: &str| -> Vec<Value> {
        attempts
            .iter()
            .filter(|(_, d)| d["sink"] == sink)
            .map(|(_, d)| d.clone())
            .collect()
    };
    let attempts = eventually("three attempts for each retried sink", WAIT, || async {
        let attempts = audit(&app, "notify.attempt").await;
        (by_sink(&attempts, "flaky").len() == 3 && by_sink(&attempts, "dead").len() == 3)
            .then_some(attempts)
    })
    .await;
    let flaky_attempts = by_sink(&attempts, "flaky");
    let outcomes: Vec<(&Value, &Value, &Value)> = flaky_attempts
        .iter()
        .map(|d| (&d["attempt"], &d["outcome"], &d["status"]))
        .collect();
    assert_eq!(
        outcomes,
        [
            (&json!(1), &json!("failed"), &json!(500)),
            (&json!(2), &json!("failed"), &json!(500)),
            (&json!(3), &json!("delivered"), &json!(200)),
        ]
    );
    let dead_attempts = by_sink(&attempts, "dead");
    for (i, attempt) in dead_attempts.iter().enumerate() {
        assert_eq!(attempt["attempt"], i as u64 + 1);
        assert_eq!(attempt["outcome"], "failed");
        assert_eq!(attempt["status"], Value::Null);
        assert!(
            attempt["error"]
                .as_str()
                .unwrap()
                .contains("error sending request")
        );
        assert!(
            !attempt["error"]
                .as_str()
                .unwrap()
                .contains(&dead.to_string()),
            "no sink URL in the error"
        );
        assert_eq!(attempt["gave_up"], i == 2);
    }
    assert_eq!(by_sink(&attempts, "phone").len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn history_from_before_notifications_is_not_sent() {
    let receiver = Receiver::start(0).await;
    // A first life without sinks leaves an approval in the trail.
    let app = TestApp::spawn().await;
    approval(&app, "pbs", Duration::from_secs(600)).await;
    let mut db = app.db().await;
    let cursor: Option<i64> = sqlx::query_scalar("SELECT last_event_id FROM notify_cursor")
        .fetch_optional(&mut db)
        .await
        .unwrap();
    assert_eq!(cursor, None, "no sinks, no cursor");
    drop(db);
    let db_path = app.db_path.clone();
    let dir = app.stop().await;

    let untokened = ntfy_sink(&receiver).replace("token_file = \"TOKEN_FILE\"\n", "");
    let app = reopen(db_path, dir.path(), &untokened).await;
    let ten_minutes = Duration::from_secs(600);
    parked_on(
        &app,
        "pbs-b",
        (
            "enable_job",
            "pvesh set /cluster/backup/job-1 --enabled 1",
            "medium",
        ),
        ten_minutes,
    )
    .await;
    let message = receiver.wait_for("/", "/topic", "runbookd-alerts").await;
    assert!(
        message.body["title"]
            .as_str()
            .unwrap()
            .contains("enable_job")
    );
    assert_eq!(message.authorization, None);
    let attempts = eventually("the delivery's audit", WAIT, || async {
        let attempts = audit(&app, "notify.attempt").await;
        (!attempts.is_empty()).then_some(attempts)
    })
    .await;
    assert_eq!(attempts.len(), 1, "only the new approval: {attempts:?}");
    assert_eq!(receiver.on("/").len(), 1);
    app.stop().await;
    drop(dir);
}

/// `runbookd check` on a config holding `text`: whether it passed, and its stderr.
fn check(config: &std::path::Path, text: &str) -> (bool, String) {
    std::fs::write(config, text).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_runbookd"))
        .args(["check", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.success(), stderr)
}

#[test]
fn check_refuses_bad_sinks_with_clear_messages() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("runbookd.toml");
    let (passed, stderr) = check(
        &config,
        "[[notify.sinks]]\nname = \"pager\"\nkind = \"ntfy\"\nurl = \"http://127.0.0.1:9/\"\n\n\
         [[notify.sinks]]\nname = \"chat\"\nkind = \"slack\"\nurl = \"http://127.0.0.1:9/hook\"\ntoken = \"inline-secret-value\"\n",
    );
    assert!(!passed);
    let at = |line: usize| format!("{}:{line}:1: notify sink", config.display());
    assert!(
        stderr.contains(&at(1)) && stderr.contains("'pager': an ntfy sink needs a topic"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&at(6))
            && stderr.contains("'chat': secrets are not accepted in the config"),
        "{stderr}"
    );
    assert!(!stderr.contains("inline-secret-value"), "{stderr}");

    let refusals = [
        (
            "[[notify.sinks]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\nlinks = \"yes\"\n",
            "invalid type: string \"yes\", expected a boolean",
        ),
        (
            "[[notify.sinks]]\nname = \"pager\"\nkind = \"email\"\nurl = \"http://127.0.0.1:9/\"\n",
            "unknown variant `email`, expected one of `webhook`, `ntfy`, `slack`",
        ),
    ];
    for (text, message) in refusals {
        let (passed, stderr) = check(&config, text);
        assert!(!passed, "{text}");
        assert!(stderr.contains(message), "{stderr}");
    }
}

/// The acceptance story through the real binary on the twin: `serve --lab nfs-unmounted`
/// asks once on ntfy for the whole remount (every command listed), one tap on Approve works
/// once, the run resolves and that is announced too; the service's own log (at debug for the HTTP layer)
/// holds no link, link key or sink token.
#[tokio::test]
async fn the_real_service_on_the_twin_is_driven_to_resolved_by_ntfy_links() {
    use common::process::ServiceProcess;
    const ADMIN: &str = "notify-admin-secret-0123456789abcdef";

    let receiver = Receiver::start(0).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data/runbookd.db");
    let config = format!(
        "[notify]\npoll_interval_ms = 50\nbackoff_initial_ms = 10\nbackoff_max_ms = 50\n\n\
         [[notify.sinks]]\nname = \"phone\"\nkind = \"ntfy\"\nurl = \"{}\"\ntopic = \"runbookd-alerts\"\ntoken_env = \"NTFY_TOKEN\"\n",
        receiver.url("/")
    );
    let env = [
        ("NTFY_TOKEN", SINK_TOKEN),
        ("RUST_LOG", "info,tower_http=debug,runbookd=debug"),
    ];
    let service =
        ServiceProcess::start_lab(dir.path(), "nfs-unmounted", ADMIN, &[], &config, &env).await;
    let client = reqwest::Client::new();
    let run_id = service.post_reference_alert(ADMIN).await["run_id"]
        .as_i64()
        .unwrap();

    let approval_message = |step: &'static str| {
        let receiver = receiver.clone();
        async move {
            eventually(
                &format!("the approval of {step} on ntfy"),
                Duration::from_secs(60),
                || async {
                    receiver.on("/").into_iter().find(|r| {
                        r.body["title"]
                            .as_str()
                            .is_some_and(|t| t.starts_with("Approval needed") && t.contains(step))
                    })
                },
            )
            .await
        }
    };
    let message = approval_message("lazy_unmount").await;
    assert_eq!(
        message.authorization.as_deref(),
        Some(format!("Bearer {SINK_TOKEN}").as_str())
    );
    let text = message.body["message"].as_str().unwrap();
    assert!(
        text.contains("`umount -l /mnt/pbs-datastore` on pbs (detaches the datastore's NFS mount")
            && text.contains(", then `mount /mnt/pbs-datastore` on pbs (mounts")
            && text.contains("`systemctl restart proxmox-backup proxmox-backup-proxy` on pbs"),
        "the one approval lists every command of the remount, each with its host and what it changes: {text}"
    );
    assert!(
        text.contains("If nobody decides by ")
            && text.ends_with("it is rejected and the run escalates to a human."),
        "the message says what happens if nobody decides: {text}"
    );
    let approve = message.action_url(0);
    assert!(
        approve.starts_with(&format!("{}/links/", service.address)),
        "{approve}"
    );
    let answer = client
        .post(&approve)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().await.unwrap();
    assert_eq!(answer["approval"]["step"], "lazy_unmount");
    assert_eq!(answer["approval"]["decided_by"], "link:phone");
    let used = [approve];
    eventually(
        "the resolution on ntfy",
        Duration::from_secs(90),
        || async {
            receiver.on("/").into_iter().find(|r| {
                r.body["title"]
                    .as_str()
                    .is_some_and(|t| t.starts_with(&format!("Run {run_id} resolved")))
            })
        },
    )
    .await;
    let asked = receiver
        .on("/")
        .into_iter()
        .filter(|r| {
            r.body["title"]
                .as_str()
                .is_some_and(|t| t.starts_with("Approval needed"))
        })
        .count();
    assert_eq!(asked, 1, "one tap: the rest of the remount did not ask");
    let replay = client.post(&used[0]).send().await.unwrap();
    assert_eq!(replay.status(), 410);

    let key = common::link_key(&db);
    let log = service.log_text();
    assert!(
        log.contains("\"path\":\"/links/…\""),
        "the HTTP layer logged link requests, with the token cut out"
    );
    for secret in [
        hex::encode(&key),
        URL_SAFE_NO_PAD.encode(&key),
        token_of(&used[0]).to_owned(),
        SINK_TOKEN.to_owned(),
    ] {
        assert!(!log.contains(&secret), "a secret in the service log");
    }
    assert!(service.terminate().await.success());
}

/// A link's use and its decision are one transaction: when the decision fails (here a trigger
/// makes the approval's update fail, as a busy or broken database would), the link is not
/// spent and the approval stays pending; the same link then works once the fault is gone.
#[tokio::test]
async fn a_failed_decision_does_not_spend_the_link() {
    let receiver = Receiver::start(0).await;
    let (app, _secrets) = app_with("", &ntfy_sink(&receiver)).await;
    let (_, approval_id) = approval(&app, "pbs", Duration::from_secs(600)).await;
    let message = receiver.wait_for("/", "/topic", "runbookd-alerts").await;
    let approve = message.action_url(0);

    let mut db = app.db().await;
    sqlx::query(
        "CREATE TRIGGER fail_decisions BEFORE UPDATE ON approvals
         BEGIN SELECT RAISE(ABORT, 'injected fault'); END",
    )
    .execute(&mut db)
    .await
    .unwrap();
    let (status, answer) = post_link(&app, &approve).await;
    assert_eq!(status, 500, "{answer:#}");
    assert_eq!(app.count("used_links").await, 0, "the link is not spent");
    let approval = app.store.approval(approval_id).await.unwrap().unwrap();
    assert_eq!(approval.status, ApprovalStatus::Pending);

    sqlx::query("DROP TRIGGER fail_decisions")
        .execute(&mut db)
        .await
        .unwrap();
    let (status, answer) = post_link(&app, &approve).await;
    assert_eq!(status, 200, "{answer:#}");
    assert_eq!(answer["decided_now"], true);
    assert_eq!(answer["approval"]["decided_by"], "link:phone");
    assert_eq!(app.count("used_links").await, 1);
    let (status, _) = post_link(&app, &approve).await;
    assert_eq!(status, 410, "still single-use");
    app.stop().await;
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

/// The cursor in memory moves on even when its copy in the database cannot be written (a
/// trigger refuses the write here, as a busy database would): nothing is sent twice.
#[tokio::test]
async fn a_cursor_that_cannot_be_saved_does_not_resend() {
    let receiver = Receiver::start(0).await;
    let (app, _secrets) = app_with("", &ntfy_sink(&receiver)).await;
    // The notifier has placed its cursor at start; from now on it cannot save it.
    let mut db = app.db().await;
    sqlx::query(
        "CREATE TRIGGER fail_cursor BEFORE UPDATE ON notify_cursor
         BEGIN SELECT RAISE(ABORT, 'injected fault'); END",
    )
    .execute(&mut db)
    .await
    .unwrap();
    approval_named(&app, "pbs-a", "first_step").await;
    wait_titled(&receiver, "first_step").await;
    approval_named(&app, "pbs-b", "second_step").await;
    wait_titled(&receiver, "second_step").await;
    let attempts = eventually("both deliveries audited", WAIT, || async {
        let attempts = audit(&app, "notify.attempt").await;
        (attempts.len() >= 2).then_some(attempts)
    })
    .await;
    assert_eq!(titled(&receiver, "first_step"), 1, "sent once");
    assert_eq!(titled(&receiver, "second_step"), 1, "sent once");
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    app.stop().await;
}

#[tokio::test]
async fn the_saved_cursor_never_moves_backwards() {
    let app = TestApp::spawn().await;
    let read = |app: &TestApp| {
        let path = app.db_path.clone();
        async move {
            let mut db = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&path)
                .connect()
                .await
                .unwrap();
            sqlx::query_scalar::<_, i64>("SELECT last_event_id FROM notify_cursor")
                .fetch_one(&mut db)
                .await
                .unwrap()
        }
    };
    let start = app.store.notify_cursor().await.unwrap();
    app.store.set_notify_cursor(start + 10).await.unwrap();
    assert_eq!(read(&app).await, start + 10);
    app.store.set_notify_cursor(start + 5).await.unwrap();
    assert_eq!(
        read(&app).await,
        start + 10,
        "a late, older write changes nothing"
    );
    app.store.set_notify_cursor(start + 11).await.unwrap();
    assert_eq!(read(&app).await, start + 11);
    app.stop().await;
}

/// Sinks on, then off for a while (events happen), then on again: what happened while they
/// were off is not sent.
#[tokio::test]
async fn sinks_turned_off_and_on_again_do_not_replay_the_gap() {
    let receiver = Receiver::start(0).await;
    let (app, secrets) = app_with("", &ntfy_sink(&receiver)).await;
    approval_named(&app, "pbs-a", "while_on").await;
    wait_titled(&receiver, "while_on").await;
    let db_path = app.db_path.clone();
    let dir = app.stop().await;

    let app = TestApp::spawn_with(|config| config.database.path = db_path.clone()).await;
    approval_named(&app, "pbs-b", "while_off").await;
    let dir2 = app.stop().await;

    let app = reopen(db_path, secrets.path(), &ntfy_sink(&receiver)).await;
    approval_named(&app, "pbs-c", "on_again").await;
    wait_titled(&receiver, "on_again").await;
    assert_eq!(titled(&receiver, "while_off"), 0, "{:#?}", receiver.on("/"));
    assert_eq!(titled(&receiver, "while_on"), 1);
    app.stop().await;
    drop((dir, dir2));
}

/// An event that cannot become a notification (its run's row no longer decodes) is skipped
/// after a few tries, audited, and later events are still sent.
#[tokio::test]
async fn an_event_that_keeps_failing_is_skipped_and_audited() {
    let receiver = Receiver::start(0).await;
    let (app, _secrets) = app_with("", &ntfy_sink(&receiver)).await;
    let now = app.clock.now();
    let broken = leased_run(&app.store, None, "pbs-broken", now).await;
    let mut db = app.db().await;
    sqlx::query("UPDATE runs SET state = 'no-such-state' WHERE id = ?")
        .bind(broken.run_id)
        .execute(&mut db)
        .await
        .unwrap();
    // An event on the broken run, after the corruption.
    app.store
        .record_event(
            runbookd::store::audit::NewAuditEvent {
                actor: "test",
                action: runbookd::store::audit::AuditAction::RunFinished,
                incident_id: None,
                run_id: Some(broken.run_id),
                detail: json!({"state": "resolved"}),
            },
            now,
        )
        .await
        .unwrap();
    approval_named(&app, "pbs-after", "after_the_broken_one").await;
    wait_titled(&receiver, "after_the_broken_one").await;
    // The broken run's earlier events (created, leased) may be read after the corruption too.
    let skipped = audit(&app, "notify.skipped").await;
    assert!(
        skipped.iter().any(|(_, d)| d["action"] == "run.finished"),
        "{skipped:?}"
    );
    for (actor, detail) in &skipped {
        assert_eq!(actor, "notifier");
        assert_eq!(detail["failures"], 10);
        assert!(
            detail["error"].as_str().unwrap().contains("no-such-state"),
            "{detail}"
        );
    }
    app.stop().await;
}

/// A sink that answers with a redirect is not followed (the body holds links and the request
/// the sink's token): one failed attempt, not retried, and the redirect's target gets nothing.
#[tokio::test]
async fn a_redirecting_sink_is_a_failure_that_is_not_followed_or_retried() {
    let elsewhere = Receiver::start(0).await;
    let target = elsewhere.url("/stolen");
    let router = axum::Router::new().fallback(axum::routing::post(move || {
        let target = target.clone();
        async move { (StatusCode::TEMPORARY_REDIRECT, [("location", target)]) }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let phone = Receiver::start(0).await;
    let sinks = format!(
        "[[sinks]]\nname = \"moved\"\nkind = \"ntfy\"\nurl = \"http://{address}/\"\ntopic = \"t\"\ntoken_file = \"TOKEN_FILE\"\n\n{}",
        ntfy_sink(&phone).replace("phone", "phone2"),
    );
    let (app, _secrets) = app_with("", &sinks).await;
    approval_named(&app, "pbs", "redirected_step").await;
    wait_titled(&phone, "redirected_step").await;
    let moved = eventually("the redirected attempt", WAIT, || async {
        let attempts: Vec<Value> = audit(&app, "notify.attempt")
            .await
            .into_iter()
            .filter(|(_, d)| d["sink"] == "moved")
            .map(|(_, d)| d)
            .collect();
        (!attempts.is_empty()).then_some(attempts)
    })
    .await;
    assert_eq!(moved.len(), 1, "not retried: {moved:?}");
    assert_eq!(moved[0]["status"], 307);
    assert_eq!(moved[0]["outcome"], "failed");
    assert_eq!(moved[0]["gave_up"], true);
    assert!(
        elsewhere.received.lock().unwrap().is_empty(),
        "not followed"
    );
    app.stop().await;
}

/// `runbookd_link_requests_limited_total` as /metrics reports it; 0 before the first 429.
async fn limited(app: &TestApp) -> u64 {
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("runbookd_link_requests_limited_total "))
        .map_or(0, |value| value.trim().parse::<f64>().unwrap() as u64)
}

/// Garbage links are audited, but one address cannot flood the trail: past its quota it gets
/// 429 (JSON or a page), counted in a metric and not audited.
#[tokio::test]
async fn link_requests_past_the_per_address_limit_get_429_and_no_audit_row() {
    let (app, _secrets) = app_with("link_requests_per_minute = 3", "").await;
    let garbage = app.url("/links/AAAAnot-a-real-link");
    for _ in 0..2 {
        let (status, _) = post_link(&app, &garbage).await;
        assert_eq!(status, 403);
    }
    let page = app.client.get(&garbage).send().await.unwrap();
    assert_eq!(page.status(), 403);
    assert_eq!(audit(&app, "link.refused").await.len(), 3);

    let before = limited(&app).await;
    let response = app
        .client
        .post(&garbage)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry_after = |response: &reqwest::Response| -> u64 {
        let header = response.headers().get("retry-after");
        let header = header.unwrap_or_else(|| panic!("no Retry-After: {response:?}"));
        header.to_str().unwrap().parse().unwrap()
    };
    assert!(retry_after(&response) >= 1);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"]["code"], "too_many_requests");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("too many requests from your address"),
        "{answer:#}"
    );
    let page = app.client.get(&garbage).send().await.unwrap();
    assert_eq!(page.status(), 429);
    assert!(retry_after(&page) >= 1, "the page says when to retry too");
    assert!(page.text().await.unwrap().contains("too many requests"));
    assert_eq!(
        audit(&app, "link.refused").await.len(),
        3,
        "refusals past the limit are not audited"
    );
    // The counter is process-wide (other tests add to it): it grew by at least our two.
    assert!(limited(&app).await >= before + 2);
    app.stop().await;
}

/// A browser's POST that decides is answered 303 to the link's own page, which shows the
/// decision: a reload shows it again instead of re-POSTing, and no refusal is audited for it.
/// A replay (a POST) is still refused and audited.
#[tokio::test]
async fn a_browser_post_is_redirected_to_the_page_showing_the_decision() {
    let receiver = Receiver::start(0).await;
    let (app, _secrets) = app_with("", &ntfy_sink(&receiver)).await;
    let (_, approval_id) = approval(&app, "pbs", Duration::from_secs(600)).await;
    let message = receiver.wait_for("/", "/topic", "runbookd-alerts").await;
    let approve = message.action_url(0);
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let answer = browser.post(&approve).send().await.unwrap();
    assert_eq!(answer.status(), 303);
    assert_eq!(answer.headers()["referrer-policy"], "no-referrer");
    let location = answer.headers()["location"].to_str().unwrap();
    let target = reqwest::Url::parse(&approve)
        .unwrap()
        .join(location)
        .unwrap();
    assert_eq!(target.as_str(), approve, "back to the link itself");
    for _ in 0..2 {
        let page = browser.get(target.clone()).send().await.unwrap();
        assert_eq!(page.status(), 200);
        let html = page.text().await.unwrap();
        assert!(html.contains("approved by link:phone"), "{html}");
        assert!(!html.contains("<form method=\"post\">"), "{html}");
    }
    let approval = app.store.approval(approval_id).await.unwrap().unwrap();
    assert_eq!(approval.status, ApprovalStatus::Approved);
    assert_eq!(audit(&app, "approval.decided").await.len(), 1);
    assert_eq!(
        audit(&app, "link.refused").await.len(),
        0,
        "viewing is no refusal"
    );

    let replay = browser.post(&approve).send().await.unwrap();
    assert_eq!(replay.status(), 410);
    let refused = audit(&app, "link.refused").await;
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].1["reason"], "used");
    app.stop().await;
}

/// A link is honoured only while its sink carries links: turning a sink's links off revokes
/// the links it sent, and a link signed for a name that is no such sink is refused too; each
/// refusal is a 403 audited as `unknown_sink`, and the approval stays pending.
#[tokio::test]
async fn links_from_a_sink_that_no_longer_carries_links_are_refused() {
    let receiver = Receiver::start(0).await;
    let sinks = format!(
        "{}
[[sinks]]
name = \"hook\"\nkind = \"webhook\"\nurl = \"{}\"\n",
        ntfy_sink(&receiver),
        receiver.url("/hook")
    );
    let (app, secrets) = app_with("", &sinks).await;
    let (_, approval_id) = approval(&app, "pbs", Duration::from_secs(600)).await;
    let message = receiver.wait_for("/", "/topic", "runbookd-alerts").await;
    let approve = token_of(&message.action_url(0)).to_owned();

    // Signed with the real key, for a removed sink and for a sink without links.
    let signer = LinkSigner::new(&link_key(&app).await, Duration::from_secs(3600));
    let now = app.clock.now();
    let expires = now + chrono::Duration::minutes(5);
    for sink in ["retired", "hook"] {
        let token = signer
            .sign(approval_id, Decision::Approve, now, expires, sink)
            .unwrap();
        let (status, answer) = post_link(&app, &app.url(&format!("/links/{token}"))).await;
        assert_eq!(
            (status, &answer["error"]["code"]),
            (403, &json!("forbidden")),
            "{sink}"
        );
    }
    let db_path = app.db_path.clone();
    let dir = app.stop().await;

    // The same database, with the phone's links turned off.
    let linkless = format!("{}links = false\n", ntfy_sink(&receiver));
    let app = reopen(db_path, secrets.path(), &linkless).await;
    let sent = app.url(&format!("/links/{approve}"));
    let (status, answer) = post_link(&app, &sent).await;
    assert_eq!(status, 403, "{answer:#}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked"),
        "{answer:#}"
    );
    let page = app.client.get(&sent).send().await.unwrap();
    assert_eq!(page.status(), 403, "the page refuses it too");
    let approval = app.store.approval(approval_id).await.unwrap().unwrap();
    assert_eq!(approval.status, ApprovalStatus::Pending);

    let refused = audit(&app, "link.refused").await;
    let seen: Vec<(&str, &Value, &Value)> = refused
        .iter()
        .map(|(actor, d)| (actor.as_str(), &d["reason"], &d["sink"]))
        .collect();
    let unknown = json!("unknown_sink");
    assert_eq!(
        seen,
        [
            ("link:retired", &unknown, &json!("retired")),
            ("link:hook", &unknown, &json!("hook")),
            ("link:phone", &unknown, &json!("phone")),
            ("link:phone", &unknown, &json!("phone")),
        ]
    );
    assert_eq!(app.count("used_links").await, 0);
    app.stop().await;
    drop(dir);
}

/// Only refusals are charged to an address: once garbage from one address (or one proxy,
/// for every phone behind it) has used up the quota, a genuine link from there still works;
/// refusing it again is charged.
#[tokio::test]
async fn a_genuine_link_works_after_garbage_used_up_the_limit() {
    let receiver = Receiver::start(0).await;
    let (app, _secrets) = app_with("link_requests_per_minute = 3", &ntfy_sink(&receiver)).await;
    let (_, approval_id) = approval(&app, "pbs", Duration::from_secs(600)).await;
    let message = receiver.wait_for("/", "/topic", "runbookd-alerts").await;
    let approve = message.action_url(0);

    let garbage = app.url("/links/AAAAnot-a-real-link");
    for _ in 0..3 {
        assert_eq!(post_link(&app, &garbage).await.0, 403);
    }
    assert_eq!(
        post_link(&app, &garbage).await.0,
        429,
        "the quota is used up"
    );

    let page = app.client.get(&approve).send().await.unwrap();
    assert_eq!(
        page.status(),
        200,
        "the genuine link's page is not throttled"
    );
    let (status, answer) = post_link(&app, &approve).await;
    assert_eq!(status, 200, "{answer:#}");
    assert_eq!(answer["approval"]["decided_by"], "link:phone");
    let approval = app.store.approval(approval_id).await.unwrap().unwrap();
    assert_eq!(approval.status, ApprovalStatus::Approved);

    let (status, _) = post_link(&app, &approve).await;
    assert_eq!(status, 429, "a replay is a refusal, and charged");
    assert_eq!(audit(&app, "link.refused").await.len(), 3);
    app.stop().await;
}

/// The confirmation page escapes what the run asked for (a hostile command) and carries the
/// web page's security headers, with no Referer for the credential in its URL.
#[tokio::test]
async fn the_link_page_escapes_a_hostile_command_and_sends_the_security_headers() {
    let receiver = Receiver::start(0).await;
    let (app, _secrets) = app_with("", &ntfy_sink(&receiver)).await;
    let ten_minutes = Duration::from_secs(600);
    parked_on(
        &app,
        "pbs",
        ("hostile", "echo \"<script>alert(1)</script>\"", "high"),
        ten_minutes,
    )
    .await;
    let message = receiver.wait_for("/", "/topic", "runbookd-alerts").await;
    let approve = message.action_url(0);

    let page = app.client.get(&approve).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    assert!(
        headers["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("default-src 'none'"),
        "{headers:?}"
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["cache-control"], "no-store");
    let html = page.text().await.unwrap();
    assert!(
        html.contains("echo &quot;&lt;script&gt;alert(1)&lt;/script&gt;&quot;"),
        "{html}"
    );
    assert!(!html.contains("<script"), "{html}");

    // Refusal pages too.
    let refused = app
        .client
        .get(app.url("/links/garbage"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused.headers().contains_key("content-security-policy"));
    app.stop().await;
}
