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
#[derive(Debug, Serialize)]
pub struct SwitchState {
    pub paused: bool,
}

/// Holds new runs; in-flight runs stop at their next step boundary. Pausing twice is harmless.
pub async fn pause(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
) -> Result<Json<SwitchState>, AppError> {
    set_paused(&state, &caller, true).await
}

/// Lets runs go on.
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
    Ok(Json(SwitchState { paused }))
}

#[derive(Debug, Serialize)]
pub struct PlaybookList {
    /// Whether runs are held by the kill switch.
    pub paused: bool,
    pub playbooks: Vec<Playbook>,
}

/// Every loaded playbook, whole: triggers, probes, causes, steps and verification.
pub async fn playbooks(State(state): State<AppState>) -> Result<Json<PlaybookList>, AppError> {
    Ok(Json(PlaybookList {
        paused: state.store.switch(Switch::Paused).await?,
        playbooks: state
            .dispatcher
            .as_ref()
            .map(|d| d.playbooks.clone())
            .unwrap_or_default(),
    }))
}
