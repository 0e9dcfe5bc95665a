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
use crate::intake::{self, AlertStatus, Format, Source};
use crate::store::intake::IntakeAction;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
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
    /// The incident's run: started, attached to, or cancelled by this alert; `null` when no
    /// playbook matches (or no engine runs).
    run_id: Option<i64>,
    deduplicated: bool,
    action: IntakeAction,
    alert_name: String,
    fingerprint: String,
    status: AlertStatus,
}

type Accepted = (StatusCode, Json<IngestResponse>);

/// Accepts alerts in any supported shape.
///
/// Alertmanager webhook v4 (`alerts[]`), the forwarder's and the generic IngestPayload
/// (`alert_name`), or a sweep finding (`check_name`). Repeats fold into the open incident.
#[utoipa::path(
    post, path = "/ingest", tag = "intake",
    params(IngestQuery),
    request_body(content = Object, content_type = "application/json", description = "An Alertmanager v4 body, an IngestPayload or a sweep finding"),
    responses(
        (status = 202, body = IngestResponse, description = "One entry per alert, with its incident and run"),
        (status = 400, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody),
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
    post, path = "/webhook/alertmanager", tag = "intake",
    request_body(content = Object, content_type = "application/json", description = "Alertmanager webhook v4"),
    responses(
        (status = 202, body = IngestResponse),
        (status = 400, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody),
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
        let delivery = intake::parse(&body, declared)?;
        // serde_json has validated the bytes as UTF-8 JSON already.
        let raw = std::str::from_utf8(&body)
            .map_err(|e| AppError::Intake(intake::IntakeError::InvalidJson(e.to_string())))?;
        // Recorded on its own task: if the request times out or the client goes away, the
        // transaction still completes or rolls back as a whole, and is never cut mid-commit.
        let (store, recorded, raw, actor, now) = (
            state.store.clone(),
            delivery.clone(),
            raw.to_owned(),
            caller.clone(),
            state.clock.now(),
        );
        let outcomes =
            tokio::spawn(async move { store.record_delivery(&recorded, &raw, &actor, now).await })
                .await
                .map_err(|e| AppError::Internal(e.into()))??;
        // Runs: a new incident starts its playbook; a resolve cancels the run. The delivery is
        // stored either way; a run that could not be started is started by the next repeat.
        let mut run_ids = Vec::with_capacity(outcomes.len());
        for (alert, outcome) in delivery.alerts.iter().zip(&outcomes) {
            run_ids.push(dispatch(state, alert, outcome).await);
        }
        Ok::<_, AppError>((delivery, outcomes, run_ids))
    }
    .await;

    match result {
        Ok((delivery, outcomes, run_ids)) => {
            let incidents: Vec<IngestedAlert> = delivery
                .alerts
                .iter()
                .zip(&outcomes)
                .zip(run_ids)
                .map(|((alert, outcome), run_id)| {
                    metrics::counter!(
                        "runbookd_alerts_total",
                        "source" => delivery.source.as_str().to_owned(),
                        "outcome" => outcome.action.as_str(),
                    )
                    .increment(1);
                    IngestedAlert {
                        incident_id: outcome.incident_id,
                        run_id,
                        deduplicated: outcome.action == IntakeAction::Deduplicated,
                        action: outcome.action,
                        alert_name: alert.name.as_str().to_owned(),
                        fingerprint: alert.fingerprint.as_str().to_owned(),
                        status: alert.status,
                    }
                })
                .collect();
            tracing::info!(
                caller = %caller.name,
                source = delivery.source.as_str(),
                alerts = incidents.len(),
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

/// Starts, finds or cancels the incident's run. Failures are logged, not returned: the alert
/// is stored, and a repeat of it tries again.
async fn dispatch(
    state: &AppState,
    alert: &crate::intake::Alert,
    outcome: &crate::store::intake::IntakeOutcome,
) -> Option<i64> {
    let dispatcher = state.dispatcher.as_ref()?;
    let incident_id = outcome.incident_id?;
    let now = state.clock.now();
    let result = match outcome.action {
        IntakeAction::Opened => {
            dispatcher
                .start(&state.store, incident_id, alert, now)
                .await
        }
        IntakeAction::Deduplicated => {
            match state.store.latest_run_for_incident(incident_id).await {
                Ok(Some(run)) => Ok(Some(run)),
                Ok(None) => {
                    dispatcher
                        .start(&state.store, incident_id, alert, now)
                        .await
                }
                Err(error) => Err(error.into()),
            }
        }
        IntakeAction::Resolved => match dispatcher
            .source_resolved(&state.store, incident_id, now)
            .await
        {
            Ok(Some(cancelled)) => Ok(Some(cancelled)),
            Ok(None) => state
                .store
                .latest_run_for_incident(incident_id)
                .await
                .map_err(Into::into),
            Err(error) => Err(error),
        },
        IntakeAction::ResolveUnmatched => Ok(None),
    };
    result.unwrap_or_else(|error| {
        tracing::error!(incident_id, %error, "could not start or cancel the incident's run");
        None
    })
}
