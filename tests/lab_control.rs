//! The twin's control API (switch scenario, move the clock, inject latency, read what it
//! received), and `runbookd serve --lab` starting the twin in-process.

use crate::common;

use std::time::{Duration, Instant};

use common::process::ServiceProcess;
use common::twin::name;
use runbookd::exec::command::render;
use runbookd::exec::output::Redactor;
use runbookd::exec::ssh::{RemoteShell, SshSession};
use runbookd::lab::RunningLab;
use serde_json::Value;

#[tokio::test]
async fn the_control_api_reads_and_changes_the_world() {
    let dir = tempfile::tempdir().unwrap();
    let lab = RunningLab::launch(dir.path(), "healthy").await.unwrap();
    let control = format!("http://{}", lab.control);
    let http = reqwest::Client::new();

    let switched = http
        .post(format!("{control}/scenario/nfs-unmounted"))
        .send()
        .await
        .unwrap();
    assert_eq!(switched.status(), 200);
    assert_eq!(
        lab.lab.with_world(|w| w.nfs),
        runbookd::lab::world::Nfs::Unmounted
    );
    let unknown = http
        .post(format!("{control}/scenario/on-fire"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 400);
    assert!(
        unknown
            .text()
            .await
            .unwrap()
            .contains("unknown scenario 'on-fire'")
    );

    let before = lab.lab.with_world(|w| w.now());
    let moved: Value = http
        .post(format!("{control}/clock/advance?seconds=7200"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(moved["now"].is_string());
    let after = lab.lab.with_world(|w| w.now());
    assert!(after - before >= chrono::Duration::seconds(7200));
    assert_eq!(
        http.post(format!("{control}/clock/advance?seconds=-5"))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );

    assert_eq!(
        http.put(format!("{control}/latency/pbs?ms=300"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.put(format!("{control}/latency/nowhere?ms=1"))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    let ssh = SshSession::new(
        lab.lab.ssh_hosts(),
        lab.lab.ssh_settings(),
        Redactor::default(),
    );
    let started = Instant::now();
    ssh.run(
        &name("pbs"),
        &render("hostname", &[]).unwrap(),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "the injected latency applies"
    );

    let received: Value = http
        .get(format!("{control}/received"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(received[0]["host"], "pbs");
    assert_eq!(received[0]["executed"][0], "timeout -k 5 5 hostname");
    let world: Value = http
        .get(format!("{control}/world"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(world["scenario"], "nfs-unmounted");
    assert_eq!(world["latency"]["pbs"], 300);
}

#[tokio::test]
async fn serve_with_lab_runs_the_twin_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data/runbookd.db");
    let service = ServiceProcess::start_with(&db, &[], &["--lab", "cert-mismatch"]).await;
    let config = dir.path().join("data/lab/runbookd.toml");
    assert!(
        config.is_file(),
        "the lab's config is written next to the database"
    );
    let log = service.log_text();
    assert!(
        log.contains("the simulated estate is running in-process"),
        "{log}"
    );
    let control = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|event| event["control"].as_str().map(str::to_owned))
        .expect("the start-up log names the control API");
    let world: Value = reqwest::get(format!("{control}/world"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(world["scenario"], "cert-mismatch");
    assert!(service.terminate().await.success());
}
