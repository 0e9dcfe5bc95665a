//! Backup freshness: every PBS backup group's age against the playbook's staleness threshold,
//! read live from the PBS API. [`status`] is the one source of the `get_backup_status` tool,
//! `GET /api/v1/backups` (and so `runbookd backups`) and the `/backups` page.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::{AppError, ErrorBody};
use super::extract::ApiQuery;
use crate::engine::dispatch::Dispatcher;
use crate::exec::command::Name;
use crate::exec::http::ApiError;
use crate::store::backup_groups::GroupRun;

/// Which datastore, judged by which playbook.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BackupQuery {
    /// The PBS datastore; the configured one when omitted.
    pub datastore: Option<String>,
    /// The playbook whose staleness threshold applies; may be omitted when only one is loaded.
    pub playbook: Option<String>,
}

/// Every backup group of one datastore, against one threshold.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BackupStatus {
    pub datastore: String,
    /// The playbook whose settings gave the threshold and the decommissioned groups.
    pub playbook: String,
    /// A group at least this old is stale (the playbook's `stale_after_hours` setting).
    pub stale_after_hours: u64,
    /// Stale groups, then fresh ones, then decommissioned ones; oldest first within each.
    pub groups: Vec<GroupStatus>,
}

/// One backup group's freshness.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GroupStatus {
    /// `type/id`, e.g. `vm/451`.
    pub group: String,
    pub last_backup: Option<DateTime<Utc>>,
    /// Hours since the last backup, to a tenth.
    pub age_hours: f64,
    pub freshness: Freshness,
    /// At least `stale_after_hours` old (decommissioned groups included).
    pub stale: bool,
    pub backup_count: u64,
    /// The newest run whose alert named this group or whose diagnosis found it stale.
    pub last_run: Option<GroupRun>,
}

/// What a group's age means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Freshness {
    Fresh,
    Stale,
    /// Listed in the playbook's `decommissioned` setting: its guest is gone, its age is
    /// expected.
    Decommissioned,
}

impl Freshness {
    /// Where groups in this state are listed.
    fn rank(self) -> u8 {
        match self {
            Self::Stale => 0,
            Self::Fresh => 1,
            Self::Decommissioned => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fresh => "fresh",
            Self::Stale => "stale",
            Self::Decommissioned => "decommissioned",
        }
    }
}

fn engine(state: &AppState) -> Result<&Dispatcher, AppError> {
    state.dispatcher.as_deref().ok_or_else(|| {
        AppError::Conflict(
            "no engine runs here, so PBS is not known: configure the inventory and playbooks, \
             then restart"
                .to_owned(),
        )
    })
}

/// Every group's age now, read from PBS, against the playbook's threshold. `what` names the
/// caller in messages about bad arguments (`get_backup_status: argument 'datastore': ...`).
pub async fn status(
    state: &AppState,
    query: &BackupQuery,
    what: &str,
) -> Result<BackupStatus, AppError> {
    let dispatcher = engine(state)?;
    let datastore = match &query.datastore {
        Some(text) => Name::parse(text)
            .map_err(|e| AppError::BadRequest(format!("{what}: argument 'datastore': {e}")))?,
        None => dispatcher.estate.pbs_target.datastore.clone(),
    };
    let playbook = dispatcher.playbook(query.playbook.as_deref())?;
    let backups = &playbook.backups;
    let configured = datastore == dispatcher.estate.pbs_target.datastore;
    let groups = dispatcher
        .estate
        .pbs
        .groups(&datastore)
        .await
        .map_err(|e| match e {
            // PBS refused a datastore the caller named (one it does not have): the caller's
            // mistake, not an outage. (A refused token or a rate limit stays a 502.)
            ApiError::Status {
                status: 400 | 404, ..
            } if !configured => AppError::NotFound(format!(
                "{what}: PBS has no datastore {datastore} it can list: {e}"
            )),
            e => AppError::Upstream(format!(
                "PBS did not list the groups of datastore {datastore}: {e}; \
                 diagnose tells you why (PBS down, NFS mount missing, ...)"
            )),
        })?;
    let mut runs = state.store.runs_by_backup_group().await?;
    let now = state.clock.now().timestamp();
    let mut groups: Vec<GroupStatus> = groups
        .into_iter()
        .map(|g| {
            let group = format!("{}/{}", g.backup_type, g.backup_id);
            let age_hours = now.saturating_sub(g.last_backup) as f64 / 3600.0;
            let stale = age_hours >= f64::from(backups.stale_after_hours);
            let freshness = if backups.decommissioned.contains(&group) {
                Freshness::Decommissioned
            } else if stale {
                Freshness::Stale
            } else {
                Freshness::Fresh
            };
            GroupStatus {
                last_run: runs.remove(&group),
                group,
                last_backup: DateTime::from_timestamp(g.last_backup, 0),
                age_hours: (age_hours * 10.0).round() / 10.0,
                freshness,
                stale,
                backup_count: g.backup_count,
            }
        })
        .collect();
    // What needs a person first: stale groups, then fresh ones, then the decommissioned.
    groups.sort_by(|a, b| {
        a.freshness
            .rank()
            .cmp(&b.freshness.rank())
            .then(b.age_hours.total_cmp(&a.age_hours))
            .then_with(|| a.group.cmp(&b.group))
    });
    Ok(BackupStatus {
        datastore: datastore.to_string(),
        playbook: playbook.name.clone(),
        stale_after_hours: u64::from(backups.stale_after_hours),
        groups,
    })
}

/// Every backup group's age against the playbook's threshold.
#[utoipa::path(get, path = "/api/v1/backups", tag = "operations", operation_id = "list_backup_groups", params(BackupQuery),
    responses((status = 200, body = BackupStatus, description = "Every group of the datastore: stale, then fresh, then decommissioned, oldest first within each"),
        (status = 400, body = ErrorBody, description = "A datastore name that is not a name, an unknown query parameter"),
        (status = 401, body = ErrorBody, description = "No or unknown token"),
        (status = 403, body = ErrorBody, description = "A role that may not read"),
        (status = 404, body = ErrorBody, description = "PBS refused the datastore named in the query: it has none by that name (or cannot open it)"),
        (status = 409, body = ErrorBody, description = "No engine runs here (no inventory), so there is no PBS to ask"),
        (status = 422, body = ErrorBody, description = "An unknown playbook, or none named while several are loaded"),
        (status = 502, body = ErrorBody, description = "PBS did not list the configured datastore's groups, or did not answer"),
        (status = 503, body = ErrorBody, description = "The database is busy")),
    security(("bearer" = [])), description = "Each PBS backup group of the datastore, read live from the PBS API: its last backup, its age against the playbook's stale_after_hours, fresh, stale or decommissioned (listed in the playbook's settings), and the newest run that worked on it. Roles: agent, approver, admin.")]
pub async fn show(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<BackupQuery>,
) -> Result<Json<BackupStatus>, AppError> {
    Ok(Json(status(&state, &query, "backups").await?))
}
