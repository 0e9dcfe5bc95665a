//! Logs (tracing, text or JSON) and the Prometheus metrics: the recorder, every family's help
//! and buckets, and what sets each family.
//!
//! Every family is on `/metrics` from start-up: the label sets known then (the API's routes and
//! the statuses they document, the playbooks' steps and runs' endings, the breakers' targets)
//! are registered at zero, so a dashboard or an alert rule sees a zero, not a missing series.
//! The gauges of what the database holds (active runs, pending approvals, the safety controls)
//! and the count of ended runs are read from it as `/metrics` is scraped, so they are right
//! after a restart and never drift.

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::Duration;

use axum::http::StatusCode;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};
use crate::playbook::Playbook;
use crate::store::activity::Activity;
use crate::store::runs::RunState;
use crate::store::safety::SafetyOverview;

/// The `route` of a request no route matched: one series, whatever the path.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// How an executed step ended: the `outcome` of `runbookd_step_duration_seconds`.
const STEP_DONE: &str = "done";
const STEP_FAILED: &str = "failed";

/// Request latency: from a health check's milliseconds to a tool call that waits for a run.
const HTTP_SECONDS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Step time: from an API call's fraction of a second to a full backup's hour.
const STEP_SECONDS: [f64; 13] = [
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];
/// Alerts per intake commit: powers of two from one alert to 512.
const BATCH_SIZES: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// How often histogram samples are folded into their buckets between scrapes, so an unscraped
/// process does not hold every sample.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Installs the global log subscriber. `RUST_LOG` wins over the configured filter.
pub fn init_logging(config: &LogConfig) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    let result = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if let Err(error) = result {
        eprintln!("logging was already set up: {error}");
    }
}

/// The process-wide metrics recorder, installed on first use. `metrics` has one global
/// recorder per process, so every app built in the process shares it.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = [
                ("runbookd_http_request_duration_seconds", &HTTP_SECONDS[..]),
                ("runbookd_step_duration_seconds", &STEP_SECONDS[..]),
                ("runbookd_intake_batch_size", &BATCH_SIZES[..]),
            ]
            .into_iter()
            .fold(PrometheusBuilder::new(), |builder, (name, buckets)| {
                builder
                    .set_buckets_for_metric(Matcher::Full(name.to_owned()), buckets)
                    .expect("the buckets are not empty")
            })
            .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder)
                .expect("no other metrics recorder is installed in this process");
            describe_families();
            metrics::gauge!("runbookd_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            // A histogram is on `/metrics` once its handle is registered, before any sample.
            let _ = metrics::histogram!("runbookd_intake_batch_size");
            metrics::gauge!("runbookd_runs_active").set(0.0);
            metrics::gauge!("runbookd_approvals_pending").set(0.0);
            handle
        })
        .clone()
}

/// Every family's help text.
fn describe_families() {
    metrics::describe_gauge!(
        "runbookd_build_info",
        "Always 1; the labels say which runbookd this is"
    );
    metrics::describe_counter!(
        "runbookd_http_requests_total",
        "HTTP requests answered, by route template (unmatched: no route) and status"
    );
    metrics::describe_histogram!(
        "runbookd_http_request_duration_seconds",
        "Time to answer an HTTP request (until its headers), by route template"
    );
    metrics::describe_counter!(
        "runbookd_runs_total",
        "Runs that ended, by playbook and outcome (the run's final state: resolved, escalated, refused, rehearsed, cancelled), as the database holds them"
    );
    metrics::describe_gauge!(
        "runbookd_runs_active",
        "Runs not ended yet: pending, running or waiting for an approval"
    );
    metrics::describe_histogram!(
        "runbookd_step_duration_seconds",
        "Time an executed step took, retries included, by step and outcome (done, failed)"
    );
    metrics::describe_gauge!(
        "runbookd_approvals_pending",
        "Approvals waiting for a human decision"
    );
    metrics::describe_histogram!(
        "runbookd_intake_batch_size",
        "Alerts written by one intake commit"
    );
    metrics::describe_counter!(
        "runbookd_alerts_total",
        "Alerts received, by source and outcome (opened, recurred, deduplicated, settling, late_firing, resolved, resolve_unmatched, refused; rejected and failed for whole deliveries)"
    );
    metrics::describe_counter!(
        "runbookd_link_requests_limited_total",
        "Requests to /links refused with 429 because their address sent too many (not audited)"
    );
    metrics::describe_gauge!(
        "runbookd_breaker_open",
        "1 when the target's circuit breaker is open (its mutating steps are blocked)"
    );
    metrics::describe_gauge!(
        "runbookd_breaker_failures",
        "Failed or escalated live runs the target's breaker counts now (24 h, after its last reset)"
    );
    metrics::describe_gauge!("runbookd_paused", "1 while the kill switch holds runs");
    metrics::describe_gauge!(
        "runbookd_dry_run",
        "1 while global dry-run makes new runs dry"
    );
    metrics::describe_gauge!(
        "runbookd_hourly_budget_used",
        "Mutating actions booked in the last hour"
    );
    metrics::describe_gauge!(
        "runbookd_hourly_budget_limit",
        "Mutating actions allowed per rolling hour"
    );
    metrics::describe_gauge!(
        "runbookd_cooldowns_active",
        "Actions on a target that may not run again yet"
    );
}

/// Folds histogram samples into their buckets every [`UPKEEP_EVERY`] until `stop` completes.
pub async fn upkeep_until(stop: impl std::future::Future<Output = ()>) {
    let handle = metrics_handle();
    let mut tick = tokio::time::interval(UPKEEP_EVERY);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = tick.tick() => handle.run_upkeep(),
        }
    }
}

/// Sets the safety gauges from the safety overview, the same read model the API shows.
pub fn record_safety(overview: &SafetyOverview) {
    let flag = |on: bool| if on { 1.0 } else { 0.0 };
    for breaker in &overview.breakers {
        let target = breaker.target.clone();
        metrics::gauge!("runbookd_breaker_open", "target" => target.clone())
            .set(flag(breaker.open));
        metrics::gauge!("runbookd_breaker_failures", "target" => target)
            .set(f64::from(breaker.failures));
    }
    metrics::gauge!("runbookd_paused").set(flag(overview.paused.on));
    metrics::gauge!("runbookd_dry_run").set(flag(overview.dry_run.on));
    metrics::gauge!("runbookd_hourly_budget_used").set(f64::from(overview.hourly_budget.used));
    metrics::gauge!("runbookd_hourly_budget_limit").set(f64::from(overview.hourly_budget.limit));
    metrics::gauge!("runbookd_cooldowns_active").set(overview.cooldowns.len() as f64);
}

/// Registers, at zero, the series known at start-up: each playbook's runs by every ending, and
/// its steps by every outcome.
pub fn register_playbooks<'a>(playbooks: impl IntoIterator<Item = &'a Playbook>) {
    for playbook in playbooks {
        for state in RunState::FINAL {
            metrics::counter!("runbookd_runs_total", "playbook" => playbook.name.clone(), "outcome" => state.as_str())
                .increment(0);
        }
        for step in playbook.steps.keys() {
            for outcome in [STEP_DONE, STEP_FAILED] {
                let _ = metrics::histogram!("runbookd_step_duration_seconds", "step" => step.clone(), "outcome" => outcome);
            }
        }
    }
}

/// Registers, at zero, each route template with every status it documents.
pub fn register_routes<'a>(routes: impl IntoIterator<Item = (&'a str, Vec<StatusCode>)>) {
    for (route, statuses) in routes {
        let _ = metrics::histogram!("runbookd_http_request_duration_seconds", "route" => route.to_owned());
        for status in statuses {
            metrics::counter!("runbookd_http_requests_total", "route" => route.to_owned(), "status" => status.as_u16().to_string())
                .increment(0);
        }
    }
}

/// Counts and times one answered request under its route template.
pub fn observe_request(route: &str, status: StatusCode, took: Duration) {
    metrics::counter!("runbookd_http_requests_total", "route" => route.to_owned(), "status" => status.as_u16().to_string())
        .increment(1);
    metrics::histogram!("runbookd_http_request_duration_seconds", "route" => route.to_owned())
        .record(took.as_secs_f64());
}

/// Times one executed step; `done` says whether it did what it should.
pub fn observe_step(step: &str, done: bool, took: Duration) {
    let outcome = if done { STEP_DONE } else { STEP_FAILED };
    metrics::histogram!("runbookd_step_duration_seconds", "step" => step.to_owned(), "outcome" => outcome)
        .record(took.as_secs_f64());
}

/// Sets the run and approval families from what the database holds now.
pub fn record_activity(activity: &Activity) {
    metrics::gauge!("runbookd_runs_active").set(activity.runs_active as f64);
    metrics::gauge!("runbookd_approvals_pending").set(activity.approvals_pending as f64);
    for ended in &activity.runs_ended {
        metrics::counter!("runbookd_runs_total", "playbook" => ended.playbook.clone(), "outcome" => ended.state.as_str())
            .absolute(ended.count);
    }
}
