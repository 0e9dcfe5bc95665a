//! What the CLI reads from the REST API. These are the client's own, lenient views of the
//! server's answers: unknown fields are ignored and most fields are optional, so a newer server
//! does not break an older CLI.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

/// `GET /api/v1/incidents`.
#[derive(Debug, Clone, Deserialize)]
pub struct IncidentPage {
    pub incidents: Vec<Incident>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Incident {
    pub id: i64,
    pub name: String,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub severity: String,
    pub status: String,
    #[serde(default)]
    pub labels: BTreeMap<String, Value>,
    #[serde(default)]
    pub alert_count: i64,
    pub first_seen: Option<DateTime<Utc>>,
    pub last_seen: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub resolved_by: Option<String>,
    #[serde(default)]
    pub resolved_by_run: Option<i64>,
    #[serde(default)]
    pub recurrence_of: Option<i64>,
    #[serde(default)]
    pub unmatched_reason: Option<String>,
    /// In lists only: where the incident's newest run stands.
    #[serde(default)]
    pub latest_run: Option<RunBrief>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RunBrief {
    pub id: i64,
    pub state: String,
}

/// `GET /api/v1/incidents/{id}`.
#[derive(Debug, Clone, Deserialize)]
pub struct IncidentDetail {
    pub incident: Incident,
    #[serde(default)]
    pub runs: Vec<RunWithSteps>,
    #[serde(default)]
    pub timeline: Vec<AuditEvent>,
}

/// A run with its step attempts and approvals, as both detail answers carry it.
#[derive(Debug, Clone, Deserialize)]
pub struct RunWithSteps {
    pub run: Run,
    #[serde(default)]
    pub steps: Vec<StepAttempt>,
    #[serde(default)]
    pub approvals: Vec<Approval>,
}

/// `GET /api/v1/runs/{id}`.
#[derive(Debug, Clone, Deserialize)]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: RunWithSteps,
    #[serde(default)]
    pub timeline: Vec<AuditEvent>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Run {
    pub id: i64,
    pub incident_id: Option<i64>,
    pub playbook: String,
    #[serde(default)]
    pub target: String,
    pub state: String,
    /// The step it is at (or waits on); `null` while diagnosing.
    pub step: Option<String>,
    /// The run's progress: labels, cause, evidence, facts, plan.
    #[serde(default)]
    pub facts: Value,
    #[serde(default)]
    pub dry_run: bool,
    /// How it ended: cause, evidence, and a reason when it did not resolve.
    pub outcome: Option<Value>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl Run {
    /// The diagnosed cause: from the outcome once finished, from the progress before.
    pub fn cause(&self) -> Option<&str> {
        self.outcome
            .as_ref()
            .and_then(|o| o["cause"].as_str())
            .or_else(|| self.facts["cause"].as_str())
    }

    /// The evidence that made the cause match.
    pub fn evidence(&self) -> Option<&serde_json::Map<String, Value>> {
        self.outcome
            .as_ref()
            .and_then(|o| o["evidence"].as_object())
            .filter(|e| !e.is_empty())
            .or_else(|| self.facts["evidence"].as_object())
            .filter(|e| !e.is_empty())
    }

    /// Why it ended the way it did, when it did not simply resolve.
    pub fn reason(&self) -> Option<&str> {
        self.outcome.as_ref().and_then(|o| o["reason"].as_str())
    }
}

/// One attempt of one step.
#[derive(Debug, Clone, Deserialize)]
pub struct StepAttempt {
    pub step: String,
    pub status: String,
    pub host: Option<String>,
    pub command: String,
    pub exit_status: Option<i64>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    pub error: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    /// Whether the playbook accepts `exit_status` (absent from an older server).
    #[serde(default)]
    pub exit_accepted: Option<bool>,
    /// The playbook's reason for an accepted non-zero exit.
    #[serde(default)]
    pub exit_reason: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Approval {
    pub id: i64,
    pub run_id: i64,
    pub step: String,
    pub status: String,
    pub command: String,
    #[serde(default)]
    pub risk: String,
    #[serde(default)]
    pub on_timeout: String,
    pub requested_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub comment: Option<String>,
    /// Each action it lets the run take: host, command, what it changes.
    #[serde(default)]
    pub actions: Option<Vec<ApprovalAction>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ApprovalAction {
    #[serde(default)]
    pub step: String,
    pub host: Option<String>,
    pub command: String,
    pub changes: Option<String>,
}

/// `POST /api/v1/approvals/{id}/approve|reject`.
#[derive(Debug, Clone, Deserialize)]
pub struct DecisionAnswer {
    /// False when it had been decided before: `approval` shows that first decision.
    pub decided_now: bool,
    pub approval: Approval,
}

/// `POST /api/v1/pause|resume`.
#[derive(Debug, Clone, Deserialize)]
pub struct SwitchState {
    pub paused: bool,
}

/// `GET /api/v1/safety`.
#[derive(Debug, Clone, Deserialize)]
pub struct SafetyOverview {
    pub paused: SwitchSetting,
    pub dry_run: SwitchSetting,
    pub hourly_budget: HourlyBudget,
    #[serde(default)]
    pub breakers: Vec<Breaker>,
    #[serde(default)]
    pub cooldowns: Vec<Cooldown>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SwitchSetting {
    pub on: bool,
    pub changed_by: Option<String>,
    pub changed_at: Option<DateTime<Utc>>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HourlyBudget {
    pub used: u32,
    pub limit: u32,
}

/// A target's circuit breaker; also the answer of `POST /api/v1/breakers/{target}/reset`.
#[derive(Debug, Clone, Deserialize)]
pub struct Breaker {
    pub target: String,
    pub open: bool,
    pub failures: u32,
    pub limit: u32,
    #[serde(default)]
    pub window_hours: u64,
    pub closes_at: Option<DateTime<Utc>>,
    pub last_reset: Option<BreakerReset>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BreakerReset {
    pub at: DateTime<Utc>,
    pub by: String,
    pub reason: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Cooldown {
    pub action: String,
    pub target: String,
    pub until: DateTime<Utc>,
}

/// `POST /api/v1/dry-run`.
#[derive(Debug, Clone, Deserialize)]
pub struct DryRunState {
    pub dry_run: bool,
}

/// One row of the audit trail.
#[derive(Debug, Clone, Deserialize)]
pub struct AuditEvent {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    #[serde(default)]
    pub detail: Value,
}
