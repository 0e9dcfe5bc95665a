//! The human and agent surfaces of the release binary on the cert-mismatch twin, over loopback:
//! `POST /api/call` and `/mcp` (list_incidents over 200 incidents), `diagnose` (one at a time,
//! by design), the web page's home with a signed-in cookie, `/openapi.json`; and RSS.
//!
//! `cargo bench --bench tools`. `RUNBOOKD_BENCH_REQUESTS` and `RUNBOOKD_BENCH_CONCURRENCY`
//! change the load (defaults 2000 and 16). Figures, not assertions.

#[allow(dead_code)] // the bench uses only part of the test harness
#[path = "../tests/common/process.rs"]
mod process;

use std::sync::Arc;
use std::time::{Duration, Instant};

use process::{ServiceProcess, rss_mib};
use serde_json::json;
use tokio::sync::Semaphore;

const ADMIN: &str = "bench-admin-secret-0123456789abcdef";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One kind of request, built fresh for each send.
type Request = Arc<dyn Fn(&reqwest::Client) -> reqwest::RequestBuilder + Send + Sync>;

/// Sends `count` requests with at most `concurrency` in flight; each must answer 200.
async fn load(label: &'static str, request: Request, count: usize, concurrency: usize) {
    // A redirect (to /login, say) is a failure here, not something to follow.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let gate = Arc::new(Semaphore::new(concurrency));
    let started = Instant::now();
    let tasks: Vec<_> = (0..count)
        .map(|_| {
            let (client, gate, request) = (client.clone(), gate.clone(), request.clone());
            tokio::spawn(async move {
                let _permit = gate.acquire_owned().await.unwrap();
                let sent = Instant::now();
                let response = request(&client)
                    .send()
                    .await
                    .expect("the request completes");
                assert_eq!(response.status(), 200, "{label}");
                response.bytes().await.unwrap();
                sent.elapsed()
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(count);
    for task in tasks {
        latencies.push(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "{label:<34} {count:>5} × c{concurrency:<3} {:>7.0}/s   p50 {:>7.2} ms   p99 {:>7.2} ms",
        count as f64 / elapsed.as_secs_f64(),
        at(0.50).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
    );
}

fn main() {
    let requests = env_or("RUNBOOKD_BENCH_REQUESTS", 2000);
    let concurrency = env_or("RUNBOOKD_BENCH_CONCURRENCY", 16);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let playbooks = concat!(env!("CARGO_MANIFEST_DIR"), "/playbooks");
        let service = ServiceProcess::start_with(
            &dir.path().join("data/bench.db"),
            &[("RUNBOOKD_ADMIN_TOKEN", ADMIN)],
            &["--lab", "cert-mismatch", "--playbooks", playbooks],
        )
        .await;
        let pid = service.pid();
        let base = service.address.clone();
        let client = reqwest::Client::new();
        // 200 incidents for the lists to read (their runs attach to the one active run).
        for i in 0..200 {
            let body = json!({
                "alert_name": "PBSBackupStale", "severity": "warning",
                "fingerprint": format!("bench-{i}"),
                "labels": {"datastore": "pbs-datastore", "backup_type": "vm", "backup_id": "451"},
            });
            let response = client
                .post(format!("{base}/ingest"))
                .bearer_auth(ADMIN)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 202);
        }
        // Let the run reach its approval, then read the resting figure.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rested = rss_mib(pid);

        println!(
            "runbookd tools and page benchmark: release binary, cert-mismatch twin, 200 incidents, loopback"
        );
        let url = format!("{base}/api/call");
        load(
            "/api/call list_incidents (20)",
            Arc::new(move |c| {
                c.post(&url)
                    .bearer_auth(ADMIN)
                    .json(&json!({"tool": "list_incidents", "arguments": {"limit": 20}}))
            }),
            requests,
            concurrency,
        )
        .await;
        let url = format!("{base}/mcp");
        load(
            "/mcp tools/call list_incidents (20)",
            Arc::new(move |c| {
                c.post(&url)
                    .bearer_auth(ADMIN)
                    .header("accept", "application/json, text/event-stream")
                    .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                        "params": {"name": "list_incidents", "arguments": {"limit": 20}}}))
            }),
            requests,
            concurrency,
        )
        .await;
        let url = format!("{base}/mcp");
        load(
            "/mcp tools/list",
            Arc::new(move |c| {
                c.post(&url)
                    .bearer_auth(ADMIN)
                    .header("accept", "application/json, text/event-stream")
                    .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}))
            }),
            requests,
            concurrency,
        )
        .await;
        let url = format!("{base}/api/call");
        load(
            "/api/call diagnose (one at a time)",
            Arc::new(move |c| {
                c.post(&url)
                    .bearer_auth(ADMIN)
                    .json(&json!({"tool": "diagnose", "arguments": {}}))
            }),
            (requests / 100).max(10),
            4,
        )
        .await;
        // The page keeps the token hex-encoded in its session cookie.
        let cookie = format!("runbookd_session={}", hex::encode(ADMIN));
        let url = format!("{base}/");
        load(
            "GET / (web page, signed in)",
            Arc::new(move |c| c.get(&url).header("cookie", &cookie)),
            requests,
            concurrency,
        )
        .await;
        let url = format!("{base}/openapi.json");
        load(
            "GET /openapi.json",
            Arc::new(move |c| c.get(&url)),
            requests,
            concurrency,
        )
        .await;
        println!(
            "RSS: after start-up and 200 intakes {rested:.1} MiB, after the load {:.1} MiB",
            rss_mib(pid)
        );
        assert!(service.terminate().await.success());
    });
}
