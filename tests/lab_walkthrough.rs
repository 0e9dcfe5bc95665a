//! Acceptance 5 of the twin: the README's hand-driven walkthrough runs as written, with
//! OpenSSH's `ssh` and `curl`, against `runbookd lab --scenario stale-nfs`.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// The shell block after the `lab-walkthrough` marker in README.md.
fn walkthrough() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let after = readme
        .split("<!-- lab-walkthrough")
        .nth(1)
        .expect("README has the walkthrough marker");
    let block = after.split("```sh\n").nth(1).unwrap();
    block.split("```").next().unwrap().to_owned()
}

#[tokio::test]
async fn the_readme_walkthrough_drives_the_lab_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let mut lab = Command::new(env!("CARGO_BIN_EXE_runbookd"))
        .args(["lab", "--scenario", "stale-nfs"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(lab.stdout.take().unwrap()).lines();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.starts_with("lab ready") {
                return;
            }
        }
        panic!("runbookd lab exited before it was ready");
    })
    .await
    .expect("the lab is ready within 30 s");

    let script = walkthrough();
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new("sh")
            .args(["-e", "-c", &script])
            .current_dir(dir.path())
            .output(),
    )
    .await
    .expect("the walkthrough finishes")
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );

    assert!(stdout.starts_with("active\nactive\n"), "{stdout}");
    assert!(stdout.contains("unable to open chunk store at \"/mnt/pbs-datastore/.chunks\" - No such file or directory (os error 2)"), "{stdout}");
    assert_eq!(
        stdout.matches("\"data\":\"UPID:ruapehu:").count(),
        2,
        "two vzdump tasks: {stdout}"
    );
    assert!(
        stdout.contains("\"channel\":\"ssh\""),
        "the control API's log is printed last: {stdout}"
    );

    let control = |path: &'static str| {
        let dir = dir.path().to_owned();
        async move {
            let out = Command::new("sh")
                .args(["-c", &format!(". lab/env; curl -sS \"$CONTROL{path}\"")])
                .current_dir(dir)
                .output()
                .await
                .unwrap();
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
        }
    };
    let received = control("/received").await;
    let texts: Vec<&str> = received
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["text"].as_str().unwrap())
        .collect();
    assert!(
        texts.contains(&"systemctl restart proxmox-backup proxmox-backup-proxy"),
        "{texts:?}"
    );
    assert_eq!(
        texts
            .iter()
            .filter(|t| t.starts_with("POST /api2/json/nodes/ruapehu/vzdump"))
            .count(),
        2
    );

    // The first backup failed and the second, after the restart, worked: the world shows it.
    let world = control("/world").await;
    let statuses: Vec<&str> = world["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["exitstatus"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["job errors", "OK"]);

    let check = Command::new(env!("CARGO_BIN_EXE_runbookd"))
        .args([
            "check",
            "--config",
            "lab/runbookd.toml",
            "--playbooks",
            concat!(env!("CARGO_MANIFEST_DIR"), "/playbooks"),
        ])
        .current_dir(dir.path())
        .env_remove("RUNBOOKD_ADMIN_TOKEN")
        .env_remove("RUNBOOKD_INGEST_TOKEN")
        .output()
        .await
        .unwrap();
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        report.contains("4 host(s), PBS configured, PVE configured"),
        "{report}"
    );
    lab.kill().await.unwrap();
}
