//! The safety controls as operators see and reset them: `GET /api/v1/safety` (the one read
//! model, [`crate::store::safety::SafetyOverview`]), `POST /api/v1/breakers/{target}/reset`
//! and `POST /api/v1/dry-run`. Both changes need a reason and are audited with it; a missing
//! or empty reason is refused and changes nothing.

use axum::Json;
use axum::extract::{Extension, State};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::{AppError, ErrorBody};
use super::extract::{ApiPath, JsonBody};
use crate::auth::Principal;
use crate::intake::IntakeError;
use crate::store::StoreError;
use crate::store::safety::{BreakerState, Reason, ResetError, SafetyOverview, Switch};

/// The targets a breaker is shown for even before any run: those the playbooks name.
fn playbook_targets(state: &AppState) -> Vec<String> {
    let mut targets: Vec<String> = state
        .dispatcher
        .iter()
        .flat_map(|d| d.playbooks.iter().map(|p| p.target.clone()))
        .collect();
    targets.sort();
    targets.dedup();
    targets
}

/// The safety overview now; also what `/metrics` and the home page show.
pub(crate) async fn overview(state: &AppState) -> Result<SafetyOverview, StoreError> {
    state
        .store
        .safety_overview(&playbook_targets(state), state.limits, state.clock.now())
        .await
}

/// Every safety control as it stands.
#[utoipa::path(get, path = "/api/v1/safety", tag = "operations", operation_id = "show_safety",
    responses((status = 200, body = SafetyOverview, description = "Every safety control in force now")),
    security(("bearer" = [])), description = "The circuit breaker of each target (open or closed, failures counted in the window, when it closes, its last reset), the cooldowns in force, the hourly budget, pause and dry-run. Roles: agent, approver, admin.")]
pub async fn show(State(state): State<AppState>) -> Result<Json<SafetyOverview>, AppError> {
    Ok(Json(overview(&state).await?))
}

/// Why, for the audit trail.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetBreaker {
    /// Required: one line, at most 500 characters.
    reason: String,
}

/// A body parsed as `T`, then its reason checked: both refusals are 422 and change nothing.
fn parse_body<T: serde::de::DeserializeOwned>(
    body: &[u8],
    reason: impl Fn(&T) -> &str,
) -> Result<(T, Reason), AppError> {
    let invalid = |message: String| AppError::Intake(IntakeError::Invalid(message));
    let parsed: T = serde_json::from_slice(body).map_err(|e| invalid(e.to_string()))?;
    let checked = Reason::parse(reason(&parsed)).map_err(|e| invalid(e.to_string()))?;
    Ok((parsed, checked))
}

/// Resets a target's circuit breaker: from now on it counts only failures after the reset.
#[utoipa::path(post, path = "/api/v1/breakers/{target}/reset", tag = "operations", operation_id = "reset_breaker",
    params(("target" = String, Path, description = "The target, as a playbook names it (e.g. pbs)")),
    request_body = ResetBreaker,
    responses((status = 200, body = BreakerState, description = "The breaker after the reset"),
        (status = 404, body = ErrorBody, description = "No playbook or run has this target"),
        (status = 413, body = ErrorBody, description = "The body is larger than `http.max_body_bytes`"),
        (status = 415, body = ErrorBody, description = "The body is not declared as JSON"),
        (status = 422, body = ErrorBody, description = "The reason is missing, empty or too long")),
    security(("bearer" = [])), description = "Resets the circuit breaker of one target, with a reason; audited as breaker.reset. Roles: admin.")]
pub async fn reset_breaker(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    ApiPath(target): ApiPath<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<BreakerState>, AppError> {
    let (_, reason) = parse_body(&body, |b: &ResetBreaker| &b.reason)?;
    let known = playbook_targets(&state);
    match state
        .store
        .reset_breaker(&target, &known, &caller.name, &reason, state.clock.now())
        .await
    {
        Ok(()) => {}
        Err(error @ ResetError::UnknownTarget { .. }) => {
            return Err(AppError::NotFound(error.to_string()));
        }
        Err(ResetError::Store(error)) => return Err(error.into()),
    }
    let breaker = overview(&state)
        .await?
        .breakers
        .into_iter()
        .find(|b| b.target == target)
        .ok_or_else(|| AppError::NotFound(format!("there is no target '{target}'")))?;
    Ok(Json(breaker))
}

/// Global dry-run, on or off, and why.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetDryRun {
    /// On: every run created from now on is a dry run. Runs already created keep their mode.
    enabled: bool,
    /// Required: one line, at most 500 characters.
    reason: String,
}

/// Global dry-run after the call.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DryRunState {
    pub dry_run: bool,
}

/// Switches global dry-run.
#[utoipa::path(post, path = "/api/v1/dry-run", tag = "operations", operation_id = "set_dry_run", request_body = SetDryRun,
    responses((status = 200, body = DryRunState, description = "Global dry-run after the switch"),
        (status = 413, body = ErrorBody, description = "The body is larger than `http.max_body_bytes`"),
        (status = 415, body = ErrorBody, description = "The body is not declared as JSON"),
        (status = 422, body = ErrorBody, description = "`enabled` or the reason is missing, or the reason is empty or too long")),
    security(("bearer" = [])), description = "Switches global dry-run on or off, with a reason; audited as setting.changed. A run's mode is fixed when it is created. Roles: admin.")]
pub async fn set_dry_run(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    JsonBody(body): JsonBody,
) -> Result<Json<DryRunState>, AppError> {
    let (request, reason) = parse_body(&body, |b: &SetDryRun| &b.reason)?;
    state
        .store
        .set_switch_because(
            Switch::DryRun,
            request.enabled,
            &caller.name,
            &reason,
            state.clock.now(),
        )
        .await?;
    Ok(Json(DryRunState {
        dry_run: request.enabled,
    }))
}
