//! Driving runs. A worker takes the lease of a run that needs one (new, or left behind by a
//! crashed worker), keeps it alive with heartbeats, and moves the run step by step:
//! diagnose → the cause's remediation steps → verification → resolved, or escalated with the
//! reason. Every move is a fenced write, so a worker that lost the run (cancelled, or taken
//! over after a stall) stops at its next step boundary; so does every worker while paused.
//!
//! Where a run is lives in the run itself (`step` and `facts`), so a restarted process resumes
//! it. A step found `started` but not `finished` is run again if it is idempotent; otherwise
//! its recheck probe decides (the effect is in place: go on; it is not: run it; unknown: ask a
//! human by escalating).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use super::diagnose::{diagnose, run_probe};
use super::estate::Estate;
use super::facts;
use super::scope::{self, Scope};
use super::step::{StepContext, StepOutcome, needs_approval, run_step};
use crate::clock::Clock;
use crate::intake::Labels;
use crate::playbook::model::{Playbook, Risk};
use crate::store::Store;
use crate::store::approvals::ApprovalStatus;
use crate::store::runs::{Ending, Lease, Run, RunError};
use crate::store::safety::{Blocked, Limits, Switch};

/// The step name of a run that has not been diagnosed yet.
pub const DIAGNOSE: &str = "diagnose";

/// What a run carries from step to step (its `facts` column).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Progress {
    /// The alert's labels, for the playbook's parameters.
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub cause: Option<String>,
    #[serde(default)]
    pub evidence: BTreeMap<String, Json>,
    #[serde(default)]
    pub facts: BTreeMap<String, Json>,
    #[serde(default)]
    pub report: BTreeMap<String, Json>,
    /// The remediation steps, then the verification steps.
    #[serde(default)]
    pub plan: Vec<String>,
    /// How many of `plan` are remediation (the rest verify).
    #[serde(default)]
    pub remediation_len: usize,
}

pub struct Engine {
    pub store: Store,
    pub estate: Arc<Estate>,
    pub playbooks: Arc<Vec<Playbook>>,
    pub clock: Arc<dyn Clock>,
    /// This worker's name, as leases and the audit trail show it.
    pub owner: String,
    pub lease_for: Duration,
    pub limits: Limits,
    /// Notified when there is new work (a run was created); otherwise the worker looks again
    /// after a short idle wait.
    pub wake: Arc<tokio::sync::Notify>,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Run(#[from] RunError),
}

impl Engine {
    /// Takes one run that needs a worker and drives it until it ends, parks or is lost.
    /// Returns whether there was one. Nothing is taken while runbookd is paused.
    pub async fn work_once(&self) -> Result<bool, EngineError> {
        if self
            .store
            .switch(Switch::Paused)
            .await
            .map_err(RunError::from)?
        {
            return Ok(false);
        }
        let Some((lease, run)) = self
            .store
            .acquire_run(&self.owner, self.lease_for, self.clock.now())
            .await?
        else {
            return Ok(false);
        };
        let heartbeat = {
            let (store, lease, lease_for, clock) = (
                self.store.clone(),
                lease.clone(),
                self.lease_for,
                self.clock.clone(),
            );
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(lease_for / 3);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    if store
                        .heartbeat(&lease, lease_for, clock.now())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            })
        };
        let result = self.drive(&lease, run).await;
        heartbeat.abort();
        match result {
            Ok(()) | Err(RunError::LeaseLost { .. }) => Ok(true),
            Err(error) => Err(error.into()),
        }
    }

    async fn drive(&self, lease: &Lease, run: Run) -> Result<(), RunError> {
        let now = self.clock.now();
        let Some(playbook) = self.playbooks.iter().find(|p| p.name == run.playbook) else {
            return self
                .store
                .finish_run(
                    lease,
                    Ending::Escalated,
                    &json!({"reason": format!("no playbook named '{}'", run.playbook)}),
                    now,
                )
                .await;
        };
        let mut progress: Progress =
            serde_json::from_value(run.facts.0.clone()).unwrap_or_default();
        let labels = Labels::parse(progress.labels.clone()).unwrap_or_default();
        let parameters = match scope::parameters(playbook, &self.estate, &labels) {
            Ok(parameters) => parameters,
            Err(error) => {
                // Bad input is not a failure of the target: refused, it does not trip the breaker.
                let reason = format!("the alert's labels are not usable: {error}");
                return self
                    .store
                    .finish_run(
                        lease,
                        Ending::Refused,
                        &json!({"reason": reason}),
                        self.clock.now(),
                    )
                    .await;
            }
        };
        let mut position = match run.step.as_deref() {
            None | Some(DIAGNOSE) => {
                let diagnosis = match diagnose(playbook, &self.estate, &labels, now).await {
                    Ok(d) => d,
                    Err(error) => return self.escalate(lease, &progress, &error).await,
                };
                progress.facts = diagnosis.facts;
                progress.report = diagnosis.report;
                progress.evidence = diagnosis.evidence;
                progress.cause = diagnosis.cause.clone();
                let Some(cause_id) = diagnosis.cause else {
                    return self
                        .escalate(
                            lease,
                            &progress,
                            "no known cause matched; every fact gathered is attached",
                        )
                        .await;
                };
                let cause = playbook
                    .causes
                    .iter()
                    .find(|c| c.id == cause_id)
                    .expect("the cause came from the playbook");
                if cause.remediate.is_empty() && run.dry_run {
                    return self.rehearsed(lease, playbook, &progress).await;
                }
                if cause.remediate.is_empty() {
                    let outcome = json!({"cause": cause_id, "evidence": progress.evidence, "report": progress.report, "offer": cause.offer});
                    return self
                        .store
                        .finish_run(lease, Ending::Resolved, &outcome, self.clock.now())
                        .await;
                }
                progress.plan = cause
                    .remediate
                    .iter()
                    .chain(&playbook.verify)
                    .cloned()
                    .collect();
                progress.remediation_len = cause.remediate.len();
                let reason = format!("cause {cause_id}: {}", json!(progress.evidence));
                self.store
                    .advance(
                        lease,
                        &progress.plan[0],
                        &json!(progress),
                        &reason,
                        self.clock.now(),
                    )
                    .await?;
                0
            }
            Some(step) => progress
                .plan
                .iter()
                .position(|s| s == step)
                .unwrap_or(progress.plan.len()),
        };

        // A dry run rehearses the remediation only: verifying a fix that was never made proves
        // nothing.
        let end = if run.dry_run {
            progress.remediation_len
        } else {
            progress.plan.len()
        };
        while let Some(name) = progress
            .plan
            .get(position)
            .filter(|_| position < end)
            .cloned()
        {
            if self.store.switch(Switch::Paused).await? {
                // Stop at this boundary; the run waits for resume as it stands.
                return self
                    .store
                    .release_run(lease, "paused", self.clock.now())
                    .await;
            }
            let step = &playbook.steps[&name];
            let approved = self.approved(lease.run_id, &name).await?;
            let interrupted = self
                .store
                .step_attempts(lease.run_id)
                .await?
                .into_iter()
                .any(|a| a.step == name && a.status == "started");
            let ctx = StepContext {
                store: &self.store,
                lease,
                estate: &self.estate,
                playbook,
                parameters: &parameters,
                facts: &progress.facts,
                clock: self.clock.as_ref(),
                // Fixed when the run was created, never re-read.
                dry_run: run.dry_run,
                limits: self.limits,
                approved,
            };
            // Read-only steps and idempotent ones are simply run again.
            let rerunnable = step.idempotent || step.risk == crate::playbook::model::Risk::None;
            let outcome = if interrupted && !rerunnable {
                match self.recheck(&ctx, step).await {
                    Some(true) => StepOutcome::Done,
                    Some(false) => run_step(&ctx, &name, step).await?,
                    None => return self.escalate(lease, &progress, &format!("step '{name}' was interrupted and whether it took effect cannot be told; a human must check")).await,
                }
            } else {
                run_step(&ctx, &name, step).await?
            };
            let verifying = position >= progress.remediation_len;
            match outcome {
                StepOutcome::Done | StepOutcome::Rehearsed(_) => {}
                StepOutcome::NeedsApproval(_) => return Ok(()),
                StepOutcome::Skipped(reason) => {
                    return self
                        .escalate(
                            lease,
                            &progress,
                            &format!("step '{name}' does not apply: {reason}"),
                        )
                        .await;
                }
                StepOutcome::Blocked(Blocked::Paused) => {
                    return self
                        .store
                        .release_run(lease, "paused", self.clock.now())
                        .await;
                }
                StepOutcome::Blocked(blocked) => {
                    return self
                        .escalate(
                            lease,
                            &progress,
                            &format!("step '{name}' blocked by a safety control: {blocked}"),
                        )
                        .await;
                }
                StepOutcome::Failed(reason) => {
                    let phase = if verifying {
                        "verification"
                    } else {
                        "remediation"
                    };
                    return self
                        .escalate(
                            lease,
                            &progress,
                            &format!("{phase} step '{name}' failed: {reason}"),
                        )
                        .await;
                }
            }
            position += 1;
            let next = progress
                .plan
                .get(position)
                .filter(|_| position < end)
                .cloned()
                .unwrap_or_else(|| "done".to_owned());
            self.store
                .advance(
                    lease,
                    &next,
                    &json!(progress),
                    &format!("step '{name}' done"),
                    self.clock.now(),
                )
                .await?;
        }
        if run.dry_run {
            return self.rehearsed(lease, playbook, &progress).await;
        }
        let outcome = json!({"cause": progress.cause, "evidence": progress.evidence, "report": progress.report, "steps": progress.plan});
        self.store
            .finish_run(lease, Ending::Resolved, &outcome, self.clock.now())
            .await
    }

    /// Whether a human approved `step` of this run.
    async fn approved(&self, run_id: i64, step: &str) -> Result<bool, RunError> {
        let approvals = self.store.approvals_for_run(run_id).await?;
        Ok(approvals
            .iter()
            .any(|a| a.step == step && a.status == ApprovalStatus::Approved))
    }

    /// Runs the step's recheck probe: is its effect in place (every fact it yields true)?
    async fn recheck(
        &self,
        ctx: &StepContext<'_>,
        step: &crate::playbook::model::Step,
    ) -> Option<bool> {
        let probe = ctx
            .playbook
            .diagnose
            .iter()
            .find(|p| Some(&p.id) == step.recheck.as_ref())?;
        let scope = Scope {
            estate: ctx.estate,
            playbook: ctx.playbook,
            parameters: ctx.parameters,
            facts: ctx.facts,
        };
        let (result, _) = run_probe(probe, &scope, &BTreeMap::new(), self.clock.now()).await;
        let values: Vec<Json> = probe
            .facts
            .values()
            .map(|e| facts::extract(e, &result))
            .collect();
        if values.iter().any(Json::is_null) {
            return None;
        }
        Some(values.iter().all(|v| *v == Json::Bool(true)))
    }

    /// Ends a dry run: "dry run: would have run …" with the exact commands its mutating
    /// remediation steps recorded, or "dry run: nothing to do …". Never resolved: nothing was
    /// fixed, and a rehearsal verifies nothing.
    async fn rehearsed(
        &self,
        lease: &Lease,
        playbook: &Playbook,
        progress: &Progress,
    ) -> Result<(), RunError> {
        let remediation = &progress.plan[..progress.remediation_len.min(progress.plan.len())];
        let would_run: Vec<Json> = self
            .store
            .step_attempts(lease.run_id)
            .await?
            .into_iter()
            // A rehearsal cut short by a crash and recorded again counts once.
            .filter(|a| a.status == "finished" && remediation.contains(&a.step))
            .filter_map(|a| {
                let step = playbook.steps.get(&a.step)?;
                (step.risk != Risk::None).then(|| {
                    json!({"step": a.step, "host": a.host, "command": a.command,
                           "needs_approval": needs_approval(playbook.automation, step)})
                })
            })
            .collect();
        let cause = progress.cause.as_deref().unwrap_or("unknown");
        let reason = if would_run.is_empty() {
            format!("dry run: nothing to do: cause {cause} calls for no change")
        } else {
            let commands: Vec<String> = would_run
                .iter()
                .map(|w| {
                    let host = w["host"]
                        .as_str()
                        .map(|h| format!(" on {h}"))
                        .unwrap_or_default();
                    format!(
                        "{}{host}: {}",
                        w["step"].as_str().unwrap_or_default(),
                        w["command"].as_str().unwrap_or_default()
                    )
                })
                .collect();
            format!(
                "dry run: would have run {} (cause {cause}); nothing was changed",
                commands.join("; ")
            )
        };
        let offer = playbook
            .causes
            .iter()
            .find(|c| Some(&c.id) == progress.cause.as_ref())
            .map(|c| c.offer.clone());
        let outcome = json!({"reason": reason, "dry_run": true, "would_run": would_run, "cause": progress.cause, "evidence": progress.evidence, "report": progress.report, "offer": offer});
        self.store
            .finish_run(lease, Ending::Rehearsed, &outcome, self.clock.now())
            .await
    }

    async fn escalate(
        &self,
        lease: &Lease,
        progress: &Progress,
        reason: &str,
    ) -> Result<(), RunError> {
        let outcome = json!({"reason": reason, "cause": progress.cause, "evidence": progress.evidence, "facts": progress.facts, "report": progress.report});
        self.store
            .finish_run(lease, Ending::Escalated, &outcome, self.clock.now())
            .await
    }
}

/// How long an idle worker waits before looking for work again.
const IDLE: Duration = Duration::from_millis(500);

impl Engine {
    /// Works runs until `shutdown` completes; expires approvals as it goes. A run in flight at
    /// shutdown keeps its place: its lease expires and the next start resumes it.
    pub async fn run_until(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            if let Err(error) = self.store.expire_approvals(self.clock.now()).await {
                tracing::error!(%error, "cannot expire approvals");
            }
            let worked = tokio::select! {
                () = &mut shutdown => return,
                worked = self.work_once() => worked,
            };
            match worked {
                Ok(true) => continue,
                Ok(false) => {}
                Err(error) => tracing::error!(%error, "a run failed"),
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(IDLE) => {}
                () = self.wake.notified() => {}
            }
        }
    }
}
