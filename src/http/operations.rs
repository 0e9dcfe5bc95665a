//! `POST /api/v1/pause`, `POST /api/v1/resume` (the kill switch) and `GET /api/v1/playbooks`.

use axum::Json;
use axum::extract::{Extension, State};
use serde::Serialize;

use super::AppState;
use super::error::AppError;
use crate::auth::Principal;
use crate::playbook::model::Playbook;
use crate::store::safety::Switch;

/// The kill switch's state after the call.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SwitchState {
    pub paused: bool,
}

/// Holds new runs; in-flight runs stop at their next step boundary. Pausing twice is harmless.
#[utoipa::path(post, path = "/api/v1/pause", tag = "operations", operation_id = "pause_runs",
    responses((status = 200, body = SwitchState, description = "Paused (again, if it was)")),
    security(("bearer" = [])), description = "The kill switch: new runs wait, running ones stop at their next step boundary. Roles: admin.")]
pub async fn pause(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
) -> Result<Json<SwitchState>, AppError> {
    set_paused(&state, &caller, true).await
}

/// Lets runs go on.
#[utoipa::path(post, path = "/api/v1/resume", tag = "operations", operation_id = "resume_runs",
    responses((status = 200, body = SwitchState, description = "Running (again, if it was)")),
    security(("bearer" = [])), description = "Releases the kill switch. Roles: admin.")]
pub async fn resume(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
) -> Result<Json<SwitchState>, AppError> {
    set_paused(&state, &caller, false).await
}

async fn set_paused(
    state: &AppState,
    caller: &Principal,
    paused: bool,
) -> Result<Json<SwitchState>, AppError> {
    state
        .store
        .set_switch(Switch::Paused, paused, &caller.name, state.clock.now())
        .await?;
    state.wake_worker();
    Ok(Json(SwitchState { paused }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PlaybookList {
    /// Whether runs are held by the kill switch.
    pub paused: bool,
    /// Each playbook whole, as its YAML file says.
    #[schema(value_type = Vec<Object>)]
    pub playbooks: Vec<Playbook>,
}

/// Every loaded playbook, whole: triggers, probes, causes, steps and verification.
#[utoipa::path(get, path = "/api/v1/playbooks", tag = "operations", operation_id = "list_playbooks",
    responses((status = 200, body = PlaybookList, description = "The loaded playbooks, as written, and whether runs are paused")),
    security(("bearer" = [])), description = "Roles: agent, approver, admin.")]
pub async fn playbooks(State(state): State<AppState>) -> Result<Json<PlaybookList>, AppError> {
    Ok(Json(PlaybookList {
        paused: state.store.switch(Switch::Paused).await?,
        playbooks: state
            .dispatcher
            .as_ref()
            .map(|d| d.playbooks.iter().map(|p| p.source.clone()).collect())
            .unwrap_or_default(),
    }))
}
