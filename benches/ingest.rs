//! Intake throughput, latency and memory of the release binary, measured over loopback HTTP.
//! Intake commits in groups (one transaction per batch of waiting deliveries), so the rate
//! grows with the number of concurrent clients; `scripts/bench-peer.sh` compares it with a peer.
//!
//! `cargo bench --bench ingest` prints unique-alert ingest/s, duplicate ingest/s, p50 and p99
//! latency, and idle RSS. `RUNBOOKD_BENCH_REQUESTS` and `RUNBOOKD_BENCH_CONCURRENCY` change the
//! load (defaults 5000 and 32). Figures, not assertions: nothing here fails on a slow machine.

#[allow(dead_code)] // the bench uses only part of the test harness
#[path = "../tests/common/process.rs"]
mod process;

use std::sync::Arc;
use std::time::{Duration, Instant};

use process::{ServiceProcess, rss_mib};
use serde_json::json;
use tokio::sync::Semaphore;

const TOKEN: &str = "bench-admin-secret-0123456789";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Figures {
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

/// Sends `bodies` with at most `concurrency` in flight; every one must be accepted.
async fn load(address: &str, bodies: Vec<String>, concurrency: usize) -> Figures {
    let client = reqwest::Client::new();
    let gate = Arc::new(Semaphore::new(concurrency));
    let started = Instant::now();
    let tasks: Vec<_> = bodies
        .into_iter()
        .map(|body| {
            let client = client.clone();
            let gate = gate.clone();
            let url = format!("{address}/ingest");
            tokio::spawn(async move {
                let _permit = gate.acquire_owned().await.unwrap();
                let sent = Instant::now();
                let response = client
                    .post(url)
                    .bearer_auth(TOKEN)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .expect("the request completes");
                assert_eq!(response.status(), 202);
                response.bytes().await.unwrap();
                sent.elapsed()
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(tasks.len());
    for task in tasks {
        latencies.push(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Figures {
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
    }
}

fn print(label: &str, requests: usize, figures: &Figures) {
    println!(
        "{label:<17} {requests} posts: {:>7.0} alerts/s   p50 {:>6.2} ms   p99 {:>6.2} ms",
        figures.per_second,
        figures.p50.as_secs_f64() * 1e3,
        figures.p99.as_secs_f64() * 1e3,
    );
}

fn main() {
    let requests = env_or("RUNBOOKD_BENCH_REQUESTS", 5000);
    let concurrency = env_or("RUNBOOKD_BENCH_CONCURRENCY", 32);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let service =
            ServiceProcess::start(&dir.path().join("bench.db"), &[("RUNBOOKD_ADMIN_TOKEN", TOKEN)])
                .await;
        let pid = service.pid();
        // Let start-up allocations settle before reading the idle figure.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let idle_rss = rss_mib(pid);

        let unique = (0..requests)
            .map(|i| {
                json!({
                    "alert_name": "PBSBackupStale",
                    "severity": "warning",
                    "fingerprint": format!("bench-{i}"),
                    "labels": {"datastore": "pbs-datastore", "backup_type": "vm", "backup_id": i.to_string()},
                })
                .to_string()
            })
            .collect();
        let duplicate = json!({
            "alert_name": "PBSBackupStale",
            "severity": "warning",
            "fingerprint": "bench-duplicate",
            "labels": {"datastore": "pbs-datastore", "backup_type": "vm", "backup_id": "451"},
        })
        .to_string();

        println!(
            "runbookd intake benchmark: release binary, SQLite WAL, group commit (fsynced before the answer), {concurrency} concurrent clients over loopback"
        );
        let figures = load(&service.address, unique, concurrency).await;
        print("unique alerts", requests, &figures);
        let figures = load(&service.address, vec![duplicate; requests], concurrency).await;
        print("duplicate alerts", requests, &figures);
        println!(
            "RSS: idle {idle_rss:.1} MiB, after load {:.1} MiB",
            rss_mib(pid)
        );
        assert!(service.terminate().await.success());
    });
}
