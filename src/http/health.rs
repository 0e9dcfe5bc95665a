//! Open endpoints for orchestrators and Prometheus: liveness, readiness, metrics.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::{AppError, ErrorBody};

const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether runs can happen: without an estate (`[ssh]`, `[pbs]`, `[pve]`) or playbooks,
/// incidents are only recorded. `/readyz`, the web page and the start-up log say so.
#[derive(Debug, Clone, Serialize)]
pub struct Remediation {
    pub enabled: bool,
    /// The config sections the engine needs and does not have.
    pub missing: Vec<String>,
    pub detail: String,
}

impl Remediation {
    pub fn on() -> Self {
        Self {
            enabled: true,
            missing: Vec::new(),
            detail: "playbooks run against the configured estate".to_owned(),
        }
    }

    /// Off because the config lacks the `missing` sections or, when it lacks none, because no
    /// playbook could be loaded.
    pub fn off(missing: Vec<String>) -> Self {
        let detail = if missing.is_empty() {
            "no playbook could be loaded: incidents are recorded, nothing runs".to_owned()
        } else {
            format!(
                "no estate is configured (missing {}): incidents are recorded, nothing runs",
                missing.join(", ")
            )
        };
        Self {
            enabled: false,
            missing,
            detail,
        }
    }
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", operation_id = "check_liveness", responses((status = 200, description = "`{\"status\":\"ok\"}`")))]
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// The database answers, within a short timeout; `remediation` says whether runs can happen.
#[utoipa::path(get, path = "/readyz", tag = "health", operation_id = "check_readiness", responses(
    (status = 200, description = "`{\"status\":\"ready\",\"remediation\":{\"enabled\":false,\"missing\":[\"[ssh]\"],\"detail\":\"...\"}}`"),
    (status = 503, body = ErrorBody, description = "The database does not answer, or not in time"),
))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, AppError> {
    match tokio::time::timeout(READY_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => Ok(Json(
            json!({"status": "ready", "remediation": state.remediation.as_ref()}),
        )),
        Ok(Err(error)) => Err(AppError::Unavailable(error)),
        Err(_) => Err(AppError::Timeout),
    }
}

/// Prometheus text exposition. The safety gauges and the run and approval families are set
/// from the database as it is scraped; if it does not answer in time, the rest is still served.
#[utoipa::path(get, path = "/metrics", tag = "health", operation_id = "scrape_metrics", responses((status = 200, content_type = "text/plain", description = "Prometheus metrics")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let read = async {
        let overview = super::safety::overview(&state).await?;
        let activity = state.store.activity().await?;
        Ok::<_, crate::store::StoreError>((overview, activity))
    };
    match tokio::time::timeout(READY_TIMEOUT, read).await {
        Ok(Ok((overview, activity))) => {
            crate::telemetry::record_safety(&overview);
            crate::telemetry::record_activity(&activity);
        }
        Ok(Err(error)) => tracing::warn!(%error, "cannot read the database for /metrics"),
        Err(_) => tracing::warn!("reading the database for /metrics timed out"),
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
