//! The audit trail: append-only (triggers in the schema refuse UPDATE and DELETE), written in
//! the same transaction as the change it records, so the trail and the state never disagree.
//! Old events leave only through export then prune ([`super::retention`]).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{FromRow, SqliteConnection};

use super::{Store, StoreError};

/// Declares [`AuditAction`] with its string forms and [`AuditAction::ALL`] from one list, so a
/// new action is in `ALL` by construction (and every exhaustive match on it, such as the
/// sentence renderer's, must say what it means).
macro_rules! audit_actions {
    ($($(#[$meta:meta])* $variant:ident = $name:literal,)*) => {
        /// What happened. The string forms are the `action` column's values.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum AuditAction {
            $($(#[$meta])* $variant,)*
        }

        impl AuditAction {
            /// Every action, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                }
            }
        }
    };
}

audit_actions! {
    /// A firing alert opened a new incident.
    IncidentOpened = "incident.opened",
    /// A firing alert repeated an open incident.
    IncidentDeduplicated = "incident.deduplicated",
    /// The source sent `resolved` for an open incident.
    IncidentSourceResolved = "incident.source_resolved",
    /// A run verified its fix, which resolved the incident.
    IncidentRunResolved = "incident.run_resolved",
    /// The incident's sender never resolves and stopped repeating it for its resolve timeout.
    IncidentTimedOut = "incident.timed_out",
    /// A repeat within the settle window after a fix, or a late firing of an alert its sender
    /// already resolved (an HA peer): attached to the incident, nothing runs.
    IncidentLateRepeat = "incident.late_repeat",
    /// No playbook's trigger matches the incident's alert, with the reason.
    IncidentUnmatched = "incident.unmatched",
    /// An incident joined a run that was already active for its target.
    RunAttached = "run.attached",
    /// One alert of a delivery could not be accepted, with the reason.
    AlertRefused = "alert.refused",
    /// The source sent `resolved` and no incident was open for it.
    ResolveUnmatched = "alert.resolve_unmatched",
    /// A run of a playbook was created for an incident (or by hand).
    RunCreated = "run.created",
    /// A worker took a run's lease (first start, or resuming after a crash).
    RunLeased = "run.leased",
    /// A run moved to another step.
    RunAdvanced = "run.advanced",
    /// A run stopped to wait for an approval.
    ApprovalRequested = "approval.requested",
    /// A run ended: resolved, escalated or cancelled.
    RunFinished = "run.finished",
    /// A step's side effect is about to happen.
    StepStarted = "step.started",
    /// A step's side effect happened (or failed).
    StepFinished = "step.finished",
    /// A guarded step may not act yet: its guard, what it saw, until when it waits.
    StepWaiting = "step.waiting",
    /// Someone (or the clock) decided an approval.
    ApprovalDecided = "approval.decided",
    /// An operator switch changed (pause, dry-run).
    SettingChanged = "setting.changed",
    /// An admin reset a target's circuit breaker, with the reason.
    BreakerReset = "breaker.reset",
    /// A safety control let a mutating action through.
    ActionAllowed = "control.allowed",
    /// A safety control stopped a mutating action, with its reason.
    ActionBlocked = "control.blocked",
    /// Someone ran a playbook's read-only probes through the `diagnose` tool.
    ToolDiagnosed = "tool.diagnosed",
    /// One attempt to deliver a notification to a sink, with its outcome.
    NotifyAttempt = "notify.attempt",
    /// The notifier gave up on one event that kept failing to become a notification.
    NotifySkipped = "notify.skipped",
    /// A one-tap link was refused (bad signature, expired, used before), with the reason.
    LinkRefused = "link.refused",
    /// Old events left the trail through its one exit: exported to a file, then deleted. The
    /// detail has the count, the id and time range, the file and its SHA-256.
    AuditPruned = "audit.pruned",
}

impl AuditAction {
    /// The action a stored `action` string names; `None` for one this build does not know.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|a| a.as_str() == text)
    }
}

/// One row of the trail.
#[derive(Debug, Clone, Serialize, FromRow, utoipa::ToSchema)]
pub struct AuditEvent {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub incident_id: Option<i64>,
    pub run_id: Option<i64>,
    #[schema(value_type = Object)]
    pub detail: Json<Value>,
}

/// An event to append.
#[derive(Debug, Clone)]
pub struct NewAuditEvent<'a> {
    pub actor: &'a str,
    pub action: AuditAction,
    pub incident_id: Option<i64>,
    pub run_id: Option<i64>,
    /// A JSON object: the reason and the particulars.
    pub detail: Value,
}

/// The one insert of an event, on either connection.
const INSERT_EVENT: &str =
    "INSERT INTO audit_events (at, actor, action, incident_id, run_id, detail)
     VALUES (?, ?, ?, ?, ?, ?)";

/// Appends one event on `conn`, normally inside the transaction that made the change.
pub(crate) async fn append(
    conn: &mut SqliteConnection,
    at: DateTime<Utc>,
    event: NewAuditEvent<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(INSERT_EVENT)
        .bind(at)
        .bind(event.actor)
        .bind(event.action.as_str())
        .bind(event.incident_id)
        .bind(event.run_id)
        .bind(Json(event.detail))
        .execute(conn)
        .await?;
    Ok(())
}

/// [`append`] on the intake writer's synchronous connection.
pub(crate) fn append_sync(
    conn: &rusqlite::Connection,
    at: DateTime<Utc>,
    event: NewAuditEvent<'_>,
) -> rusqlite::Result<()> {
    conn.prepare_cached(INSERT_EVENT)?
        .execute(rusqlite::params![
            super::sql_time(at),
            event.actor,
            event.action.as_str(),
            event.incident_id,
            event.run_id,
            event.detail.to_string()
        ])?;
    Ok(())
}

impl Store {
    /// Records an event that goes with no other change: a read-only probe of the estate, a
    /// delivery attempt, a refused link.
    pub async fn record_event(
        &self,
        event: NewAuditEvent<'_>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut conn = self.writer.acquire().await?;
        append(&mut conn, at, event).await?;
        Ok(())
    }

    /// An incident's most recent `limit` events, its runs' included, oldest first.
    pub async fn incident_timeline(
        &self,
        incident_id: i64,
        limit: u32,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let events = sqlx::query_as::<_, AuditEvent>(
            "SELECT * FROM (
                 SELECT id, at, actor, action, incident_id, run_id, detail FROM audit_events
                 WHERE incident_id = ? OR run_id IN (SELECT id FROM runs WHERE incident_id = ?)
                 ORDER BY id DESC LIMIT ?
             ) ORDER BY id",
        )
        .bind(incident_id)
        .bind(incident_id)
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        Ok(events)
    }
}

impl Store {
    /// A run's events, oldest first, at most `limit`.
    pub async fn run_timeline(
        &self,
        run_id: i64,
        limit: u32,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let events = sqlx::query_as::<_, AuditEvent>(
            "SELECT id, at, actor, action, incident_id, run_id, detail FROM audit_events
             WHERE run_id = ? ORDER BY id LIMIT ?",
        )
        .bind(run_id)
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        Ok(events)
    }
}
