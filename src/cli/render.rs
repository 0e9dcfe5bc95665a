//! Text for people: tables of incidents and approvals, a run's story (state, cause, evidence,
//! steps with their exact commands, approvals, the audit timeline). Every function returns a
//! `String`; those that show relative times ("5m ago") take "now", and those that colour take a
//! [`Paint`], so tests see the exact text without colour.

use std::fmt::Write;

use anstyle::{AnsiColor, Style};
use chrono::{DateTime, Utc};
use comfy_table::{ContentArrangement, Table};

use crate::audit_story::{exit_outcome, if_nobody_decides, sentence_of_stored, value_in_words};

use super::model::{
    Approval, AuditEvent, Breaker, DecisionAnswer, Incident, IncidentDetail, RunDetail,
    RunWithSteps, SafetyOverview, StepAttempt, SwitchSetting,
};

/// At most this many characters of a step's output are shown.
const EXCERPT_CHARS: usize = 200;
/// And at most this many lines of it.
const EXCERPT_LINES: usize = 3;

/// Colour, or none: ANSI styles only when writing to a terminal that wants them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paint {
    pub color: bool,
}

impl Paint {
    pub const PLAIN: Self = Self { color: false };

    /// Colour when stdout is a terminal and `NO_COLOR` is unset or empty (no-color.org).
    pub fn for_stdout() -> Self {
        use std::io::IsTerminal;
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Self {
            color: std::io::stdout().is_terminal() && !no_color,
        }
    }

    fn style(self, style: Style, text: &str) -> String {
        if self.color {
            format!("{}{text}{}", style.render(), style.render_reset())
        } else {
            text.to_owned()
        }
    }

    fn bold(self, text: &str) -> String {
        self.style(Style::new().bold(), text)
    }

    fn dim(self, text: &str) -> String {
        self.style(Style::new().dimmed(), text)
    }

    /// Something that stops automation (an open breaker, the kill switch), in red.
    fn alarm(self, text: &str) -> String {
        self.style(
            Style::new().fg_color(Some(AnsiColor::Red.into())).bold(),
            text,
        )
    }

    /// Something that changes what runs do without stopping them (dry-run), in cyan.
    fn notice(self, text: &str) -> String {
        self.style(
            Style::new().fg_color(Some(AnsiColor::Cyan.into())).bold(),
            text,
        )
    }

    /// A state word, coloured by what it means for the person reading.
    pub(super) fn state(self, state: &str) -> String {
        let color = match state {
            "resolved" | "approved" | "finished" | "fresh" => AnsiColor::Green,
            "waiting_approval" | "pending" | "running" | "started" | "open" => AnsiColor::Yellow,
            "escalated" | "rejected" | "expired" | "failed" | "refused" | "stale" => AnsiColor::Red,
            "rehearsed" => AnsiColor::Cyan,
            _ => return state.to_owned(),
        };
        self.style(Style::new().fg_color(Some(color.into())).bold(), state)
    }
}

/// `2024-05-01 10:00:00Z`.
pub(super) fn time(at: Option<DateTime<Utc>>) -> String {
    at.map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|| "-".to_owned())
}

/// A short human span: `45s`, `12m`, `3h05m`, `2d4h`.
fn span(seconds: i64) -> String {
    let s = seconds.abs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

pub(super) fn ago(at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match at {
        Some(at) => format!("{} ago", span((now - at).num_seconds())),
        None => "-".to_owned(),
    }
}

/// When an approval expires, relative to now.
fn expiry(approval: &Approval, now: DateTime<Utc>) -> String {
    match approval.expires_at {
        Some(at) if at > now => format!("in {}", span((at - now).num_seconds())),
        Some(at) if approval.status == "pending" => {
            format!("passed {} ago", span((now - at).num_seconds()))
        }
        Some(at) => format!("{} ago", span((now - at).num_seconds())),
        None => "-".to_owned(),
    }
}

fn duration(ms: Option<i64>) -> String {
    match ms {
        None => "-".to_owned(),
        Some(ms) if ms < 1000 => format!("{ms} ms"),
        Some(ms) if ms < 60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        Some(ms) => span(ms / 1000),
    }
}

/// A table without borders: a header line, one line per row, columns aligned. Rows never
/// wrap, so a whole line can be coloured without breaking the alignment.
pub(super) fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_style(comfy_table::presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().copied());
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    table
}

/// The table's lines with the header in bold.
pub(super) fn table_text(table: &Table, paint: Paint) -> String {
    let mut out = String::new();
    for (n, line) in table.lines().enumerate() {
        let line = line.trim_end();
        if n == 0 {
            out.push_str(&paint.bold(line));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// The incidents list, each row with its newest run's id and state (`latest_run`, which the
/// list answer carries), or `-` when no playbook ran.
pub fn incidents(list: &[Incident], now: DateTime<Utc>, paint: Paint) -> String {
    if list.is_empty() {
        return "no incidents\n".to_owned();
    }
    let mut t = table(&[
        "ID",
        "STATUS",
        "NAME",
        "SEVERITY",
        "COUNT",
        "LAST SEEN",
        "RUN",
    ]);
    for incident in list {
        t.add_row(vec![
            incident.id.to_string(),
            incident.status.clone(),
            incident.name.clone(),
            incident.severity.clone(),
            incident.alert_count.to_string(),
            format!(
                "{} ({})",
                time(incident.last_seen),
                ago(incident.last_seen, now)
            ),
            match (&incident.latest_run, &incident.unmatched_reason) {
                (Some(r), _) => format!("{} {}", r.id, r.state),
                (None, Some(_)) => "unmatched".to_owned(),
                (None, None) => "-".to_owned(),
            },
        ]);
    }
    table_text(&t, paint)
}

/// The approvals, one card each: the host and exact command of every action, what it changes,
/// where it stands, and what happens if nobody decides.
pub fn approvals(list: &[Approval], now: DateTime<Utc>, paint: Paint) -> String {
    if list.is_empty() {
        return "no approvals\n".to_owned();
    }
    list.iter()
        .map(|approval| approval_text(approval, now, paint))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One incident: what it is, then each of its runs, then its timeline.
pub fn incident(detail: &IncidentDetail, now: DateTime<Utc>, paint: Paint) -> String {
    let i = &detail.incident;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {}  {}",
        paint.bold(&format!("incident {}", i.id)),
        i.name,
        paint.state(&i.status)
    );
    let _ = writeln!(
        out,
        "  severity {}, source {}, {} notification(s)",
        or_dash(&i.severity),
        or_dash(&i.source),
        i.alert_count
    );
    let _ = writeln!(
        out,
        "  first seen {}, last seen {} ({}){}",
        time(i.first_seen),
        time(i.last_seen),
        ago(i.last_seen, now),
        i.resolved_at
            .map(|t| format!(", resolved {}", time(Some(t))))
            .unwrap_or_default()
    );
    match (i.resolved_by.as_deref(), i.resolved_by_run) {
        (Some("run"), Some(run)) => {
            let _ = writeln!(out, "  resolved by run {run}, which verified its fix");
        }
        (Some("timeout"), _) => {
            let _ = writeln!(
                out,
                "  resolved: its sender stopped repeating it (resolve timeout)"
            );
        }
        (Some("source"), _) => {
            let _ = writeln!(out, "  resolved by its sender");
        }
        _ => {}
    }
    if let Some(earlier) = i.recurrence_of {
        let _ = writeln!(out, "  recurrence of incident {earlier}");
    }
    if !i.labels.is_empty() {
        let labels: Vec<String> = i
            .labels
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    v.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| v.to_string())
                )
            })
            .collect();
        let _ = writeln!(out, "  labels {}", labels.join(" "));
    }
    match (&i.unmatched_reason, detail.runs.is_empty()) {
        (Some(reason), _) => {
            let _ = writeln!(out, "\n{} {reason}", paint.bold("unmatched:"));
        }
        (None, true) => {
            let _ = writeln!(out, "\nno run yet");
        }
        (None, false) => {}
    }
    for run in &detail.runs {
        out.push('\n');
        out.push_str(&run_body(run, now, paint));
        let _ = writeln!(
            out,
            "  {}",
            paint.dim(&format!(
                "the run's timeline: runbookd runs show {}",
                run.run.id
            ))
        );
    }
    out.push('\n');
    out.push_str(&timeline(&detail.timeline, paint));
    out
}

/// One run: its state, cause and evidence, steps, approvals, then its timeline.
pub fn run(detail: &RunDetail, now: DateTime<Utc>, paint: Paint) -> String {
    let mut out = run_body(&detail.run, now, paint);
    out.push('\n');
    out.push_str(&timeline(&detail.timeline, paint));
    out
}

fn run_body(r: &RunWithSteps, now: DateTime<Utc>, paint: Paint) -> String {
    let run = &r.run;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {} on {}  {}{}{}",
        paint.bold(&format!("run {}", run.id)),
        run.playbook,
        or_dash(&run.target),
        paint.state(&run.state),
        run.step
            .as_deref()
            .filter(|_| !matches!(
                run.state.as_str(),
                "resolved" | "escalated" | "cancelled" | "refused" | "rehearsed"
            ))
            .map(|s| format!(" at step {s}"))
            .unwrap_or_default(),
        if run.dry_run { " (dry run)" } else { "" }
    );
    let _ = writeln!(
        out,
        "  {}started {}{}{}",
        run.incident_id
            .map(|i| format!("incident {i}, "))
            .unwrap_or_default(),
        time(run.created_at),
        run.finished_at
            .map(|t| format!(", finished {}", time(Some(t))))
            .unwrap_or_default(),
        if run.finished_at.is_none() {
            format!(", updated {}", ago(run.updated_at, now))
        } else {
            String::new()
        }
    );
    match run.cause() {
        Some(cause) => {
            let _ = writeln!(out, "  cause {}", paint.bold(cause));
        }
        None if run.state == "running" || run.state == "pending" => {
            let _ = writeln!(out, "  cause not known yet (diagnosing)");
        }
        None => {}
    }
    if let Some(reason) = run.reason() {
        let _ = writeln!(out, "  reason {reason}");
    }
    if let Some(evidence) = run.evidence() {
        let _ = writeln!(out, "  evidence");
        for (key, value) in evidence {
            let _ = writeln!(out, "    {key}: {}", truncate(&value_in_words(value), 300));
        }
    }
    if r.steps.is_empty() {
        let _ = writeln!(out, "\n{}", paint.bold("steps: none yet"));
    } else {
        let _ = writeln!(out, "\n{}", paint.bold("steps"));
        for (n, step) in r.steps.iter().enumerate() {
            out.push_str(&step_text(n + 1, step, paint));
        }
    }
    if !r.approvals.is_empty() {
        let _ = writeln!(out, "\n{}", paint.bold("approvals"));
        for approval in &r.approvals {
            out.push_str(&approval_text(approval, now, paint));
        }
    }
    out
}

fn step_text(n: usize, step: &StepAttempt, paint: Paint) -> String {
    let mut out = String::new();
    let mut facts = vec![paint.state(&step.status)];
    if let Some(exit) = step.exit_status {
        let exit = exit_outcome(exit, step.exit_accepted, step.exit_reason.as_deref());
        facts.push(match (exit.expected, step.exit_status) {
            (true, Some(0)) => exit.text,
            (true, _) => format!("{} (expected)", exit.text),
            (false, _) => paint.alarm(&exit.text),
        });
    }
    if step.duration_ms.is_some() {
        facts.push(duration(step.duration_ms));
    }
    let _ = writeln!(
        out,
        "  {n}. {}{}  {}  {}",
        step.step,
        step.host
            .as_deref()
            .map(|h| format!(" on {h}"))
            .unwrap_or_default(),
        facts.join(", "),
        paint.dim(&time(step.started_at))
    );
    let _ = writeln!(out, "     $ {}", step.command);
    if let Some(error) = step.error.as_deref().filter(|e| !e.is_empty()) {
        let _ = writeln!(out, "     error: {}", one_line(error));
    }
    let output = [step.stdout.as_deref(), step.stderr.as_deref()]
        .into_iter()
        .flatten()
        .find(|o| !o.trim().is_empty());
    if let Some(output) = output {
        for line in excerpt(output) {
            let _ = writeln!(out, "     {} {line}", paint.dim("│"));
        }
    }
    out
}

/// One approval: where each command runs and what it changes, its decision, or what happens
/// if nobody decides.
fn approval_text(a: &Approval, now: DateTime<Utc>, paint: Paint) -> String {
    let mut out = String::new();
    let decision = match (&a.decided_by, a.decided_at) {
        (Some(by), at) => format!(" by {by} at {}", time(at)),
        _ if a.status == "pending" => format!(
            ", expires {} ({}){}",
            time(a.expires_at),
            expiry(a, now),
            if a.on_timeout.is_empty() {
                String::new()
            } else {
                format!(", then {}", a.on_timeout)
            }
        ),
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "  approval {} for {}  {}{decision}  risk {}  run {}",
        a.id,
        a.step,
        paint.state(&a.status),
        or_dash(&a.risk),
        a.run_id
    );
    match a.actions.as_deref().filter(|actions| !actions.is_empty()) {
        Some(actions) => {
            for action in actions {
                let place = action
                    .host
                    .as_deref()
                    .map(|h| format!("on {h}"))
                    .unwrap_or_else(|| "through the API".to_owned());
                let _ = writeln!(out, "     {place}: $ {}", action.command);
                if let Some(changes) = &action.changes {
                    let _ = writeln!(out, "       changes: {changes}");
                }
            }
        }
        None => {
            let _ = writeln!(out, "     $ {}", a.command);
        }
    }
    if a.status == "pending" {
        let _ = writeln!(
            out,
            "     if nobody decides by {} ({}): {}",
            time(a.expires_at),
            expiry(a, now),
            if_nobody_decides(&a.on_timeout)
        );
    }
    if let Some(comment) = a.comment.as_deref().filter(|c| !c.is_empty()) {
        let _ = writeln!(out, "     comment: {}", one_line(comment));
    }
    out
}

/// The audit trail: each event's time, a sentence saying what happened, and its action name
/// (`--json` has the raw detail).
pub fn timeline(events: &[AuditEvent], paint: Paint) -> String {
    if events.is_empty() {
        return format!("{}\n", paint.bold("timeline: empty"));
    }
    let mut out = format!("{}\n", paint.bold("timeline"));
    for event in events {
        let _ = writeln!(
            out,
            "{}  {}  {}",
            paint.dim(&event.at.format("%Y-%m-%d %H:%M:%S%.3fZ").to_string()),
            one_line(&sentence_of_stored(
                &event.action,
                &event.actor,
                &event.detail
            )),
            paint.dim(&format!("[{}]", event.action))
        );
    }
    out
}

/// What `approve`/`reject` did, and whether it was this call that decided.
pub fn decision(answer: &DecisionAnswer, wanted: &str, paint: Paint) -> String {
    let a = &answer.approval;
    let by = a.decided_by.as_deref().unwrap_or("?");
    let mut out = if answer.decided_now {
        format!(
            "approval {} {} by {by}: run {} step {}\n",
            a.id,
            paint.state(&a.status),
            a.run_id,
            a.step
        )
    } else if a.status == wanted {
        format!(
            "approval {} was already {} by {by} at {}; nothing changed\n",
            a.id,
            paint.state(&a.status),
            time(a.decided_at)
        )
    } else {
        format!(
            "approval {} was not {wanted}: it is {}{}; the first decision stands\n",
            a.id,
            paint.state(&a.status),
            a.decided_by
                .as_deref()
                .map(|by| format!(" by {by} at {}", time(a.decided_at)))
                .unwrap_or_default()
        )
    };
    let _ = writeln!(out, "  $ {}", a.command);
    if let Some(comment) = a.comment.as_deref().filter(|c| !c.is_empty()) {
        let _ = writeln!(out, "  comment: {}", one_line(comment));
    }
    out
}

/// The kill switch after `pause`/`resume`.
pub fn switch(paused: bool) -> String {
    if paused {
        "paused: new runs are held and running runs stop at their next step boundary\n".to_owned()
    } else {
        "resumed: runs go on\n".to_owned()
    }
}

/// Every safety control: the switches, the hourly budget, each target's breaker, cooldowns.
pub fn safety(overview: &SafetyOverview, now: DateTime<Utc>, paint: Paint) -> String {
    let mut out = String::new();
    let switch = |name: &str, setting: &SwitchSetting, on_text: &str, off_text: &str| {
        let changed = match (&setting.changed_by, setting.changed_at) {
            (Some(by), at) => format!(
                " (set by {by} {}{})",
                ago(at, now),
                setting
                    .reason
                    .as_deref()
                    .map(|r| format!(": {}", one_line(r)))
                    .unwrap_or_default()
            ),
            _ => String::new(),
        };
        let text = if setting.on { on_text } else { off_text };
        format!("{} {text}{changed}\n", paint.bold(name))
    };
    out.push_str(&switch(
        "pause",
        &overview.paused,
        &paint.alarm("on: new runs wait"),
        "off",
    ));
    out.push_str(&switch(
        "dry-run",
        &overview.dry_run,
        &paint.notice("on: new runs are dry runs"),
        "off",
    ));
    let _ = writeln!(
        out,
        "{} {} of {} mutating actions used in the last hour",
        paint.bold("budget"),
        overview.hourly_budget.used,
        overview.hourly_budget.limit
    );
    let _ = writeln!(out, "\n{}", paint.bold("circuit breakers"));
    if overview.breakers.is_empty() {
        let _ = writeln!(out, "  none: no playbook names a target");
    }
    for breaker in &overview.breakers {
        let _ = write!(out, "  {}", self::breaker(breaker, now, paint));
    }
    let _ = writeln!(out, "\n{}", paint.bold("cooldowns in force"));
    if overview.cooldowns.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for cooldown in &overview.cooldowns {
        let _ = writeln!(
            out,
            "  {} on {} until {} (in {})",
            cooldown.action,
            cooldown.target,
            time(Some(cooldown.until)),
            span((cooldown.until - now).num_seconds())
        );
    }
    out
}

/// One target's breaker on one line: open or closed, what it counts, its last reset.
pub fn breaker(b: &Breaker, now: DateTime<Utc>, paint: Paint) -> String {
    let state = if b.open {
        paint.alarm("open")
    } else {
        "closed".to_owned()
    };
    let closes = b
        .closes_at
        .map(|at| {
            format!(
                ", closes {} (in {})",
                time(Some(at)),
                span((at - now).num_seconds())
            )
        })
        .unwrap_or_default();
    let reset = b
        .last_reset
        .as_ref()
        .map(|r| {
            format!(
                "; last reset by {} at {}: {}",
                r.by,
                time(Some(r.at)),
                one_line(&r.reason)
            )
        })
        .unwrap_or_default();
    format!(
        "{} {state}: {} of {} failures in {} h{closes}{reset}\n",
        b.target,
        b.failures,
        b.limit,
        if b.window_hours == 0 {
            24
        } else {
            b.window_hours
        }
    )
}

/// Global dry-run after `dry-run on|off`.
pub fn dry_run(on: bool) -> String {
    if on {
        "dry-run on: new runs record what they would run and change nothing\n".to_owned()
    } else {
        "dry-run off: new runs act\n".to_owned()
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(max - 1).collect::<String>())
    }
}

/// The first few non-empty lines of an output, capped in length.
fn excerpt(output: &str) -> Vec<String> {
    let lines: Vec<&str> = output.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut shown: Vec<String> = Vec::new();
    let mut budget = EXCERPT_CHARS;
    for line in lines.iter().take(EXCERPT_LINES) {
        if budget == 0 {
            break;
        }
        let line = truncate(line.trim_end(), budget);
        budget = budget.saturating_sub(line.chars().count());
        shown.push(line);
    }
    if lines.len() > shown.len() {
        shown.push(format!("… {} more line(s)", lines.len() - shown.len()));
    }
    shown
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::cli::model::{IncidentPage, RunDetail};

    fn now() -> DateTime<Utc> {
        "2024-05-01T12:00:00Z".parse().unwrap()
    }

    fn run_detail() -> RunDetail {
        serde_json::from_value(json!({
            "run": {
                "id": 7, "incident_id": 3, "playbook": "pbs-backup-stale", "target": "pbs-datastore",
                "state": "waiting_approval", "step": "lazy_unmount", "dry_run": false, "attempt": 1,
                "facts": {"labels": {}, "cause": "nfs_mount_missing",
                          "evidence": {"nfs_mounted": false, "df_error": "No such file or directory"}},
                "outcome": null,
                "created_at": "2024-05-01T11:58:00Z", "updated_at": "2024-05-01T11:59:00Z",
                "finished_at": null, "some_future_field": 1
            },
            "steps": [{
                "id": 1, "run_id": 7, "step": "probe", "run_attempt": 1, "status": "finished",
                "host": "pbs", "command": "findmnt /mnt/datastore", "exit_status": 1,
                "stdout": "", "stderr": "line one\nline two\nline three\nline four\n", "error": null,
                "started_at": "2024-05-01T11:58:01Z", "finished_at": "2024-05-01T11:58:01Z",
                "duration_ms": 42
            }, {
                "id": 2, "run_id": 7, "step": "lazy_unmount", "run_attempt": 2, "status": "finished",
                "host": "pbs", "command": "umount -l /mnt/datastore", "exit_status": 32,
                "stdout": "", "stderr": "umount: /mnt/datastore: not mounted.", "error": null,
                "started_at": "2024-05-01T12:00:01Z", "finished_at": "2024-05-01T12:00:01Z",
                "duration_ms": 140, "exit_accepted": true, "exit_reason": "nothing was mounted"
            }],
            "approvals": [{
                "id": 4, "run_id": 7, "step": "lazy_unmount", "status": "pending",
                "command": "umount -l /mnt/datastore", "risk": "high", "evidence": {},
                "on_timeout": "reject", "requested_at": "2024-05-01T11:59:00Z",
                "expires_at": "2024-05-01T12:30:00Z", "decided_by": null, "decided_at": null,
                "comment": null
            }],
            "timeline": [{
                "id": 1, "at": "2024-05-01T11:59:00.250Z", "actor": "runbookd-1",
                "action": "approval.requested", "incident_id": 3, "run_id": 7,
                "detail": {"step": "lazy_unmount", "approval_id": 4, "other": "ignored"}
            }]
        }))
        .unwrap()
    }

    #[test]
    fn a_run_shows_cause_evidence_steps_approvals_and_timeline() {
        let text = run(&run_detail(), now(), Paint::PLAIN);
        for expected in [
            "run 7 pbs-backup-stale on pbs-datastore  waiting_approval at step lazy_unmount",
            "  cause nfs_mount_missing",
            "    nfs_mounted: false",
            "    df_error: No such file or directory",
            "  1. probe on pbs  finished, exit 1, 42 ms",
            "  2. lazy_unmount on pbs  finished, exit 32: nothing was mounted (expected), 140 ms",
            "     $ findmnt /mnt/datastore",
            "     │ line one",
            "     │ … 1 more line(s)",
            "  approval 4 for lazy_unmount  pending, expires 2024-05-01 12:30:00Z (in 30m), then reject  risk high",
            "     $ umount -l /mnt/datastore",
            "2024-05-01 11:59:00.250Z  The engine asked for approval of lazy_unmount: approval 4  [approval.requested]",
            "     if nobody decides by 2024-05-01 12:30:00Z (in 30m): it is rejected and the run escalates to a human",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        assert!(!text.contains("ignored"));
        assert!(!text.contains('\u{1b}'), "no colour when plain");
    }

    #[test]
    fn colour_is_only_added_when_asked_for() {
        let text = run(&run_detail(), now(), Paint { color: true });
        assert!(text.contains("\u{1b}["), "{text}");
        assert!(text.contains("umount -l /mnt/datastore"));
    }

    #[test]
    fn incidents_are_a_table_with_the_newest_runs_state() {
        let page: IncidentPage = serde_json::from_value(json!({"incidents": [{
            "id": 3, "fingerprint": "abc", "name": "PBSBackupStale", "source": "alertmanager",
            "severity": "warning", "labels": {}, "status": "open", "alert_count": 2,
            "first_seen": "2024-05-01T11:00:00Z", "last_seen": "2024-05-01T11:55:00Z",
            "resolved_at": null, "latest_run": {"id": 7, "state": "waiting_approval", "step": "lazy_unmount", "cause": "nfs_mount_missing"}
        }], "next_before": null}))
        .unwrap();
        let text = incidents(&page.incidents, now(), Paint::PLAIN);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with("ID  STATUS  NAME"), "{text}");
        let row: Vec<&str> = lines[1]
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(
            row,
            [
                "3",
                "open",
                "PBSBackupStale",
                "warning",
                "2",
                "2024-05-01 11:55:00Z (5m ago)",
                "7 waiting_approval"
            ],
            "{text}"
        );
        assert_eq!(incidents(&[], now(), Paint::PLAIN), "no incidents\n");
    }

    #[test]
    fn a_decision_says_whether_this_call_decided() {
        let answer = |now: bool, status: &str| -> DecisionAnswer {
            serde_json::from_value(json!({"decided_now": now, "approval": {
                "id": 4, "run_id": 7, "step": "lazy_unmount", "status": status,
                "command": "umount -l /mnt/datastore", "risk": "high",
                "expires_at": "2024-05-01T12:30:00Z", "decided_by": "alice",
                "decided_at": "2024-05-01T12:01:00Z", "comment": "go ahead"
            }}))
            .unwrap()
        };
        let text = decision(&answer(true, "approved"), "approved", Paint::PLAIN);
        assert!(
            text.starts_with("approval 4 approved by alice: run 7 step lazy_unmount\n"),
            "{text}"
        );
        assert!(text.contains("comment: go ahead"));
        let text = decision(&answer(false, "approved"), "approved", Paint::PLAIN);
        assert!(
            text.starts_with(
                "approval 4 was already approved by alice at 2024-05-01 12:01:00Z; nothing changed"
            ),
            "{text}"
        );
        let text = decision(&answer(false, "rejected"), "approved", Paint::PLAIN);
        assert!(
            text.starts_with("approval 4 was not approved: it is rejected by alice"),
            "{text}"
        );
    }

    #[test]
    fn spans_and_excerpts_stay_short() {
        assert_eq!(span(59), "59s");
        assert_eq!(span(3 * 3600 + 5 * 60), "3h05m");
        assert_eq!(span(2 * 86400 + 4 * 3600), "2d4h");
        let long = "x".repeat(500);
        let lines = excerpt(&long);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].chars().count(), EXCERPT_CHARS);
    }
}
