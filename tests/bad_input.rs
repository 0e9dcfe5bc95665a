//! Acceptance 3: bad input gets the right 4xx and a message a person can act on, and leaves no
//! row behind: not in deliveries, alerts, incidents or the audit trail.

use crate::common;

use common::{INGEST_TOKEN, TestApp, reference};
use serde_json::{Value, json};

struct Case {
    what: &'static str,
    path: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
    /// A fragment the message must contain.
    says: &'static str,
}

fn case(
    what: &'static str,
    path: &str,
    body: impl Into<Vec<u8>>,
    status: u16,
    code: &'static str,
    says: &'static str,
) -> Case {
    Case {
        what,
        path: path.to_owned(),
        content_type: Some("application/json"),
        body: body.into(),
        status,
        code,
        says,
    }
}

/// The reference Alertmanager body with its one alert changed by `edit`.
fn am_with(edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut body: Value = serde_json::from_str(&reference("alertmanager-v4.json")).unwrap();
    edit(&mut body["alerts"][0]);
    body.to_string().into_bytes()
}

fn cases() -> Vec<Case> {
    let am = "/webhook/alertmanager";
    let ingest = "/ingest";
    let generic = |v: Value| v.to_string().into_bytes();
    let mut cases = vec![
        case(
            "malformed JSON",
            am,
            r#"{"alerts": ["#,
            400,
            "invalid_json",
            "not valid JSON",
        ),
        case(
            "empty body",
            ingest,
            "",
            400,
            "invalid_json",
            "not valid JSON",
        ),
        case(
            "non-UTF-8 bytes",
            ingest,
            b"{\"alert_name\": \"caf\xe9\"}".to_vec(),
            400,
            "invalid_json",
            "not valid JSON",
        ),
        case(
            "a form body declared as JSON",
            ingest,
            "alert_name=x&severity=warning",
            400,
            "invalid_json",
            "not valid JSON",
        ),
        case(
            "2 MiB body",
            ingest,
            format!(
                "{{\"alert_name\":\"x\",\"description\":\"{}\"}}",
                "a".repeat(2 * 1024 * 1024)
            ),
            413,
            "payload_too_large",
            "larger than the limit of 1048576 bytes",
        ),
        case(
            "missing alerts",
            am,
            r#"{"version":"4","status":"firing"}"#,
            422,
            "invalid_payload",
            "missing field `alerts`",
        ),
        case(
            "empty alerts",
            am,
            r#"{"version":"4","alerts":[]}"#,
            422,
            "invalid_payload",
            "alerts: the array is empty",
        ),
        case(
            "alerts is an object",
            am,
            r#"{"version":"4","alerts":{}}"#,
            422,
            "invalid_payload",
            "alerts: invalid type",
        ),
        case(
            "unsupported webhook version",
            am,
            reference("alertmanager-v4.json").replace("\"version\": \"4\"", "\"version\": \"3\""),
            422,
            "invalid_payload",
            "version 4",
        ),
        case(
            "unknown ?source",
            "/ingest?source=nagios",
            reference("ingest-generic.json"),
            400,
            "unknown_source",
            "unknown source 'nagios'",
        ),
        case(
            "unknown query parameter",
            "/ingest?sauce=pbs",
            reference("ingest-generic.json"),
            400,
            "bad_request",
            "sauce",
        ),
        case(
            "a body of no known shape",
            ingest,
            r#"{"title":"disk full"}"#,
            422,
            "invalid_payload",
            "cannot tell the payload's format",
        ),
        case(
            "a JSON array body",
            ingest,
            "[]",
            422,
            "invalid_payload",
            "must be a JSON object",
        ),
        case(
            "a webhook's fields as a JSON array",
            am,
            {
                let webhook: Value =
                    serde_json::from_str(&reference("alertmanager-v4.json")).unwrap();
                json!([webhook["alerts"], "4"]).to_string()
            },
            422,
            "invalid_payload",
            "must be a JSON object",
        ),
        case(
            "a label value of the wrong type",
            am,
            am_with(|a| a["labels"]["backup_id"] = json!(451)),
            422,
            "invalid_payload",
            "alerts[0].labels.backup_id: invalid type: integer",
        ),
        case(
            "alert_name of the wrong type",
            ingest,
            generic(json!({"alert_name": 7})),
            422,
            "invalid_payload",
            "alert_name: invalid type",
        ),
        case(
            "startsAt that is not a time",
            am,
            am_with(|a| a["startsAt"] = json!("yesterday")),
            422,
            "invalid_payload",
            "alerts[0].startsAt",
        ),
        case(
            "an unknown alert status",
            am,
            am_with(|a| a["status"] = json!("pending")),
            422,
            "invalid_payload",
            "alerts[0].status: status 'pending'",
        ),
        case(
            "no alertname label",
            am,
            am_with(|a| {
                a["labels"].as_object_mut().unwrap().remove("alertname");
            }),
            422,
            "invalid_payload",
            "alertname label is missing",
        ),
        case(
            "10k labels",
            am,
            am_with(|a| {
                for i in 0..10_000 {
                    a["labels"][format!("l{i}")] = json!("x");
                }
            }),
            422,
            "invalid_payload",
            "at most 64 are accepted",
        ),
        case(
            "a control character in a label",
            am,
            am_with(|a| a["labels"]["backup_id"] = json!("451\u{7}")),
            422,
            "invalid_payload",
            "label 'backup_id' contains control characters",
        ),
        case(
            "a NUL in a label",
            ingest,
            generic(json!({"alert_name": "x", "labels": {"backup_id": "451\u{0}rm -rf /"}})),
            422,
            "invalid_payload",
            "control characters",
        ),
        case(
            "a NUL in the alert name",
            ingest,
            generic(json!({"alert_name": "PBS\u{0}Stale"})),
            422,
            "invalid_payload",
            "alert_name: the alert name contains control characters",
        ),
        case(
            "an empty alert name",
            ingest,
            generic(json!({"alert_name": "  "})),
            422,
            "invalid_payload",
            "alert_name: the alert name is empty",
        ),
        case(
            "a label name that Prometheus refuses",
            ingest,
            generic(json!({"alert_name": "x", "labels": {"backup-id": "1"}})),
            422,
            "invalid_payload",
            "'backup-id' is not a valid name",
        ),
        case(
            "a 3000-character label value",
            ingest,
            generic(json!({"alert_name": "x", "labels": {"a": "v".repeat(3000)}})),
            422,
            "invalid_payload",
            "longer than 2048",
        ),
        case(
            "a control character in an annotation",
            am,
            am_with(|a| a["annotations"]["summary"] = json!("bell\u{7}")),
            422,
            "invalid_payload",
            "annotation 'summary' contains control characters",
        ),
        case(
            "shell text in the fingerprint",
            am,
            am_with(|a| a["fingerprint"] = json!("451; rm -rf /")),
            422,
            "invalid_payload",
            "alerts[0].fingerprint",
        ),
        case(
            "a severity of the wrong type",
            ingest,
            generic(json!({"alert_name": "x", "severity": 3})),
            422,
            "invalid_payload",
            "severity: invalid type: integer `3`",
        ),
        case(
            "a sweep finding without check_name",
            "/ingest?source=sweep",
            generic(json!({"check_name": null})),
            422,
            "invalid_payload",
            "check_name: invalid type: null",
        ),
        case(
            "an Alertmanager source with a flat body",
            "/ingest?source=alertmanager",
            reference("ingest-generic.json"),
            422,
            "invalid_payload",
            "missing field `alerts`",
        ),
        case(
            "1001 alerts in one delivery",
            am,
            {
                let mut body: Value =
                    serde_json::from_str(&reference("alertmanager-v4.json")).unwrap();
                let alert = body["alerts"][0].clone();
                body["alerts"] = Value::Array(vec![alert; 1001]);
                body.to_string().into_bytes()
            },
            422,
            "invalid_payload",
            "at most 1000 are accepted",
        ),
    ];
    cases.push(Case {
        content_type: Some("text/plain"),
        ..case(
            "a text/plain body",
            ingest,
            reference("ingest-generic.json"),
            415,
            "unsupported_media_type",
            "Content-Type 'text/plain' is not JSON",
        )
    });
    cases.push(Case {
        content_type: None,
        ..case(
            "no Content-Type",
            am,
            reference("alertmanager-v4.json"),
            415,
            "unsupported_media_type",
            "Content-Type header is missing",
        )
    });
    cases.push(Case {
        content_type: Some("application/x-www-form-urlencoded"),
        ..case(
            "a form content type",
            am,
            reference("alertmanager-v4.json"),
            415,
            "unsupported_media_type",
            "send Content-Type: application/json",
        )
    });
    cases
}

#[tokio::test]
async fn every_bad_input_is_refused_clearly_and_stores_nothing() {
    let app = TestApp::spawn().await;
    let cases = cases();
    assert!(cases.len() > 25, "{} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let mut request = app
            .client
            .post(app.url(&case.path))
            .bearer_auth(INGEST_TOKEN)
            .body(case.body.clone());
        if let Some(content_type) = case.content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let code = body["error"]["code"].as_str().unwrap_or_default();
        let message = body["error"]["message"].as_str().unwrap_or_default();
        if status != case.status || code != case.code || !message.contains(case.says) {
            failures.push(format!(
                "{}: got {status} {code} {message:?}, want {} {} containing {:?}",
                case.what, case.status, case.code, case.says
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for table in ["deliveries", "alerts", "incidents", "audit_events"] {
        assert_eq!(app.count(table).await, 0, "rows left behind in {table}");
    }

    // The same service still accepts a good delivery afterwards.
    let good = app
        .post_alertmanager(&reference("alertmanager-v4.json"))
        .await;
    assert_eq!(good.status(), 202);
}

#[tokio::test]
async fn unknown_paths_and_methods_answer_in_json() {
    let app = TestApp::spawn().await;
    let missing = app.client.get(app.url("/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");

    let wrong_method = app.client.get(app.url("/ingest")).send().await.unwrap();
    assert_eq!(wrong_method.status(), 405);
    let body: Value = wrong_method.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");

    let bad_id = app
        .client
        .get(app.url("/api/v1/incidents/abc"))
        .bearer_auth(common::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(bad_id.status(), 400);
    let body: Value = bad_id.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request");

    let bad_filter = app
        .client
        .get(app.url("/api/v1/incidents?status=burning"))
        .bearer_auth(common::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(bad_filter.status(), 400);
    let body: Value = bad_filter.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown variant `burning`"),
        "{body}"
    );

    let unknown = app
        .client
        .get(app.url("/api/v1/incidents/999"))
        .bearer_auth(common::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}
