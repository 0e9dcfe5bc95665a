//! `GET /api/v1/incidents`: filters and cursor pagination.

use crate::common;

use common::{INGEST_TOKEN, TestApp};
use serde_json::{Value, json};

async fn open(app: &TestApp, name: &str, fingerprint: &str, source: &str) -> i64 {
    let body = json!({"alert_name": name, "fingerprint": fingerprint, "severity": "warning"});
    let response = app
        .post_json(
            &format!("/ingest?source={source}"),
            INGEST_TOKEN,
            &body.to_string(),
        )
        .await;
    assert_eq!(response.status(), 202);
    response.json::<Value>().await.unwrap()["incidents"][0]["incident_id"]
        .as_i64()
        .unwrap()
}

fn ids(page: &Value) -> Vec<i64> {
    page["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn pages_cover_every_incident_once_newest_first() {
    let app = TestApp::spawn().await;
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(open(&app, "PBSBackupStale", &format!("fp-{i}"), "manual").await);
    }
    let mut seen = Vec::new();
    let mut path = "/api/v1/incidents?limit=2".to_owned();
    loop {
        let page = app.get_json(&path).await;
        assert!(ids(&page).len() <= 2);
        seen.extend(ids(&page));
        match page["next_before"].as_i64() {
            Some(before) => path = format!("/api/v1/incidents?limit=2&before={before}"),
            None => break,
        }
    }
    created.reverse();
    assert_eq!(seen, created);
}

#[tokio::test]
async fn filters_narrow_the_list() {
    let app = TestApp::spawn().await;
    let stale = open(&app, "PBSBackupStale", "fp-stale", "manual").await;
    let forwarded = open(
        &app,
        "PBS backup failed: pbs-datastore:vm/451",
        "fp-fwd",
        "pbs",
    )
    .await;
    let gone = open(&app, "PBSBackupStale", "fp-gone", "manual").await;
    let resolve =
        json!({"alert_name": "PBSBackupStale", "fingerprint": "fp-gone", "status": "resolved"});
    app.post_json("/ingest?source=manual", INGEST_TOKEN, &resolve.to_string())
        .await;

    assert_eq!(
        ids(&app.get_json("/api/v1/incidents?status=open").await),
        [forwarded, stale]
    );
    assert_eq!(
        ids(&app.get_json("/api/v1/incidents?status=resolved").await),
        [gone]
    );
    assert_eq!(
        ids(&app.get_json("/api/v1/incidents?source=pbs").await),
        [forwarded]
    );
    assert_eq!(
        ids(&app
            .get_json("/api/v1/incidents?name=PBSBackupStale&status=open")
            .await),
        [stale]
    );
    assert_eq!(
        ids(&app.get_json("/api/v1/incidents?fingerprint=fp-gone").await),
        [gone]
    );

    for bad in ["limit=0", "limit=501", "before=x", "colour=red"] {
        let response = app
            .client
            .get(app.url(&format!("/api/v1/incidents?{bad}")))
            .bearer_auth(common::ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{bad}");
    }
}
