//! Open endpoints for orchestrators and Prometheus: liveness, readiness, metrics.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::AppState;
use super::error::{AppError, ErrorBody};

const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "`{\"status\":\"ok\"}`")))]
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// The database answers, within a short timeout.
#[utoipa::path(get, path = "/readyz", tag = "health", responses(
    (status = 200, description = "`{\"status\":\"ready\"}`"),
    (status = 503, body = ErrorBody, description = "The database does not answer"),
))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, AppError> {
    match tokio::time::timeout(READY_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => Ok(Json(json!({"status": "ready"}))),
        Ok(Err(error)) => Err(AppError::Unavailable(error)),
        Err(_) => Err(AppError::Timeout),
    }
}

/// Prometheus text exposition. The safety gauges are set from the safety overview as it is
/// scraped; if the database does not answer in time, the rest is still served.
#[utoipa::path(get, path = "/metrics", tag = "health", responses((status = 200, content_type = "text/plain", description = "Prometheus metrics")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    match tokio::time::timeout(READY_TIMEOUT, super::safety::overview(&state)).await {
        Ok(Ok(overview)) => crate::telemetry::record_safety(&overview),
        Ok(Err(error)) => tracing::warn!(%error, "cannot read the safety controls for /metrics"),
        Err(_) => tracing::warn!("reading the safety controls for /metrics timed out"),
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
