//! The one redactor and the API body cap, end to end against the twin: a PBS/PVE that answers
//! with the token secret and a private key leaves neither in the database nor in what the
//! diagnosis returns, and an answer over the cap fails with the cap, not a bigger buffer.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::twin::Twin;
use runbookd::config::{Config, Overrides};
use runbookd::engine::diagnose::diagnose;
use runbookd::engine::estate::Estate;
use runbookd::exec::http::{ApiError, MAX_API_BODY};
use runbookd::exec::pbs::PbsApi;
use runbookd::intake::Labels;
use runbookd::lab::world::ApiFault;
use runbookd::store::runs::RunState;
use serde_json::json;
use sqlx::{ConnectOptions, Connection, Row};

/// The secret part of a private key block: it must never be stored.
const KEY_MATERIAL: &str = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2g";

fn private_key() -> String {
    format!(
        "-----BEGIN OPENSSH PRIVATE KEY-----\n{KEY_MATERIAL}\n-----END OPENSSH PRIVATE KEY-----"
    )
}

/// PBS's datastore usage names the token secret and a key (probe JSON that becomes a fact);
/// PVE refuses to enable the backup job with both in its error body (a step's error).
fn hostile_apis(twin: &Twin, secret: &str) {
    let usage = json!({"data": [{"store": "pbs-datastore",
        "error": format!("chunk store locked by PBSAPIToken=root@pam!runbookd:{secret} (token {secret})\n{}", private_key())}]});
    let refusal = json!({"data": null,
        "message": format!("permission check failed for token {secret}:\n{}\n", private_key())});
    twin.lab.with_world(|w| {
        w.api_faults.insert(
            "pbs".to_owned(),
            ApiFault {
                status: 200,
                body: usage.to_string(),
                path: "/status/datastore-usage".to_owned(),
                bytes: 0,
            },
        );
        w.api_faults.insert(
            "ruapehu".to_owned(),
            ApiFault {
                status: 500,
                body: refusal.to_string(),
                path: "/cluster/backup/".to_owned(),
                bytes: 0,
            },
        );
    });
}

/// Every text value of every column of every table in the SQLite file at `path`, read
/// through a connection of its own.
async fn every_stored_text(path: &std::path::Path) -> String {
    let mut db = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .connect()
        .await
        .unwrap();
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
            .fetch_all(&mut db)
            .await
            .unwrap();
    let mut all = String::new();
    for table in tables {
        let columns: Vec<String> =
            sqlx::query_scalar(&format!("SELECT name FROM pragma_table_info('{table}')"))
                .fetch_all(&mut db)
                .await
                .unwrap();
        for column in columns {
            let rows = sqlx::query(&format!(
                "SELECT CAST(\"{column}\" AS BLOB) FROM \"{table}\""
            ))
            .fetch_all(&mut db)
            .await
            .unwrap();
            for row in rows {
                if let Some(bytes) = row.get::<Option<Vec<u8>>, _>(0) {
                    all.push_str(&String::from_utf8_lossy(&bytes));
                    all.push('\n');
                }
            }
        }
    }
    db.close().await.unwrap();
    all
}

#[tokio::test]
async fn api_error_bodies_and_probe_json_are_stored_redacted() {
    let s = common::engine::setup("job-disabled").await;
    let secret = s.twin.lab.pbs_endpoint().token_secret;
    hostile_apis(&s.twin, &secret);

    let id = s.start().await;
    s.settle().await;
    assert_eq!(s.approve_pending().await, "enable_backup_job");
    s.settle().await;

    let run = s.run(id).await;
    assert_ne!(run.state, RunState::Running, "{run:?}");
    let fact = run.facts.0["facts"]["datastore_error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        fact.contains("(token [REDACTED])")
            && fact.contains("PBSAPIToken=root@pam!runbookd:[REDACTED]")
            && fact.contains("-----BEGIN OPENSSH PRIVATE KEY-----[REDACTED]-----END"),
        "the probe's fact: {fact}"
    );
    let attempts = s.engine.store.step_attempts(id).await.unwrap();
    let error = attempts
        .iter()
        .find(|a| a.step == "enable_backup_job")
        .and_then(|a| a.error.clone())
        .unwrap_or_default();
    assert!(
        error.contains("PVE answered 500") && error.contains("token [REDACTED]"),
        "the step's error: {error}"
    );

    let stored = every_stored_text(&s.db_path).await;
    assert!(stored.contains("[REDACTED]"));
    assert!(!stored.contains(&secret), "the token secret is stored");
    assert!(!stored.contains(KEY_MATERIAL), "the private key is stored");
}

#[tokio::test]
async fn what_a_diagnosis_returns_is_redacted() {
    let twin = Twin::start("stale-nfs").await;
    let secret = twin.lab.pbs_endpoint().token_secret;
    hostile_apis(&twin, &secret);
    let (estate, playbook) = estate_and_playbook(&twin);
    let now = twin.lab.with_world(|w| w.now());
    let diagnosis = diagnose(&playbook, &estate, &labels(), now).await.unwrap();
    // What the diagnose tool and the runs API answer with.
    let answer = serde_json::to_string(&diagnosis).unwrap();
    assert!(answer.contains("[REDACTED]"), "{answer}");
    assert!(!answer.contains(&secret), "{answer}");
    assert!(!answer.contains(KEY_MATERIAL), "{answer}");
}

#[tokio::test]
async fn an_answer_over_the_cap_fails_with_the_cap() {
    let twin = Twin::start("healthy").await;
    twin.lab.with_world(|w| {
        w.api_faults.insert(
            "pbs".to_owned(),
            ApiFault {
                status: 200,
                body: "{\"data\": ".to_owned(),
                path: "/version".to_owned(),
                bytes: MAX_API_BODY + 1,
            },
        );
    });
    let error = twin.pbs.version().await.unwrap_err();
    assert!(matches!(error, ApiError::TooLarge { .. }), "{error:?}");
    assert!(!error.is_retryable());
    let message = error.to_string();
    assert_eq!(
        message,
        format!(
            "PBS sent more than {MAX_API_BODY} bytes for /version; runbookd reads at most that"
        )
    );

    // The probe that reads it fails with that message; the others go on.
    let (estate, playbook) = estate_and_playbook(&twin);
    let now = twin.lab.with_world(|w| w.now());
    let diagnosis = diagnose(&playbook, &estate, &labels(), now).await.unwrap();
    let probe = diagnosis.probes.iter().find(|p| p.id == "pbs_api").unwrap();
    assert_eq!(probe.error.as_deref(), Some(message.as_str()));
    assert!(diagnosis.probes.iter().any(|p| p.ok));

    // Just under the cap is read (and refused only as the non-JSON it is).
    twin.lab
        .with_world(|w| w.api_faults.get_mut("pbs").unwrap().bytes = MAX_API_BODY);
    let error = twin.pbs.version().await.unwrap_err();
    assert!(matches!(error, ApiError::Decode { .. }), "{error:?}");
}

fn labels() -> Labels {
    let labels: BTreeMap<String, String> = [("backup_type", "vm"), ("backup_id", "451")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    Labels::parse(labels).unwrap()
}

fn estate_and_playbook(twin: &Twin) -> (Estate, runbookd::playbook::Playbook) {
    let path = twin.lab.write_files().unwrap();
    let (config, source) = Config::load(Some(&path), &Overrides::default()).unwrap();
    let mut inventory = config.resolve_inventory(&source, &|_| None).unwrap();
    if let Some(ssh) = &mut inventory.ssh {
        ssh.connect_timeout = Duration::from_secs(1);
    }
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/playbooks/pbs-backup-stale.yaml"
    ))
    .unwrap();
    let playbook =
        runbookd::playbook::parse(std::path::Path::new("pbs-backup-stale.yaml"), &text).unwrap();
    (Estate::connect(&inventory).unwrap(), playbook)
}
