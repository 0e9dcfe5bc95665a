//! `GET /api/v1/incidents` and `GET /api/v1/incidents/{id}`.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::{AppError, ErrorBody};
use super::extract::{ApiPath, ApiQuery};
use super::runs::RunWithSteps;
use crate::store::audit::AuditEvent;
use crate::store::incidents::{Incident, IncidentFilter, IncidentStatus, StoredAlert};
use crate::store::runs::{Run, RunState};

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;
/// The detail view shows this many of an incident's most recent alerts.
const DETAIL_ALERTS: u32 = 100;
/// And at most this many timeline events.
const DETAIL_EVENTS: u32 = 1000;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<IncidentStatus>,
    name: Option<String>,
    source: Option<String>,
    fingerprint: Option<String>,
    /// Cursor: the `next_before` of the previous page.
    before: Option<i64>,
    limit: Option<u32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IncidentPage {
    incidents: Vec<IncidentSummary>,
    /// Pass as `before` for the next page; `null` on the last page.
    next_before: Option<i64>,
}

/// Incidents, newest first, a page at a time.
#[utoipa::path(get, path = "/api/v1/incidents", tag = "incidents", operation_id = "list_incidents", params(ListQuery),
    responses((status = 200, body = IncidentPage, description = "A page of incidents, newest first, with the cursor of the next"),
        (status = 400, body = ErrorBody, description = "A bad filter, cursor or limit, or an unknown query parameter")),
    security(("bearer" = [])), description = "Roles: agent, approver, admin.")]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<IncidentPage>, AppError> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(AppError::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let filter = IncidentFilter {
        status: query.status,
        name: query.name,
        source: query.source,
        fingerprint: query.fingerprint,
        before: query.before,
        limit,
    };
    let incidents = state.store.list_incidents(&filter).await?;
    let next_before = (incidents.len() == limit as usize)
        .then(|| incidents.last().map(|i| i.id))
        .flatten();
    let incidents = IncidentSummary::load(&state, incidents).await?;
    Ok(Json(IncidentPage {
        incidents,
        next_before,
    }))
}

/// An incident in a list, with where its newest run stands.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IncidentSummary {
    #[serde(flatten)]
    pub incident: Incident,
    pub latest_run: Option<RunBrief>,
}

/// A run in one line: enough to tell whether it needs someone.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunBrief {
    pub id: i64,
    pub state: RunState,
    pub step: Option<String>,
    /// The cause the diagnosis found, once it has.
    pub cause: Option<String>,
}

impl From<Run> for RunBrief {
    fn from(run: Run) -> Self {
        Self {
            id: run.id,
            // The run carries its cause in its facts from the moment the diagnosis names it.
            cause: run
                .facts
                .0
                .get("cause")
                .and_then(|c| c.as_str())
                .map(str::to_owned),
            state: run.state,
            step: run.step,
        }
    }
}

impl IncidentSummary {
    /// `incidents` with their newest runs, in one query.
    pub async fn load(state: &AppState, incidents: Vec<Incident>) -> Result<Vec<Self>, AppError> {
        let ids: Vec<i64> = incidents.iter().map(|i| i.id).collect();
        let mut runs = state.store.latest_runs(&ids).await?;
        Ok(incidents
            .into_iter()
            .map(|incident| {
                let latest_run = runs.remove(&incident.id).map(RunBrief::from);
                Self {
                    incident,
                    latest_run,
                }
            })
            .collect())
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IncidentDetail {
    incident: Incident,
    /// The most recent alerts, newest first.
    alerts: Vec<StoredAlert>,
    /// Every run of the incident, oldest first, with its steps and approvals.
    runs: Vec<RunWithSteps>,
    /// The incident's most recent audit events, oldest first.
    timeline: Vec<AuditEvent>,
}

/// One incident with its alerts, runs (steps, approvals) and audit timeline.
#[utoipa::path(get, path = "/api/v1/incidents/{id}", tag = "incidents", operation_id = "show_incident", params(("id" = i64, Path, description = "Incident id")),
    responses((status = 200, body = IncidentDetail, description = "The incident with its alerts, runs and timeline"),
        (status = 400, body = ErrorBody, description = "The id is not a number"),
        (status = 404, body = ErrorBody, description = "There is no such incident")),
    security(("bearer" = [])), description = "Roles: agent, approver, admin.")]
pub async fn show(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<IncidentDetail>, AppError> {
    Ok(Json(IncidentDetail::load(&state, id).await?))
}

impl IncidentDetail {
    /// The incident with its alerts, runs and timeline; 404 when there is no such incident.
    pub async fn load(state: &AppState, id: i64) -> Result<Self, AppError> {
        let incident = state
            .store
            .incident(id)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("there is no incident {id}")))?;
        let alerts = state.store.incident_alerts(id, DETAIL_ALERTS).await?;
        let timeline = state.store.incident_timeline(id, DETAIL_EVENTS).await?;
        let mut runs = Vec::new();
        for run in state.store.runs_for_incident(id).await? {
            runs.push(RunWithSteps::load(state, run).await?);
        }
        Ok(IncidentDetail {
            incident,
            alerts,
            runs,
            timeline,
        })
    }
}
