//! The agent's tools: one catalog, served two ways, the MCP server at `/mcp` ([`mcp`]) and the
//! REST bridge at `POST /api/call` ([`bridge`]). Both call [`call`], so a tool behaves the same
//! through either, and both go through the engine's rules: a run started here waits for the
//! same approvals, cooldowns, budget and breaker as one started by an alert.
//!
//! Each tool declares the [`Permission`] it needs; reading needs `read`, anything that touches
//! the estate or a run needs `operate`. No tool decides an approval: that stays with people
//! (`approver`, `admin`) on the REST API, the CLI, the web page or a notification link.

pub mod bridge;
pub mod mcp;
pub mod rebinding;

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::AppState;
use super::backups::BackupQuery;
use super::error::AppError;
use super::incidents::{IncidentDetail, IncidentSummary};
use crate::auth::{Permission, Principal};
use crate::engine::diagnose::diagnose as run_diagnosis;
use crate::engine::dispatch::{Dispatcher, HandStart};
use crate::engine::step::needs_approval;
use crate::playbook::Playbook;
use crate::store::approvals::ApprovalStatus;
use crate::store::audit::{AuditDetail, NewAuditEvent, ToolDiagnosed};
use crate::store::incidents::{IncidentFilter, IncidentStatus};
use crate::store::runs::{Created, RunError, RunState};

/// How often `start_remediation` looks at its run while it waits.
const RUN_POLL: Duration = Duration::from_millis(100);

/// One tool as an agent sees it.
pub struct ToolSpec {
    pub name: &'static str,
    pub description: &'static str,
    pub permission: Permission,
    /// True when the tool changes nothing anywhere.
    pub read_only: bool,
    /// JSON Schema of the arguments object.
    pub input_schema: Map<String, Value>,
}

fn schema<T: JsonSchema>() -> Map<String, Value> {
    match serde_json::to_value(schemars::schema_for!(T)) {
        Ok(Value::Object(map)) => map,
        _ => unreachable!("a derived schema is a JSON object"),
    }
}

/// Every tool, in the order agents see them.
pub static CATALOG: LazyLock<Vec<ToolSpec>> = LazyLock::new(|| {
    vec![
        ToolSpec {
            name: "list_incidents",
            description: "List incidents (one per alert fingerprint while open), newest first, each with its latest run's state. Start here to find what is broken and the incident_id for get_incident.",
            permission: Permission::Read,
            read_only: true,
            input_schema: schema::<ListIncidents>(),
        },
        ToolSpec {
            name: "get_incident",
            description: "Everything about one incident: its alerts, every run with each step's host, exact command, exit status and output, the cause the diagnosis found with the evidence that matched, approvals and who decided them, and the audit timeline.",
            permission: Permission::Read,
            read_only: true,
            input_schema: schema::<GetIncident>(),
        },
        ToolSpec {
            name: "get_backup_status",
            description: "Live ages of every backup group on the Proxmox Backup Server datastore, read now from the PBS API, oldest first, each fresh, stale (older than the playbook's stale_after_hours, 48 h by default) or decommissioned (listed in the playbook's settings), with the newest run that worked on it. Read-only.",
            permission: Permission::Read,
            read_only: true,
            input_schema: schema::<BackupQuery>(),
        },
        ToolSpec {
            name: "diagnose",
            description: "Run a playbook's read-only probes against the estate now (PBS API, SSH checks of services, the NFS mount, vzdump logs, certificate fingerprints, the backup job) and return the facts, the cause that matches (null when none does) with its evidence, and the remediation steps that cause would run, marking the ones that need a human's approval. Changes nothing. Takes a few seconds.",
            permission: Permission::Operate,
            read_only: true,
            input_schema: schema::<Diagnose>(),
        },
        ToolSpec {
            name: "start_remediation",
            description: "Start a playbook run: diagnose, fix the cause, verify with a test backup. The run obeys every safety rule (one run per target, cooldowns, hourly budget, circuit breaker, pause switch). If a run for the target is already active you get that run (attached: true). Waits a little for the run to reach a decision point and returns its state; when a step needs a human, the result carries pending_approval (the exact command, its risk, the evidence and the expiry): that is expected, not an error, and you cannot approve it yourself; tell a human. Use dry_run to record the commands without executing mutating steps.",
            permission: Permission::Operate,
            read_only: false,
            input_schema: schema::<StartRemediation>(),
        },
        ToolSpec {
            name: "list_pending_approvals",
            description: "Approvals waiting for a human: the run, the step, the exact command, its risk, the evidence and when it expires. Only people can decide them.",
            permission: Permission::Read,
            read_only: true,
            input_schema: schema::<NoArguments>(),
        },
        ToolSpec {
            name: "cancel_run",
            description: "Cancel a run that has not ended. It stops at its next step boundary (a step in flight finishes) and its pending approvals are cancelled. Give a reason for the audit trail.",
            permission: Permission::Operate,
            read_only: false,
            input_schema: schema::<CancelRun>(),
        },
        ToolSpec {
            name: "explain_playbook",
            description: "Explain a playbook: what triggers it, its probes, its causes in the order they are tried (first match wins) with the steps each runs, which steps need approval at its automation level, and how a fix is verified.",
            permission: Permission::Read,
            read_only: true,
            input_schema: schema::<ExplainPlaybook>(),
        },
    ]
});

/// The tool called `name`, if there is one.
pub fn spec(name: &str) -> Option<&'static ToolSpec> {
    CATALOG.iter().find(|tool| tool.name == name)
}

/// What to tell a caller who asked for a tool that does not exist.
pub fn unknown_tool(name: &str) -> String {
    format!(
        "there is no tool '{}'; the tools are: {}",
        name.escape_debug(),
        CATALOG
            .iter()
            .map(|t| t.name)
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Runs tool `name` for `caller` with `arguments` (a JSON object, or null for none).
pub async fn call(
    state: &AppState,
    caller: &Principal,
    name: &str,
    arguments: Value,
) -> Result<Value, AppError> {
    let tool = spec(name).ok_or_else(|| AppError::NotFound(unknown_tool(name)))?;
    if !caller.role.allows(tool.permission) {
        return Err(AppError::Forbidden(format!(
            "token '{}' has role '{}', which may not call {}",
            caller.name,
            caller.role.as_str(),
            tool.name
        )));
    }
    match tool.name {
        "list_incidents" => list_incidents(state, parse(tool, arguments)?).await,
        "get_incident" => get_incident(state, parse(tool, arguments)?).await,
        "get_backup_status" => get_backup_status(state, parse(tool, arguments)?).await,
        "diagnose" => diagnose(state, caller, parse(tool, arguments)?).await,
        "start_remediation" => start_remediation(state, caller, parse(tool, arguments)?).await,
        "list_pending_approvals" => {
            parse::<NoArguments>(tool, arguments)?;
            let pending = state
                .store
                .approvals(Some(ApprovalStatus::Pending), 200)
                .await?;
            Ok(json!({"approvals": pending}))
        }
        "cancel_run" => cancel_run(state, caller, parse(tool, arguments)?).await,
        "explain_playbook" => explain_playbook(state, parse(tool, arguments)?),
        _ => unreachable!("every catalogued tool has a handler"),
    }
}

/// Reads `arguments` as the tool's argument type; the message names the field that is wrong.
fn parse<T: DeserializeOwned>(tool: &ToolSpec, arguments: Value) -> Result<T, AppError> {
    let arguments = match arguments {
        Value::Null => Value::Object(Map::new()),
        Value::Object(map) => Value::Object(map),
        other => {
            return Err(AppError::BadRequest(format!(
                "{}: arguments must be a JSON object, not {other}",
                tool.name
            )));
        }
    };
    serde_path_to_error::deserialize(arguments).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        AppError::BadRequest(if path == "." {
            format!("{}: {inner}", tool.name)
        } else {
            format!("{}: argument '{path}': {inner}", tool.name)
        })
    })
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArguments {}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListIncidents {
    /// Only incidents in this state; all when omitted.
    status: Option<IncidentStatus>,
    /// At most this many, 1 to 100 (default 20).
    #[schemars(range(min = 1, max = 100))]
    limit: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetIncident {
    /// The incident's id, from list_incidents.
    incident_id: i64,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Diagnose {
    /// The playbook; may be omitted when only one is loaded.
    playbook: Option<String>,
    /// Alert labels naming what is stale, e.g. {"backup_type": "vm", "backup_id": "451"};
    /// optional.
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRemediation {
    /// The playbook; may be omitted when only one is loaded.
    playbook: Option<String>,
    /// Alert labels naming what is stale, e.g. {"backup_type": "vm", "backup_id": "451"};
    /// optional.
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// Record the commands the run would execute, and execute only read-only steps.
    #[serde(default)]
    dry_run: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRun {
    /// The run's id.
    run_id: i64,
    /// Why, for the audit trail.
    reason: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExplainPlaybook {
    /// The playbook; may be omitted when only one is loaded.
    name: Option<String>,
}

fn engine(state: &AppState) -> Result<&Dispatcher, AppError> {
    state.dispatcher.as_deref().ok_or_else(|| {
        AppError::Conflict(
            "no engine runs here: configure the inventory and playbooks, then restart".to_owned(),
        )
    })
}

async fn list_incidents(state: &AppState, args: ListIncidents) -> Result<Value, AppError> {
    let limit = args.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(AppError::BadRequest(
            "list_incidents: argument 'limit' must be between 1 and 100".to_owned(),
        ));
    }
    let filter = IncidentFilter {
        status: args.status,
        name: None,
        source: None,
        fingerprint: None,
        before: None,
        limit,
    };
    let incidents = state.store.list_incidents(&filter).await?;
    let incidents = IncidentSummary::load(state, incidents).await?;
    Ok(json!({"incidents": incidents}))
}

async fn get_incident(state: &AppState, args: GetIncident) -> Result<Value, AppError> {
    let detail = IncidentDetail::load(state, args.incident_id).await?;
    serde_json::to_value(detail).map_err(|e| AppError::Internal(e.into()))
}

async fn get_backup_status(state: &AppState, args: BackupQuery) -> Result<Value, AppError> {
    let status = super::backups::status(state, &args, "get_backup_status").await?;
    serde_json::to_value(status).map_err(|e| AppError::Internal(e.into()))
}

async fn diagnose(state: &AppState, caller: &Principal, args: Diagnose) -> Result<Value, AppError> {
    let dispatcher = engine(state)?;
    let playbook = dispatcher.playbook(args.playbook.as_deref())?;
    let labels = dispatcher.labels(playbook, &args.labels)?;
    let timed_out = || {
        AppError::UpstreamTimeout(format!(
            "the diagnosis did not finish within {} s (a host or the NFS server may hang); \
             start_remediation diagnoses in the background without this limit",
            state.tool_wait.as_secs()
        ))
    };
    let diagnosis = tokio::time::timeout(state.tool_wait, async {
        // One diagnosis at a time: probing a sick PBS box from many calls at once makes it
        // sicker. A caller that waits too long for its turn times out like a slow diagnosis.
        let _turn = state.diagnosis_turn.lock().await;
        run_diagnosis(playbook, &dispatcher.estate, &labels, state.clock.now()).await
    })
    .await
    .map_err(|_| timed_out())?
    // The labels were checked above; what is left is a defect of the playbook.
    .map_err(|e| AppError::Internal(anyhow::anyhow!("diagnosis of {}: {e}", playbook.name)))?;
    let remediation: Vec<Value> = diagnosis
        .cause
        .as_deref()
        .and_then(|cause| playbook.causes.iter().find(|c| c.id == cause))
        .map(|cause| {
            cause
                .remediate
                .iter()
                .map(|step| describe_step(playbook, step))
                .collect()
        })
        .unwrap_or_default();
    state
        .store
        .record_event(
            NewAuditEvent::of(
                &caller.name,
                AuditDetail::ToolDiagnosed(ToolDiagnosed {
                    playbook: Some(playbook.name.clone()),
                    labels: json!(args.labels),
                    cause: diagnosis.cause.clone(),
                    wall_ms: Some(diagnosis.wall_ms),
                }),
            ),
            state.clock.now(),
        )
        .await?;
    let mut answer = serde_json::to_value(&diagnosis).map_err(|e| AppError::Internal(e.into()))?;
    answer["playbook"] = json!(playbook.name);
    answer["remediation"] = json!(remediation);
    Ok(answer)
}

/// A step as an agent needs to know it: its risk, and whether a human must approve it.
fn describe_step(playbook: &Playbook, name: &str) -> Value {
    match playbook.steps.get(name) {
        Some(step) => json!({
            "step": name,
            "risk": step.risk,
            "needs_approval": needs_approval(playbook.automation, step),
            "approval_window_seconds": step.approval_window.as_secs(),
            "idempotent": step.idempotent,
            "guard": step.guard.as_ref().map(|g| json!({
                "requires": g.require.iter().map(|r| json!({"probe": r.probe, "holds": r.holds})).collect::<Vec<_>>(),
                "active": g.active.iter().map(|(n, _)| n).collect::<Vec<_>>(),
                "mute": g.mute.iter().map(|(n, _)| n).collect::<Vec<_>>(),
                "max_wait_seconds": g.max_wait.as_secs(),
            })),
        }),
        None => json!({"step": name}),
    }
}

async fn start_remediation(
    state: &AppState,
    caller: &Principal,
    args: StartRemediation,
) -> Result<Value, AppError> {
    let dispatcher = engine(state)?;
    let playbook = dispatcher.playbook(args.playbook.as_deref())?;
    let hand = HandStart {
        playbook: &playbook.name,
        labels: &args.labels,
        dry_run: args.dry_run,
        actor: &caller.name,
    };
    let created = dispatcher
        .start_by_hand(&state.store, hand, state.clock.now())
        .await?;
    let (run_id, attached) = match created {
        Created::New(id) => (id, false),
        Created::AlreadyActive(id) => (id, true),
    };
    // Wait, bounded, for a point where there is something to say: a pending approval or an end.
    let waited = tokio::time::timeout(state.tool_wait, async {
        let mut tick = tokio::time::interval(RUN_POLL);
        loop {
            tick.tick().await;
            let run = state.store.run(run_id).await?;
            if run
                .as_ref()
                .is_none_or(|r| r.state == RunState::WaitingApproval || r.state.is_final())
            {
                return Ok::<_, AppError>(run);
            }
        }
    })
    .await;
    let run = match waited {
        Ok(run) => run?,
        Err(_) => state.store.run(run_id).await?,
    }
    .ok_or_else(|| AppError::NotFound(format!("run {run_id} disappeared")))?;
    let pending = state
        .store
        .approvals_for_run(run_id)
        .await?
        .into_iter()
        .find(|a| a.status == ApprovalStatus::Pending);
    let note = match (&pending, run.state) {
        (Some(approval), _) => format!(
            "The run is waiting for a human to approve step '{}' (risk {}) before it runs `{}`. \
             You cannot approve it; tell the on-call human. It expires at {}.",
            approval.step, approval.risk, approval.command, approval.expires_at
        ),
        (None, RunState::Resolved) => "The run fixed the cause and verified it.".to_owned(),
        (None, RunState::Escalated) => {
            "The run escalated to a human; get_incident shows why.".to_owned()
        }
        (None, RunState::Cancelled) => "The run was cancelled.".to_owned(),
        (None, RunState::Refused) => {
            "The run was refused: its labels cannot be used; outcome.reason says why.".to_owned()
        }
        (None, RunState::Rehearsed) => {
            "This was a dry run: it changed nothing; outcome.reason names what it would have run."
                .to_owned()
        }
        (None, _)
            if state
                .store
                .switch(crate::store::safety::Switch::Paused)
                .await? =>
        {
            "runbookd is paused: the run waits until an admin resumes it.".to_owned()
        }
        (None, _) => {
            "The run is still working; call get_incident or this tool again later.".to_owned()
        }
    };
    Ok(json!({
        "run_id": run_id,
        "attached": attached,
        "state": run.state,
        "step": run.step,
        "outcome": run.outcome,
        "pending_approval": pending,
        "note": note,
    }))
}

async fn cancel_run(
    state: &AppState,
    caller: &Principal,
    args: CancelRun,
) -> Result<Value, AppError> {
    let reason = match args.reason.as_deref().map(str::trim) {
        Some(reason) if reason.chars().count() > 500 || reason.chars().any(char::is_control) => {
            return Err(AppError::BadRequest(
                "cancel_run: argument 'reason' must be at most 500 characters of text".to_owned(),
            ));
        }
        Some(reason) if !reason.is_empty() => format!("cancelled by {}: {reason}", caller.name),
        _ => format!("cancelled by {}", caller.name),
    };
    match state
        .store
        .cancel_run(args.run_id, &caller.name, &reason, state.clock.now())
        .await
    {
        Ok(()) => {
            state.wake_worker();
            Ok(json!({"run_id": args.run_id, "state": "cancelled", "reason": reason}))
        }
        Err(RunError::NotFound(_)) => Err(AppError::NotFound(format!(
            "there is no run {}",
            args.run_id
        ))),
        Err(e @ RunError::Final { .. }) => Err(AppError::Conflict(e.to_string())),
        Err(RunError::Store(e)) => Err(e.into()),
        Err(e) => Err(AppError::Internal(e.into())),
    }
}

fn explain_playbook(state: &AppState, args: ExplainPlaybook) -> Result<Value, AppError> {
    let dispatcher = engine(state)?;
    let playbook = dispatcher.playbook(args.name.as_deref())?;
    let causes: Vec<Value> = playbook
        .causes
        .iter()
        .map(|cause| {
            json!({
                "id": cause.id,
                "when": cause.when,
                "approval": cause.approval,
                "remediate": cause.remediate.iter().map(|s| describe_step(playbook, s)).collect::<Vec<_>>(),
                "offered_never_run_without_approval": cause.offer.iter().map(|s| describe_step(playbook, s)).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(json!({
        "name": playbook.name,
        "description": playbook.description,
        "triggers": playbook.triggers,
        "target": playbook.target,
        "automation": playbook.automation,
        "probes": playbook.diagnose.iter().map(|p| &p.id).collect::<Vec<_>>(),
        "causes_in_order": causes,
        "when_no_cause_matches": "escalate to a human with every fact gathered",
        "verify": playbook.verify.iter().map(|s| describe_step(playbook, s)).collect::<Vec<_>>(),
        "settings": playbook.settings,
    }))
}
