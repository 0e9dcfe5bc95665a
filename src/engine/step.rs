//! One step of a run, with every rule around it, in this order:
//! 1. `only_if`: a step whose condition is known false is skipped; unknown fails it.
//! 2. Dry-run: the step is recorded with its exact command and not executed (nor approved: a
//!    rehearsal asks nobody). A read-only remediation step is not run either: it would check
//!    the effect of steps that were only rehearsed.
//! 3. Approval: asked for as the automation level and the step's policy say; the run parks.
//!    A cause that asks `once` asks at its first such step for its whole sequence.
//! 4. Guards: facts that must hold (probes re-run now) and time windows on the one clock; the
//!    step waits and re-checks, visibly, and gives up after the guard's `max_wait`.
//! 5. Safety controls: pause, breaker, cooldown, hourly budget (booked in one transaction).
//! 6. The attempt is written `started`, the action runs (with retries), then `finished`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value as Json, json};

use super::estate::Estate;
use super::facts;
use super::scope::Scope;
use super::worker::persist;
use crate::audit_story::facts_in_words;
use crate::clock::Clock;
use crate::exec::command::{CertFingerprint, CommandTemplate, Name, Value, Vmid};
use crate::exec::pve::VzdumpStart;
use crate::playbook::Playbook;
use crate::playbook::compiled::{Action, Guard, Step, VmidRef, VzdumpGuests, VzdumpHosts};
use crate::playbook::model::{ApprovalPolicy, Automation, Risk};
use crate::store::Store;
use crate::store::approvals::{ApprovalAction, ApprovalRequest, OnTimeout};
use crate::store::audit::{GuardStatus, StepWaiting};
use crate::store::runs::{ExitVerdict, Lease, RunError, StepResult};
use crate::store::safety::{Blocked, Limits};

/// What happened to a step.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOutcome {
    Done,
    /// Its `only_if` is known false.
    Skipped(String),
    Failed(String),
    /// The run is parked on this approval.
    NeedsApproval(i64),
    Blocked(Blocked),
    /// Dry-run: recorded, not executed.
    Rehearsed(String),
    /// Its guard still did not allow it to act when `max_wait` ran out: why.
    GuardTimedOut(String),
}

/// Everything a step needs.
pub struct StepContext<'a> {
    pub store: &'a Store,
    pub lease: &'a Lease,
    pub estate: &'a Estate,
    pub playbook: &'a Playbook,
    pub parameters: &'a BTreeMap<String, Value>,
    pub facts: &'a BTreeMap<String, Json>,
    pub clock: &'a dyn Clock,
    pub dry_run: bool,
    pub limits: Limits,
    /// A human already approved this step (or the sequence it belongs to).
    pub approved: bool,
    /// When the cause asks once: its whole remediation sequence, listed in the one approval.
    pub sequence: Option<&'a [String]>,
}

/// Whether the automation level asks a human before this step.
pub fn needs_approval(level: Automation, step: &Step) -> bool {
    if step.approval == ApprovalPolicy::Always {
        return true;
    }
    match (level, step.risk) {
        (_, Risk::None) => false,
        (Automation::Manual | Automation::Prompted, _) => true,
        (Automation::Standard, risk) => risk == Risk::High,
        (Automation::Autonomous, _) => false,
    }
}

/// What the step will do, in words and exactly: the command or request.
fn describe(step: &Step, scope: &Scope<'_>) -> Result<(Option<Name>, String), String> {
    match &step.action {
        Action::Ssh(ssh) => {
            let host = scope.host(&ssh.host)?;
            let command = scope.fill(&ssh.run)?;
            Ok((Some(host), command.to_string()))
        }
        Action::SetFingerprint {
            storage,
            fingerprint,
        } => Ok((
            None,
            format!(
                "PUT /storage/{} fingerprint={}",
                scope.fill(storage)?,
                scope.fill(fingerprint)?
            ),
        )),
        Action::EnableJob { job } => Ok((
            None,
            format!("PUT /cluster/backup/{} enabled=1", scope.fill(job)?),
        )),
        Action::Vzdump { hosts, guests } => {
            let hosts = match hosts {
                VzdumpHosts::All => "every PVE host".to_owned(),
                VzdumpHosts::One(host) => scope.host(host)?.to_string(),
            };
            let vmids = match guests {
                VzdumpGuests::All => "all".to_owned(),
                VzdumpGuests::List(ids) => vmids(ids, scope)?
                    .iter()
                    .map(Vmid::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            };
            Ok((None, format!("vzdump {vmids} on {hosts} (PVE API)")))
        }
        Action::ForgetGroups { datastore, fact } => {
            let (datastore, groups) = forget_targets(scope, datastore, fact)?;
            Ok((
                None,
                format!(
                    "forget PBS groups {} in datastore {datastore} (from fact {fact})",
                    if groups.is_empty() {
                        "none".to_owned()
                    } else {
                        groups.join(", ")
                    }
                ),
            ))
        }
        Action::Wait(wait) => Ok((None, format!("wait {wait:?}"))),
        Action::Poll(poll) => Ok((None, format!("poll {} every {:?}", poll.probe, poll.every))),
    }
}

/// The datastore a cleanup deletes from and the groups it forgets, rendered from the facts
/// the run was diagnosed with: what the approval shows is what runs.
fn forget_targets(
    scope: &Scope<'_>,
    datastore: &CommandTemplate,
    fact: &str,
) -> Result<(Name, Vec<String>), String> {
    let datastore = Name::parse(scope.fill(datastore)?.as_str()).map_err(|e| e.to_string())?;
    let groups = scope
        .facts
        .get(fact)
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|g| g.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    Ok((datastore, groups))
}

fn vmids(ids: &[VmidRef], scope: &Scope<'_>) -> Result<Vec<Vmid>, String> {
    ids.iter()
        .map(|id| match id {
            VmidRef::Literal(vmid) => Ok(*vmid),
            VmidRef::Template(template) => {
                Vmid::parse(scope.fill(template)?.as_str()).map_err(|e| e.to_string())
            }
        })
        .collect()
}

/// Every action of a sequence: where, exactly what, and what it changes.
fn describe_sequence(
    sequence: &[String],
    scope: &Scope<'_>,
) -> Result<Vec<ApprovalAction>, String> {
    let mut actions = Vec::new();
    for name in sequence {
        let step = scope
            .playbook
            .steps
            .get(name)
            .ok_or_else(|| format!("no step '{name}'"))?;
        let (host, command) = describe(step, scope)?;
        actions.push(approval_action(name, step, host.as_ref(), command));
    }
    Ok(actions)
}

fn approval_action(
    name: &str,
    step: &Step,
    host: Option<&Name>,
    command: String,
) -> ApprovalAction {
    ApprovalAction {
        step: name.to_owned(),
        host: host.map(Name::to_string),
        command,
        changes: step
            .changes
            .clone()
            .or_else(|| (step.risk == Risk::None).then(|| "nothing: it only reads".to_owned())),
    }
}

/// Why a guard does not let its step act now, and what it saw; `None`: it may act.
async fn guard_holds_back(
    ctx: &StepContext<'_>,
    scope: &Scope<'_>,
    guard: &Guard,
    now: DateTime<Utc>,
) -> Option<(String, Json)> {
    for (name, intervals) in &guard.mute {
        if intervals.iter().any(|i| i.contains(now)) {
            return Some((
                format!("muted: inside time interval '{name}'"),
                json!({"now": now, "mute": name}),
            ));
        }
    }
    if !guard.active.is_empty()
        && !guard
            .active
            .iter()
            .any(|(_, intervals)| intervals.iter().any(|i| i.contains(now)))
    {
        let names: Vec<&String> = guard.active.iter().map(|(n, _)| n).collect();
        return Some((
            format!(
                "outside the active time intervals {}",
                names
                    .iter()
                    .map(|n| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            json!({"now": now, "active": names}),
        ));
    }
    for required in &guard.require {
        let Some(probe) = ctx.playbook.probe(&required.probe) else {
            return Some((format!("no probe '{}'", required.probe), Json::Null));
        };
        let (result, record) =
            super::diagnose::run_probe(probe, scope, &BTreeMap::new(), now).await;
        let mut seen = ctx.facts.clone();
        for (name, extract) in &probe.facts {
            seen.insert(name.clone(), facts::extract(extract, &result));
        }
        let mut read = BTreeMap::new();
        let verdict = facts::evaluate(&required.holds, &seen, &mut read);
        let saw =
            json!({"probe": probe.id, "facts": read, "data": result.data, "error": record.error});
        match verdict {
            Some(true) => {}
            Some(false) => {
                return Some((
                    format!(
                        "probe '{}' says the step may not act: {}",
                        probe.id,
                        facts_in_words(&read)
                    ),
                    saw,
                ));
            }
            None => {
                return Some((
                    format!(
                        "probe '{}' could not tell whether the step may act: {}",
                        probe.id,
                        facts_in_words(&read)
                    ),
                    saw,
                ));
            }
        }
    }
    None
}

/// Waits until the step's guard lets it act: re-checks every `every`, shows why it waits in
/// the run (and the audit trail, whenever the reason changes), and gives up after `max_wait`
/// on the one clock. `Some(reason)`: it gave up.
async fn wait_for_guard(
    ctx: &StepContext<'_>,
    scope: &Scope<'_>,
    name: &str,
    guard: &Guard,
) -> Result<Option<String>, RunError> {
    // A worker that resumes a run (its predecessor died mid-wait) keeps the wait's start, so
    // max_wait bounds the whole wait, not each worker's share of it.
    let shown_before = ctx
        .store
        .run(ctx.lease.run_id)
        .await
        .map_err(RunError::from)?;
    let since = shown_before
        .and_then(|run| run.waiting())
        .filter(|w| w.step.as_deref() == Some(name) && w.status == Some(GuardStatus::Waiting))
        .and_then(|w| w.since)
        .unwrap_or_else(|| ctx.clock.now());
    let until = since + chrono::Duration::from_std(guard.max_wait).unwrap_or(chrono::Duration::MAX);
    let mut shown: Option<String> = None;
    loop {
        let now = ctx.clock.now();
        let Some((reason, saw)) = guard_holds_back(ctx, scope, guard, now).await else {
            if shown.is_some() {
                let cleared = StepWaiting {
                    step: Some(name.to_owned()),
                    status: Some(GuardStatus::Acting),
                    since: Some(since),
                    cleared_at: Some(now),
                    ..StepWaiting::default()
                };
                ctx.store
                    .step_waiting(ctx.lease, &cleared, true, now)
                    .await?;
            }
            return Ok(None);
        };
        if now >= until {
            return Ok(Some(format!(
                "its guard held it back for {:?} (max_wait): {reason}",
                guard.max_wait
            )));
        }
        let waiting = StepWaiting {
            step: Some(name.to_owned()),
            status: Some(GuardStatus::Waiting),
            reason: Some(reason.clone()),
            saw: Some(saw),
            since: Some(since),
            checked_at: Some(now),
            cleared_at: None,
            gives_up_at: Some(until),
            every_ms: Some(guard.every.as_millis() as u64),
        };
        let news = shown.as_deref() != Some(reason.as_str());
        ctx.store
            .step_waiting(ctx.lease, &waiting, news, now)
            .await?;
        shown = Some(reason);
        tokio::time::sleep(guard.every).await;
    }
}

pub async fn run_step(
    ctx: &StepContext<'_>,
    name: &str,
    step: &Step,
) -> Result<StepOutcome, RunError> {
    let now = ctx.clock.now();
    let scope = Scope {
        estate: ctx.estate,
        playbook: ctx.playbook,
        parameters: ctx.parameters,
        facts: ctx.facts,
    };
    if let Some(condition) = &step.only_if {
        let mut read = BTreeMap::new();
        match facts::evaluate(condition, ctx.facts, &mut read) {
            Some(true) => {}
            Some(false) => {
                return Ok(StepOutcome::Skipped(format!(
                    "only_if does not hold: {}",
                    facts_in_words(&read)
                )));
            }
            None => {
                return Ok(StepOutcome::Failed(format!(
                    "only_if depends on unknown facts: {}",
                    facts_in_words(&read)
                )));
            }
        }
    }
    let (host, request) = match describe(step, &scope) {
        Ok(described) => described,
        Err(error) => return Ok(StepOutcome::Failed(error)),
    };
    let mutating = step.risk != Risk::None;
    let asks = !ctx.approved && needs_approval(ctx.playbook.automation, step);
    let host_text = host.as_ref().map(Name::to_string);
    if ctx.dry_run {
        let note = match (mutating, asks) {
            (true, false) => "dry run: recorded, not executed",
            (true, true) => "dry run: recorded, not executed; it would have asked for approval",
            (false, _) => {
                "dry run: not run; it checks the effect of steps that were only rehearsed"
            }
        };
        let attempt = persist("record the step started", || {
            ctx.store
                .step_started(ctx.lease, name, host_text.as_deref(), &request, now)
        })
        .await?;
        let rehearsal = StepResult {
            error: Some(note.to_owned()),
            ..Default::default()
        };
        let finished = ctx.clock.now();
        persist("record the step finished", || {
            ctx.store
                .step_finished(ctx.lease, attempt, &rehearsal, finished)
        })
        .await?;
        return Ok(if mutating {
            StepOutcome::Rehearsed(request)
        } else {
            StepOutcome::Done
        });
    }
    if asks {
        let on_timeout = match step.on_timeout {
            crate::playbook::model::OnTimeout::Approve
                if ctx.playbook.automation == Automation::Prompted =>
            {
                OnTimeout::Approve
            }
            _ => OnTimeout::Reject,
        };
        let actions = match ctx.sequence {
            Some(sequence) => match describe_sequence(sequence, &scope) {
                Ok(listed) => listed,
                Err(error) => return Ok(StepOutcome::Failed(error)),
            },
            None => vec![approval_action(name, step, host.as_ref(), request.clone())],
        };
        // Every command, one a line, as a single step's approval shows its command.
        let command = actions
            .iter()
            .map(|a| a.command.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        let request = ApprovalRequest {
            step: name,
            command: &command,
            risk: risk_name(step.risk),
            evidence: json!(ctx.facts),
            expires_in: step.approval_window,
            on_timeout,
            actions,
        };
        let id = ctx.store.request_approval(ctx.lease, request, now).await?;
        return Ok(StepOutcome::NeedsApproval(id));
    }
    if let Some(guard) = &step.guard
        && let Some(reason) = wait_for_guard(ctx, &scope, name, guard).await?
    {
        return Ok(StepOutcome::GuardTimedOut(reason));
    }
    let now = ctx.clock.now();
    if mutating {
        let limits = Limits {
            cooldown: step.cooldown.unwrap_or(Duration::ZERO),
            ..ctx.limits
        };
        if let Err(blocked) = persist("book the action", || {
            ctx.store
                .reserve_action(ctx.lease, name, &ctx.playbook.target, limits, now)
        })
        .await?
        {
            return Ok(StepOutcome::Blocked(blocked));
        }
    }
    let attempt = persist("record the step started", || {
        ctx.store
            .step_started(ctx.lease, name, host_text.as_deref(), &request, now)
    })
    .await?;
    // When this step first started in this run: a backup step adopts the tasks it started
    // before a crash instead of starting them again.
    let first_started = ctx
        .store
        .step_attempts(ctx.lease.run_id)
        .await?
        .iter()
        .filter(|a| a.step == name)
        .map(|a| a.started_at)
        .min()
        .unwrap_or(now);
    let started = Instant::now();
    let (tries, backoff) = step
        .retries
        .as_ref()
        .map_or((1, Duration::ZERO), |r| (r.attempts, r.backoff));
    let mut result = StepResult::default();
    let mut outcome = StepOutcome::Failed("not run".to_owned());
    for attempt_number in 1..=tries {
        let (done, record) = execute(ctx, &scope, step, host.as_ref(), first_started).await;
        result = record;
        outcome = done;
        if outcome == StepOutcome::Done || attempt_number == tries {
            break;
        }
        tokio::time::sleep(backoff).await;
    }
    result.duration = started.elapsed();
    crate::telemetry::observe_step(name, outcome == StepOutcome::Done, result.duration);
    // The command ran: its record waits for the database rather than being lost, so the run
    // goes on from here instead of running it again or escalating.
    let finished = ctx.clock.now();
    persist("record the step finished", || {
        ctx.store
            .step_finished(ctx.lease, attempt, &result, finished)
    })
    .await?;
    Ok(outcome)
}

fn risk_name(risk: Risk) -> &'static str {
    match risk {
        Risk::None => "none",
        Risk::Low => "low",
        Risk::Medium => "medium",
        Risk::High => "high",
    }
}

/// Runs the action once.
async fn execute(
    ctx: &StepContext<'_>,
    scope: &Scope<'_>,
    step: &Step,
    host: Option<&Name>,
    first_started: DateTime<Utc>,
) -> (StepOutcome, StepResult) {
    let failed = |error: String| {
        (
            StepOutcome::Failed(error.clone()),
            StepResult {
                error: Some(error),
                ..Default::default()
            },
        )
    };
    let timeout = step.timeout;
    match &step.action {
        Action::Ssh(ssh) => {
            let Some(host) = host else {
                return failed("the step's host is not known".to_owned());
            };
            let command = match scope.fill(&ssh.run) {
                Ok(command) => command,
                Err(e) => return failed(e),
            };
            match ctx.estate.ssh.run(host, &command, timeout).await {
                Ok(out) => {
                    let accepted = step.accepted_exit(out.exit_status);
                    let record = StepResult {
                        exit_status: Some(i64::from(out.exit_status)),
                        exit: Some(ExitVerdict {
                            accepted: accepted.is_some(),
                            reason: accepted.and_then(|a| a.reason.clone()),
                        }),
                        stdout: Some(out.stdout),
                        stderr: Some(out.stderr.clone()),
                        ..Default::default()
                    };
                    if accepted.is_some() {
                        (StepOutcome::Done, record)
                    } else {
                        (
                            StepOutcome::Failed(format!(
                                "exit {}: {}",
                                out.exit_status,
                                out.stderr.trim()
                            )),
                            record,
                        )
                    }
                }
                Err(e) => failed(e.to_string()),
            }
        }
        Action::SetFingerprint {
            storage,
            fingerprint,
        } => {
            let storage = scope.fill(storage).map(|s| s.to_string());
            let fingerprint = scope.fill(fingerprint).map(|f| f.to_string());
            let (Ok(storage), Ok(fingerprint)) = (storage, fingerprint) else {
                return failed("the storage or the fingerprint is not known".to_owned());
            };
            let (Ok(storage), Ok(fingerprint)) =
                (Name::parse(&storage), CertFingerprint::parse(&fingerprint))
            else {
                return failed("the storage or the fingerprint is invalid".to_owned());
            };
            match ctx
                .estate
                .pve
                .set_storage_fingerprint(&storage, &fingerprint)
                .await
            {
                Ok(()) => (StepOutcome::Done, StepResult::default()),
                Err(e) => failed(e.to_string()),
            }
        }
        Action::EnableJob { job } => match scope.fill(job).map(|j| Name::parse(j.as_str())) {
            Ok(Ok(job)) => match ctx.estate.pve.enable_backup_job(&job).await {
                Ok(()) => (StepOutcome::Done, StepResult::default()),
                Err(e) => failed(e.to_string()),
            },
            _ => failed("the backup job id is not known".to_owned()),
        },
        Action::Vzdump { hosts, guests } => {
            backup(ctx, scope, hosts, guests, timeout, first_started).await
        }
        Action::ForgetGroups { datastore, fact } => {
            let (store, groups) = match forget_targets(scope, datastore, fact) {
                Ok(targets) => targets,
                Err(e) => return failed(e),
            };
            for group in &groups {
                let Some((kind, id)) = group.split_once('/') else {
                    continue;
                };
                let (Ok(kind), Ok(id)) = (Name::parse(kind), Name::parse(id)) else {
                    return failed(format!("group '{group}' is not type/id"));
                };
                if let Err(e) = ctx.estate.pbs.forget_group(&store, &kind, &id).await {
                    return failed(e.to_string());
                }
            }
            (
                StepOutcome::Done,
                StepResult {
                    stdout: Some(format!("forgot {} in datastore {store}", groups.join(", "))),
                    ..Default::default()
                },
            )
        }
        Action::Wait(wait) => {
            tokio::time::sleep(*wait).await;
            (StepOutcome::Done, StepResult::default())
        }
        Action::Poll(poll) => {
            let deadline = tokio::time::Instant::now() + timeout;
            let Some(probe) = ctx.playbook.probe(&poll.probe) else {
                return failed(format!("no probe '{}'", poll.probe));
            };
            loop {
                let (result, _) =
                    super::diagnose::run_probe(probe, scope, &BTreeMap::new(), ctx.clock.now())
                        .await;
                let mut polled = ctx.facts.clone();
                for (name, extract) in &probe.facts {
                    polled.insert(name.clone(), facts::extract(extract, &result));
                }
                if facts::evaluate(&poll.until, &polled, &mut BTreeMap::new()) == Some(true) {
                    return (
                        StepOutcome::Done,
                        StepResult {
                            stdout: Some(facts_in_words(&polled)),
                            ..Default::default()
                        },
                    );
                }
                if tokio::time::Instant::now() + poll.every > deadline {
                    return failed(format!("'{}' did not hold within {timeout:?}", poll.probe));
                }
                tokio::time::sleep(poll.every).await;
            }
        }
    }
}

/// Starts vzdump on each host and waits for every task to end OK.
/// A host where this step already started a vzdump (before a crash) is not asked again: that
/// task is waited for. This makes the step idempotent.
async fn backup(
    ctx: &StepContext<'_>,
    scope: &Scope<'_>,
    hosts: &VzdumpHosts,
    guests: &VzdumpGuests,
    timeout: Duration,
    since: DateTime<Utc>,
) -> (StepOutcome, StepResult) {
    let failed = |error: String| {
        (
            StepOutcome::Failed(error.clone()),
            StepResult {
                error: Some(error),
                ..Default::default()
            },
        )
    };
    let hosts: Vec<Name> = match hosts {
        VzdumpHosts::All => ctx.estate.pve_nodes.clone(),
        VzdumpHosts::One(host) => match scope.host(host) {
            Ok(host) => vec![host],
            Err(e) => return failed(e),
        },
    };
    let ids: Vec<Vmid> = match guests {
        VzdumpGuests::All => Vec::new(),
        VzdumpGuests::List(ids) => match vmids(ids, scope) {
            Ok(ids) => ids,
            Err(e) => return failed(e),
        },
    };
    let storage = &ctx.estate.pve_target.storage;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut log = Vec::new();
    for node in &hosts {
        let all = ctx
            .estate
            .pve
            .qemu(node)
            .await
            .into_iter()
            .flatten()
            .chain(ctx.estate.pve.lxc(node).await.into_iter().flatten())
            .map(|g| g.vmid)
            .filter_map(|id| Vmid::new(id).ok());
        let wanted: Vec<Vmid> = if ids.is_empty() {
            all.collect()
        } else {
            ids.clone()
        };
        // PVE names a one-guest vzdump by its VMID and leaves a many-guest one unnamed.
        let id = if wanted.len() == 1 {
            wanted[0].to_string()
        } else {
            String::new()
        };
        let earlier = match ctx
            .estate
            .pve
            .vzdump_tasks_since(node, since.timestamp())
            .await
        {
            Ok(tasks) => tasks
                .into_iter()
                .find(|t| t.id.as_deref().unwrap_or_default() == id),
            Err(e) => return failed(e.to_string()),
        };
        let upid = match earlier {
            Some(task) => {
                log.push(format!(
                    "{node}: adopting {} started before a restart",
                    task.upid
                ));
                task.upid
            }
            None => match ctx.estate.pve.vzdump(node, &wanted, storage).await {
                Ok(VzdumpStart::Task(upid)) => upid,
                Ok(VzdumpStart::NothingToDo) => continue,
                Err(e) => return failed(e.to_string()),
            },
        };
        loop {
            match ctx.estate.pve.task_status(node, &upid).await {
                Ok(status) if status.is_running() => {}
                Ok(status) if status.succeeded() => {
                    log.push(format!("{node}: {upid} OK"));
                    break;
                }
                Ok(status) => {
                    return failed(format!(
                        "{node}: {upid} ended {}",
                        status.exitstatus.unwrap_or_default()
                    ));
                }
                Err(e) if e.is_retryable() => {}
                Err(e) => return failed(e.to_string()),
            }
            if tokio::time::Instant::now() >= deadline {
                return failed(format!("{node}: {upid} still running after {timeout:?}"));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    (
        StepOutcome::Done,
        StepResult {
            stdout: Some(log.join("\n")),
            ..Default::default()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(risk: &str, approval: &str) -> Step {
        let yaml = format!("wait: 1s\nrisk: {risk}\napproval: {approval}\ntimeout: 10s\n");
        let mut playbook: crate::playbook::model::Playbook = serde_norway::from_str(
            "name: p\ndescription: d\ntriggers: []\ntarget: t\ndiagnose: []\ncauses: []\nescalation: { summary: s }\n",
        )
        .unwrap();
        playbook
            .steps
            .insert("s".to_owned(), serde_norway::from_str(&yaml).unwrap());
        crate::playbook::compiled::compile(&playbook).unwrap().steps["s"].clone()
    }

    #[test]
    fn automation_levels_decide_which_steps_need_a_human() {
        use Automation::*;
        let cases = [
            // (level, risk, approval policy, asks?)
            (Manual, "low", "auto", true),
            (Manual, "none", "auto", false),
            (Prompted, "medium", "auto", true),
            (Standard, "medium", "auto", false),
            (Standard, "high", "auto", true),
            (Autonomous, "high", "auto", false),
            (Autonomous, "low", "always", true),
        ];
        for (level, risk, approval, asks) in cases {
            assert_eq!(
                needs_approval(level, &step(risk, approval)),
                asks,
                "{level:?} {risk} {approval}"
            );
        }
    }
}
