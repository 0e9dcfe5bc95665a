//! Every alert the estate's senders emit gets fixed, and fixed again when it returns: the
//! forwarder's alerts route by matcher; unmatched alerts are visible; a group of alerts is one
//! run covering all of them; a fix resolves its incidents, the sender's late repeats start
//! nothing, a recurrence after the settle window runs again; an HA peer's late firing does not
//! reopen a resolved incident; one bad alert does not lose its delivery.

use crate::common;

use std::time::Duration;

use common::engine::{setup, setup_with};
use common::process::ServiceProcess;
use common::{INGEST_TOKEN, TestApp, eventually, reference};
use runbookd::engine::intake::Lifecycle;
use runbookd::store::incidents::IncidentStatus;
use runbookd::store::intake::{IntakeAction, ResolvedBy};
use runbookd::store::runs::RunState;
use serde_json::{Value, json};

const ADMIN: &str = "lifecycle-admin-secret-0123456789";
const INGEST: &str = "lifecycle-ingest-secret-0123456789";

async fn get(client: &reqwest::Client, url: String) -> Value {
    let response = client.get(&url).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(response.status(), 200, "GET {url}");
    response.json().await.unwrap()
}

async fn post(client: &reqwest::Client, url: String, body: &str) -> Value {
    let response = client
        .post(&url)
        .bearer_auth(INGEST)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "POST {url}");
    response.json().await.unwrap()
}

/// `runbookd ARGS` as the admin against `base`: its standard output.
async fn cli(base: &str, args: &[&str]) -> String {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_runbookd"))
        .args(args)
        .env("RUNBOOKD_URL", base)
        .env("RUNBOOKD_TOKEN", ADMIN)
        .env("NO_COLOR", "1")
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "runbookd {args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// The real binary on the twin: the forwarder's reference payload starts the PBS playbook and
/// its run resolves, with the forwarder's failure text in the evidence; an alert no playbook
/// matches is shown as unmatched in the answer, the API, the audit trail, the CLI and the page.
#[tokio::test]
async fn the_forwarders_alert_is_fixed_and_an_unmatched_alert_is_visible_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let service = ServiceProcess::start_lab(
        dir.path(),
        "stale-nfs",
        ADMIN,
        &[],
        "",
        &[("RUNBOOKD_INGEST_TOKEN", INGEST)],
    )
    .await;
    let client = reqwest::Client::new();
    let base = service.address.clone();

    let answer = post(
        &client,
        format!("{base}/ingest?source=pbs"),
        &reference("ingest-pbs-forwarder.json"),
    )
    .await;
    let entry = &answer["incidents"][0];
    assert_eq!(entry["action"], "opened", "{answer}");
    let run_id = entry["run_id"]
        .as_i64()
        .expect("the forwarder's alert started a run");
    let run = eventually("the run to end", Duration::from_secs(90), || async {
        let detail = get(&client, format!("{base}/api/v1/runs/{run_id}")).await;
        let state = detail["run"]["state"].as_str()?.to_owned();
        (state == "resolved" || state == "escalated").then_some(detail)
    })
    .await;
    assert_eq!(run["run"]["state"], "resolved", "{run:#}");
    assert_eq!(run["run"]["playbook"], "pbs-backup-stale");
    assert_eq!(run["run"]["outcome"]["cause"], "stale_nfs_handles");
    // The forwarder named its group only in text; the run covers it.
    assert_eq!(run["covers"]["groups"], json!(["vm/451"]), "{run:#}");
    let failure = &run["run"]["outcome"]["evidence"]["alert_failure"];
    assert_eq!(failure["class"], "chunk_store", "{run:#}");
    assert!(
        failure["text"]
            .as_str()
            .unwrap()
            .contains("unable to open chunk store")
    );
    let incident_id = entry["incident_id"].as_i64().unwrap();
    let incident = get(&client, format!("{base}/api/v1/incidents/{incident_id}")).await;
    assert_eq!(incident["incident"]["status"], "resolved", "{incident:#}");
    assert_eq!(incident["incident"]["resolved_by"], "run");
    assert_eq!(incident["incident"]["resolved_by_run"], run_id);
    assert_eq!(incident["incident"]["playbook"], "pbs-backup-stale");

    // An alert no playbook takes.
    let disk_full =
        r#"{"alert_name": "DiskFull", "severity": "warning", "labels": {"host": "pihanga"}}"#;
    let answer = post(&client, format!("{base}/ingest?source=manual"), disk_full).await;
    let entry = &answer["incidents"][0];
    assert_eq!(entry["action"], "opened");
    assert_eq!(entry["run_id"], Value::Null);
    let reason = entry["reason"].as_str().expect("the answer says why");
    assert!(
        reason.contains("no playbook's trigger matches alertname=\"DiskFull\""),
        "{reason}"
    );
    let unmatched_id = entry["incident_id"].as_i64().unwrap();
    let incident = get(&client, format!("{base}/api/v1/incidents/{unmatched_id}")).await;
    assert_eq!(incident["incident"]["unmatched_reason"], reason);
    let actions: Vec<&str> = incident["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"incident.unmatched"), "{actions:?}");

    let table = cli(&base, &["incidents"]).await;
    let row = table
        .lines()
        .find(|line| line.contains("DiskFull"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("unmatched"), "{table}");
    let shown = cli(&base, &["incidents", "show", &unmatched_id.to_string()]).await;
    assert!(shown.contains(&format!("unmatched: {reason}")), "{shown}");

    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let cookie = common::web::session_cookie(&browser, &base, ADMIN).await;
    let page = browser
        .get(format!("{base}/incidents/{unmatched_id}"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Unmatched: "), "{page}");
    assert!(
        page.contains("no playbook&#39;s trigger matches")
            || page.contains("no playbook's trigger matches"),
        "{page}"
    );
    let home = browser
        .get(format!("{base}/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(home.contains(">unmatched<"), "{home}");
    assert!(service.terminate().await.success());
}

fn sweep_finding() -> String {
    reference("error-hunter-finding.json")
}

/// A sweep finding is fixed; the sweep repeats it while it catches up, which starts nothing;
/// the twin breaks again, and the same finding after the settle window is a recurrence: a new
/// incident linked to the first, and a new run that fixes it again.
#[tokio::test]
async fn a_problem_that_returns_after_the_settle_window_is_fixed_again() {
    let settle = Duration::from_secs(600);
    let s = setup_with(
        "stale-nfs",
        Lifecycle {
            settle,
            ..Lifecycle::default()
        },
    )
    .await;
    let first = s.deliver(&sweep_finding(), Some("sweep")).await;
    assert_eq!(first[0].action, IntakeAction::Opened);
    let first_run = first[0].run_id.expect("the finding started a run");
    s.settle().await;
    assert_eq!(s.run(first_run).await.state, RunState::Resolved);
    let first_incident = first[0].incident_id.unwrap();
    let incident = s
        .engine
        .store
        .incident(first_incident)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(incident.status, IncidentStatus::Resolved);
    assert_eq!(incident.resolved_by, Some(ResolvedBy::Run));
    let restarts = |s: &common::engine::Setup| {
        s.mutations()
            .iter()
            .filter(|m| m.contains("systemctl restart"))
            .count()
    };
    assert_eq!(restarts(&s), 1);

    // The sweep has not caught up yet: inside the window, nothing runs.
    s.twin.clock.advance(chrono::Duration::seconds(60));
    let repeat = s.deliver(&sweep_finding(), Some("sweep")).await;
    assert_eq!(repeat[0].action, IntakeAction::Settling);
    assert_eq!(repeat[0].incident_id, Some(first_incident));
    assert_eq!(repeat[0].run_id, Some(first_run));
    assert!(
        !s.engine.work_once().await.unwrap(),
        "no run waits for a worker"
    );

    // The problem comes back after the window.
    s.twin.lab.with_world(|w| w.load("stale-nfs")).unwrap();
    // Past the settle window, and past the restart's 30 min cooldown.
    s.twin.clock.advance(chrono::Duration::minutes(30));
    let again = s.deliver(&sweep_finding(), Some("sweep")).await;
    assert_eq!(again[0].action, IntakeAction::Recurred);
    assert_eq!(again[0].recurrence_of, Some(first_incident));
    let second_run = again[0].run_id.expect("the recurrence started a run");
    assert_ne!(second_run, first_run);
    s.settle().await;
    let run = s.run(second_run).await;
    assert_eq!(run.state, RunState::Resolved, "{:?}", run.outcome);
    assert_eq!(restarts(&s), 2, "fixed again: {:?}", s.mutations());
    let second = s
        .engine
        .store
        .incident(again[0].incident_id.unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.recurrence_of, Some(first_incident));
    assert_eq!(second.resolved_by_run, Some(second_run));
}

/// An Alertmanager group of 50 stale backups: each a firing alert of its own.
fn group_of(count: u32, status: &str) -> String {
    let mut body: Value = serde_json::from_str(&reference("alertmanager-v4.json")).unwrap();
    let template = body["alerts"][0].clone();
    let alerts: Vec<Value> = (0..count)
        .map(|i| {
            let mut alert = template.clone();
            alert["status"] = json!(status);
            alert["labels"]["backup_id"] = json!((500 + i).to_string());
            alert["fingerprint"] = json!(format!("group{i:04}"));
            alert
        })
        .collect();
    body["alerts"] = Value::Array(alerts);
    body["status"] = json!(status);
    body.to_string()
}

/// 50 alerts in one group: one run that covers all 50 incidents and names all 50 groups in its
/// scope; its verified fix resolves every one of them, and the group's repeat after the fix
/// starts nothing.
#[tokio::test]
async fn a_group_of_fifty_alerts_is_one_run_covering_all_of_them() {
    let s = setup("stale-nfs").await;
    let outcomes = s.deliver(&group_of(50, "firing"), None).await;
    assert_eq!(outcomes.len(), 50);
    let run_id = outcomes[0].run_id.unwrap();
    assert!(
        outcomes.iter().all(|o| o.run_id == Some(run_id)
            && o.action == IntakeAction::Opened
            && o.incident_id.is_some()),
        "{outcomes:?}"
    );
    let covered = s.engine.store.run_incidents(run_id).await.unwrap();
    assert_eq!(covered.len(), 50);
    let named: Vec<String> = covered
        .iter()
        .map(|i| i.labels.0["backup_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(named, (500..550).map(|i| i.to_string()).collect::<Vec<_>>());
    for outcome in &outcomes {
        let runs = s
            .engine
            .store
            .runs_for_incident(outcome.incident_id.unwrap())
            .await
            .unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].id, run_id);
    }

    s.settle().await;
    assert_eq!(s.run(run_id).await.state, RunState::Resolved);
    for outcome in &outcomes {
        let incident = s
            .engine
            .store
            .incident(outcome.incident_id.unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(incident.status, IncidentStatus::Resolved);
        assert_eq!(incident.resolved_by_run, Some(run_id));
    }

    // Alertmanager repeats the group before Prometheus has seen the fresh backups.
    s.twin.clock.advance(chrono::Duration::seconds(300));
    let repeat = s.deliver(&group_of(50, "firing"), None).await;
    assert!(
        repeat
            .iter()
            .all(|o| o.action == IntakeAction::Settling && o.run_id == Some(run_id)),
        "{repeat:?}"
    );
    assert!(!s.engine.work_once().await.unwrap(), "no new run");
    assert_eq!(s.count("runs").await, 1);
}

/// An HA pair: one peer resolves, the other's late firing with the same `startsAt` must not
/// reopen the incident or start a run. A firing with a later `startsAt` is a new episode.
#[tokio::test]
async fn a_late_firing_from_an_ha_peer_does_not_reopen_a_resolved_incident() {
    let s = setup("healthy").await;
    let body = |status: &str, starts_at: &str| {
        let mut body: Value = serde_json::from_str(&reference("alertmanager-v4.json")).unwrap();
        body["alerts"][0]["status"] = json!(status);
        body["alerts"][0]["startsAt"] = json!(starts_at);
        body.to_string()
    };
    let opened = s
        .deliver(&body("firing", "2026-11-26T02:00:00Z"), None)
        .await;
    assert_eq!(opened[0].action, IntakeAction::Opened);
    let incident_id = opened[0].incident_id.unwrap();
    s.settle().await;
    let resolved = s
        .deliver(&body("resolved", "2026-11-26T02:00:00Z"), None)
        .await;
    assert_eq!(resolved[0].action, IntakeAction::Resolved);
    assert_eq!(resolved[0].incident_id, Some(incident_id));

    let late = s
        .deliver(&body("firing", "2026-11-26T02:00:00Z"), None)
        .await;
    assert_eq!(late[0].action, IntakeAction::LateFiring);
    assert_eq!(late[0].incident_id, Some(incident_id));
    let incident = s.engine.store.incident(incident_id).await.unwrap().unwrap();
    assert_eq!(incident.status, IncidentStatus::Resolved);
    assert_eq!(incident.resolved_by, Some(ResolvedBy::Source));
    assert!(!s.engine.work_once().await.unwrap(), "nothing runs");

    let later = s
        .deliver(&body("firing", "2026-11-26T09:00:00Z"), None)
        .await;
    assert_eq!(later[0].action, IntakeAction::Recurred);
    assert_eq!(later[0].recurrence_of, Some(incident_id));
}

/// Incidents are keyed by (source, fingerprint): the sweep resolving its finding does not
/// resolve the forwarder's incident with the same fingerprint.
#[tokio::test]
async fn one_source_cannot_resolve_anothers_incident() {
    let app = TestApp::spawn().await;
    let generic = |source: &str, status: &str| {
        json!({"alert_name": "PBSBackupStale", "fingerprint": "shared-fp", "source": source,
               "status": status, "labels": {"backup_id": "451"}})
        .to_string()
    };
    let opened = app
        .post_json("/ingest", INGEST_TOKEN, &generic("pbs", "firing"))
        .await;
    assert_eq!(opened.status(), 202);
    let opened: Value = opened.json().await.unwrap();
    let other = app
        .post_json("/ingest", INGEST_TOKEN, &generic("manual", "resolved"))
        .await;
    let other: Value = other.json().await.unwrap();
    assert_eq!(other["incidents"][0]["action"], "resolve_unmatched");
    let id = opened["incidents"][0]["incident_id"].as_i64().unwrap();
    let incident = app.get_incident(id).await;
    assert_eq!(incident["incident"]["status"], "open");
}

/// One delivery of 50 alerts with one bad alert: all stored, 49 accepted, the bad one refused
/// with its reason in the answer and the audit trail. A label value with a line break is
/// accepted, as Prometheus allows.
#[tokio::test]
async fn one_bad_alert_does_not_lose_its_group() {
    let app = TestApp::spawn().await;
    let mut body: Value = serde_json::from_str(&group_of(50, "firing")).unwrap();
    body["alerts"][17]["labels"]["alertname"] = json!("");
    body["alerts"][3]["labels"]["status"] = json!("line one\nline two\twith a tab");
    let response = app.post_alertmanager(&body.to_string()).await;
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["count"], 50);
    let entries = answer["incidents"].as_array().unwrap();
    let refused: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "refused")
        .collect();
    assert_eq!(refused.len(), 1, "{answer:#}");
    assert_eq!(entries[17]["action"], "refused");
    assert_eq!(
        entries[17]["reason"],
        "alerts[17].labels.alertname: the alert name is empty"
    );
    assert_eq!(entries[17]["incident_id"], Value::Null);
    assert_eq!(entries[3]["action"], "opened");

    assert_eq!(app.count("deliveries").await, 1);
    assert_eq!(app.count("alerts").await, 49);
    assert_eq!(app.count("incidents").await, 49);
    assert_eq!(app.count("refused_alerts").await, 1);
    let mut db = app.db().await;
    let (action, detail): (String, String) =
        sqlx::query_as("SELECT action, detail FROM audit_events WHERE action = 'alert.refused'")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(action, "alert.refused");
    let detail: Value = serde_json::from_str(&detail).unwrap();
    assert_eq!(detail["position"], 17);
    assert_eq!(
        detail["reason"],
        "alerts[17].labels.alertname: the alert name is empty"
    );
    let stored: String = sqlx::query_scalar(
        "SELECT json_extract(labels, '$.status') FROM alerts WHERE fingerprint = 'group0003'",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(stored, "line one\nline two\twith a tab");
}

/// The sweep never sends `resolved`: an incident it stops repeating for its source's resolve
/// timeout is resolved as timed out, and the same finding later is a recurrence.
#[tokio::test]
async fn a_sender_that_never_resolves_has_its_silent_incidents_timed_out() {
    let s = setup("healthy").await;
    let opened = s.deliver(&sweep_finding(), Some("sweep")).await;
    let incident_id = opened[0].incident_id.unwrap();
    s.settle().await;
    assert_eq!(s.intake.time_out_silent(s.now()).await.unwrap(), 0);

    s.twin.clock.advance(chrono::Duration::hours(7));
    assert_eq!(s.intake.time_out_silent(s.now()).await.unwrap(), 1);
    let incident = s.engine.store.incident(incident_id).await.unwrap().unwrap();
    assert_eq!(incident.status, IncidentStatus::Resolved);
    assert_eq!(incident.resolved_by, Some(ResolvedBy::Timeout));

    let again = s.deliver(&sweep_finding(), Some("sweep")).await;
    assert_eq!(again[0].action, IntakeAction::Recurred);
    assert_eq!(again[0].recurrence_of, Some(incident_id));
}
