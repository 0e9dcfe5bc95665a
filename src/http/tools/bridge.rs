//! `POST /api/call`: the tools in the REST bridge format the estate's agents already use.
//!
//! Request: `{"tool": NAME, "arguments": {...}}`, or the same inside a `{"params": {...}}`
//! envelope. Answer: `{"status": "success", "tool", "output"}`, or
//! `{"status": "error", "tool", "error"}` with the 4xx or 5xx status the error deserves.

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

use super::super::AppState;
use super::super::error::AppError;
use super::super::extract::JsonBody;
use crate::auth::Principal;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolCall {
    tool: String,
    #[serde(default)]
    arguments: Value,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Envelope {
    Wrapped { params: ToolCall },
    Bare(ToolCall),
}

/// The bridge's answer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ToolAnswer {
    /// `success` or `error`.
    status: &'static str,
    tool: String,
    /// The tool's result, on success.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    output: Option<Value>,
    /// What went wrong and what to change, on error.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[utoipa::path(post, path = "/api/call", tag = "tools", operation_id = "call_tool",
    request_body(content = ToolCall, description = "`{\"tool\", \"arguments\"}`, or the same inside `{\"params\": {...}}`"),
    responses(
        (status = 200, body = ToolAnswer, description = "`status: success` with the tool's output"),
        (status = 400, body = ToolAnswer, description = "`status: error`: the body is not a tool call, or the arguments are wrong; `error` says what to change"),
        (status = 403, body = ToolAnswer, description = "`status: error`: the token's role may not call this tool"),
        (status = 404, body = ToolAnswer, description = "`status: error`: no such tool, or no such incident or run"),
        (status = 409, body = ToolAnswer, description = "`status: error`: the run has ended, or no engine runs here"),
        (status = 413, body = ToolAnswer, description = "`status: error`: the body is larger than `http.max_body_bytes`"),
        (status = 415, body = ToolAnswer, description = "`status: error`: the body is not declared as JSON"),
        (status = 422, body = ToolAnswer, description = "`status: error`: the run cannot start with these arguments"),
        (status = 502, body = ToolAnswer, description = "`status: error`: a host or API of the estate failed; `error` says which"),
        (status = 503, body = ToolAnswer, description = "`status: error`: the database was too busy; retry"),
        (status = 504, body = ToolAnswer, description = "`status: error`: a host or API of the estate did not answer in time"),
    ),
    security(("bearer" = [])),
    description = "The agent's tools (the same as `/mcp`): list_incidents, get_incident, get_backup_status, diagnose, start_remediation, list_pending_approvals, cancel_run, explain_playbook. Roles: agent, approver, admin to reach it; diagnose, start_remediation and cancel_run need agent or admin. No tool approves.\n\nFor clients that call `raise_for_status()`: every answer but 200 is an error. A tool's own refusal is `{\"status\": \"error\", \"tool\", \"error\"}` with the status above; what stops the call before the tool runs is the common `{\"error\": {\"code\", \"message\"}}`: 401 (token), 403 (role, or a `Host` or browser `Origin` that is not allowed: DNS-rebinding protection, as for `/mcp`) and 503 (the request timed out).",
)]
pub async fn call(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    body: Result<JsonBody, AppError>,
) -> Response {
    let body = match body {
        Ok(JsonBody(body)) => body,
        Err(error) => return failure("", error),
    };
    let request: Envelope = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(_) => {
            let tool = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| {
                    v.get("tool")
                        .or_else(|| v.get("params").and_then(|p| p.get("tool")))
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .unwrap_or_default();
            return failure(
                &tool,
                AppError::BadRequest(
                    "the body must be {\"tool\": NAME, \"arguments\": {...}} \
                     or {\"params\": {\"tool\": NAME, \"arguments\": {...}}}, \
                     with no other fields"
                        .to_owned(),
                ),
            );
        }
    };
    let (Envelope::Wrapped { params: call } | Envelope::Bare(call)) = request;
    match super::call(&state, &caller, &call.tool, call.arguments).await {
        Ok(output) => (
            StatusCode::OK,
            Json(ToolAnswer {
                status: "success",
                tool: call.tool,
                output: Some(output),
                error: None,
            }),
        )
            .into_response(),
        Err(error) => failure(&call.tool, error),
    }
}

/// The bridge's error shape, with the status and logging of [`AppError`].
fn failure(tool: &str, error: AppError) -> Response {
    let status = error.status();
    if status.is_server_error() {
        tracing::error!(error = ?error, tool, "tool call failed");
    }
    let answer = ToolAnswer {
        status: "error",
        tool: tool.to_owned(),
        output: None,
        error: Some(error.to_string()),
    };
    (status, Json(answer)).into_response()
}
