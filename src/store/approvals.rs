//! Approvals: a run asks before a risky step and waits, holding no worker. A decision is made
//! once: approving or rejecting twice reports the first decision; an expired approval cannot be
//! approved. Expiry follows the step's `on_timeout` (reject, unless it says approve). Each
//! decision moves the run on in the same transaction: approved continues, rejected or expired
//! escalates.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::types::Json;
use sqlx::{FromRow, SqliteConnection};

use super::audit::{self, ApprovalDecided, AuditDetail, NewAuditEvent};
use super::runs::{self, AfterDecision, Lease, RunError};
use super::{Store, StoreError};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[sqlx(rename_all = "lowercase")]
pub enum ApprovalStatus {
    Pending,
    Approved,
    Rejected,
    Expired,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Approve,
    Reject,
}

/// What happens when nobody decides in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnTimeout {
    Reject,
    Approve,
}

impl OnTimeout {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reject => "reject",
            Self::Approve => "approve",
        }
    }
}

#[derive(Debug, Clone, Serialize, FromRow, utoipa::ToSchema)]
pub struct Approval {
    pub id: i64,
    pub run_id: i64,
    pub step: String,
    pub status: ApprovalStatus,
    pub command: String,
    pub risk: String,
    #[schema(value_type = Object)]
    pub evidence: Json<Value>,
    pub on_timeout: String,
    pub requested_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub comment: Option<String>,
    /// What it lets the run do, action by action; `None` for an approval asked before
    /// runbookd recorded them.
    #[schema(value_type = Option<Vec<ApprovalAction>>)]
    pub actions: Option<Json<Vec<ApprovalAction>>>,
}

/// One action an approval lets its run take: where, exactly what, and what it changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApprovalAction {
    pub step: String,
    /// The inventory host the command runs on; `None` for an API request.
    pub host: Option<String>,
    pub command: String,
    /// The playbook's words for what the step changes.
    pub changes: Option<String>,
}

/// What a run asks for.
#[derive(Debug, Clone)]
pub struct ApprovalRequest<'a> {
    pub step: &'a str,
    pub command: &'a str,
    pub risk: &'a str,
    pub evidence: Value,
    pub expires_in: Duration,
    pub on_timeout: OnTimeout,
    /// Each action it lets the run take (one, or a cause's whole sequence).
    pub actions: Vec<ApprovalAction>,
}

/// The result of a decision attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decided {
    /// This call decided it.
    Now(ApprovalStatus),
    /// It was decided before: the first decision stands.
    Already {
        status: ApprovalStatus,
        by: Option<String>,
        at: Option<DateTime<Utc>>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("approval {0} does not exist")]
    NotFound(i64),
    #[error("approval {0} expired at {1}; it can no longer be approved")]
    Expired(i64, DateTime<Utc>),
    /// The approval is pending but its run no longer waits for it (its state was changed
    /// outside runbookd): deciding would move nothing, so nothing is decided.
    #[error(
        "approval {approval} cannot be decided: run {run} is not waiting for approval (its state was changed outside runbookd)"
    )]
    RunNotWaiting { approval: i64, run: i64 },
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for ApprovalError {
    fn from(error: sqlx::Error) -> Self {
        Self::Store(error.into())
    }
}

const APPROVAL_COLUMNS: &str = "id, run_id, step, status, command, risk, evidence, on_timeout, \
    requested_at, expires_at, decided_by, decided_at, comment, actions";

impl Store {
    /// Parks the run and asks for approval of `request.step`, in one transaction. Fenced: a
    /// worker that lost its lease asks nothing.
    pub async fn request_approval(
        &self,
        lease: &Lease,
        request: ApprovalRequest<'_>,
        now: DateTime<Utc>,
    ) -> Result<i64, RunError> {
        let mut tx = self.writer.begin().await?;
        runs::park(&mut tx, lease, request.step, now).await?;
        let expires_at =
            now + chrono::Duration::from_std(request.expires_in).unwrap_or(chrono::Duration::MAX);
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO approvals (run_id, step, status, command, risk, evidence, on_timeout,
                                    requested_at, expires_at, actions)
             VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(lease.run_id)
        .bind(request.step)
        .bind(request.command)
        .bind(request.risk)
        .bind(Json(&request.evidence))
        .bind(request.on_timeout.as_str())
        .bind(now)
        .bind(expires_at)
        .bind(Json(&request.actions))
        .fetch_one(&mut *tx)
        .await?;
        audit::append(
            &mut tx,
            now,
            NewAuditEvent {
                run_id: Some(lease.run_id),
                ..NewAuditEvent::of(
                    &lease.owner,
                    AuditDetail::ApprovalRequested(audit::ApprovalRequested {
                        approval_id: Some(id),
                        step: Some(request.step.to_owned()),
                        command: Some(request.command.to_owned()),
                        risk: Some(request.risk.to_owned()),
                        expires_at: Some(expires_at),
                        on_timeout: Some(request.on_timeout),
                        actions: request.actions.clone(),
                        evidence: request.evidence.clone(),
                    }),
                )
            },
        )
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Decides a pending approval, once. `by` is the decider's token name.
    pub async fn decide(
        &self,
        id: i64,
        decision: Decision,
        by: &str,
        comment: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Decided, ApprovalError> {
        let mut tx = self.writer.begin().await?;
        let decided = decide(&mut tx, id, decision, by, comment, now).await?;
        tx.commit().await?;
        Ok(decided)
    }

    /// Applies `on_timeout` to every pending approval past its expiry. Returns how many.
    pub async fn expire_approvals(&self, now: DateTime<Utc>) -> Result<usize, ApprovalError> {
        let mut tx = self.writer.begin().await?;
        let due: Vec<(i64, i64, String, String, String)> = sqlx::query_as(
            "UPDATE approvals SET status = CASE on_timeout WHEN 'approve' THEN 'approved' ELSE 'expired' END,
                 decided_by = 'timeout', decided_at = ?
             WHERE status = 'pending' AND expires_at <= ?
             RETURNING id, run_id, on_timeout, step, command",
        )
        .bind(now)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        for (id, run_id, on_timeout, step, command) in &due {
            let next = if on_timeout == "approve" {
                AfterDecision::Continue
            } else {
                AfterDecision::Escalate
            };
            let outcome = json!({"reason": format!("approval {id} expired with nobody deciding; on_timeout is {on_timeout}")});
            runs::after_decision(&mut tx, *run_id, next, &outcome, now).await?;
            audit::append(
                &mut tx,
                now,
                NewAuditEvent {
                    run_id: Some(*run_id),
                    ..NewAuditEvent::of(
                        "timeout",
                        AuditDetail::ApprovalDecided(ApprovalDecided {
                            approval_id: Some(*id),
                            on_timeout: Some(if on_timeout == OnTimeout::Approve.as_str() {
                                OnTimeout::Approve
                            } else {
                                OnTimeout::Reject
                            }),
                            step: Some(step.clone()),
                            command: Some(command.clone()),
                            ..ApprovalDecided::default()
                        }),
                    )
                },
            )
            .await?;
        }
        tx.commit().await?;
        Ok(due.len())
    }

    pub async fn approval(&self, id: i64) -> Result<Option<Approval>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.reader)
        .await?)
    }

    /// A run's approvals, oldest first.
    pub async fn approvals_for_run(&self, run_id: i64) -> Result<Vec<Approval>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE run_id = ? ORDER BY id"
        ))
        .bind(run_id)
        .fetch_all(&self.reader)
        .await?)
    }

    /// Approvals, newest first, optionally only those with `status`.
    pub async fn approvals(
        &self,
        status: Option<ApprovalStatus>,
        limit: u32,
    ) -> Result<Vec<Approval>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE (?1 IS NULL OR status = ?1) ORDER BY id DESC LIMIT ?2"
        ))
        .bind(status)
        .bind(limit)
        .fetch_all(&self.reader)
        .await?)
    }
}

/// What a decision reads back from the approval it decided, for the run and the trail.
#[derive(FromRow)]
struct Decidable {
    run_id: i64,
    step: String,
    command: String,
    actions: Option<Json<Vec<ApprovalAction>>>,
}

/// Decides a pending approval, once, on `conn` (inside the caller's transaction): the one place
/// a decision is made. The run moves on and the decision is audited with it; a decided
/// approval reports its first decision; an expired one is [`ApprovalError::Expired`], and one
/// whose run is not waiting is [`ApprovalError::RunNotWaiting`]. The caller commits, so an
/// error anywhere leaves nothing behind.
pub(super) async fn decide(
    conn: &mut SqliteConnection,
    id: i64,
    decision: Decision,
    by: &str,
    comment: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Decided, ApprovalError> {
    let status = match decision {
        Decision::Approve => ApprovalStatus::Approved,
        Decision::Reject => ApprovalStatus::Rejected,
    };
    let decided: Option<Decidable> = sqlx::query_as(
        "UPDATE approvals SET status = ?, decided_by = ?, decided_at = ?, comment = ?
         WHERE id = ? AND status = 'pending' AND expires_at > ?
         RETURNING run_id, step, command, actions",
    )
    .bind(status)
    .bind(by)
    .bind(now)
    .bind(comment)
    .bind(id)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(decided) = decided else {
        let approval: Approval = sqlx::query_as(&format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(ApprovalError::NotFound(id))?;
        if approval.status == ApprovalStatus::Pending {
            return Err(ApprovalError::Expired(id, approval.expires_at));
        }
        return Ok(Decided::Already {
            status: approval.status,
            by: approval.decided_by,
            at: approval.decided_at,
        });
    };
    let next = match decision {
        Decision::Approve => AfterDecision::Continue,
        Decision::Reject => AfterDecision::Escalate,
    };
    let run_id = decided.run_id;
    let outcome = json!({"reason": format!("approval {id} rejected by {by}"), "comment": comment});
    if !runs::after_decision(conn, run_id, next, &outcome, now).await? {
        return Err(ApprovalError::RunNotWaiting {
            approval: id,
            run: run_id,
        });
    }
    audit::append(
        conn,
        now,
        NewAuditEvent {
            run_id: Some(run_id),
            ..NewAuditEvent::of(
                by,
                AuditDetail::ApprovalDecided(ApprovalDecided {
                    approval_id: Some(id),
                    decision: Some(status),
                    comment: comment.map(str::to_owned),
                    on_timeout: None,
                    step: Some(decided.step),
                    command: Some(decided.command),
                    actions: decided.actions.map(|a| a.0).unwrap_or_default(),
                }),
            )
        },
    )
    .await?;
    Ok(Decided::Now(status))
}
