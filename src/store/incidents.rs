//! Reading incidents and the alerts folded into them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{FromRow, QueryBuilder, Sqlite};

use super::intake::ResolvedBy;
use super::{Store, StoreError};

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    sqlx::Type,
    schemars::JsonSchema,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[sqlx(rename_all = "lowercase")]
pub enum IncidentStatus {
    Open,
    Resolved,
}

#[derive(Debug, Clone, Serialize, FromRow, utoipa::ToSchema)]
pub struct Incident {
    pub id: i64,
    pub fingerprint: String,
    pub name: String,
    pub source: String,
    pub severity: String,
    #[schema(value_type = Object)]
    pub labels: Json<Value>,
    pub status: IncidentStatus,
    /// Firing notifications folded into this incident, the first included.
    pub alert_count: i64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    /// How it stopped being open: `source`, `run` (a verified fix) or `timeout`.
    pub resolved_by: Option<ResolvedBy>,
    /// The run whose verified fix resolved it.
    pub resolved_by_run: Option<i64>,
    /// The opening alert's `startsAt`, when its sender gives one.
    pub starts_at: Option<DateTime<Utc>>,
    /// The earlier incident of the same alert: the problem came back.
    pub recurrence_of: Option<i64>,
    /// The playbook whose trigger took it.
    pub playbook: Option<String>,
    /// Why no playbook took it, when none did.
    pub unmatched_reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, FromRow, utoipa::ToSchema)]
pub struct StoredAlert {
    pub id: i64,
    pub delivery_id: i64,
    pub source: String,
    pub name: String,
    pub severity: String,
    pub status: String,
    pub fingerprint: String,
    #[schema(value_type = Object)]
    pub labels: Json<Value>,
    #[schema(value_type = Object)]
    pub annotations: Json<Value>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub received_at: DateTime<Utc>,
}

/// Filters for listing incidents; pages go newest first, `before` is the last id seen.
#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    pub status: Option<IncidentStatus>,
    pub name: Option<String>,
    pub source: Option<String>,
    pub fingerprint: Option<String>,
    pub before: Option<i64>,
    pub limit: u32,
}

const INCIDENT_COLUMNS: &str = "id, fingerprint, name, source, severity, labels, status, \
    alert_count, first_seen, last_seen, resolved_at, resolved_by, resolved_by_run, starts_at, \
    recurrence_of, playbook, unmatched_reason";

impl Store {
    pub async fn list_incidents(
        &self,
        filter: &IncidentFilter,
    ) -> Result<Vec<Incident>, StoreError> {
        let mut query = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE 1 = 1"
        ));
        if let Some(status) = filter.status {
            query.push(" AND status = ").push_bind(status);
        }
        if let Some(name) = &filter.name {
            query.push(" AND name = ").push_bind(name);
        }
        if let Some(source) = &filter.source {
            query.push(" AND source = ").push_bind(source);
        }
        if let Some(fingerprint) = &filter.fingerprint {
            query.push(" AND fingerprint = ").push_bind(fingerprint);
        }
        if let Some(before) = filter.before {
            query.push(" AND id < ").push_bind(before);
        }
        query
            .push(" ORDER BY id DESC LIMIT ")
            .push_bind(filter.limit);
        let incidents = query
            .build_query_as::<Incident>()
            .fetch_all(&self.reader)
            .await?;
        Ok(incidents)
    }

    pub async fn incident(&self, id: i64) -> Result<Option<Incident>, StoreError> {
        let incident = sqlx::query_as::<_, Incident>(&format!(
            "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.reader)
        .await?;
        Ok(incident)
    }

    /// The incident's most recent alerts, newest first.
    pub async fn incident_alerts(
        &self,
        incident_id: i64,
        limit: u32,
    ) -> Result<Vec<StoredAlert>, StoreError> {
        let alerts = sqlx::query_as::<_, StoredAlert>(
            "SELECT id, delivery_id, source, name, severity, status, fingerprint, labels,
                    annotations, starts_at, ends_at, received_at
             FROM alerts WHERE incident_id = ? ORDER BY id DESC LIMIT ?",
        )
        .bind(incident_id)
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        Ok(alerts)
    }

    /// The incidents a run covers, in the order they joined it.
    pub async fn run_incidents(&self, run_id: i64) -> Result<Vec<Incident>, StoreError> {
        let columns = INCIDENT_COLUMNS
            .split(", ")
            .map(|c| format!("incidents.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        Ok(sqlx::query_as::<_, Incident>(&format!(
            "SELECT {columns} FROM incidents
             JOIN run_incidents ON run_incidents.incident_id = incidents.id
             WHERE run_incidents.run_id = ? ORDER BY run_incidents.linked_at, incidents.id"
        ))
        .bind(run_id)
        .fetch_all(&self.reader)
        .await?)
    }
}
