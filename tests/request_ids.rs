//! Every request has an id: a client's own `x-request-id` when it is short and printable,
//! otherwise a new one. The answer's header and an error's body carry it, and so does the
//! real binary's log line for that request, so a user's report can be found in the log.

use crate::common;

use std::time::Duration;

use common::eventually;
use common::process::ServiceProcess;
use serde_json::Value;

const ADMIN: &str = "request-ids-admin-secret-0123456789";

/// The answer's `x-request-id` header and its body's `request_id`.
async fn ids_of(response: reqwest::Response) -> (String, Value) {
    let header = response
        .headers()
        .get("x-request-id")
        .expect("every answer carries its request id")
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    (header, body)
}

/// The service's JSON log line for the finished request with `id`.
async fn log_line_of(service: &ServiceProcess, id: &str) -> Value {
    eventually(
        &format!("the log line of request {id}"),
        Duration::from_secs(10),
        || async {
            service.log.lock().unwrap().iter().find_map(|line| {
                let event: Value = serde_json::from_str(line).ok()?;
                (event["span"]["request_id"] == id && event["status"].is_number()).then_some(event)
            })
        },
    )
    .await
}

#[tokio::test]
async fn a_failing_request_carries_its_id_in_the_answer_and_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let service = ServiceProcess::start(
        &dir.path().join("runbookd.db"),
        &[
            ("RUNBOOKD_ADMIN_TOKEN", ADMIN),
            ("RUST_LOG", "info,tower_http=debug"),
        ],
    )
    .await;
    let client = reqwest::Client::new();

    // No id sent: one is made.
    let response = client
        .get(format!("{}/api/v1/incidents/424242", service.address))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let (made, body) = ids_of(response).await;
    assert_eq!(body["request_id"], made.as_str(), "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    assert_eq!(made.len(), 36, "a UUID: {made}");
    let line = log_line_of(&service, &made).await;
    assert_eq!(line["status"], 404, "{line}");
    assert_eq!(line["span"]["path"], "/api/v1/incidents/424242", "{line}");

    // A client's own short, printable id is kept, on a refusal before any handler too.
    let response = client
        .get(format!("{}/api/v1/incidents", service.address))
        .header("x-request-id", "ticket-4711")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let (kept, body) = ids_of(response).await;
    assert_eq!(kept, "ticket-4711");
    assert_eq!(body["request_id"], "ticket-4711", "{body}");
    assert_eq!(log_line_of(&service, "ticket-4711").await["status"], 401);

    // Too long, or not printable: replaced, and the sent value is nowhere in the log.
    for unfit in ["x".repeat(65), "two words".to_owned()] {
        let response = client
            .get(format!("{}/no/such/path", service.address))
            .header("x-request-id", &unfit)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404);
        let (replaced, body) = ids_of(response).await;
        assert_ne!(replaced, unfit);
        assert_eq!(replaced.len(), 36, "a UUID: {replaced}");
        assert_eq!(body["request_id"], replaced.as_str(), "{body}");
        log_line_of(&service, &replaced).await;
        assert!(!service.log_text().contains(&unfit), "{unfit:?} in the log");
    }
    assert!(service.terminate().await.success());
}
