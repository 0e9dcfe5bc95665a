//! The rows intake writes: deliveries as received, their alerts (and the ones refused), and
//! the incidents they open, repeat or resolve. These are the steps of one transaction that the
//! engine's intake service ([`crate::engine::intake`]) runs for a whole delivery, so a delivery,
//! its incidents and their runs are stored together or not at all.
//!
//! Incidents are keyed by (source, fingerprint): at most one is open per key (a partial unique
//! index), and the latest one of a key, open or not, decides what a new firing means.
//!
//! They run on the intake writer's synchronous connection (see [`crate::store`]), each a
//! cached prepared statement. A statement for one alert never uses `RETURNING`: SQLite runs it
//! as a trigger that fills an ephemeral table, which cost a quarter of the writer's time per
//! alert. An insert's id is `last_insert_rowid()`, and an update finds its row first.

use chrono::{DateTime, Utc};
use hashlink::LinkedHashMap;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::{parse_sql_time, sql_time};
use crate::intake::{Alert, RawBody, RefusedAlert, Source};

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

impl ResolvedBy {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "source" => Some(Self::Source),
            "run" => Some(Self::Run),
            "timeout" => Some(Self::Timeout),
            _ => None,
        }
    }
}

/// The latest incident of a (source, fingerprint), as intake weighs a new firing against it.
#[derive(Debug, Clone)]
pub struct LatestIncident {
    pub id: i64,
    pub open: bool,
    /// The latest run linked to it, which a repeat joins.
    pub linked_run: Option<i64>,
    pub resolved_by: Option<ResolvedBy>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub starts_at: Option<DateTime<Utc>>,
}

/// A time column that may be NULL.
fn time_column(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    Ok(row
        .get::<_, Option<String>>(index)?
        .as_deref()
        .and_then(parse_sql_time))
}

fn json_text(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("labels and annotations serialise")
}

/// How many distinct bodies [`RecentBodies`] remembers.
const RECENT_BODIES: usize = 4096;

/// The last distinct bodies intake stored, by the SHA-256 of their bytes, the first stored
/// forgotten first: how a repeat finds the body it shares with earlier deliveries. A unique index on the
/// digest did this for every body ever stored, and it measured as the costliest part of storing
/// a new alert (a random index page to look up and another to write, for every delivery).
///
/// A hint only: a remembered body is checked against its row before it is referenced, so a
/// body that retention removed, or whose insert rolled back, is stored again. So is a body
/// first stored more than [`RECENT_BODIES`] distinct bodies ago, or before runbookd restarted.
#[derive(Debug, Default)]
pub struct RecentBodies {
    ids: LinkedHashMap<[u8; 32], i64>,
}

impl RecentBodies {
    fn get(&self, digest: &[u8; 32]) -> Option<i64> {
        self.ids.get(digest).copied()
    }

    /// A body remembered already keeps its place (its new row replaces the old).
    fn remember(&mut self, digest: [u8; 32], id: i64) {
        self.ids.replace(digest, id);
        if self.ids.len() > RECENT_BODIES {
            self.ids.pop_front();
        }
    }
}

/// Records a delivery: who sent it, when, from which source, and its exact body. A body that
/// is one of the [`RecentBodies`] (a sender repeating the same alert, an HA pair sending the
/// same notification) is referenced, not stored again; the `delivery_bodies` view gives every
/// delivery its body back.
pub fn insert_delivery(
    conn: &Connection,
    bodies: &mut RecentBodies,
    source: &Source,
    actor: &str,
    raw_body: &RawBody,
    now: DateTime<Utc>,
) -> rusqlite::Result<i64> {
    let digest = *raw_body.sha256();
    let sha256 = hex::encode(digest);
    let now = sql_time(now);
    let known: Option<i64> = match bodies.get(&digest) {
        Some(id) => conn
            .prepare_cached("SELECT id FROM raw_bodies WHERE id = ?1 AND sha256 = ?2")?
            .query_row(params![id, sha256], |row| row.get(0))
            .optional()?,
        None => None,
    };
    let body_id = match known {
        Some(id) => id,
        None => {
            conn.prepare_cached(
                "INSERT INTO raw_bodies (sha256, body, first_seen) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![sha256, raw_body.as_str(), now])?;
            let id = conn.last_insert_rowid();
            bodies.remember(digest, id);
            id
        }
    };
    conn.prepare_cached(
        "INSERT INTO deliveries (received_at, source, actor, body_id) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![now, source.as_str(), actor, body_id])?;
    Ok(conn.last_insert_rowid())
}

/// The alert's open incident, by the open-incident index.
fn open_incident_id(conn: &Connection, alert: &Alert) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached(
        "SELECT id FROM incidents WHERE source = ?1 AND fingerprint = ?2 AND status = 'open'",
    )?
    .query_row(
        params![alert.source.as_str(), alert.fingerprint.as_str()],
        |row| row.get(0),
    )
    .optional()
}

/// Resolves the alert's open incident if its sender has been silent longer than `after`.
pub fn time_out_incident(
    conn: &Connection,
    alert: &Alert,
    silent_since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> rusqlite::Result<Option<i64>> {
    let Some(id) = open_incident_id(conn, alert)? else {
        return Ok(None);
    };
    let changed = conn
        .prepare_cached(
            "UPDATE incidents SET status = 'resolved', resolved_by = 'timeout', resolved_at = ?1
             WHERE id = ?2 AND last_seen < ?3",
        )?
        .execute(params![sql_time(now), id, sql_time(silent_since)])?;
    Ok((changed == 1).then_some(id))
}

/// Open incidents of `source` not seen since `silent_since`, resolved as timed out.
pub fn time_out_incidents(
    conn: &Connection,
    source: &str,
    silent_since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> rusqlite::Result<Vec<i64>> {
    conn.prepare_cached(
        "UPDATE incidents SET status = 'resolved', resolved_by = 'timeout', resolved_at = ?1
         WHERE source = ?2 AND status = 'open' AND last_seen < ?3
         RETURNING id",
    )?
    .query_map(
        params![sql_time(now), source, sql_time(silent_since)],
        |row| row.get(0),
    )?
    .collect()
}

/// The latest incident of the alert's (source, fingerprint): the open one if there is one
/// (a key has at most one open incident, and nothing newer can be opened beside it), with the
/// run it is linked to, in one lookup for the common repeat.
pub fn latest_incident(
    conn: &Connection,
    alert: &Alert,
) -> rusqlite::Result<Option<LatestIncident>> {
    conn.prepare_cached(
        "SELECT id, status = 'open', resolved_by, resolved_at, starts_at,
                (SELECT MAX(run_id) FROM run_incidents WHERE incident_id = incidents.id)
         FROM incidents
         WHERE source = ?1 AND fingerprint = ?2 ORDER BY id DESC LIMIT 1",
    )?
    .query_row(
        params![alert.source.as_str(), alert.fingerprint.as_str()],
        |row| {
            Ok(LatestIncident {
                id: row.get(0)?,
                open: row.get(1)?,
                resolved_by: row
                    .get::<_, Option<String>>(2)?
                    .as_deref()
                    .and_then(ResolvedBy::parse),
                resolved_at: time_column(row, 3)?,
                starts_at: time_column(row, 4)?,
                linked_run: row.get(5)?,
            })
        },
    )
    .optional()
}

/// A new open incident for the alert; `recurrence_of` is the earlier incident it repeats.
pub fn open_incident(
    conn: &Connection,
    alert: &Alert,
    recurrence_of: Option<i64>,
    now: DateTime<Utc>,
) -> rusqlite::Result<i64> {
    let now = sql_time(now);
    conn.prepare_cached(
        "INSERT INTO incidents
           (fingerprint, name, source, severity, labels, status, alert_count, first_seen,
            last_seen, starts_at, recurrence_of)
         VALUES (?1, ?2, ?3, ?4, ?5, 'open', 1, ?6, ?6, ?7, ?8)",
    )?
    .execute(params![
        alert.fingerprint.as_str(),
        alert.name.as_str(),
        alert.source.as_str(),
        alert.severity.as_str(),
        json_text(&alert.labels),
        now,
        alert.starts_at.map(sql_time),
        recurrence_of
    ])?;
    Ok(conn.last_insert_rowid())
}

/// Counts one more notification of an incident, open or not.
pub fn repeat_incident(
    conn: &Connection,
    incident_id: i64,
    now: DateTime<Utc>,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE incidents SET alert_count = alert_count + 1, last_seen = ?1 WHERE id = ?2",
    )?
    .execute(params![sql_time(now), incident_id])?;
    Ok(())
}

/// The sender resolved the alert: its open incident, if any, is resolved by the source.
pub fn source_resolve(
    conn: &Connection,
    alert: &Alert,
    now: DateTime<Utc>,
) -> rusqlite::Result<Option<i64>> {
    let open = open_incident_id(conn, alert)?;
    if let Some(id) = open {
        conn.prepare_cached(
            "UPDATE incidents SET status = 'resolved', resolved_by = 'source', resolved_at = ?1,
                 last_seen = ?1
             WHERE id = ?2",
        )?
        .execute(params![sql_time(now), id])?;
    }
    Ok(open)
}

/// Records which playbook took the incident, or why none did.
pub fn set_routing(
    conn: &Connection,
    incident_id: i64,
    playbook: Option<&str>,
    unmatched_reason: Option<&str>,
) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE incidents SET playbook = ?1, unmatched_reason = ?2 WHERE id = ?3")?
        .execute(params![playbook, unmatched_reason, incident_id])?;
    Ok(())
}

/// An alert's own columns, as its row stores them: written by [`insert_alert`] and compared
/// by [`latest_alert_is`].
struct AlertColumns<'a> {
    name: &'a str,
    severity: &'a str,
    status: &'a str,
    labels: String,
    annotations: String,
    starts_at: Option<String>,
    ends_at: Option<String>,
}

impl<'a> AlertColumns<'a> {
    fn of(alert: &'a Alert) -> Self {
        Self {
            name: alert.name.as_str(),
            severity: alert.severity.as_str(),
            status: alert.status.as_str(),
            labels: json_text(&alert.labels),
            annotations: json_text(&alert.annotations),
            starts_at: alert.starts_at.map(sql_time),
            ends_at: alert.ends_at.map(sql_time),
        }
    }
}

pub fn insert_alert(
    conn: &Connection,
    alert: &Alert,
    delivery_id: i64,
    incident_id: Option<i64>,
    now: DateTime<Utc>,
) -> rusqlite::Result<i64> {
    let columns = AlertColumns::of(alert);
    conn.prepare_cached(
        "INSERT INTO alerts
           (delivery_id, incident_id, source, name, severity, status, fingerprint, labels,
            annotations, starts_at, ends_at, received_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        delivery_id,
        incident_id,
        alert.source.as_str(),
        columns.name,
        columns.severity,
        columns.status,
        alert.fingerprint.as_str(),
        columns.labels,
        columns.annotations,
        columns.starts_at,
        columns.ends_at,
        sql_time(now)
    ])?;
    Ok(conn.last_insert_rowid())
}

/// Whether the incident's latest stored alert says exactly what `alert` says (its own
/// columns: name, severity, status, labels, annotations, start and end): a repeat that changes
/// nothing is counted into its incident without a copy of its own.
pub fn latest_alert_is(
    conn: &Connection,
    incident_id: i64,
    alert: &Alert,
) -> rusqlite::Result<bool> {
    let columns = AlertColumns::of(alert);
    conn.prepare_cached(
        "SELECT name = ?2 AND severity = ?3 AND status = ?4 AND labels = ?5
                AND annotations = ?6 AND starts_at IS ?7 AND ends_at IS ?8
         FROM alerts WHERE incident_id = ?1 ORDER BY id DESC LIMIT 1",
    )?
    .query_row(
        params![
            incident_id,
            columns.name,
            columns.severity,
            columns.status,
            columns.labels,
            columns.annotations,
            columns.starts_at,
            columns.ends_at,
        ],
        |row| row.get(0),
    )
    .optional()
    .map(|same| same.unwrap_or(false))
}

pub fn insert_refused(
    conn: &Connection,
    refused: &RefusedAlert,
    delivery_id: i64,
    now: DateTime<Utc>,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO refused_alerts (delivery_id, position, name, reason, received_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        delivery_id,
        i64::try_from(refused.position).unwrap_or(i64::MAX),
        refused.name.as_deref(),
        refused.reason,
        sql_time(now)
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn digest(n: usize) -> [u8; 32] {
        Sha256::digest(n.to_le_bytes()).into()
    }

    #[test]
    fn recent_bodies_forget_the_oldest_past_their_bound() {
        let mut bodies = RecentBodies::default();
        for n in 0..=RECENT_BODIES {
            bodies.remember(digest(n), n as i64);
        }
        assert_eq!(bodies.get(&digest(0)), None, "the oldest is forgotten");
        assert_eq!(bodies.get(&digest(1)), Some(1));
        assert_eq!(
            bodies.get(&digest(RECENT_BODIES)),
            Some(RECENT_BODIES as i64)
        );
        // A body stored again (its row had gone) is remembered by its new row, in its place.
        bodies.remember(digest(1), 99);
        assert_eq!(bodies.get(&digest(1)), Some(99));
        assert_eq!(bodies.ids.len(), RECENT_BODIES);
    }
}
