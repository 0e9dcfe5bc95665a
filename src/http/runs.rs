//! `GET /api/v1/runs/{id}`: the run's state, facts, every step attempt with its command,
//! output, exit and duration, the decided cause with its evidence, and its audit trail.

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json_, json};

use super::AppState;
use super::error::{AppError, ErrorBody};
use super::extract::{ApiPath, JsonBody};
use crate::auth::Principal;
use crate::engine::dispatch::HandStart;
use crate::store::approvals::Approval;
use crate::store::audit::AuditEvent;
use crate::store::idempotency::{Claim, request_hash};
use crate::store::runs::{Created, RunError};
use crate::store::runs::{Run, StepAttempt};

/// A run with what it did: every step attempt and every approval it asked for, and what it
/// covers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunWithSteps {
    run: Run,
    steps: Vec<StepAttempt>,
    approvals: Vec<Approval>,
    covers: RunScope,
}

/// Every incident a run covers (the one that started it and every one that joined it) and the
/// backup groups they name.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunScope {
    incidents: Vec<i64>,
    /// `type/id` of each covered incident that names a group, without repeats.
    groups: Vec<String>,
}

impl RunWithSteps {
    pub async fn load(state: &AppState, run: Run) -> Result<Self, AppError> {
        let steps = state.store.step_attempts(run.id).await?;
        let approvals = state.store.approvals_for_run(run.id).await?;
        let incidents = state.store.run_incidents(run.id).await?;
        let mut groups: Vec<String> = Vec::new();
        for incident in &incidents {
            let labels = &incident.labels.0;
            if let (Some(kind), Some(id)) = (
                labels["backup_type"].as_str(),
                labels["backup_id"].as_str().or(labels["vm_id"].as_str()),
            ) {
                let group = format!("{kind}/{id}");
                if !groups.contains(&group) {
                    groups.push(group);
                }
            }
        }
        Ok(Self {
            run,
            steps,
            approvals,
            covers: RunScope {
                incidents: incidents.iter().map(|i| i.id).collect(),
                groups,
            },
        })
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunDetail {
    #[serde(flatten)]
    run: RunWithSteps,
    timeline: Vec<AuditEvent>,
}

#[utoipa::path(get, path = "/api/v1/runs/{id}", tag = "runs", operation_id = "show_run", params(("id" = i64, Path, description = "Run id")),
    responses((status = 200, body = RunDetail, description = "The run with its steps, approvals and trail"),
        (status = 400, body = ErrorBody, description = "The id is not a number"),
        (status = 404, body = ErrorBody, description = "There is no such run")),
    security(("bearer" = [])), description = "The run's state, facts, outcome (cause and evidence), every step attempt and approval, and its audit trail. Roles: agent, approver, admin.")]
pub async fn show(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<RunDetail>, AppError> {
    let run = state
        .store
        .run(id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("there is no run {id}")))?;
    let run = RunWithSteps::load(&state, run).await?;
    let timeline = state.store.run_timeline(id, 1000).await?;
    Ok(Json(RunDetail { run, timeline }))
}

/// `POST /api/v1/runs/{id}/cancel`: stops the run at its next step boundary.
#[utoipa::path(post, path = "/api/v1/runs/{id}/cancel", tag = "runs", operation_id = "cancel_run", params(("id" = i64, Path, description = "Run id")),
    responses((status = 200, description = "`{\"run_id\": ID, \"state\": \"cancelled\"}`"),
        (status = 400, body = ErrorBody, description = "The id is not a number"),
        (status = 404, body = ErrorBody, description = "There is no such run"),
        (status = 409, body = ErrorBody, description = "The run has ended")),
    security(("bearer" = [])), description = "Stops the run at its next step boundary and cancels its pending approvals. Roles: agent, admin.")]
pub async fn cancel(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Json_>, AppError> {
    match state
        .store
        .cancel_run(
            id,
            &caller.name,
            &format!("cancelled by {}", caller.name),
            state.clock.now(),
        )
        .await
    {
        Ok(()) => {
            state.wake_worker();
            Ok(Json(json!({"run_id": id, "state": "cancelled"})))
        }
        Err(RunError::NotFound(_)) => Err(AppError::NotFound(format!("there is no run {id}"))),
        Err(e @ RunError::Final { .. }) => Err(AppError::Conflict(e.to_string())),
        Err(RunError::Store(e)) => Err(e.into()),
        Err(e) => Err(AppError::Internal(e.into())),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRun {
    playbook: String,
    /// Labels as an alert would carry them; the playbook's parameters are read from them.
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    dry_run: bool,
}

/// `POST /api/v1/runs`: starts a playbook by hand. With an `Idempotency-Key` header, a retry
/// gets the first answer instead of a second run.
#[utoipa::path(post, path = "/api/v1/runs", tag = "runs", operation_id = "start_run", request_body = StartRun,
    params(("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key gets the first answer")),
    responses(
        (status = 201, description = "`{\"run_id\": ID, \"attached\": false, \"dry_run\": BOOL}`: a new run"),
        (status = 200, description = "`{\"run_id\": ID, \"attached\": true, \"dry_run\": BOOL}`: the target's active run of the same mode (dry or live)"),
        (status = 400, body = ErrorBody, description = "The Idempotency-Key is not 1-200 characters of text"),
        (status = 409, body = ErrorBody, description = "The Idempotency-Key is in use or was used for another request, or no engine runs here"),
        (status = 413, body = ErrorBody, description = "The body is larger than `http.max_body_bytes`"),
        (status = 415, body = ErrorBody, description = "The body is not declared as JSON"),
        (status = 422, body = ErrorBody, description = "Not a StartRun, an unknown playbook, or labels the playbook cannot use")),
    security(("bearer" = [])), description = "Starts a playbook by hand; every approval and safety rule applies. Roles: agent, admin.")]
pub async fn start(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<Json_>), AppError> {
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(value) => {
            let key = value
                .to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= 200)
                .ok_or_else(|| {
                    AppError::BadRequest(
                        "Idempotency-Key must be 1-200 characters of text".to_owned(),
                    )
                })?;
            Some(key.to_owned())
        }
    };
    if let Some(key) = &key {
        let hash = request_hash("POST", "/api/v1/runs", &body);
        match state
            .store
            .claim_idempotent(&caller.name, key, &hash, state.clock.now())
            .await?
        {
            Claim::New => {}
            Claim::Done { status, body } => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                return Ok((
                    status,
                    Json(serde_json::from_str(&body).unwrap_or(Json_::Null)),
                ));
            }
            Claim::InProgress => {
                return Err(AppError::Conflict(
                    "a request with this Idempotency-Key is still being handled; retry later"
                        .to_owned(),
                ));
            }
            Claim::Mismatch => {
                return Err(AppError::Conflict(
                    "this Idempotency-Key was used for a different request".to_owned(),
                ));
            }
        }
    }
    let answer = start_run(&state, &caller, &body).await;
    if let Some(key) = &key {
        match &answer {
            Ok((status, Json(value))) => {
                state
                    .store
                    .complete_idempotent(&caller.name, key, status.as_u16(), &value.to_string())
                    .await?
            }
            Err(_) => state.store.release_idempotent(&caller.name, key).await?,
        }
    }
    answer
}

async fn start_run(
    state: &AppState,
    caller: &Principal,
    body: &[u8],
) -> Result<(StatusCode, Json<Json_>), AppError> {
    let request: StartRun = serde_json::from_slice(body)
        .map_err(|e| AppError::Intake(crate::intake::IntakeError::Invalid(e.to_string())))?;
    let dispatcher = state.dispatcher.as_ref().ok_or_else(|| {
        AppError::Conflict("no engine runs here: configure the inventory and playbooks".to_owned())
    })?;
    let hand = HandStart {
        playbook: &request.playbook,
        labels: &request.labels,
        dry_run: request.dry_run,
        actor: &caller.name,
    };
    let (status, id, attached) = match dispatcher
        .start_by_hand(&state.store, hand, state.clock.now())
        .await?
    {
        Created::New(id) => (StatusCode::CREATED, id, false),
        Created::AlreadyActive(id) => (StatusCode::OK, id, true),
    };
    // The run's mode, as fixed at creation (the request, or the global switch then).
    let dry_run = state.store.run(id).await?.is_some_and(|run| run.dry_run);
    Ok((
        status,
        Json(json!({"run_id": id, "attached": attached, "dry_run": dry_run})),
    ))
}
