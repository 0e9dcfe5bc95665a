//! Acceptance 5: the real binary is started, fed, stopped with SIGTERM and started again on
//! the same file; incidents and their audit events are still there, and the audit table
//! refuses UPDATE and DELETE.

use crate::common;

use common::process::ServiceProcess;
use common::reference;
use serde_json::Value;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

const ADMIN: &str = "restart-admin-secret-0123456789abcdef";

async fn post(service: &ServiceProcess, path: &str, body: &str) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", service.address))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    response.json().await.unwrap()
}

async fn get(service: &ServiceProcess, path: &str) -> Value {
    let response = reqwest::Client::new()
        .get(format!("{}{path}", service.address))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn incidents_and_their_trail_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // A directory that does not exist yet: the service creates it.
    let db = dir.path().join("data/runbookd.db");
    let env = [("RUNBOOKD_ADMIN_TOKEN", ADMIN)];

    let first = ServiceProcess::start(&db, &env).await;
    let opened = post(
        &first,
        "/webhook/alertmanager",
        &reference("alertmanager-v4.json"),
    )
    .await;
    post(
        &first,
        "/ingest?source=pbs",
        &reference("ingest-pbs-forwarder.json"),
    )
    .await;
    let id = opened["incidents"][0]["incident_id"].as_i64().unwrap();
    let log = first.log_text();
    let status = first.terminate().await;
    assert!(
        status.success(),
        "a graceful stop exits 0: {status:?}\n{log}"
    );

    let second = ServiceProcess::start(&db, &env).await;
    let listed = get(&second, "/api/v1/incidents").await;
    assert_eq!(listed["incidents"].as_array().unwrap().len(), 2);
    let detail = get(&second, &format!("/api/v1/incidents/{id}")).await;
    assert_eq!(detail["incident"]["status"], "open");
    assert_eq!(detail["timeline"][0]["action"], "incident.opened");
    assert_eq!(detail["timeline"][0]["actor"], "env-admin");

    // The open incident is still the dedupe target after the restart.
    let repeat = post(
        &second,
        "/webhook/alertmanager",
        &reference("alertmanager-v4.json"),
    )
    .await;
    assert_eq!(repeat["incidents"][0]["incident_id"], id);
    assert_eq!(repeat["incidents"][0]["deduplicated"], true);

    let mut conn = SqliteConnectOptions::new()
        .filename(&db)
        .connect()
        .await
        .unwrap();
    let before: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_events")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(before, 3);
    for statement in [
        "UPDATE audit_events SET actor = 'someone-else'",
        "DELETE FROM audit_events",
        "DELETE FROM audit_events WHERE id = 1",
    ] {
        let error = sqlx::query(statement).execute(&mut conn).await.unwrap_err();
        assert!(
            error.to_string().contains("audit_events is append-only"),
            "{statement}: {error}"
        );
    }
    let after: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_events WHERE actor = 'env-admin'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(after, before);
    conn.close().await.unwrap();

    let log = second.log_text();
    assert!(second.terminate().await.success());
    assert!(
        !log.contains(ADMIN),
        "the token secret never reaches the log"
    );
}
