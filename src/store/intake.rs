//! The rows intake writes: deliveries as received, their alerts (and the ones refused), and
//! the incidents they open, repeat or resolve. These are the steps of one transaction that the
//! engine's intake service ([`crate::engine::intake`]) runs for a whole delivery, so a delivery,
//! its incidents and their runs are stored together or not at all.
//!
//! Incidents are keyed by (source, fingerprint): at most one is open per key (a partial unique
//! index), and the latest one of a key, open or not, decides what a new firing means.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::types::Json;
use sqlx::{FromRow, SqliteConnection};

use crate::intake::{Alert, RefusedAlert, Source};

/// What recording one alert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IntakeAction {
    /// A new incident.
    Opened,
    /// A new incident for an alert that had one before (linked as `recurrence_of`): the
    /// problem came back.
    Recurred,
    /// A repeat of an open incident.
    Deduplicated,
    /// A repeat within the settle window after a run fixed the incident: the sender has not
    /// caught up yet. Nothing runs.
    Settling,
    /// A firing from a sender that already resolved it, with the same `startsAt` (an
    /// Alertmanager HA peer catching up). Nothing reopens.
    LateFiring,
    Resolved,
    /// A resolve for which no incident was open: recorded, nothing changed.
    ResolveUnmatched,
    /// The alert could not be accepted; the rest of its delivery was.
    Refused,
}

impl IntakeAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Opened => "opened",
            Self::Recurred => "recurred",
            Self::Deduplicated => "deduplicated",
            Self::Settling => "settling",
            Self::LateFiring => "late_firing",
            Self::Resolved => "resolved",
            Self::ResolveUnmatched => "resolve_unmatched",
            Self::Refused => "refused",
        }
    }
}

/// How an incident stopped being open.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type, schemars::JsonSchema, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[sqlx(rename_all = "lowercase")]
pub enum ResolvedBy {
    /// The sender said `resolved`.
    Source,
    /// A run verified its fix.
    Run,
    /// The sender never resolves, and stopped repeating it for its resolve timeout.
    Timeout,
}

/// The latest incident of a (source, fingerprint), as intake weighs a new firing against it.
#[derive(Debug, Clone, FromRow)]
pub struct LatestIncident {
    pub id: i64,
    pub open: bool,
    pub resolved_by: Option<ResolvedBy>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub starts_at: Option<DateTime<Utc>>,
}

/// Records a delivery: who sent it, when, from which source, and its exact body. Identical
/// bodies (a sender repeating the same alert) are stored once in `raw_bodies` and referenced;
/// the `delivery_bodies` view gives every delivery its body back.
pub async fn insert_delivery(
    conn: &mut SqliteConnection,
    source: &Source,
    actor: &str,
    raw_body: &str,
    now: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    let sha256 = hex::encode(Sha256::digest(raw_body.as_bytes()));
    let inserted: Option<i64> = sqlx::query_scalar(
        "INSERT INTO raw_bodies (sha256, body, first_seen) VALUES (?, ?, ?)
         ON CONFLICT (sha256) DO NOTHING
         RETURNING id",
    )
    .bind(&sha256)
    .bind(raw_body)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    let body_id: i64 = match inserted {
        Some(id) => id,
        None => {
            sqlx::query_scalar("SELECT id FROM raw_bodies WHERE sha256 = ?")
                .bind(&sha256)
                .fetch_one(&mut *conn)
                .await?
        }
    };
    sqlx::query_scalar(
        "INSERT INTO deliveries (received_at, source, actor, body_id) VALUES (?, ?, ?, ?)
         RETURNING id",
    )
    .bind(now)
    .bind(source.as_str())
    .bind(actor)
    .bind(body_id)
    .fetch_one(conn)
    .await
}

/// Resolves the alert's open incident if its sender has been silent longer than `after`.
pub async fn time_out_incident(
    conn: &mut SqliteConnection,
    alert: &Alert,
    silent_since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE incidents SET status = 'resolved', resolved_by = 'timeout', resolved_at = ?
         WHERE source = ? AND fingerprint = ? AND status = 'open' AND last_seen < ?
         RETURNING id",
    )
    .bind(now)
    .bind(alert.source.as_str())
    .bind(alert.fingerprint.as_str())
    .bind(silent_since)
    .fetch_optional(conn)
    .await
}

/// Open incidents of `source` not seen since `silent_since`, resolved as timed out.
pub async fn time_out_incidents(
    conn: &mut SqliteConnection,
    source: &str,
    silent_since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE incidents SET status = 'resolved', resolved_by = 'timeout', resolved_at = ?
         WHERE source = ? AND status = 'open' AND last_seen < ?
         RETURNING id",
    )
    .bind(now)
    .bind(source)
    .bind(silent_since)
    .fetch_all(conn)
    .await
}

pub async fn latest_incident(
    conn: &mut SqliteConnection,
    alert: &Alert,
) -> Result<Option<LatestIncident>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, status = 'open' AS open, resolved_by, resolved_at, starts_at FROM incidents
         WHERE source = ? AND fingerprint = ? ORDER BY id DESC LIMIT 1",
    )
    .bind(alert.source.as_str())
    .bind(alert.fingerprint.as_str())
    .fetch_optional(conn)
    .await
}

/// A new open incident for the alert; `recurrence_of` is the earlier incident it repeats.
pub async fn open_incident(
    conn: &mut SqliteConnection,
    alert: &Alert,
    recurrence_of: Option<i64>,
    now: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO incidents
           (fingerprint, name, source, severity, labels, status, alert_count, first_seen,
            last_seen, starts_at, recurrence_of)
         VALUES (?, ?, ?, ?, ?, 'open', 1, ?, ?, ?, ?)
         RETURNING id",
    )
    .bind(alert.fingerprint.as_str())
    .bind(alert.name.as_str())
    .bind(alert.source.as_str())
    .bind(alert.severity.as_str())
    .bind(Json(&alert.labels))
    .bind(now)
    .bind(now)
    .bind(alert.starts_at)
    .bind(recurrence_of)
    .fetch_one(conn)
    .await
}

/// Counts one more notification of an incident, open or not.
pub async fn repeat_incident(
    conn: &mut SqliteConnection,
    incident_id: i64,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE incidents SET alert_count = alert_count + 1, last_seen = ? WHERE id = ?")
        .bind(now)
        .bind(incident_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// The sender resolved the alert: its open incident, if any, is resolved by the source.
pub async fn source_resolve(
    conn: &mut SqliteConnection,
    alert: &Alert,
    now: DateTime<Utc>,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE incidents SET status = 'resolved', resolved_by = 'source', resolved_at = ?,
             last_seen = ?
         WHERE source = ? AND fingerprint = ? AND status = 'open'
         RETURNING id",
    )
    .bind(now)
    .bind(now)
    .bind(alert.source.as_str())
    .bind(alert.fingerprint.as_str())
    .fetch_optional(conn)
    .await
}

/// Records which playbook took the incident, or why none did.
pub async fn set_routing(
    conn: &mut SqliteConnection,
    incident_id: i64,
    playbook: Option<&str>,
    unmatched_reason: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE incidents SET playbook = ?, unmatched_reason = ? WHERE id = ?")
        .bind(playbook)
        .bind(unmatched_reason)
        .bind(incident_id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn insert_alert(
    conn: &mut SqliteConnection,
    alert: &Alert,
    delivery_id: i64,
    incident_id: Option<i64>,
    now: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO alerts
           (delivery_id, incident_id, source, name, severity, status, fingerprint, labels,
            annotations, starts_at, ends_at, received_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         RETURNING id",
    )
    .bind(delivery_id)
    .bind(incident_id)
    .bind(alert.source.as_str())
    .bind(alert.name.as_str())
    .bind(alert.severity.as_str())
    .bind(alert.status.as_str())
    .bind(alert.fingerprint.as_str())
    .bind(Json(&alert.labels))
    .bind(Json(&alert.annotations))
    .bind(alert.starts_at)
    .bind(alert.ends_at)
    .bind(now)
    .fetch_one(conn)
    .await
}

pub async fn insert_refused(
    conn: &mut SqliteConnection,
    refused: &RefusedAlert,
    delivery_id: i64,
    now: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO refused_alerts (delivery_id, position, name, reason, received_at)
         VALUES (?, ?, ?, ?, ?)
         RETURNING id",
    )
    .bind(delivery_id)
    .bind(i64::try_from(refused.position).unwrap_or(i64::MAX))
    .bind(refused.name.as_deref())
    .bind(&refused.reason)
    .bind(now)
    .fetch_one(conn)
    .await
}
