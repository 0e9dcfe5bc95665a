//! Driving runs. A worker takes the lease of a run that needs one (new, or left behind by a
//! crashed worker), keeps it alive with heartbeats, and moves the run step by step:
//! diagnose → the cause's remediation steps → verification → resolved, or escalated with the
//! reason. Every move is a fenced write, so a worker that lost the run (cancelled, or taken
//! over after a stall) stops at its next step boundary; so does every worker while paused.
//!
//! Where a run is lives in the run itself (`step` and `facts`, a versioned [`Progress`]), so a
//! restarted process resumes it. A step found `started` but not `finished` is run again if it
//! is idempotent; otherwise its recheck probe decides (the effect is in place: go on; it is
//! not: run it; unknown: ask a human by escalating).
//!
//! A run is driven by the playbook it pinned when it was created (its stored text, parsed once
//! per hash), never by whatever the file says now. Progress that cannot be read, a version this
//! build does not know, or a step its playbook lacks escalates the run with the reason; a panic
//! while driving one run escalates that run, and the worker goes on with the next. On shutdown
//! the worker gives its run back at once, so the next start resumes it without waiting for the
//! lease to expire.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use super::diagnose::{ProbeRecord, diagnose, run_probe};
use super::estate::Estate;
use super::facts;
use super::scope::{self, Scope};
use super::step::{StepContext, StepOutcome, needs_approval, run_step};
use crate::clock::Clock;
use crate::intake::Labels;
use crate::playbook::model::{Risk, SequenceApproval};
use crate::playbook::{self, Playbook, PlaybookVersion};
use crate::store::Store;
use crate::store::approvals::ApprovalStatus;
use crate::store::runs::{Ending, Lease, Run, RunError};
use crate::store::safety::{Blocked, Limits, Switch};

/// The step name of a run that has not been diagnosed yet.
pub const DIAGNOSE: &str = "diagnose";
/// The step name of a run that passed its last step (and is being finished).
pub const DONE: &str = "done";

/// The layout of [`Progress`] this build writes and reads. Progress written before versioning
/// has no `version` and is this layout.
pub const PROGRESS_VERSION: u32 = 1;

/// What a run carries from step to step (its `facts` column).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Progress {
    #[serde(default = "first_version")]
    pub version: u32,
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
    /// The failure text the alert itself carried (the forwarder's failed task), kept as
    /// evidence next to what the probes find.
    #[serde(default)]
    pub alert_failure: Option<String>,
    /// When the diagnosis started, on the run's clock, and what each of its probes did: the
    /// run's timeline picture draws them.
    #[serde(default)]
    pub diagnosed_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub probes: Vec<ProbeRecord>,
}

fn first_version() -> u32 {
    PROGRESS_VERSION
}

impl Progress {
    /// A new run's progress: only the alert's labels.
    pub fn start(labels: BTreeMap<String, String>) -> Self {
        Self {
            labels,
            ..Self::default()
        }
    }

    /// Whether a run at `step` is verifying its fix: past its remediation steps.
    pub fn verifying(&self, step: Option<&str>) -> bool {
        step.and_then(|step| self.plan.iter().position(|s| s == step))
            .is_some_and(|position| position >= self.remediation_len)
    }

    /// Reads a run's stored progress; the error says why it cannot be used.
    pub fn decode(stored: &Json) -> Result<Self, String> {
        if let Some(version) = stored.get("version")
            && version.as_u64() != Some(u64::from(PROGRESS_VERSION))
        {
            return Err(format!(
                "the run's progress has version {version}, which this runbookd does not know (it reads version {PROGRESS_VERSION})"
            ));
        }
        serde_json::from_value(stored.clone())
            .map_err(|e| format!("the run's progress cannot be decoded: {e}"))
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            version: PROGRESS_VERSION,
            labels: BTreeMap::new(),
            cause: None,
            evidence: BTreeMap::new(),
            facts: BTreeMap::new(),
            report: BTreeMap::new(),
            plan: Vec::new(),
            remediation_len: 0,
            alert_failure: None,
            diagnosed_at: None,
            probes: Vec::new(),
        }
    }
}

/// Playbooks parsed from the text runs pinned, by content hash: each version is parsed once.
#[derive(Debug, Clone, Default)]
pub struct PinnedPlaybooks(Arc<Mutex<HashMap<String, Arc<Playbook>>>>);

impl PinnedPlaybooks {
    /// The playbook `version` holds, parsed on first use.
    fn get(&self, name: &str, version: &PlaybookVersion) -> Result<Arc<Playbook>, String> {
        if let Some(parsed) = self.0.lock().expect("pinned playbooks").get(&version.hash) {
            return Ok(parsed.clone());
        }
        let short: String = version.hash.chars().take(12).collect();
        let origin = format!("{name} (pinned {short})");
        let parsed = playbook::parse(std::path::Path::new(&origin), &version.text)
            .map(Arc::new)
            .map_err(|problems| {
                let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
                format!(
                    "the playbook this run pinned no longer loads: {}",
                    problems.join("; ")
                )
            })?;
        self.0
            .lock()
            .expect("pinned playbooks")
            .insert(version.hash.clone(), parsed.clone());
        Ok(parsed)
    }
}

#[derive(Clone)]
pub struct Engine {
    pub store: Store,
    pub estate: Arc<Estate>,
    /// The playbooks loaded now: only for runs created before runs pinned theirs.
    pub playbooks: Arc<Vec<Playbook>>,
    /// The playbooks runs pinned, parsed.
    pub pinned: PinnedPlaybooks,
    pub clock: Arc<dyn Clock>,
    /// This worker's name, as leases and the audit trail show it: unique per process.
    pub owner: String,
    pub lease_for: Duration,
    pub limits: Limits,
    /// Notified when there may be work (a run created, an approval decided, resume, cancel);
    /// otherwise the worker looks again after `idle`.
    pub wake: Arc<tokio::sync::Notify>,
    /// How long an idle worker waits before looking for work again, unless woken.
    pub idle: Duration,
}

/// A lease owner no other process has: `runbookd-<uuid>`.
pub fn unique_owner() -> String {
    format!("runbookd-{}", uuid::Uuid::new_v4())
}

/// The longest wait between two tries of a run's write the database could not take.
const MAX_WRITE_BACKOFF: Duration = Duration::from_secs(5);

/// Does a run's write, trying again while the database cannot take it (locked by another
/// program, its disk full or failing): the run waits at its step boundary with its lease, and
/// goes on from there once the write lands. Giving up instead would strand what a step did:
/// a command that ran but is not recorded is not run twice only because its record is kept
/// and written late. Any other error, and a lost lease, ends the wait.
pub(crate) async fn persist<T, W, F>(what: &str, mut write: W) -> Result<T, RunError>
where
    W: FnMut() -> F,
    F: std::future::Future<Output = Result<T, RunError>>,
{
    let mut backoff = Duration::from_millis(100);
    let mut failures: u32 = 0;
    loop {
        match write().await {
            Err(RunError::Store(error)) if error.retry_after().is_some() => {
                failures += 1;
                // Said at 1, 2, 4, 8 ... failures, not on every try.
                if failures.is_power_of_two() {
                    tracing::warn!(%error, what, failures, "the run waits at its step boundary: the database cannot take its write; trying again");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_WRITE_BACKOFF);
            }
            done => {
                if failures > 0 && done.is_ok() {
                    tracing::info!(what, failures, "the run's write landed; the run goes on");
                }
                return done;
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Run(#[from] RunError),
}

/// What one look for work found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Worked {
    Nothing,
    /// A run was driven until it ended, parked or was lost.
    Run,
    /// Shutdown came while driving a run: it was given back.
    Stopped,
}

impl Engine {
    /// Takes one run that needs a worker and drives it until it ends, parks or is lost.
    /// Returns whether there was one. Nothing is taken while runbookd is paused.
    pub async fn work_once(&self) -> Result<bool, EngineError> {
        Ok(self.work_until(std::future::pending()).await? == Worked::Run)
    }

    /// As [`Self::work_once`]; when `stop` completes first, the drive is abandoned and the run
    /// given back (fenced, audited "shutting down").
    async fn work_until(
        &self,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<Worked, EngineError> {
        // Nothing is taken while paused: the lease reads the switch in its own transaction.
        let Some((lease, run)) = self
            .store
            .acquire_run(&self.owner, self.lease_for, self.clock.now())
            .await?
        else {
            return Ok(Worked::Nothing);
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
                    match store.heartbeat(&lease, lease_for, clock.now()).await {
                        Ok(()) => {}
                        // The database cannot take it now: the next beat may land in time.
                        Err(RunError::Store(error)) if error.retry_after().is_some() => {}
                        Err(error) => {
                            tracing::warn!(run = lease.run_id, %error, "the run's heartbeat stops");
                            return;
                        }
                    }
                }
            })
        };
        let mut drive = guarded({
            let (engine, lease) = (self.clone(), lease.clone());
            async move { engine.drive(&lease, run).await }
        });
        tokio::pin!(stop);
        let joined = tokio::select! {
            joined = &mut drive => Some(joined),
            () = &mut stop => None,
        };
        let result = match joined {
            None => {
                drive.abort().await;
                heartbeat.abort();
                return match self
                    .store
                    .release_run(&lease, "shutting down", self.clock.now())
                    .await
                {
                    Ok(()) | Err(RunError::LeaseLost { .. }) => Ok(Worked::Stopped),
                    Err(error) => Err(error.into()),
                };
            }
            Some(Ok(result)) => result,
            Some(Err(reason)) => {
                tracing::error!(run = lease.run_id, %reason, "escalating the run");
                self.finish(&lease, Ending::Escalated, &json!({ "reason": reason }))
                    .await
            }
        };
        heartbeat.abort();
        match result {
            Ok(()) | Err(RunError::LeaseLost { .. }) => Ok(Worked::Run),
            // A write that is not retried in place (a read, a wait's note) found the database
            // unavailable: the run goes back as it stands, to resume at its step boundary.
            Err(RunError::Store(error)) if error.retry_after().is_some() => {
                tracing::warn!(run = lease.run_id, %error, "giving the run back until the database takes writes");
                let now = self.clock.now();
                let reason = format!("given back: {error}");
                match persist("give the run back", || {
                    self.store.release_run(&lease, &reason, now)
                })
                .await
                {
                    Ok(()) | Err(RunError::LeaseLost { .. }) => Ok(Worked::Run),
                    Err(error) => Err(error.into()),
                }
            }
            Err(error) => Err(error.into()),
        }
    }

    /// The playbook the run is driven by: the one it pinned, or (a run created before pinning)
    /// the one loaded under its name.
    async fn playbook_for(&self, run: &Run) -> Result<Arc<Playbook>, String> {
        match self
            .store
            .pinned_playbook(run.id)
            .await
            .map_err(|e| format!("cannot read the run's pinned playbook: {e}"))?
        {
            Some(version) => self.pinned.get(&run.playbook, &version),
            None => self
                .playbooks
                .iter()
                .find(|p| p.name == run.playbook)
                .map(|p| Arc::new(p.clone()))
                .ok_or_else(|| format!("no playbook named '{}'", run.playbook)),
        }
    }

    async fn drive(&self, lease: &Lease, run: Run) -> Result<(), RunError> {
        let now = self.clock.now();
        let mut progress = match Progress::decode(&run.facts.0) {
            Ok(progress) => progress,
            Err(reason) => return self.escalate(lease, &Progress::default(), &reason).await,
        };
        let playbook = match self.playbook_for(&run).await {
            Ok(playbook) => playbook,
            Err(reason) => return self.escalate(lease, &progress, &reason).await,
        };
        let playbook = playbook.as_ref();
        let labels = Labels::parse(progress.labels.clone()).unwrap_or_default();
        let parameters = match scope::parameters(playbook, &self.estate, &labels) {
            Ok(parameters) => parameters,
            Err(error) => {
                // Bad input is not a failure of the target: refused, it does not trip the breaker.
                let reason = format!("the alert's labels are not usable: {error}");
                return self
                    .finish(lease, Ending::Refused, &json!({"reason": reason}))
                    .await;
            }
        };
        let mut position = match run.step.as_deref() {
            None | Some(DIAGNOSE) => {
                let diagnosis = match diagnose(playbook, &self.estate, &labels, now).await {
                    Ok(d) => d,
                    Err(error) => return self.escalate(lease, &progress, &error).await,
                };
                progress.diagnosed_at = Some(now);
                progress.probes = diagnosis.probes;
                progress.facts = diagnosis.facts;
                progress.report = diagnosis.report;
                progress.evidence = diagnosis.evidence;
                if let Some(failure) = &progress.alert_failure {
                    progress.evidence.insert(
                        "alert_failure".to_owned(),
                        json!({"text": failure, "class": super::builtins::classify_log(failure, None)}),
                    );
                }
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
                    .cause(&cause_id)
                    .expect("the cause came from the playbook");
                if cause.remediate.is_empty() && run.dry_run {
                    return self.rehearsed(lease, playbook, &progress).await;
                }
                if cause.remediate.is_empty() {
                    let outcome = json!({"cause": cause_id, "evidence": progress.evidence, "report": progress.report, "offer": cause.offer});
                    return self.finish(lease, Ending::Resolved, &outcome).await;
                }
                progress.plan = cause
                    .remediate
                    .iter()
                    .chain(&playbook.verify)
                    .cloned()
                    .collect();
                progress.remediation_len = cause.remediate.len();
                let (facts, evidence, now) =
                    (json!(progress), json!(progress.evidence), self.clock.now());
                persist("record the diagnosis", || {
                    self.store.diagnosed(
                        lease,
                        &progress.plan[0],
                        &facts,
                        &cause_id,
                        &evidence,
                        now,
                    )
                })
                .await?;
                0
            }
            Some(DONE) => progress.plan.len(),
            Some(step) => match progress.plan.iter().position(|s| s == step) {
                Some(position) => position,
                None => {
                    let reason = format!(
                        "the run is at step '{}', which is not in its plan ({})",
                        step.escape_debug(),
                        progress.plan.join(", ")
                    );
                    return self.escalate(lease, &progress, &reason).await;
                }
            },
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
            let Some(step) = playbook.steps.get(&name) else {
                let reason = format!(
                    "the run's plan names step '{}', which its playbook does not have",
                    name.escape_debug()
                );
                return self.escalate(lease, &progress, &reason).await;
            };
            // A cause that asks once: its remediation sequence is approved as a whole.
            let asks_once = position < progress.remediation_len
                && progress
                    .cause
                    .as_deref()
                    .and_then(|c| playbook.cause(c))
                    .is_some_and(|c| c.approval == SequenceApproval::Once);
            let sequence = &progress.plan[..progress.remediation_len];
            let approved = if asks_once {
                self.approved_any(lease.run_id, sequence).await?
            } else {
                self.approved_any(lease.run_id, std::slice::from_ref(&name))
                    .await?
            };
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
                sequence: asks_once.then_some(sequence),
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
                StepOutcome::GuardTimedOut(reason) => {
                    return self
                        .escalate(
                            lease,
                            &progress,
                            &format!("step '{name}' did not act: {reason}"),
                        )
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
                .unwrap_or_else(|| DONE.to_owned());
            let (facts, reason, now) = (
                json!(progress),
                format!("step '{name}' done"),
                self.clock.now(),
            );
            persist("advance the run", || {
                self.store.advance(lease, &next, &facts, &reason, now)
            })
            .await?;
        }
        if run.dry_run {
            return self.rehearsed(lease, playbook, &progress).await;
        }
        let outcome = json!({"cause": progress.cause, "evidence": progress.evidence, "report": progress.report, "steps": progress.plan});
        self.finish(lease, Ending::Verified, &outcome).await
    }

    /// Whether a human approved one of `steps` in this run.
    async fn approved_any(&self, run_id: i64, steps: &[String]) -> Result<bool, RunError> {
        let approvals = self.store.approvals_for_run(run_id).await?;
        Ok(approvals
            .iter()
            .any(|a| steps.contains(&a.step) && a.status == ApprovalStatus::Approved))
    }

    /// Runs the step's recheck probe: is its effect in place (every fact it yields true)?
    async fn recheck(
        &self,
        ctx: &StepContext<'_>,
        step: &crate::playbook::compiled::Step,
    ) -> Option<bool> {
        let probe = ctx.playbook.probe(step.recheck.as_deref()?)?;
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
        self.finish(lease, Ending::Rehearsed, &outcome).await
    }

    /// Ends the run, waiting at its last step boundary while the database cannot take it.
    async fn finish(&self, lease: &Lease, ending: Ending, outcome: &Json) -> Result<(), RunError> {
        let now = self.clock.now();
        persist("end the run", || {
            self.store.finish_run(lease, ending, outcome, now)
        })
        .await
    }

    async fn escalate(
        &self,
        lease: &Lease,
        progress: &Progress,
        reason: &str,
    ) -> Result<(), RunError> {
        let outcome = json!({"reason": reason, "cause": progress.cause, "evidence": progress.evidence, "facts": progress.facts, "report": progress.report});
        self.finish(lease, Ending::Escalated, &outcome).await
    }
}

impl Engine {
    /// Works runs until `shutdown` completes; expires approvals as it goes. A run in flight at
    /// shutdown is given back at once (its step boundary is not awaited: an interrupted step
    /// is handled on resume as after a crash), so the next start resumes it.
    pub async fn run_until(self, shutdown: impl std::future::Future<Output = ()>) {
        let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
        loop {
            let expired = match self.store.expire_approvals(self.clock.now()).await {
                Ok(expired) => expired,
                Err(error) => {
                    tracing::error!(%error, "cannot expire approvals");
                    0
                }
            };
            if futures::FutureExt::now_or_never(shutdown.clone()).is_some() {
                return;
            }
            // Not raced against shutdown: it hands its run back itself when shutdown comes.
            let worked = self.work_until(shutdown.clone()).await;
            match worked {
                Ok(Worked::Stopped) => return,
                Ok(Worked::Run) => continue,
                // An expired approval may have sent a run back to the workers.
                Ok(Worked::Nothing) if expired > 0 => continue,
                Ok(Worked::Nothing) => {}
                Err(error) => tracing::error!(%error, "a run failed"),
            }
            tokio::select! {
                () = shutdown.clone() => return,
                () = tokio::time::sleep(self.idle) => {}
                () = self.wake.notified() => {}
            }
        }
    }
}

/// A future run in its own task, so that a panic in it is caught and told as the reason a run
/// escalates ("the engine panicked: …") instead of ending the worker.
struct Guarded<T>(tokio::task::JoinHandle<T>);

fn guarded<F>(future: F) -> Guarded<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    Guarded(tokio::spawn(future))
}

impl<T> Guarded<T> {
    /// Stops the task and waits until it has stopped.
    async fn abort(self) {
        self.0.abort();
        let _ = self.0.await;
    }
}

impl<T> std::future::Future for Guarded<T> {
    type Output = Result<T, String>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|joined| {
            joined.map_err(|error| match error.try_into_panic() {
                Ok(panic) => format!("the engine panicked: {}", panic_message(&*panic)),
                Err(error) => format!("the engine stopped driving the run: {error}"),
            })
        })
    }
}

/// What a panic said, when it said it with a string.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_while_driving_becomes_the_reason_and_the_caller_goes_on() {
        let plan: Vec<&str> = Vec::new();
        let panicked =
            guarded(async move { plan.first().copied().expect("a step the playbook has") }).await;
        assert_eq!(
            panicked,
            Err("the engine panicked: a step the playbook has".to_owned())
        );
        let id = 7;
        let formatted = guarded(async move { panic!("run {id} broke") }).await;
        assert_eq!(
            formatted,
            Err::<(), _>("the engine panicked: run 7 broke".to_owned())
        );
        assert_eq!(guarded(async { 42 }).await, Ok(42));
    }

    #[test]
    fn progress_of_an_unknown_version_or_shape_is_refused_with_the_reason() {
        let unknown = Progress::decode(&json!({"version": 2, "labels": {}})).unwrap_err();
        assert!(unknown.contains("version 2"), "{unknown}");
        let text = Progress::decode(&json!("{not json")).unwrap_err();
        assert!(text.contains("cannot be decoded"), "{text}");
        let unversioned = Progress::decode(&json!({"labels": {"a": "b"}})).unwrap();
        assert_eq!(unversioned.version, PROGRESS_VERSION);
        assert_eq!(
            json!(Progress::start(BTreeMap::new()))["version"],
            PROGRESS_VERSION
        );
    }
}
