//! Engine figures against the twin: the diagnosis wall time against its critical path with
//! 100 ms latency injected on every host (goal ≤ 1.2×: probes run in parallel), the time
//! from an alert POST to the first probe reaching a host, and the time from an approval
//! decision to the approved step's `started` row (p50/p99, goal < 50 ms: a decision wakes the
//! worker). `cargo bench --bench engine`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use runbookd::auth::{Role, Token, TokenSecret, TokenTable};
use runbookd::clock::{Clock, SystemClock};
use runbookd::config::{Config, Notify, Overrides};
use runbookd::engine::diagnose::diagnose;
use runbookd::engine::estate::Estate;
use runbookd::intake::Labels;
use runbookd::lab::RunningLab;
use runbookd::startup::{Application, EngineParts};
use runbookd::store::approvals::ApprovalStatus;

const LATENCY: Duration = Duration::from_millis(100);
const ROUNDS: usize = 5;

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let lab = RunningLab::launch(&dir.path().join("lab"), "stale-nfs").await.unwrap();
        lab.lab.with_world(|w| {
            for host in ["ruapehu", "pihanga", "hikurangi", "pbs"] {
                w.latency.insert(host.to_owned(), LATENCY);
            }
        });
        let (config, source) = Config::load(Some(&lab.config), &Overrides::default()).unwrap();
        let inventory = config.resolve_inventory(&source, &|_| None).unwrap();
        let playbooks: Vec<_> = runbookd::playbook::load_dir(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/playbooks")))
            .unwrap()
            .into_iter()
            .map(|f| f.playbook)
            .collect();
        let playbook = &playbooks[0];
        let labels = Labels::parse([("backup_type", "vm"), ("backup_id", "451"), ("datastore", "pbs-datastore")].into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect()).unwrap();

        println!("runbookd engine benchmark: the twin with {} ms latency on every host, release build", LATENCY.as_millis());
        let mut ratios = Vec::new();
        for round in 0..ROUNDS {
            // A fresh estate each round: the first includes connecting to every host.
            let estate = Estate::connect(&inventory).unwrap();
            let started = Instant::now();
            let diagnosis = diagnose(playbook, &estate, &labels, SystemClock.now()).await.unwrap();
            let wall = started.elapsed();
            // The critical path: the slowest probe of each wave, waves in dependency order.
            let mut critical = 0u64;
            let mut waves: Vec<Vec<&str>> = Vec::new();
            let mut placed: Vec<&str> = Vec::new();
            let mut remaining: Vec<_> = playbook.diagnose.iter().collect();
            while !remaining.is_empty() {
                let (ready, rest): (Vec<_>, Vec<_>) = remaining.into_iter().partition(|p| p.after.iter().all(|a| placed.contains(&a.as_str())));
                waves.push(ready.iter().map(|p| p.id.as_str()).collect());
                placed.extend(ready.iter().map(|p| p.id.as_str()));
                remaining = rest;
            }
            for wave in &waves {
                critical += diagnosis.probes.iter().filter(|p| wave.contains(&p.id.as_str())).map(|p| p.duration_ms).max().unwrap_or(0);
            }
            let ratio = wall.as_millis() as f64 / critical.max(1) as f64;
            ratios.push(ratio);
            println!(
                "  diagnosis {round}: wall {:>5} ms, critical path {:>5} ms ({} probes in {} waves), ratio {:.2}, cause {}",
                wall.as_millis(),
                critical,
                diagnosis.probes.len(),
                waves.len(),
                ratio,
                diagnosis.cause.unwrap_or_default()
            );
        }
        ratios.sort_by(f64::total_cmp);
        println!("  median ratio {:.2} (goal ≤ 1.20)", ratios[ratios.len() / 2]);

        // From an alert POST to the first probe reaching a host.
        lab.lab.with_world(|w| w.received.clear());
        let mut service = Config { listen: "127.0.0.1:0".parse().unwrap(), ..Config::default() };
        service.database.path = dir.path().join("bench.db");
        // Every decision round books a mutating action: the budget must not be what is measured.
        service.engine.hourly_budget = 10_000;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let engine = EngineParts {
            playbooks: runbookd::playbook::load_dir(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/playbooks"))).unwrap(),
            estate: Arc::new(Estate::connect(&inventory).unwrap()),
        };
        let tokens = TokenTable::new(vec![Token::new("bench", Role::Admin, &TokenSecret::parse(ADMIN).unwrap())]);
        let app = Application::build(&service, tokens, Notify::off(), clock.clone(), Some(engine)).await.unwrap();
        let store = app.store().clone();
        let address = app.local_addr();
        tokio::spawn(app.run_until(std::future::pending()));
        let client = reqwest::Client::new();
        let body = include_str!("../tests/fixtures/reference/alertmanager-v4.json");
        let posted = chrono::Utc::now();
        let response = client
            .post(format!("http://{address}/webhook/alertmanager"))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let alert_run = response.json::<serde_json::Value>().await.unwrap()["incidents"][0]["run_id"].as_i64().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let first = loop {
            if let Some(at) = lab.lab.with_world(|w| w.received.first().map(|r| r.at)) {
                break at;
            }
            assert!(Instant::now() < deadline, "no probe reached a host");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        println!("  alert POST to first probe: {} ms", (first - posted).num_milliseconds());
        // Its remediation and verification are not measured here.
        client.post(format!("http://{address}/api/v1/runs/{alert_run}/cancel")).bearer_auth(ADMIN).send().await.unwrap();
        until_final(&store, alert_run).await;

        // From an approval decision (the API call) to the approved step's `started` row, with
        // no latency injected: the engine's own reaction. Both times come from the one clock.
        lab.lab.with_world(|w| w.latency.clear());
        let mut latencies = Vec::new();
        for _ in 0..DECISIONS {
            lab.lab.with_world(|w| w.load("nfs-unmounted")).unwrap();
            let started = client
                .post(format!("http://{address}/api/v1/runs"))
                .bearer_auth(ADMIN)
                .json(&serde_json::json!({"playbook": "pbs-backup-stale", "labels": {"backup_type": "vm", "backup_id": "451", "datastore": "pbs-datastore"}}))
                .send()
                .await
                .unwrap();
            assert!(started.status().is_success(), "{:?}", started.text().await);
            let run_id = started.json::<serde_json::Value>().await.unwrap()["run_id"].as_i64().unwrap();
            let approval = poll("an approval", || async {
                let pending = store.approvals(Some(ApprovalStatus::Pending), 10).await.unwrap();
                pending.into_iter().find(|a| a.run_id == run_id)
            })
            .await;
            let decided = client
                .post(format!("http://{address}/api/v1/approvals/{}/approve", approval.id))
                .bearer_auth(ADMIN)
                .send()
                .await
                .unwrap();
            assert_eq!(decided.status(), 200);
            let step = poll("the approved step", || async {
                let run = store.run(run_id).await.unwrap().unwrap();
                assert!(!run.state.is_final(), "run {run_id} ended before its approved step: {:?}", run.outcome);
                let attempts = store.step_attempts(run_id).await.unwrap();
                attempts.into_iter().find(|a| a.step == approval.step)
            })
            .await;
            let decided_at = store.approval(approval.id).await.unwrap().unwrap().decided_at.unwrap();
            latencies.push((step.started_at - decided_at).num_microseconds().unwrap() as f64 / 1000.0);
            let cancelled = client
                .post(format!("http://{address}/api/v1/runs/{run_id}/cancel"))
                .bearer_auth(ADMIN)
                .send()
                .await
                .unwrap();
            assert!(cancelled.status().is_success() || cancelled.status() == 409);
            until_final(&store, run_id).await;
        }
        latencies.sort_by(f64::total_cmp);
        let at = |q: f64| latencies[((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1];
        println!(
            "  approval decision to the approved step started, {} runs: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (goal < 50 ms)",
            latencies.len(),
            at(0.50),
            at(0.99),
            latencies[latencies.len() - 1]
        );
    });
}

const ADMIN: &str = "bench-admin-secret-0123456789abcdef";
/// Runs whose approval is decided, for the decision figures.
const DECISIONS: usize = 30;

/// Polls `check` every millisecond until it answers, for at most 30 s.
async fn poll<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Waits until the run has ended.
async fn until_final(store: &runbookd::store::Store, run_id: i64) {
    poll(&format!("run {run_id} to end"), || async {
        store
            .run(run_id)
            .await
            .unwrap()
            .filter(|r| r.state.is_final())
    })
    .await;
}
