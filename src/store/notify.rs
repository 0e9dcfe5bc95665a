//! What notifications and one-tap links keep: the notifier's cursor over the audit trail, the
//! links already used, and when each target's breaker was last announced (the link-signing
//! key is not here: it lives in its own file, see [`crate::notify::links`]). Refused links and delivery attempts go to the audit trail from here.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::approvals::{self, ApprovalError, Decided, Decision};
use super::audit::AuditEvent;
use super::{Store, StoreError};

impl Store {
    /// The notifier's position in the audit trail. The first call places it at the newest
    /// event, so history from before notifications were on is not sent.
    pub async fn notify_cursor(&self) -> Result<i64, StoreError> {
        // `WHERE true` tells SQLite's parser that ON CONFLICT is not a join constraint.
        let mut conn = self.writer.acquire().await?;
        sqlx::query(
            "INSERT INTO notify_cursor (id, last_event_id)
             SELECT 1, COALESCE(MAX(id), 0) FROM audit_events WHERE true
             ON CONFLICT (id) DO NOTHING",
        )
        .execute(&mut *conn)
        .await?;
        Ok(
            sqlx::query_scalar("SELECT last_event_id FROM notify_cursor WHERE id = 1")
                .fetch_one(&mut *conn)
                .await?,
        )
    }

    /// Moves the cursor forward to `last_event_id`; never backwards (a late write from an
    /// older position changes nothing).
    pub async fn set_notify_cursor(&self, last_event_id: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE notify_cursor SET last_event_id = ?1 WHERE id = 1 AND last_event_id <= ?1",
        )
        .bind(last_event_id)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Forgets the cursor, so that when notifications are next on they start at the newest
    /// event instead of replaying what happened while they were off.
    pub async fn drop_notify_cursor(&self) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM notify_cursor")
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Events after `after`, oldest first, at most `limit`.
    pub async fn audit_events_after(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, at, actor, action, incident_id, run_id, detail FROM audit_events
             WHERE id > ? ORDER BY id LIMIT ?",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.reader)
        .await?)
    }

    /// Uses a one-tap link: records its nonce in `used_links` and decides the approval as
    /// `link:<sink>`, in one transaction on the single writer. `None` when the link was used
    /// before (however many requests race, only the first inserts the nonce). Any error rolls
    /// both back, so a link is never spent without its decision.
    pub async fn decide_by_link(
        &self,
        nonce: &str,
        approval_id: i64,
        decision: Decision,
        sink: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Decided>, ApprovalError> {
        let mut tx = self.writer.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO used_links (nonce, approval_id, decision, sink, used_at)
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (nonce) DO NOTHING",
        )
        .bind(nonce)
        .bind(approval_id)
        .bind(match decision {
            Decision::Approve => "approve",
            Decision::Reject => "reject",
        })
        .bind(sink)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Ok(None);
        }
        let by = format!("link:{sink}");
        let decided = approvals::decide(&mut tx, approval_id, decision, &by, None, now).await?;
        tx.commit().await?;
        Ok(Some(decided))
    }

    pub async fn link_used(&self, nonce: &str) -> Result<bool, StoreError> {
        let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM used_links WHERE nonce = ?")
            .bind(nonce)
            .fetch_optional(&self.reader)
            .await?;
        Ok(found.is_some())
    }

    /// Claims the right to announce `target`'s tripped breaker: true unless it was announced
    /// within `quiet` (the breaker's 24 h window), so one trip is one notification.
    pub async fn claim_breaker_notice(
        &self,
        target: &str,
        quiet: Duration,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let since = now - chrono::Duration::from_std(quiet).unwrap_or(chrono::Duration::MAX);
        let claimed: Option<String> = sqlx::query_scalar(
            "INSERT INTO breaker_notices (target, notified_at) VALUES (?, ?)
             ON CONFLICT (target) DO UPDATE SET notified_at = excluded.notified_at
                 WHERE breaker_notices.notified_at <= ?
             RETURNING target",
        )
        .bind(target)
        .bind(now)
        .bind(since)
        .fetch_optional(&self.writer)
        .await?;
        Ok(claimed.is_some())
    }
}
