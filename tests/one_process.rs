//! The real binary's hold on its database: SIGTERM gives back the run it holds, so a restart
//! resumes it at once (not after the lease, set here to ten minutes), and a second process on
//! the same database file refuses to start while the first keeps serving.

use crate::common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::eventually;
use common::process::ServiceProcess;
use common::reference;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const ADMIN: &str = "one-process-admin-secret-0123456789";

/// `runbookd lab` out of process, so the twin's world outlives the service's restarts;
/// returns it and its control API's address.
async fn lab(dir: &Path, scenario: &str) -> (Child, String) {
    let mut lab = Command::new(env!("CARGO_BIN_EXE_runbookd"))
        .args(["lab", "--scenario", scenario, "--dir"])
        .arg(dir.join("lab"))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(lab.stdout.take().unwrap()).lines();
    while let Some(line) = lines.next_line().await.unwrap() {
        if line.starts_with("lab ready") {
            break;
        }
    }
    let env = std::fs::read_to_string(dir.join("lab/env")).unwrap();
    let control = env
        .lines()
        .find_map(|l| l.strip_prefix("CONTROL="))
        .unwrap()
        .to_owned();
    (lab, control)
}

async fn serve(dir: &Path) -> ServiceProcess {
    let config = dir.join("lab/runbookd.toml");
    ServiceProcess::start_with(
        &dir.join("data/runbookd.db"),
        &[("RUNBOOKD_ADMIN_TOKEN", ADMIN)],
        &[
            "--config",
            config.to_str().unwrap(),
            "--playbooks",
            concat!(env!("CARGO_MANIFEST_DIR"), "/playbooks"),
        ],
    )
    .await
}

async fn get(client: &reqwest::Client, url: String) -> Option<Value> {
    common::fetch_json(client, &url, ADMIN).await
}

async fn set_vzdump_ms(client: &reqwest::Client, control: &str, ms: u64) {
    let response = client
        .put(format!("{control}/vzdump?ms={ms}"))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
}

#[tokio::test]
async fn sigterm_gives_the_run_back_and_a_restart_resumes_it_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mut lab, control) = lab(dir.path(), "stale-nfs").await;
    // A lease far longer than this test: only the release lets the restart resume the run.
    let mut config = std::fs::read_to_string(dir.path().join("lab/runbookd.toml")).unwrap();
    config.push_str("\n[engine]\nlease_secs = 600\n");
    std::fs::write(dir.path().join("lab/runbookd.toml"), config).unwrap();
    let client = reqwest::Client::new();
    set_vzdump_ms(&client, &control, 8_000).await;

    let service = serve(dir.path()).await;
    let response = client
        .post(format!("{}/webhook/alertmanager", service.address))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(reference("alertmanager-v4.json"))
        .send()
        .await
        .unwrap();
    let run_id = response.json::<Value>().await.unwrap()["incidents"][0]["run_id"]
        .as_i64()
        .unwrap();

    // The run is inside the long canary backup, held by this process.
    let (address, owner) = (service.address.clone(), service.owner.clone());
    eventually(
        "the canary backup to start",
        Duration::from_secs(60),
        || {
            let (client, address, owner, control) = (&client, &address, &owner, &control);
            async move {
                let run = get(client, format!("{address}/api/v1/runs/{run_id}")).await?;
                if run["run"]["lease_owner"] != owner.as_str() {
                    return None;
                }
                let received = get(client, format!("{control}/received")).await?;
                received
                    .as_array()?
                    .iter()
                    .any(|r| {
                        r["text"]
                            .as_str()
                            .is_some_and(|t| t.starts_with("POST /api2/json/nodes/ruapehu/vzdump"))
                    })
                    .then_some(())
            }
        },
    )
    .await;
    let log = service.log_text();
    let status = service.terminate().await;
    assert!(status.success(), "{status:?}\n{log}");

    // Backups are quick from here on; the same database, a new process.
    set_vzdump_ms(&client, &control, 0).await;
    let service = serve(dir.path()).await;
    let address = service.address.clone();
    let run = eventually(
        "the run to resume and resolve",
        Duration::from_secs(90),
        || {
            let (client, address) = (&client, &address);
            async move {
                let run = get(client, format!("{address}/api/v1/runs/{run_id}")).await?;
                run["run"]["state"]
                    .as_str()
                    .is_some_and(|s| s != "running" && s != "pending")
                    .then_some(run)
            }
        },
    )
    .await;
    assert_eq!(run["run"]["state"], "resolved", "{run:#}");
    let timeline = run["timeline"].as_array().unwrap();
    let released = timeline
        .iter()
        .position(|e| e["action"] == "run.advanced" && e["detail"]["reason"] == "shutting down")
        .unwrap_or_else(|| panic!("the release is audited: {timeline:#?}"));
    assert_eq!(timeline[released]["actor"], owner.as_str());
    assert_eq!(timeline[released]["detail"]["state"], "pending");
    let leased_after = timeline[released..]
        .iter()
        .find(|e| e["action"] == "run.leased")
        .expect("the new process leased the run");
    assert_eq!(leased_after["actor"], service.owner.as_str());
    assert_ne!(service.owner, owner, "each process has its own lease owner");
    assert!(service.terminate().await.success());
    lab.kill().await.unwrap();
}

#[tokio::test]
async fn a_second_process_on_the_same_database_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data/runbookd.db");
    let env = [("RUNBOOKD_ADMIN_TOKEN", ADMIN)];
    let first = ServiceProcess::start(&db, &env).await;

    let second = Command::new(env!("CARGO_BIN_EXE_runbookd"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--db",
        ])
        .arg(&db)
        .env_remove("RUNBOOKD_CONFIG")
        .env("RUNBOOKD_ADMIN_TOKEN", ADMIN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let output = tokio::time::timeout(Duration::from_secs(30), second.wait_with_output())
        .await
        .expect("the second process exits by itself")
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "the database {} is in use by another runbookd process (pid {}, {}",
            db.display(),
            first.pid(),
            first.owner
        )),
        "{text}"
    );
    assert!(text.contains("runbookd.db.lock"), "{text}");
    assert!(!text.contains("listening"), "{text}");

    // The first one keeps serving.
    let health = reqwest::get(format!("{}/readyz", first.address))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert!(first.terminate().await.success());
    // Once it has stopped, the database is free again.
    let third = ServiceProcess::start(&db, &env).await;
    assert!(third.terminate().await.success());
}
