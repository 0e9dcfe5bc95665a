//! The audit trail: append-only (triggers in the schema refuse UPDATE and DELETE), written in
//! the same transaction as the change it records, so the trail and the state never disagree.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{FromRow, SqliteConnection};

use super::{Store, StoreError};

/// What happened. The string forms are the `action` column's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAction {
    /// A firing alert opened a new incident.
    IncidentOpened,
    /// A firing alert repeated an open incident.
    IncidentDeduplicated,
    /// The source sent `resolved` for an open incident.
    IncidentSourceResolved,
    /// The source sent `resolved` and no incident was open for it.
    ResolveUnmatched,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IncidentOpened => "incident.opened",
            Self::IncidentDeduplicated => "incident.deduplicated",
            Self::IncidentSourceResolved => "incident.source_resolved",
            Self::ResolveUnmatched => "alert.resolve_unmatched",
        }
    }
}

/// One row of the trail.
#[derive(Debug, Clone, Serialize, FromRow)]
pub struct AuditEvent {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub incident_id: Option<i64>,
    pub detail: Json<Value>,
}

/// Appends one event on `conn`, normally inside the transaction that made the change.
pub(super) async fn append(
    conn: &mut SqliteConnection,
    at: DateTime<Utc>,
    actor: &str,
    action: AuditAction,
    incident_id: Option<i64>,
    detail: Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_events (at, actor, action, incident_id, detail) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(at)
    .bind(actor)
    .bind(action.as_str())
    .bind(incident_id)
    .bind(Json(detail))
    .execute(conn)
    .await?;
    Ok(())
}

impl Store {
    /// An incident's events, oldest first, at most `limit`.
    pub async fn incident_timeline(
        &self,
        incident_id: i64,
        limit: u32,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let events = sqlx::query_as::<_, AuditEvent>(
            "SELECT id, at, actor, action, incident_id, detail FROM audit_events
             WHERE incident_id = ? ORDER BY id LIMIT ?",
        )
        .bind(incident_id)
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        Ok(events)
    }
}
