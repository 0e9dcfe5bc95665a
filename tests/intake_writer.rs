//! Group commit: the one intake writer commits whatever is queued as one transaction and
//! answers each delivery only after that commit. Deliveries of a batch apply in arrival order,
//! each in its own savepoint; a full queue refuses with 503 and Retry-After; shutdown commits
//! what was queued. And the acceptance test for it all: the real binary, SIGKILLed under load,
//! has every alert it answered 202 for.

use crate::common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::IntoResponse;
use chrono::{TimeZone, Utc};
use common::process::ServiceProcess;
use common::{eventually, reference};
use futures::FutureExt;
use runbookd::auth::{Principal, Role};
use runbookd::config::DatabaseConfig;
use runbookd::engine::intake::writer::{self, IntakeQueue, IntakeWriter, Queued, SubmitError};
use runbookd::engine::intake::{IntakeService, Lifecycle, Submission};
use runbookd::http::AppError;
use runbookd::intake::RawBody;
use runbookd::store::Store;
use runbookd::store::intake::IntakeAction;
use serde_json::Value;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, SqliteConnection};

/// The reference Alertmanager notification as alert `fingerprint`, firing or resolved.
fn notification(fingerprint: &str, status: &str) -> String {
    reference("alertmanager-v4.json")
        .replace("\"5f1c2a9e7b3d4c10\"", &format!("{fingerprint:?}"))
        .replace("\"firing\"", &format!("{status:?}"))
}

fn submission(body: &str) -> Submission {
    Submission {
        delivery: std::sync::Arc::new(runbookd::intake::parse(body.as_bytes(), None).unwrap()),
        raw_body: RawBody::new(body.to_owned()),
        actor: Principal {
            name: "alertmanager".into(),
            role: Role::Ingest,
        },
        received_at: Utc.with_ymd_and_hms(2026, 11, 26, 3, 0, 0).unwrap(),
    }
}

/// A database, the intake service on it (no engine: incidents are only recorded) and a writer
/// queue whose writer has not started yet, so a test can queue deliveries first.
struct Parts {
    db_path: std::path::PathBuf,
    store: Store,
    service: Arc<IntakeService>,
    writer: IntakeWriter,
    queue: IntakeQueue,
    _dir: tempfile::TempDir,
}

impl Parts {
    /// Queues each body as a delivery, in order, before or while the writer runs.
    async fn queue(&self, bodies: impl IntoIterator<Item = String>) -> Vec<Queued> {
        let mut queued = Vec::new();
        for body in bodies {
            queued.push(self.writer.enqueue(submission(&body)).await.unwrap());
        }
        queued
    }
}

async fn parts(capacity: usize) -> Parts {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("intake.db");
    let store = Store::open(&DatabaseConfig {
        path: db_path.clone(),
        busy_timeout_ms: 5_000,
    })
    .await
    .unwrap();
    let (writer, queue) = writer::channel(capacity);
    Parts {
        db_path,
        store: store.clone(),
        service: Arc::new(IntakeService::new(store, None, Lifecycle::default())),
        writer,
        queue,
        _dir: dir,
    }
}

impl Parts {
    /// The writer, running until the returned sender is dropped or sent to.
    fn start(
        self,
    ) -> (
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
        Connected,
    ) {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(self.queue.run_until(self.service, async {
            let _ = stopped.await;
        }));
        (
            stop,
            task,
            Connected {
                db_path: self.db_path,
                writer: self.writer,
                _dir: self._dir,
            },
        )
    }
}

/// What a test keeps once the writer runs.
struct Connected {
    db_path: std::path::PathBuf,
    writer: IntakeWriter,
    _dir: tempfile::TempDir,
}

async fn open(path: &std::path::Path) -> SqliteConnection {
    SqliteConnectOptions::new()
        .filename(path)
        .connect()
        .await
        .unwrap()
}

async fn scalar(db: &mut SqliteConnection, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db).await.unwrap()
}

/// (commits, deliveries) recorded in `runbookd_intake_batch_size` so far in this process.
fn batches() -> (f64, f64) {
    let text = runbookd::telemetry::metrics_handle().render();
    let value = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    };
    (
        value("runbookd_intake_batch_size_count"),
        value("runbookd_intake_batch_size_sum"),
    )
}

async fn outcomes(queued: Vec<Queued>) -> Vec<Result<Vec<IntakeAction>, SubmitError>> {
    let mut answers = Vec::new();
    for queued in queued {
        answers.push(
            queued
                .outcome()
                .await
                .map(|alerts| alerts.iter().map(|a| a.action).collect()),
        );
    }
    answers
}

/// A firing and a resolve of one alert, and a resolve and a firing of another, all queued
/// before the writer starts: one commit holds all four, applied in arrival order.
#[tokio::test]
async fn a_firing_and_a_resolve_in_one_batch_apply_in_arrival_order() {
    runbookd::telemetry::metrics_handle();
    let parts = parts(16).await;
    let queued = parts
        .queue([
            notification("fired-then-resolved", "firing"),
            notification("fired-then-resolved", "resolved"),
            notification("resolved-then-fired", "resolved"),
            notification("resolved-then-fired", "firing"),
        ])
        .await;
    let (_stop, _task, connected) = parts.start();

    let answers = outcomes(queued).await;
    let actions: Vec<IntakeAction> = answers.into_iter().map(|a| a.unwrap()[0]).collect();
    assert_eq!(
        actions,
        [
            IntakeAction::Opened,
            IntakeAction::Resolved,
            IntakeAction::ResolveUnmatched,
            IntakeAction::Opened,
        ]
    );
    assert_eq!(
        batches(),
        (1.0, 4.0),
        "the four deliveries shared one commit"
    );

    let mut db = open(&connected.db_path).await;
    let status = |fingerprint: &str| {
        format!(
            "SELECT COUNT(*) FROM incidents WHERE fingerprint = '{fingerprint}' AND status = 'resolved'"
        )
    };
    assert_eq!(scalar(&mut db, &status("fired-then-resolved")).await, 1);
    assert_eq!(scalar(&mut db, &status("resolved-then-fired")).await, 0);
    assert_eq!(
        scalar(
            &mut db,
            "SELECT COUNT(*) FROM incidents WHERE fingerprint = 'resolved-then-fired' AND status = 'open'"
        )
        .await,
        1
    );
    assert_eq!(scalar(&mut db, "SELECT COUNT(*) FROM deliveries").await, 4);
}

/// One delivery of a batch fails in the database: it rolls back alone, with its own error,
/// and the deliveries around it commit.
#[tokio::test]
async fn a_failing_delivery_rolls_back_alone_and_the_rest_of_its_batch_commits() {
    runbookd::telemetry::metrics_handle();
    let parts = parts(16).await;
    let mut db = open(&parts.db_path).await;
    sqlx::query(
        "CREATE TRIGGER poisoned BEFORE INSERT ON alerts WHEN NEW.name = 'Poisoned'
         BEGIN SELECT RAISE(ABORT, 'the test refuses this alert'); END",
    )
    .execute(&mut db)
    .await
    .unwrap();
    let poisoned = notification("poisoned", "firing").replace("PBSBackupStale", "Poisoned");
    let queued = parts
        .queue([
            notification("before", "firing"),
            poisoned,
            notification("after", "firing"),
        ])
        .await;
    let (_stop, _task, _connected) = parts.start();

    let answers = outcomes(queued).await;
    assert_eq!(answers[0].as_ref().unwrap(), &[IntakeAction::Opened]);
    let error = answers[1].as_ref().unwrap_err();
    assert!(matches!(error, SubmitError::Store(_)), "{error:?}");
    assert_eq!(AppError::from(error.clone()).into_response().status(), 500);
    assert_eq!(answers[2].as_ref().unwrap(), &[IntakeAction::Opened]);
    assert_eq!(batches(), (1.0, 3.0), "one commit for the three");

    // Nothing of the failed delivery remains: not its delivery, incident or audit event.
    assert_eq!(scalar(&mut db, "SELECT COUNT(*) FROM deliveries").await, 2);
    let fingerprints: Vec<String> =
        sqlx::query_scalar("SELECT fingerprint FROM incidents ORDER BY id")
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_eq!(fingerprints, ["before", "after"]);
    assert_eq!(
        scalar(&mut db, "SELECT COUNT(*) FROM audit_events").await,
        2
    );
}

/// A full queue refuses after its bounded wait: 503 with Retry-After and a message that says
/// why; what was queued is stored once the writer runs, the refused delivery is not.
#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after_and_stores_nothing_of_the_refused() {
    let parts = parts(2).await;
    let first = parts
        .writer
        .enqueue(submission(&notification("one", "firing")))
        .await
        .unwrap();
    let second = parts
        .writer
        .enqueue(submission(&notification("two", "firing")))
        .await
        .unwrap();
    // Refused once its bounded wait (writer::QUEUE_WAIT) has passed.
    let refused = parts
        .writer
        .enqueue(submission(&notification("three", "firing")))
        .await
        .err()
        .expect("a full queue refuses");
    assert!(matches!(refused, SubmitError::QueueFull), "{refused:?}");
    let response = AppError::from(refused).into_response();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = serde_json::from_slice(
        &axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("deliveries are waiting"),
        "{body}"
    );

    let (_stop, _task, connected) = parts.start();
    assert!(first.outcome().await.is_ok());
    assert!(second.outcome().await.is_ok());
    let mut db = open(&connected.db_path).await;
    let fingerprints: Vec<String> =
        sqlx::query_scalar("SELECT fingerprint FROM incidents ORDER BY id")
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_eq!(fingerprints, ["one", "two"]);
}

/// Unchanged repeats in one batch share an audit event, and the trail keeps arrival order:
/// repeats of "a" are written before the event of the next other alert, and a resolve comes
/// after the repeats it follows.
#[tokio::test]
async fn unchanged_repeats_in_a_batch_share_an_event_in_arrival_order() {
    let parts = parts(16).await;
    let queued = parts
        .queue([
            notification("a", "firing"),
            notification("a", "firing"),
            notification("a", "firing"),
            notification("b", "firing"),
            notification("a", "firing"),
            notification("a", "resolved"),
        ])
        .await;
    let (_stop, _task, connected) = parts.start();
    for answer in outcomes(queued).await {
        answer.unwrap();
    }

    let mut db = open(&connected.db_path).await;
    let trail: Vec<(String, String, Option<i64>, Option<String>)> = sqlx::query_as(
        "SELECT action, json_extract(detail, '$.fingerprint'),
                json_extract(detail, '$.delivery_id'), json_extract(detail, '$.deliveries')
         FROM audit_events ORDER BY id",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    let trail: Vec<(&str, &str, Option<i64>, Option<&str>)> = trail
        .iter()
        .map(|(action, fingerprint, delivery, deliveries)| {
            (
                action.as_str(),
                fingerprint.as_str(),
                *delivery,
                deliveries.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        trail,
        [
            ("incident.opened", "a", Some(1), None),
            ("incident.deduplicated", "a", Some(2), Some("[2,3]")),
            ("incident.opened", "b", Some(4), None),
            ("incident.deduplicated", "a", Some(5), Some("[5]")),
            ("incident.source_resolved", "a", Some(6), None),
        ]
    );
    // The opening alert, b's, and the resolve (it changed the status): no copy of a repeat.
    assert_eq!(scalar(&mut db, "SELECT COUNT(*) FROM alerts").await, 3);
    assert_eq!(
        scalar(
            &mut db,
            "SELECT alert_count FROM incidents WHERE fingerprint = 'a'"
        )
        .await,
        4
    );
}

/// Shutdown stops taking deliveries, commits and answers every one already queued, and then
/// the writer ends; a delivery after that is refused as shutting down (503).
#[tokio::test]
async fn shutdown_commits_and_answers_every_queued_delivery_then_refuses() {
    let parts = parts(16).await;
    let queued = parts
        .queue((0..5).map(|i| notification(&format!("queued-{i}"), "firing")))
        .await;
    let (stop, task, connected) = parts.start();
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the writer ends after draining")
        .unwrap();

    // Answered by the time the writer has ended, not after: nothing is left to wait for.
    for queued in queued {
        let answer = queued
            .outcome()
            .now_or_never()
            .expect("every queued delivery is answered before the writer ends");
        let actions: Vec<_> = answer.unwrap().iter().map(|a| a.action).collect();
        assert_eq!(actions, [IntakeAction::Opened]);
    }
    let late = connected
        .writer
        .submit(submission(&notification("late", "firing")))
        .await
        .unwrap_err();
    assert!(matches!(late, SubmitError::ShuttingDown), "{late:?}");
    assert_eq!(AppError::from(late).into_response().status(), 503);
    let mut db = open(&connected.db_path).await;
    assert_eq!(scalar(&mut db, "SELECT COUNT(*) FROM incidents").await, 5);
}

/// In a storm intake keeps the writer pool's connection from one batch to the next, but not
/// until the storm ends: another writer (here an audit event, as the engine writes) gets its
/// turn while thousands of deliveries still wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_writer_gets_its_turn_while_deliveries_keep_waiting() {
    const QUEUED: usize = 4096;
    let parts = parts(QUEUED).await;
    let store = parts.store.clone();
    // Distinct alerts, each stored whole: 16 full batches queued before the writer starts.
    let queued = parts
        .queue((0..QUEUED).map(|i| notification(&format!("storm-{i}"), "firing")))
        .await;
    let mut reader = open(&parts.db_path).await;
    let (stop, task, connected) = parts.start();
    // The storm is being written: the first batch is committed.
    let mut queued = queued.into_iter();
    queued.next().unwrap().outcome().await.unwrap();
    let other = store.record_event(
        runbookd::store::audit::NewAuditEvent {
            actor: "test",
            action: runbookd::store::audit::AuditAction::RunFinished,
            incident_id: None,
            run_id: None,
            detail: serde_json::json!({"state": "resolved"}),
        },
        Utc::now(),
    );
    tokio::pin!(other);
    // Asks for the connection, then counts what is stored by then: what this task waited for
    // before it asked (a CPU, on a busy machine) is not the writer's doing.
    let _ = futures::poll!(&mut other);
    let asked_at: i64 = scalar(&mut reader, "SELECT COUNT(*) FROM incidents").await;
    other.await.expect("the other writer gets the connection");
    for answer in outcomes(queued.collect()).await {
        answer.unwrap();
    }
    stop.send(()).unwrap();
    task.await.unwrap();

    let mut db = open(&connected.db_path).await;
    let stored_first: i64 = scalar(
        &mut db,
        "SELECT COUNT(*) FROM audit_events WHERE action = 'incident.opened'
           AND id < (SELECT id FROM audit_events WHERE action = 'run.finished')",
    )
    .await;
    let all: i64 = scalar(&mut db, "SELECT COUNT(*) FROM deliveries").await;
    assert_eq!(all, QUEUED as i64);
    let left = QUEUED as i64 - asked_at;
    let waited_for = stored_first - asked_at;
    assert!(
        left > 0,
        "the storm was written before the other writer asked"
    );
    assert!(
        waited_for * 2 < left,
        "the other writer waited for {waited_for} of the {left} deliveries left when it asked"
    );
}

/// Intake's checkpoint thread copies the WAL into the database while deliveries come in: the
/// database file grows long before the WAL reaches the writer's own fallback checkpoint
/// (10000 pages; these deliveries write a few thousand at most).
#[tokio::test]
async fn the_wal_is_checkpointed_into_the_database_while_deliveries_come_in() {
    const AT_MOST: usize = 400;
    let parts = parts(16).await;
    let (stop, task, connected) = parts.start();
    let file_size = || std::fs::metadata(&connected.db_path).unwrap().len();
    let before = file_size();
    let body = notification("checkpointed", "firing");
    let mut sent = 0;
    while file_size() == before {
        assert!(
            sent < AT_MOST,
            "{AT_MOST} durable deliveries, and nothing was checkpointed into the database"
        );
        connected.writer.submit(submission(&body)).await.unwrap();
        sent += 1;
    }
    stop.send(()).unwrap();
    task.await.unwrap();
}

const ADMIN: &str = "writer-admin-secret-0123456789abcdef";
const CLIENTS: usize = 16;
/// Acknowledged alerts before the kill.
const KILL_AFTER: usize = 400;

/// Acceptance 1: 16 clients post unique alerts to the real binary, which is SIGKILLed
/// mid-load; after a restart on the same database, every alert that got 202 is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_acknowledged_alert_is_lost_when_the_service_is_killed_mid_load() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("runbookd.db");
    let mut service = ServiceProcess::start(&db_path, &[("RUNBOOKD_ADMIN_TOKEN", ADMIN)]).await;
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let url = format!("{}/webhook/alertmanager", service.address);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (client, url, acknowledged) = (client.clone(), url.clone(), acknowledged.clone());
            tokio::spawn(async move {
                // Posts until the service is gone: the one request that fails ends the client.
                for i in 0.. {
                    let fingerprint = format!("ack-{c}-{i}");
                    let sent = client
                        .post(&url)
                        .bearer_auth(ADMIN)
                        .header("content-type", "application/json")
                        .body(notification(&fingerprint, "firing"))
                        .send()
                        .await;
                    match sent {
                        // The status line is the acknowledgement, whether or not the body
                        // arrives before the kill.
                        Ok(response) if response.status() == 202 => {
                            acknowledged.lock().unwrap().push(fingerprint)
                        }
                        Ok(response) => panic!("unexpected answer {}", response.status()),
                        Err(_) => return i,
                    }
                }
                unreachable!()
            })
        })
        .collect();

    eventually(
        &format!("{KILL_AFTER} acknowledged alerts"),
        Duration::from_secs(120),
        || {
            let count = acknowledged.lock().unwrap().len();
            std::future::ready((count >= KILL_AFTER).then_some(()))
        },
    )
    .await;
    service.child.kill().await.unwrap();
    let mut sent = 0;
    for client in clients {
        sent += tokio::time::timeout(Duration::from_secs(30), client)
            .await
            .expect("each client stops once the service is gone")
            .unwrap()
            + 1;
    }
    let acknowledged = acknowledged.lock().unwrap().clone();

    let restarted = ServiceProcess::start(&db_path, &[("RUNBOOKD_ADMIN_TOKEN", ADMIN)]).await;
    let mut db = open(&db_path).await;
    let stored: HashSet<String> = sqlx::query_scalar("SELECT fingerprint FROM incidents")
        .fetch_all(&mut db)
        .await
        .unwrap()
        .into_iter()
        .collect();
    db.close().await.unwrap();
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|f| !stored.contains(*f))
        .collect();
    println!(
        "posted {sent}, acknowledged {}, stored after the restart {}, acknowledged but lost {}",
        acknowledged.len(),
        stored.len(),
        lost.len()
    );
    assert!(acknowledged.len() >= KILL_AFTER);
    assert!(lost.is_empty(), "acknowledged and lost: {lost:?}");
    // Nothing is stored that was not sent.
    assert!(stored.len() <= sent);
    assert!(restarted.terminate().await.success());
}
