//! Acceptance 1: each reference payload is accepted and normalized: name, severity, labels,
//! fingerprint and status, as stored and as the API shows them.

use crate::common;

use common::{INGEST_TOKEN, TestApp, reference};
use serde_json::{Value, json};

/// Posts `body` to `path`, asserts 202 with one entry, and returns the incident's detail.
async fn ingest_one(app: &TestApp, path: &str, body: &str) -> (Value, Value) {
    let response = app.post_json(path, INGEST_TOKEN, body).await;
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(accepted["status"], "accepted");
    assert_eq!(accepted["count"], 1);
    let entry = accepted["incidents"][0].clone();
    assert_eq!(entry["deduplicated"], false);
    assert_eq!(entry["run_id"], Value::Null);
    let id = entry["incident_id"].as_i64().expect("an incident id");
    let detail = app.get_incident(id).await;
    (entry, detail)
}

#[tokio::test]
async fn alertmanager_webhook_v4() {
    let app = TestApp::spawn().await;
    for (hour, path) in [
        "/webhook/alertmanager",
        "/ingest",
        "/ingest?source=alertmanager",
    ]
    .into_iter()
    .enumerate()
    {
        // Each path's alert is a new episode of the same alert: a later startsAt.
        let starts_at = format!("2026-11-26T0{}:30:00", 2 + hour);
        let body = reference("alertmanager-v4.json").replace("2026-11-26T02:30:00", &starts_at);
        let (entry, detail) = ingest_one(&app, path, &body).await;
        assert_eq!(entry["fingerprint"], "5f1c2a9e7b3d4c10");
        let incident = &detail["incident"];
        assert_eq!(incident["name"], "PBSBackupStale");
        assert_eq!(incident["source"], "alertmanager");
        assert_eq!(incident["severity"], "warning");
        assert_eq!(incident["status"], "open");
        assert_eq!(incident["fingerprint"], "5f1c2a9e7b3d4c10");
        assert_eq!(
            incident["labels"],
            json!({
                "alertname": "PBSBackupStale", "namespace": "infrastructure",
                "severity": "warning", "datastore": "pbs-datastore",
                "backup_type": "vm", "backup_id": "451"
            })
        );
        let alert = &detail["alerts"][0];
        assert_eq!(alert["status"], "firing");
        assert_eq!(
            alert["annotations"]["description"],
            "Backup group vm/451 on pbs-datastore last backed up 52h ago"
        );
        assert!(alert["starts_at"].as_str().unwrap().starts_with(&starts_at));
        assert_eq!(alert["ends_at"], Value::Null, "Go's zero time means unset");
        // Resolve it so the next path opens a fresh incident rather than deduping.
        let resolved = body.replace("\"firing\"", "\"resolved\"");
        let response = app.post_json(path, INGEST_TOKEN, &resolved).await;
        assert_eq!(response.status(), 202);
    }
}

#[tokio::test]
async fn alert_forwarder_payload_with_source_pbs() {
    let app = TestApp::spawn().await;
    let (entry, detail) = ingest_one(
        &app,
        "/ingest?source=pbs",
        &reference("ingest-pbs-forwarder.json"),
    )
    .await;
    assert_eq!(entry["status"], "firing");
    let incident = &detail["incident"];
    assert_eq!(incident["name"], "PBS backup failed: pbs-datastore:vm/451");
    assert_eq!(incident["source"], "pbs");
    assert_eq!(incident["severity"], "critical");
    assert_eq!(incident["fingerprint"], "9a3f00c1d2e4b5a6");
    assert_eq!(incident["labels"]["host"], "pihanga");
    assert_eq!(
        incident["labels"]["status"],
        "unable to open chunk store at \"/mnt/pbs-datastore/.chunks\" - No such file or directory (os error 2)"
    );
    // The group the forwarder names only in its text, as labels the playbook reads, and the
    // task's failure as evidence.
    assert_eq!(incident["labels"]["datastore"], "pbs-datastore");
    assert_eq!(incident["labels"]["backup_type"], "vm");
    assert_eq!(incident["labels"]["backup_id"], "451");
    assert_eq!(
        detail["alerts"][0]["annotations"]["failure"],
        incident["labels"]["status"]
    );
    assert!(
        detail["alerts"][0]["annotations"]["description"]
            .as_str()
            .unwrap()
            .starts_with("PBS backup task failed at 2026-11-26T02:14:09.")
    );
}

#[tokio::test]
async fn generic_ingest_payload_is_sniffed_by_alert_name() {
    let app = TestApp::spawn().await;
    let (_, detail) = ingest_one(&app, "/ingest", &reference("ingest-generic.json")).await;
    let incident = &detail["incident"];
    assert_eq!(incident["name"], "PBSBackupStale");
    assert_eq!(incident["source"], "manual", "the body's own source field");
    assert_eq!(incident["severity"], "warning");
    assert_eq!(incident["fingerprint"], "manual-pbs-ct-101");
    assert_eq!(
        incident["labels"],
        json!({"datastore": "pbs-datastore", "backup_type": "ct", "backup_id": "101"})
    );
    assert_eq!(detail["alerts"][0]["status"], "firing");
}

#[tokio::test]
async fn sweep_finding_is_sniffed_by_check_name() {
    let app = TestApp::spawn().await;
    let (_, detail) = ingest_one(&app, "/ingest", &reference("error-hunter-finding.json")).await;
    let incident = &detail["incident"];
    assert_eq!(incident["name"], "pbs_backup_stale");
    assert_eq!(incident["source"], "sweep");
    assert_eq!(incident["severity"], "warning");
    assert_eq!(incident["fingerprint"], "c41d7e0a9b2f3e18");
    assert_eq!(
        incident["labels"],
        json!({
            "check_category": "backups", "cluster": "global",
            "resource": "pbs/pbs-datastore/vm/451",
            "datastore": "pbs-datastore", "group": "vm/451",
            // The group, as every shape names it for the playbook.
            "backup_type": "vm", "backup_id": "451"
        })
    );
    assert_eq!(
        detail["alerts"][0]["annotations"]["description"],
        "PBS backup 'vm/451' on 'pbs-datastore' is 52h old"
    );
    // The age changes every sweep: it is an annotation, so it never splits the incident.
    assert_eq!(detail["alerts"][0]["annotations"]["age_hours"], "52");
}

#[tokio::test]
async fn without_an_upstream_fingerprint_the_labels_decide() {
    let app = TestApp::spawn().await;
    let a = json!({"alert_name": "DiskFull", "labels": {"host": "pbs", "mount": "/"}});
    let b = json!({"alert_name": "DiskFull", "labels": {"mount": "/", "host": "pbs"}});
    let c = json!({"alert_name": "DiskFull", "labels": {"mount": "/var", "host": "pbs"}});
    let mut ids = Vec::new();
    for body in [a, b, c] {
        let response = app
            .post_json("/ingest", INGEST_TOKEN, &body.to_string())
            .await;
        assert_eq!(response.status(), 202);
        let accepted: Value = response.json().await.unwrap();
        ids.push(accepted["incidents"][0].clone());
    }
    assert_eq!(ids[0]["incident_id"], ids[1]["incident_id"]);
    assert_eq!(ids[1]["deduplicated"], true);
    assert_ne!(ids[0]["incident_id"], ids[2]["incident_id"]);
    assert_eq!(ids[0]["fingerprint"].as_str().unwrap().len(), 16);
    assert_eq!(app.count("deliveries").await, 3);
    let raw: String = sqlx::query_scalar("SELECT body FROM delivery_bodies ORDER BY id LIMIT 1")
        .fetch_one(&mut app.db().await)
        .await
        .unwrap();
    assert!(raw.contains("\"DiskFull\""), "the raw body is kept: {raw}");
}

#[tokio::test]
async fn an_unknown_severity_is_kept_as_a_label_not_refused() {
    let app = TestApp::spawn().await;
    let body = reference("alertmanager-v4.json").replace(
        "\"severity\": \"warning\",\n        \"datastore\"",
        "\"severity\": \"page\",\n        \"datastore\"",
    );
    assert!(body.contains("\"page\""), "the fixture changed shape");
    let (_, detail) = ingest_one(&app, "/webhook/alertmanager", &body).await;
    assert_eq!(detail["incident"]["severity"], "none");
    assert_eq!(detail["incident"]["labels"]["severity"], "page");
}
