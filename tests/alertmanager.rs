//! Acceptance 6: Debian's real Alertmanager is the client. It gets a webhook receiver pointing
//! at runbookd (bearer credentials from a file, `send_resolved: true`, a short `group_wait`);
//! an alert posted to its v2 API must appear as an incident, then resolve after `endsAt`.
//!
//! `scripts/test.sh` installs the `prometheus-alertmanager` package; set
//! `RUNBOOKD_TEST_ALERTMANAGER` to use another binary.

use crate::common;

use std::net::TcpListener;
use std::process::Stdio;
use std::time::Duration;

use chrono::Utc;
use common::{INGEST_TOKEN, TestApp, eventually};
use serde_json::{Value, json};
use tokio::process::Command;

fn alertmanager_binary() -> String {
    std::env::var("RUNBOOKD_TEST_ALERTMANAGER")
        .unwrap_or_else(|_| "prometheus-alertmanager".to_owned())
}

fn free_loopback_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn real_alertmanager_opens_and_resolves_an_incident() {
    let app = TestApp::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("runbookd.token");
    std::fs::write(&token_file, INGEST_TOKEN).unwrap();
    let config = dir.path().join("alertmanager.yml");
    std::fs::write(
        &config,
        format!(
            r#"
route:
  receiver: runbookd
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: runbookd
    webhook_configs:
      - url: {}/webhook/alertmanager
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials_file: {}
"#,
            app.address,
            token_file.display()
        ),
    )
    .unwrap();

    let port = free_loopback_port();
    let am = format!("http://127.0.0.1:{port}");
    let mut child = Command::new(alertmanager_binary())
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        // An empty address turns clustering (gossip on 0.0.0.0:9094) off.
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {}: {e}; scripts/test.sh installs Debian's prometheus-alertmanager",
                alertmanager_binary()
            )
        });
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    eventually(
        "Alertmanager to be ready",
        Duration::from_secs(30),
        || async {
            let ready = client.get(format!("{am}/-/ready")).send().await.ok()?;
            ready.status().is_success().then_some(())
        },
    )
    .await;

    let now = Utc::now();
    let ends_at = now + chrono::Duration::seconds(4);
    let posted = client
        .post(format!("{am}/api/v2/alerts"))
        .json(&json!([{
            "labels": {
                "alertname": "PBSBackupStale", "severity": "warning",
                "datastore": "pbs-datastore", "backup_type": "vm", "backup_id": "451"
            },
            "annotations": {"summary": "PBS backup group is stale"},
            "startsAt": now.to_rfc3339(),
            "endsAt": ends_at.to_rfc3339(),
        }]))
        .send()
        .await
        .unwrap();
    assert!(
        posted.status().is_success(),
        "{}",
        posted.text().await.unwrap()
    );
    let active: Value = client
        .get(format!("{am}/api/v2/alerts"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let am_fingerprint = active[0]["fingerprint"].as_str().unwrap().to_owned();

    let incident = eventually("the incident to open", Duration::from_secs(30), || async {
        let page = app.get_json("/api/v1/incidents?name=PBSBackupStale").await;
        page["incidents"].as_array()?.first().cloned()
    })
    .await;
    assert_eq!(incident["fingerprint"], am_fingerprint.as_str());
    assert_eq!(incident["labels"]["backup_id"], "451");
    assert_eq!(incident["source"], "alertmanager");
    let id = incident["id"].as_i64().unwrap();

    let resolved = eventually(
        "the incident to resolve after endsAt",
        Duration::from_secs(60),
        || async {
            let detail = app.get_incident(id).await;
            (detail["incident"]["status"] == "resolved").then_some(detail)
        },
    )
    .await;
    let timeline = resolved["timeline"].as_array().unwrap();
    assert!(
        timeline.iter().all(|e| e["actor"] == "ingest"),
        "Alertmanager used the bearer token: {timeline:?}"
    );
    assert_eq!(
        timeline.last().unwrap()["action"],
        "incident.source_resolved"
    );
    let resolve_alert = &resolved["alerts"][0];
    assert_eq!(resolve_alert["status"], "resolved");
    assert!(
        resolve_alert["ends_at"].is_string(),
        "a resolved alert carries its end: {resolve_alert}"
    );
    // One open incident for one alert, however many notifications Alertmanager sent.
    let all = app.get_json("/api/v1/incidents").await;
    assert_eq!(all["incidents"].as_array().unwrap().len(), 1);

    child.kill().await.unwrap();
}
