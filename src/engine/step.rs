//! One step of a run, with every rule around it, in this order:
//! 1. `only_if`: a step whose condition is known false is skipped; unknown fails it.
//! 2. Dry-run: the step is recorded with its exact command and not executed (nor approved: a
//!    rehearsal asks nobody). A read-only remediation step is not run either: it would check
//!    the effect of steps that were only rehearsed.
//! 3. Approval: asked for as the automation level and the step's policy say; the run parks.
//! 4. Safety controls: pause, breaker, cooldown, hourly budget (booked in one transaction).
//! 5. The attempt is written `started`, the action runs (with retries), then `finished`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

use super::estate::Estate;
use super::facts;
use super::scope::Scope;
use crate::clock::Clock;
use crate::exec::command::{CertFingerprint, Name, Value, Vmid};
use crate::exec::pve::VzdumpStart;
use crate::playbook::model::{ApprovalPolicy, Automation, Playbook, Risk, Step};
use crate::playbook::parse_duration;
use crate::store::Store;
use crate::store::approvals::{ApprovalRequest, OnTimeout};
use crate::store::runs::{Lease, RunError, StepResult};
use crate::store::safety::{Blocked, Limits};

/// How long a human has to decide, by default.
pub const APPROVAL_WINDOW: Duration = Duration::from_secs(3600);

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
    /// A human already approved this step.
    pub approved: bool,
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
    if let Some(ssh) = &step.ssh {
        let host = scope.host(&ssh.host)?;
        let command = scope.render(&ssh.run)?;
        return Ok((Some(host), command.to_string()));
    }
    if let Some(set) = &step.pve_set_fingerprint {
        return Ok((
            None,
            format!(
                "PUT /storage/{} fingerprint={}",
                scope.render(&set.storage)?,
                scope.render(&set.fingerprint)?
            ),
        ));
    }
    if let Some(enable) = &step.pve_enable_job {
        return Ok((
            None,
            format!(
                "PUT /cluster/backup/{} enabled=1",
                scope.render(&enable.job)?
            ),
        ));
    }
    if let Some(vzdump) = &step.pve_vzdump {
        let hosts = if vzdump.host == "all" {
            "every PVE host".to_owned()
        } else {
            scope.host(&vzdump.host)?.to_string()
        };
        let vmids = match &vzdump.vmids {
            serde_norway::Value::Sequence(items) => items
                .iter()
                .map(|item| match item {
                    serde_norway::Value::String(template) => {
                        scope.render(template).map(|t| t.to_string())
                    }
                    other => Ok(serde_json::to_string(other).unwrap_or_default()),
                })
                .collect::<Result<Vec<_>, _>>()?
                .join(","),
            _ => "all".to_owned(),
        };
        return Ok((None, format!("vzdump {vmids} on {hosts} (PVE API)")));
    }
    if let Some(forget) = &step.pbs_forget_groups {
        return Ok((None, format!("DELETE groups {}", forget.groups)));
    }
    if let Some(wait) = &step.wait {
        return Ok((None, format!("wait {wait}")));
    }
    if let Some(poll) = &step.poll {
        return Ok((None, format!("poll {} every {}", poll.probe, poll.every)));
    }
    Err("the step has no action".to_owned())
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
                    json!(read)
                )));
            }
            None => {
                return Ok(StepOutcome::Failed(format!(
                    "only_if depends on unknown facts: {}",
                    json!(read)
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
        let attempt = ctx
            .store
            .step_started(ctx.lease, name, host_text.as_deref(), &request, now)
            .await?;
        let rehearsal = StepResult {
            error: Some(note.to_owned()),
            ..Default::default()
        };
        ctx.store
            .step_finished(ctx.lease, attempt, &rehearsal, ctx.clock.now())
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
        let request = ApprovalRequest {
            step: name,
            command: &request,
            risk: risk_name(step.risk),
            evidence: json!(ctx.facts),
            expires_in: APPROVAL_WINDOW,
            on_timeout,
        };
        let id = ctx.store.request_approval(ctx.lease, request, now).await?;
        return Ok(StepOutcome::NeedsApproval(id));
    }
    if mutating {
        let cooldown = step
            .cooldown
            .as_deref()
            .and_then(parse_duration)
            .unwrap_or(Duration::ZERO);
        let limits = Limits {
            cooldown,
            ..ctx.limits
        };
        if let Err(blocked) = ctx
            .store
            .reserve_action(ctx.lease, name, &ctx.playbook.target, limits, now)
            .await?
        {
            return Ok(StepOutcome::Blocked(blocked));
        }
    }
    let attempt = ctx
        .store
        .step_started(ctx.lease, name, host_text.as_deref(), &request, now)
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
    let tries = step.retries.as_ref().map_or(1, |r| r.attempts.max(1));
    let backoff = step
        .retries
        .as_ref()
        .and_then(|r| parse_duration(&r.backoff))
        .unwrap_or(Duration::ZERO);
    let timeout = parse_duration(&step.timeout).unwrap_or(Duration::from_secs(60));
    let mut result = StepResult::default();
    let mut outcome = StepOutcome::Failed("not run".to_owned());
    for attempt_number in 1..=tries {
        let (done, record) =
            execute(ctx, &scope, step, host.as_ref(), timeout, first_started).await;
        result = record;
        outcome = done;
        if outcome == StepOutcome::Done || attempt_number == tries {
            break;
        }
        tokio::time::sleep(backoff).await;
    }
    result.duration = started.elapsed();
    ctx.store
        .step_finished(ctx.lease, attempt, &result, ctx.clock.now())
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
    timeout: Duration,
    first_started: chrono::DateTime<chrono::Utc>,
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
    if let (Some(ssh), Some(host)) = (&step.ssh, host) {
        let command = match scope.render(&ssh.run) {
            Ok(command) => command,
            Err(e) => return failed(e),
        };
        return match ctx.estate.ssh.run(host, &command, timeout).await {
            Ok(out) => {
                let accepted = step.accept_exit.clone().unwrap_or_else(|| vec![0]);
                let record = StepResult {
                    exit_status: Some(i64::from(out.exit_status)),
                    stdout: Some(out.stdout),
                    stderr: Some(out.stderr.clone()),
                    ..Default::default()
                };
                if accepted.contains(&out.exit_status) {
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
        };
    }
    if let Some(set) = &step.pve_set_fingerprint {
        let storage = scope.render(&set.storage).map(|s| s.to_string());
        let fingerprint = scope.render(&set.fingerprint).map(|f| f.to_string());
        let (Ok(storage), Ok(fingerprint)) = (storage, fingerprint) else {
            return failed("the storage or the fingerprint is not known".to_owned());
        };
        let (Ok(storage), Ok(fingerprint)) =
            (Name::parse(&storage), CertFingerprint::parse(&fingerprint))
        else {
            return failed("the storage or the fingerprint is invalid".to_owned());
        };
        return match ctx
            .estate
            .pve
            .set_storage_fingerprint(&storage, &fingerprint)
            .await
        {
            Ok(()) => (StepOutcome::Done, StepResult::default()),
            Err(e) => failed(e.to_string()),
        };
    }
    if let Some(enable) = &step.pve_enable_job {
        return match scope.render(&enable.job).map(|j| Name::parse(j.as_str())) {
            Ok(Ok(job)) => match ctx.estate.pve.enable_backup_job(&job).await {
                Ok(()) => (StepOutcome::Done, StepResult::default()),
                Err(e) => failed(e.to_string()),
            },
            _ => failed("the backup job id is not known".to_owned()),
        };
    }
    if let Some(vzdump) = &step.pve_vzdump {
        return backup(
            ctx,
            scope,
            &vzdump.host,
            &vzdump.vmids,
            timeout,
            first_started,
        )
        .await;
    }
    if let Some(forget) = &step.pbs_forget_groups {
        let fact = forget
            .groups
            .trim_start_matches("{facts.")
            .trim_end_matches('}');
        let groups: Vec<String> = ctx
            .facts
            .get(fact)
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|g| g.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let store = &ctx.estate.pbs_target.datastore;
        for group in &groups {
            let Some((kind, id)) = group.split_once('/') else {
                continue;
            };
            let (Ok(kind), Ok(id)) = (Name::parse(kind), Name::parse(id)) else {
                return failed(format!("group '{group}' is not type/id"));
            };
            if let Err(e) = ctx.estate.pbs.forget_group(store, &kind, &id).await {
                return failed(e.to_string());
            }
        }
        return (
            StepOutcome::Done,
            StepResult {
                stdout: Some(format!("forgot {}", groups.join(", "))),
                ..Default::default()
            },
        );
    }
    if let Some(wait) = &step.wait {
        tokio::time::sleep(parse_duration(wait).unwrap_or_default()).await;
        return (StepOutcome::Done, StepResult::default());
    }
    if let Some(poll) = &step.poll {
        let every = parse_duration(&poll.every).unwrap_or(Duration::from_secs(60));
        let deadline = tokio::time::Instant::now() + timeout;
        let Some(probe) = ctx.playbook.diagnose.iter().find(|p| p.id == poll.probe) else {
            return failed(format!("no probe '{}'", poll.probe));
        };
        loop {
            let (result, _) =
                super::diagnose::run_probe(probe, scope, &BTreeMap::new(), ctx.clock.now()).await;
            let mut polled = ctx.facts.clone();
            for (name, extract) in &probe.facts {
                polled.insert(name.clone(), facts::extract(extract, &result));
            }
            if facts::evaluate(&poll.until, &polled, &mut BTreeMap::new()) == Some(true) {
                return (
                    StepOutcome::Done,
                    StepResult {
                        stdout: Some(json!(polled).to_string()),
                        ..Default::default()
                    },
                );
            }
            if tokio::time::Instant::now() + every > deadline {
                return failed(format!("'{}' did not hold within {timeout:?}", poll.probe));
            }
            tokio::time::sleep(every).await;
        }
    }
    failed("the step has no action".to_owned())
}

/// Starts vzdump on each host and waits for every task to end OK.
/// A host where this step already started a vzdump (before a crash) is not asked again: that
/// task is waited for. This makes the step idempotent.
async fn backup(
    ctx: &StepContext<'_>,
    scope: &Scope<'_>,
    host: &str,
    vmids: &serde_norway::Value,
    timeout: Duration,
    since: chrono::DateTime<chrono::Utc>,
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
    let hosts: Vec<Name> = if host == "all" {
        ctx.estate.pve_nodes.clone()
    } else {
        match scope.host(host) {
            Ok(host) => vec![host],
            Err(e) => return failed(e),
        }
    };
    let mut ids: Vec<Vmid> = Vec::new();
    if let serde_norway::Value::Sequence(items) = vmids {
        for item in items {
            let text = match item {
                serde_norway::Value::String(template) => {
                    scope.render(template).map(|t| t.to_string())
                }
                serde_norway::Value::Number(n) => Ok(n.to_string()),
                _ => Err("a vmid is a number or a template".to_owned()),
            };
            match text.and_then(|t| Vmid::parse(&t).map_err(|e| e.to_string())) {
                Ok(id) => ids.push(id),
                Err(e) => return failed(e),
            }
        }
    }
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
        serde_norway::from_str(&yaml).unwrap()
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
