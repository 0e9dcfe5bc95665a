//! Safety controls, persisted: cooldown, hourly budget, circuit breaker, the kill switch. Each
//! answer is audited with its reason. Refused and dry runs do not count toward the breaker; a
//! reset makes it count only later failures; dry and live runs never attach to each other; the
//! safety overview shows what the checks enforce.

use crate::common;

use std::time::Duration;

use chrono::{TimeZone, Utc};
use runbookd::store::Store;
use runbookd::store::audit::AuditDetail;
use runbookd::store::runs::{Created, Ending, Lease, NewRun, RunError};
use runbookd::store::safety::{Blocked, Limits, Reason, ResetError, Switch};
use serde_json::json;
use sqlx::ConnectOptions;

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

/// A new live run of pbs-backup-stale for `target`, as the engine creates it.
fn new_run(target: &str) -> NewRun<'_> {
    NewRun {
        incident_id: None,
        playbook: "pbs-backup-stale",
        version: &PLAYBOOK,
        target,
        dry_run: false,
        actor: "engine",
        facts: serde_json::json!({}),
    }
}

/// A run for `target`, leased by a worker.
async fn running(store: &Store, target: &str, at: chrono::DateTime<Utc>) -> Lease {
    let Created::New(_) = store.create_run(new_run(target), at).await.unwrap() else {
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
    let (store, _dir) = common::temp_store().await;
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
        .filter_map(|e| match e.detail {
            AuditDetail::ActionAllowed(verdict) | AuditDetail::ActionBlocked(verdict) => Some(
                format!("{} {}", e.action, verdict.reason.unwrap_or_default()),
            ),
            _ => None,
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
    let (store, _dir) = common::temp_store().await;
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
    let (store, _dir) = common::temp_store().await;
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

/// A pause holds runs that wait for a worker: the lease reads the switch in its own
/// transaction, so a worker that last saw runbookd running still takes nothing once it is
/// paused.
#[tokio::test]
async fn a_paused_store_leases_no_run_until_resumed() {
    let (store, _dir) = common::temp_store().await;
    store
        .set_switch(Switch::Paused, true, "alice", t(0))
        .await
        .unwrap();
    let Created::New(id) = store.create_run(new_run("pbs"), t(1)).await.unwrap() else {
        panic!("a new run")
    };
    assert!(
        store
            .acquire_run("worker", LEASE, t(2))
            .await
            .unwrap()
            .is_none(),
        "a paused store leased run {id}"
    );
    store
        .set_switch(Switch::Paused, false, "alice", t(3))
        .await
        .unwrap();
    let (lease, _) = store
        .acquire_run("worker", LEASE, t(4))
        .await
        .unwrap()
        .expect("resumed, the run is leased");
    assert_eq!(lease.run_id, id);
}

#[tokio::test]
async fn pause_blocks_and_resume_allows_and_both_are_audited() {
    let (store, _dir) = common::temp_store().await;
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
    let (store, _dir) = common::temp_store().await;
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

/// Every run of pbs-backup-stale for `target` ended `ending` at `at`, one after another.
async fn ended(store: &Store, target: &str, ending: Ending, count: i64, from: i64) {
    for i in 0..count {
        let lease = running(store, target, t(from + i)).await;
        store
            .finish_run(&lease, ending, &json!({"reason": "test"}), t(from + i))
            .await
            .unwrap();
    }
}

fn breaker<'a>(
    overview: &'a runbookd::store::safety::SafetyOverview,
    target: &str,
) -> &'a runbookd::store::safety::BreakerState {
    overview
        .breakers
        .iter()
        .find(|b| b.target == target)
        .unwrap_or_else(|| panic!("no breaker for {target}: {overview:?}"))
}

#[tokio::test]
async fn refused_and_dry_runs_do_not_count_toward_the_breaker() {
    let (store, _dir) = common::temp_store().await;
    ended(&store, "pbs", Ending::Refused, 10, 0).await;
    // Dry runs that escalate rehearsed nothing on the target either.
    for i in 0..3 {
        let run = NewRun {
            incident_id: None,
            playbook: "pbs-backup-stale",
            version: &PLAYBOOK,
            target: "pbs",
            dry_run: true,
            actor: "engine",
            facts: json!({}),
        };
        store.create_run(run, t(20 + i)).await.unwrap();
        let (lease, _) = store
            .acquire_run("w", LEASE, t(20 + i))
            .await
            .unwrap()
            .unwrap();
        store
            .finish_run(&lease, Ending::Escalated, &json!({}), t(20 + i))
            .await
            .unwrap();
    }
    let overview = store
        .safety_overview(&["pbs".to_owned()], LIMITS, t(30))
        .await
        .unwrap();
    let pbs = breaker(&overview, "pbs");
    assert!(!pbs.open && pbs.failures == 0, "{pbs:?}");
    let lease = running(&store, "pbs", t(31)).await;
    assert_eq!(
        store
            .reserve_action(&lease, "restart_pbs", "pbs", LIMITS, t(31))
            .await
            .unwrap(),
        Ok(()),
        "the next real run may act"
    );
    let refused = store.run(1).await.unwrap().unwrap();
    assert_eq!(refused.state.as_str(), "refused");
}

#[tokio::test]
async fn a_reset_makes_the_breaker_count_only_later_failures_and_is_audited() {
    let (store, dir) = common::temp_store().await;
    ended(&store, "pbs", Ending::Escalated, 3, 0).await;
    let overview = store.safety_overview(&[], LIMITS, t(10)).await.unwrap();
    let pbs = breaker(&overview, "pbs").clone();
    assert!(pbs.open, "{pbs:?}");
    assert_eq!((pbs.failures, pbs.limit, pbs.window_hours), (3, 3, 24));
    assert_eq!(
        pbs.closes_at,
        Some(t(24 * 60)),
        "when the oldest failure leaves the window"
    );

    // Nothing unknown or unexplained is written.
    let reason = Reason::parse("NFS fixed by hand; give automation another go").unwrap();
    assert!(matches!(
        store
            .reset_breaker("nas", &["pbs".to_owned()], "alice", &reason, t(11))
            .await,
        Err(ResetError::UnknownTarget { .. })
    ));
    assert!(Reason::parse("   ").is_err());
    assert!(Reason::parse(&"x".repeat(501)).is_err());
    assert!(Reason::parse("two\nlines").is_err());

    store
        .reset_breaker("pbs", &[], "alice", &reason, t(12))
        .await
        .unwrap();
    let overview = store.safety_overview(&[], LIMITS, t(13)).await.unwrap();
    let pbs = breaker(&overview, "pbs");
    assert!(
        !pbs.open && pbs.failures == 0 && pbs.closes_at.is_none(),
        "{pbs:?}"
    );
    let reset = pbs.last_reset.as_ref().unwrap();
    assert_eq!(
        (reset.by.as_str(), reset.reason.as_str(), reset.at),
        ("alice", reason.as_str(), t(12))
    );
    let lease = running(&store, "pbs", t(14)).await;
    assert_eq!(
        store
            .reserve_action(&lease, "restart_pbs", "pbs", LIMITS, t(14))
            .await
            .unwrap(),
        Ok(())
    );
    store
        .finish_run(&lease, Ending::Escalated, &json!({}), t(15))
        .await
        .unwrap();
    let overview = store.safety_overview(&[], LIMITS, t(16)).await.unwrap();
    assert_eq!(
        breaker(&overview, "pbs").failures,
        1,
        "only the failure after the reset"
    );

    let mut db = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.path().join("runbookd.db"))
        .connect()
        .await
        .unwrap();
    let audited: Vec<(String, String)> =
        sqlx::query_as("SELECT actor, detail FROM audit_events WHERE action = 'breaker.reset'")
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_eq!(audited.len(), 1, "{audited:?}");
    let detail: serde_json::Value = serde_json::from_str(&audited[0].1).unwrap();
    assert_eq!(audited[0].0, "alice");
    assert_eq!(
        detail,
        json!({"target": "pbs", "reason": reason.as_str(), "failures_before": 3})
    );
}

#[tokio::test]
async fn dry_and_live_runs_for_one_target_never_attach_to_each_other() {
    let (store, _dir) = common::temp_store().await;
    let request = |dry_run| NewRun {
        incident_id: None,
        playbook: "pbs-backup-stale",
        version: &PLAYBOOK,
        target: "pbs",
        dry_run,
        actor: "alice",
        facts: json!({}),
    };
    let Created::New(live) = store.create_run(request(false), t(0)).await.unwrap() else {
        panic!("a live run")
    };
    let Created::New(dry) = store.create_run(request(true), t(0)).await.unwrap() else {
        panic!("a dry run beside the live one")
    };
    assert_ne!(live, dry);
    assert_eq!(
        store.create_run(request(false), t(1)).await.unwrap(),
        Created::AlreadyActive(live)
    );
    assert_eq!(
        store.create_run(request(true), t(1)).await.unwrap(),
        Created::AlreadyActive(dry)
    );
    assert!(!store.run(live).await.unwrap().unwrap().dry_run);
    assert!(store.run(dry).await.unwrap().unwrap().dry_run);
}

#[tokio::test]
async fn the_global_dry_run_switch_is_read_when_a_run_is_created_and_never_again() {
    let (store, _dir) = common::temp_store().await;
    let live = running(&store, "live", t(0)).await;
    let reason = Reason::parse("rehearsal week").unwrap();
    store
        .set_switch_because(Switch::DryRun, true, "alice", &reason, t(1))
        .await
        .unwrap();
    assert!(
        !store.run(live.run_id).await.unwrap().unwrap().dry_run,
        "a run created live stays live"
    );
    let run = new_run("pbs");
    let Created::New(id) = store.create_run(run, t(2)).await.unwrap() else {
        panic!("a new run")
    };
    store
        .set_switch_because(Switch::DryRun, false, "alice", &reason, t(3))
        .await
        .unwrap();
    assert!(
        store.run(id).await.unwrap().unwrap().dry_run,
        "created while the switch was on: dry to its end"
    );
    let overview = store.safety_overview(&[], LIMITS, t(4)).await.unwrap();
    assert!(!overview.dry_run.on);
    assert_eq!(overview.dry_run.changed_by.as_deref(), Some("alice"));
    assert_eq!(overview.dry_run.reason.as_deref(), Some("rehearsal week"));
}

#[tokio::test]
async fn the_overview_shows_cooldowns_in_force_and_the_budget_used() {
    let (store, _dir) = common::temp_store().await;
    let lease = running(&store, "pbs", t(0)).await;
    store
        .reserve_action(&lease, "restart_pbs", "pbs", LIMITS, t(0))
        .await
        .unwrap()
        .unwrap();
    let overview = store.safety_overview(&[], LIMITS, t(5)).await.unwrap();
    assert_eq!(
        (overview.hourly_budget.used, overview.hourly_budget.limit),
        (1, 3)
    );
    assert_eq!(overview.cooldowns.len(), 1, "{overview:?}");
    let cooldown = &overview.cooldowns[0];
    assert_eq!(
        (
            cooldown.action.as_str(),
            cooldown.target.as_str(),
            cooldown.until
        ),
        ("restart_pbs", "pbs", t(30))
    );
    let later = store.safety_overview(&[], LIMITS, t(61)).await.unwrap();
    assert!(later.cooldowns.is_empty(), "{later:?}");
    assert_eq!(later.hourly_budget.used, 0, "the hour rolled on");
}
