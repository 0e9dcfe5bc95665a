//! The binary as shipped, started outside the checkout: from an empty directory it runs its
//! built-in playbooks (`serve --lab stale-nfs` takes the reference alert to a resolved run),
//! the config's `[playbook_settings]` change what the run does, and a missing estate is loud:
//! `/readyz` says remediation is off and why, and `--require-engine` refuses to start.

use crate::common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::eventually;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const ADMIN: &str = "shipped-admin-secret-0123456789abcdef";

/// `runbookd serve ARGS` in `dir` (no playbooks there) on a free port; the child and its URL.
async fn serve_in(dir: &Path, args: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_runbookd"))
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(args)
        .current_dir(dir)
        .env_remove("RUNBOOKD_CONFIG")
        .env_remove("RUNBOOKD_PLAYBOOKS")
        .env("RUNBOOKD_ADMIN_TOKEN", ADMIN)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let event: Value = serde_json::from_str(&line).unwrap_or_default();
            if let Some(address) = event["address"].as_str() {
                return format!("http://{address}");
            }
        }
        panic!("runbookd exited before listening")
    })
    .await
    .unwrap();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, url)
}

async fn get(url: &str) -> Option<Value> {
    common::fetch_json(&reqwest::Client::new(), url, ADMIN).await
}

/// Posts the reference alert and waits for its run to end; the run's detail.
async fn alert_to_end(url: &str) -> Value {
    let answer: Value = reqwest::Client::new()
        .post(format!("{url}/webhook/alertmanager"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(include_str!("fixtures/reference/alertmanager-v4.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run_id = answer["incidents"][0]["run_id"]
        .as_i64()
        .expect("the built-in playbook started a run");
    eventually("the run to end", Duration::from_secs(120), || async {
        let detail = get(&format!("{url}/api/v1/runs/{run_id}")).await?;
        let state = detail["run"]["state"].as_str()?.to_owned();
        (state == "resolved" || state == "escalated").then_some(detail)
    })
    .await
}

fn step<'a>(run: &'a Value, name: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {run:#}"))
}

#[tokio::test]
async fn from_an_empty_directory_the_built_in_playbook_resolves_the_alert() {
    let dir = tempfile::tempdir().unwrap();
    let (_child, url) = serve_in(dir.path(), &["--lab", "stale-nfs"]).await;
    let run = alert_to_end(&url).await;
    assert_eq!(run["run"]["state"], "resolved", "{run:#}");
    assert_eq!(run["run"]["outcome"]["cause"], "stale_nfs_handles");
    assert!(
        step(&run, "canary_backup")["command"]
            .to_string()
            .contains("ruapehu"),
        "the playbook's own canary: {run:#}"
    );
    assert!(!dir.path().join("playbooks").exists());
}

#[tokio::test]
async fn config_overrides_of_the_playbook_settings_change_the_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("runbookd.toml"),
        "[playbook_settings.pbs-backup-stale]\ncanary = { host = \"pihanga\", kind = \"qemu\", vmid = 200 }\n",
    )
    .unwrap();
    let (_child, url) = serve_in(
        dir.path(),
        &["--lab", "stale-nfs", "--config", "runbookd.toml"],
    )
    .await;
    let run = alert_to_end(&url).await;
    assert_eq!(run["run"]["state"], "resolved", "{run:#}");
    let canary = step(&run, "canary_backup")["command"].to_string();
    assert!(
        canary.contains("pihanga") && !canary.contains("ruapehu"),
        "{canary}"
    );
}

#[tokio::test]
async fn without_an_estate_remediation_is_off_and_require_engine_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let (_child, url) = serve_in(dir.path(), &[]).await;
    let ready = get(&format!("{url}/readyz")).await.unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["remediation"]["enabled"], false, "{ready}");
    assert_eq!(
        ready["remediation"]["missing"],
        serde_json::json!(["[ssh]", "[[hosts]]", "[pbs]", "[pve]"])
    );

    let refused = Command::new(env!("CARGO_BIN_EXE_runbookd"))
        // Its own database: the first service holds this directory's.
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--db",
            "data/refused.db",
            "--require-engine",
        ])
        .current_dir(dir.path())
        .env_remove("RUNBOOKD_CONFIG")
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stdout).to_string()
        + &String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("--require-engine") && said.contains("[ssh], [[hosts]], [pbs], [pve]"),
        "{said}"
    );
}
