//! Cheaper repeats and retention: a repeated raw body is stored once, old rows leave through
//! the pruner (never what an open incident or an active run needs), and over a simulated month
//! the file stays bounded while the audit trail's exports plus its remaining rows account for
//! every event.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::{ConnectOptions, Connection, Row, SqliteConnection};

use runbookd::clock::Clock;
use runbookd::store::retention::{AuditRetention, Retention};

use crate::common::{self, ADMIN_TOKEN, INGEST_TOKEN, TestApp, eventually, reference};

const WAIT: Duration = Duration::from_secs(20);

async fn post(app: &TestApp, token: &str, body: &str) -> Value {
    let response = app.post_json("/webhook/alertmanager", token, body).await;
    let status = response.status();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(status, 202, "{answer}");
    answer
}

/// An Alertmanager delivery of `alerts`, each (backup_id, status).
fn alertmanager(alerts: &[(&str, &str)]) -> String {
    let alerts: Vec<Value> = alerts
        .iter()
        .map(|(id, status)| {
            json!({
                "status": status,
                "labels": {"alertname": "DiskFull", "host": format!("pve-{id}"), "mount": "/var"},
                "annotations": {"summary": format!("/var on pve-{id} is nearly full")},
                "startsAt": "2026-11-26T02:30:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "fingerprint": format!("{:0>16}", id),
            })
        })
        .collect();
    json!({
        "version": "4", "groupKey": "{}:{alertname=\"DiskFull\"}", "truncatedAlerts": 0,
        "status": "firing", "receiver": "runbookd", "groupLabels": {"alertname": "DiskFull"},
        "commonLabels": {"alertname": "DiskFull"}, "commonAnnotations": {},
        "externalURL": "http://alertmanager.monitoring:9093", "alerts": alerts,
    })
    .to_string()
}

/// An app whose pruner removes alerts and deliveries older than 7 days, checking every second.
async fn spawn_pruning_after_a_week() -> TestApp {
    TestApp::spawn_with(|config| {
        config.retention.alerts_days = Some(7);
        config.retention.deliveries_days = Some(7);
        config.retention.every_secs = 1;
    })
    .await
}

/// The bytes the database's pages hold, after a checkpoint moves the WAL into the file.
async fn used_bytes(db: &mut SqliteConnection) -> i64 {
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut *db)
        .await
        .unwrap();
    let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
        .fetch_one(&mut *db)
        .await
        .unwrap();
    let free: i64 = sqlx::query_scalar("PRAGMA freelist_count")
        .fetch_one(&mut *db)
        .await
        .unwrap();
    let size: i64 = sqlx::query_scalar("PRAGMA page_size")
        .fetch_one(&mut *db)
        .await
        .unwrap();
    (pages - free) * size
}

#[tokio::test]
async fn identical_bodies_are_stored_once_and_every_delivery_keeps_its_own() {
    let app = TestApp::spawn().await;
    let body = reference("alertmanager-v4.json");
    let mut sent = Vec::new();
    for _ in 0..3 {
        post(&app, INGEST_TOKEN, &body).await;
        sent.push(("ingest", app.clock.now(), body.clone()));
        app.clock.advance(chrono::Duration::minutes(5));
    }
    let other = body.replace("\"451\"", "\"452\"");
    post(&app, ADMIN_TOKEN, &other).await;
    sent.push(("admin", app.clock.now(), other.clone()));

    assert_eq!(app.count("deliveries").await, 4);
    assert_eq!(
        app.count("raw_bodies").await,
        2,
        "one row per distinct body"
    );
    let mut db = app.db().await;
    let rows =
        sqlx::query("SELECT actor, source, received_at, body FROM delivery_bodies ORDER BY id")
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_eq!(rows.len(), sent.len());
    for (row, (actor, at, body)) in rows.iter().zip(&sent) {
        assert_eq!(row.get::<String, _>("actor"), *actor);
        assert_eq!(row.get::<String, _>("source"), "alertmanager");
        assert_eq!(row.get::<DateTime<Utc>, _>("received_at"), *at);
        assert_eq!(
            &row.get::<String, _>("body"),
            body,
            "the exact body, byte for byte"
        );
    }
}

/// Intake finds a repeat's body among the bodies it stored last (see `RecentBodies`); one that
/// the pruner removed meanwhile is stored again, not referred to.
#[tokio::test]
async fn a_body_the_pruner_removed_is_stored_again_when_it_comes_back() {
    let app = spawn_pruning_after_a_week().await;
    let firing = alertmanager(&[("z", "firing")]);
    post(&app, INGEST_TOKEN, &firing).await;
    post(&app, INGEST_TOKEN, &alertmanager(&[("z", "resolved")])).await;
    assert_eq!(app.count("raw_bodies").await, 2);

    app.clock.advance(chrono::Duration::days(8));
    eventually("the pruner to remove both bodies", WAIT, || async {
        (app.count("raw_bodies").await == 0).then_some(())
    })
    .await;

    post(&app, INGEST_TOKEN, &firing).await;
    assert_eq!(app.count("raw_bodies").await, 1);
    let body: String =
        sqlx::query_scalar("SELECT body FROM delivery_bodies ORDER BY id DESC LIMIT 1")
            .fetch_one(&mut app.db().await)
            .await
            .unwrap();
    assert_eq!(body, firing, "the body stored again, byte for byte");
}

#[tokio::test]
async fn a_repeated_body_costs_less_than_its_size_again() {
    const REPEATS: usize = 400;
    let body = reference("alertmanager-v4.json");
    // The same alert each time; `varied` differs only in trailing whitespace of one length, so
    // every delivery's bytes are new, as every repeat's were before bodies were shared.
    let suffix = |i: usize| -> String {
        (0..12)
            .map(|bit| if i >> bit & 1 == 1 { '\t' } else { ' ' })
            .collect()
    };
    let mut per_delivery = Vec::new();
    for varied in [false, true] {
        let app = TestApp::spawn().await;
        let mut db = app.db().await;
        post(&app, INGEST_TOKEN, &format!("{body}{}", suffix(0))).await;
        let start = used_bytes(&mut db).await;
        for i in 1..=REPEATS {
            let suffix = if varied { suffix(i) } else { suffix(0) };
            post(&app, INGEST_TOKEN, &format!("{body}{suffix}")).await;
        }
        let end = used_bytes(&mut db).await;
        db.close().await.unwrap();
        assert_eq!(app.count("incidents").await, 1, "repeats of one alert");
        per_delivery.push((end - start) as f64 / REPEATS as f64);
    }
    let [shared, unshared] = per_delivery[..] else {
        unreachable!()
    };
    println!(
        "bytes per repeated delivery of the {}-byte reference body: {shared:.0} with shared bodies, {unshared:.0} with every body stored",
        body.len()
    );
    assert!(
        unshared - shared > 0.8 * body.len() as f64,
        "sharing saves about the body's size per repeat: {shared:.0} vs {unshared:.0}"
    );
}

#[tokio::test]
async fn the_pruner_removes_what_nothing_needs_and_keeps_what_open_incidents_and_runs_need() {
    let app = spawn_pruning_after_a_week().await;
    // "a" stays open; "b" is resolved; "c" is resolved but an active run still covers it. Of
    // each incident, the first alert is what it needs; repeats are counted on the incident.
    // Each repeat here changes its summary, so that it is stored as an alert of its own.
    post(
        &app,
        INGEST_TOKEN,
        &alertmanager(&[("a", "firing"), ("b", "firing")]),
    )
    .await;
    post(
        &app,
        INGEST_TOKEN,
        &alertmanager(&[("a", "firing"), ("b", "firing")]).replace("nearly full", "full"),
    )
    .await;
    post(&app, INGEST_TOKEN, &alertmanager(&[("b", "resolved")])).await;
    let c = post(&app, INGEST_TOKEN, &alertmanager(&[("c", "firing")])).await;
    post(&app, INGEST_TOKEN, &alertmanager(&[("c", "resolved")])).await;
    let c_incident = c["incidents"][0]["incident_id"].as_i64().unwrap();
    common::leased_run(&app.store, Some(c_incident), "pbs", app.clock.now()).await;
    let mut db = app.db().await;
    let first_a: i64 =
        sqlx::query_scalar("SELECT MIN(id) FROM alerts WHERE fingerprint = '000000000000000a'")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(app.count("alerts").await, 7);

    app.clock.advance(chrono::Duration::days(8));
    // A fresh repeat of "a", younger than the retention.
    post(&app, INGEST_TOKEN, &alertmanager(&[("a", "firing")])).await;

    // A pass deletes alerts, then deliveries and bodies, each in their own transactions.
    let kept: Vec<(i64, String)> = eventually("the pruner's pass to finish", WAIT, || async {
        let kept: Vec<(i64, String)> =
            sqlx::query_as("SELECT id, fingerprint FROM alerts ORDER BY id")
                .fetch_all(&mut app.db().await)
                .await
                .unwrap();
        let done = kept.len() == 3
            && app.count("deliveries").await == 3
            && app.count("raw_bodies").await == 3;
        done.then_some(kept)
    })
    .await;
    let fingerprints: Vec<&str> = kept.iter().map(|(_, f)| f.as_str()).collect();
    assert_eq!(
        fingerprints,
        [
            "000000000000000a", // the first alert of the open incident
            "000000000000000c", // the first of "c", whose run is active ("b"'s went)
            "000000000000000a", // the fresh repeat
        ]
    );
    assert_eq!(kept[0].0, first_a);
    // Deliveries go with their last alert; bodies with their last delivery.
    assert_eq!(app.count("deliveries").await, 3);
    let orphans: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM raw_bodies r WHERE NOT EXISTS
             (SELECT 1 FROM deliveries d WHERE d.body_id = r.id)",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(orphans, 0);
    assert_eq!(app.count("raw_bodies").await, 3);
    let dangling: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM alerts a WHERE NOT EXISTS
             (SELECT 1 FROM deliveries d WHERE d.id = a.delivery_id)",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(dangling, 0);
    // The incidents themselves stay, with their counts.
    let a_count: i64 = sqlx::query_scalar(
        "SELECT alert_count FROM incidents WHERE fingerprint = '000000000000000a'",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(a_count, 3);
}

/// Acceptance 3: a month at a steady rate, with retention of a week, stays under a bound.
#[tokio::test]
async fn over_a_simulated_month_the_file_stays_bounded_and_every_audit_event_is_accounted_for() {
    let exports = tempfile::tempdir().unwrap();
    let dir = exports.path().to_owned();
    let app = TestApp::spawn_with(|config| {
        config.retention.alerts_days = Some(7);
        config.retention.deliveries_days = Some(7);
        config.retention.audit_days = Some(7);
        config.retention.audit_export_dir = Some(dir);
        // The test runs the pass itself as its clock moves.
        config.retention.every_secs = 86_400;
    })
    .await;
    let policy = Retention {
        alerts: Some(chrono::Duration::days(7)),
        deliveries: Some(chrono::Duration::days(7)),
        audit: Some(AuditRetention {
            age: chrono::Duration::days(7),
            dir: exports.path().to_owned(),
        }),
    };

    // Every 20 minutes Alertmanager repeats two alerts that never end and a third that fires
    // for 12 hours then resolves for 12; every 6 hours a new alert opens and resolves an hour
    // later.
    const STEP_MINUTES: i64 = 20;
    let steps = 30 * 24 * 60 / STEP_MINUTES;
    let mut db = app.db().await;
    let mut sizes = Vec::new();
    for step in 0..steps {
        let minutes = step * STEP_MINUTES;
        let flapping = if (minutes / 720) % 2 == 0 {
            "firing"
        } else {
            "resolved"
        };
        let mut alerts = vec![("disk1", "firing"), ("disk2", "firing"), ("flap", flapping)];
        let unique = format!("u{}", minutes / 360);
        match minutes % 360 {
            0 => alerts.push((&unique, "firing")),
            60 => alerts.push((&unique, "resolved")),
            _ => {}
        }
        post(&app, INGEST_TOKEN, &alertmanager(&alerts)).await;
        app.clock.advance(chrono::Duration::minutes(STEP_MINUTES));
        if minutes % 60 == 0 {
            app.store.prune(&policy, app.clock.now()).await.unwrap();
        }
        if minutes % (24 * 60) == 0 {
            sizes.push(used_bytes(&mut db).await);
        }
    }
    let file_bytes = std::fs::metadata(&app.db_path).unwrap().len();
    println!(
        "bytes in use at the start of each day: {sizes:?}; the file: {file_bytes} bytes; {} deliveries posted",
        steps
    );
    // A week of rows is what retention keeps: from then on, the file stops growing.
    const BOUND: u64 = 2 * 1024 * 1024;
    assert!(
        file_bytes < BOUND,
        "the file ({file_bytes} bytes) stays under {BOUND}"
    );
    let settled = sizes[9];
    let last = *sizes.last().unwrap();
    assert!(
        (last as f64) < settled as f64 * 1.15,
        "past the retention window, growth is only the incidents themselves: day 9 {settled}, day 29 {last}"
    );
    assert!(app.count("alerts").await < 4 * 8 * 24 * 3);

    // The exports plus the remaining rows are every event id, once; each file is recorded by an
    // audit.pruned event (kept, or itself exported later) with its digest.
    let mut events: Vec<Value> = Vec::new();
    let mut digests = Vec::new();
    for entry in std::fs::read_dir(exports.path()).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        digests.push((
            path.display().to_string(),
            hex::encode(Sha256::digest(text.as_bytes())),
        ));
        for line in text.lines() {
            let event: Value = serde_json::from_str(line).unwrap();
            for column in [
                "id",
                "at",
                "actor",
                "action",
                "incident_id",
                "run_id",
                "detail",
            ] {
                assert!(event.get(column).is_some(), "{column} in {event}");
            }
            events.push(event);
        }
    }
    let files = digests.len();
    let mut ids: Vec<i64> = events.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    let kept_pruned: Vec<String> =
        sqlx::query_scalar("SELECT detail FROM audit_events WHERE action = 'audit.pruned'")
            .fetch_all(&mut db)
            .await
            .unwrap();
    let recorded: BTreeSet<(String, String)> = events
        .iter()
        .filter(|e| e["action"] == "audit.pruned")
        .map(|e| e["detail"].clone())
        .chain(kept_pruned.iter().map(|d| serde_json::from_str(d).unwrap()))
        .map(|d| {
            (
                d["file"].as_str().unwrap().to_owned(),
                d["sha256"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for digest in &digests {
        assert!(
            recorded.contains(digest),
            "{digest:?} is recorded by audit.pruned"
        );
    }
    let exported = ids.len();
    let remaining: Vec<i64> = sqlx::query_scalar("SELECT id FROM audit_events ORDER BY id")
        .fetch_all(&mut db)
        .await
        .unwrap();
    ids.extend(&remaining);
    let unique: BTreeSet<i64> = ids.iter().copied().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "no event is both exported and kept"
    );
    let max = *unique.last().unwrap();
    assert_eq!(
        unique,
        (1..=max).collect::<BTreeSet<i64>>(),
        "no event is missing"
    );
    println!(
        "audit: {exported} events in {files} export files, {} kept, ids 1..={max}",
        remaining.len()
    );
    assert!(exported > 0 && !remaining.is_empty());

    let refused = sqlx::query("DELETE FROM audit_events WHERE id = ?")
        .bind(max)
        .execute(&mut db)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("append-only"), "{refused}");
    db.close().await.unwrap();
}

#[tokio::test]
async fn a_database_from_before_shared_bodies_keeps_every_delivery_and_its_body() {
    // The schema as it was before bodies were shared: the migrations up to 0011.
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("migrations");
    std::fs::create_dir(&old).unwrap();
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name[..4].parse::<u32>().unwrap() < 12 {
            std::fs::copy(&path, old.join(name)).unwrap();
        }
    }
    let db = dir.path().join("runbookd.db");
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&db)
        .create_if_missing(true)
        .foreign_keys(true)
        .connect()
        .await
        .unwrap();
    sqlx::migrate::Migrator::new(old.as_path())
        .await
        .unwrap()
        .run(&mut conn)
        .await
        .unwrap();
    let old_body = r#"{"alert_name": "DiskFull", "labels": {"host": "pbs"}}"#;
    sqlx::query(
        "INSERT INTO deliveries (id, received_at, source, actor, body)
         VALUES (7, '2026-11-01T00:00:00+00:00', 'ingest', 'ingest', ?)",
    )
    .bind(old_body)
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO alerts (delivery_id, source, name, severity, status, fingerprint, labels,
                             annotations, received_at)
         VALUES (7, 'ingest', 'DiskFull', 'warning', 'resolved', 'f', '{}', '{}',
                 '2026-11-01T00:00:00+00:00')",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();

    let app = TestApp::spawn_with(|config| config.database.path = db.clone()).await;
    post(&app, INGEST_TOKEN, &reference("alertmanager-v4.json")).await;
    let mut db = app.db().await;
    let bodies: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, body FROM delivery_bodies ORDER BY id")
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_eq!(bodies.len(), 2);
    assert_eq!(
        bodies[0],
        (7, old_body.to_owned()),
        "the old delivery keeps its body"
    );
    assert_eq!(bodies[1].1, reference("alertmanager-v4.json"));
    let alert_delivery: i64 =
        sqlx::query_scalar("SELECT delivery_id FROM alerts ORDER BY id LIMIT 1")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(alert_delivery, 7);
    let violations = sqlx::query("PRAGMA foreign_key_check")
        .fetch_all(&mut db)
        .await
        .unwrap();
    assert!(violations.is_empty(), "every reference still holds");
}
