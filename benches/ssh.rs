//! SSH executor throughput against the twin, and the twin's memory.
//!
//! `cargo bench --bench ssh` prints commands/s over one reused connection, commands/s with a
//! new connection per command, and the idle RSS of `runbookd lab`. `RUNBOOKD_BENCH_COMMANDS`
//! changes the count (default 500; a fifth of that for new connections). Figures only.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use runbookd::clock::SystemClock;
use runbookd::exec::command::{Name, render};
use runbookd::exec::output::Redactor;
use runbookd::exec::ssh::{RemoteShell, SshSession};
use runbookd::lab::Lab;
use tokio::io::{AsyncBufReadExt, BufReader};

#[allow(dead_code)] // the bench uses only part of the test harness
#[path = "../tests/common/process.rs"]
mod process;
use process::rss_mib;

fn main() {
    let commands: usize = std::env::var("RUNBOOKD_BENCH_COMMANDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let lab = Lab::start(dir.path(), "healthy", Arc::new(SystemClock))
            .await
            .unwrap();
        let pbs = Name::parse("pbs").unwrap();
        let command = render(
            "systemctl is-active proxmox-backup proxmox-backup-proxy",
            &[],
        )
        .unwrap();
        let timeout = Duration::from_secs(10);

        let session = SshSession::new(lab.ssh_hosts(), lab.ssh_settings(), Redactor::default());
        session.run(&pbs, &command, timeout).await.unwrap();
        let started = Instant::now();
        for _ in 0..commands {
            session.run(&pbs, &command, timeout).await.unwrap();
        }
        let reused = commands as f64 / started.elapsed().as_secs_f64();

        let fresh_count = (commands / 5).max(1);
        let started = Instant::now();
        for _ in 0..fresh_count {
            let session = SshSession::new(lab.ssh_hosts(), lab.ssh_settings(), Redactor::default());
            session.run(&pbs, &command, timeout).await.unwrap();
        }
        let fresh = fresh_count as f64 / started.elapsed().as_secs_f64();

        println!("SSH executor against the twin (sequential, release build):");
        println!("  one reused connection:       {reused:>7.0} commands/s ({commands} commands)");
        println!(
            "  a new connection per command: {fresh:>6.0} commands/s ({fresh_count} commands)"
        );

        let lab_dir = tempfile::tempdir().unwrap();
        let mut twin = tokio::process::Command::new(env!("CARGO_BIN_EXE_runbookd"))
            .args(["lab", "--scenario", "healthy", "--dir"])
            .arg(lab_dir.path())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(twin.stdout.take().unwrap()).lines();
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.starts_with("lab ready") {
                break;
            }
        }
        // Let start-up settle before reading the idle figure.
        tokio::time::sleep(Duration::from_millis(500)).await;
        println!(
            "  runbookd lab idle RSS:        {:>6.1} MiB",
            rss_mib(twin.id().unwrap())
        );
        twin.kill().await.unwrap();
    });
}
