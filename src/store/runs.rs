//! Runs: every state change of a run, in one place.
//!
//! A run is worked on by whoever holds its lease. Taking a lease bumps the run's `attempt`, the
//! fencing token, and every later write of that worker says which attempt it holds: the
//! `UPDATE`/`INSERT` checks the state, the owner and the attempt in its `WHERE`, so a worker
//! that lost its lease (it stalled past the expiry and another worker took over, or the run was
//! cancelled) changes nothing and learns it from [`RunError::LeaseLost`]. Each change is audited
//! in the same transaction.
//!
//! ```text
//! pending ──acquire──► running ──finish──► resolved | escalated | refused | rehearsed
//!    ▲                  │   │
//!    └──(approval)── waiting_approval      cancel: any non-final state ──► cancelled
//! ```
//! `refused`: the run's input (the alert's labels) cannot be used; nothing was tried, and the
//! circuit breaker does not count it. `rehearsed`: a dry run reached its end; it names what it
//! would have run and never claims a fix.
//! A `running` run whose lease expired (its worker died) is acquired again as it stands: the
//! new worker resumes at the recorded step.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::FromRow;
use sqlx::types::Json;

use super::audit::{
    self, AuditDetail, NewAuditEvent, Reason, RunAdvanced, RunCreated, RunFinished, RunLeased,
    StepFinished, StepStarted, StepWaiting,
};
use super::safety::Switch;
use super::{Store, StoreError};
use crate::playbook::PlaybookVersion;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(rename_all = "snake_case")]
pub enum RunState {
    Pending,
    Running,
    WaitingApproval,
    Resolved,
    Escalated,
    Cancelled,
    /// Its input could not be used (bad labels): nothing was tried.
    Refused,
    /// A dry run that reached its end: it recorded what it would have run.
    Rehearsed,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::WaitingApproval => "waiting_approval",
            Self::Resolved => "resolved",
            Self::Escalated => "escalated",
            Self::Cancelled => "cancelled",
            Self::Refused => "refused",
            Self::Rehearsed => "rehearsed",
        }
    }

    /// Every state a run ends in.
    pub const FINAL: [Self; 5] = [
        Self::Resolved,
        Self::Escalated,
        Self::Cancelled,
        Self::Refused,
        Self::Rehearsed,
    ];

    pub fn is_final(self) -> bool {
        Self::FINAL.contains(&self)
    }
}

/// How a run ends, by its worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Nothing was remediated (no remediation applies): the incidents stay as they are.
    Resolved,
    /// A remediation ran and its verification passed: the incidents it covers are resolved.
    Verified,
    Escalated,
    /// The run's input is unusable; not a failure of the target (the breaker ignores it).
    Refused,
    /// A dry run's end: what it would have run, or that there was nothing to do.
    Rehearsed,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// This worker no longer holds the run: stop touching it.
    #[error("run {run_id}: lease attempt {attempt} is no longer held")]
    LeaseLost { run_id: i64, attempt: i64 },
    #[error("run {0} does not exist")]
    NotFound(i64),
    /// The playbook has no loaded text to pin (a caller built it without its file).
    #[error("playbook '{0}' has no loaded text for a run to pin")]
    Unpinned(String),
    #[error("run {run_id} is {state} and cannot be {verb}")]
    Final {
        run_id: i64,
        state: &'static str,
        verb: &'static str,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for RunError {
    fn from(error: sqlx::Error) -> Self {
        Self::Store(error.into())
    }
}

#[derive(Debug, Clone, Serialize, FromRow, utoipa::ToSchema)]
pub struct Run {
    pub id: i64,
    pub incident_id: Option<i64>,
    pub playbook: String,
    pub target: String,
    pub state: RunState,
    pub step: Option<String>,
    #[schema(value_type = Object)]
    pub facts: Json<Value>,
    pub dry_run: bool,
    pub attempt: i64,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub heartbeat_at: Option<DateTime<Utc>>,
    #[schema(value_type = Option<Object>)]
    pub outcome: Option<Json<Value>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl Run {
    /// Why its step waits for its guard, as the run shows it (`facts.waiting`).
    pub fn waiting(&self) -> Option<StepWaiting> {
        let waiting = self.facts.0.get("waiting")?;
        serde_json::from_value(waiting.clone()).ok()
    }
}

/// A worker's hold on a run: the fencing token every write presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub run_id: i64,
    pub attempt: i64,
    pub owner: String,
}

/// What creating a run found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    New(i64),
    /// A run for the same target and mode (dry or live) is already active: nothing new was
    /// started.
    AlreadyActive(i64),
}

/// A new run.
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    pub incident_id: Option<i64>,
    pub playbook: &'a str,
    /// The playbook's text as loaded now: the run is pinned to it.
    pub version: &'a PlaybookVersion,
    pub target: &'a str,
    /// The request asks for a dry run. The global dry-run switch makes every new run dry as
    /// well; either way the mode is fixed when the run is created.
    pub dry_run: bool,
    /// Who asked: a token name, or `engine` for an alert.
    pub actor: &'a str,
    /// What the run starts from (the alert's labels).
    pub facts: Value,
}

/// One attempt of one step, as recorded.
#[derive(Debug, Clone, Serialize, FromRow, utoipa::ToSchema)]
pub struct StepAttempt {
    pub id: i64,
    pub run_id: i64,
    pub step: String,
    pub run_attempt: i64,
    pub status: String,
    pub host: Option<String>,
    pub command: String,
    pub exit_status: Option<i64>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    pub error: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    /// Whether the playbook accepts `exit_status`; `None` without one (or recorded before
    /// runbookd kept it).
    pub exit_accepted: Option<bool>,
    /// The playbook's reason for an accepted non-zero exit ("nothing was mounted").
    pub exit_reason: Option<String>,
}

/// What a step did, to record when it finishes.
#[derive(Debug, Clone, Default)]
pub struct StepResult {
    pub exit_status: Option<i64>,
    /// The playbook's word on `exit_status`: accepted (with its reason) or not.
    pub exit: Option<ExitVerdict>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    pub error: Option<String>,
    pub duration: Duration,
}

/// Whether a step's exit status is one its playbook accepts, and why when it is not 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitVerdict {
    pub accepted: bool,
    pub reason: Option<String>,
}

/// `facts` that is not JSON (written outside runbookd) reads as a JSON string holding the text,
/// so the row still loads and the worker can escalate the run instead of failing to read it.
const RUN_COLUMNS: &str = "id, incident_id, playbook, target, state, step, \
    CASE WHEN json_valid(facts) THEN facts ELSE json_quote(facts) END AS facts, dry_run, attempt, \
    lease_owner, lease_expires_at, heartbeat_at, outcome, created_at, updated_at, finished_at";

fn expiry(now: DateTime<Utc>, lease_for: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(lease_for).unwrap_or(chrono::Duration::MAX)
}

impl Store {
    /// Creates a run; see [`insert_run`].
    pub async fn create_run(
        &self,
        run: NewRun<'_>,
        now: DateTime<Utc>,
    ) -> Result<Created, RunError> {
        let mut tx = self.writer.begin().await?;
        let created = insert_run(&mut tx, &run, now).await?;
        tx.commit().await?;
        Ok(created)
    }

    /// Takes the lease of the oldest run that needs a worker: a pending one, or a running one
    /// whose lease expired (its worker died). Bumps the fencing token. Takes nothing while
    /// runbookd is paused: the switch is read in the same transaction, so a pause committed
    /// before the lease holds every run from then on.
    pub async fn acquire_run(
        &self,
        owner: &str,
        lease_for: Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<(Lease, Run)>, RunError> {
        let mut tx = self.writer.begin().await?;
        if super::safety::switch_on(&mut tx, Switch::Paused).await? {
            return Ok(None);
        }
        let run: Option<Run> = sqlx::query_as(&format!(
            "UPDATE runs SET state = 'running', lease_owner = ?, lease_expires_at = ?,
                 heartbeat_at = ?, attempt = attempt + 1, updated_at = ?
             WHERE id = (SELECT id FROM runs
                         WHERE state = 'pending' OR (state = 'running' AND lease_expires_at < ?)
                         ORDER BY id LIMIT 1)
             RETURNING {RUN_COLUMNS}"
        ))
        .bind(owner)
        .bind(expiry(now, lease_for))
        .bind(now)
        .bind(now)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(run) = run else {
            return Ok(None);
        };
        audit::append(
            &mut tx,
            now,
            NewAuditEvent {
                incident_id: run.incident_id,
                run_id: Some(run.id),
                ..NewAuditEvent::of(
                    owner,
                    AuditDetail::RunLeased(RunLeased {
                        attempt: Some(run.attempt),
                        step: run.step.clone(),
                        resumed: run.attempt > 1,
                    }),
                )
            },
        )
        .await?;
        tx.commit().await?;
        let lease = Lease {
            run_id: run.id,
            attempt: run.attempt,
            owner: owner.to_owned(),
        };
        Ok(Some((lease, run)))
    }

    /// Extends the lease; fails if it was lost.
    pub async fn heartbeat(
        &self,
        lease: &Lease,
        lease_for: Duration,
        now: DateTime<Utc>,
    ) -> Result<(), RunError> {
        let updated = sqlx::query(
            "UPDATE runs SET lease_expires_at = ?, heartbeat_at = ?
             WHERE id = ? AND state = 'running' AND lease_owner = ? AND attempt = ?",
        )
        .bind(expiry(now, lease_for))
        .bind(now)
        .bind(lease.run_id)
        .bind(&lease.owner)
        .bind(lease.attempt)
        .execute(&self.writer)
        .await?;
        fenced(updated.rows_affected(), lease)
    }

    /// Moves the run to `step` with `facts`, and records why.
    pub async fn advance(
        &self,
        lease: &Lease,
        step: &str,
        facts: &Value,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), RunError> {
        let detail = RunAdvanced {
            step: Some(step.to_owned()),
            reason: Some(reason.to_owned()),
            ..RunAdvanced::default()
        };
        self.move_to_step(lease, step, facts, detail, now).await
    }

    /// Moves a diagnosed run to its first step with `facts`, and records the cause and the
    /// evidence that made it match as fields of their own (not JSON inside a reason).
    pub async fn diagnosed(
        &self,
        lease: &Lease,
        step: &str,
        facts: &Value,
        cause: &str,
        evidence: &Value,
        now: DateTime<Utc>,
    ) -> Result<(), RunError> {
        let detail = RunAdvanced {
            step: Some(step.to_owned()),
            reason: Some(format!("cause {cause}")),
            cause: Some(cause.to_owned()),
            evidence: Some(evidence.clone()),
            ..RunAdvanced::default()
        };
        self.move_to_step(lease, step, facts, detail, now).await
    }

    /// The fenced move behind [`Self::advance`] and [`Self::diagnosed`], audited as
    /// `run.advanced` with `detail`.
    async fn move_to_step(
        &self,
        lease: &Lease,
        step: &str,
        facts: &Value,
        detail: RunAdvanced,
        now: DateTime<Utc>,
    ) -> Result<(), RunError> {
        let query = sqlx::query(
            "UPDATE runs SET step = ?, facts = ?, updated_at = ?
             WHERE id = ? AND state = 'running' AND lease_owner = ? AND attempt = ?",
        )
        .bind(step.to_owned())
        .bind(Json(facts.clone()))
        .bind(now);
        fenced_write(self, lease, query, AuditDetail::RunAdvanced(detail), now).await
    }

    /// Shows why the run's step may not act yet, in the run itself (`facts.waiting`), and audits
    /// it as `step.waiting` when `news` says what it saw changed. Fenced, so a worker whose run
    /// was cancelled or taken over stops waiting.
    pub async fn step_waiting(
        &self,
        lease: &Lease,
        waiting: &StepWaiting,
        news: bool,
        now: DateTime<Utc>,
    ) -> Result<(), RunError> {
        let query = sqlx::query(
            "UPDATE runs SET facts = json_set(facts, '$.waiting', json(?)), updated_at = ?
             WHERE id = ? AND state = 'running' AND lease_owner = ? AND attempt = ?",
        )
        .bind(Json(waiting.clone()))
        .bind(now);
        if news {
            let detail = AuditDetail::StepWaiting(waiting.clone());
            return fenced_write(self, lease, query, detail, now).await;
        }
        let updated = query
            .bind(lease.run_id)
            .bind(&lease.owner)
            .bind(lease.attempt)
            .execute(&self.writer)
            .await?;
        fenced(updated.rows_affected(), lease)
    }

    /// Gives the run back, as it stands, for a later worker (runbookd was paused, or this
    /// process is shutting down).
    pub async fn release_run(
        &self,
        lease: &Lease,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), RunError> {
        let query = sqlx::query(
            "UPDATE runs SET state = 'pending', lease_owner = NULL, lease_expires_at = NULL,
                 updated_at = ?
             WHERE id = ? AND state = 'running' AND lease_owner = ? AND attempt = ?",
        )
        .bind(now);
        let detail = AuditDetail::RunAdvanced(RunAdvanced {
            state: Some(RunState::Pending),
            reason: Some(reason.to_owned()),
            ..RunAdvanced::default()
        });
        fenced_write(self, lease, query, detail, now).await
    }

    /// Ends the run as its worker decided. A run that verified its fix resolves every open
    /// incident it covers, in the same transaction.
    pub async fn finish_run(
        &self,
        lease: &Lease,
        ending: Ending,
        outcome: &Value,
        now: DateTime<Utc>,
    ) -> Result<(), RunError> {
        let state = match ending {
            Ending::Resolved | Ending::Verified => RunState::Resolved,
            Ending::Escalated => RunState::Escalated,
            Ending::Refused => RunState::Refused,
            Ending::Rehearsed => RunState::Rehearsed,
        };
        let mut tx = self.writer.begin().await?;
        let updated = sqlx::query(
            "UPDATE runs SET state = ?, outcome = ?, lease_owner = NULL, lease_expires_at = NULL,
                 finished_at = ?, updated_at = ?
             WHERE id = ? AND state = 'running' AND lease_owner = ? AND attempt = ?",
        )
        .bind(state)
        .bind(Json(outcome.clone()))
        .bind(now)
        .bind(now)
        .bind(lease.run_id)
        .bind(&lease.owner)
        .bind(lease.attempt)
        .execute(&mut *tx)
        .await?;
        fenced(updated.rows_affected(), lease)?;
        let detail = AuditDetail::RunFinished(RunFinished {
            state: Some(state),
            outcome: Some(outcome.clone()),
            reason: None,
        });
        audit::append(&mut tx, now, run_event(lease, detail)).await?;
        if ending == Ending::Verified {
            let resolved: Vec<i64> = sqlx::query_scalar(
                "UPDATE incidents SET status = 'resolved', resolved_by = 'run', resolved_by_run = ?,
                     resolved_at = ?
                 WHERE status = 'open'
                   AND id IN (SELECT incident_id FROM run_incidents WHERE run_id = ?)
                 RETURNING id",
            )
            .bind(lease.run_id)
            .bind(now)
            .bind(lease.run_id)
            .fetch_all(&mut *tx)
            .await?;
            for incident_id in resolved {
                audit::append(
                    &mut tx,
                    now,
                    NewAuditEvent {
                        incident_id: Some(incident_id),
                        run_id: Some(lease.run_id),
                        ..NewAuditEvent::of(
                            &lease.owner,
                            AuditDetail::IncidentRunResolved(Reason {
                                reason: Some("the run verified its fix".to_owned()),
                            }),
                        )
                    },
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Cancels a run that has not ended, whoever holds it: its worker finds out at its next
    /// write (the lease check fails) and stops at that step boundary.
    pub async fn cancel_run(
        &self,
        run_id: i64,
        actor: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), RunError> {
        let mut tx = self.writer.begin().await?;
        if !cancel_in(&mut tx, run_id, actor, reason, now).await? {
            return Err(self.why_not(run_id, "cancelled").await);
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records that a step's side effect is about to happen. Refused if the lease was lost, so a
    /// stale worker never starts a side effect.
    pub async fn step_started(
        &self,
        lease: &Lease,
        step: &str,
        host: Option<&str>,
        command: &str,
        now: DateTime<Utc>,
    ) -> Result<i64, RunError> {
        let mut tx = self.writer.begin().await?;
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO step_attempts (run_id, step, run_attempt, status, host, command, started_at)
             SELECT id, ?, attempt, 'started', ?, ?, ? FROM runs
             WHERE id = ? AND state = 'running' AND lease_owner = ? AND attempt = ?
             RETURNING id",
        )
        .bind(step)
        .bind(host)
        .bind(command)
        .bind(now)
        .bind(lease.run_id)
        .bind(&lease.owner)
        .bind(lease.attempt)
        .fetch_optional(&mut *tx)
        .await?;
        let id = id.ok_or(RunError::LeaseLost {
            run_id: lease.run_id,
            attempt: lease.attempt,
        })?;
        audit::append(
            &mut tx,
            now,
            run_event(
                lease,
                AuditDetail::StepStarted(StepStarted {
                    step: Some(step.to_owned()),
                    host: host.map(str::to_owned),
                    command: Some(command.to_owned()),
                    step_attempt: Some(id),
                }),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Records what the step did. Fenced like every worker write: a worker that lost its
    /// lease meanwhile writes nothing and learns it from [`RunError::LeaseLost`]; the attempt
    /// stays `started`, and the run's next holder rechecks whether it took effect.
    pub async fn step_finished(
        &self,
        lease: &Lease,
        step_attempt: i64,
        result: &StepResult,
        now: DateTime<Utc>,
    ) -> Result<(), RunError> {
        let mut tx = self.writer.begin().await?;
        let duration_ms = i64::try_from(result.duration.as_millis()).unwrap_or(i64::MAX);
        let exit_accepted = result.exit.as_ref().map(|e| e.accepted);
        let exit_reason = result.exit.as_ref().and_then(|e| e.reason.clone());
        let attempt: Option<(String, Option<String>, String)> = sqlx::query_as(
            "UPDATE step_attempts SET status = 'finished', exit_status = ?, stdout = ?, stderr = ?,
                 error = ?, finished_at = ?, duration_ms = ?, exit_accepted = ?, exit_reason = ?
             WHERE id = ? AND run_id = ? AND run_attempt = ? AND status = 'started'
               AND EXISTS (SELECT 1 FROM runs WHERE id = ? AND state = 'running'
                           AND lease_owner = ? AND attempt = ?)
             RETURNING step, host, command",
        )
        .bind(result.exit_status)
        .bind(&result.stdout)
        .bind(&result.stderr)
        .bind(&result.error)
        .bind(now)
        .bind(duration_ms)
        .bind(exit_accepted)
        .bind(&exit_reason)
        .bind(step_attempt)
        .bind(lease.run_id)
        .bind(lease.attempt)
        .bind(lease.run_id)
        .bind(&lease.owner)
        .bind(lease.attempt)
        .fetch_optional(&mut *tx)
        .await?;
        fenced(u64::from(attempt.is_some()), lease)?;
        let (step, host, command) = attempt.unwrap_or_default();
        // The step and its command ride along, so the event reads on its own.
        let detail = AuditDetail::StepFinished(StepFinished {
            step_attempt: Some(step_attempt),
            step: Some(step),
            host,
            command: Some(command),
            exit_status: result.exit_status,
            exit_accepted,
            exit_reason,
            duration_ms: Some(duration_ms),
            error: result.error.clone(),
        });
        audit::append(&mut tx, now, run_event(lease, detail)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The playbook version the run is pinned to; `None` for a run created before pinning.
    pub async fn pinned_playbook(
        &self,
        run_id: i64,
    ) -> Result<Option<PlaybookVersion>, StoreError> {
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT v.hash, v.text FROM runs r JOIN playbook_versions v ON v.hash = r.playbook_hash
             WHERE r.id = ?",
        )
        .bind(run_id)
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.map(|(hash, text)| PlaybookVersion {
            hash,
            text: text.into(),
        }))
    }

    pub async fn run(&self, run_id: i64) -> Result<Option<Run>, StoreError> {
        Ok(
            sqlx::query_as(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?"))
                .bind(run_id)
                .fetch_optional(&self.reader)
                .await?,
        )
    }

    /// Every run of the incident, oldest first.
    pub async fn runs_for_incident(&self, incident_id: i64) -> Result<Vec<Run>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {RUN_COLUMNS} FROM runs
             WHERE id IN (SELECT run_id FROM run_incidents WHERE incident_id = ?) ORDER BY id"
        ))
        .bind(incident_id)
        .fetch_all(&self.reader)
        .await?)
    }

    /// The most recent run of each of `incident_ids` that has one, keyed by incident.
    pub async fn latest_runs(
        &self,
        incident_ids: &[i64],
    ) -> Result<std::collections::HashMap<i64, Run>, StoreError> {
        if incident_ids.is_empty() {
            return Ok(Default::default());
        }
        let placeholders = vec!["?"; incident_ids.len()].join(", ");
        let sql = format!(
            "SELECT link.incident AS linked_incident, {RUN_COLUMNS} FROM runs
             JOIN (SELECT incident_id AS incident, MAX(run_id) AS latest FROM run_incidents
                   WHERE incident_id IN ({placeholders}) GROUP BY incident_id) AS link
               ON runs.id = link.latest"
        );
        let mut query = sqlx::query_as::<_, LinkedRun>(&sql);
        for id in incident_ids {
            query = query.bind(id);
        }
        Ok(query
            .fetch_all(&self.reader)
            .await?
            .into_iter()
            .map(|linked| (linked.linked_incident, linked.run))
            .collect())
    }

    /// The runs among `run_ids` that exist, keyed by id: one query for a page's worth.
    pub async fn runs(
        &self,
        run_ids: &[i64],
    ) -> Result<std::collections::HashMap<i64, Run>, StoreError> {
        if run_ids.is_empty() {
            return Ok(Default::default());
        }
        let placeholders = vec!["?"; run_ids.len()].join(", ");
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id IN ({placeholders})");
        let mut query = sqlx::query_as::<_, Run>(&sql);
        for id in run_ids {
            query = query.bind(id);
        }
        Ok(query
            .fetch_all(&self.reader)
            .await?
            .into_iter()
            .map(|run| (run.id, run))
            .collect())
    }

    /// The incident's most recent run, if any.
    pub async fn latest_run_for_incident(
        &self,
        incident_id: i64,
    ) -> Result<Option<i64>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT MAX(run_id) FROM run_incidents WHERE incident_id = ?")
                .bind(incident_id)
                .fetch_one(&self.reader)
                .await?,
        )
    }

    /// The run's step attempts, in order.
    pub async fn step_attempts(&self, run_id: i64) -> Result<Vec<StepAttempt>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, run_id, step, run_attempt, status, host, command, exit_status, stdout,
                    stderr, error, started_at, finished_at, duration_ms, exit_accepted, exit_reason
             FROM step_attempts WHERE run_id = ? ORDER BY id",
        )
        .bind(run_id)
        .fetch_all(&self.reader)
        .await?)
    }

    /// Why a transition that needed a live run found none.
    async fn why_not(&self, run_id: i64, verb: &'static str) -> RunError {
        match self.run(run_id).await {
            Ok(Some(run)) => RunError::Final {
                run_id,
                state: run.state.as_str(),
                verb,
            },
            Ok(None) => RunError::NotFound(run_id),
            Err(error) => RunError::Store(error),
        }
    }
}

/// A run with the incident it was looked up for.
#[derive(FromRow)]
struct LinkedRun {
    linked_incident: i64,
    #[sqlx(flatten)]
    run: Run,
}

/// The statements of [`insert_run`] and [`cancel_in`], shared with their twins on the intake
/// writer's synchronous connection.
const UPSERT_VERSION: &str =
    "INSERT INTO playbook_versions (hash, name, text, first_used_at) VALUES (?, ?, ?, ?)
     ON CONFLICT (hash) DO NOTHING";
const INSERT_RUN: &str =
    "INSERT INTO runs (incident_id, playbook, playbook_hash, target, state, facts, dry_run,
                       attempt, created_at, updated_at)
     VALUES (?, ?, ?, ?, 'pending', ?, ?, 0, ?, ?)
     ON CONFLICT (target, dry_run) WHERE state IN ('pending', 'running', 'waiting_approval')
     DO NOTHING
     RETURNING id";
const ACTIVE_RUN: &str = "SELECT id FROM runs WHERE target = ? AND dry_run = ?
     AND state IN ('pending', 'running', 'waiting_approval')";
const LINK_INCIDENT: &str =
    "INSERT INTO run_incidents (run_id, incident_id, linked_at) VALUES (?, ?, ?)
     ON CONFLICT DO NOTHING";
const CANCEL_RUN: &str =
    "UPDATE runs SET state = 'cancelled', lease_owner = NULL, lease_expires_at = NULL,
         outcome = ?, finished_at = ?, updated_at = ?
     WHERE id = ? AND state IN ('pending', 'running', 'waiting_approval')";
const CANCEL_APPROVALS: &str =
    "UPDATE approvals SET status = 'cancelled', decided_by = ?, decided_at = ?, comment = ?
     WHERE run_id = ? AND status = 'pending'";

/// The one audit event of a created run, on either connection.
fn run_created<'a>(run: &NewRun<'a>, id: i64, dry_run: bool) -> NewAuditEvent<'a> {
    NewAuditEvent {
        incident_id: run.incident_id,
        run_id: Some(id),
        ..NewAuditEvent::of(
            run.actor,
            AuditDetail::RunCreated(RunCreated {
                playbook: Some(run.playbook.to_owned()),
                playbook_hash: Some(run.version.hash.to_string()),
                target: Some(run.target.to_owned()),
                dry_run,
                dry_run_by_switch: dry_run && !run.dry_run,
            }),
        )
    }
}

/// The one audit event of a cancelled run, on either connection.
fn run_cancelled<'a>(run_id: i64, actor: &'a str, reason: &str) -> NewAuditEvent<'a> {
    NewAuditEvent {
        run_id: Some(run_id),
        ..NewAuditEvent::of(
            actor,
            AuditDetail::RunFinished(RunFinished {
                state: Some(RunState::Cancelled),
                outcome: None,
                reason: Some(reason.to_owned()),
            }),
        )
    }
}

/// Inserts a run pinned to `run.version` (stored under its hash), unless one is already active
/// for its target in the same mode, on `conn` (the caller's transaction). The run is dry if the
/// request asks for it or the global dry-run switch is on now: the switch is read in the
/// transaction that creates the run, and the run keeps that mode to its end. The run covers its
/// incident from the start.
pub(crate) async fn insert_run(
    conn: &mut sqlx::SqliteConnection,
    run: &NewRun<'_>,
    now: DateTime<Utc>,
) -> Result<Created, sqlx::Error> {
    sqlx::query(UPSERT_VERSION)
        .bind(&run.version.hash)
        .bind(run.playbook)
        .bind(&*run.version.text)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    let dry_run = run.dry_run || super::safety::switch_on(&mut *conn, Switch::DryRun).await?;
    let id: Option<i64> = sqlx::query_scalar(INSERT_RUN)
        .bind(run.incident_id)
        .bind(run.playbook)
        .bind(&run.version.hash)
        .bind(run.target)
        .bind(Json(&run.facts))
        .bind(dry_run)
        .bind(now)
        .bind(now)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(id) = id else {
        let active: i64 = sqlx::query_scalar(ACTIVE_RUN)
            .bind(run.target)
            .bind(dry_run)
            .fetch_one(&mut *conn)
            .await?;
        return Ok(Created::AlreadyActive(active));
    };
    audit::append(conn, now, run_created(run, id, dry_run)).await?;
    if let Some(incident_id) = run.incident_id {
        sqlx::query(LINK_INCIDENT)
            .bind(id)
            .bind(incident_id)
            .bind(now)
            .execute(&mut *conn)
            .await?;
    }
    Ok(Created::New(id))
}

/// [`insert_run`] on the intake writer's synchronous connection.
pub(crate) fn insert_run_sync(
    conn: &rusqlite::Connection,
    run: &NewRun<'_>,
    now: DateTime<Utc>,
) -> rusqlite::Result<Created> {
    use rusqlite::{OptionalExtension, params};
    let at = super::sql_time(now);
    conn.prepare_cached(UPSERT_VERSION)?.execute(params![
        run.version.hash,
        run.playbook,
        &*run.version.text,
        at
    ])?;
    let dry_run = run.dry_run || super::safety::switch_on_sync(conn, Switch::DryRun)?;
    let id: Option<i64> = conn
        .prepare_cached(INSERT_RUN)?
        .query_row(
            params![
                run.incident_id,
                run.playbook,
                run.version.hash,
                run.target,
                run.facts.to_string(),
                dry_run,
                at,
                at
            ],
            |row| row.get(0),
        )
        .optional()?;
    let Some(id) = id else {
        let active: i64 = conn
            .prepare_cached(ACTIVE_RUN)?
            .query_row(params![run.target, dry_run], |row| row.get(0))?;
        return Ok(Created::AlreadyActive(active));
    };
    audit::append_sync(conn, now, run_created(run, id, dry_run))?;
    if let Some(incident_id) = run.incident_id {
        link_incident(conn, id, incident_id, now)?;
    }
    Ok(Created::New(id))
}

/// Makes `incident_id` one of the incidents `run_id` covers (once), on the intake writer's
/// connection.
pub(crate) fn link_incident(
    conn: &rusqlite::Connection,
    run_id: i64,
    incident_id: i64,
    now: DateTime<Utc>,
) -> rusqlite::Result<bool> {
    let linked = conn
        .prepare_cached(LINK_INCIDENT)?
        .execute(rusqlite::params![run_id, incident_id, super::sql_time(now)])?;
    Ok(linked == 1)
}

/// The latest run that covers the incident, on the intake writer's connection.
pub(crate) fn latest_linked_run(
    conn: &rusqlite::Connection,
    incident_id: i64,
) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT MAX(run_id) FROM run_incidents WHERE incident_id = ?1")?
        .query_row([incident_id], |row| row.get(0))
}

/// An active run a resolve left with nothing to do: what intake needs to decide whether to
/// cancel it.
pub(crate) struct IdleRun {
    pub id: i64,
    pub facts: Value,
    pub step: Option<String>,
}

/// The active runs covering the incident none of whose incidents is still open: the runs a
/// resolve of this incident leaves with nothing to do.
pub(crate) fn runs_left_without_open_incidents(
    conn: &rusqlite::Connection,
    incident_id: i64,
) -> rusqlite::Result<Vec<IdleRun>> {
    conn.prepare_cached(
        "SELECT id, facts, step FROM runs
         WHERE state IN ('pending', 'running', 'waiting_approval')
           AND id IN (SELECT run_id FROM run_incidents WHERE incident_id = ?1)
           AND NOT EXISTS (SELECT 1 FROM run_incidents AS others
                           JOIN incidents ON incidents.id = others.incident_id
                           WHERE others.run_id = runs.id AND incidents.status = 'open')",
    )?
    .query_map([incident_id], |row| {
        let facts: String = row.get(1)?;
        Ok(IdleRun {
            id: row.get(0)?,
            facts: serde_json::from_str(&facts).unwrap_or(Value::Null),
            step: row.get(2)?,
        })
    })?
    .collect()
}

/// Cancels a run that has not ended, on `conn`, with its pending approvals. False when the
/// run had already ended (or does not exist).
pub(crate) async fn cancel_in(
    conn: &mut sqlx::SqliteConnection,
    run_id: i64,
    actor: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(CANCEL_RUN)
        .bind(Json(json!({"reason": reason})))
        .bind(now)
        .bind(now)
        .bind(run_id)
        .execute(&mut *conn)
        .await?;
    if updated.rows_affected() == 0 {
        return Ok(false);
    }
    // Nobody needs to decide for a run that stopped.
    sqlx::query(CANCEL_APPROVALS)
        .bind(actor)
        .bind(now)
        .bind(reason)
        .bind(run_id)
        .execute(&mut *conn)
        .await?;
    audit::append(conn, now, run_cancelled(run_id, actor, reason)).await?;
    Ok(true)
}

/// [`cancel_in`] on the intake writer's synchronous connection.
pub(crate) fn cancel_in_sync(
    conn: &rusqlite::Connection,
    run_id: i64,
    actor: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> rusqlite::Result<bool> {
    use rusqlite::params;
    let at = super::sql_time(now);
    let updated = conn.prepare_cached(CANCEL_RUN)?.execute(params![
        json!({"reason": reason}).to_string(),
        at,
        at,
        run_id
    ])?;
    if updated == 0 {
        return Ok(false);
    }
    // Nobody needs to decide for a run that stopped.
    conn.prepare_cached(CANCEL_APPROVALS)?
        .execute(params![actor, at, reason, run_id])?;
    audit::append_sync(conn, now, run_cancelled(run_id, actor, reason))?;
    Ok(true)
}

/// A worker's write to its run: `query` ends in `WHERE id = ? AND state = 'running' AND
/// lease_owner = ? AND attempt = ?`, which this binds from the lease; the audit event goes in the
/// same transaction. Nothing changes if the lease was lost.
async fn fenced_write<'q>(
    store: &Store,
    lease: &'q Lease,
    query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    detail: AuditDetail,
    now: DateTime<Utc>,
) -> Result<(), RunError> {
    let mut tx = store.writer.begin().await?;
    let updated = query
        .bind(lease.run_id)
        .bind(&lease.owner)
        .bind(lease.attempt)
        .execute(&mut *tx)
        .await?;
    fenced(updated.rows_affected(), lease)?;
    audit::append(&mut tx, now, run_event(lease, detail)).await?;
    tx.commit().await?;
    Ok(())
}

fn fenced(rows_affected: u64, lease: &Lease) -> Result<(), RunError> {
    if rows_affected == 0 {
        Err(RunError::LeaseLost {
            run_id: lease.run_id,
            attempt: lease.attempt,
        })
    } else {
        Ok(())
    }
}

fn run_event(lease: &Lease, detail: AuditDetail) -> NewAuditEvent<'_> {
    NewAuditEvent {
        run_id: Some(lease.run_id),
        ..NewAuditEvent::of(&lease.owner, detail)
    }
}

/// Parks a run until a human decides: it holds no lease while it waits. Fenced like every
/// worker write. Used by [`Store::request_approval`] in its transaction.
pub(super) async fn park(
    conn: &mut sqlx::SqliteConnection,
    lease: &Lease,
    step: &str,
    now: DateTime<Utc>,
) -> Result<(), RunError> {
    let updated = sqlx::query(
        "UPDATE runs SET state = 'waiting_approval', step = ?, lease_owner = NULL,
             lease_expires_at = NULL, updated_at = ?
         WHERE id = ? AND state = 'running' AND lease_owner = ? AND attempt = ?",
    )
    .bind(step)
    .bind(now)
    .bind(lease.run_id)
    .bind(&lease.owner)
    .bind(lease.attempt)
    .execute(conn)
    .await?;
    fenced(updated.rows_affected(), lease)
}

/// What a decided approval does to its waiting run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AfterDecision {
    /// Back to the workers, to run the approved step.
    Continue,
    /// Ended: a human (or the clock) said no.
    Escalate,
}

/// Moves a waiting run on after its approval was decided. Returns whether it was waiting.
pub(super) async fn after_decision(
    conn: &mut sqlx::SqliteConnection,
    run_id: i64,
    next: AfterDecision,
    outcome: &Value,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let updated = match next {
        AfterDecision::Continue => {
            sqlx::query("UPDATE runs SET state = 'pending', updated_at = ? WHERE id = ? AND state = 'waiting_approval'")
                .bind(now)
                .bind(run_id)
                .execute(conn)
                .await?
        }
        AfterDecision::Escalate => {
            sqlx::query(
                "UPDATE runs SET state = 'escalated', outcome = ?, finished_at = ?, updated_at = ?
                 WHERE id = ? AND state = 'waiting_approval'",
            )
            .bind(Json(outcome))
            .bind(now)
            .bind(now)
            .bind(run_id)
            .execute(conn)
            .await?
        }
    };
    Ok(updated.rows_affected() == 1)
}
