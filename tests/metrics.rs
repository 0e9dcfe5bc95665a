//! Health endpoints, and `/metrics` counting alerts by source and outcome. The metrics recorder
//! is process-wide: cargo-nextest gives each test its own process, so counts start at zero.

use crate::common;

use common::{INGEST_TOKEN, TestApp, reference};
use serde_json::Value;

fn sample(metrics: &str, source: &str, outcome: &str) -> Option<u64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix("runbookd_alerts_total{")?;
        let (labels, value) = rest.split_once("} ")?;
        let mut labels: Vec<&str> = labels.split(',').collect();
        labels.sort_unstable();
        let want_outcome = format!("outcome=\"{outcome}\"");
        let want_source = format!("source=\"{source}\"");
        (labels == [want_outcome.as_str(), want_source.as_str()]).then(|| value.parse().unwrap())
    })
}

#[tokio::test]
async fn health_and_alert_metrics() {
    let app = TestApp::spawn().await;
    let healthz: Value = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(healthz["status"], "ok");
    let readyz = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(readyz.status(), 200);

    let firing = reference("alertmanager-v4.json");
    for _ in 0..3 {
        let response = app
            .post_json("/webhook/alertmanager", INGEST_TOKEN, &firing)
            .await;
        assert_eq!(response.status(), 202);
    }
    let resolved = firing.replace("\"firing\"", "\"resolved\"");
    app.post_json("/webhook/alertmanager", INGEST_TOKEN, &resolved)
        .await;
    app.post_json("/webhook/alertmanager", INGEST_TOKEN, &resolved)
        .await;
    app.post_json(
        "/ingest?source=pbs",
        INGEST_TOKEN,
        &reference("ingest-pbs-forwarder.json"),
    )
    .await;
    let refused = app
        .post_json("/ingest?source=pbs", INGEST_TOKEN, "{}")
        .await;
    assert_eq!(refused.status(), 422);
    let refused = app.post_json("/ingest", INGEST_TOKEN, "not json").await;
    assert_eq!(refused.status(), 400);

    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let metrics = response.text().await.unwrap();
    assert_eq!(
        sample(&metrics, "alertmanager", "opened"),
        Some(1),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "alertmanager", "deduplicated"),
        Some(2),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "alertmanager", "resolved"),
        Some(1),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "alertmanager", "resolve_unmatched"),
        Some(1),
        "{metrics}"
    );
    assert_eq!(sample(&metrics, "pbs", "opened"), Some(1), "{metrics}");
    assert_eq!(sample(&metrics, "pbs", "rejected"), Some(1), "{metrics}");
    assert_eq!(
        sample(&metrics, "unknown", "rejected"),
        Some(1),
        "{metrics}"
    );
}
