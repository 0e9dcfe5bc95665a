//! Health endpoints and `/metrics`: every family is there from start-up at zero, with its help
//! and type; after a real run on the twin (the binary, `serve --lab stale-nfs`) each family has
//! the right values, read by the official Prometheus client's parser and linted by promtool;
//! requests count under their route template, never their path; the run and approval gauges
//! come from the database. The metrics recorder is process-wide: cargo-nextest gives each test
//! its own process, so counts start at zero.

use crate::common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;
use common::process::ServiceProcess;
use common::{ADMIN_TOKEN, AGENT_TOKEN, INGEST_TOKEN, TestApp, eventually, reference};
use runbookd::store::approvals::{ApprovalRequest, OnTimeout};
use runbookd::store::runs::{Created, NewRun};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

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
        let response = app.post_alertmanager(&firing).await;
        assert_eq!(response.status(), 202);
    }
    let resolved = firing.replace("\"firing\"", "\"resolved\"");
    app.post_alertmanager(&resolved).await;
    app.post_alertmanager(&resolved).await;
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

const ADMIN: &str = "metrics-admin-secret-0123456789abcdef";

/// The playbook's name as runs carry it, and the steps a stale-nfs run executes, in order.
const PLAYBOOK: &str = "pbs-backup-stale";
const STALE_NFS_STEPS: [&str; 5] = [
    "restart_pbs",
    "check_pbs_active",
    "canary_backup",
    "full_backup",
    "groups_fresh",
];

/// Every family the issue names, with its Prometheus type (the parser reports a counter's
/// family without `_total`).
const FAMILIES: [(&str, &str); 8] = [
    ("runbookd_build_info", "gauge"),
    ("runbookd_http_requests", "counter"),
    ("runbookd_http_request_duration_seconds", "histogram"),
    ("runbookd_runs", "counter"),
    ("runbookd_runs_active", "gauge"),
    ("runbookd_step_duration_seconds", "histogram"),
    ("runbookd_approvals_pending", "gauge"),
    ("runbookd_breaker_open", "gauge"),
];

fn python() -> PathBuf {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/python-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/install-python-deps.sh (scripts/test.sh does)",
        python.display()
    );
    python
}

/// Runs `program args` with `input` on its stdin; its status and output.
async fn pipe(
    program: impl AsRef<std::ffi::OsStr>,
    args: &[&str],
    input: &str,
) -> std::process::Output {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("finishes within 60 s")
        .unwrap()
}

/// A scrape as the official Prometheus client's parser reads it
/// (tests/python/parse_metrics.py); promtool's linter passes it too.
struct Scrape {
    text: String,
    families: serde_json::Map<String, Value>,
}

impl Scrape {
    async fn of(address: &str) -> Self {
        let response = reqwest::get(format!("{address}/metrics")).await.unwrap();
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/parse_metrics.py");
        let parsed = pipe(python(), &[script], &text).await;
        assert!(
            parsed.status.success(),
            "the Prometheus parser refused the scrape: {}\n{text}",
            String::from_utf8_lossy(&parsed.stderr)
        );
        let families = serde_json::from_slice(&parsed.stdout).unwrap();
        let lint = pipe("promtool", &["check", "metrics"], &text).await;
        assert!(
            lint.status.success(),
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&lint.stdout),
            String::from_utf8_lossy(&lint.stderr)
        );
        Self { text, families }
    }

    /// The value of the sample `name` whose labels are exactly `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<&str, &str> = labels.iter().copied().collect();
        self.families.values().find_map(|family| {
            family["samples"].as_array()?.iter().find_map(|sample| {
                let have: BTreeMap<&str, &str> = sample["labels"]
                    .as_object()?
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or_default()))
                    .collect();
                (sample["name"] == name && have == want).then(|| sample["value"].as_f64())?
            })
        })
    }

    fn expect(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels)
            .unwrap_or_else(|| panic!("no {name} {labels:?} in\n{}", self.text))
    }
}

/// `serve --lab stale-nfs` on the repository's playbooks, as an operator would start it.
async fn stale_nfs_service(dir: &std::path::Path) -> ServiceProcess {
    ServiceProcess::start_lab(dir, "stale-nfs", ADMIN, &[], "", &[]).await
}

#[tokio::test]
async fn every_family_is_on_metrics_from_start_up_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    let service = stale_nfs_service(dir.path()).await;
    // The first request the service answers: nothing has happened yet.
    let scrape = Scrape::of(&service.address).await;

    for (family, kind) in FAMILIES
        .into_iter()
        .chain([("runbookd_intake_batch_size", "histogram")])
    {
        let found = &scrape.families[family];
        assert_eq!(found["type"], kind, "{family}: {}", scrape.text);
        assert!(
            !found["help"].as_str().unwrap_or_default().is_empty(),
            "{family} has no HELP"
        );
    }
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        scrape.expect("runbookd_build_info", &[("version", version)]),
        1.0
    );
    for route in ["/webhook/alertmanager", "/ingest"] {
        assert_eq!(
            scrape.expect(
                "runbookd_http_requests_total",
                &[("route", route), ("status", "202")]
            ),
            0.0
        );
        assert_eq!(
            scrape.expect(
                "runbookd_http_request_duration_seconds_count",
                &[("route", route)]
            ),
            0.0
        );
    }
    assert_eq!(
        scrape.expect(
            "runbookd_http_request_duration_seconds_count",
            &[("route", "/api/v1/incidents/{id}")]
        ),
        0.0
    );
    for outcome in ["resolved", "escalated", "refused", "rehearsed", "cancelled"] {
        assert_eq!(
            scrape.expect(
                "runbookd_runs_total",
                &[("playbook", PLAYBOOK), ("outcome", outcome)]
            ),
            0.0
        );
    }
    assert_eq!(scrape.expect("runbookd_runs_active", &[]), 0.0);
    for step in STALE_NFS_STEPS.into_iter().chain(["start_pbs_vm"]) {
        for outcome in ["done", "failed"] {
            assert_eq!(
                scrape.expect(
                    "runbookd_step_duration_seconds_count",
                    &[("step", step), ("outcome", outcome)]
                ),
                0.0
            );
        }
    }
    assert_eq!(scrape.expect("runbookd_approvals_pending", &[]), 0.0);
    assert_eq!(
        scrape.expect("runbookd_breaker_open", &[("target", "pbs")]),
        0.0
    );
    assert_eq!(scrape.expect("runbookd_intake_batch_size_count", &[]), 0.0);
    for le in ["1", "512", "+Inf"] {
        assert_eq!(
            scrape.expect("runbookd_intake_batch_size_bucket", &[("le", le)]),
            0.0
        );
    }
}

/// Acceptance 5.
#[tokio::test]
async fn metrics_are_right_after_a_real_run() {
    let dir = tempfile::tempdir().unwrap();
    let service = stale_nfs_service(dir.path()).await;
    let run_id = service.post_reference_alert(ADMIN).await["run_id"]
        .as_i64()
        .expect("the alert started a run");
    let client = reqwest::Client::new();
    let state = eventually("the run to end", Duration::from_secs(90), || async {
        let detail = common::fetch_json(
            &client,
            &format!("{}/api/v1/runs/{run_id}", service.address),
            ADMIN,
        )
        .await?;
        let state = detail["run"]["state"].as_str()?.to_owned();
        (state != "pending" && state != "running").then_some(state)
    })
    .await;
    assert_eq!(state, "resolved");

    let scrape = Scrape::of(&service.address).await;
    let runs = |outcome| {
        scrape.expect(
            "runbookd_runs_total",
            &[("playbook", PLAYBOOK), ("outcome", outcome)],
        )
    };
    assert_eq!(runs("resolved"), 1.0);
    assert_eq!(runs("escalated"), 0.0);
    assert_eq!(scrape.expect("runbookd_runs_active", &[]), 0.0);
    for step in STALE_NFS_STEPS {
        let labels = [("step", step), ("outcome", "done")];
        assert_eq!(
            scrape.expect("runbookd_step_duration_seconds_count", &labels),
            1.0,
            "{step}"
        );
        assert!(
            scrape.expect("runbookd_step_duration_seconds_sum", &labels) > 0.0,
            "{step}"
        );
        let failed = [("step", step), ("outcome", "failed")];
        assert_eq!(
            scrape.expect("runbookd_step_duration_seconds_count", &failed),
            0.0,
            "{step}"
        );
    }
    // A step the stale-nfs cause does not call for did not run.
    assert_eq!(
        scrape.expect(
            "runbookd_step_duration_seconds_count",
            &[("step", "start_pbs_vm"), ("outcome", "done")]
        ),
        0.0
    );
    let ingest = [("route", "/webhook/alertmanager"), ("status", "202")];
    assert_eq!(scrape.expect("runbookd_http_requests_total", &ingest), 1.0);
    assert_eq!(
        scrape.expect(
            "runbookd_http_request_duration_seconds_count",
            &[("route", "/webhook/alertmanager")]
        ),
        1.0
    );
    assert!(
        scrape.expect(
            "runbookd_http_requests_total",
            &[("route", "/api/v1/runs/{id}"), ("status", "200")]
        ) >= 1.0
    );
    assert_eq!(scrape.expect("runbookd_approvals_pending", &[]), 0.0);
    assert_eq!(
        scrape.expect("runbookd_breaker_open", &[("target", "pbs")]),
        0.0
    );
    assert_eq!(
        scrape.expect(
            "runbookd_alerts_total",
            &[("source", "alertmanager"), ("outcome", "opened")]
        ),
        1.0
    );
    assert_eq!(
        scrape.expect(
            "runbookd_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
}

#[tokio::test]
async fn requests_count_under_their_route_template_never_their_path() {
    let app = TestApp::spawn().await;
    for id in ["123457", "987653"] {
        let response = app
            .client
            .get(app.url(&format!("/api/v1/incidents/{id}")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404);
    }
    let missing = app
        .client
        .get(app.url("/no/such/path-246801"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let link = app
        .client
        .get(app.url("/links/link-token-secret-135797"))
        .send()
        .await
        .unwrap();
    let link_status = link.status().as_u16().to_string();
    let refused = app
        .post_json("/webhook/alertmanager", "not-a-token-0123456789", "{}")
        .await;
    assert_eq!(refused.status(), 401);

    let scrape = Scrape::of(&app.address).await;
    let requests = |route: &str, status: &str| {
        scrape.expect(
            "runbookd_http_requests_total",
            &[("route", route), ("status", status)],
        )
    };
    assert_eq!(requests("/api/v1/incidents/{id}", "404"), 2.0);
    assert_eq!(requests("unmatched", "404"), 1.0);
    assert_eq!(requests("/links/{token}", &link_status), 1.0);
    assert_eq!(requests("/webhook/alertmanager", "401"), 1.0);
    assert_eq!(
        scrape.expect(
            "runbookd_http_request_duration_seconds_count",
            &[("route", "/api/v1/incidents/{id}")]
        ),
        2.0
    );
    for raw in [
        "123457",
        "987653",
        "246801",
        "link-token-secret",
        "not-a-token",
    ] {
        assert!(
            !scrape.text.contains(raw),
            "{raw} reached /metrics:\n{}",
            scrape.text
        );
    }
}

#[tokio::test]
async fn runs_and_approvals_are_counted_from_the_database() {
    let app = TestApp::spawn().await;
    let now = Utc::now();
    // A run parked on an approval, and one waiting for a worker: made in the database, as
    // the engine would, so nothing but the database can tell /metrics about them.
    let waiting = common::leased_run(&app.store, None, "pbs", now).await;
    let request = ApprovalRequest {
        step: "restart_pbs",
        command: "systemctl restart proxmox-backup proxmox-backup-proxy",
        risk: "medium",
        evidence: json!({}),
        expires_in: Duration::from_secs(600),
        on_timeout: OnTimeout::Reject,
        actions: Vec::new(),
    };
    app.store
        .request_approval(&waiting, request, now)
        .await
        .unwrap();
    let pending = NewRun {
        incident_id: None,
        playbook: PLAYBOOK,
        version: common::pbs_playbook(),
        target: "ruapehu",
        dry_run: false,
        actor: "engine",
        facts: json!({}),
    };
    let Created::New(_) = app.store.create_run(pending, now).await.unwrap() else {
        panic!("a new run for ruapehu")
    };

    let scrape = Scrape::of(&app.address).await;
    assert_eq!(scrape.expect("runbookd_runs_active", &[]), 2.0);
    assert_eq!(scrape.expect("runbookd_approvals_pending", &[]), 1.0);

    let cancelled = app
        .post_json(
            &format!("/api/v1/runs/{}/cancel", waiting.run_id),
            AGENT_TOKEN,
            r#"{"reason": "not tonight"}"#,
        )
        .await;
    assert_eq!(
        cancelled.status(),
        200,
        "{}",
        cancelled.text().await.unwrap()
    );
    let scrape = Scrape::of(&app.address).await;
    assert_eq!(scrape.expect("runbookd_runs_active", &[]), 1.0);
    assert_eq!(scrape.expect("runbookd_approvals_pending", &[]), 0.0);
    assert_eq!(
        scrape.expect(
            "runbookd_runs_total",
            &[("playbook", PLAYBOOK), ("outcome", "cancelled")]
        ),
        1.0
    );
}
