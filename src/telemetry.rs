//! Logs (tracing, text or JSON) and the Prometheus metrics recorder.

use std::io::IsTerminal;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};
use crate::store::safety::SafetyOverview;

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
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder)
                .expect("no other metrics recorder is installed in this process");
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
            handle
        })
        .clone()
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
