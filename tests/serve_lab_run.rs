//! The whole story through the real binary: `runbookd serve --lab stale-nfs`, an Alertmanager
//! post, and the run that follows: diagnosis, restart, canary, full backup, fresh groups,
//! resolved; a repeat of the alert attaches to the run; a resolve during a finished run changes
//! nothing.

mod common;

use std::time::Duration;

use common::eventually;
use common::process::ServiceProcess;
use common::reference;
use serde_json::Value;

const ADMIN: &str = "serve-lab-admin-secret-0123456789";

#[tokio::test]
async fn an_alert_becomes_a_resolved_run_on_the_twin() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data/runbookd.db");
    let playbooks = concat!(env!("CARGO_MANIFEST_DIR"), "/playbooks");
    let service = ServiceProcess::start_with(
        &db,
        &[("RUNBOOKD_ADMIN_TOKEN", ADMIN)],
        &["--lab", "stale-nfs", "--playbooks", playbooks],
    )
    .await;
    let client = reqwest::Client::new();
    let post = || async {
        let response = client
            .post(format!("{}/webhook/alertmanager", service.address))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(reference("alertmanager-v4.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        response.json::<Value>().await.unwrap()["incidents"][0].clone()
    };
    let first = post().await;
    let run_id = first["run_id"].as_i64().expect("the alert started a run");
    let repeat = post().await;
    assert_eq!(repeat["run_id"], run_id, "a repeat attaches to the run");

    let run = eventually("the run to end", Duration::from_secs(90), || async {
        let detail: Value = client
            .get(format!("{}/api/v1/runs/{run_id}", service.address))
            .bearer_auth(ADMIN)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let state = detail["run"]["state"].as_str()?.to_owned();
        (state == "resolved" || state == "escalated").then_some(detail)
    })
    .await;
    assert_eq!(run["run"]["state"], "resolved", "{run:#}");
    assert_eq!(run["run"]["outcome"]["cause"], "stale_nfs_handles");
    let steps: Vec<&str> = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "restart_pbs",
            "check_pbs_active",
            "canary_backup",
            "full_backup",
            "groups_fresh"
        ]
    );
    assert_eq!(
        run["steps"][0]["command"],
        "systemctl restart proxmox-backup proxmox-backup-proxy"
    );
    assert_eq!(run["steps"][0]["exit_status"], 0);
    let actions: Vec<&str> = run["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions.first(), Some(&"run.created"));
    assert_eq!(actions.last(), Some(&"run.finished"));
    assert!(actions.contains(&"control.allowed"), "{actions:?}");
    assert!(service.terminate().await.success());
}
