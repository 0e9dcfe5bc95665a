//! `runbookd backup FILE`: a consistent copy while the service serves (acceptance 4).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;

use crate::common::process::ServiceProcess;
use crate::common::{ADMIN_TOKEN, eventually};

fn runbookd() -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_runbookd"));
    command
        .env_remove("RUNBOOKD_CONFIG")
        .env_remove("RUNBOOKD_DB");
    command
}

#[tokio::test]
async fn a_backup_under_load_is_consistent_and_holds_every_alert_acknowledged_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runbookd.db");
    let service = ServiceProcess::start(&db, &[("RUNBOOKD_ADMIN_TOKEN", ADMIN_TOKEN)]).await;

    // Clients post unique alerts until told to stop; each one answered 202 is recorded.
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for client in 0..4u64 {
        let (acked, stop, address) = (acked.clone(), stop.clone(), service.address.clone());
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let seq = client * 1_000_000 + n;
                n += 1;
                let body = serde_json::json!({
                    "alert_name": "BackupLoad", "labels": {"seq": seq.to_string()},
                });
                let response = http
                    .post(format!("{address}/ingest"))
                    .bearer_auth(ADMIN_TOKEN)
                    .json(&body)
                    .send()
                    .await;
                if response.is_ok_and(|r| r.status() == 202) {
                    acked.lock().unwrap().insert(seq);
                }
            }
        }));
    }
    eventually(
        "the clients to get answers",
        Duration::from_secs(30),
        || async { (acked.lock().unwrap().len() >= 50).then_some(()) },
    )
    .await;

    let copy = dir.path().join("copy.db");
    let acked_before: BTreeSet<u64> = acked.lock().unwrap().clone();
    let output = runbookd()
        .arg("backup")
        .arg(&copy)
        .arg("--db")
        .arg(&db)
        .output()
        .await
        .unwrap();
    let acked_after = acked.lock().unwrap().len();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    println!(
        "{} alerts acknowledged before the backup, {acked_after} when it finished\n{stdout}",
        acked_before.len()
    );
    assert!(stdout.contains(&copy.display().to_string()), "{stdout}");
    assert!(
        stdout.contains("bytes") && stdout.contains("alerts: "),
        "{stdout}"
    );

    let mut conn = SqliteConnectOptions::new()
        .filename(&copy)
        .read_only(true)
        .connect()
        .await
        .expect("the copy opens");
    let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(integrity, "ok");
    let seqs: Vec<String> = sqlx::query_scalar("SELECT json_extract(labels, '$.seq') FROM alerts")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let in_copy: BTreeSet<u64> = seqs.iter().map(|s| s.parse().unwrap()).collect();
    let missing: Vec<&u64> = acked_before.difference(&in_copy).collect();
    assert!(
        missing.is_empty(),
        "acknowledged before the backup, missing from it: {missing:?}"
    );

    use std::os::unix::fs::PermissionsExt;
    let metadata = std::fs::metadata(&copy).unwrap();
    assert_eq!(metadata.permissions().mode() & 0o777, 0o600);

    // A second backup never overwrites the first.
    let again = runbookd()
        .arg("backup")
        .arg(&copy)
        .arg("--db")
        .arg(&db)
        .output()
        .await
        .unwrap();
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(std::fs::metadata(&copy).unwrap().len(), metadata.len());
    let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(integrity, "ok");
    assert!(service.terminate().await.success());
}

#[tokio::test]
async fn a_backup_of_a_missing_database_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy.db");
    let output = runbookd()
        .arg("backup")
        .arg(&copy)
        .arg("--db")
        .arg(dir.path().join("absent.db"))
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("there is no database at"), "{stderr}");
    assert!(!copy.exists());
    assert!(
        !dir.path().join("absent.db").exists(),
        "nothing was created"
    );
}
