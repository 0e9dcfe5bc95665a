//! `GET /api/v1/approvals[?status=]`, `POST /api/v1/approvals/{id}/approve|reject`. The decider
//! is the caller's token name; deciding twice reports the first decision; an expired approval
//! cannot be approved.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::{AppError, ErrorBody};
use super::extract::{ApiPath, ApiQuery};
use crate::auth::Principal;
use crate::store::approvals::{Approval, ApprovalStatus, Decided, Decision};

/// The longest comment a decision takes, in characters.
pub(super) const MAX_COMMENT_CHARS: usize = 2000;

/// A decision's comment is at most [`MAX_COMMENT_CHARS`] of text: line breaks, but no other
/// control characters. The REST route and the web page both check with this.
pub(super) fn check_comment(comment: &str) -> Result<(), AppError> {
    if comment.chars().count() > MAX_COMMENT_CHARS
        || comment.chars().any(|c| c.is_control() && c != '\n')
    {
        return Err(AppError::BadRequest(format!(
            "the comment must be at most {MAX_COMMENT_CHARS} characters of text"
        )));
    }
    Ok(())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<ApprovalStatus>,
}

#[utoipa::path(get, path = "/api/v1/approvals", tag = "approvals", operation_id = "list_approvals", params(ListQuery),
    responses((status = 200, body = Vec<Approval>, description = "At most 200 approvals, newest first"),
        (status = 400, body = ErrorBody, description = "An unknown `status` or query parameter")),
    security(("bearer" = [])), description = "Approvals with the run, the step, the exact command, its risk, the evidence and the expiry, newest first. Roles: agent, approver, admin.")]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Vec<Approval>>, AppError> {
    Ok(Json(state.store.approvals(query.status, 200).await?))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    comment: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DecisionAnswer {
    /// False when it had been decided before: `approval` shows that first decision.
    decided_now: bool,
    approval: Approval,
}

#[utoipa::path(post, path = "/api/v1/approvals/{id}/approve", tag = "approvals", operation_id = "approve_step", params(("id" = i64, Path, description = "Approval id")),
    request_body(content = Option<DecisionBody>, description = "Optional: a comment for the record"),
    responses((status = 200, body = DecisionAnswer, description = "Decided now, or the first decision when it was decided before"),
        (status = 400, body = ErrorBody, description = "The id is not a number, or the body is neither empty nor `{\"comment\"}` of at most 2000 characters"),
        (status = 404, body = ErrorBody, description = "There is no such approval"),
        (status = 409, body = ErrorBody, description = "Expired, or its run no longer waits for it: it can no longer be decided"),
        (status = 413, body = ErrorBody, description = "The body is larger than `http.max_body_bytes`")),
    security(("bearer" = [])), description = "The decider is the token's name. Roles: approver, admin.")]
pub async fn approve(
    state: State<AppState>,
    caller: Extension<Principal>,
    id: ApiPath<i64>,
    body: Bytes,
) -> Result<(StatusCode, Json<DecisionAnswer>), AppError> {
    decide(state, caller, id, body, Decision::Approve).await
}

#[utoipa::path(post, path = "/api/v1/approvals/{id}/reject", tag = "approvals", operation_id = "reject_step", params(("id" = i64, Path, description = "Approval id")),
    request_body(content = Option<DecisionBody>, description = "Optional: a comment for the record"),
    responses((status = 200, body = DecisionAnswer, description = "Decided now, or the first decision when it was decided before"),
        (status = 400, body = ErrorBody, description = "The id is not a number, or the body is neither empty nor `{\"comment\"}` of at most 2000 characters"),
        (status = 404, body = ErrorBody, description = "There is no such approval"),
        (status = 409, body = ErrorBody, description = "Expired, or its run no longer waits for it: it can no longer be decided"),
        (status = 413, body = ErrorBody, description = "The body is larger than `http.max_body_bytes`")),
    security(("bearer" = [])), description = "The decider is the token's name. Roles: approver, admin.")]
pub async fn reject(
    state: State<AppState>,
    caller: Extension<Principal>,
    id: ApiPath<i64>,
    body: Bytes,
) -> Result<(StatusCode, Json<DecisionAnswer>), AppError> {
    decide(state, caller, id, body, Decision::Reject).await
}

async fn decide(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    ApiPath(id): ApiPath<i64>,
    body: Bytes,
    decision: Decision,
) -> Result<(StatusCode, Json<DecisionAnswer>), AppError> {
    // The body is optional: nothing, or {"comment": "..."}.
    let body: DecisionBody = if body.is_empty() {
        DecisionBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            AppError::BadRequest(format!(
                "the body must be empty or {{\"comment\": \"...\"}}: {e}"
            ))
        })?
    };
    if let Some(comment) = &body.comment {
        check_comment(comment)?;
    }
    let decided = state
        .store
        .decide(
            id,
            decision,
            &caller.name,
            body.comment.as_deref(),
            state.clock.now(),
        )
        .await?;
    state.wake_worker();
    let approval = state
        .store
        .approval(id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("there is no approval {id}")))?;
    Ok((
        StatusCode::OK,
        Json(DecisionAnswer {
            decided_now: matches!(decided, Decided::Now(_)),
            approval,
        }),
    ))
}
