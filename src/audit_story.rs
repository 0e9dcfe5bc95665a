//! The audit trail in words: each event as one sentence with its key facts, and facts (a run's
//! evidence, what a guard saw) as `key: value` words instead of JSON. The one renderer behind
//! the web page's timelines, the CLI's and the demo's, so the three read the same.
//!
//! It works from what the trail stores (action, actor, detail) and nothing else, so the CLI can
//! render what the API returned. A detail written before a key was added still reads as a
//! sentence, with fewer facts.

use serde_json::Value;

use crate::store::audit::AuditAction;

/// One audit event as a sentence, without the time (each surface shows it its own way).
pub fn sentence(action: &str, actor: &str, detail: &Value) -> String {
    let Some(known) = AuditAction::parse(action) else {
        return format!("{} recorded {action}", who(actor));
    };
    let who = who(actor);
    let d = Detail(detail);
    match known {
        AuditAction::IncidentOpened => {
            let alert = d.alert();
            match d.text("intake") {
                Some("recurred") => format!(
                    "{alert} fired again after its incident had ended: a new incident opened{}",
                    d.int("recurrence_of")
                        .map(|i| format!(", a recurrence of incident {i}"))
                        .unwrap_or_default()
                ),
                _ => format!("{alert} fired: a new incident opened"),
            }
        }
        AuditAction::IncidentDeduplicated => {
            format!("{} fired again: counted into the open incident", d.alert())
        }
        AuditAction::IncidentSourceResolved => format!(
            "{} was resolved by its sender: the incident is resolved",
            d.alert()
        ),
        AuditAction::IncidentRunResolved => {
            format!(
                "The incident is resolved: {}",
                d.reason_or("its run verified its fix")
            )
        }
        AuditAction::IncidentTimedOut => format!(
            "The incident ended by timeout: {}",
            d.reason_or("its sender stopped repeating it")
        ),
        AuditAction::IncidentLateRepeat => match d.text("intake") {
            Some("late_firing") => format!(
                "A late firing of {} arrived after its sender resolved it (an HA peer catching up): attached, nothing runs",
                d.alert()
            ),
            _ => format!(
                "{} fired again just after a fix, before its sender caught up: attached, nothing runs",
                d.alert()
            ),
        },
        AuditAction::IncidentUnmatched => {
            format!(
                "No playbook matches the incident: {}",
                d.reason_or("no trigger matched")
            )
        }
        AuditAction::RunAttached => format!(
            "The incident joined a run already under way: {}",
            d.reason_or("its target already had an active run")
        ),
        AuditAction::AlertRefused => {
            let name = d.text("alert_name").unwrap_or("an alert");
            match d.text("reason") {
                Some(reason) => format!("{who} sent {name}, which was refused: {reason}"),
                None => format!("{who} sent {name}, which was refused"),
            }
        }
        AuditAction::ResolveUnmatched => format!(
            "{} was resolved by its sender, but no incident was open for it",
            d.alert()
        ),
        AuditAction::RunCreated => {
            let mut text = format!(
                "{who} started a run of {} on {}",
                d.text("playbook").unwrap_or("a playbook"),
                d.text("target").unwrap_or("its target")
            );
            if d.flag("dry_run_by_switch") {
                text.push_str(", as a dry run because the dry-run switch is on");
            } else if d.flag("dry_run") {
                text.push_str(", as a dry run");
            }
            text
        }
        AuditAction::RunLeased => match (d.text("step"), d.flag("resumed")) {
            (None | Some("diagnose"), false) => {
                format!("{who} took up the run and began diagnosing")
            }
            (None | Some("diagnose"), true) => {
                format!("{who} took up the run again{}, from diagnosis", d.attempt())
            }
            (Some(step), _) => {
                format!("{who} took up the run again{}, at step {step}", d.attempt())
            }
        },
        AuditAction::RunAdvanced => advanced(&who, &d),
        AuditAction::ApprovalRequested => {
            let what = d.actions();
            let mut text = format!(
                "{who} asked for approval of {}: {what}",
                d.text("step").unwrap_or("a step")
            );
            if let Some(risk) = d.text("risk") {
                text.push_str(&format!(" (risk {risk})"));
            }
            if let Some(expires) = d.text("expires_at") {
                text.push_str(&format!(
                    "; if nobody decides by {}, {}",
                    time_words(expires),
                    if_nobody_decides(d.text("on_timeout").unwrap_or("reject"))
                ));
            }
            text
        }
        AuditAction::RunFinished => finished(&who, &d),
        AuditAction::StepStarted => format!(
            "{who} started step {}: {}",
            d.text("step").unwrap_or("?"),
            d.command_on_host()
        ),
        AuditAction::StepFinished => step_finished(&who, &d),
        AuditAction::StepWaiting => {
            let step = d.text("step").unwrap_or("a step");
            match d.text("status") {
                Some("acting") => format!("Step {step}'s guard lets it act now"),
                _ => {
                    let mut text = format!(
                        "Step {step} waits for its guard: {}",
                        d.reason_or("it may not act yet")
                    );
                    if let Some(until) = d.text("gives_up_at") {
                        text.push_str(&format!("; it gives up at {}", time_words(until)));
                    }
                    text
                }
            }
        }
        AuditAction::ApprovalDecided => decided(&who, &d),
        AuditAction::SettingChanged => {
            let setting = match d.text("setting") {
                Some("paused") => "pause",
                Some("dry_run") => "dry run",
                Some(other) => other,
                None => "a setting",
            };
            let on = if d.flag("value") { "on" } else { "off" };
            match d.text("reason") {
                Some(reason) => format!("{who} turned {setting} {on}: {reason}"),
                None => format!("{who} turned {setting} {on}"),
            }
        }
        AuditAction::BreakerReset => format!(
            "{who} reset the circuit breaker of {}{}: {}",
            d.text("target").unwrap_or("a target"),
            d.int("failures_before")
                .map(|n| format!(" ({n} failure(s) counted until then)"))
                .unwrap_or_default(),
            d.reason_or("no reason given")
        ),
        AuditAction::ActionAllowed => format!(
            "The safety controls let {} on {} through",
            d.text("action").unwrap_or("an action"),
            d.text("target").unwrap_or("its target")
        ),
        AuditAction::ActionBlocked => format!(
            "The {} safety control stopped {} on {}: {}",
            d.text("control").unwrap_or("a"),
            d.text("action").unwrap_or("an action"),
            d.text("target").unwrap_or("its target"),
            d.reason_or("no reason given")
        ),
        AuditAction::ToolDiagnosed => format!(
            "{who} ran the diagnosis of {} through the diagnose tool: {}{}",
            d.text("playbook").unwrap_or("a playbook"),
            d.text("cause")
                .map(|c| format!("cause {c}"))
                .unwrap_or_else(|| "no known cause".to_owned()),
            d.int("wall_ms")
                .map(|ms| format!(" in {}", duration_words(ms)))
                .unwrap_or_default()
        ),
        AuditAction::NotifyAttempt => {
            let event = d.text("event").unwrap_or("a").replace('_', " ");
            let sink = d.text("sink").unwrap_or("a sink");
            let attempt = d.int("attempt").unwrap_or(1);
            match d.text("outcome") {
                Some("delivered") => format!(
                    "The {event} notification reached {sink}{} (attempt {attempt})",
                    d.int("status")
                        .map(|s| format!(" with HTTP {s}"))
                        .unwrap_or_default()
                ),
                _ => format!(
                    "The {event} notification did not reach {sink} (attempt {attempt}): {}{}",
                    d.text("error").unwrap_or("no answer"),
                    if d.flag("gave_up") { "; gave up" } else { "" }
                ),
            }
        }
        AuditAction::NotifySkipped => format!(
            "The notifier gave up on event {} ({}) after {} failure(s): {}",
            d.int("event_id").map_or("?".to_owned(), |i| i.to_string()),
            d.text("action").unwrap_or("an event"),
            d.int("failures").unwrap_or(0),
            d.text("error").unwrap_or("no error recorded")
        ),
        AuditAction::LinkRefused => {
            let decision = d.text("decision").unwrap_or("decide");
            let verb = match decision {
                "approve" | "approved" => "approve",
                "reject" | "rejected" => "reject",
                other => other,
            };
            format!(
                "A one-tap link to {verb}{}{} was refused: {}",
                d.int("approval_id")
                    .map(|i| format!(" approval {i}"))
                    .unwrap_or_default(),
                d.text("sink")
                    .map(|s| format!(" (sent to {s})"))
                    .unwrap_or_default(),
                d.reason_or("no reason given")
            )
        }
        AuditAction::AuditPruned => format!(
            "{who} moved {} audit events{}{} out of the trail into {}{}",
            d.int("events").unwrap_or(0),
            match (d.int("first_id"), d.int("last_id")) {
                (Some(first), Some(last)) => format!(" (ids {first} to {last})"),
                _ => String::new(),
            },
            match (d.text("from"), d.text("to")) {
                (Some(from), Some(to)) => format!(" from {from} to {to}"),
                _ => String::new(),
            },
            d.text("file").unwrap_or("an export file"),
            d.text("sha256")
                .map(|sha| format!(", SHA-256 {sha}"))
                .unwrap_or_default()
        ),
        AuditAction::LoginSucceeded => format!(
            "{who} signed in to the web page{}",
            d.text("remote")
                .map(|r| format!(" from {r}"))
                .unwrap_or_default()
        ),
        AuditAction::LoginFailed => format!(
            "A sign-in to the web page{} was refused: {}",
            d.text("remote")
                .map(|r| format!(" from {r}"))
                .unwrap_or_default(),
            d.reason_or("no reason given")
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
    if on_timeout == "approve" {
        "it is approved and the run goes on"
    } else {
        "it is rejected and the run escalates to a human"
    }
}

fn advanced(who: &str, d: &Detail<'_>) -> String {
    let next = d.text("step");
    let then = |text: String| match next {
        Some("done") => format!("{text}; every step is done"),
        Some(step) => format!("{text}; next: {step}"),
        None => text,
    };
    if d.text("state") == Some("pending") {
        return format!(
            "{who} set the run aside ({}); it waits to be taken up again",
            d.reason_or("no reason given")
        );
    }
    if let Some(cause) = d.text("cause") {
        return then(diagnosis(cause, d.0.get("evidence")));
    }
    match d.text("reason") {
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

fn finished(who: &str, d: &Detail<'_>) -> String {
    let outcome = d.0.get("outcome").filter(|o| o.is_object());
    let reason = outcome
        .and_then(|o| o.get("reason"))
        .or_else(|| d.0.get("reason"))
        .and_then(Value::as_str)
        .map(words);
    let cause = outcome.and_then(|o| o.get("cause")).and_then(Value::as_str);
    match d.text("state") {
        Some("resolved") => match (cause, reason) {
            (_, Some(reason)) => format!("The run ended resolved: {reason}"),
            (Some(cause), None) => format!("The run ended resolved: cause {cause}, fix verified"),
            (None, None) => "The run ended resolved".to_owned(),
        },
        Some("escalated") => format!(
            "The run escalated to a human: {}",
            reason.as_deref().unwrap_or("no reason was recorded")
        ),
        Some("cancelled") => format!(
            "{who} cancelled the run: {}",
            reason.as_deref().unwrap_or("no reason given")
        ),
        Some("refused") => format!(
            "The run was refused: {}",
            reason.as_deref().unwrap_or("no reason given")
        ),
        Some("rehearsed") => format!(
            "The dry run ended: {}",
            reason.as_deref().unwrap_or("nothing was changed")
        ),
        Some(state) => format!("The run ended {state}"),
        None => "The run ended".to_owned(),
    }
}

fn step_finished(who: &str, d: &Detail<'_>) -> String {
    let step = d.text("step");
    let took = d
        .int("duration_ms")
        .map(|ms| format!(" in {}", duration_words(ms)))
        .unwrap_or_default();
    if let Some(error) = d.text("error") {
        return match step {
            Some(step) => format!(
                "Step {step} ({}) ended without success: {}",
                d.command_on_host(),
                words(error)
            ),
            None => format!("A step ended without success: {}", words(error)),
        };
    }
    let Some(command) = d.text("command") else {
        // Written before the command rode along.
        return match d.int("exit_status") {
            Some(exit) => format!(
                "Step attempt {} finished: {}",
                d.int("step_attempt").unwrap_or(0),
                exit_outcome(exit, None, None).text
            ),
            None => format!(
                "Step attempt {} finished",
                d.int("step_attempt").unwrap_or(0)
            ),
        };
    };
    let place = d
        .text("host")
        .map(|h| format!(" on {h}"))
        .unwrap_or_default();
    match d.int("exit_status") {
        Some(exit) => {
            let outcome = exit_outcome(
                exit,
                d.0.get("exit_accepted").and_then(Value::as_bool),
                d.text("exit_reason"),
            );
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

fn decided(who: &str, d: &Detail<'_>) -> String {
    let what = d.actions();
    if d.0.get("decision").is_none()
        && let Some(on_timeout) = d.text("on_timeout")
    {
        return format!(
            "Nobody decided on {what} in time: {}",
            if on_timeout == "approve" {
                "on_timeout is approve, so it was approved and the run goes on"
            } else {
                "on_timeout is reject, so it was rejected and the run escalates"
            }
        );
    }
    let decision = d.text("decision").unwrap_or("decided");
    match d.text("comment").filter(|c| !c.trim().is_empty()) {
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

/// An RFC 3339 time from a detail, as `2026-12-01 04:05 UTC`.
fn time_words(text: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.to_utc().format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|_| text.to_owned())
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

/// Typed reads of an event's detail.
struct Detail<'a>(&'a Value);

impl Detail<'_> {
    fn text(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(Value::as_str)
    }

    fn int(&self, key: &str) -> Option<i64> {
        self.0.get(key).and_then(Value::as_i64)
    }

    fn flag(&self, key: &str) -> bool {
        self.0.get(key).and_then(Value::as_bool).unwrap_or(false)
    }

    fn reason_or<'b>(&'b self, otherwise: &'b str) -> String {
        self.text("reason")
            .map(words)
            .unwrap_or(otherwise.to_owned())
    }

    /// `PBSBackupStale (source alertmanager)`.
    fn alert(&self) -> String {
        let name = self.text("alert_name").unwrap_or("An alert");
        match self.text("source") {
            Some(source) => format!("{name} (from {source})"),
            None => name.to_owned(),
        }
    }

    fn attempt(&self) -> String {
        self.int("attempt")
            .map(|a| format!(" (lease attempt {a})"))
            .unwrap_or_default()
    }

    /// `` `command` on host ``, or the bare command for an API request.
    fn command_on_host(&self) -> String {
        let command = self.text("command").unwrap_or("its command");
        match self.text("host") {
            Some(host) => format!("`{command}` on {host}"),
            None => format!("`{command}`"),
        }
    }

    /// What an approval covers: each action's command and host, or its command alone.
    fn actions(&self) -> String {
        let listed: Vec<String> = self
            .0
            .get("actions")
            .and_then(Value::as_array)
            .map(|actions| {
                actions
                    .iter()
                    .filter_map(|a| {
                        let command = a.get("command")?.as_str()?;
                        Some(match a.get("host").and_then(Value::as_str) {
                            Some(host) => format!("`{command}` on {host}"),
                            None => format!("`{command}`"),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        if !listed.is_empty() {
            return listed.join(", then ");
        }
        match (self.text("command"), self.int("approval_id")) {
            (Some(command), _) => format!(
                "`{}`",
                command.lines().collect::<Vec<_>>().join("`, then `")
            ),
            (None, Some(id)) => format!("approval {id}"),
            (None, None) => "an approval".to_owned(),
        }
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
            let text = sentence(action.as_str(), actor, &detail);
            let name = action.as_str();
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
            sentence("run.advanced", "runbookd-1", &old_cause),
            "Diagnosis found stale_nfs_handles (evidence: log_classes: (vm/451 chunk_store)); next: restart_pbs"
        );
        let old_finish = json!({"step_attempt": 7, "exit_status": 0, "error": null});
        assert_eq!(
            sentence("step.finished", "runbookd-1", &old_finish),
            "Step attempt 7 finished: exit 0"
        );
        let unknown = sentence("audit.from_the_future", "someone", &json!({"n": 1}));
        assert_eq!(unknown, "someone recorded audit.from_the_future");
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
