//! Audit rows as earlier builds wrote them (taken from a real run's database) read back as
//! typed events: every fact kept, each under its own type, each a sentence.

use crate::common;

use runbookd::audit_story::sentence;
use runbookd::store::audit::AuditDetail;
use runbookd::store::intake::IntakeAction;
use runbookd::store::runs::RunState;
use serde_json::Value;
use sqlx::ConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;

/// A resolved run's whole trail from a runbookd database written before the details were
/// typed, plus a refused link and a switch from another one.
const ROWS: &str = include_str!("fixtures/audit/resolved-run.jsonl");

#[tokio::test]
async fn rows_from_a_real_runs_database_read_back_as_typed_events() {
    let (store, dir) = common::temp_store().await;
    let path = dir.path().join("runbookd.db");
    let rows: Vec<Value> = ROWS
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    // The rows as they were stored, byte for byte; their incidents and runs are not copied.
    let mut db = SqliteConnectOptions::new()
        .filename(&path)
        .foreign_keys(false)
        .connect()
        .await
        .unwrap();
    for row in &rows {
        sqlx::query(
            "INSERT INTO audit_events (id, at, actor, action, incident_id, run_id, detail)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(row["id"].as_i64())
        .bind(row["at"].as_str())
        .bind(row["actor"].as_str())
        .bind(row["action"].as_str())
        .bind(row["incident_id"].as_i64())
        .bind(row["run_id"].as_i64())
        .bind(row["detail"].to_string())
        .execute(&mut db)
        .await
        .unwrap();
    }

    let events = store.audit_events_after(0, 100).await.unwrap();
    assert_eq!(events.len(), rows.len());
    for (event, row) in events.iter().zip(&rows) {
        assert_eq!(event.action.as_str(), row["action"], "{row}");
        assert_eq!(event.detail.action(), event.action, "{row}");
        // Every fact the row holds reads into the type and writes back under its key.
        let typed = serde_json::to_value(&event.detail).unwrap();
        for (key, value) in row["detail"].as_object().unwrap() {
            if !value.is_null() {
                assert_eq!(typed.get(key), Some(value), "{key} of {row}");
            }
        }
        let text = sentence(&event.actor, &event.detail);
        assert!(!text.contains('{'), "{text}");
    }

    let AuditDetail::IncidentOpened(opened) = &events[0].detail else {
        panic!("{:?}", events[0]);
    };
    assert_eq!(opened.intake, Some(IntakeAction::Opened));
    assert_eq!(opened.alert_name.as_deref(), Some("PBSBackupStale"));
    assert_eq!(
        sentence(&events[3].actor, &events[3].detail),
        "Diagnosis found stale_nfs_handles (evidence: log_classes: chunk_store); next: restart_pbs"
    );
    let AuditDetail::StepFinished(finished) = &events[6].detail else {
        panic!("{:?}", events[6]);
    };
    assert_eq!(
        (finished.exit_status, finished.command.as_deref()),
        (Some(0), None)
    );
    let AuditDetail::RunFinished(ended) = &events[22].detail else {
        panic!("{:?}", events[22]);
    };
    assert_eq!(ended.state, Some(RunState::Resolved));
    assert_eq!(ended.cause(), Some("stale_nfs_handles"));
    assert_eq!(
        sentence(&events[22].actor, &events[22].detail),
        "The run ended resolved: cause stale_nfs_handles, fix verified"
    );
    let AuditDetail::LinkRefused(refused) = &events[24].detail else {
        panic!("{:?}", events[24]);
    };
    assert_eq!(refused.reason.as_deref(), Some("bad_signature"));
    let AuditDetail::SettingChanged(switched) = &events[25].detail else {
        panic!("{:?}", events[25]);
    };
    assert!(switched.value);
    assert_eq!(
        sentence(&events[25].actor, &events[25].detail),
        "env-admin turned pause on"
    );
}
