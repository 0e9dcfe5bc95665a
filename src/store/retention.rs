//! Retention: old intake rows leave in bounded batches, each batch its own short transaction, so
//! intake never waits long behind the pruner; and the audit trail's one sanctioned exit.
//!
//! What may go, once older than its configured age:
//! - an alert whose incident is no longer open and covered by no active run, an alert that
//!   matched no incident, or an old repeat of any incident (every alert but its first: the
//!   incident keeps its count and last-seen time, and its first alert stays while it is open);
//! - a refused alert;
//! - a delivery none of whose alerts is kept, and with the last delivery that refers to it, its
//!   raw body.
//!
//! The audit trail is append-only: its old events leave only by [`export_audit`] (every column,
//! one JSON object per line, written and fsynced first) followed by [`prune_exported`], which
//! deletes exactly the exported ids under a permit and records `audit.pruned` with the counts,
//! the time range and the file's SHA-256 in the same transaction. A plain `DELETE FROM
//! audit_events` is refused by the schema's trigger.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;

use sha2::{Digest, Sha256};
use sqlx::{Connection, SqliteConnection};

use super::Store;
use super::audit::{self, AuditDetail, AuditPruned, NewAuditEvent, StoredAuditEvent};
use crate::clock::Clock;

/// Rows per pruning transaction.
const BATCH: i64 = 1_000;
/// Audit events per automatic export file.
const AUDIT_FILE_ROWS: i64 = 10_000;

/// How long rows are kept, parsed from `[retention]`. `None` keeps them forever.
#[derive(Debug, Clone, Default)]
pub struct Retention {
    pub alerts: Option<chrono::Duration>,
    pub deliveries: Option<chrono::Duration>,
    pub audit: Option<AuditRetention>,
}

/// Audit events older than `age` are exported into `dir`, then pruned.
#[derive(Debug, Clone)]
pub struct AuditRetention {
    pub age: chrono::Duration,
    pub dir: PathBuf,
}

impl Retention {
    pub fn is_off(&self) -> bool {
        self.alerts.is_none() && self.deliveries.is_none() && self.audit.is_none()
    }
}

/// What one pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub alerts: u64,
    pub refused_alerts: u64,
    pub deliveries: u64,
    pub raw_bodies: u64,
    pub audit_events: u64,
}

/// `age` before `now`, or the beginning of time for an age past the calendar.
fn cutoff(now: DateTime<Utc>, age: chrono::Duration) -> DateTime<Utc> {
    now.checked_sub_signed(age)
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

impl Store {
    /// One retention pass at `now`: every kind of row older than its age, batch by batch.
    pub async fn prune(&self, policy: &Retention, now: DateTime<Utc>) -> anyhow::Result<Pruned> {
        let mut pruned = Pruned::default();
        if let Some(age) = policy.alerts {
            let before = cutoff(now, age);
            pruned.alerts = self.prune_batches(PRUNE_ALERTS, before).await?;
            pruned.refused_alerts = self.prune_batches(PRUNE_REFUSED, before).await?;
        }
        if let Some(age) = policy.deliveries {
            let (deliveries, bodies) = self.prune_deliveries(cutoff(now, age)).await?;
            pruned.deliveries = deliveries;
            pruned.raw_bodies = bodies;
        }
        if let Some(audit) = &policy.audit {
            pruned.audit_events = self.prune_audit(audit, now).await?;
        }
        Ok(pruned)
    }

    /// Runs `sql` (a bounded DELETE taking the cutoff and the batch size) until it deletes
    /// nothing.
    async fn prune_batches(&self, sql: &str, before: DateTime<Utc>) -> anyhow::Result<u64> {
        let mut total = 0;
        loop {
            let mut conn = self.writer.acquire().await?;
            let deleted = sqlx::query(sql)
                .bind(before)
                .bind(BATCH)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            total += deleted;
            if deleted < BATCH as u64 {
                return Ok(total);
            }
        }
    }

    /// Deliveries that no kept alert refers to, and the raw bodies they were the last to use.
    async fn prune_deliveries(&self, before: DateTime<Utc>) -> anyhow::Result<(u64, u64)> {
        let (mut deliveries, mut bodies) = (0, 0);
        loop {
            let mut tx = self.writer.begin().await?;
            let body_ids: Vec<Option<i64>> = sqlx::query_scalar(
                "DELETE FROM deliveries WHERE id IN (
                     SELECT d.id FROM deliveries d
                     WHERE d.received_at < ?
                       AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.delivery_id = d.id)
                       AND NOT EXISTS (SELECT 1 FROM refused_alerts r WHERE r.delivery_id = d.id)
                     ORDER BY d.id LIMIT ?)
                 RETURNING body_id",
            )
            .bind(before)
            .bind(BATCH)
            .fetch_all(&mut *tx)
            .await?;
            let mut unique: Vec<i64> = body_ids.iter().flatten().copied().collect();
            unique.sort_unstable();
            unique.dedup();
            for body_id in unique {
                bodies += sqlx::query(
                    "DELETE FROM raw_bodies WHERE id = ?
                       AND NOT EXISTS (SELECT 1 FROM deliveries WHERE body_id = ?)",
                )
                .bind(body_id)
                .bind(body_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
            tx.commit().await?;
            deliveries += body_ids.len() as u64;
            if body_ids.len() < BATCH as usize {
                return Ok((deliveries, bodies));
            }
        }
    }

    /// Automatic audit retention: files of at most [`AUDIT_FILE_ROWS`] events in `dir`, each
    /// pruned once it is on disk. Only whole UTC days leave, so a pass every hour writes about
    /// one file a day, not one an hour.
    async fn prune_audit(
        &self,
        policy: &AuditRetention,
        now: DateTime<Utc>,
    ) -> anyhow::Result<u64> {
        use chrono::DurationRound;
        let before = cutoff(now, policy.age);
        let before = before
            .duration_trunc(chrono::Duration::days(1))
            .unwrap_or(before);
        std::fs::create_dir_all(&policy.dir).with_context(|| {
            format!(
                "cannot create the audit export directory {}",
                policy.dir.display()
            )
        })?;
        let mut total = 0;
        loop {
            let mut reader = self.reader.acquire().await?;
            let first: Option<i64> =
                sqlx::query_scalar("SELECT MIN(id) FROM audit_events WHERE at < ?")
                    .bind(before)
                    .fetch_one(&mut *reader)
                    .await?;
            let Some(first) = first else {
                return Ok(total);
            };
            // Named by its first id, which no later export can share. A file left by a pass
            // that never committed its prune holds events still in the table: replace it.
            let path = policy.dir.join(format!("audit-{first:012}.jsonl"));
            let export = export_audit(
                &mut reader,
                before,
                &path,
                Some(AUDIT_FILE_ROWS),
                Overwrite::Replace,
            )
            .await?;
            drop(reader);
            let Some(export) = export else {
                return Ok(total);
            };
            let mut writer = self.writer.acquire().await?;
            total += prune_exported(&mut writer, &export, "retention", now).await?;
            tracing::info!(
                file = %export.path.display(),
                events = export.events.len(),
                "exported and pruned old audit events"
            );
        }
    }
}

/// Alerts nothing needs any more (see the module docs), oldest first.
const PRUNE_ALERTS: &str = "DELETE FROM alerts WHERE id IN (
    SELECT a.id FROM alerts a LEFT JOIN incidents i ON i.id = a.incident_id
    WHERE a.received_at < ?
      AND (i.id IS NULL
           OR a.id > (SELECT MIN(f.id) FROM alerts f WHERE f.incident_id = a.incident_id)
           OR (i.status <> 'open' AND NOT EXISTS (
                   SELECT 1 FROM run_incidents ri JOIN runs r ON r.id = ri.run_id
                   WHERE ri.incident_id = i.id
                     AND r.state IN ('pending', 'running', 'waiting_approval'))))
    ORDER BY a.id LIMIT ?)";

const PRUNE_REFUSED: &str = "DELETE FROM refused_alerts WHERE id IN (
    SELECT id FROM refused_alerts WHERE received_at < ? ORDER BY id LIMIT ?)";

/// Whether an export may replace an existing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overwrite {
    /// An operator's file: never overwritten.
    Refuse,
    /// The pruner's own file for the same first id, from a pass that did not finish.
    Replace,
}

/// An export on disk, and what is in it.
#[derive(Debug, Clone)]
pub struct AuditExport {
    pub path: PathBuf,
    pub before: DateTime<Utc>,
    /// Every exported event's id and time, in id order.
    pub events: Vec<(i64, DateTime<Utc>)>,
    /// SHA-256 of the file, lower-case hex.
    pub sha256: String,
}

/// Writes the audit events older than `before` (the oldest `limit`, or all) to `out`, one JSON
/// object per line with every column, from one read snapshot; the file is created 0600 and
/// fsynced. Nothing to export: `None`, and no file.
pub async fn export_audit(
    conn: &mut SqliteConnection,
    before: DateTime<Utc>,
    out: &Path,
    limit: Option<i64>,
    overwrite: Overwrite,
) -> anyhow::Result<Option<AuditExport>> {
    let mut tx = conn.begin().await?;
    let mut rows = sqlx::query_as::<_, StoredAuditEvent>(
        "SELECT id, at, actor, action, incident_id, run_id, detail FROM audit_events
         WHERE at < ? ORDER BY id LIMIT ?",
    )
    .bind(before)
    .bind(limit.unwrap_or(-1))
    .fetch(&mut *tx);
    let mut file = None;
    let mut hash = Sha256::new();
    let mut events = Vec::new();
    while let Some(event) = rows.try_next().await? {
        let writer = match &mut file {
            Some(writer) => writer,
            None => file.insert(std::io::BufWriter::new(create_private(out, overwrite)?)),
        };
        let mut line = serde_json::to_vec(&event)?;
        line.push(b'\n');
        hash.update(&line);
        writer
            .write_all(&line)
            .with_context(|| format!("cannot write {}", out.display()))?;
        events.push((event.id, event.at));
    }
    drop(rows);
    tx.commit().await?;
    let Some(writer) = file else {
        return Ok(None);
    };
    let file = writer.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()
        .with_context(|| format!("cannot sync {}", out.display()))?;
    Ok(Some(AuditExport {
        path: out.to_owned(),
        before,
        events,
        sha256: hex::encode(hash.finalize()),
    }))
}

/// Creates `path` readable by its owner only.
fn create_private(path: &Path, overwrite: Overwrite) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(0o600);
    match overwrite {
        Overwrite::Refuse => options.create_new(true),
        Overwrite::Replace => options.create(true).truncate(true),
    };
    options.open(path).with_context(|| match overwrite {
        Overwrite::Refuse if path.exists() => {
            format!("{} already exists; it is never overwritten", path.display())
        }
        _ => format!("cannot create {}", path.display()),
    })
}

/// Deletes exactly the events of `export`, [`BATCH`] ids per transaction; each transaction
/// records `audit.pruned` (its id and time range, its count, the file and its SHA-256). Stops
/// with an error, deleting nothing more, if the table no longer holds what was exported (another
/// prune ran meanwhile). Returns how many events were deleted.
pub async fn prune_exported(
    conn: &mut SqliteConnection,
    export: &AuditExport,
    actor: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<u64> {
    let parts = export.events.chunks(BATCH as usize);
    let count = parts.len();
    let mut deleted = 0;
    for (part, chunk) in parts.enumerate() {
        let (Some(&(first_id, _)), Some(&(last_id, _))) = (chunk.first(), chunk.last()) else {
            continue;
        };
        let from = chunk
            .iter()
            .map(|(_, at)| *at)
            .min()
            .unwrap_or(export.before);
        let to = chunk
            .iter()
            .map(|(_, at)| *at)
            .max()
            .unwrap_or(export.before);
        let mut tx = conn.begin().await?;
        sqlx::query("INSERT INTO audit_prune_permit (id, first_id, last_id) VALUES (1, ?, ?)")
            .bind(first_id)
            .bind(last_id)
            .execute(&mut *tx)
            .await?;
        // Ids are never reused (AUTOINCREMENT), so the range holds no event younger than the
        // export: exactly the exported ones, unless someone pruned them meanwhile.
        let gone = sqlx::query("DELETE FROM audit_events WHERE id BETWEEN ? AND ? AND at < ?")
            .bind(first_id)
            .bind(last_id)
            .bind(export.before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        anyhow::ensure!(
            gone == chunk.len() as u64,
            "audit events {first_id}..={last_id} changed since the export ({gone} of {} found); nothing more was pruned",
            chunk.len()
        );
        sqlx::query("DELETE FROM audit_prune_permit")
            .execute(&mut *tx)
            .await?;
        audit::append(
            &mut tx,
            now,
            NewAuditEvent::of(
                actor,
                AuditDetail::AuditPruned(AuditPruned {
                    events: Some(gone),
                    first_id: Some(first_id),
                    last_id: Some(last_id),
                    from: Some(from),
                    to: Some(to),
                    before: Some(export.before),
                    file: Some(export.path.display().to_string()),
                    sha256: Some(export.sha256.clone()),
                    file_events: Some(export.events.len()),
                    part: Some(part + 1),
                    parts: Some(count),
                }),
            ),
        )
        .await?;
        tx.commit().await?;
        deleted += gone;
    }
    Ok(deleted)
}

/// Prunes every `every` on `clock` until `shutdown`: the application owns this beside the
/// worker. A failed pass is logged and retried on the next tick.
pub async fn prune_until(
    store: Store,
    policy: Arc<Retention>,
    clock: Arc<dyn Clock>,
    every: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = tick.tick() => match store.prune(&policy, clock.now()).await {
                Ok(pruned) if pruned != Pruned::default() => tracing::info!(?pruned, "retention pruned old rows"),
                Ok(_) => {}
                Err(error) => tracing::warn!(error = format!("{error:#}"), "retention could not prune"),
            },
        }
    }
}

/// `--before`: an RFC 3339 time, or an age such as `90d`, `36h` or `45m` before now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Before {
    At(DateTime<Utc>),
    Ago(chrono::Duration),
}

impl Before {
    pub fn at(self, now: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Self::At(at) => at,
            Self::Ago(age) => cutoff(now, age),
        }
    }
}

impl std::str::FromStr for Before {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Ok(at) = DateTime::parse_from_rfc3339(text) {
            return Ok(Self::At(at.to_utc()));
        }
        let unit = text.chars().last().unwrap_or(' ');
        let amount = text[..text.len() - unit.len_utf8().min(text.len())]
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 0);
        let age = match (amount, unit) {
            (Some(n), 'd') => chrono::Duration::days(n.into()),
            (Some(n), 'h') => chrono::Duration::hours(n.into()),
            (Some(n), 'm') => chrono::Duration::minutes(n.into()),
            _ => {
                return Err(format!(
                    "{text:?} is neither an RFC 3339 time (2026-01-31T00:00:00Z) nor an age such as 90d, 36h or 45m"
                ));
            }
        };
        Ok(Self::Ago(age))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn before_reads_a_time_or_an_age() {
        let now = DateTime::parse_from_rfc3339("2026-11-26T03:00:00Z")
            .unwrap()
            .to_utc();
        let at = |text: &str| text.parse::<Before>().map(|b| b.at(now));
        assert_eq!(
            at("2026-01-31T00:00:00Z").unwrap().to_rfc3339(),
            "2026-01-31T00:00:00+00:00"
        );
        assert_eq!(at("90d").unwrap(), now - chrono::Duration::days(90));
        assert_eq!(at("36h").unwrap(), now - chrono::Duration::hours(36));
        assert_eq!(at("45m").unwrap(), now - chrono::Duration::minutes(45));
        for bad in ["", "d", "0d", "-3d", "3w", "yesterday", "2026-01-31"] {
            assert!(bad.parse::<Before>().is_err(), "{bad:?} is refused");
        }
    }
}
