//! Crash safety with the real binary: the twin runs out of process (`runbookd lab`), and
//! `runbookd serve` is killed with SIGKILL at every step boundary of the stale-nfs run and once
//! inside the long canary backup. After each restart the run resumes; it ends resolved; the
//! twin saw no non-idempotent request twice; the audit trail has no gaps.

use crate::common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::eventually;
use common::process::ServiceProcess;
use common::reference;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const ADMIN: &str = "crash-admin-secret-0123456789abcdef";

async fn serve(dir: &Path) -> ServiceProcess {
    let config = dir.join("lab/runbookd.toml");
    let playbooks = concat!(env!("CARGO_MANIFEST_DIR"), "/playbooks");
    ServiceProcess::start_with(
        &dir.join("data/runbookd.db"),
        &[("RUNBOOKD_ADMIN_TOKEN", ADMIN)],
        &[
            "--config",
            config.to_str().unwrap(),
            "--playbooks",
            playbooks,
        ],
    )
    .await
}

async fn get(client: &reqwest::Client, url: String) -> Option<Value> {
    common::fetch_json(client, &url, ADMIN).await
}

#[tokio::test]
async fn sigkill_at_every_step_boundary_and_inside_a_long_step() {
    let dir = tempfile::tempdir().unwrap();
    let mut lab = Command::new(env!("CARGO_BIN_EXE_runbookd"))
        .args(["lab", "--scenario", "stale-nfs", "--dir"])
        // Absolute, so the generated config works from any directory.
        .arg(dir.path().join("lab"))
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
    let env = std::fs::read_to_string(dir.path().join("lab/env")).unwrap();
    let control = env
        .lines()
        .find_map(|l| l.strip_prefix("CONTROL="))
        .unwrap()
        .to_owned();
    // A short lease so a killed worker's run is resumed quickly, slow PBS commands and a long
    // backup so the kills land where they should.
    let mut config = std::fs::read_to_string(dir.path().join("lab/runbookd.toml")).unwrap();
    config.push_str("\n[engine]\nlease_secs = 2\n");
    std::fs::write(dir.path().join("lab/runbookd.toml"), config).unwrap();
    let client = reqwest::Client::new();
    assert!(
        client
            .put(format!("{control}/latency/pbs?ms=700"))
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    assert!(
        client
            .put(format!("{control}/vzdump?ms=4000"))
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );

    let mut service = serve(dir.path()).await;
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

    let mut kills = 0;
    for boundary in [
        "restart_pbs",
        "check_pbs_active",
        "canary_backup",
        "inside canary_backup",
        "full_backup",
        "groups_fresh",
    ] {
        let address = service.address.clone();
        let owner = service.owner.clone();
        let client = &client;
        let control = &control;
        eventually(
            &format!("the run to reach {boundary}"),
            Duration::from_secs(60),
            || {
                let (address, owner) = (address.clone(), owner.clone());
                async move {
                    // Only kill a process once it works on the run.
                    let run = get(client, format!("{address}/api/v1/runs/{run_id}")).await?;
                    if run["run"]["lease_owner"] != owner.as_str() {
                        return None;
                    }
                    if boundary == "inside canary_backup" {
                        // The canary's vzdump was sent and is still running.
                        let received = get(client, format!("{control}/received")).await?;
                        let sent = received.as_array()?.iter().any(|r| {
                            r["text"].as_str().is_some_and(|t| {
                                t.starts_with("POST /api2/json/nodes/ruapehu/vzdump")
                            })
                        });
                        return sent.then_some(());
                    }
                    (run["run"]["step"] == boundary).then_some(())
                }
            },
        )
        .await;
        service.child.kill().await.unwrap();
        kills += 1;
        service = serve(dir.path()).await;
    }

    let address = service.address.clone();
    let mut last = Value::Null;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let run = loop {
        if let Some(run) = get(&client, format!("{address}/api/v1/runs/{run_id}")).await {
            if matches!(run["run"]["state"].as_str(), Some("resolved" | "escalated")) {
                break run;
            }
            last = run;
        }
        if tokio::time::Instant::now() >= deadline {
            let world = get(&client, format!("{control}/world"))
                .await
                .unwrap_or_default();
            panic!(
                "the run did not end: {}\ngroups: {}\ntasks: {}",
                last["run"], world["groups"], world["tasks"]
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(run["run"]["state"], "resolved", "{run:#}");

    // No non-idempotent request twice: one canary and one full backup per host.
    let received = get(&client, format!("{control}/received")).await.unwrap();
    let posts: Vec<&str> = received
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["text"].as_str())
        .filter(|t| t.starts_with("POST"))
        .collect();
    let count = |node: &str| {
        posts
            .iter()
            .filter(|p| p.starts_with(&format!("POST /api2/json/nodes/{node}/vzdump")))
            .count()
    };
    assert_eq!(
        (count("ruapehu"), count("pihanga"), count("hikurangi")),
        (2, 1, 1),
        "{posts:#?}"
    );

    // The trail has no gaps: every started step finished, or its worker died and the run was
    // taken over after it.
    let timeline = run["timeline"].as_array().unwrap();
    let leased = timeline
        .iter()
        .filter(|e| e["action"] == "run.leased")
        .count();
    assert_eq!(
        leased,
        kills + 1,
        "one lease per process that worked on the run"
    );
    for (i, event) in timeline
        .iter()
        .enumerate()
        .filter(|(_, e)| e["action"] == "step.started")
    {
        let attempt = &event["detail"]["step_attempt"];
        let closed = timeline[i + 1..].iter().any(|e| {
            (e["action"] == "step.finished" && e["detail"]["step_attempt"] == *attempt)
                || e["action"] == "run.leased"
        });
        assert!(
            closed,
            "step attempt {attempt} started and nothing followed: {timeline:#?}"
        );
    }
    // The run ends, then its verified fix resolves the incident it covers.
    let ending: Vec<&Value> = timeline[timeline.len() - 2..]
        .iter()
        .map(|e| &e["action"])
        .collect();
    assert_eq!(ending, ["run.finished", "incident.run_resolved"]);
    assert!(service.terminate().await.success());
    lab.kill().await.unwrap();
}
