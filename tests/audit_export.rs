//! `runbookd audit export`: the audit trail's one exit. Old events are written to a file (every
//! column, one JSON object per line), then exactly those are pruned, recorded as `audit.pruned`
//! with the count, the range and the file's digest. Nothing else can delete them.

use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::Row;

use runbookd::clock::Clock;

use crate::common::{TestApp, reference};

fn runbookd() -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_runbookd"));
    command
        .env_remove("RUNBOOKD_CONFIG")
        .env_remove("RUNBOOKD_DB");
    command
}

async fn post_reference(app: &TestApp) {
    let response = app
        .post_alertmanager(&reference("alertmanager-v4.json"))
        .await;
    assert_eq!(response.status(), 202);
}

/// Every audit row as JSON, in id order, read through a plain connection.
async fn audit_rows(app: &TestApp) -> Vec<Value> {
    sqlx::query(
        "SELECT id, at, actor, action, incident_id, run_id, detail FROM audit_events ORDER BY id",
    )
    .fetch_all(&mut app.db().await)
    .await
    .unwrap()
    .iter()
    .map(|row| {
        serde_json::json!({
            "id": row.get::<i64, _>("id"),
            "at": row.get::<chrono::DateTime<chrono::Utc>, _>("at"),
            "actor": row.get::<String, _>("actor"),
            "action": row.get::<String, _>("action"),
            "incident_id": row.get::<Option<i64>, _>("incident_id"),
            "run_id": row.get::<Option<i64>, _>("run_id"),
            "detail": serde_json::from_str::<Value>(&row.get::<String, _>("detail")).unwrap(),
        })
    })
    .collect()
}

#[tokio::test]
async fn export_writes_every_column_then_prunes_exactly_those_events_while_the_service_runs() {
    let app = TestApp::spawn().await;
    post_reference(&app).await;
    post_reference(&app).await;
    app.clock.advance(chrono::Duration::days(2));
    let before = app.clock.now() - chrono::Duration::days(1);
    post_reference(&app).await;
    let rows = audit_rows(&app).await;
    assert_eq!(rows.len(), 3, "{rows:#?}");

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("audit.jsonl");
    let output = runbookd()
        .args(["audit", "export", "--before", &before.to_rfc3339()])
        .arg("--out")
        .arg(&out)
        .arg("--db")
        .arg(&app.db_path)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("exported 2 audit event(s)"), "{stdout}");
    assert!(stdout.contains("pruned 2 audit event(s)"), "{stdout}");

    // The file: the two older events, every column, exactly as they were.
    let text = std::fs::read_to_string(&out).unwrap();
    let exported: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(exported, rows[..2]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // The trail: the younger event, then audit.pruned saying what left and where it went.
    let after = audit_rows(&app).await;
    assert_eq!(after.len(), 2, "{after:#?}");
    assert_eq!(after[0], rows[2]);
    let pruned = &after[1];
    assert_eq!(pruned["action"], "audit.pruned");
    assert_eq!(pruned["actor"], "audit-export");
    let detail = &pruned["detail"];
    assert_eq!(detail["events"], 2);
    assert_eq!(detail["first_id"], rows[0]["id"]);
    assert_eq!(detail["last_id"], rows[1]["id"]);
    assert_eq!(detail["from"], rows[0]["at"]);
    assert_eq!(detail["to"], rows[1]["at"]);
    assert_eq!(detail["file"], out.display().to_string());
    assert_eq!(
        detail["sha256"],
        hex::encode(Sha256::digest(text.as_bytes()))
    );

    // The same file again: refused, nothing changes.
    let again = runbookd()
        .args(["audit", "export", "--before", "1m"])
        .arg("--out")
        .arg(&out)
        .arg("--db")
        .arg(&app.db_path)
        .output()
        .await
        .unwrap();
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), text);
    assert_eq!(audit_rows(&app).await, after);

    // Nothing else deletes or edits the trail.
    let mut db = app.db().await;
    for statement in [
        "DELETE FROM audit_events",
        "UPDATE audit_events SET actor = 'someone'",
    ] {
        let refused = sqlx::query(statement).execute(&mut db).await.unwrap_err();
        assert!(refused.to_string().contains("append-only"), "{refused}");
    }
    assert_eq!(audit_rows(&app).await, after);
}

#[tokio::test]
async fn a_bad_before_is_refused_and_writes_nothing() {
    let app = TestApp::spawn().await;
    post_reference(&app).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("audit.jsonl");
    let output = runbookd()
        .args(["audit", "export", "--before", "yesterday"])
        .arg("--out")
        .arg(&out)
        .arg("--db")
        .arg(&app.db_path)
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("neither an RFC 3339 time"), "{stderr}");
    assert!(!out.exists());
    assert_eq!(app.count("audit_events").await, 1);
}

#[tokio::test]
async fn keep_exports_and_deletes_nothing() {
    let app = TestApp::spawn().await;
    post_reference(&app).await;
    let rows = audit_rows(&app).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("audit.jsonl");
    let before = app.clock.now() + chrono::Duration::minutes(1);
    let output = runbookd()
        .args([
            "audit",
            "export",
            "--keep",
            "--before",
            &before.to_rfc3339(),
        ])
        .arg("--out")
        .arg(&out)
        .arg("--db")
        .arg(&app.db_path)
        .output()
        .await
        .unwrap();
    assert!(output.status.success());
    let exported: Vec<Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(exported, rows);
    assert_eq!(
        audit_rows(&app).await,
        rows,
        "nothing pruned, nothing recorded"
    );
}
