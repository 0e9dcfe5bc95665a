//! Safety controls, persisted: the kill switch, dry-run, a cooldown per action and target, a
//! global budget of mutating actions per hour, and a circuit breaker on targets whose runs keep
//! failing. A mutating step asks [`Store::reserve_action`] first; the check and the booking are
//! one transaction on the single writer, so two runs cannot both squeeze under a limit. Every
//! answer, yes or no, is audited with its reason.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::types::Json;

use super::audit::{self, AuditAction, NewAuditEvent};
use super::runs::{Lease, RunError};
use super::{Store, StoreError};

/// An operator switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    /// New runs wait; running ones stop at their next step boundary.
    Paused,
    /// Runs record the commands they would run and execute only read-only steps.
    DryRun,
}

impl Switch {
    fn key(self) -> &'static str {
        match self {
            Self::Paused => "paused",
            Self::DryRun => "dry_run",
        }
    }
}

/// The limits a mutating action must pass.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The same action on the same target at most once per this long.
    pub cooldown: Duration,
    /// Mutating actions across all runs per rolling hour.
    pub hourly_budget: u32,
    /// Failed or escalated runs for the target in 24 h that trip the breaker.
    pub breaker_after: u32,
}

/// Why a mutating action may not happen now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Blocked {
    #[error("runbookd is paused")]
    Paused,
    #[error("{action} on {target} ran at {last}; the cooldown lasts until {until}")]
    Cooldown {
        action: String,
        target: String,
        last: DateTime<Utc>,
        until: DateTime<Utc>,
    },
    #[error("{used} mutating actions in the last hour reach the budget of {budget}")]
    Budget { used: u32, budget: u32 },
    #[error(
        "{failures} failed or escalated runs for {target} in 24 h tripped the circuit breaker (limit {limit})"
    )]
    Breaker {
        target: String,
        failures: u32,
        limit: u32,
    },
}

impl Blocked {
    /// Which control said no, for readers of the audit trail (the notifier looks for `breaker`).
    pub fn control(&self) -> &'static str {
        match self {
            Self::Paused => "paused",
            Self::Cooldown { .. } => "cooldown",
            Self::Budget { .. } => "budget",
            Self::Breaker { .. } => "breaker",
        }
    }
}

fn ago(now: DateTime<Utc>, span: Duration) -> DateTime<Utc> {
    now - chrono::Duration::from_std(span).unwrap_or(chrono::Duration::MAX)
}

impl Store {
    /// Sets an operator switch, audited with who did it.
    pub async fn set_switch(
        &self,
        switch: Switch,
        on: bool,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "INSERT INTO settings (key, value, updated_by, updated_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_by = excluded.updated_by,
                 updated_at = excluded.updated_at",
        )
        .bind(switch.key())
        .bind(Json(json!(on)))
        .bind(by)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        audit::append(
            &mut tx,
            now,
            NewAuditEvent {
                actor: by,
                action: AuditAction::SettingChanged,
                incident_id: None,
                run_id: None,
                detail: json!({"setting": switch.key(), "value": on}),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn switch(&self, switch: Switch) -> Result<bool, StoreError> {
        let value: Option<Json<Value>> =
            sqlx::query_scalar("SELECT value FROM settings WHERE key = ?")
                .bind(switch.key())
                .fetch_optional(&self.reader)
                .await?;
        Ok(value.is_some_and(|v| v.0 == json!(true)))
    }

    /// Checks every control for `action` on `target` and, if all pass, books it; either way the
    /// answer is audited on the run. A lost lease books nothing.
    pub async fn reserve_action(
        &self,
        lease: &Lease,
        action: &str,
        target: &str,
        limits: Limits,
        now: DateTime<Utc>,
    ) -> Result<Result<(), Blocked>, RunError> {
        let mut tx = self.writer.begin().await?;
        let holds: Option<i64> = sqlx::query_scalar("SELECT id FROM runs WHERE id = ? AND state = 'running' AND lease_owner = ? AND attempt = ?")
            .bind(lease.run_id)
            .bind(&lease.owner)
            .bind(lease.attempt)
            .fetch_optional(&mut *tx)
            .await?;
        if holds.is_none() {
            return Err(RunError::LeaseLost {
                run_id: lease.run_id,
                attempt: lease.attempt,
            });
        }
        let paused: Option<Json<Value>> =
            sqlx::query_scalar("SELECT value FROM settings WHERE key = 'paused'")
                .fetch_optional(&mut *tx)
                .await?;
        let last: Option<DateTime<Utc>> =
            // A run's own booking (a step it re-runs after a crash) does not cool it down.
            sqlx::query_scalar("SELECT MAX(at) FROM actions WHERE action = ? AND target = ? AND run_id != ?")
                .bind(action)
                .bind(target)
                .bind(lease.run_id)
                .fetch_one(&mut *tx)
                .await?;
        let used: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM actions WHERE at > ?")
            .bind(ago(now, Duration::from_secs(3600)))
            .fetch_one(&mut *tx)
            .await?;
        let failures: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM runs WHERE target = ? AND state = 'escalated' AND finished_at > ?",
        )
        .bind(target)
        .bind(ago(now, Duration::from_secs(24 * 3600)))
        .fetch_one(&mut *tx)
        .await?;

        let cooldown_until = last.map(|last| {
            (
                last,
                last + chrono::Duration::from_std(limits.cooldown).unwrap_or(chrono::Duration::MAX),
            )
        });
        let verdict = if paused.is_some_and(|v| v.0 == json!(true)) {
            Err(Blocked::Paused)
        } else if failures >= i64::from(limits.breaker_after) {
            Err(Blocked::Breaker {
                target: target.to_owned(),
                failures: failures as u32,
                limit: limits.breaker_after,
            })
        } else if let Some((last, until)) = cooldown_until.filter(|(_, until)| *until > now) {
            Err(Blocked::Cooldown {
                action: action.to_owned(),
                target: target.to_owned(),
                last,
                until,
            })
        } else if used >= i64::from(limits.hourly_budget) {
            Err(Blocked::Budget {
                used: used as u32,
                budget: limits.hourly_budget,
            })
        } else {
            Ok(())
        };
        if verdict.is_ok() {
            sqlx::query("INSERT INTO actions (action, target, run_id, at) VALUES (?, ?, ?, ?)")
                .bind(action)
                .bind(target)
                .bind(lease.run_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        let (audit_action, reason, control) = match &verdict {
            Ok(()) => (
                AuditAction::ActionAllowed,
                "every safety control passed".to_owned(),
                None,
            ),
            Err(blocked) => (
                AuditAction::ActionBlocked,
                blocked.to_string(),
                Some(blocked.control()),
            ),
        };
        audit::append(
            &mut tx,
            now,
            NewAuditEvent {
                actor: &lease.owner,
                action: audit_action,
                incident_id: None,
                run_id: Some(lease.run_id),
                detail: json!({"action": action, "target": target, "reason": reason, "control": control}),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(verdict)
    }
}
