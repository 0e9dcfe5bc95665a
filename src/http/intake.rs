//! `POST /ingest[?source=]` and `POST /webhook/alertmanager`: the same answer as the existing
//! pipeline, `{"status":"accepted","count":N,"incidents":[...]}` with 202, so moving a sender to
//! runbookd is a change of URL only.

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::{AppError, ErrorBody};
use super::extract::{ApiQuery, JsonBody};
use crate::auth::Principal;
use crate::engine::intake::Submission;
use crate::intake::{self, Alert, AlertStatus, Format, RawBody, RefusedAlert, Source};
use crate::store::intake::IntakeAction;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct IngestQuery {
    /// `alertmanager`, `pbs` (the forwarder), `generic` or `sweep`; sniffed from the body
    /// when omitted.
    source: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IngestResponse {
    status: &'static str,
    count: usize,
    incidents: Vec<IngestedAlert>,
}

/// One entry per alert of the delivery, in order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IngestedAlert {
    incident_id: Option<i64>,
    /// The run that covers the incident: started, joined or cancelled by this alert; `null`
    /// when no playbook matches (see `reason`), no engine runs, or the alert was refused.
    run_id: Option<i64>,
    /// The alert folded into an existing incident (`action` `deduplicated`, `settling` or
    /// `late_firing`) instead of opening one.
    deduplicated: bool,
    action: IntakeAction,
    /// `null` for a refused alert whose name could not be read.
    alert_name: Option<String>,
    fingerprint: Option<String>,
    status: Option<AlertStatus>,
    /// The earlier incident of the same alert, when the problem came back.
    #[serde(skip_serializing_if = "Option::is_none")]
    recurrence_of: Option<i64>,
    /// Why the alert was refused, or why no playbook took it.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

type Accepted = (StatusCode, Json<IngestResponse>);

/// What the answer names of one alert.
struct Named {
    alert_name: Option<String>,
    fingerprint: Option<String>,
    status: Option<AlertStatus>,
}

impl Named {
    fn of(entry: &Result<Alert, RefusedAlert>) -> Self {
        match entry {
            Ok(alert) => Self {
                alert_name: Some(alert.name.as_str().to_owned()),
                fingerprint: Some(alert.fingerprint.as_str().to_owned()),
                status: Some(alert.status),
            },
            Err(refused) => Self {
                alert_name: refused.name.clone(),
                fingerprint: None,
                status: None,
            },
        }
    }
}

/// Accepts alerts in any supported shape.
///
/// 202 means the delivery is committed and its WAL fsynced: on disk. Alertmanager webhook v4 (`alerts[]`), the forwarder's and the generic IngestPayload
/// (`alert_name`), or a sweep finding (`check_name`). Repeats fold into the open incident. A
/// delivery whose alerts are partly unusable is stored whole: each bad alert is answered
/// `refused` with its reason; only a body with nothing acceptable gets 4xx.
#[utoipa::path(
    post, path = "/ingest", tag = "intake", operation_id = "ingest_alerts",
    params(IngestQuery),
    request_body(content = Object, content_type = "application/json", description = "An Alertmanager v4 body, an IngestPayload or a sweep finding"),
    responses(
        (status = 202, body = IngestResponse, description = "One entry per alert, with its incident and run"),
        (status = 400, body = ErrorBody, description = "An unknown `source`, an unknown query parameter, or a body that is not JSON"),
        (status = 413, body = ErrorBody, description = "The body is larger than `http.max_body_bytes`"),
        (status = 415, body = ErrorBody, description = "The body is not declared as JSON"),
        (status = 422, body = ErrorBody, description = "JSON in no supported shape, or with no usable alert; nothing is stored"),
        (status = 503, body = ErrorBody, description = "Intake's queue is full, runbookd is stopping, or the database cannot take the write: nothing was stored (or, when the disk did not confirm its fsync, it was written: a retry counts as a repeat); retry after `Retry-After` seconds"),
    ),
    security(("bearer" = [])),
    description = "Roles: ingest, admin (or anonymous when `http.allow_anonymous_ingest` is set).",
)]
pub async fn ingest(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    query: Result<ApiQuery<IngestQuery>, AppError>,
    body: Result<JsonBody, AppError>,
) -> Result<Accepted, AppError> {
    let declared = query.and_then(|ApiQuery(q)| {
        q.source
            .map(|name| intake::declared_source(&name))
            .transpose()
            .map_err(AppError::from)
    });
    accept(&state, &caller, declared, body).await
}

/// Accepts an Alertmanager webhook (version 4) body.
#[utoipa::path(
    post, path = "/webhook/alertmanager", tag = "intake", operation_id = "receive_alertmanager_webhook",
    request_body(content = Object, content_type = "application/json", description = "Alertmanager webhook v4"),
    responses(
        (status = 202, body = IngestResponse, description = "One entry per alert, with its incident and run"),
        (status = 400, body = ErrorBody, description = "A body that is not JSON"),
        (status = 413, body = ErrorBody, description = "The body is larger than `http.max_body_bytes`"),
        (status = 415, body = ErrorBody, description = "The body is not declared as JSON"),
        (status = 422, body = ErrorBody, description = "Not an Alertmanager v4 body, or with no usable alert; nothing is stored"),
        (status = 503, body = ErrorBody, description = "Intake's queue is full, runbookd is stopping, or the database cannot take the write: nothing was stored (or, when the disk did not confirm its fsync, it was written: a retry counts as a repeat); retry after `Retry-After` seconds"),
    ),
    security(("bearer" = [])),
    description = "Roles: ingest, admin.",
)]
pub async fn alertmanager_webhook(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    body: Result<JsonBody, AppError>,
) -> Result<Accepted, AppError> {
    let declared = intake::declared_source("alertmanager").map_err(AppError::from);
    accept(&state, &caller, declared.map(Some), body).await
}

/// Parses, stores and counts one delivery; every refusal is counted and logged too.
async fn accept(
    state: &AppState,
    caller: &Principal,
    declared: Result<Option<(Source, Format)>, AppError>,
    body: Result<JsonBody, AppError>,
) -> Result<Accepted, AppError> {
    let source_label = match &declared {
        Ok(Some((source, _))) => source.as_str().to_owned(),
        _ => "unknown".to_owned(),
    };
    let result = async {
        let declared = declared?;
        let JsonBody(body) = body?;
        // JSON is UTF-8; checked before parsing, so that the body's digest can find an earlier
        // parse of the same bytes.
        let text = String::from_utf8(body.into()).map_err(|e| {
            AppError::Intake(intake::IntakeError::InvalidJson(e.utf8_error().to_string()))
        })?;
        let raw_body = RawBody::new(text);
        let delivery = state.recent_parses.parse(&raw_body, declared)?;
        // What the answer names of each alert, read before the delivery goes to the writer.
        let source = delivery.source.clone();
        let named: Vec<Named> = delivery.entries.iter().map(Named::of).collect();
        // The writer owns the delivery from here: if the request times out or the client goes
        // away, the delivery is still committed (or rolled back) whole.
        let outcomes = state
            .intake
            .submit(Submission {
                delivery,
                raw_body,
                actor: caller.clone(),
                received_at: state.clock.now(),
            })
            .await?;
        Ok::<_, AppError>((source, named, outcomes))
    }
    .await;

    match result {
        Ok((source, named, outcomes)) => {
            let incidents: Vec<IngestedAlert> = named
                .into_iter()
                .zip(outcomes)
                .map(|(named, outcome)| {
                    metrics::counter!(
                        "runbookd_alerts_total",
                        "source" => source.as_str().to_owned(),
                        "outcome" => outcome.action.as_str(),
                    )
                    .increment(1);
                    IngestedAlert {
                        incident_id: outcome.incident_id,
                        run_id: outcome.run_id,
                        // Folded into an existing incident, open or just fixed.
                        deduplicated: matches!(
                            outcome.action,
                            IntakeAction::Deduplicated
                                | IntakeAction::Settling
                                | IntakeAction::LateFiring
                        ),
                        action: outcome.action,
                        alert_name: named.alert_name,
                        fingerprint: named.fingerprint,
                        status: named.status,
                        recurrence_of: outcome.recurrence_of,
                        reason: outcome.reason,
                    }
                })
                .collect();
            let refused = incidents
                .iter()
                .filter(|i| i.action == IntakeAction::Refused)
                .count();
            tracing::info!(
                caller = %caller.name,
                source = source.as_str(),
                alerts = incidents.len(),
                refused,
                "delivery accepted"
            );
            Ok((
                StatusCode::ACCEPTED,
                Json(IngestResponse {
                    status: "accepted",
                    count: incidents.len(),
                    incidents,
                }),
            ))
        }
        Err(error) => {
            let outcome = if error.status().is_client_error() {
                "rejected"
            } else {
                "failed"
            };
            metrics::counter!(
                "runbookd_alerts_total",
                "source" => source_label,
                "outcome" => outcome,
            )
            .increment(1);
            if error.status().is_client_error() {
                tracing::info!(caller = %caller.name, code = error.code(), reason = %error, "delivery refused");
            }
            Err(error)
        }
    }
}
