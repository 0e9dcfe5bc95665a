//! Diagnosis of PBSBackupStale against the twin: each scenario gives the expected cause with
//! its evidence, and diagnosing changes nothing (the twin's log holds only reads).

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::twin::Twin;
use runbookd::config::{Config, Overrides};
use runbookd::engine::diagnose::{Diagnosis, diagnose};
use runbookd::engine::estate::Estate;
use runbookd::intake::Labels;
use runbookd::playbook;

fn alert_labels() -> Labels {
    let labels: BTreeMap<String, String> = [
        ("alertname", "PBSBackupStale"),
        ("datastore", "pbs-datastore"),
        ("backup_type", "vm"),
        ("backup_id", "451"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    Labels::parse(labels).unwrap()
}

async fn diagnosed(scenario: &str) -> (Diagnosis, Twin) {
    let twin = Twin::start(scenario).await;
    let config_path = twin.lab.write_files().unwrap();
    let (config, source) = Config::load(Some(&config_path), &Overrides::default()).unwrap();
    let mut inventory = config.resolve_inventory(&source, &|_| None).unwrap();
    if let Some(ssh) = &mut inventory.ssh {
        ssh.connect_timeout = Duration::from_secs(1);
    }
    let estate = Estate::connect(&inventory).unwrap();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/playbooks/pbs-backup-stale.yaml"
    ))
    .unwrap();
    let playbook = playbook::parse(std::path::Path::new("pbs-backup-stale.yaml"), &text).unwrap();
    let now = twin.lab.with_world(|w| w.now());
    let diagnosis = diagnose(&playbook, &estate, &alert_labels(), now)
        .await
        .unwrap();
    assert_read_only(&twin);
    (diagnosis, twin)
}

/// Diagnosis is read-only: nothing mutating reached the twin.
fn assert_read_only(twin: &Twin) {
    let received = twin.lab.with_world(|w| w.received.clone());
    for r in &received {
        let text = r.text.as_str();
        let mutating = text.starts_with("POST")
            || text.starts_with("PUT")
            || [
                "restart",
                "qm start",
                "mount /",
                "umount",
                "pvesm set",
                "vzdump ",
            ]
            .iter()
            .any(|m| text.contains(m));
        assert!(!mutating, "diagnosis sent a mutating request: {text}");
    }
}

#[tokio::test]
async fn healthy_has_nothing_stale() {
    let (d, _) = diagnosed("healthy").await;
    assert_eq!(d.cause.as_deref(), Some("nothing_stale"), "{d:#?}");
    assert_eq!(d.facts["pbs_services_active"], true);
    assert!(d.probes.iter().all(|p| p.ok), "{:#?}", d.probes);
}

#[tokio::test]
async fn stale_nfs_is_stale_handles_with_the_log_as_evidence() {
    for scenario in ["stale-nfs", "stale-nfs-estale"] {
        let (d, _) = diagnosed(scenario).await;
        assert_eq!(
            d.cause.as_deref(),
            Some("stale_nfs_handles"),
            "{scenario}: {d:#?}"
        );
        assert_eq!(
            d.evidence["log_classes"],
            serde_json::json!(["chunk_store"])
        );
        assert_eq!(d.facts["nfs_mounted"], true);
    }
}

#[tokio::test]
async fn nfs_unmounted_is_a_missing_mount_even_though_pbs_cannot_list_groups() {
    let (d, _) = diagnosed("nfs-unmounted").await;
    assert_eq!(d.cause.as_deref(), Some("nfs_mount_missing"), "{d:#?}");
    assert_eq!(d.facts["nfs_mounted"], false);
    assert!(
        d.facts["datastore_error"]
            .as_str()
            .unwrap()
            .contains("unable to open chunk store")
    );
    // The groups come from the alert when PBS cannot list them.
    assert_eq!(d.facts["stale_active"][0]["group"], "vm/451");
    assert_eq!(d.facts["stale_active"][0]["from_alert"], true);
}

#[tokio::test]
async fn cert_mismatch_compares_the_fingerprints() {
    let (d, twin) = diagnosed("cert-mismatch").await;
    assert_eq!(d.cause.as_deref(), Some("fingerprint_mismatch"), "{d:#?}");
    assert_eq!(
        d.evidence["pbs_fingerprint"],
        twin.lab.pbs_fingerprint.as_str()
    );
    assert_ne!(
        d.evidence["storage_fingerprint"],
        d.evidence["pbs_fingerprint"]
    );
}

#[tokio::test]
async fn pbs_down_and_pbs_vm_stopped() {
    let (d, _) = diagnosed("pbs-down").await;
    assert_eq!(d.cause.as_deref(), Some("pbs_services_down"), "{d:#?}");
    let (d, _) = diagnosed("pbs-vm-stopped").await;
    assert_eq!(d.cause.as_deref(), Some("pbs_unreachable"), "{d:#?}");
    assert_eq!(d.facts["pbs_vm_running"], false);
}

#[tokio::test]
async fn decommissioned_only_and_mixed() {
    let (d, _) = diagnosed("decommissioned-only").await;
    assert_eq!(d.cause.as_deref(), Some("decommissioned_only"), "{d:#?}");
    assert_eq!(
        d.report["stale_decommissioned"].as_array().unwrap().len(),
        8
    );
    let (d, _) = diagnosed("mixed").await;
    assert_eq!(
        d.cause.as_deref(),
        Some("stale_nfs_handles"),
        "the real cause wins: {d:#?}"
    );
    assert_eq!(
        d.report["stale_decommissioned"].as_array().unwrap().len(),
        8,
        "and the decommissioned groups are reported"
    );
}

#[tokio::test]
async fn job_disabled() {
    let (d, _) = diagnosed("job-disabled").await;
    assert_eq!(d.cause.as_deref(), Some("backup_job_disabled"), "{d:#?}");
    assert_eq!(d.evidence["backup_job_enabled"], 0);
}

#[tokio::test]
async fn hung_nfs_ends_within_its_probe_timeouts_as_unknown() {
    let (d, _) = diagnosed("hung-nfs").await;
    assert_eq!(
        d.cause, None,
        "no cause fits: escalate with every fact: {d:#?}"
    );
    assert_eq!(d.facts["nfs_mounted"], true);
    assert_eq!(d.facts["nfs_df_answers"], false, "df timed out on the host");
    assert!(d.wall_ms < 60_000, "{} ms", d.wall_ms);
}

#[tokio::test]
async fn a_label_that_is_not_a_vmid_is_refused_before_anything_runs() {
    let twin = Twin::start("healthy").await;
    let config_path = twin.lab.write_files().unwrap();
    let (config, source) = Config::load(Some(&config_path), &Overrides::default()).unwrap();
    let estate = Estate::connect(&config.resolve_inventory(&source, &|_| None).unwrap()).unwrap();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/playbooks/pbs-backup-stale.yaml"
    ))
    .unwrap();
    let playbook = playbook::parse(std::path::Path::new("p.yaml"), &text).unwrap();
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    labels.insert("backup_id".into(), "451; rm -rf /".into());
    let error = diagnose(
        &playbook,
        &estate,
        &Labels::parse(labels).unwrap(),
        chrono::Utc::now(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        error,
        "label 'backup_id': VMID '451; rm -rf /' is invalid: must be an integer"
    );
    assert!(twin.lab.with_world(|w| w.received.is_empty()));
}
