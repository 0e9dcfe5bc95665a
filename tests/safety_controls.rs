//! Safety controls operators can run, through the real binary: runs refused for unusable labels
//! leave the breaker closed and the next real alert is fixed; the breaker and global dry-run are
//! shown and reset through the API, the CLI, the page and `/metrics`, by admins only, with an
//! audited reason; dry-run and live runs stay apart, and a dry run names what it would have run
//! and never claims a fix.

use crate::common;

use std::time::Duration;

use common::process::ServiceProcess;
use common::{ADMIN_TOKEN, AGENT_TOKEN, APPROVER_TOKEN, TestApp, eventually, reference};
use runbookd::clock::Clock;
use runbookd::store::runs::Ending;
use serde_json::{Value, json};

const ADMIN: &str = "safety-test-admin-secret-0123456789";
const RESTART: &str = "systemctl restart proxmox-backup proxmox-backup-proxy";

async fn call(
    base: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .bearer_auth(ADMIN)
        .timeout(Duration::from_secs(30));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get(base: &str, path: &str) -> Value {
    let (status, body) = call(base, reqwest::Method::GET, path, None).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// The run's detail once it has ended.
async fn ended(base: &str, run_id: i64) -> Value {
    eventually(
        &format!("run {run_id} to end"),
        Duration::from_secs(120),
        || async {
            let detail = get(base, &format!("/api/v1/runs/{run_id}")).await;
            let state = detail["run"]["state"].as_str()?;
            (!matches!(state, "pending" | "running" | "waiting_approval")).then_some(detail)
        },
    )
    .await
}

/// The twin's control API, as `serve --lab` logs it.
fn control(service: &ServiceProcess) -> String {
    service
        .log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|e| e["control"].as_str().map(str::to_owned))
        .expect("serve --lab logs its control address")
}

/// Every command line and API call the twin received.
async fn received(control: &str) -> Vec<String> {
    let list: Value = reqwest::get(format!("{control}/received"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["host"].as_str().unwrap(),
                r["text"].as_str().unwrap()
            )
        })
        .collect()
}

/// The reference alert as another alert of the same group, with `backup_id` set to `backup_id`.
fn alert_with(backup_id: &str, n: usize) -> String {
    let mut body: Value = serde_json::from_str(&reference("alertmanager-v4.json")).unwrap();
    let alert = &mut body["alerts"][0];
    alert["labels"]["backup_id"] = json!(backup_id);
    alert["labels"]["instance"] = json!(format!("exporter-{n}"));
    alert["fingerprint"] = json!(format!("{:016x}", 0xbad0 + n));
    body.to_string()
}

async fn post_alert(base: &str, body: String) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{base}/webhook/alertmanager"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.unwrap();
    answer["incidents"][0].clone()
}

fn breaker<'a>(safety: &'a Value, target: &str) -> &'a Value {
    safety["breakers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["target"] == target)
        .unwrap_or_else(|| panic!("no breaker for {target}: {safety:#}"))
}

#[tokio::test]
async fn ten_runs_refused_for_bad_labels_leave_the_breaker_closed_and_the_next_alert_is_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let service = ServiceProcess::start_lab(dir.path(), "stale-nfs", ADMIN, &[], "", &[]).await;
    let base = service.address.clone();
    for n in 0..10 {
        let posted = post_alert(&base, alert_with("451; rm -rf /", n)).await;
        let run_id = posted["run_id"].as_i64().expect("the alert started a run");
        let run = ended(&base, run_id).await;
        assert_eq!(run["run"]["state"], "refused", "{run:#}");
        let reason = run["run"]["outcome"]["reason"].as_str().unwrap();
        assert!(
            reason.starts_with("the alert's labels are not usable")
                && reason.contains("451; rm -rf /"),
            "{reason}"
        );
        assert!(
            run["steps"].as_array().unwrap().is_empty(),
            "nothing was tried"
        );
    }
    let safety = get(&base, "/api/v1/safety").await;
    let pbs = breaker(&safety, "pbs");
    assert_eq!(
        (pbs["open"].clone(), pbs["failures"].clone()),
        (json!(false), json!(0)),
        "{safety:#}"
    );

    let posted = service.post_reference_alert(ADMIN).await;
    let run = ended(&base, posted["run_id"].as_i64().unwrap()).await;
    assert_eq!(run["run"]["state"], "resolved", "{run:#}");
    assert_eq!(run["run"]["outcome"]["cause"], "stale_nfs_handles");
    assert_eq!(run["steps"][0]["command"], RESTART);
    assert_eq!(run["steps"][0]["exit_status"], 0);
    assert!(service.terminate().await.success());
}

#[tokio::test]
async fn dry_run_and_live_requests_stay_apart_and_a_dry_run_names_what_it_would_have_run() {
    let dir = tempfile::tempdir().unwrap();
    let service = ServiceProcess::start_lab(dir.path(), "stale-nfs", ADMIN, &[], "", &[]).await;
    let base = service.address.clone();
    let control = control(&service);
    // Held, so both runs are active at once.
    let (status, _) = call(&base, reqwest::Method::POST, "/api/v1/pause", None).await;
    assert_eq!(status, 200);
    let dry_request = json!({"playbook": "pbs-backup-stale", "labels": {"backup_type": "vm", "backup_id": "451"}, "dry_run": true});
    let (status, dry) = call(
        &base,
        reqwest::Method::POST,
        "/api/v1/runs",
        Some(dry_request.clone()),
    )
    .await;
    assert_eq!(status, 201, "{dry}");
    assert_eq!(
        (dry["attached"].clone(), dry["dry_run"].clone()),
        (json!(false), json!(true))
    );
    let live = service.post_reference_alert(ADMIN).await;
    let (dry_id, live_id) = (
        dry["run_id"].as_i64().unwrap(),
        live["run_id"].as_i64().unwrap(),
    );
    assert_ne!(
        dry_id, live_id,
        "the live alert did not attach to the dry run"
    );
    let (status, again) = call(
        &base,
        reqwest::Method::POST,
        "/api/v1/runs",
        Some(dry_request),
    )
    .await;
    assert_eq!(
        (status, again["run_id"].as_i64()),
        (200, Some(dry_id)),
        "a dry request attaches to the dry run: {again}"
    );
    let live_run = get(&base, &format!("/api/v1/runs/{live_id}")).await;
    assert_eq!(live_run["run"]["dry_run"], false);

    // Only the rehearsal goes on.
    let (status, _) = call(
        &base,
        reqwest::Method::POST,
        &format!("/api/v1/runs/{live_id}/cancel"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(&base, reqwest::Method::POST, "/api/v1/resume", None).await;
    assert_eq!(status, 200);
    let run = ended(&base, dry_id).await;
    assert_eq!(run["run"]["state"], "rehearsed", "{run:#}");
    assert_eq!(run["run"]["dry_run"], true);
    let outcome = &run["run"]["outcome"];
    let reason = outcome["reason"].as_str().unwrap();
    assert_eq!(
        reason,
        format!(
            "dry run: would have run restart_pbs on pbs: {RESTART} (cause stale_nfs_handles); nothing was changed"
        ),
    );
    assert!(
        !reason.contains("fixed") && !reason.contains("verified"),
        "{reason}"
    );
    assert_eq!(outcome["would_run"][0]["command"], RESTART);
    let steps: Vec<&str> = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        ["restart_pbs", "check_pbs_active"],
        "no verification against an unfixed world"
    );
    let received = received(&control).await;
    assert!(!received.is_empty(), "the diagnosis read the twin");
    assert!(
        received
            .iter()
            .all(|r| !r.contains(RESTART) && !r.contains(" POST ")),
        "the twin received a command the dry run only rehearsed: {received:#?}"
    );

    // The CLI shows it as a dry run that changed nothing.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_runbookd"))
        .args(["runs", "show", &dry_id.to_string()])
        .env("RUNBOOKD_URL", &base)
        .env("RUNBOOKD_TOKEN", ADMIN)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}");
    let first = text.lines().next().unwrap_or_default();
    assert!(first.ends_with("rehearsed (dry run)"), "{text}");
    assert!(text.contains(&format!("reason {reason}")), "{text}");
    assert!(service.terminate().await.success());
}

#[tokio::test]
async fn a_dry_run_on_a_healthy_twin_has_nothing_to_do_and_never_says_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let service = ServiceProcess::start_lab(dir.path(), "healthy", ADMIN, &[], "", &[]).await;
    let base = service.address.clone();
    let (status, answer) = call(
        &base,
        reqwest::Method::POST,
        "/api/v1/dry-run",
        Some(json!({"enabled": true, "reason": "rehearse before trusting the playbook"})),
    )
    .await;
    assert_eq!((status, answer), (200, json!({"dry_run": true})));
    // The switch makes the alert's run dry when it is created.
    let posted = service.post_reference_alert(ADMIN).await;
    let run = ended(&base, posted["run_id"].as_i64().unwrap()).await;
    assert_eq!(run["run"]["state"], "rehearsed", "{run:#}");
    assert_eq!(run["run"]["dry_run"], true);
    let reason = run["run"]["outcome"]["reason"].as_str().unwrap();
    assert_eq!(
        reason,
        "dry run: nothing to do: cause nothing_stale calls for no change"
    );
    assert!(
        !run["run"]["outcome"].to_string().contains("fixed"),
        "{run:#}"
    );
    let incident = get(
        &base,
        &format!("/api/v1/incidents/{}", posted["incident_id"]),
    )
    .await;
    assert_eq!(
        incident["incident"]["status"], "open",
        "a rehearsal resolves nothing"
    );
    assert!(service.terminate().await.success());
}

/// Runs `runbookd ARGS` against `url` with `token`.
async fn cli(url: &str, token: &str, args: &[&str]) -> (i32, String, String) {
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_runbookd"))
            .args(args)
            .env("RUNBOOKD_URL", url)
            .env("RUNBOOKD_TOKEN", token)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the CLI ends within 60 s")
    .unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

async fn gauge(app: &TestApp, line_start: &str) -> String {
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .unwrap_or_else(|| panic!("no {line_start} in /metrics:\n{text}"))
        .to_owned()
}

async fn audited(app: &TestApp, action: &str) -> Vec<(String, Value)> {
    let mut db = app.db().await;
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT actor, detail FROM audit_events WHERE action = ? ORDER BY id")
            .bind(action)
            .fetch_all(&mut db)
            .await
            .unwrap();
    rows.into_iter()
        .map(|(actor, detail)| (actor, serde_json::from_str(&detail).unwrap()))
        .collect()
}

#[tokio::test]
async fn breaker_reset_and_dry_run_are_for_admins_need_a_reason_and_are_audited() {
    let app = TestApp::spawn().await;
    let url = app.address.clone();
    let now = app.clock.now();
    // Three escalated runs for pbs trip its breaker (the default limit is 3).
    for _ in 0..3 {
        let lease = common::leased_run(&app.store, None, "pbs", now).await;
        app.store
            .finish_run(
                &lease,
                Ending::Escalated,
                &json!({"reason": "no known cause"}),
                now,
            )
            .await
            .unwrap();
    }
    let safety = app.get_json("/api/v1/safety").await;
    assert_eq!(breaker(&safety, "pbs")["open"], true, "{safety:#}");
    assert!(
        gauge(&app, "runbookd_breaker_open{target=\"pbs\"}")
            .await
            .ends_with(" 1")
    );

    let (code, stdout, _) = cli(&url, AGENT_TOKEN, &["safety"]).await;
    assert_eq!(code, 0);
    for expected in [
        "pause off",
        "dry-run off",
        "budget 0 of 20",
        "pbs open: 3 of 3 failures in 24 h, closes",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in\n{stdout}"
        );
    }

    // Not an admin, no reason, an empty reason, an unknown target: refused, nothing changes.
    for token in [AGENT_TOKEN, APPROVER_TOKEN] {
        let (code, _, stderr) = cli(
            &url,
            token,
            &["breaker", "reset", "pbs", "--reason", "try again"],
        )
        .await;
        assert_eq!(code, 3, "{stderr}");
        assert!(
            stderr.contains(
                "which may not pause or resume runbookd, reset a circuit breaker or switch dry-run"
            ),
            "{stderr}"
        );
    }
    let (code, _, stderr) = cli(
        &url,
        ADMIN_TOKEN,
        &["breaker", "reset", "pbs", "--reason", "  "],
    )
    .await;
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("a reason is required"), "{stderr}");
    for body in ["{}", r#"{"reason": ""}"#] {
        let response = app
            .post_json("/api/v1/breakers/pbs/reset", ADMIN_TOKEN, body)
            .await;
        assert_eq!(response.status(), 422, "{body}");
    }
    let (code, _, stderr) = cli(
        &url,
        ADMIN_TOKEN,
        &["breaker", "reset", "nas", "--reason", "x"],
    )
    .await;
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("there is no target 'nas'"), "{stderr}");
    assert_eq!(
        breaker(&app.get_json("/api/v1/safety").await, "pbs")["open"],
        true
    );
    assert!(audited(&app, "breaker.reset").await.is_empty());

    let (code, stdout, stderr) = cli(
        &url,
        ADMIN_TOKEN,
        &["breaker", "reset", "pbs", "--reason", "NFS fixed by hand"],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with(
            "breaker reset: pbs closed: 0 of 3 failures in 24 h; last reset by admin at"
        ),
        "{stdout}"
    );
    let pbs = breaker(&app.get_json("/api/v1/safety").await, "pbs").clone();
    assert_eq!(
        (pbs["open"].clone(), pbs["failures"].clone()),
        (json!(false), json!(0))
    );
    assert_eq!(pbs["last_reset"]["by"], "admin");
    assert_eq!(pbs["last_reset"]["reason"], "NFS fixed by hand");
    assert_eq!(
        audited(&app, "breaker.reset").await,
        [(
            "admin".to_owned(),
            json!({"target": "pbs", "reason": "NFS fixed by hand", "failures_before": 3})
        )]
    );
    assert!(
        gauge(&app, "runbookd_breaker_open{target=\"pbs\"}")
            .await
            .ends_with(" 0")
    );

    // Dry-run, the same way.
    let (code, _, stderr) = cli(
        &url,
        AGENT_TOKEN,
        &["dry-run", "on", "--reason", "rehearsal"],
    )
    .await;
    assert_eq!(code, 3, "{stderr}");
    let response = app
        .post_json("/api/v1/dry-run", ADMIN_TOKEN, r#"{"enabled": true}"#)
        .await;
    assert_eq!(response.status(), 422);
    assert!(
        !app.store
            .switch(runbookd::store::safety::Switch::DryRun)
            .await
            .unwrap()
    );
    assert!(gauge(&app, "runbookd_dry_run ").await.ends_with(" 0"));
    let (code, stdout, stderr) = cli(
        &url,
        ADMIN_TOKEN,
        &["dry-run", "on", "--reason", "rehearsal week"],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("dry-run on"), "{stdout}");
    let safety = app.get_json("/api/v1/safety").await;
    assert_eq!(safety["dry_run"]["on"], true);
    assert_eq!(safety["dry_run"]["changed_by"], "admin");
    assert_eq!(safety["dry_run"]["reason"], "rehearsal week");
    assert!(gauge(&app, "runbookd_dry_run ").await.ends_with(" 1"));
    let (_, stdout, _) = cli(&url, APPROVER_TOKEN, &["safety"]).await;
    assert!(
        stdout.contains("dry-run on: new runs are dry runs (set by admin"),
        "{stdout}"
    );
    assert!(stdout.contains(": rehearsal week)"), "{stdout}");
    let (code, _, _) = cli(&url, ADMIN_TOKEN, &["dry-run", "off", "--reason", "done"]).await;
    assert_eq!(code, 0);
    let changes = audited(&app, "setting.changed").await;
    assert_eq!(
        changes,
        [
            (
                "admin".to_owned(),
                json!({"setting": "dry_run", "value": true, "reason": "rehearsal week"})
            ),
            (
                "admin".to_owned(),
                json!({"setting": "dry_run", "value": false, "reason": "done"})
            ),
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn the_home_page_shows_the_safety_controls_and_a_run_page_shows_a_rehearsal() {
    let app = TestApp::spawn().await;
    let now = app.clock.now();
    let posted = app
        .post_alertmanager(&reference("alertmanager-v4.json"))
        .await;
    let incident = posted.json::<Value>().await.unwrap()["incidents"][0]["incident_id"]
        .as_i64()
        .unwrap();
    for _ in 0..3 {
        let lease = common::leased_run(&app.store, Some(incident), "pbs", now).await;
        app.store
            .finish_run(&lease, Ending::Escalated, &json!({}), now)
            .await
            .unwrap();
    }
    let reason = runbookd::store::safety::Reason::parse("rehearsal week").unwrap();
    app.store
        .set_switch_because(
            runbookd::store::safety::Switch::DryRun,
            true,
            "admin",
            &reason,
            now,
        )
        .await
        .unwrap();
    // A dry run as the engine ends one.
    let lease = common::leased_run(&app.store, Some(incident), "pbs", now).await;
    let rehearsal = "dry run: would have run restart_pbs on pbs: systemctl restart proxmox-backup (cause stale_nfs_handles); nothing was changed";
    app.store
        .finish_run(
            &lease,
            Ending::Rehearsed,
            &json!({"reason": rehearsal, "cause": "stale_nfs_handles"}),
            now,
        )
        .await
        .unwrap();

    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let cookie = common::web::session_cookie(&client, &app.address, AGENT_TOKEN).await;
    let page = |path: String| {
        let (client, cookie, url) = (client.clone(), cookie.clone(), app.url(&path));
        async move {
            let response = client
                .get(url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{path}");
            response.text().await.unwrap()
        }
    };
    let home = page("/".to_owned()).await;
    for expected in [
        "Safety controls",
        "new runs record what they would run and change nothing",
        "(set by admin at 2026-11-26 03:00:00 UTC: rehearsal week)",
        "0 of 20 mutating actions used in the last hour",
        "<li class=\"breaker-open\"><strong>pbs</strong> <span class=\"bad\">open</span>: 3 of 3 failures in 24 h",
    ] {
        assert!(home.contains(expected), "missing {expected:?} in\n{home}");
    }
    let detail = page(format!("/incidents/{incident}")).await;
    assert!(detail.contains("b-rehearsed"), "{detail}");
    assert!(
        detail.contains("commands were recorded, not run; nothing was changed"),
        "{detail}"
    );
    assert!(detail.contains(rehearsal), "{detail}");
    app.stop().await;
}
