//! Engine figures against the twin: the diagnosis wall time against its critical path with
//! 100 ms latency injected on every host (goal ≤ 1.2×: probes run in parallel), and the time
//! from an alert POST to the first probe reaching a host. `cargo bench --bench engine`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use runbookd::auth::{Role, Token, TokenTable};
use runbookd::clock::{Clock, SystemClock};
use runbookd::config::{Config, Notify, Overrides};
use runbookd::engine::diagnose::diagnose;
use runbookd::engine::dispatch::Dispatcher;
use runbookd::engine::estate::Estate;
use runbookd::engine::worker::Engine;
use runbookd::intake::Labels;
use runbookd::lab::RunningLab;
use runbookd::startup::Application;
use runbookd::store::safety::Limits;

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
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let wake = Arc::new(tokio::sync::Notify::new());
        let estate = Arc::new(Estate::connect(&inventory).unwrap());
        let dispatcher = Arc::new(Dispatcher::new(playbooks.clone(), wake.clone(), estate.clone()).expect("the playbooks' triggers compile"));
        let tokens = TokenTable::new(vec![Token::new("bench", Role::Ingest, "bench-ingest-secret-0123")]);
        let app = Application::build(&service, tokens, Notify::off(), clock.clone(), Some(dispatcher)).await.unwrap();
        let engine = Engine {
            store: app.store().clone(),
            estate,
            playbooks: Arc::new(playbooks),
            clock,
            owner: "bench".into(),
            lease_for: Duration::from_secs(30),
            limits: Limits { cooldown: Duration::ZERO, hourly_budget: 20, breaker_after: 3 },
            wake: wake.clone(),
        };
        let address = app.local_addr();
        tokio::spawn(app.run_until(std::future::pending()));
        tokio::spawn(engine.run_until(std::future::pending()));
        let body = include_str!("../tests/fixtures/reference/alertmanager-v4.json");
        let posted = chrono::Utc::now();
        let response = reqwest::Client::new()
            .post(format!("http://{address}/webhook/alertmanager"))
            .bearer_auth("bench-ingest-secret-0123")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let deadline = Instant::now() + Duration::from_secs(30);
        let first = loop {
            if let Some(at) = lab.lab.with_world(|w| w.received.first().map(|r| r.at)) {
                break at;
            }
            assert!(Instant::now() < deadline, "no probe reached a host");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        println!("  alert POST to first probe: {} ms", (first - posted).num_milliseconds());
    });
}
