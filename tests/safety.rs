//! Safety controls, persisted: cooldown, hourly budget, circuit breaker, the kill switch. Each
//! answer is audited with its reason.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use runbookd::config::DatabaseConfig;
use runbookd::store::Store;
use runbookd::store::runs::{Created, Ending, Lease, NewRun, RunError};
use runbookd::store::safety::{Blocked, Limits, Switch};
use serde_json::json;

/// The repository's playbook, as a run pins it.
static PLAYBOOK: std::sync::LazyLock<runbookd::playbook::PlaybookVersion> =
    std::sync::LazyLock::new(|| {
        runbookd::playbook::PlaybookVersion::of(include_str!("../playbooks/pbs-backup-stale.yaml"))
    });

const LEASE: Duration = Duration::from_secs(30);
const LIMITS: Limits = Limits {
    cooldown: Duration::from_secs(30 * 60),
    hourly_budget: 3,
    breaker_after: 3,
};

fn t(minutes: i64) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 26, 3, 0, 0).unwrap() + chrono::Duration::minutes(minutes)
}

async fn store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&DatabaseConfig {
        path: dir.path().join("s.db"),
        busy_timeout_ms: 5_000,
    })
    .await
    .unwrap();
    (store, dir)
}

/// A run for `target`, leased by a worker.
async fn running(store: &Store, target: &str, at: chrono::DateTime<Utc>) -> Lease {
    let run = NewRun {
        incident_id: None,
        playbook: "pbs-backup-stale",
        version: &PLAYBOOK,
        target,
        dry_run: false,
        actor: "engine",
        facts: serde_json::json!({}),
    };
    let Created::New(_) = store.create_run(run, at).await.unwrap() else {
        panic!("a run is active for {target}")
    };
    store
        .acquire_run("worker", LEASE, at)
        .await
        .unwrap()
        .unwrap()
        .0
}

#[tokio::test]
async fn a_second_restart_within_the_cooldown_is_blocked() {
    let (store, _dir) = store().await;
    let first = running(&store, "pbs", t(0)).await;
    assert_eq!(
        store
            .reserve_action(&first, "restart_pbs", "pbs", LIMITS, t(0))
            .await
            .unwrap(),
        Ok(())
    );
    store
        .finish_run(&first, Ending::Resolved, &json!({}), t(1))
        .await
        .unwrap();

    let second = running(&store, "pbs", t(10)).await;
    let verdict = store
        .reserve_action(&second, "restart_pbs", "pbs", LIMITS, t(10))
        .await
        .unwrap();
    assert!(
        matches!(verdict, Err(Blocked::Cooldown { .. })),
        "{verdict:?}"
    );
    assert_eq!(
        verdict.unwrap_err().to_string(),
        format!(
            "restart_pbs on pbs ran at {}; the cooldown lasts until {}",
            t(0),
            t(30)
        )
    );
    assert_eq!(
        store
            .reserve_action(&second, "restart_pbs", "pbs", LIMITS, t(31))
            .await
            .unwrap(),
        Ok(())
    );
    let trail: Vec<String> = store
        .run_timeline(second.run_id, 50)
        .await
        .unwrap()
        .into_iter()
        .map(|e| {
            format!(
                "{} {}",
                e.action,
                e.detail.0["reason"].as_str().unwrap_or_default()
            )
        })
        .collect();
    assert!(
        trail
            .iter()
            .any(|e| e.starts_with("control.blocked restart_pbs on pbs ran at")),
        "{trail:?}"
    );
    assert!(
        trail
            .iter()
            .any(|e| e == "control.allowed every safety control passed"),
        "{trail:?}"
    );
}

#[tokio::test]
async fn the_hourly_budget_stops_mutations_across_runs() {
    let (store, _dir) = store().await;
    for (i, target) in ["a", "b", "c"].iter().enumerate() {
        let lease = running(&store, target, t(i as i64)).await;
        assert_eq!(
            store
                .reserve_action(&lease, "restart", target, LIMITS, t(i as i64))
                .await
                .unwrap(),
            Ok(())
        );
    }
    let fourth = running(&store, "d", t(5)).await;
    assert_eq!(
        store
            .reserve_action(&fourth, "restart", "d", LIMITS, t(5))
            .await
            .unwrap(),
        Err(Blocked::Budget { used: 3, budget: 3 })
    );
    assert_eq!(
        store
            .reserve_action(&fourth, "restart", "d", LIMITS, t(61))
            .await
            .unwrap(),
        Ok(()),
        "the hour rolls on"
    );
}

#[tokio::test]
async fn the_breaker_trips_after_k_escalated_runs_in_a_day() {
    let (store, _dir) = store().await;
    for i in 0..3 {
        let lease = running(&store, "pbs", t(i * 60)).await;
        store
            .finish_run(
                &lease,
                Ending::Escalated,
                &json!({"cause": "unknown"}),
                t(i * 60 + 1),
            )
            .await
            .unwrap();
    }
    let lease = running(&store, "pbs", t(200)).await;
    let verdict = store
        .reserve_action(&lease, "restart_pbs", "pbs", LIMITS, t(200))
        .await
        .unwrap();
    assert_eq!(
        verdict,
        Err(Blocked::Breaker {
            target: "pbs".into(),
            failures: 3,
            limit: 3
        })
    );
    let other = running(&store, "other", t(200)).await;
    assert_eq!(
        store
            .reserve_action(&other, "restart_pbs", "other", LIMITS, t(200))
            .await
            .unwrap(),
        Ok(())
    );
    assert_eq!(
        store
            .reserve_action(&lease, "restart_pbs", "pbs", LIMITS, t(24 * 60 + 2))
            .await
            .unwrap(),
        Ok(()),
        "a day later it closes"
    );
}

#[tokio::test]
async fn pause_blocks_and_resume_allows_and_both_are_audited() {
    let (store, _dir) = store().await;
    let lease = running(&store, "pbs", t(0)).await;
    assert!(!store.switch(Switch::Paused).await.unwrap());
    store
        .set_switch(Switch::Paused, true, "alice", t(1))
        .await
        .unwrap();
    assert!(store.switch(Switch::Paused).await.unwrap());
    assert_eq!(
        store
            .reserve_action(&lease, "restart_pbs", "pbs", LIMITS, t(2))
            .await
            .unwrap(),
        Err(Blocked::Paused)
    );
    store
        .set_switch(Switch::Paused, false, "alice", t(3))
        .await
        .unwrap();
    assert_eq!(
        store
            .reserve_action(&lease, "restart_pbs", "pbs", LIMITS, t(4))
            .await
            .unwrap(),
        Ok(())
    );
    store
        .set_switch(Switch::DryRun, true, "bob", t(5))
        .await
        .unwrap();
    assert!(store.switch(Switch::DryRun).await.unwrap());
}

#[tokio::test]
async fn a_worker_without_its_lease_books_nothing() {
    let (store, _dir) = store().await;
    let lease = running(&store, "pbs", t(0)).await;
    store
        .cancel_run(lease.run_id, "alice", "stop", t(1))
        .await
        .unwrap();
    assert!(matches!(
        store
            .reserve_action(&lease, "restart_pbs", "pbs", LIMITS, t(2))
            .await,
        Err(RunError::LeaseLost { .. })
    ));
    let next = running(&store, "pbs", t(3)).await;
    assert_eq!(
        store
            .reserve_action(&next, "restart_pbs", "pbs", LIMITS, t(3))
            .await
            .unwrap(),
        Ok(()),
        "no cooldown from a booking that never happened"
    );
}
