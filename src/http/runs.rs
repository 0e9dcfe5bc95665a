//! `GET /api/v1/runs/{id}`: the run's state, facts, every step attempt with its command,
//! output, exit and duration, the decided cause with its evidence, and its audit trail.

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::AppState;
use super::error::AppError;
use super::extract::ApiPath;
use crate::store::approvals::Approval;
use crate::store::audit::AuditEvent;
use crate::store::runs::{Run, StepAttempt};

#[derive(Debug, Serialize)]
pub struct RunDetail {
    run: Run,
    steps: Vec<StepAttempt>,
    approvals: Vec<Approval>,
    timeline: Vec<AuditEvent>,
}

pub async fn show(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<RunDetail>, AppError> {
    let run = state
        .store
        .run(id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("there is no run {id}")))?;
    let steps = state.store.step_attempts(id).await?;
    let approvals = state.store.approvals_for_run(id).await?;
    let timeline = state.store.run_timeline(id, 1000).await?;
    Ok(Json(RunDetail {
        run,
        steps,
        approvals,
        timeline,
    }))
}
