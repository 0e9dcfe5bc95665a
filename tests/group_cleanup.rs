//! The offered cleanup of decommissioned groups deletes from the datastore the diagnosis read
//! them from, and its approval names that datastore and the concrete groups.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::twin::Twin;
use runbookd::config::{Config, DatabaseConfig, Overrides};
use runbookd::engine::diagnose::diagnose;
use runbookd::engine::estate::Estate;
use runbookd::engine::step::{StepContext, StepOutcome, run_step};
use runbookd::intake::Labels;
use runbookd::playbook;
use runbookd::store::Store;
use runbookd::store::approvals::Decision;
use runbookd::store::safety::Limits;

const STEP: &str = "forget_decommissioned_groups";

fn playbook_text() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/playbooks/pbs-backup-stale.yaml"
    ))
    .unwrap()
}

/// `type/id` of every group in `store` (the main one, or another).
fn groups_in(twin: &Twin, store: &str) -> Vec<String> {
    twin.lab.with_world(|w| {
        let groups = if store == "pbs-datastore" {
            &w.groups
        } else {
            &w.other_datastores[store]
        };
        groups
            .iter()
            .map(|g| format!("{}/{}", g.kind.backup_type(), g.vmid))
            .collect()
    })
}

#[tokio::test]
async fn the_cleanup_deletes_from_the_alerts_datastore_and_its_approval_says_so() {
    let twin = Twin::start("decommissioned-only").await;
    // A second datastore holding the same groups; the alert is about that one.
    twin.lab.with_world(|w| {
        let copy = w.groups.clone();
        w.other_datastores.insert("archive".to_owned(), copy);
    });
    let main_before = groups_in(&twin, "pbs-datastore");
    assert!(main_before.contains(&"vm/330".to_owned()));

    let path = twin.lab.write_files().unwrap();
    let (config, source) = Config::load(Some(&path), &Overrides::default()).unwrap();
    let inventory = config.resolve_inventory(&source, &|_| None).unwrap();
    assert_eq!(
        inventory.pbs.as_ref().unwrap().datastore.as_str(),
        "pbs-datastore"
    );
    let estate = Estate::connect(&inventory).unwrap();
    let playbook = playbook::parse(Path::new("p.yaml"), &playbook_text()).unwrap();
    let labels: BTreeMap<String, String> = [("datastore", "archive")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let labels = Labels::parse(labels).unwrap();
    let now = twin.lab.with_world(|w| w.now());
    let diagnosis = diagnose(&playbook, &estate, &labels, now).await.unwrap();
    assert_eq!(diagnosis.cause.as_deref(), Some("decommissioned_only"));
    assert_eq!(diagnosis.facts["stale_datastore"], "archive");
    let decommissioned: Vec<String> = diagnosis.facts["stale_decommissioned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap().to_owned())
        .collect();
    assert!(
        decommissioned.contains(&"vm/330".to_owned()),
        "{decommissioned:?}"
    );

    let db = tempfile::tempdir().unwrap();
    let store = Store::open(&DatabaseConfig {
        path: db.path().join("c.db"),
        busy_timeout_ms: 5_000,
    })
    .await
    .unwrap();
    let lease = common::leased_run(&store, None, "pbs", now).await;
    let parameters = BTreeMap::new();
    let step = |lease, approved| StepContext {
        store: &store,
        lease,
        estate: &estate,
        playbook: &playbook,
        parameters: &parameters,
        facts: &diagnosis.facts,
        clock: twin.clock.as_ref(),
        dry_run: false,
        limits: Limits {
            cooldown: Duration::ZERO,
            hourly_budget: 10,
            breaker_after: 3,
        },
        approved,
        sequence: None,
    };

    // The approval card (page, CLI and notification render these actions) is concrete.
    let asked = run_step(&step(&lease, false), STEP, &playbook.steps[STEP])
        .await
        .unwrap();
    let StepOutcome::NeedsApproval(approval_id) = asked else {
        panic!("the cleanup always asks first: {asked:?}");
    };
    let approval = store
        .approvals_for_run(lease.run_id)
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.id == approval_id)
        .unwrap();
    let wanted = format!(
        "forget PBS groups {} in datastore archive (from fact stale_decommissioned)",
        decommissioned.join(", ")
    );
    assert_eq!(approval.command, wanted);
    let actions = approval.actions.unwrap().0;
    assert_eq!(actions[0].command, wanted);
    assert!(!approval.command.contains('{'), "{}", approval.command);
    assert_eq!(
        groups_in(&twin, "archive"),
        main_before,
        "asking deletes nothing"
    );

    // Approved: gone from the datastore it read, untouched in the inventory's.
    store
        .decide(approval_id, Decision::Approve, "alice", None, now)
        .await
        .unwrap();
    let (resumed, _) = store
        .acquire_run("worker", Duration::from_secs(60), now)
        .await
        .unwrap()
        .expect("the approved run is free to lease");
    let done = run_step(&step(&resumed, true), STEP, &playbook.steps[STEP])
        .await
        .unwrap();
    assert_eq!(done, StepOutcome::Done);
    let archive_after = groups_in(&twin, "archive");
    for group in &decommissioned {
        assert!(
            !archive_after.contains(group),
            "{group} is still in archive"
        );
    }
    assert_eq!(
        archive_after.len(),
        main_before.len() - decommissioned.len()
    );
    assert_eq!(groups_in(&twin, "pbs-datastore"), main_before);
    let deletes: Vec<String> = twin.lab.with_world(|w| {
        w.received
            .iter()
            .filter(|r| r.text.starts_with("DELETE"))
            .map(|r| r.text.clone())
            .collect()
    });
    assert_eq!(deletes.len(), decommissioned.len());
    assert!(
        deletes
            .iter()
            .all(|d| d.starts_with("DELETE /api2/json/admin/datastore/archive/groups?")),
        "{deletes:?}"
    );
}

#[test]
fn a_cleanup_without_its_datastore_is_refused_at_load() {
    let text = playbook_text().replace("datastore: \"{facts.stale_datastore}\", ", "");
    assert!(!text.contains("stale_datastore}\""));
    let problems = format!(
        "{:?}",
        playbook::parse(Path::new("p.yaml"), &text).unwrap_err()
    );
    assert!(problems.contains("datastore"), "{problems}");
}
