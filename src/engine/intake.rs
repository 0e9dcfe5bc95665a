//! Intake's engine side. For each alert of a delivery it decides what the alert means for its
//! incident (the lifecycle below), which playbook takes it, and starts, joins or cancels the
//! run, all stored together with the delivery and the audit trail: a delivery is all or
//! nothing. The HTTP handler only parses and answers; [`writer`] batches the deliveries that
//! wait into one commit (group commit).
//!
//! The lifecycle of a firing alert, against the latest incident of its (source, fingerprint):
//!
//! | latest incident | the alert | action |
//! |---|---|---|
//! | none | | `opened`: a new incident, routed to a playbook |
//! | open (but silent past its source's resolve timeout) | | it times out; then as below |
//! | open | | `deduplicated`: counted, joins the incident's run; stored as an alert only if it changes something ([`Trail`]) |
//! | resolved by a run, within the settle window | | `settling`: the sender has not caught up; nothing runs |
//! | resolved by its source, same `startsAt` | | `late_firing`: an HA peer catching up; nothing reopens |
//! | resolved otherwise | | `recurred`: a new incident linked to the earlier one, and a new run |
//!
//! A `resolved` alert resolves its open incident; a run left covering no open incident is
//! cancelled, unless it is verifying a fix. A run covers every incident that joins it (an
//! Alertmanager group of 50 stale backups is one run over 50 incidents); when it verifies its
//! fix, it resolves all of them ([`crate::store::runs::Ending::Verified`]).

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, TransactionBehavior};
use serde_json::json;
use tokio::sync::oneshot;

use super::dispatch::Dispatcher;
use super::worker::Progress;
use crate::auth::Principal;
use crate::clock::Clock;
use crate::config::IncidentsConfig;
use crate::intake::{Alert, AlertStatus, Delivery, FAILURE_ANNOTATION, RawBody};
use crate::store::audit::{self, AlertIntake, AuditDetail, NewAuditEvent, Reason};
use crate::store::intake::{self as rows, IntakeAction, LatestIncident, RecentBodies, ResolvedBy};
use crate::store::runs::{self, Created, NewRun};
use crate::store::{Store, StoreError};

pub mod writer;

use writer::{Connected, Durable, WriterThread};

/// When a repeat is a new problem; see the module docs. The default is the config's.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    pub settle: Duration,
    /// Per source that never sends `resolved`.
    pub resolve_after: BTreeMap<String, Duration>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::from(&IncidentsConfig::default())
    }
}

impl From<&IncidentsConfig> for Lifecycle {
    fn from(config: &IncidentsConfig) -> Self {
        Self {
            settle: Duration::from_secs(config.settle_secs),
            resolve_after: config
                .resolve_after_secs
                .iter()
                .map(|(source, secs)| (source.clone(), Duration::from_secs(*secs)))
                .collect(),
        }
    }
}

/// What happened to one alert of a delivery, in delivery order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertOutcome {
    pub incident_id: Option<i64>,
    /// The run that covers the incident: started, joined, or cancelled by this alert.
    pub run_id: Option<i64>,
    pub action: IntakeAction,
    /// The earlier incident this one repeats (`recurred`).
    pub recurrence_of: Option<i64>,
    /// Why the alert was refused, or why no playbook took it.
    pub reason: Option<String>,
}

/// One delivery as intake records it: parsed, its body verbatim, who sent it and when.
#[derive(Debug, Clone)]
pub struct Submission {
    /// Shared with [`crate::intake::RecentParses`] when the same body came before.
    pub delivery: Arc<Delivery>,
    pub raw_body: RawBody,
    pub actor: Principal,
    pub received_at: DateTime<Utc>,
}

/// The one path from a delivery to incidents and runs.
pub struct IntakeService {
    rules: Arc<Rules>,
    /// Intake's thread, which owns its connection and does all its writing.
    writer: WriterThread,
}

/// What decides what an alert means and which run takes it: shared with intake's thread.
struct Rules {
    /// Routes alerts to playbooks; without it incidents are only recorded.
    dispatcher: Option<Arc<Dispatcher>>,
    lifecycle: Lifecycle,
}

/// What a batch's deliveries got, in order, and whether a run was created.
type Recorded = (Vec<Result<Vec<AlertOutcome>, StoreError>>, bool);

/// `span` before `now`, or the beginning of time for a span longer than the calendar.
fn since(now: DateTime<Utc>, span: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(span)
        .ok()
        .and_then(|span| now.checked_sub_signed(span))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

impl IntakeService {
    /// Starts intake's thread: call within the runtime.
    pub fn new(store: Store, dispatcher: Option<Arc<Dispatcher>>, lifecycle: Lifecycle) -> Self {
        let rules = Arc::new(Rules {
            dispatcher,
            lifecycle,
        });
        Self {
            writer: WriterThread::spawn(store, rules.clone()),
            rules,
        }
    }

    /// Stores one delivery in a transaction of its own: a batch of one (see
    /// [`Self::accept_batch`]).
    pub async fn accept(
        &self,
        delivery: &Delivery,
        raw_body: &str,
        actor: &Principal,
        now: DateTime<Utc>,
    ) -> Result<Vec<AlertOutcome>, StoreError> {
        let submission = Submission {
            delivery: Arc::new(delivery.clone()),
            raw_body: RawBody::new(raw_body.to_owned()),
            actor: actor.clone(),
            received_at: now,
        };
        let mut answers = self.accept_batch(vec![submission]).await?;
        answers.pop().expect("one answer per submission")
    }

    /// Stores each delivery of `batch`, in order, in ONE transaction, and returns once it is
    /// durable: the same `record_batch` the intake writer runs on each batch it takes
    /// from its queue, for a caller that holds the batch itself. A
    /// delivery that fails rolls back alone and gets its own error while the others commit.
    /// Wakes the worker once the commit is durable if a run was created. `Err` means nothing
    /// of the batch was stored, or (an `Io` error from the fsync) that it was but the disk did
    /// not confirm it.
    pub async fn accept_batch(
        &self,
        batch: Vec<Submission>,
    ) -> Result<Vec<Result<Vec<AlertOutcome>, StoreError>>, StoreError> {
        let ((answers, started), durable) = self
            .on_connection(move |conn, rules| {
                rules.record_batch(&mut conn.conn, &mut conn.bodies, &batch)
            })
            .await?;
        durable.wait().await?;
        if started && let Some(dispatcher) = &self.rules.dispatcher {
            dispatcher.wake.notify_one();
        }
        Ok(answers)
    }

    /// Runs `work` on intake's connection, on its thread, while it holds the writer pool's
    /// connection so that nothing else writes meanwhile; once it has committed, asks for the
    /// fsync that makes it durable. A panic in `work` resumes here.
    async fn on_connection<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connected, &Rules) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<(T, Durable), StoreError> {
        let (answer, answered) = oneshot::channel();
        self.writer.run(Box::new(move |conn, rules| {
            let done = std::panic::catch_unwind(AssertUnwindSafe(|| {
                conn.and_then(|conn| {
                    let done = work(conn, rules)?;
                    Ok((done, conn.synced()))
                })
            }));
            // The caller may have gone; what was committed stays committed.
            let _ = answer.send(done);
        }))?;
        match answered.await {
            Ok(Ok(done)) => done,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => Err(StoreError::Other(
                "the intake writer's thread has stopped".into(),
            )),
        }
    }

    /// Resolves every open incident whose source never resolves and has been silent past its
    /// resolve timeout, so lists show what is still live.
    pub async fn time_out_silent(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let (count, durable) = self
            .on_connection(move |conn, rules| {
                let tx = conn
                    .conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)?;
                let mut count = 0;
                for (source, after) in &rules.lifecycle.resolve_after {
                    for id in rows::time_out_incidents(&tx, source, since(now, *after), now)? {
                        audit::append_sync(&tx, now, timed_out(id, *after))?;
                        count += 1;
                    }
                }
                tx.commit()?;
                Ok(count)
            })
            .await?;
        durable.wait().await?;
        Ok(count)
    }
}

impl Rules {
    /// [`IntakeService::accept_batch`] on the connection: one transaction. A delivery rarely
    /// fails alone, so the batch is first written as it is; if one fails, that attempt rolls
    /// back whole and the batch is written again with a savepoint per delivery, so that the
    /// failure is that delivery's alone. (A savepoint for every delivery would copy each page
    /// it touches into a statement journal, every time.)
    fn record_batch(
        &self,
        conn: &mut Connection,
        bodies: &mut RecentBodies,
        batch: &[Submission],
    ) -> Result<Recorded, StoreError> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut answers = Vec::with_capacity(batch.len());
        let mut started = false;
        let mut trail = Trail::default();
        for submission in batch {
            match self.record(&tx, bodies, &mut trail, submission) {
                Ok((outcomes, run_started)) => {
                    started |= run_started;
                    answers.push(Ok(outcomes));
                }
                Err(_) => {
                    drop(tx);
                    return self.record_batch_apart(conn, bodies, batch);
                }
            }
        }
        if trail.flush(&tx).is_err() {
            drop(tx);
            return self.record_batch_apart(conn, bodies, batch);
        }
        tx.commit()?;
        Ok((answers, started))
    }

    /// [`Self::record_batch`] with a savepoint per delivery: one that fails rolls back alone
    /// and gets its own error while the others commit.
    fn record_batch_apart(
        &self,
        conn: &mut Connection,
        bodies: &mut RecentBodies,
        batch: &[Submission],
    ) -> Result<Recorded, StoreError> {
        let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut answers = Vec::with_capacity(batch.len());
        let mut started = false;
        for submission in batch {
            let savepoint = tx.savepoint()?;
            // Repeats coalesce within a delivery here: each delivery commits or rolls back
            // with its own events.
            let mut trail = Trail::default();
            match self
                .record(&savepoint, bodies, &mut trail, submission)
                .and_then(|recorded| trail.flush(&savepoint).map(|()| recorded))
            {
                Ok((outcomes, run_started)) => {
                    savepoint.commit()?;
                    started |= run_started;
                    answers.push(Ok(outcomes));
                }
                Err(error) => {
                    // On a full disk or an I/O error SQLite may roll the whole transaction
                    // back: then nothing of the batch is stored, and the batch fails whole
                    // (a later savepoint would otherwise commit on its own).
                    if savepoint.is_autocommit() {
                        return Err(error);
                    }
                    savepoint.finish()?;
                    answers.push(Err(error));
                }
            }
        }
        tx.commit()?;
        Ok((answers, started))
    }

    /// One delivery (kept verbatim in `raw_body`), every alert's incident and the runs they
    /// start, join or cancel, written on `tx`; also whether a run was created.
    fn record(
        &self,
        tx: &Connection,
        bodies: &mut RecentBodies,
        trail: &mut Trail,
        submission: &Submission,
    ) -> Result<(Vec<AlertOutcome>, bool), StoreError> {
        let Submission {
            delivery,
            raw_body,
            actor,
            received_at: now,
        } = submission;
        let now = *now;
        let delivery_id =
            rows::insert_delivery(tx, bodies, &delivery.source, &actor.name, raw_body, now)?;
        let mut outcomes = Vec::with_capacity(delivery.entries.len());
        let mut started = false;
        for entry in &delivery.entries {
            let outcome = match entry {
                Err(refused) => {
                    rows::insert_refused(tx, refused, delivery_id, now)?;
                    trail.append(
                        tx,
                        now,
                        NewAuditEvent::of(
                            &actor.name,
                            AuditDetail::AlertRefused(audit::AlertRefused {
                                delivery_id: Some(delivery_id),
                                position: Some(refused.position),
                                alert_name: refused.name.clone(),
                                reason: Some(refused.reason.clone()),
                            }),
                        ),
                    )?;
                    AlertOutcome {
                        incident_id: None,
                        run_id: None,
                        action: IntakeAction::Refused,
                        recurrence_of: None,
                        reason: Some(refused.reason.clone()),
                    }
                }
                Ok(alert) => {
                    // The alert and its incident first, then what it means for runs, so the
                    // trail reads in that order.
                    let mut outcome = match alert.status {
                        AlertStatus::Firing => self.incident_for(tx, trail, alert, now)?,
                        AlertStatus::Resolved => self.resolved(tx, alert, now)?,
                    };
                    let intake = AlertIntake {
                        delivery_id: Some(delivery_id),
                        source: Some(alert.source.as_str().to_owned()),
                        alert_name: Some(alert.name.as_str().to_owned()),
                        fingerprint: Some(alert.fingerprint.as_str().to_owned()),
                        status: Some(alert.status.as_str().to_owned()),
                        intake: Some(outcome.action),
                        recurrence_of: outcome.recurrence_of,
                        ..AlertIntake::default()
                    };
                    match outcome.incident_id {
                        Some(incident_id)
                            if outcome.action == IntakeAction::Deduplicated
                                && rows::latest_alert_is(tx, incident_id, alert)? =>
                        {
                            trail.repeat(tx, incident_id, &actor.name, intake, now)?;
                        }
                        incident_id => {
                            let alert_id =
                                rows::insert_alert(tx, alert, delivery_id, incident_id, now)?;
                            let intake = AlertIntake {
                                alert_id: Some(alert_id),
                                ..intake
                            };
                            trail.append(
                                tx,
                                now,
                                NewAuditEvent {
                                    incident_id,
                                    ..NewAuditEvent::of(&actor.name, intake_detail(intake))
                                },
                            )?;
                        }
                    }
                    match alert.status {
                        AlertStatus::Firing => {
                            started |=
                                self.route(tx, trail, alert, &mut outcome, &actor.name, now)?;
                        }
                        AlertStatus::Resolved => {
                            if let Some(incident_id) = outcome.incident_id {
                                cancel_runs_left_without_open_incidents(tx, incident_id, now)?;
                            }
                        }
                    }
                    outcome
                }
            };
            outcomes.push(outcome);
        }
        Ok((outcomes, started))
    }

    /// A firing alert: which incident it belongs to (see the module docs), and the run that
    /// already covers it.
    fn incident_for(
        &self,
        tx: &Connection,
        trail: &mut Trail,
        alert: &Alert,
        now: DateTime<Utc>,
    ) -> Result<AlertOutcome, StoreError> {
        if let Some(after) = self.lifecycle.resolve_after.get(alert.source.as_str())
            && let Some(id) = rows::time_out_incident(tx, alert, since(now, *after), now)?
        {
            trail.append(tx, now, timed_out(id, *after))?;
        }
        let latest = rows::latest_incident(tx, alert)?;
        let (incident_id, action, recurrence_of, run_id) =
            match self.weigh(alert, latest.as_ref(), now) {
                Weighed::Repeat(id, action) => {
                    rows::repeat_incident(tx, id, now)?;
                    (
                        id,
                        action,
                        None,
                        latest.and_then(|latest| latest.linked_run),
                    )
                }
                // A new incident has no run yet.
                Weighed::New { recurrence_of } => {
                    let id = rows::open_incident(tx, alert, recurrence_of, now)?;
                    let action = if recurrence_of.is_some() {
                        IntakeAction::Recurred
                    } else {
                        IntakeAction::Opened
                    };
                    (id, action, recurrence_of, None)
                }
            };
        Ok(AlertOutcome {
            incident_id: Some(incident_id),
            run_id,
            action,
            recurrence_of,
            reason: None,
        })
    }

    /// A firing alert's incident to its playbook's run: started, or joined when the target's
    /// run is already active; or why no playbook takes it. Returns whether a run was created.
    fn route(
        &self,
        tx: &Connection,
        trail: &mut Trail,
        alert: &Alert,
        outcome: &mut AlertOutcome,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let (Some(incident_id), action, linked) =
            (outcome.incident_id, outcome.action, outcome.run_id)
        else {
            return Ok(false);
        };
        let wants_run = match action {
            IntakeAction::Opened | IntakeAction::Recurred => true,
            // A repeat of an incident that has no run yet (no engine then, or no match then)
            // tries again.
            IntakeAction::Deduplicated => linked.is_none(),
            _ => false,
        };
        let Some(dispatcher) = self.dispatcher.as_ref().filter(|_| wants_run) else {
            return Ok(false);
        };
        // A run's own events follow the repeats that led to it.
        trail.flush(tx)?;
        match dispatcher.route(alert) {
            Ok((playbook, version)) => {
                rows::set_routing(tx, incident_id, Some(&playbook.name), None)?;
                let labels = alert
                    .labels
                    .iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
                let progress = Progress {
                    alert_failure: alert.annotations.get(FAILURE_ANNOTATION).map(str::to_owned),
                    ..Progress::start(labels)
                };
                let run = NewRun {
                    incident_id: Some(incident_id),
                    playbook: &playbook.name,
                    version,
                    target: &playbook.target,
                    dry_run: false,
                    actor: "engine",
                    facts: json!(progress),
                };
                match runs::insert_run_sync(tx, &run, now)? {
                    Created::New(id) => {
                        outcome.run_id = Some(id);
                        return Ok(true);
                    }
                    Created::AlreadyActive(id) => {
                        if runs::link_incident(tx, id, incident_id, now)? {
                            trail.append(
                                tx,
                                now,
                                NewAuditEvent {
                                    incident_id: Some(incident_id),
                                    run_id: Some(id),
                                    ..NewAuditEvent::of(
                                        actor,
                                        AuditDetail::RunAttached(Reason {
                                            reason: Some(format!(
                                                "run {id} is already active for target {}",
                                                playbook.target
                                            )),
                                        }),
                                    )
                                },
                            )?;
                        }
                        outcome.run_id = Some(id);
                    }
                }
            }
            Err(reason) => {
                rows::set_routing(tx, incident_id, None, Some(&reason))?;
                if action != IntakeAction::Deduplicated {
                    trail.append(
                        tx,
                        now,
                        NewAuditEvent {
                            incident_id: Some(incident_id),
                            ..NewAuditEvent::of(
                                actor,
                                AuditDetail::IncidentUnmatched(Reason {
                                    reason: Some(reason.clone()),
                                }),
                            )
                        },
                    )?;
                }
                outcome.reason = Some(reason);
            }
        }
        Ok(false)
    }

    /// What a firing alert means against the latest incident of its key.
    fn weigh(&self, alert: &Alert, latest: Option<&LatestIncident>, now: DateTime<Utc>) -> Weighed {
        let Some(latest) = latest else {
            return Weighed::New {
                recurrence_of: None,
            };
        };
        if latest.open {
            return Weighed::Repeat(latest.id, IntakeAction::Deduplicated);
        }
        match latest.resolved_by {
            Some(ResolvedBy::Run)
                if latest
                    .resolved_at
                    .is_some_and(|at| since(now, self.lifecycle.settle) < at) =>
            {
                Weighed::Repeat(latest.id, IntakeAction::Settling)
            }
            Some(ResolvedBy::Source)
                if alert.starts_at.is_some() && alert.starts_at == latest.starts_at =>
            {
                Weighed::Repeat(latest.id, IntakeAction::LateFiring)
            }
            _ => Weighed::New {
                recurrence_of: Some(latest.id),
            },
        }
    }

    /// A resolved alert: its open incident, if any, is resolved by the source.
    fn resolved(
        &self,
        tx: &Connection,
        alert: &Alert,
        now: DateTime<Utc>,
    ) -> Result<AlertOutcome, StoreError> {
        let Some(incident_id) = rows::source_resolve(tx, alert, now)? else {
            return Ok(AlertOutcome {
                incident_id: None,
                run_id: None,
                action: IntakeAction::ResolveUnmatched,
                recurrence_of: None,
                reason: None,
            });
        };
        Ok(AlertOutcome {
            incident_id: Some(incident_id),
            run_id: runs::latest_linked_run(tx, incident_id)?,
            action: IntakeAction::Resolved,
            recurrence_of: None,
            reason: None,
        })
    }
}

impl IntakeService {
    /// Runs [`Self::time_out_silent`] every `every` until `shutdown`: the application owns this
    /// beside the worker.
    pub async fn time_out_until(
        self: Arc<Self>,
        clock: Arc<dyn Clock>,
        every: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = tick.tick() => {
                    if let Err(error) = self.time_out_silent(clock.now()).await {
                        tracing::warn!(%error, "cannot time out silent incidents");
                    }
                }
            }
        }
    }
}

/// Cancels each run that a resolve of `incident_id` left covering no open incident, unless it
/// is verifying a fix (let it finish).
fn cancel_runs_left_without_open_incidents(
    tx: &Connection,
    incident_id: i64,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    for run in runs::runs_left_without_open_incidents(tx, incident_id)? {
        let progress = Progress::decode(&run.facts).unwrap_or_default();
        if !progress.verifying(run.step.as_deref()) {
            runs::cancel_in_sync(tx, run.id, "engine", "the alert's source resolved it", now)?;
        }
    }
    Ok(())
}

/// Intake's audit events for one transaction, in arrival order. Consecutive repeats of one
/// incident that change nothing (see [`rows::latest_alert_is`]) become one
/// `incident.deduplicated` event that lists their deliveries, so an alert repeated in a storm
/// adds an event per batch, not per post, and no alert rows. Every other event goes through
/// [`Trail::append`], which writes the repeats waiting first.
#[derive(Default)]
struct Trail {
    repeats: Option<Repeats>,
}

/// Unchanged repeats of one incident from one sender, waiting to be one event.
struct Repeats {
    incident_id: i64,
    actor: String,
    /// The first repeat's particulars, with every repeat's delivery.
    intake: AlertIntake,
    /// When the last one arrived.
    at: DateTime<Utc>,
}

impl Trail {
    /// Writes the repeats waiting, then `event`.
    fn append(
        &mut self,
        tx: &Connection,
        at: DateTime<Utc>,
        event: NewAuditEvent<'_>,
    ) -> Result<(), StoreError> {
        self.flush(tx)?;
        Ok(audit::append_sync(tx, at, event)?)
    }

    /// Counts an unchanged repeat of `incident_id` into the event waiting for it, or starts one.
    fn repeat(
        &mut self,
        tx: &Connection,
        incident_id: i64,
        actor: &str,
        intake: AlertIntake,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let delivery_id = intake.delivery_id.into_iter();
        if let Some(waiting) = self
            .repeats
            .as_mut()
            .filter(|waiting| waiting.incident_id == incident_id && waiting.actor == actor)
        {
            waiting
                .intake
                .deliveries
                .get_or_insert_default()
                .extend(delivery_id);
            waiting.at = at;
            return Ok(());
        }
        self.flush(tx)?;
        self.repeats = Some(Repeats {
            incident_id,
            actor: actor.to_owned(),
            intake: AlertIntake {
                deliveries: Some(delivery_id.collect()),
                ..intake
            },
            at,
        });
        Ok(())
    }

    /// Writes the repeats waiting, if any, as their one event.
    fn flush(&mut self, tx: &Connection) -> Result<(), StoreError> {
        if let Some(repeats) = self.repeats.take() {
            audit::append_sync(
                tx,
                repeats.at,
                NewAuditEvent {
                    incident_id: Some(repeats.incident_id),
                    ..NewAuditEvent::of(
                        &repeats.actor,
                        AuditDetail::IncidentDeduplicated(repeats.intake),
                    )
                },
            )?;
        }
        Ok(())
    }
}

enum Weighed {
    Repeat(i64, IntakeAction),
    New { recurrence_of: Option<i64> },
}

fn timed_out(incident_id: i64, after: Duration) -> NewAuditEvent<'static> {
    NewAuditEvent {
        incident_id: Some(incident_id),
        ..NewAuditEvent::of(
            "engine",
            AuditDetail::IncidentTimedOut(Reason {
                reason: Some(format!(
                    "its source never resolves and sent no repeat for {}s",
                    after.as_secs()
                )),
            }),
        )
    }
}

/// The event an alert's intake is audited as, by what recording it did.
fn intake_detail(intake: AlertIntake) -> AuditDetail {
    match intake.intake {
        Some(IntakeAction::Opened | IntakeAction::Recurred) | None => {
            AuditDetail::IncidentOpened(intake)
        }
        Some(IntakeAction::Deduplicated) => AuditDetail::IncidentDeduplicated(intake),
        Some(IntakeAction::Settling | IntakeAction::LateFiring) => {
            AuditDetail::IncidentLateRepeat(intake)
        }
        Some(IntakeAction::Resolved) => AuditDetail::IncidentSourceResolved(intake),
        Some(IntakeAction::ResolveUnmatched) => AuditDetail::ResolveUnmatched(intake),
        Some(IntakeAction::Refused) => AuditDetail::AlertRefused(audit::AlertRefused {
            delivery_id: intake.delivery_id,
            position: None,
            alert_name: intake.alert_name,
            reason: None,
        }),
    }
}
