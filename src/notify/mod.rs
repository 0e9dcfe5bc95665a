//! Notifications: approval needed, run escalated, run resolved, breaker tripped, sent to the
//! configured sinks (a JSON webhook, ntfy with action buttons, a Slack-compatible webhook),
//! with signed one-tap approve and reject links ([`links`]).
//!
//! The notifier follows the append-only audit trail by id, with its cursor in the database;
//! nothing in a run waits for it. Each event becomes at most one [`Notification`], delivered to
//! each sink that wants it in its own task, with retries and exponential backoff, a timeout on
//! every request and every attempt audited (`notify.attempt`, by sink name: a sink's URL may
//! be its secret). A dead sink delays nobody.
//!
//! **The cursor** moves on in memory as each event is handed to its delivery tasks, so while
//! runbookd runs an event is sent once. Its copy in the database is written after each batch,
//! best-effort and never backwards: if that write fails, or runbookd crashes before it, the
//! next start repeats the last batch (with fresh links). Deliveries still in flight when
//! runbookd stops (after a bounded wait) are dropped. With no sinks the cursor is dropped, so
//! turning sinks on again starts from then instead of replaying the time they were off.
//!
//! **An event that keeps failing** to become a notification (say a row that no longer decodes)
//! is tried again on each look, with the warning backed off, and after [`SKIP_AFTER`]
//! consecutive failures it is skipped, logged as an error and audited (`notify.skipped`), so
//! it cannot hold up every later notification. A busy database is waited out, not counted.
//!
//! | audit event | notification |
//! |---|---|
//! | `approval.requested` (still pending) | `approval_requested`, with the links |
//! | `run.finished` resolved / escalated | `run_resolved` / `run_escalated` |
//! | `approval.decided` that escalated the run (rejected, expired) | `run_escalated` |
//! | `control.blocked` by the circuit breaker | `breaker_tripped`, once per target per 24 h |

pub mod links;
mod payload;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tokio::task::JoinSet;
use url::Url;

use crate::audit_story::if_nobody_decides;
use crate::clock::Clock;
use crate::config::Notify;
use crate::config::notify::{EventKind, Sink};
use crate::store::approvals::{Approval, ApprovalStatus, Decision};
use crate::store::audit::{
    AuditDetail, AuditEvent, DeliveryOutcome, NewAuditEvent, NotifyAttempt, NotifySkipped,
};
use crate::store::runs::{Run, RunState};
use crate::store::{Store, StoreError};
use links::LinkSigner;

/// The audit trail's actor for delivery attempts.
const ACTOR: &str = "notifier";
/// Events read per look at the trail.
const BATCH: u32 = 100;
/// Consecutive failures on one event before it is skipped.
pub const SKIP_AFTER: u32 = 10;
/// A tripped breaker is announced again only after its 24 h window.
const BREAKER_QUIET: Duration = Duration::from_secs(24 * 3600);

/// What happened, in the words every sink gets.
#[derive(Debug, Clone, Serialize)]
pub struct Notification {
    pub event: EventKind,
    pub title: String,
    pub message: String,
    pub incident_id: Option<i64>,
    pub run: Option<RunSummary>,
    pub approval: Option<ApprovalSummary>,
    /// Why a run escalated, or why the breaker tripped.
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub id: i64,
    pub playbook: String,
    pub target: String,
    pub state: RunState,
}

#[derive(Debug, Clone, Serialize)]
pub struct ApprovalSummary {
    pub id: i64,
    pub step: String,
    pub command: String,
    pub risk: String,
    pub expires_at: DateTime<Utc>,
}

/// Where a notification's buttons go. The approve and reject links are signed for one sink.
#[derive(Debug, Clone, Serialize)]
pub struct Links {
    pub approve: Option<String>,
    pub reject: Option<String>,
    pub open: String,
}

/// Follows the audit trail and sends notifications until stopped.
pub struct Notifier {
    shared: Arc<Shared>,
}

/// What every delivery task needs.
struct Shared {
    store: Store,
    clock: Arc<dyn Clock>,
    signer: Arc<LinkSigner>,
    settings: Notify,
    public_url: Url,
    client: reqwest::Client,
}

impl Notifier {
    /// `public_url` is where the links point (the configured one, or the listen address).
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        signer: Arc<LinkSigner>,
        settings: Notify,
        public_url: Url,
    ) -> anyhow::Result<Self> {
        // A sink gets exactly the URL configured: no redirect (a 3xx is a failure) and no proxy
        // from the environment, so neither the body (with its links) nor the token goes
        // anywhere else.
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .user_agent(concat!("runbookd/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            shared: Arc::new(Shared {
                store,
                clock,
                signer,
                settings,
                public_url,
                client,
            }),
        })
    }

    /// Looks at the trail every poll interval until `stop` completes; then gives in-flight
    /// deliveries one request timeout to finish and drops the rest.
    pub async fn run_until(self, stop: impl Future<Output = ()>) {
        let shared = self.shared;
        let mut deliveries = JoinSet::new();
        let mut tick = tokio::time::interval(shared.settings.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        let mut position = Position::default();
        loop {
            tokio::select! {
                () = &mut stop => break,
                _ = tick.tick() => {}
            }
            while deliveries.try_join_next().is_some() {}
            if let Err(error) = follow(&shared, &mut position, &mut deliveries).await {
                tracing::warn!(%error, "the notifier cannot read the audit trail; trying again");
            }
        }
        let _ = tokio::time::timeout(shared.settings.timeout, async {
            while deliveries.join_next().await.is_some() {}
        })
        .await;
        deliveries.shutdown().await;
    }
}

/// Where the notifier is, kept in memory between looks at the trail.
#[derive(Default)]
struct Position {
    /// The last event handed off; read from the database on the first look.
    cursor: Option<i64>,
    /// The event after the cursor that failed to become a notification, and how many times
    /// in a row.
    failing: Option<(i64, u32)>,
}

impl Position {
    /// Counts one more failure on `event_id`; the count in a row.
    fn failed(&mut self, event_id: i64) -> u32 {
        let count = match self.failing {
            Some((id, count)) if id == event_id => count + 1,
            _ => 1,
        };
        self.failing = Some((event_id, count));
        count
    }
}

/// Reads what is new in the trail and hands each notification to its sinks.
async fn follow(
    shared: &Arc<Shared>,
    position: &mut Position,
    deliveries: &mut JoinSet<()>,
) -> Result<(), StoreError> {
    let mut cursor = match position.cursor {
        Some(cursor) => cursor,
        None => shared.store.notify_cursor().await?,
    };
    position.cursor = Some(cursor);
    loop {
        let events = shared.store.audit_events_after(cursor, BATCH).await?;
        for event in &events {
            match notification_for(shared, event).await {
                Ok(notification) => {
                    if let Some(notification) = notification.map(Arc::new) {
                        hand_off(shared, &notification, deliveries);
                    }
                }
                Err(error) if error.retry_after().is_some() => {
                    save_cursor(shared, cursor).await;
                    return Err(error);
                }
                Err(error) => {
                    let failures = position.failed(event.id);
                    if failures < SKIP_AFTER {
                        // Warned at 1, 2, 4, 8 ... failures, not on every look.
                        if failures.is_power_of_two() {
                            tracing::warn!(event_id = event.id, action = %event.action, failures, %error, "cannot make a notification of this event; trying again");
                        }
                        save_cursor(shared, cursor).await;
                        return Ok(());
                    }
                    skip(shared, event, failures, &error).await;
                }
            }
            position.failing = None;
            cursor = event.id;
            position.cursor = Some(cursor);
        }
        if !events.is_empty() {
            save_cursor(shared, cursor).await;
        }
        if events.len() < BATCH as usize {
            return Ok(());
        }
    }
}

/// Starts a delivery task for each sink that wants `notification`.
fn hand_off(shared: &Arc<Shared>, notification: &Arc<Notification>, deliveries: &mut JoinSet<()>) {
    for sink in &shared.settings.sinks {
        if sink.events.contains(&notification.event) {
            let (shared, sink, notification) = (shared.clone(), sink.clone(), notification.clone());
            deliveries.spawn(async move { deliver(&shared, &sink, &notification).await });
        }
    }
}

/// Writes the cursor back. Best-effort: the position in memory is what counts while runbookd
/// runs; a lost write only means the next start repeats a batch.
async fn save_cursor(shared: &Shared, cursor: i64) {
    if let Err(error) = shared.store.set_notify_cursor(cursor).await {
        tracing::warn!(%error, cursor, "cannot save the notifier's cursor; a restart may repeat notifications");
    }
}

/// Gives up on an event that keeps failing: an error in the log and a `notify.skipped` row.
async fn skip(shared: &Shared, event: &AuditEvent, failures: u32, error: &StoreError) {
    let error = match std::error::Error::source(error) {
        Some(cause) => format!("{error}: {cause}"),
        None => error.to_string(),
    };
    tracing::error!(event_id = event.id, action = %event.action, failures, %error, "skipping an event that cannot become a notification");
    let audited = shared
        .store
        .record_event(
            NewAuditEvent {
                incident_id: event.incident_id,
                run_id: event.run_id,
                ..NewAuditEvent::of(
                    ACTOR,
                    AuditDetail::NotifySkipped(NotifySkipped {
                        event_id: Some(event.id),
                        action: Some(event.action),
                        failures: Some(failures),
                        error: Some(error),
                    }),
                )
            },
            shared.clock.now(),
        )
        .await;
    if let Err(error) = audited {
        tracing::warn!(%error, event_id = event.id, "cannot audit a skipped event");
    }
}

/// The notification an audit event calls for, if any.
async fn notification_for(
    shared: &Shared,
    event: &AuditEvent,
) -> Result<Option<Notification>, StoreError> {
    let store = &shared.store;
    let Some(run) = (match event.run_id {
        Some(id) => store.run(id).await?,
        None => None,
    }) else {
        return Ok(None);
    };
    let summary = RunSummary {
        id: run.id,
        playbook: run.playbook.clone(),
        target: run.target.clone(),
        state: run.state,
    };
    let escalated = |reason: Option<String>| {
        let reason = reason.unwrap_or_else(|| "no reason was recorded".to_owned());
        Notification {
            event: EventKind::RunEscalated,
            title: format!(
                "Run {} escalated: {} on {}",
                run.id, run.playbook, run.target
            ),
            message: format!("A human is needed: {reason}"),
            incident_id: run.incident_id,
            run: Some(summary.clone()),
            approval: None,
            reason: Some(reason),
        }
    };
    let notification = match &event.detail {
        AuditDetail::ApprovalRequested(requested) => {
            let Some(id) = requested.approval_id else {
                return Ok(None);
            };
            let Some(approval) = store
                .approval(id)
                .await?
                .filter(|a| a.status == ApprovalStatus::Pending)
            else {
                return Ok(None);
            };
            Notification {
                event: EventKind::ApprovalRequested,
                title: format!("Approval needed: {} on {}", approval.step, run.target),
                message: approval_message(&run, &approval),
                incident_id: run.incident_id,
                run: Some(summary),
                approval: Some(ApprovalSummary {
                    id: approval.id,
                    step: approval.step,
                    command: approval.command,
                    risk: approval.risk,
                    expires_at: approval.expires_at,
                }),
                reason: None,
            }
        }
        AuditDetail::RunFinished(finished) => match finished.state {
            Some(RunState::Resolved) => Notification {
                event: EventKind::RunResolved,
                title: format!(
                    "Run {} resolved: {} on {}",
                    run.id, run.playbook, run.target
                ),
                message: "The playbook fixed it and verified the fix.".to_owned(),
                incident_id: run.incident_id,
                run: Some(summary),
                approval: None,
                reason: None,
            },
            Some(RunState::Escalated) => escalated(finished.why().map(str::to_owned)),
            _ => return Ok(None),
        },
        // A rejected or expired approval ends its run escalated without a `run.finished`.
        AuditDetail::ApprovalDecided(decided) if run.state == RunState::Escalated => {
            if !decided.rejected() {
                return Ok(None);
            }
            escalated(
                run.outcome
                    .as_ref()
                    .and_then(|o| o.0.get("reason"))
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            )
        }
        AuditDetail::ActionBlocked(blocked) if blocked.by_breaker() => {
            if !store
                .claim_breaker_notice(&run.target, BREAKER_QUIET, event.at)
                .await?
            {
                return Ok(None);
            }
            let reason = blocked.reason.clone().unwrap_or_default();
            Notification {
                event: EventKind::BreakerTripped,
                title: format!("Circuit breaker tripped for {}", run.target),
                message: format!("Automatic runs on {} are stopped: {reason}", run.target),
                incident_id: run.incident_id,
                run: Some(summary),
                approval: None,
                reason: Some(reason),
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(notification))
}

/// An approval in the words a phone shows: each command with the host it runs on and what it
/// changes, the risk, and what happens if nobody decides by when.
fn approval_message(run: &Run, approval: &Approval) -> String {
    let actions = approval
        .actions
        .as_ref()
        .map(|a| a.0.as_slice())
        .unwrap_or_default();
    let what = if actions.is_empty() {
        format!("`{}`", approval.command)
    } else {
        actions
            .iter()
            .map(|a| {
                let place = a
                    .host
                    .as_deref()
                    .map(|h| format!(" on {h}"))
                    .unwrap_or_default();
                let changes = a
                    .changes
                    .as_deref()
                    .map(|c| format!(" ({c})"))
                    .unwrap_or_default();
                format!("`{}`{place}{changes}", a.command)
            })
            .collect::<Vec<_>>()
            .join(", then ")
    };
    format!(
        "Run {} ({}) wants to run {what}, risk {}. If nobody decides by {}, {}.",
        run.id,
        run.playbook,
        approval.risk,
        approval.expires_at.format("%Y-%m-%d %H:%M UTC"),
        if_nobody_decides(&approval.on_timeout)
    )
}

/// Why one attempt failed, without the sink's URL or token.
#[derive(Debug)]
struct Failure {
    status: Option<u16>,
    error: String,
    retryable: bool,
}

/// Sends one notification to one sink, retrying with backoff; audits every attempt.
async fn deliver(shared: &Shared, sink: &Sink, notification: &Notification) {
    let links = match links_for(shared, sink, notification) {
        Ok(links) => links,
        Err(error) => {
            // Nothing can be sent without its links: one failed attempt, given up on.
            tracing::error!(sink = %sink.name, %error, "cannot sign the notification's links");
            let error = format!("cannot make the notification's links: {error:#}");
            let detail = NotifyAttempt {
                sink: Some(sink.name.clone()),
                event: Some(notification.event),
                attempt: Some(1),
                outcome: Some(DeliveryOutcome::Failed),
                status: None,
                error: Some(error),
                gave_up: Some(true),
            };
            audit_attempt(shared, sink, notification, detail).await;
            return;
        }
    };
    let body = payload::body(sink, notification, &links);
    let settings = &shared.settings;
    let attempt = AtomicU32::new(0);
    let backoff = ExponentialBuilder::default()
        .with_min_delay(settings.backoff_initial)
        .with_max_delay(settings.backoff_max)
        .with_max_times(settings.attempts.saturating_sub(1) as usize)
        .with_jitter();
    let send = || async {
        let number = attempt.fetch_add(1, Ordering::Relaxed) + 1;
        let outcome = send_once(shared, sink, &body).await;
        let last = number >= settings.attempts || outcome.as_ref().is_err_and(|f| !f.retryable);
        let mut detail = NotifyAttempt {
            sink: Some(sink.name.clone()),
            event: Some(notification.event),
            attempt: Some(number),
            ..NotifyAttempt::default()
        };
        match &outcome {
            Ok(status) => {
                detail.outcome = Some(DeliveryOutcome::Delivered);
                detail.status = Some(*status);
            }
            Err(failure) => {
                detail.outcome = Some(DeliveryOutcome::Failed);
                detail.status = failure.status;
                detail.error = Some(failure.error.clone());
                detail.gave_up = Some(last);
            }
        }
        audit_attempt(shared, sink, notification, detail).await;
        if let Err(failure) = &outcome {
            tracing::warn!(sink = %sink.name, event = notification.event.as_str(), attempt = number, status = failure.status, error = %failure.error, gave_up = last, "notification not delivered");
        }
        outcome
    };
    let _ = send
        .retry(backoff)
        .when(|failure: &Failure| failure.retryable)
        .await;
}

/// Records one delivery attempt (`notify.attempt`) on the notification's run.
async fn audit_attempt(
    shared: &Shared,
    sink: &Sink,
    notification: &Notification,
    detail: NotifyAttempt,
) {
    let run_id = notification.run.as_ref().map(|r| r.id);
    if let Err(error) = shared
        .store
        .record_event(
            NewAuditEvent {
                incident_id: notification.incident_id,
                run_id,
                ..NewAuditEvent::of(ACTOR, AuditDetail::NotifyAttempt(detail))
            },
            shared.clock.now(),
        )
        .await
    {
        tracing::warn!(sink = %sink.name, %error, "cannot audit a delivery attempt");
    }
}

async fn send_once(shared: &Shared, sink: &Sink, body: &Value) -> Result<u16, Failure> {
    let mut request = shared.client.post(sink.url.clone()).json(body);
    if let Some(token) = &sink.token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.map_err(|error| Failure {
        status: None,
        error: describe(error),
        retryable: true,
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(status.as_u16());
    }
    Err(Failure {
        status: Some(status.as_u16()),
        error: format!("the sink answered {status}"),
        // A redirect or a client error other than throttling will not change by asking again.
        retryable: status.is_server_error()
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || status == reqwest::StatusCode::REQUEST_TIMEOUT,
    })
}

/// The error and its causes, without the URL (which may be the sink's secret).
fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The links for `sink`: approve and reject (signed for this sink, expiring with the approval
/// or after the configured lifetime, whichever is sooner) and the web page to open: the
/// approval's, else the incident's, else the home page.
/// A sink without `links` gets only the page to open: whoever reads it must decide in
/// runbookd itself, as themselves.
fn links_for(shared: &Shared, sink: &Sink, notification: &Notification) -> anyhow::Result<Links> {
    let open = match (&notification.approval, notification.incident_id) {
        (Some(approval), _) => shared
            .public_url
            .join(&format!("approvals/{}", approval.id))?,
        (None, Some(incident)) => shared.public_url.join(&format!("incidents/{incident}"))?,
        (None, None) => shared.public_url.clone(),
    }
    .to_string();
    let Some(approval) = notification.approval.as_ref().filter(|_| sink.links) else {
        return Ok(Links {
            approve: None,
            reject: None,
            open,
        });
    };
    let ttl = chrono::Duration::from_std(shared.settings.link_ttl)?;
    let now = shared.clock.now();
    let expires_at = approval.expires_at.min(now + ttl);
    let link = |decision| -> anyhow::Result<String> {
        let token = shared
            .signer
            .sign(approval.id, decision, now, expires_at, &sink.name)?;
        Ok(shared
            .public_url
            .join(&format!("links/{token}"))?
            .to_string())
    };
    Ok(Links {
        approve: Some(link(Decision::Approve)?),
        reject: Some(link(Decision::Reject)?),
        open,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::config::DatabaseConfig;
    use crate::config::notify::SinkKind;

    /// A notification whose links cannot be made (here the public URL cannot be a base, so
    /// nothing joins onto it) is not sent, and that is audited as a failed attempt with the
    /// reason.
    #[tokio::test]
    async fn a_notification_whose_links_cannot_be_made_is_audited_as_a_failed_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&DatabaseConfig {
            path: dir.path().join("runbookd.db"),
            ..DatabaseConfig::default()
        })
        .await
        .unwrap();
        let sink = Sink {
            name: "phone".into(),
            kind: SinkKind::Ntfy,
            // Never reached: the links fail first.
            url: Url::parse("http://127.0.0.1:1/").unwrap(),
            topic: Some("t".into()),
            token: None,
            events: EventKind::ALL.to_vec(),
            links: true,
        };
        let shared = Shared {
            store: store.clone(),
            clock: Arc::new(SystemClock),
            signer: Arc::new(LinkSigner::new(&[7; 32], Duration::from_secs(3600))),
            settings: Notify::off(),
            public_url: Url::parse("mailto:oncall@example.net").unwrap(),
            client: reqwest::Client::new(),
        };
        let notification = Notification {
            event: EventKind::ApprovalRequested,
            title: "Approval needed".into(),
            message: String::new(),
            incident_id: None,
            run: None,
            approval: Some(ApprovalSummary {
                id: 1,
                step: "remount".into(),
                command: "true".into(),
                risk: "high".into(),
                expires_at: Utc::now(),
            }),
            reason: None,
        };
        deliver(&shared, &sink, &notification).await;

        let events = store.audit_events_after(0, 100).await.unwrap();
        let attempts: Vec<&NotifyAttempt> = events
            .iter()
            .filter_map(|e| match &e.detail {
                AuditDetail::NotifyAttempt(attempt) => Some(attempt),
                _ => None,
            })
            .collect();
        assert_eq!(attempts.len(), 1, "{events:?}");
        let attempt = attempts[0];
        assert_eq!(attempt.sink.as_deref(), Some("phone"));
        assert_eq!(attempt.outcome, Some(DeliveryOutcome::Failed));
        assert_eq!(attempt.gave_up, Some(true));
        assert!(
            attempt
                .error
                .as_deref()
                .unwrap()
                .starts_with("cannot make the notification's links"),
            "{attempt:?}"
        );
    }
}
