//! The pages, as maud templates: every value is escaped by maud, and nothing here emits script
//! or inline style.

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

use super::{PageError, Viewer};
use crate::audit_story::{exit_outcome, if_nobody_decides, sentence, value_in_words};
use crate::auth::Permission;
use crate::http::AppState;
use crate::http::approvals::MAX_COMMENT_CHARS;
use crate::store::approvals::{Approval, ApprovalStatus};
use crate::store::audit::AuditEvent;
use crate::store::incidents::{Incident, IncidentFilter, IncidentStatus};
use crate::store::intake::ResolvedBy;
use crate::store::runs::{Run, StepAttempt};
use crate::store::safety::{SafetyOverview, SwitchSetting};

/// How many incidents and timeline events a page shows at most.
const LIST_INCIDENTS: u32 = 50;
const RESOLVED_INCIDENTS: u32 = 10;
const PENDING_APPROVALS: u32 = 100;
const TIMELINE_EVENTS: u32 = 1000;

pub(crate) fn layout(title: &str, viewer: Option<&Viewer>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " · runbookd" }
                link rel="stylesheet" href="/static/style.css";
            }
            body {
                header.top {
                    a.brand href="/" { "runbookd" }
                    @if let Some(viewer) = viewer {
                        nav.pages { a href="/" { "Incidents" } a href="/backups" { "Backups" } }
                        span.who { (viewer.principal.name) " · " (viewer.principal.role.as_str()) }
                        form.signout method="post" action="/logout" {
                            (csrf(viewer))
                            button.quiet type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

fn csrf(viewer: &Viewer) -> Markup {
    html! { input type="hidden" name="csrf" value=(viewer.csrf); }
}

/// The sign-in form; `next` is where to go after it (a local path, checked by the caller).
pub fn login(message: Option<&str>, next: Option<&str>, csrf: &str) -> Markup {
    layout(
        "Sign in",
        None,
        html! {
            section.card.narrow {
                h1 { "Sign in" }
                p { "Paste your runbookd token. It is checked once and not kept: this browser gets a session cookie that scripts cannot read, which signing out ends." }
                @if let Some(message) = message {
                    p.alert role="alert" { (message) }
                }
                form method="post" action="/login" {
                    input type="hidden" name="csrf" value=(csrf);
                    @if let Some(next) = next {
                        input type="hidden" name="next" value=(next);
                    }
                    label for="token" { "Token" }
                    input #token type="password" name="token" autocomplete="current-password" required autofocus;
                    button.primary type="submit" { "Sign in" }
                }
            }
        },
    )
}

pub fn error(status: StatusCode, message: &str) -> Markup {
    let title = status.canonical_reason().unwrap_or("Error");
    layout(
        title,
        None,
        html! {
            section.card.narrow {
                h1 { (status.as_u16()) " " (title) }
                p.alert role="alert" { (message) }
                p { a href="/" { "Back to runbookd" } }
            }
        },
    )
}

pub async fn home(state: &AppState, viewer: &Viewer) -> Result<Markup, PageError> {
    let now = state.clock.now();
    let store = &state.store;
    let safety = crate::http::safety::overview(state).await?;
    let paused = safety.paused.on;
    let approvals = store
        .approvals(Some(ApprovalStatus::Pending), PENDING_APPROVALS)
        .await?;
    let mut run_ids: Vec<i64> = approvals.iter().map(|a| a.run_id).collect();
    run_ids.sort_unstable();
    run_ids.dedup();
    let runs = store.runs(&run_ids).await?;
    let pending: Vec<_> = approvals
        .into_iter()
        .map(|approval| {
            let run = runs.get(&approval.run_id);
            (approval, run)
        })
        .collect();
    let open = incidents_with_runs(state, IncidentStatus::Open, LIST_INCIDENTS).await?;
    let resolved = incidents_with_runs(state, IncidentStatus::Resolved, RESOLVED_INCIDENTS).await?;
    Ok(layout(
        "Incidents",
        Some(viewer),
        html! {
            @if !state.remediation.enabled {
                section.switch.paused.remediation-off role="status" {
                    div {
                        strong { "Remediation is off." } " " (state.remediation.detail)
                    }
                }
            }
            section.switch.(if paused { "paused" } else { "active" }) {
                div {
                    @if paused {
                        strong { "Paused." } " New runs wait; running ones stop at their next step."
                    } @else {
                        strong { "Active." } " Runs proceed as their playbooks say."
                    }
                }
                @if viewer.may(Permission::Control) {
                    form method="post" action=(if paused { "/resume" } else { "/pause" }) {
                        (csrf(viewer))
                        @if paused {
                            button.primary type="submit" { "Resume runs" }
                        } @else {
                            button.danger type="submit" { "Pause all runs" }
                        }
                    }
                }
            }
            (safety_section(&safety, now))
            h1 { "Pending approvals" }
            @if pending.is_empty() {
                p.empty { "Nothing waits for a decision." }
            }
            @for (approval, run) in &pending {
                (approval_card(approval, *run, viewer, now, false))
            }
            h1 { "Open incidents" }
            (incident_list(&open, "No open incidents."))
            h2 { "Recently resolved" }
            (incident_list(&resolved, "None yet."))
        },
    ))
}

/// The safety controls as they stand, from the same read model as `GET /api/v1/safety`.
fn safety_section(safety: &SafetyOverview, now: DateTime<Utc>) -> Markup {
    let changed = |setting: &SwitchSetting| -> String {
        match (&setting.changed_by, setting.changed_at) {
            (Some(by), Some(when)) => format!(
                " (set by {by} at {}{})",
                at(when),
                setting
                    .reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
            _ => String::new(),
        }
    };
    html! {
        section.card.safety #safety {
            h2 { "Safety controls" }
            dl.facts {
                dt { "Dry run" }
                dd {
                    @if safety.dry_run.on {
                        strong.bad { "on" } ": new runs record what they would run and change nothing"
                    } @else {
                        "off"
                    }
                    (changed(&safety.dry_run))
                }
                dt { "Hourly budget" }
                dd { (safety.hourly_budget.used) " of " (safety.hourly_budget.limit) " mutating actions used in the last hour" }
            }
            h3 { "Circuit breakers" }
            @if safety.breakers.is_empty() {
                p.empty { "No playbook names a target." }
            }
            ul.breakers {
                @for breaker in &safety.breakers {
                    li.(if breaker.open { "breaker-open" } else { "breaker-closed" }) {
                        strong { (breaker.target) } " "
                        @if breaker.open { span.bad { "open" } } @else { span.ok { "closed" } }
                        ": " (breaker.failures) " of " (breaker.limit) " failures in " (breaker.window_hours) " h"
                        @if let Some(closes) = breaker.closes_at {
                            " · closes " (at(closes)) " (" (until(closes, now)) ")"
                        }
                        @if let Some(reset) = &breaker.last_reset {
                            span.meta { " · last reset by " (reset.by) " at " (at(reset.at)) ": " (reset.reason) }
                        }
                    }
                }
            }
            h3 { "Cooldowns in force" }
            @if safety.cooldowns.is_empty() {
                p.empty { "None." }
            } @else {
                ul.cooldowns {
                    @for cooldown in &safety.cooldowns {
                        li { (cooldown.action) " on " (cooldown.target) " until " (at(cooldown.until)) " (" (until(cooldown.until, now)) ")" }
                    }
                }
            }
        }
    }
}

async fn incidents_with_runs(
    state: &AppState,
    status: IncidentStatus,
    limit: u32,
) -> Result<Vec<(Incident, Option<Run>)>, PageError> {
    let filter = IncidentFilter {
        status: Some(status),
        limit,
        ..IncidentFilter::default()
    };
    let incidents = state.store.list_incidents(&filter).await?;
    let ids: Vec<i64> = incidents.iter().map(|i| i.id).collect();
    let mut runs = state.store.latest_runs(&ids).await?;
    Ok(incidents
        .into_iter()
        .map(|incident| {
            let run = runs.remove(&incident.id);
            (incident, run)
        })
        .collect())
}

fn incident_list(incidents: &[(Incident, Option<Run>)], empty: &str) -> Markup {
    html! {
        @if incidents.is_empty() {
            p.empty { (empty) }
        } @else {
            ul.incidents {
                @for (incident, run) in incidents {
                    li {
                        a href=(format!("/incidents/{}", incident.id)) {
                            span.title { (incident.name) " #" (incident.id) }
                            span.meta {
                                (badge(&incident.severity))
                                @if let Some(run) = run {
                                    " " (badge(run.state.as_str()))
                                } @else if incident.unmatched_reason.is_some() {
                                    " " (badge("unmatched"))
                                }
                                " " (label_summary(&incident.labels.0))
                            }
                            span.meta { "last seen " (at(incident.last_seen)) " · " (incident.alert_count) " alert(s)" }
                        }
                    }
                }
            }
        }
    }
}

pub async fn incident(state: &AppState, viewer: &Viewer, id: i64) -> Result<Markup, PageError> {
    let now = state.clock.now();
    let store = &state.store;
    let incident = store.incident(id).await?.ok_or_else(|| {
        PageError::new(StatusCode::NOT_FOUND, format!("There is no incident {id}."))
    })?;
    // The incident's events and its runs', in order.
    let timeline = store.incident_timeline(id, TIMELINE_EVENTS).await?;
    let mut runs = Vec::new();
    for run in store.runs_for_incident(id).await? {
        let steps = store.step_attempts(run.id).await?;
        let approvals = store.approvals_for_run(run.id).await?;
        runs.push((run, steps, approvals));
    }
    Ok(layout(
        &format!("Incident {id}"),
        Some(viewer),
        html! {
            p.crumbs { a href="/" { "← All incidents" } }
            h1 { (incident.name) " #" (incident.id) " " (badge(status_str(incident.status))) }
            dl.facts {
                dt { "Source" } dd { (incident.source) }
                dt { "Severity" } dd { (incident.severity) }
                dt { "First seen" } dd { (at(incident.first_seen)) }
                dt { "Last seen" } dd { (at(incident.last_seen)) }
                dt { "Alerts" } dd { (incident.alert_count) }
                @if let Some(resolved) = incident.resolved_at {
                    dt { "Resolved" } dd {
                        (at(resolved))
                        @match (incident.resolved_by, incident.resolved_by_run) {
                            (Some(ResolvedBy::Run), Some(run)) => { " by run " (run) ", which verified its fix" }
                            (Some(ResolvedBy::Timeout), _) => { ": its sender stopped repeating it" }
                            (Some(ResolvedBy::Source), _) => { " by its sender" }
                            _ => {}
                        }
                    }
                }
                @if let Some(earlier) = incident.recurrence_of {
                    dt { "Recurrence of" } dd { a href=(format!("/incidents/{earlier}")) { "incident #" (earlier) } }
                }
                @if let Some(playbook) = &incident.playbook {
                    dt { "Playbook" } dd { (playbook) }
                }
                dt { "Fingerprint" } dd { code { (incident.fingerprint) } }
            }
            (json_table("Labels", &incident.labels.0, true))
            @if let Some(reason) = &incident.unmatched_reason {
                p.empty { strong { "Unmatched: " } (reason) }
            } @else if runs.is_empty() {
                p.empty { "No playbook ran for this incident." }
            }
            @for (run, steps, approvals) in &runs {
                (run_section(run, steps, approvals, viewer, now))
            }
            h2 {
                "Timeline"
                @if timeline.len() >= TIMELINE_EVENTS as usize {
                    span.meta { " (latest " (TIMELINE_EVENTS) " events)" }
                }
            }
            (timeline_list(&timeline))
        },
    ))
}

pub async fn approval(state: &AppState, viewer: &Viewer, id: i64) -> Result<Markup, PageError> {
    let approval = state.store.approval(id).await?.ok_or_else(|| {
        PageError::new(StatusCode::NOT_FOUND, format!("There is no approval {id}."))
    })?;
    let run = state.store.run(approval.run_id).await?;
    Ok(layout(
        &format!("Approval {id}"),
        Some(viewer),
        html! {
            p.crumbs { a href="/" { "← All incidents" } }
            h1 { "Approval #" (id) }
            (approval_card(&approval, run.as_ref(), viewer, state.clock.now(), true))
        },
    ))
}

pub(crate) fn run_section(
    run: &Run,
    steps: &[StepAttempt],
    approvals: &[Approval],
    viewer: &Viewer,
    now: DateTime<Utc>,
) -> Markup {
    // A finished run keeps its cause in the outcome; a running one in its progress.
    let diagnosis = run
        .outcome
        .as_ref()
        .map(|o| &o.0)
        .filter(|o| o.get("cause").is_some_and(|c| !c.is_null()))
        .unwrap_or(&run.facts.0);
    let outcome = run.outcome.as_ref().map(|o| &o.0);
    html! {
        section.run id=(format!("run-{}", run.id)) {
            h2 { "Run #" (run.id) " · " (run.playbook) " " (badge(run.state.as_str())) }
            dl.facts {
                dt { "Target" } dd { (run.target) }
                @if let Some(step) = &run.step { dt { "Step" } dd { (step) } }
                @if run.dry_run { dt { "Dry run" } dd { strong { "dry run" } ": commands were recorded, not run; nothing was changed" } }
                dt { "Created" } dd { (at(run.created_at)) }
                @if let Some(finished) = run.finished_at { dt { "Finished" } dd { (at(finished)) } }
                dt { "Cause" } dd {
                    @match diagnosis.get("cause").and_then(Value::as_str) {
                        Some(cause) => strong { (cause) },
                        None => "not diagnosed",
                    }
                }
                @for key in ["reason", "comment"] {
                    @if let Some(text) = outcome.and_then(|o| o.get(key)).and_then(Value::as_str) {
                        dt { (key) } dd { (text) }
                    }
                }
            }
            @if let Some(evidence) = diagnosis.get("evidence") {
                (json_table("Evidence", evidence, true))
            }
            (super::timeline_svg::picture(run, steps, approvals, now))
            h3 { "Steps" }
            @if steps.is_empty() {
                p.empty { "No step has run yet." }
            }
            @for step in steps {
                (step_card(step))
            }
            @if !approvals.is_empty() {
                h3 { "Approvals" }
                @for approval in approvals {
                    (approval_card(approval, Some(run), viewer, now, false))
                }
            }
        }
    }
}

fn step_card(step: &StepAttempt) -> Markup {
    let exit = step
        .exit_status
        .map(|exit| exit_outcome(exit, step.exit_accepted, step.exit_reason.as_deref()));
    html! {
        article.card.step {
            h4 {
                (step.step) " " (badge(&step.status))
                @if let Some(exit) = &exit {
                    " " span.exit.(if exit.expected { "ok" } else { "bad" }) { (exit.text) }
                    @if exit.expected && step.exit_status != Some(0) {
                        " " span.meta { "(expected)" }
                    }
                }
            }
            p.meta {
                @if let Some(host) = &step.host { "on " (host) " · " }
                "started " (at(step.started_at))
                @if let Some(ms) = step.duration_ms { " · took " (duration(ms)) }
                @if step.run_attempt > 1 { " · run attempt " (step.run_attempt) }
            }
            pre.command { code { (step.command) } }
            @if let Some(out) = step.stdout.as_deref().filter(|s| !s.is_empty()) {
                details { summary { "stdout" } pre { (out) } }
            }
            @if let Some(err) = step.stderr.as_deref().filter(|s| !s.is_empty()) {
                details { summary { "stderr" } pre { (err) } }
            }
            @if let Some(error) = &step.error {
                p.alert { (error) }
            }
        }
    }
}

/// One approval: what it would run, why, until when, and its decision or the buttons. Lists
/// fold the evidence (one tap opens it); the approval's own page, `alone`, unfolds it while
/// it can still be decided.
fn approval_card(
    approval: &Approval,
    run: Option<&Run>,
    viewer: &Viewer,
    now: DateTime<Utc>,
    alone: bool,
) -> Markup {
    let pending = approval.status == ApprovalStatus::Pending;
    let expired = pending && approval.expires_at <= now;
    let status = if expired {
        "expired"
    } else {
        approval_status_str(approval.status)
    };
    html! {
        article.card.approval id=(format!("approval-{}", approval.id)) {
            h3 {
                a href=(format!("/approvals/{}", approval.id)) { (approval.step) }
                " " (badge(status)) " " span.risk { "risk: " (approval.risk) }
            }
            p.meta {
                "approval #" (approval.id) " · run #" (approval.run_id)
                @if let Some(incident) = run.and_then(|r| r.incident_id) {
                    " · " a href=(format!("/incidents/{incident}")) { "incident #" (incident) }
                }
                " · asked " (at(approval.requested_at))
            }
            @if let Some(cause) = run.and_then(|r| r.facts.0.get("cause")).and_then(Value::as_str) {
                p { "Cause: " strong { (cause) } }
            }
            (approval_actions(approval))
            pre.command { code { (approval.command) } }
            @if pending && !expired {
                p.meta.timeout {
                    "If nobody decides by " (at(approval.expires_at)) " (" (until(approval.expires_at, now)) "), "
                    (if_nobody_decides(&approval.on_timeout)) "."
                }
            }
            (json_table("Evidence", &approval.evidence.0, alone && pending && !expired))
            @if let Some(by) = &approval.decided_by {
                p.decision {
                    (approval_status_str(approval.status)) " by " strong { (by) }
                    @if let Some(when) = approval.decided_at { " at " (at(when)) }
                    @if let Some(comment) = &approval.comment { ": “" (comment) "”" }
                }
            }
            @if expired {
                p.alert { "Expired at " (at(approval.expires_at)) ": it can no longer be approved." }
            } @else if pending {
                @if viewer.may(Permission::Decide) {
                    form.decide method="post" action=(format!("/approvals/{}/approve", approval.id)) {
                        (csrf(viewer))
                        label for=(format!("comment-{}", approval.id)) { "Comment (optional)" }
                        textarea id=(format!("comment-{}", approval.id)) name="comment" maxlength=(MAX_COMMENT_CHARS) rows="2" {}
                        div.actions {
                            button.primary type="submit" { "Approve" }
                            button.danger type="submit" formaction=(format!("/approvals/{}/reject", approval.id)) { "Reject" }
                        }
                    }
                } @else {
                    p.note { "Your role (" (viewer.principal.role.as_str()) ") may not decide approvals." }
                }
            }
        }
    }
}

/// Where an approval's commands run and what each changes, as the run asked for them.
fn approval_actions(approval: &Approval) -> Markup {
    let actions = approval
        .actions
        .as_ref()
        .map(|a| a.0.as_slice())
        .unwrap_or_default();
    let mut hosts: Vec<&str> = actions.iter().filter_map(|a| a.host.as_deref()).collect();
    hosts.dedup();
    html! {
        @if !actions.is_empty() {
            dl.facts.actions {
                dt { "Runs on" }
                dd {
                    @if hosts.is_empty() {
                        "the Proxmox API (no SSH host)"
                    } @else {
                        strong { (hosts.join(", ")) }
                    }
                }
                dt { "Changes" }
                dd {
                    ul.changes {
                        @for action in actions {
                            li {
                                code { (action.step) }
                                @if let Some(host) = &action.host { " on " (host) }
                                ": " (action.changes.as_deref().unwrap_or("the playbook does not say"))
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Each event as a sentence, its raw detail one click away.
pub(crate) fn timeline_list(events: &[AuditEvent]) -> Markup {
    html! {
        @if events.is_empty() {
            p.empty { "Nothing recorded." }
        } @else {
            ol.timeline {
                @for event in events {
                    li {
                        span.when { (at(event.at)) }
                        span.what {
                            (sentence(&event.actor, &event.detail))
                            @if let Some(run) = event.run_id { span.meta { " · run #" (run) } }
                        }
                        details.raw {
                            summary { (event.action) " by " (event.actor) }
                            code.detail { (event.stored_detail.to_string()) }
                        }
                    }
                }
            }
        }
    }
}

/// An object's keys and values as a definition list in words, unfolded when `open`; other
/// values as one line.
fn json_table(title: &str, value: &Value, open: bool) -> Markup {
    html! {
        @match value {
            Value::Object(map) if map.is_empty() => {},
            Value::Null => {},
            Value::Object(map) => {
                details.json open[open] {
                    summary { (title) }
                    dl.facts {
                        @for (key, value) in map {
                            dt { (key) } dd { (value_in_words(value)) }
                        }
                    }
                }
            },
            other => {
                p { strong { (title) ": " } (value_in_words(other)) }
            },
        }
    }
}

fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn label_summary(labels: &Value) -> String {
    labels
        .as_object()
        .map(|map| {
            map.iter()
                .filter(|(k, _)| *k != "alertname")
                .take(4)
                .map(|(k, v)| format!("{k}={}", plain(v)))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

pub(crate) fn badge(text: &str) -> Markup {
    html! { span.badge.(format!("b-{}", css_class(text))) { (text) } }
}

/// A class name from a value: only `[a-z0-9_-]`, so it can never break out of the attribute's
/// meaning (maud escapes it anyway).
fn css_class(text: &str) -> String {
    text.chars()
        .map(|c| c.to_ascii_lowercase())
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect()
}

fn status_str(status: IncidentStatus) -> &'static str {
    match status {
        IncidentStatus::Open => "open",
        IncidentStatus::Resolved => "resolved",
    }
}

pub(crate) fn approval_status_str(status: ApprovalStatus) -> &'static str {
    match status {
        ApprovalStatus::Pending => "pending",
        ApprovalStatus::Approved => "approved",
        ApprovalStatus::Rejected => "rejected",
        ApprovalStatus::Expired => "expired",
        ApprovalStatus::Cancelled => "cancelled",
    }
}

pub(crate) fn at(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn until(time: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let minutes = (time - now).num_minutes();
    match minutes {
        m if m < 1 => "in less than a minute".to_owned(),
        m if m < 120 => format!("in {m} min"),
        m => format!("in {} h {} min", m / 60, m % 60),
    }
}

fn duration(ms: i64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}
