//! The audit trail in words: each event as one sentence with its key facts, and facts (a run's
//! evidence, what a guard saw) as `key: value` words instead of JSON. The one renderer behind
//! the web page's timelines, the CLI's and the demo's, so the three read the same.
//!
//! It works from what the trail stores (actor and typed detail) and nothing else, so the CLI can
//! render what the API returned. A detail written before a field was added still reads as a
//! sentence, with fewer facts.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::store::approvals::{ApprovalAction, ApprovalStatus, Decision, OnTimeout};
use crate::store::audit::{
    AlertIntake, ApprovalDecided, AuditAction, AuditDetail, DeliveryOutcome, GuardStatus,
    RunAdvanced, RunFinished, StepFinished,
};
use crate::store::intake::IntakeAction;
use crate::store::runs::RunState;

/// An event as stored or as the API returned it (an action string and a JSON detail), as a
/// sentence; an action this build does not know reads as just that.
pub fn sentence_of_stored(action: &str, actor: &str, detail: &Value) -> String {
    match AuditAction::parse(action) {
        Some(known) => sentence(actor, &AuditDetail::read(known, detail.clone())),
        None => format!("{} recorded {action}", who(actor)),
    }
}

/// One audit event as a sentence, without the time (each surface shows it its own way). The
/// match has no wildcard: a new action does not build until it says what it means.
pub fn sentence(actor: &str, detail: &AuditDetail) -> String {
    let who = who(actor);
    match detail {
        AuditDetail::IncidentOpened(d) => match d.intake {
            Some(IntakeAction::Recurred) => format!(
                "{} fired again after its incident had ended: a new incident opened{}",
                alert(d),
                d.recurrence_of
                    .map(|i| format!(", a recurrence of incident {i}"))
                    .unwrap_or_default()
            ),
            _ => format!("{} fired: a new incident opened", alert(d)),
        },
        AuditDetail::IncidentDeduplicated(d) => match d.deliveries.as_deref() {
            Some(deliveries @ [_, _, ..]) => format!(
                "{} fired again {} times, unchanged: counted into the open incident",
                alert(d),
                deliveries.len()
            ),
            Some(_) => format!(
                "{} fired again, unchanged: counted into the open incident",
                alert(d)
            ),
            None => format!("{} fired again: counted into the open incident", alert(d)),
        },
        AuditDetail::IncidentSourceResolved(d) => format!(
            "{} was resolved by its sender: the incident is resolved",
            alert(d)
        ),
        AuditDetail::IncidentRunResolved(d) => format!(
            "The incident is resolved: {}",
            reason_or(&d.reason, "its run verified its fix")
        ),
        AuditDetail::IncidentTimedOut(d) => format!(
            "The incident ended by timeout: {}",
            reason_or(&d.reason, "its sender stopped repeating it")
        ),
        AuditDetail::IncidentLateRepeat(d) => match d.intake {
            Some(IntakeAction::LateFiring) => format!(
                "A late firing of {} arrived after its sender resolved it (an HA peer catching up): attached, nothing runs",
                alert(d)
            ),
            _ => format!(
                "{} fired again just after a fix, before its sender caught up: attached, nothing runs",
                alert(d)
            ),
        },
        AuditDetail::IncidentUnmatched(d) => format!(
            "No playbook matches the incident: {}",
            reason_or(&d.reason, "no trigger matched")
        ),
        AuditDetail::RunAttached(d) => format!(
            "The incident joined a run already under way: {}",
            reason_or(&d.reason, "its target already had an active run")
        ),
        AuditDetail::AlertRefused(d) => {
            let name = d.alert_name.as_deref().unwrap_or("an alert");
            match &d.reason {
                Some(reason) => format!("{who} sent {name}, which was refused: {reason}"),
                None => format!("{who} sent {name}, which was refused"),
            }
        }
        AuditDetail::ResolveUnmatched(d) => format!(
            "{} was resolved by its sender, but no incident was open for it",
            alert(d)
        ),
        AuditDetail::RunCreated(d) => {
            let mut text = format!(
                "{who} started a run of {} on {}",
                d.playbook.as_deref().unwrap_or("a playbook"),
                d.target.as_deref().unwrap_or("its target")
            );
            if d.dry_run_by_switch {
                text.push_str(", as a dry run because the dry-run switch is on");
            } else if d.dry_run {
                text.push_str(", as a dry run");
            }
            text
        }
        AuditDetail::RunLeased(d) => {
            let attempt = d
                .attempt
                .map(|a| format!(" (lease attempt {a})"))
                .unwrap_or_default();
            match (d.step.as_deref(), d.resumed) {
                (None | Some("diagnose"), false) => {
                    format!("{who} took up the run and began diagnosing")
                }
                (None | Some("diagnose"), true) => {
                    format!("{who} took up the run again{attempt}, from diagnosis")
                }
                (Some(step), _) => {
                    format!("{who} took up the run again{attempt}, at step {step}")
                }
            }
        }
        AuditDetail::RunAdvanced(d) => advanced(&who, d),
        AuditDetail::ApprovalRequested(d) => {
            let what = actions(&d.actions, d.command.as_deref(), d.approval_id);
            let mut text = format!(
                "{who} asked for approval of {}: {what}",
                d.step.as_deref().unwrap_or("a step")
            );
            if let Some(risk) = &d.risk {
                text.push_str(&format!(" (risk {risk})"));
            }
            if let Some(expires) = d.expires_at {
                text.push_str(&format!(
                    "; if nobody decides by {}, {}",
                    time_words(expires),
                    if_nobody_decides(d.on_timeout.unwrap_or(OnTimeout::Reject).as_str())
                ));
            }
            text
        }
        AuditDetail::RunFinished(d) => finished(&who, d),
        AuditDetail::StepStarted(d) => format!(
            "{who} started step {}: {}",
            d.step.as_deref().unwrap_or("?"),
            command_on_host(d.command.as_deref(), d.host.as_deref())
        ),
        AuditDetail::StepFinished(d) => step_finished(&who, d),
        AuditDetail::StepWaiting(d) => {
            let step = d.step.as_deref().unwrap_or("a step");
            match d.status {
                Some(GuardStatus::Acting) => format!("Step {step}'s guard lets it act now"),
                _ => {
                    let mut text = format!(
                        "Step {step} waits for its guard: {}",
                        reason_or(&d.reason, "it may not act yet")
                    );
                    if let Some(until) = d.gives_up_at {
                        text.push_str(&format!("; it gives up at {}", time_words(until)));
                    }
                    text
                }
            }
        }
        AuditDetail::ApprovalDecided(d) => decided(&who, d),
        AuditDetail::SettingChanged(d) => {
            let setting = match d.setting.as_deref() {
                Some("paused") => "pause",
                Some("dry_run") => "dry run",
                Some(other) => other,
                None => "a setting",
            };
            let on = if d.value { "on" } else { "off" };
            match &d.reason {
                Some(reason) => format!("{who} turned {setting} {on}: {reason}"),
                None => format!("{who} turned {setting} {on}"),
            }
        }
        AuditDetail::BreakerReset(d) => format!(
            "{who} reset the circuit breaker of {}{}: {}",
            d.target.as_deref().unwrap_or("a target"),
            d.failures_before
                .map(|n| format!(" ({n} failure(s) counted until then)"))
                .unwrap_or_default(),
            reason_or(&d.reason, "no reason given")
        ),
        AuditDetail::ActionAllowed(d) => format!(
            "The safety controls let {} on {} through",
            d.action.as_deref().unwrap_or("an action"),
            d.target.as_deref().unwrap_or("its target")
        ),
        AuditDetail::ActionBlocked(d) => format!(
            "The {} safety control stopped {} on {}: {}",
            d.control.as_deref().unwrap_or("a"),
            d.action.as_deref().unwrap_or("an action"),
            d.target.as_deref().unwrap_or("its target"),
            reason_or(&d.reason, "no reason given")
        ),
        AuditDetail::ToolDiagnosed(d) => format!(
            "{who} ran the diagnosis of {} through the diagnose tool: {}{}",
            d.playbook.as_deref().unwrap_or("a playbook"),
            d.cause
                .as_deref()
                .map(|c| format!("cause {c}"))
                .unwrap_or_else(|| "no known cause".to_owned()),
            d.wall_ms
                .map(|ms| format!(
                    " in {}",
                    duration_words(i64::try_from(ms).unwrap_or(i64::MAX))
                ))
                .unwrap_or_default()
        ),
        AuditDetail::NotifyAttempt(d) => {
            let event = d.event.map_or("a", |e| e.as_str()).replace('_', " ");
            let sink = d.sink.as_deref().unwrap_or("a sink");
            let attempt = d.attempt.unwrap_or(1);
            match d.outcome {
                Some(DeliveryOutcome::Delivered) => format!(
                    "The {event} notification reached {sink}{} (attempt {attempt})",
                    d.status
                        .map(|s| format!(" with HTTP {s}"))
                        .unwrap_or_default()
                ),
                _ => format!(
                    "The {event} notification did not reach {sink} (attempt {attempt}): {}{}",
                    d.error.as_deref().unwrap_or("no answer"),
                    if d.gave_up == Some(true) {
                        "; gave up"
                    } else {
                        ""
                    }
                ),
            }
        }
        AuditDetail::NotifySkipped(d) => format!(
            "The notifier gave up on event {} ({}) after {} failure(s): {}",
            d.event_id.map_or("?".to_owned(), |i| i.to_string()),
            d.action.map_or("an event", AuditAction::as_str),
            d.failures.unwrap_or(0),
            d.error.as_deref().unwrap_or("no error recorded")
        ),
        AuditDetail::LinkRefused(d) => {
            let verb = match d.decision {
                Some(Decision::Approve) => "approve",
                Some(Decision::Reject) => "reject",
                None => "decide",
            };
            format!(
                "A one-tap link to {verb}{}{} was refused: {}",
                d.approval_id
                    .map(|i| format!(" approval {i}"))
                    .unwrap_or_default(),
                d.sink
                    .as_deref()
                    .map(|s| format!(" (sent to {s})"))
                    .unwrap_or_default(),
                reason_or(&d.reason, "no reason given")
            )
        }
        AuditDetail::AuditPruned(d) => format!(
            "{who} moved {} audit events{}{} out of the trail into {}{}",
            d.events.unwrap_or(0),
            match (d.first_id, d.last_id) {
                (Some(first), Some(last)) => format!(" (ids {first} to {last})"),
                _ => String::new(),
            },
            match (d.from, d.to) {
                (Some(from), Some(to)) => format!(" from {} to {}", rfc3339(from), rfc3339(to)),
                _ => String::new(),
            },
            d.file.as_deref().unwrap_or("an export file"),
            d.sha256
                .as_deref()
                .map(|sha| format!(", SHA-256 {sha}"))
                .unwrap_or_default()
        ),
        AuditDetail::LoginSucceeded(d) => format!(
            "{who} signed in to the web page{}",
            d.remote
                .as_deref()
                .map(|r| format!(" from {r}"))
                .unwrap_or_default()
        ),
        AuditDetail::LoginFailed(d) => format!(
            "A sign-in to the web page{} was refused: {}",
            d.remote
                .as_deref()
                .map(|r| format!(" from {r}"))
                .unwrap_or_default(),
            d.reason.as_deref().unwrap_or("no reason given")
        ),
    }
}

/// Who did it, as a reader would say it: the engine (any worker), the clock, or the name.
fn who(actor: &str) -> String {
    match actor {
        "engine" => "The engine".to_owned(),
        "timeout" => "The clock".to_owned(),
        "notifier" => "The notifier".to_owned(),
        "retention" => "The retention task".to_owned(),
        "audit-export" => "An audit export".to_owned(),
        _ if actor.starts_with("runbookd-") => "The engine".to_owned(),
        _ if actor.is_empty() => "Someone".to_owned(),
        _ => actor.to_owned(),
    }
}

/// What happens when nobody decides an approval with this `on_timeout`.
pub fn if_nobody_decides(on_timeout: &str) -> &'static str {
    if on_timeout == OnTimeout::Approve.as_str() {
        "it is approved and the run goes on"
    } else {
        "it is rejected and the run escalates to a human"
    }
}

/// A free-text reason in words, or `otherwise`.
fn reason_or(reason: &Option<String>, otherwise: &str) -> String {
    reason
        .as_deref()
        .map(words)
        .unwrap_or_else(|| otherwise.to_owned())
}

/// `PBSBackupStale (from alertmanager)`.
fn alert(d: &AlertIntake) -> String {
    let name = d.alert_name.as_deref().unwrap_or("An alert");
    match &d.source {
        Some(source) => format!("{name} (from {source})"),
        None => name.to_owned(),
    }
}

/// `` `command` on host ``, or the bare command for an API request.
fn command_on_host(command: Option<&str>, host: Option<&str>) -> String {
    let command = command.unwrap_or("its command");
    match host {
        Some(host) => format!("`{command}` on {host}"),
        None => format!("`{command}`"),
    }
}

/// What an approval covers: each action's command and host, or its command alone.
fn actions(actions: &[ApprovalAction], command: Option<&str>, approval_id: Option<i64>) -> String {
    if !actions.is_empty() {
        return actions
            .iter()
            .map(|a| command_on_host(Some(&a.command), a.host.as_deref()))
            .collect::<Vec<_>>()
            .join(", then ");
    }
    match (command, approval_id) {
        (Some(command), _) => format!(
            "`{}`",
            command.lines().collect::<Vec<_>>().join("`, then `")
        ),
        (None, Some(id)) => format!("approval {id}"),
        (None, None) => "an approval".to_owned(),
    }
}

/// A time as the trail writes it: `2026-11-01T00:00:00Z`.
fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

fn advanced(who: &str, d: &RunAdvanced) -> String {
    let then = |text: String| match d.step.as_deref() {
        Some("done") => format!("{text}; every step is done"),
        Some(step) => format!("{text}; next: {step}"),
        None => text,
    };
    if d.state == Some(RunState::Pending) {
        return format!(
            "{who} set the run aside ({}); it waits to be taken up again",
            reason_or(&d.reason, "no reason given")
        );
    }
    if let Some(cause) = &d.cause {
        return then(diagnosis(cause, d.evidence.as_ref()));
    }
    match d.reason.as_deref() {
        // Written before the cause was a field of its own: "cause X: {evidence as JSON}".
        Some(reason) if reason.starts_with("cause ") => {
            let rest = &reason["cause ".len()..];
            let (cause, evidence) = rest.split_once(": ").unwrap_or((rest, ""));
            let evidence: Option<Value> = serde_json::from_str(evidence).ok();
            then(diagnosis(cause, evidence.as_ref()))
        }
        Some(reason) => then(capitalised(&words(reason))),
        None => then(format!("{who} moved the run on")),
    }
}

fn diagnosis(cause: &str, evidence: Option<&Value>) -> String {
    match evidence
        .and_then(Value::as_object)
        .filter(|e| !e.is_empty())
    {
        Some(evidence) => format!(
            "Diagnosis found {cause} (evidence: {})",
            facts_in_words(evidence)
        ),
        None => format!("Diagnosis found {cause}"),
    }
}

fn finished(who: &str, d: &RunFinished) -> String {
    let reason = d.why().map(words);
    match d.state {
        Some(RunState::Resolved) => match (d.cause(), reason) {
            (_, Some(reason)) => format!("The run ended resolved: {reason}"),
            (Some(cause), None) => format!("The run ended resolved: cause {cause}, fix verified"),
            (None, None) => "The run ended resolved".to_owned(),
        },
        Some(RunState::Escalated) => format!(
            "The run escalated to a human: {}",
            reason.as_deref().unwrap_or("no reason was recorded")
        ),
        Some(RunState::Cancelled) => format!(
            "{who} cancelled the run: {}",
            reason.as_deref().unwrap_or("no reason given")
        ),
        Some(RunState::Refused) => format!(
            "The run was refused: {}",
            reason.as_deref().unwrap_or("no reason given")
        ),
        Some(RunState::Rehearsed) => format!(
            "The dry run ended: {}",
            reason.as_deref().unwrap_or("nothing was changed")
        ),
        Some(state) => format!("The run ended {}", state.as_str()),
        None => "The run ended".to_owned(),
    }
}

fn step_finished(who: &str, d: &StepFinished) -> String {
    let took = d
        .duration_ms
        .map(|ms| format!(" in {}", duration_words(ms)))
        .unwrap_or_default();
    let on_host = || command_on_host(d.command.as_deref(), d.host.as_deref());
    if let Some(error) = &d.error {
        return match &d.step {
            Some(step) => format!(
                "Step {step} ({}) ended without success: {}",
                on_host(),
                words(error)
            ),
            None => format!("A step ended without success: {}", words(error)),
        };
    }
    let Some(command) = &d.command else {
        // Written before the command rode along.
        return match d.exit_status {
            Some(exit) => format!(
                "Step attempt {} finished: {}",
                d.step_attempt.unwrap_or(0),
                exit_outcome(exit, None, None).text
            ),
            None => format!("Step attempt {} finished", d.step_attempt.unwrap_or(0)),
        };
    };
    let place = d
        .host
        .as_deref()
        .map(|h| format!(" on {h}"))
        .unwrap_or_default();
    match d.exit_status {
        Some(exit) => {
            let outcome = exit_outcome(exit, d.exit_accepted, d.exit_reason.as_deref());
            let verdict = match (outcome.expected, exit) {
                (true, 0) => String::new(),
                (true, _) => " (as the playbook expects)".to_owned(),
                (false, _) => ", which the playbook does not accept".to_owned(),
            };
            format!(
                "{who} ran `{command}`{place}{took}: {}{verdict}",
                outcome.text
            )
        }
        None => format!("{who} ran `{command}`{place}{took}: done"),
    }
}

fn decided(who: &str, d: &ApprovalDecided) -> String {
    let what = actions(&d.actions, d.command.as_deref(), d.approval_id);
    if d.decision.is_none()
        && let Some(on_timeout) = d.on_timeout
    {
        return format!(
            "Nobody decided on {what} in time: {}",
            if on_timeout == OnTimeout::Approve {
                "on_timeout is approve, so it was approved and the run goes on"
            } else {
                "on_timeout is reject, so it was rejected and the run escalates"
            }
        );
    }
    let decision = match d.decision {
        Some(ApprovalStatus::Approved) => "approved",
        Some(ApprovalStatus::Rejected) => "rejected",
        Some(ApprovalStatus::Expired) => "let expire",
        Some(ApprovalStatus::Cancelled) => "cancelled",
        Some(ApprovalStatus::Pending) | None => "decided",
    };
    match d.comment.as_deref().filter(|c| !c.trim().is_empty()) {
        Some(comment) => format!("{who} {decision} {what}: ‘{}’", words(comment)),
        None => format!("{who} {decision} {what}"),
    }
}

/// An exit status as a person reads it, and whether it is what the playbook expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitOutcome {
    /// `exit 0`, `exit 32: nothing was mounted`, `exit 1`.
    pub text: String,
    /// The playbook accepts it (for an attempt recorded before runbookd kept that: exit 0).
    pub expected: bool,
}

/// How an exit reads: `accepted` and `reason` as the step attempt recorded them.
pub fn exit_outcome(exit: i64, accepted: Option<bool>, reason: Option<&str>) -> ExitOutcome {
    let expected = accepted.unwrap_or(exit == 0);
    let text = match (expected, reason) {
        (true, Some(reason)) if exit != 0 => format!("exit {exit}: {reason}"),
        (true, None) if exit != 0 => format!("exit {exit}: accepted by the playbook"),
        _ => format!("exit {exit}"),
    };
    ExitOutcome { text, expected }
}

/// Facts as words: `key: value; key: value`, never JSON.
pub fn facts_in_words<'a>(facts: impl IntoIterator<Item = (&'a String, &'a Value)>) -> String {
    facts
        .into_iter()
        .map(|(key, value)| format!("{key}: {}", value_in_words(value)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// One value as words: lists joined by commas, objects as `key value` pairs in parentheses,
/// null as "unknown".
pub fn value_in_words(value: &Value) -> String {
    match value {
        Value::Null => "unknown".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "none".to_owned(),
        Value::Array(items) => items
            .iter()
            .map(value_in_words)
            .collect::<Vec<_>>()
            .join(", "),
        Value::Object(map) if map.is_empty() => "none".to_owned(),
        Value::Object(map) => format!(
            "({})",
            map.iter()
                .map(|(k, v)| format!("{k} {}", value_in_words(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A duration in milliseconds: `350 ms`, `2.1 s`, `4 min 5 s`.
pub fn duration_words(ms: i64) -> String {
    match ms {
        ..1000 => format!("{ms} ms"),
        1000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        _ => format!("{} min {} s", ms / 60_000, ms % 60_000 / 1000),
    }
}

/// A time from a detail, as `2026-12-01 04:05 UTC`.
fn time_words(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// A free-text reason, with any JSON object in it (written by an older runbookd) read out in
/// words.
fn words(text: &str) -> String {
    let Some(start) = text.find('{') else {
        return text.to_owned();
    };
    match serde_json::from_str::<Value>(&text[start..]) {
        Ok(Value::Object(map)) => format!("{}{}", &text[..start], facts_in_words(&map)),
        _ => text.to_owned(),
    }
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// An event of `action` as the code writes it: its actor, its detail, and the fact its
    /// sentence must name. The match has no wildcard, so a new action does not build until it
    /// has an example here (and a sentence above).
    fn written(action: AuditAction) -> (&'static str, Value, &'static str) {
        let engine = "runbookd-5f0c2a9e-0d1b-4c57-9a43-3f1d2b7c8e61";
        let intake = |status: &str, intake: &str| {
            json!({
                "delivery_id": 3, "alert_id": 8, "source": "alertmanager",
                "alert_name": "PBSBackupStale", "fingerprint": "9d3c0b4f6a1e2d77",
                "status": status, "intake": intake, "recurrence_of": null,
            })
        };
        let approval_actions = json!([
            {"step": "lazy_unmount", "host": "pbs", "command": "umount -l /mnt/pbs-datastore",
             "changes": "detaches the datastore's NFS mount from PBS, even while it is busy"},
            {"step": "mount_datastore", "host": "pbs", "command": "mount /mnt/pbs-datastore",
             "changes": null},
        ]);
        match action {
            AuditAction::IncidentOpened => {
                ("alertmanager", intake("firing", "opened"), "PBSBackupStale")
            }
            AuditAction::IncidentDeduplicated => (
                "alertmanager",
                intake("firing", "deduplicated"),
                "PBSBackupStale",
            ),
            AuditAction::IncidentSourceResolved => (
                "alertmanager",
                intake("resolved", "resolved"),
                "resolved by its sender",
            ),
            AuditAction::IncidentRunResolved => (
                engine,
                json!({"reason": "the run verified its fix"}),
                "verified its fix",
            ),
            AuditAction::IncidentTimedOut => (
                "engine",
                json!({"reason": "its source never resolves and sent no repeat for 86400s"}),
                "86400s",
            ),
            AuditAction::IncidentLateRepeat => (
                "alertmanager",
                intake("firing", "late_firing"),
                "PBSBackupStale",
            ),
            AuditAction::IncidentUnmatched => (
                "alertmanager",
                json!({"reason": "no playbook's trigger matches alertname=DiskFull"}),
                "alertname=DiskFull",
            ),
            AuditAction::RunAttached => (
                "alertmanager",
                json!({"reason": "run 4 is already active for target pbs"}),
                "run 4",
            ),
            AuditAction::AlertRefused => (
                "forwarder",
                json!({"delivery_id": 3, "position": 2, "alert_name": "PBSBackupStale",
                       "reason": "label backup_id: '4x1' is not a VMID"}),
                "is not a VMID",
            ),
            AuditAction::ResolveUnmatched => (
                "alertmanager",
                intake("resolved", "resolve_unmatched"),
                "no incident was open",
            ),
            AuditAction::RunCreated => (
                "alertmanager",
                json!({"playbook": "pbs-backup-stale", "playbook_hash": "ab12cd34", "target": "pbs",
                       "dry_run": true, "dry_run_by_switch": true}),
                "pbs-backup-stale on pbs, as a dry run because the dry-run switch is on",
            ),
            AuditAction::RunLeased => (
                engine,
                json!({"attempt": 2, "step": "lazy_unmount", "resumed": true}),
                "at step lazy_unmount",
            ),
            AuditAction::RunAdvanced => (
                engine,
                json!({"step": "restart_pbs", "reason": "cause stale_nfs_handles",
                       "cause": "stale_nfs_handles",
                       "evidence": {"log_classes": {"vm/451": "chunk_store"}, "nfs_mounted": true}}),
                "Diagnosis found stale_nfs_handles (evidence: log_classes: (vm/451 chunk_store); nfs_mounted: true); next: restart_pbs",
            ),
            AuditAction::ApprovalRequested => (
                engine,
                json!({"approval_id": 1, "step": "lazy_unmount",
                       "command": "umount -l /mnt/pbs-datastore\nmount /mnt/pbs-datastore",
                       "risk": "high", "expires_at": "2026-12-01T05:00:00Z", "on_timeout": "reject",
                       "actions": approval_actions,
                       "evidence": {"nfs_mounted": false, "stale_active": ["vm/451"]}}),
                "`umount -l /mnt/pbs-datastore` on pbs, then `mount /mnt/pbs-datastore` on pbs (risk high); if nobody decides by 2026-12-01 05:00 UTC, it is rejected",
            ),
            AuditAction::RunFinished => (
                engine,
                json!({"state": "escalated", "outcome": {"cause": "stale_nfs_handles",
                       "evidence": {"nfs_mounted": true},
                       "reason": "remediation step 'restart_pbs' failed: exit 1: Job failed"}}),
                "escalated to a human: remediation step 'restart_pbs' failed",
            ),
            AuditAction::StepStarted => (
                engine,
                json!({"step": "restart_pbs", "host": "pbs", "step_attempt": 3,
                       "command": "systemctl restart proxmox-backup proxmox-backup-proxy"}),
                "`systemctl restart proxmox-backup proxmox-backup-proxy` on pbs",
            ),
            AuditAction::StepFinished => (
                engine,
                json!({"step_attempt": 1, "step": "lazy_unmount", "host": "pbs",
                       "command": "umount -l /mnt/pbs-datastore", "exit_status": 32,
                       "exit_accepted": true, "exit_reason": "nothing was mounted",
                       "duration_ms": 140, "error": null}),
                "The engine ran `umount -l /mnt/pbs-datastore` on pbs in 140 ms: exit 32: nothing was mounted (as the playbook expects)",
            ),
            AuditAction::StepWaiting => (
                engine,
                json!({"step": "restart_pbs", "status": "waiting for its guard",
                       "reason": "probe 'vzdump_running' says the step may not act: vzdump_running: true",
                       "saw": {"probe": "vzdump_running", "facts": {"vzdump_running": true}, "data": {"running": true}, "error": null},
                       "since": "2026-12-01T02:00:00Z", "checked_at": "2026-12-01T02:00:00Z",
                       "gives_up_at": "2026-12-01T06:00:00Z", "every_ms": 30000}),
                "may not act: vzdump_running: true; it gives up at 2026-12-01 06:00 UTC",
            ),
            AuditAction::ApprovalDecided => (
                "alice",
                json!({"approval_id": 1, "decision": "approved", "comment": "mount is gone, go",
                       "step": "mount_datastore", "command": "mount /mnt/pbs-datastore",
                       "actions": [{"step": "mount_datastore", "host": "pbs",
                                    "command": "mount /mnt/pbs-datastore", "changes": null}]}),
                "alice approved `mount /mnt/pbs-datastore` on pbs: ‘mount is gone, go’",
            ),
            AuditAction::SettingChanged => (
                "admin",
                json!({"setting": "paused", "value": true, "reason": "PBS maintenance"}),
                "admin turned pause on: PBS maintenance",
            ),
            AuditAction::BreakerReset => (
                "admin",
                json!({"target": "pbs", "reason": "replaced the NFS server", "failures_before": 3}),
                "circuit breaker of pbs (3 failure(s)",
            ),
            AuditAction::ActionAllowed => (
                engine,
                json!({"action": "restart_pbs", "target": "pbs",
                       "reason": "every safety control passed", "control": null}),
                "restart_pbs on pbs",
            ),
            AuditAction::ActionBlocked => (
                engine,
                json!({"action": "restart_pbs", "target": "pbs", "control": "cooldown",
                       "reason": "restart_pbs on pbs is cooling down until 2026-12-01 04:30 UTC"}),
                "The cooldown safety control stopped restart_pbs",
            ),
            AuditAction::ToolDiagnosed => (
                "agent",
                json!({"playbook": "pbs-backup-stale", "labels": {"backup_id": "451"},
                       "cause": "stale_nfs_handles", "wall_ms": 830}),
                "cause stale_nfs_handles in 830 ms",
            ),
            AuditAction::NotifyAttempt => (
                "notifier",
                json!({"sink": "phone", "event": "approval_requested", "attempt": 2,
                       "outcome": "failed", "status": 502, "error": "HTTP 502", "gave_up": true}),
                "did not reach phone (attempt 2): HTTP 502; gave up",
            ),
            AuditAction::NotifySkipped => (
                "notifier",
                json!({"event_id": 41, "action": "approval.requested", "failures": 5,
                       "error": "database is locked"}),
                "event 41",
            ),
            AuditAction::LinkRefused => (
                "link:phone",
                json!({"reason": "the link was used before", "method": "POST", "remote": "127.0.0.1",
                       "approval_id": 1, "decision": "approve", "sink": "phone"}),
                "approve approval 1 (sent to phone) was refused: the link was used before",
            ),
            AuditAction::AuditPruned => (
                "audit-export",
                json!({"events": 120, "first_id": 1, "last_id": 120,
                       "from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z",
                       "before": "2026-11-02T00:00:00Z", "file": "/var/lib/runbookd/audit-1.jsonl",
                       "sha256": "9f2c", "file_events": 120, "part": 1, "parts": 1}),
                "moved 120 audit events (ids 1 to 120) from 2026-11-01T00:00:00Z to 2026-11-02T00:00:00Z out of the trail into /var/lib/runbookd/audit-1.jsonl",
            ),
            AuditAction::LoginSucceeded => (
                "approver",
                json!({"remote": "192.0.2.7", "role": "approver"}),
                "approver signed in to the web page from 192.0.2.7",
            ),
            AuditAction::LoginFailed => (
                "anonymous",
                json!({"remote": "2001:db8::7", "reason": "the token is not valid"}),
                "from 2001:db8::7 was refused: the token is not valid",
            ),
        }
    }

    #[test]
    fn every_action_the_code_writes_reads_as_a_sentence() {
        let key = regex::Regex::new(r#""\w+":"#).unwrap();
        for &action in AuditAction::ALL {
            let (actor, detail, fact) = written(action);
            let text = sentence_of_stored(action.as_str(), actor, &detail);
            let name = action.as_str();
            // The typed detail writes back every fact it read, under the same key.
            let typed = AuditDetail::read(action, detail.clone());
            assert_eq!(typed.action(), action);
            let back = serde_json::to_value(&typed).unwrap();
            for (key, value) in detail.as_object().unwrap() {
                if !value.is_null() {
                    assert_eq!(back.get(key), Some(value), "{name}.{key}");
                }
            }
            assert!(!text.contains('{') && !text.contains('}'), "{name}: {text}");
            assert!(!key.is_match(&text), "{name}: {text}");
            assert!(
                text.starts_with(|c: char| c.is_alphabetic()),
                "{name} starts with a word: {text}"
            );
            assert!(text.contains(fact), "{name} names {fact:?}: {text}");
            assert!(!text.contains(name), "{name} is said in words: {text}");
        }
        for &action in AuditAction::ALL {
            assert_eq!(AuditAction::parse(action.as_str()), Some(action));
        }
    }

    #[test]
    fn details_written_before_their_facts_rode_along_still_read_as_sentences() {
        let old_cause = json!({"step": "restart_pbs",
            "reason": "cause stale_nfs_handles: {\"log_classes\":{\"vm/451\":\"chunk_store\"}}"});
        assert_eq!(
            sentence_of_stored("run.advanced", "runbookd-1", &old_cause),
            "Diagnosis found stale_nfs_handles (evidence: log_classes: (vm/451 chunk_store)); next: restart_pbs"
        );
        let old_finish = json!({"step_attempt": 7, "exit_status": 0, "error": null});
        assert_eq!(
            sentence_of_stored("step.finished", "runbookd-1", &old_finish),
            "Step attempt 7 finished: exit 0"
        );
        let unknown = sentence_of_stored("audit.from_the_future", "someone", &json!({"n": 1}));
        assert_eq!(unknown, "someone recorded audit.from_the_future");
    }

    #[test]
    fn unchanged_repeats_read_as_how_many_fired_again() {
        let repeats = |deliveries: Value| {
            let detail = json!({"source": "alertmanager", "alert_name": "PBSBackupStale",
                                "intake": "deduplicated", "deliveries": deliveries});
            sentence_of_stored("incident.deduplicated", "alertmanager", &detail)
        };
        assert_eq!(
            repeats(json!([4, 5, 7])),
            "PBSBackupStale (from alertmanager) fired again 3 times, unchanged: counted into the open incident"
        );
        assert_eq!(
            repeats(json!([4])),
            "PBSBackupStale (from alertmanager) fired again, unchanged: counted into the open incident"
        );
    }

    #[test]
    fn an_accepted_exit_reads_as_expected_with_the_playbooks_reason() {
        assert_eq!(
            exit_outcome(32, Some(true), Some("nothing was mounted")),
            ExitOutcome {
                text: "exit 32: nothing was mounted".to_owned(),
                expected: true
            }
        );
        assert!(!exit_outcome(32, Some(false), None).expected);
        assert!(
            !exit_outcome(0, Some(false), None).expected,
            "a playbook may refuse 0"
        );
        assert!(
            exit_outcome(0, None, None).expected,
            "before runbookd kept it: 0 is fine"
        );
        assert!(!exit_outcome(1, None, None).expected);
    }

    #[test]
    fn values_read_as_words() {
        let evidence = json!({"stale_active": ["vm/451", "ct/200"], "nfs_mounted": false,
                              "alert_failure": {"text": "ENOENT", "class": "chunk_store"},
                              "datastore_error": null, "stale_decommissioned": []});
        assert_eq!(
            facts_in_words(evidence.as_object().unwrap()),
            "alert_failure: (class chunk_store, text ENOENT); datastore_error: unknown; \
             nfs_mounted: false; stale_active: vm/451, ct/200; stale_decommissioned: none"
        );
    }
}
