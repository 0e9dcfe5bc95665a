//! What deploy/ ships to watch runbookd: the alert rules load in promtool and pass their unit
//! tests; the Grafana dashboard and the rules read only metrics (and label values) that a real
//! `/metrics` scrape of `serve --lab stale-nfs` has; the ServiceMonitor component renders with
//! the estate overlay and selects the Service's `metrics` port.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use common::process::ServiceProcess;
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

const ADMIN: &str = "monitoring-admin-secret-0123456789";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn promtool(args: &[&str]) -> String {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(root().join("deploy/prometheus"))
        .output()
        .expect("promtool runs (scripts/install-test-deps.sh installs Debian's prometheus)");
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn the_alert_rules_load_in_promtool_and_fire_when_they_should() {
    let checked = promtool(&["check", "rules", "runbookd-rules.yml"]);
    assert!(checked.contains("SUCCESS: 5 rules found"), "{checked}");
    promtool(&["test", "rules", "runbookd-rules.test.yml"]);

    // Each rule says how long, how bad, and what to do.
    let rules: Value = serde_norway::from_str(
        &std::fs::read_to_string(root().join("deploy/prometheus/runbookd-rules.yml")).unwrap(),
    )
    .unwrap();
    let rules = rules["groups"][0]["rules"].as_array().unwrap();
    let names: Vec<&str> = rules.iter().map(|r| r["alert"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "RunbookdDown",
            "RunbookdBreakerOpen",
            "RunbookdApprovalWaiting",
            "RunbookdRunsEscalating",
            "RunbookdIntakeFailing"
        ]
    );
    for rule in rules {
        assert!(rule["for"].is_string(), "{rule}");
        assert!(rule["labels"]["severity"].is_string(), "{rule}");
        assert!(rule["annotations"]["summary"].is_string(), "{rule}");
        assert!(rule["annotations"]["description"].is_string(), "{rule}");
    }
}

/// What a scrape serves: each series name with each label's values, and each family's help.
#[derive(Default)]
struct Scraped {
    series: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
    help: BTreeMap<String, String>,
}

fn scraped(scrape: &str) -> Scraped {
    let label = Regex::new(r#"(\w+)="((?:[^"\\]|\\.)*)""#).unwrap();
    let mut scraped = Scraped::default();
    for line in scrape.lines().filter(|l| !l.is_empty()) {
        if let Some(help) = line.strip_prefix("# HELP ") {
            let (name, text) = help.split_once(' ').unwrap();
            scraped.help.insert(name.to_owned(), text.to_owned());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let end = line.find(['{', ' ']).unwrap();
        let labels = scraped.series.entry(line[..end].to_owned()).or_default();
        if line[end..].starts_with('{') {
            let close = line.rfind('}').unwrap();
            for pair in label.captures_iter(&line[end..close]) {
                labels
                    .entry(pair[1].to_owned())
                    .or_default()
                    .insert(pair[2].to_owned());
            }
        }
    }
    scraped
}

/// Every `expr` in a JSON document, wherever it sits.
fn exprs(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", Value::String(expr)) => found.push(expr.clone()),
                    _ => exprs(value, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| exprs(item, found)),
        _ => {}
    }
}

/// Where an expression reads a metric or a label the scrape does not have: each `runbookd_*`
/// name must be served, each label it matches must be on that metric, and a label matched
/// with `=` must have that value among the series, or (a value that appears only when it first
/// happens, such as a failed delivery) be named by the family's help. `up` is Prometheus's own.
fn unknown_references(expr: &str, scraped: &Scraped) -> Vec<String> {
    let selector = Regex::new(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?").unwrap();
    let matcher = Regex::new(r#"(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)""#).unwrap();
    let mut problems = Vec::new();
    let mut reads_a_metric = false;
    for found in selector.captures_iter(expr) {
        let name = &found[1];
        if name == "up" {
            reads_a_metric = true;
            continue;
        }
        if !name.starts_with("runbookd_") {
            continue;
        }
        reads_a_metric = true;
        let Some(labels) = scraped.series.get(name) else {
            problems.push(format!("{name} is not on /metrics"));
            continue;
        };
        let Some(matchers) = found.get(2) else {
            continue;
        };
        for m in matcher.captures_iter(matchers.as_str()) {
            let (label, op, value) = (&m[1], &m[2], &m[3]);
            match labels.get(label) {
                None => problems.push(format!("{name} has no label {label}")),
                Some(values)
                    if op == "="
                        && !values.contains(value)
                        && !scraped.help.get(name).is_some_and(|help| {
                            help.split(|c: char| !c.is_alphanumeric() && c != '_')
                                .any(|word| word == value)
                        }) =>
                {
                    problems.push(format!("{name} has no series with {label}=\"{value}\""));
                }
                Some(_) => {}
            }
        }
    }
    if !reads_a_metric {
        problems.push("reads no runbookd metric".to_owned());
    }
    problems
}

#[tokio::test]
async fn the_dashboard_and_the_rules_read_only_what_runbookd_serves() {
    let dir = tempfile::tempdir().unwrap();
    let service = ServiceProcess::start_lab(dir.path(), "stale-nfs", ADMIN, &[], "", &[]).await;
    // A delivery, so the intake counter has its series too.
    service.post_reference_alert(ADMIN).await;
    let scrape = reqwest::get(format!("{}/metrics", service.address))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let scraped = scraped(&scrape);

    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/grafana/runbookd-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut dashboard_exprs = Vec::new();
    exprs(&dashboard, &mut dashboard_exprs);
    assert!(dashboard_exprs.len() >= 10, "{dashboard_exprs:?}");
    let rules: Value = serde_norway::from_str(
        &std::fs::read_to_string(root().join("deploy/prometheus/runbookd-rules.yml")).unwrap(),
    )
    .unwrap();
    let mut rule_exprs = Vec::new();
    exprs(&rules, &mut rule_exprs);
    assert_eq!(rule_exprs.len(), 5);

    let name = Regex::new(r"runbookd_[a-z0-9_]+").unwrap();
    let mut read = BTreeSet::new();
    for expr in dashboard_exprs.iter().chain(&rule_exprs) {
        let problems = unknown_references(expr, &scraped);
        assert!(problems.is_empty(), "{expr}: {problems:?}");
        read.extend(name.find_iter(expr).map(|m| m.as_str().to_owned()));
    }
    // The dashboard shows each family the issue asks for.
    for family in [
        "runbookd_runs_total",
        "runbookd_runs_active",
        "runbookd_approvals_pending",
        "runbookd_breaker_open",
        "runbookd_alerts_total",
        "runbookd_intake_batch_size_bucket",
        "runbookd_http_requests_total",
        "runbookd_http_request_duration_seconds_bucket",
        "runbookd_step_duration_seconds_bucket",
    ] {
        assert!(read.contains(family), "nothing reads {family}");
    }
    // The check itself catches a name or a label value runbookd does not serve.
    assert!(!unknown_references("rate(runbookd_runs_totl[5m])", &scraped).is_empty());
    assert!(!unknown_references(r#"runbookd_runs_total{outcome="fixed"}"#, &scraped).is_empty());
}

/// Every object `kubectl kustomize DIR` renders, as JSON values.
fn kustomize(dir: &Path) -> Vec<Value> {
    let output = Command::new("kubectl")
        .args(["kustomize"])
        .arg(dir)
        .output()
        .expect("kubectl runs (scripts/install-test-deps.sh installs it)");
    assert!(
        output.status.success(),
        "kubectl kustomize {} (components need kubectl 1.21+): {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|document| Value::deserialize(document).unwrap())
        .collect()
}

fn object<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {objects:#?}"))
}

#[test]
fn the_servicemonitor_component_scrapes_the_services_metrics_port() {
    // An overlay as an operator would write it: the estate's, with the component listed.
    // Under target/tmp, so the repository is at a fixed relative path (kustomize refuses
    // absolute ones).
    let overlay = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let up = "../../..";
    assert_eq!(
        overlay.path().join(up).canonicalize().unwrap(),
        root().canonicalize().unwrap()
    );
    std::fs::write(
        overlay.path().join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
             namespace: ai-platform\nresources:\n  - {up}/deploy/kubernetes/overlays/estate\n\
             components:\n  - {up}/deploy/kubernetes/components/servicemonitor\n"
        ),
    )
    .unwrap();
    let objects = kustomize(overlay.path());

    let monitor = object(&objects, "ServiceMonitor");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["metadata"]["namespace"], "ai-platform");
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["path"], "/metrics");
    let service = object(&objects, "Service");
    for (label, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            &service["metadata"]["labels"][label], value,
            "the ServiceMonitor selects the Service"
        );
    }
    let port = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == endpoint["port"])
        .unwrap_or_else(|| panic!("the Service has no port {}", endpoint["port"]));
    assert_eq!(port["name"], "metrics");
    // That port reaches the container's listener, where /metrics is served.
    let container = &object(&objects, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    assert!(
        container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == port["targetPort"]),
        "{port} reaches no container port"
    );
}
