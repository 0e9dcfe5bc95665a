//! The Dockerfile's runtime image, built here and run under podman: it answers `/healthz`
//! (also through its own health check, with no curl), takes the reference alert to a resolved
//! run against the twin on loopback, runs as non-root, keeps its data in `/data`, and stops
//! cleanly on SIGTERM.
//!
//! No container registry is reachable: `scripts/base-image.sh` builds the Debian base image
//! locally (debootstrap, cached under target/), and the Dockerfile's build stage is replaced by
//! a directory holding this build's binary, stripped, as the build stage would leave it.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

const ADMIN: &str = "container-admin-secret-0123456789";
const IMAGE: &str = "localhost/runbookd:test";
/// The Dockerfile's non-root user.
const UID: &str = "10001";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// podman as this machine needs it: the project's containers.conf and the runc runtime.
fn podman(args: &[&str]) -> Output {
    Command::new("podman")
        .arg("--runtime")
        .arg("runc")
        .args(args)
        .env(
            "CONTAINERS_CONF",
            root().join("scripts/podman-containers.conf"),
        )
        .output()
        .expect("podman runs (scripts/install-test-deps.sh installs it)")
}

fn podman_ok(args: &[&str]) -> String {
    let output = podman(args);
    assert!(
        output.status.success(),
        "podman {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// The built image, removed when the test ends, however it ends: each build would otherwise
/// leave the previous one behind, untagged, and a machine that runs the suite daily fills its
/// disk with them.
struct Image;

impl Drop for Image {
    fn drop(&mut self) {
        let _ = podman(&["rmi", "--force", IMAGE]);
    }
}

/// Builds the runtime image from the Dockerfile with this build's binary.
fn build_image() -> Image {
    let base = Command::new(root().join("scripts/base-image.sh"))
        .env(
            "CONTAINERS_CONF",
            root().join("scripts/podman-containers.conf"),
        )
        .status()
        .unwrap();
    assert!(base.success(), "scripts/base-image.sh failed");
    let context = tempfile::tempdir_in(root().join("target")).unwrap();
    std::fs::create_dir(context.path().join("out")).unwrap();
    let binary = context.path().join("out/runbookd");
    let strip = Command::new("strip")
        .arg("-o")
        .arg(&binary)
        .arg(env!("CARGO_BIN_EXE_runbookd"))
        .status()
        .unwrap();
    assert!(strip.success());
    let build_context = format!("build={}", context.path().display());
    podman_ok(&[
        "build",
        "--quiet",
        "--pull=never",
        "--format",
        "docker",
        "--build-context",
        &build_context,
        "--target",
        "runtime",
        "--tag",
        IMAGE,
        root().to_str().unwrap(),
    ]);
    Image
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Removes the container when the test ends, however it ends.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(&["rm", "--force", "--time", "0", &self.0]);
    }
}

async fn get_json(client: &reqwest::Client, url: &str) -> Option<Value> {
    client
        .get(url)
        .bearer_auth(ADMIN)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

#[tokio::test]
async fn the_image_serves_resolves_an_alert_as_non_root_in_data_and_stops_on_sigterm() {
    let image = build_image();
    let data: PathBuf = tempfile::tempdir().unwrap().keep();
    // As a volume's owner would be: the image's user.
    let chown = Command::new("chown")
        .arg(format!("{UID}:{UID}"))
        .arg(&data)
        .status()
        .unwrap();
    assert!(chown.success());
    let port = free_port();
    let volume = format!("{}:/data", data.display());
    let listen = format!("RUNBOOKD_LISTEN=127.0.0.1:{port}");
    let admin = format!("RUNBOOKD_ADMIN_TOKEN={ADMIN}");
    let id = podman_ok(&[
        "run",
        "--detach",
        "--volume",
        &volume,
        "--env",
        &listen,
        "--env",
        &admin,
        IMAGE,
        "serve",
        "--lab",
        "stale-nfs",
    ]);
    let container = Container(id);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();

    let health = common::eventually("/healthz to answer", Duration::from_secs(60), || async {
        get_json(&client, &format!("{base}/healthz")).await
    })
    .await;
    assert_eq!(health["status"], "ok");
    // The image's own health check (runbookd health, no curl in the image).
    podman_ok(&["healthcheck", "run", &container.0]);
    let ready = get_json(&client, &format!("{base}/readyz")).await.unwrap();
    assert_eq!(ready["remediation"]["enabled"], true, "{ready}");

    // Non-root: the service (PID 1) and the image's user.
    let status = podman_ok(&["exec", &container.0, "cat", "/proc/1/status"]);
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.split_whitespace().skip(1).all(|uid| uid == UID),
        "{uid_line}"
    );

    let answer: Value = client
        .post(format!("{base}/webhook/alertmanager"))
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
        .expect("the alert started a run");
    let run = common::eventually("the run to end", Duration::from_secs(120), || async {
        let detail = get_json(&client, &format!("{base}/api/v1/runs/{run_id}")).await?;
        let state = detail["run"]["state"].as_str()?.to_owned();
        (state == "resolved" || state == "escalated").then_some(detail)
    })
    .await;
    assert_eq!(run["run"]["state"], "resolved", "{run:#}");
    assert_eq!(run["run"]["outcome"]["cause"], "stale_nfs_handles");

    // Its data lives in /data: the database and the twin's files are in the volume.
    assert!(data.join("runbookd.db").is_file());
    assert!(data.join("lab/runbookd.toml").is_file());
    let owner =
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(data.join("runbookd.db")).unwrap());
    assert_eq!(owner.to_string(), UID);

    // SIGTERM (podman stop sends the image's STOPSIGNAL): a clean exit, well before the
    // 30 s after which podman would kill it.
    podman_ok(&["stop", "--time", "30", &container.0]);
    let exit = podman_ok(&["inspect", "--format", "{{.State.ExitCode}}", &container.0]);
    assert_eq!(exit, "0");
    let logs = podman(&["logs", &container.0]);
    let logs =
        String::from_utf8_lossy(&logs.stderr).to_string() + &String::from_utf8_lossy(&logs.stdout);
    assert!(logs.contains("\"stopped\""), "{logs}");
    drop(container);
    drop(image);
    let _ = std::fs::remove_dir_all(&data);
}
