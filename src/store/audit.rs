//! The audit trail: append-only (triggers in the schema refuse UPDATE and DELETE), written in
//! the same transaction as the change it records, so the trail and the state never disagree.
//! Old events leave only through export then prune ([`super::retention`]).

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::sqlite::SqliteRow;
use sqlx::types::Json;
use sqlx::{FromRow, SqliteConnection};

use super::approvals::{ApprovalAction, ApprovalStatus, Decision, OnTimeout};
use super::intake::IntakeAction;
use super::runs::RunState;
use super::safety::BREAKER_CONTROL;
use super::{Store, StoreError};
use crate::config::notify::EventKind;

/// Declares [`AuditAction`] with its string forms and [`AuditAction::ALL`], and [`AuditDetail`]
/// with each action's detail type, from one list: a new action is in `ALL` by construction, has
/// a detail type, and every exhaustive match on it (such as the sentence renderer's) must say
/// what it means. An action whose detail nobody reads field by field may take `Value`.
macro_rules! audit_actions {
    ($($(#[$meta:meta])* $variant:ident = $name:literal => $detail:ty,)*) => {
        /// What happened. The string forms are the `action` column's values.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

        /// An event's detail as its action's type. It serializes as the bare detail object, the
        /// shape the `detail` column and the API have always had.
        #[derive(Debug, Clone, PartialEq, Serialize)]
        #[serde(untagged)]
        pub enum AuditDetail {
            $($variant($detail),)*
        }

        impl AuditDetail {
            /// The action this detail belongs to.
            pub fn action(&self) -> AuditAction {
                match self {
                    $(Self::$variant(_) => AuditAction::$variant,)*
                }
            }

            /// Reads a stored detail as `action`'s type. Every field of a typed detail is
            /// optional or defaulted, so a detail written before a field existed still reads.
            pub fn read(action: AuditAction, detail: Value) -> Self {
                match action {
                    $(AuditAction::$variant => Self::$variant(typed(action, detail)),)*
                }
            }
        }
    };
}

/// A stored detail as `T`; one that does not fit (hand-edited, or from a build that wrote a
/// field with another type) reads as `T`'s default, with a warning, rather than failing a page.
fn typed<T: DeserializeOwned + Default>(action: AuditAction, detail: Value) -> T {
    serde_json::from_value(detail).unwrap_or_else(|error| {
        tracing::warn!(action = action.as_str(), %error, "an audit detail does not fit its type; read as empty");
        T::default()
    })
}

audit_actions! {
    /// A firing alert opened a new incident.
    IncidentOpened = "incident.opened" => AlertIntake,
    /// A firing alert repeated an open incident.
    IncidentDeduplicated = "incident.deduplicated" => AlertIntake,
    /// The source sent `resolved` for an open incident.
    IncidentSourceResolved = "incident.source_resolved" => AlertIntake,
    /// A run verified its fix, which resolved the incident.
    IncidentRunResolved = "incident.run_resolved" => Reason,
    /// The incident's sender never resolves and stopped repeating it for its resolve timeout.
    IncidentTimedOut = "incident.timed_out" => Reason,
    /// A repeat within the settle window after a fix, or a late firing of an alert its sender
    /// already resolved (an HA peer): attached to the incident, nothing runs.
    IncidentLateRepeat = "incident.late_repeat" => AlertIntake,
    /// No playbook's trigger matches the incident's alert, with the reason.
    IncidentUnmatched = "incident.unmatched" => Reason,
    /// An incident joined a run that was already active for its target.
    RunAttached = "run.attached" => Reason,
    /// One alert of a delivery could not be accepted, with the reason.
    AlertRefused = "alert.refused" => AlertRefused,
    /// The source sent `resolved` and no incident was open for it.
    ResolveUnmatched = "alert.resolve_unmatched" => AlertIntake,
    /// A run of a playbook was created for an incident (or by hand).
    RunCreated = "run.created" => RunCreated,
    /// A worker took a run's lease (first start, or resuming after a crash).
    RunLeased = "run.leased" => RunLeased,
    /// A run moved to another step.
    RunAdvanced = "run.advanced" => RunAdvanced,
    /// A run stopped to wait for an approval.
    ApprovalRequested = "approval.requested" => ApprovalRequested,
    /// A run ended: resolved, escalated or cancelled.
    RunFinished = "run.finished" => RunFinished,
    /// A step's side effect is about to happen.
    StepStarted = "step.started" => StepStarted,
    /// A step's side effect happened (or failed).
    StepFinished = "step.finished" => StepFinished,
    /// A guarded step may not act yet: its guard, what it saw, until when it waits.
    StepWaiting = "step.waiting" => StepWaiting,
    /// Someone (or the clock) decided an approval.
    ApprovalDecided = "approval.decided" => ApprovalDecided,
    /// An operator switch changed (pause, dry-run).
    SettingChanged = "setting.changed" => SettingChanged,
    /// An admin reset a target's circuit breaker, with the reason.
    BreakerReset = "breaker.reset" => BreakerReset,
    /// A safety control let a mutating action through.
    ActionAllowed = "control.allowed" => ControlVerdict,
    /// A safety control stopped a mutating action, with its reason.
    ActionBlocked = "control.blocked" => ControlVerdict,
    /// Someone ran a playbook's read-only probes through the `diagnose` tool.
    ToolDiagnosed = "tool.diagnosed" => ToolDiagnosed,
    /// One attempt to deliver a notification to a sink, with its outcome.
    NotifyAttempt = "notify.attempt" => NotifyAttempt,
    /// The notifier gave up on one event that kept failing to become a notification.
    NotifySkipped = "notify.skipped" => NotifySkipped,
    /// A one-tap link was refused (bad signature, expired, used before), with the reason.
    LinkRefused = "link.refused" => LinkRefused,
    /// Old events left the trail through its one exit: exported to a file, then deleted. The
    /// detail has the count, the id and time range, the file and its SHA-256.
    AuditPruned = "audit.pruned" => AuditPruned,
    /// Someone signed in to the web page with a token: its name and the client address.
    LoginSucceeded = "login.succeeded" => SignIn,
    /// A sign-in to the web page was refused (a token that is not valid, or may not read),
    /// with the client address and the reason; never the token.
    LoginFailed = "login.failed" => SignIn,
}

impl AuditAction {
    /// The action a stored `action` string names; `None` for one this build does not know.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|a| a.as_str() == text)
    }
}

impl std::fmt::Display for AuditAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for AuditAction {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for AuditAction {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown audit action {text:?}")))
    }
}

/// One row of the trail, its detail typed by its action.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditEvent {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    #[schema(value_type = String)]
    pub action: AuditAction,
    pub incident_id: Option<i64>,
    pub run_id: Option<i64>,
    /// The detail as stored, every key of it: what the API answers and the page shows raw.
    #[serde(rename = "detail")]
    #[schema(value_type = Object)]
    pub stored_detail: Value,
    /// The detail as its action's type: what readers use.
    #[serde(skip)]
    pub detail: AuditDetail,
}

/// A row exactly as stored, its action a string and its detail untyped: what the audit export
/// writes (every column, nothing dropped), and the form the API's events are read back from.
#[derive(Debug, Clone, Serialize, Deserialize, FromRow)]
pub struct StoredAuditEvent {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub incident_id: Option<i64>,
    pub run_id: Option<i64>,
    #[serde(default)]
    pub detail: Json<Value>,
}

impl TryFrom<StoredAuditEvent> for AuditEvent {
    type Error = String;

    fn try_from(stored: StoredAuditEvent) -> Result<Self, String> {
        let action = AuditAction::parse(&stored.action)
            .ok_or_else(|| format!("unknown audit action {:?}", stored.action))?;
        Ok(Self {
            id: stored.id,
            at: stored.at,
            actor: stored.actor,
            action,
            incident_id: stored.incident_id,
            run_id: stored.run_id,
            detail: AuditDetail::read(action, stored.detail.0.clone()),
            stored_detail: stored.detail.0,
        })
    }
}

/// Reads an event as the API answers it (the CLI's timelines).
impl<'de> Deserialize<'de> for AuditEvent {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        StoredAuditEvent::deserialize(deserializer)
            .and_then(|stored| Self::try_from(stored).map_err(serde::de::Error::custom))
    }
}

impl<'r> FromRow<'r, SqliteRow> for AuditEvent {
    fn from_row(row: &'r SqliteRow) -> Result<Self, sqlx::Error> {
        Self::try_from(StoredAuditEvent::from_row(row)?).map_err(|error| {
            sqlx::Error::ColumnDecode {
                index: "action".to_owned(),
                source: error.into(),
            }
        })
    }
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

impl<'a> NewAuditEvent<'a> {
    /// An event of `detail`'s action by `actor`, on no incident or run (set those with struct
    /// update). The written JSON is the typed detail's, so it reads back as the same type.
    pub fn of(actor: &'a str, detail: AuditDetail) -> Self {
        Self {
            actor,
            action: detail.action(),
            incident_id: None,
            run_id: None,
            // Plain structs of strings, numbers and JSON values always serialize.
            detail: serde_json::to_value(&detail).unwrap_or_default(),
        }
    }
}

/// The particulars of an alert's intake (`incident.*` from intake, `alert.resolve_unmatched`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AlertIntake {
    pub delivery_id: Option<i64>,
    pub alert_id: Option<i64>,
    pub source: Option<String>,
    pub alert_name: Option<String>,
    pub fingerprint: Option<String>,
    pub status: Option<String>,
    /// What recording the alert did.
    pub intake: Option<IntakeAction>,
    /// The incident this one is a recurrence of.
    pub recurrence_of: Option<i64>,
    /// Repeats that changed nothing (`incident.deduplicated` with no `alert_id`): every
    /// delivery the one event counts, in arrival order, `delivery_id` first. They store no
    /// alert of their own; their incident counts them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliveries: Option<Vec<i64>>,
}

/// An event whose one particular is why.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Reason {
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AlertRefused {
    pub delivery_id: Option<i64>,
    /// The alert's index in its delivery.
    pub position: Option<usize>,
    pub alert_name: Option<String>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunCreated {
    pub playbook: Option<String>,
    pub playbook_hash: Option<String>,
    pub target: Option<String>,
    pub dry_run: bool,
    /// The run is a dry run because the dry-run switch was on, not because it was asked for.
    pub dry_run_by_switch: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunLeased {
    /// The lease attempt.
    pub attempt: Option<i64>,
    /// The step the run is at.
    pub step: Option<String>,
    /// An earlier worker held the run before.
    pub resumed: bool,
}

/// A run moved to a step (`step`, with a reason or the diagnosis's cause and evidence), or
/// was set aside (`state: pending`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunAdvanced {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<RunState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApprovalRequested {
    pub approval_id: Option<i64>,
    pub step: Option<String>,
    /// Every command it covers, one a line.
    pub command: Option<String>,
    pub risk: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub on_timeout: Option<OnTimeout>,
    pub actions: Vec<ApprovalAction>,
    pub evidence: Value,
}

/// A run ended. `outcome` is the run's outcome as stored (its reason, cause, evidence); a
/// cancellation has a `reason` of its own instead.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunFinished {
    pub state: Option<RunState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl RunFinished {
    /// Why the run ended: the outcome's reason, or the event's own.
    pub fn why(&self) -> Option<&str> {
        self.outcome
            .as_ref()
            .and_then(|o| o.get("reason"))
            .and_then(Value::as_str)
            .or(self.reason.as_deref())
    }

    /// The cause the diagnosis found, when the outcome names one.
    pub fn cause(&self) -> Option<&str> {
        self.outcome
            .as_ref()
            .and_then(|o| o.get("cause"))
            .and_then(Value::as_str)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StepStarted {
    pub step: Option<String>,
    /// `None` for an API request.
    pub host: Option<String>,
    pub command: Option<String>,
    pub step_attempt: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StepFinished {
    pub step_attempt: Option<i64>,
    pub step: Option<String>,
    pub host: Option<String>,
    pub command: Option<String>,
    pub exit_status: Option<i64>,
    /// The playbook accepts the exit status (absent before runbookd kept that).
    pub exit_accepted: Option<bool>,
    /// The playbook's words for an accepted non-zero exit.
    pub exit_reason: Option<String>,
    pub duration_ms: Option<i64>,
    pub error: Option<String>,
}

/// Whether a guarded step waits or may act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GuardStatus {
    #[serde(rename = "waiting for its guard")]
    Waiting,
    #[serde(rename = "acting")]
    Acting,
}

/// Why a guarded step may not act yet (also kept in the run's `facts.waiting`), or that its
/// guard lets it act now.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StepWaiting {
    pub step: Option<String>,
    pub status: Option<GuardStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What the guard's probe saw.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saw: Option<Value>,
    pub since: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cleared_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gives_up_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub every_ms: Option<u64>,
}

/// An approval decided by someone (`decision`, `comment`, `actions`) or by the clock
/// (`on_timeout`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApprovalDecided {
    pub approval_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<ApprovalStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_timeout: Option<OnTimeout>,
    pub step: Option<String>,
    pub command: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<ApprovalAction>,
}

impl ApprovalDecided {
    /// The decision rejected the approval, by a person or by the clock.
    pub fn rejected(&self) -> bool {
        self.decision == Some(ApprovalStatus::Rejected)
            || self.on_timeout == Some(OnTimeout::Reject)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SettingChanged {
    /// The switch's key: `paused` or `dry_run`.
    pub setting: Option<String>,
    pub value: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BreakerReset {
    pub target: Option<String>,
    pub reason: Option<String>,
    /// The failures the breaker counted until the reset.
    pub failures_before: Option<i64>,
}

/// A safety control's verdict on a mutating action (`control.allowed`, `control.blocked`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ControlVerdict {
    pub action: Option<String>,
    pub target: Option<String>,
    pub reason: Option<String>,
    /// The control that stopped it; `None` when every control passed.
    pub control: Option<String>,
}

impl ControlVerdict {
    /// The circuit breaker stopped the action.
    pub fn by_breaker(&self) -> bool {
        self.control.as_deref() == Some(BREAKER_CONTROL)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ToolDiagnosed {
    pub playbook: Option<String>,
    pub labels: Value,
    pub cause: Option<String>,
    pub wall_ms: Option<u64>,
}

/// How one delivery attempt went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOutcome {
    Delivered,
    Failed,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NotifyAttempt {
    pub sink: Option<String>,
    pub event: Option<EventKind>,
    pub attempt: Option<u32>,
    pub outcome: Option<DeliveryOutcome>,
    /// The sink's HTTP status, when it answered.
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gave_up: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NotifySkipped {
    pub event_id: Option<i64>,
    /// The skipped event's action.
    pub action: Option<AuditAction>,
    pub failures: Option<u32>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LinkRefused {
    pub reason: Option<String>,
    pub method: Option<String>,
    pub remote: Option<String>,
    pub approval_id: Option<i64>,
    pub decision: Option<Decision>,
    pub sink: Option<String>,
}

/// A sign-in to the web page (`login.*`): from where, as which role, or why it was refused.
/// Never the token.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SignIn {
    pub remote: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditPruned {
    pub events: Option<u64>,
    pub first_id: Option<i64>,
    pub last_id: Option<i64>,
    /// The time range of the events that left.
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub before: Option<DateTime<Utc>>,
    pub file: Option<String>,
    pub sha256: Option<String>,
    pub file_events: Option<usize>,
    pub part: Option<usize>,
    pub parts: Option<usize>,
}

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
