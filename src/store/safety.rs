//! Safety controls, persisted: the kill switch, dry-run, a cooldown per action and target, a
//! global budget of mutating actions per hour, and a circuit breaker on targets whose runs keep
//! failing. A mutating step asks [`Store::reserve_action`] first; the check and the booking are
//! one transaction on the single writer, so two runs cannot both squeeze under a limit. Every
//! answer, yes or no, is audited with its reason.
//!
//! What operators see, [`Store::safety_overview`], is computed by the same queries the check
//! uses (one owner per control), so the API, the CLI, the page and `/metrics` never disagree
//! with what the engine enforces. An admin can reset a target's breaker (it then counts only
//! failures after the reset) and switch global dry-run, each with a [`Reason`], audited.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::SqliteConnection;
use sqlx::types::Json;

use super::audit::{self, AuditDetail, ControlVerdict, NewAuditEvent, SettingChanged};
use super::runs::{Lease, RunError};
use super::{Store, StoreError};

/// The name the circuit breaker goes by in a blocked action's `control`.
pub const BREAKER_CONTROL: &str = "breaker";

/// How far back the circuit breaker counts failed runs.
pub const BREAKER_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// How far back the budget counts mutating actions.
const BUDGET_WINDOW: Duration = Duration::from_secs(3600);
/// A reason longer than this is refused: it is a note for the audit trail, not a document.
pub const MAX_REASON_CHARS: usize = 500;

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
/// Why an admin changed a control: required, one line, at most [`MAX_REASON_CHARS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidReason(String);

impl Reason {
    pub fn parse(text: &str) -> Result<Self, InvalidReason> {
        let text = text.trim();
        if text.is_empty() {
            return Err(InvalidReason(
                "a reason is required: say why, for the audit trail".to_owned(),
            ));
        }
        if text.chars().count() > MAX_REASON_CHARS {
            return Err(InvalidReason(format!(
                "the reason is longer than {MAX_REASON_CHARS} characters"
            )));
        }
        if text.chars().any(char::is_control) {
            return Err(InvalidReason(
                "the reason must be one line of text".to_owned(),
            ));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a breaker reset was refused.
#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    #[error("there is no target '{target}' ({})", known_targets(known))]
    UnknownTarget { target: String, known: Vec<String> },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn known_targets(known: &[String]) -> String {
    if known.is_empty() {
        "no playbook names a target".to_owned()
    } else {
        format!("known: {}", known.join(", "))
    }
}

impl From<sqlx::Error> for ResetError {
    fn from(error: sqlx::Error) -> Self {
        Self::Store(error.into())
    }
}

/// Every safety control as it stands: the one read model behind `GET /api/v1/safety`,
/// `runbookd safety`, the home page and the `/metrics` gauges.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SafetyOverview {
    /// When this was read.
    pub at: DateTime<Utc>,
    /// The kill switch.
    pub paused: SwitchSetting,
    /// Global dry-run: new runs are created dry while it is on.
    pub dry_run: SwitchSetting,
    pub hourly_budget: HourlyBudget,
    /// One per target that a playbook names or a run has used.
    pub breakers: Vec<BreakerState>,
    /// Cooldowns in force now.
    pub cooldowns: Vec<Cooldown>,
}

/// An operator switch and its last change.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SwitchSetting {
    pub on: bool,
    pub changed_by: Option<String>,
    pub changed_at: Option<DateTime<Utc>>,
    pub reason: Option<String>,
}

/// Mutating actions booked in the last hour, against the limit.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HourlyBudget {
    pub used: u32,
    pub limit: u32,
}

/// A target's circuit breaker.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BreakerState {
    pub target: String,
    /// Open: mutating steps on this target are blocked.
    pub open: bool,
    /// Failed or escalated live runs in the window, after the last reset.
    pub failures: u32,
    /// Failures that open it.
    pub limit: u32,
    pub window_hours: u64,
    /// When enough failures leave the window for it to close by itself (open only).
    pub closes_at: Option<DateTime<Utc>>,
    pub last_reset: Option<BreakerReset>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct BreakerReset {
    pub at: DateTime<Utc>,
    pub by: String,
    pub reason: String,
}

/// An action that may not run again on its target before `until`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Cooldown {
    pub action: String,
    pub target: String,
    pub until: DateTime<Utc>,
}

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

/// Whether `switch` is on, as `conn` sees it (inside a caller's transaction).
pub(super) async fn switch_on(
    conn: &mut SqliteConnection,
    switch: Switch,
) -> Result<bool, sqlx::Error> {
    let value: Option<Json<Value>> = sqlx::query_scalar(SWITCH_VALUE)
        .bind(switch.key())
        .fetch_optional(conn)
        .await?;
    Ok(value.is_some_and(|v| v.0 == json!(true)))
}

const SWITCH_VALUE: &str = "SELECT value FROM settings WHERE key = ?";

/// [`switch_on`] on the intake writer's synchronous connection.
pub(super) fn switch_on_sync(
    conn: &rusqlite::Connection,
    switch: Switch,
) -> rusqlite::Result<bool> {
    use rusqlite::OptionalExtension;
    let value: Option<String> = conn
        .prepare_cached(SWITCH_VALUE)?
        .query_row([switch.key()], |row| row.get(0))
        .optional()?;
    Ok(value.is_some_and(|v| serde_json::from_str::<Value>(&v).ok() == Some(json!(true))))
}

/// When each failure the breaker counts for `target` now finished, oldest first: escalated live
/// runs in the window, after the target's last reset. Refused runs (unusable input) and dry runs
/// are not failures of the target.
async fn breaker_failures(
    conn: &mut SqliteConnection,
    target: &str,
    now: DateTime<Utc>,
) -> Result<Vec<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT finished_at FROM runs
         WHERE target = ? AND state = 'escalated' AND dry_run = 0 AND finished_at > ?
           AND finished_at > COALESCE((SELECT MAX(at) FROM breaker_resets WHERE target = ?), '')
         ORDER BY finished_at",
    )
    .bind(target)
    .bind(ago(now, BREAKER_WINDOW))
    .bind(target)
    .fetch_all(conn)
    .await
}

/// Mutating actions booked in the budget's window.
async fn budget_used(conn: &mut SqliteConnection, now: DateTime<Utc>) -> Result<u32, sqlx::Error> {
    let used: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM actions WHERE at > ?")
        .bind(ago(now, BUDGET_WINDOW))
        .fetch_one(conn)
        .await?;
    Ok(u32::try_from(used).unwrap_or(u32::MAX))
}

/// A `settings` row as stored.
#[derive(sqlx::FromRow)]
struct SettingRow {
    value: Json<Value>,
    updated_by: String,
    updated_at: DateTime<Utc>,
    reason: Option<String>,
}

async fn switch_setting(
    conn: &mut SqliteConnection,
    switch: Switch,
) -> Result<SwitchSetting, sqlx::Error> {
    let row: Option<SettingRow> =
        sqlx::query_as("SELECT value, updated_by, updated_at, reason FROM settings WHERE key = ?")
            .bind(switch.key())
            .fetch_optional(conn)
            .await?;
    Ok(match row {
        Some(row) => SwitchSetting {
            on: row.value.0 == json!(true),
            changed_by: Some(row.updated_by),
            changed_at: Some(row.updated_at),
            reason: row.reason,
        },
        None => SwitchSetting {
            on: false,
            changed_by: None,
            changed_at: None,
            reason: None,
        },
    })
}

async fn breaker_state(
    conn: &mut SqliteConnection,
    target: String,
    limit: u32,
    now: DateTime<Utc>,
) -> Result<BreakerState, sqlx::Error> {
    let failures = breaker_failures(conn, &target, now).await?;
    let last_reset: Option<BreakerReset> = sqlx::query_as(
        "SELECT at, reset_by AS by, reason FROM breaker_resets WHERE target = ?
         ORDER BY at DESC, id DESC LIMIT 1",
    )
    .bind(&target)
    .fetch_optional(conn)
    .await?;
    let count = u32::try_from(failures.len()).unwrap_or(u32::MAX);
    let open = count >= limit;
    // It closes when all but limit - 1 of the counted failures have left the window.
    let closes_at = open
        .then(|| failures.get(failures.len() - limit as usize))
        .flatten()
        .map(|oldest| {
            *oldest + chrono::Duration::from_std(BREAKER_WINDOW).unwrap_or(chrono::Duration::MAX)
        });
    Ok(BreakerState {
        target,
        open,
        failures: count,
        limit,
        window_hours: BREAKER_WINDOW.as_secs() / 3600,
        closes_at,
        last_reset,
    })
}

impl Blocked {
    /// Which control said no, for readers of the audit trail (the notifier looks for `breaker`).
    pub fn control(&self) -> &'static str {
        match self {
            Self::Paused => "paused",
            Self::Cooldown { .. } => "cooldown",
            Self::Budget { .. } => "budget",
            Self::Breaker { .. } => BREAKER_CONTROL,
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
        self.write_switch(switch, on, by, None, now).await
    }

    /// Sets an operator switch for a stated reason, audited with who did it and why.
    pub async fn set_switch_because(
        &self,
        switch: Switch,
        on: bool,
        by: &str,
        reason: &Reason,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.write_switch(switch, on, by, Some(reason), now).await
    }

    async fn write_switch(
        &self,
        switch: Switch,
        on: bool,
        by: &str,
        reason: Option<&Reason>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "INSERT INTO settings (key, value, updated_by, updated_at, reason) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_by = excluded.updated_by,
                 updated_at = excluded.updated_at, reason = excluded.reason",
        )
        .bind(switch.key())
        .bind(Json(json!(on)))
        .bind(by)
        .bind(now)
        .bind(reason.map(Reason::as_str))
        .execute(&mut *tx)
        .await?;
        let detail = AuditDetail::SettingChanged(SettingChanged {
            setting: Some(switch.key().to_owned()),
            value: on,
            reason: reason.map(|r| r.as_str().to_owned()),
        });
        audit::append(&mut tx, now, NewAuditEvent::of(by, detail)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Resets `target`'s circuit breaker: from now on it counts only failures after this.
    /// `target` must be one a playbook names (`known`) or a run has used; audited with who and
    /// why, and how many failures it was counting.
    pub async fn reset_breaker(
        &self,
        target: &str,
        known: &[String],
        by: &str,
        reason: &Reason,
        now: DateTime<Utc>,
    ) -> Result<(), ResetError> {
        let mut tx = self.writer.begin().await?;
        let used: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM runs WHERE target = ?)")
            .bind(target)
            .fetch_one(&mut *tx)
            .await?;
        if !used && !known.iter().any(|k| k == target) {
            return Err(ResetError::UnknownTarget {
                target: target.escape_debug().to_string(),
                known: known.to_vec(),
            });
        }
        let counted = breaker_failures(&mut tx, target, now).await?.len();
        sqlx::query(
            "INSERT INTO breaker_resets (target, reason, reset_by, at) VALUES (?, ?, ?, ?)",
        )
        .bind(target)
        .bind(reason.as_str())
        .bind(by)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        audit::append(
            &mut tx,
            now,
            NewAuditEvent::of(
                by,
                AuditDetail::BreakerReset(audit::BreakerReset {
                    target: Some(target.to_owned()),
                    reason: Some(reason.as_str().to_owned()),
                    failures_before: i64::try_from(counted).ok(),
                }),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every safety control as it stands at `now`, read in one snapshot: the switches, the
    /// hourly budget, a breaker for each of `targets` and each target a run has used, and the
    /// cooldowns in force.
    pub async fn safety_overview(
        &self,
        targets: &[String],
        limits: Limits,
        now: DateTime<Utc>,
    ) -> Result<SafetyOverview, StoreError> {
        let mut tx = self.reader.begin().await?;
        let paused = switch_setting(&mut tx, Switch::Paused).await?;
        let dry_run = switch_setting(&mut tx, Switch::DryRun).await?;
        let used = budget_used(&mut tx, now).await?;
        let mut all: BTreeSet<String> = targets.iter().cloned().collect();
        all.extend(
            sqlx::query_scalar::<_, String>("SELECT DISTINCT target FROM runs")
                .fetch_all(&mut *tx)
                .await?,
        );
        let mut breakers = Vec::with_capacity(all.len());
        for target in all {
            breakers.push(breaker_state(&mut tx, target, limits.breaker_after, now).await?);
        }
        let cooldowns: Vec<Cooldown> = sqlx::query_as(
            "SELECT action, target, MAX(cooldown_until) AS until FROM actions
             WHERE cooldown_until > ? GROUP BY action, target ORDER BY until, action, target",
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(SafetyOverview {
            at: now,
            paused,
            dry_run,
            hourly_budget: HourlyBudget {
                used,
                limit: limits.hourly_budget,
            },
            breakers,
            cooldowns,
        })
    }

    pub async fn switch(&self, switch: Switch) -> Result<bool, StoreError> {
        let mut conn = self.reader.acquire().await?;
        Ok(switch_on(&mut conn, switch).await?)
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
        let paused = switch_on(&mut tx, Switch::Paused).await?;
        let last: Option<DateTime<Utc>> =
            // A run's own booking (a step it re-runs after a crash) does not cool it down.
            sqlx::query_scalar("SELECT MAX(at) FROM actions WHERE action = ? AND target = ? AND run_id != ?")
                .bind(action)
                .bind(target)
                .bind(lease.run_id)
                .fetch_one(&mut *tx)
                .await?;
        let used = budget_used(&mut tx, now).await?;
        let failures =
            u32::try_from(breaker_failures(&mut tx, target, now).await?.len()).unwrap_or(u32::MAX);

        let cooldown_until = last.map(|last| {
            (
                last,
                last + chrono::Duration::from_std(limits.cooldown).unwrap_or(chrono::Duration::MAX),
            )
        });
        let verdict = if paused {
            Err(Blocked::Paused)
        } else if failures >= limits.breaker_after {
            Err(Blocked::Breaker {
                target: target.to_owned(),
                failures,
                limit: limits.breaker_after,
            })
        } else if let Some((last, until)) = cooldown_until.filter(|(_, until)| *until > now) {
            Err(Blocked::Cooldown {
                action: action.to_owned(),
                target: target.to_owned(),
                last,
                until,
            })
        } else if used >= limits.hourly_budget {
            Err(Blocked::Budget {
                used,
                budget: limits.hourly_budget,
            })
        } else {
            Ok(())
        };
        if verdict.is_ok() {
            let cooldown_until = chrono::Duration::from_std(limits.cooldown)
                .ok()
                .and_then(|cooldown| now.checked_add_signed(cooldown))
                .unwrap_or(DateTime::<Utc>::MAX_UTC);
            sqlx::query(
                "INSERT INTO actions (action, target, run_id, at, cooldown_until)
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(action)
            .bind(target)
            .bind(lease.run_id)
            .bind(now)
            .bind(cooldown_until)
            .execute(&mut *tx)
            .await?;
        }
        let mut told = ControlVerdict {
            action: Some(action.to_owned()),
            target: Some(target.to_owned()),
            reason: Some("every safety control passed".to_owned()),
            control: None,
        };
        let detail = match &verdict {
            Ok(()) => AuditDetail::ActionAllowed(told),
            Err(blocked) => {
                told.reason = Some(blocked.to_string());
                told.control = Some(blocked.control().to_owned());
                AuditDetail::ActionBlocked(told)
            }
        };
        audit::append(
            &mut tx,
            now,
            NewAuditEvent {
                run_id: Some(lease.run_id),
                ..NewAuditEvent::of(&lease.owner, detail)
            },
        )
        .await?;
        tx.commit().await?;
        Ok(verdict)
    }
}
