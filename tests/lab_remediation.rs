//! Acceptance 2 of the twin: remediations change the world. Each test shows the state before,
//! the action, the state after, and the twin's command log.

use crate::common;

use std::time::Duration;

use common::twin::{Twin, name};
use runbookd::exec::command::{CertFingerprint, Value, Vmid};
use runbookd::exec::pbs::PbsApi;
use runbookd::exec::pve::{PveApi, VzdumpStart};
use runbookd::lab::world::Nfs;

const RESTART: &str = "systemctl restart proxmox-backup proxmox-backup-proxy";

fn vmid(id: u32) -> Vmid {
    Vmid::new(id).unwrap()
}

/// Backs up VM 451 on ruapehu through the PVE API, lets the task finish on the twin's clock,
/// and returns its exit status.
async fn backup_451(twin: &Twin) -> String {
    let node = name("ruapehu");
    let VzdumpStart::Task(upid) = twin
        .pve
        .vzdump(&node, &[vmid(451)], &name("pbs-pihanga"))
        .await
        .unwrap()
    else {
        panic!("VM 451 is on ruapehu");
    };
    let running = twin.pve.task_status(&node, &upid).await.unwrap();
    assert!(
        running.is_running(),
        "the task takes its simulated time: {running:?}"
    );
    twin.clock.advance(chrono::Duration::seconds(3));
    let done = twin.pve.task_status(&node, &upid).await.unwrap();
    assert!(!done.is_running());
    done.exitstatus.unwrap()
}

async fn age_hours(twin: &Twin, group: &str) -> i64 {
    let now = twin.lab.with_world(|w| w.now().timestamp());
    let groups = twin.pbs.groups(&name("pbs-datastore")).await.unwrap();
    let g = groups
        .iter()
        .find(|g| format!("{}/{}", g.backup_type, g.backup_id) == group)
        .unwrap();
    (now - g.last_backup) / 3600
}

async fn log_451(twin: &Twin) -> String {
    twin.run(
        "ruapehu",
        "cat /var/log/vzdump/qemu-{vmid}.log",
        &[("vmid", Value::Vmid(vmid(451)))],
    )
    .await
    .unwrap()
    .stdout
}

#[tokio::test]
async fn restart_clears_stale_handles_and_backups_work_again() {
    let twin = Twin::start("stale-nfs").await;
    assert_eq!(backup_451(&twin).await, "job errors");
    assert!(
        age_hours(&twin, "vm/451").await >= 48,
        "a failed backup leaves the group stale"
    );
    assert!(log_451(&twin).await.contains("unable to open chunk store"));

    let restart = twin.sh("pbs", RESTART).await;
    assert_eq!(restart.exit_status, 0);

    assert_eq!(backup_451(&twin).await, "OK");
    assert_eq!(age_hours(&twin, "vm/451").await, 0);
    let log = log_451(&twin).await;
    assert!(
        log.contains("INFO: Finished Backup of VM 451") && !log.contains("ERROR"),
        "{log}"
    );
    let restarts: Vec<String> = twin
        .ssh_log()
        .into_iter()
        .filter(|l| l.contains("systemctl restart"))
        .collect();
    assert_eq!(restarts, [format!("pbs timeout -k 5 5 {RESTART}")]);
}

#[tokio::test]
async fn a_restart_alone_does_not_fix_an_unmounted_store_but_a_remount_then_restart_does() {
    let twin = Twin::start("nfs-unmounted").await;
    twin.sh("pbs", RESTART).await;
    assert_eq!(
        backup_451(&twin).await,
        "job errors",
        "restart without NFS fixes nothing"
    );
    assert_eq!(twin.lab.with_world(|w| w.nfs), Nfs::Unmounted);

    let lazy = twin.sh("pbs", "umount -l /mnt/pbs-datastore").await;
    assert_eq!(
        (lazy.exit_status, lazy.stderr.as_str()),
        (32, "umount: /mnt/pbs-datastore: not mounted.\n")
    );
    let mount = twin.sh("pbs", "mount /mnt/pbs-datastore").await;
    assert_eq!(mount.exit_status, 0);
    assert_eq!(
        twin.sh("pbs", "findmnt -n -o SOURCE /mnt/pbs-datastore")
            .await
            .stdout,
        "truenas-hdd:/mnt/Taupo/pbs\n"
    );
    assert!(twin.pbs.datastore_usage().await.unwrap()[0].error.is_none());
    assert_eq!(
        backup_451(&twin).await,
        "job errors",
        "PBS still holds the old handles"
    );

    twin.sh("pbs", RESTART).await;
    assert_eq!(backup_451(&twin).await, "OK");
    let log: Vec<String> = twin
        .ssh_log()
        .into_iter()
        .filter(|l| l.starts_with("pbs "))
        .collect();
    assert_eq!(
        log,
        [
            format!("pbs timeout -k 5 5 {RESTART}"),
            "pbs timeout -k 5 5 umount -l /mnt/pbs-datastore".to_owned(),
            "pbs timeout -k 5 5 mount /mnt/pbs-datastore".to_owned(),
            "pbs timeout -k 5 5 findmnt -n -o SOURCE /mnt/pbs-datastore".to_owned(),
            format!("pbs timeout -k 5 5 {RESTART}"),
        ]
    );
}

#[tokio::test]
async fn setting_the_fingerprint_fixes_the_mismatch_over_the_api_and_over_ssh() {
    let twin = Twin::start("cert-mismatch").await;
    assert_eq!(backup_451(&twin).await, "job errors");
    let actual = twin.lab.pbs_fingerprint.clone();
    twin.pve
        .set_storage_fingerprint(&name("pbs-pihanga"), &actual)
        .await
        .unwrap();
    let storage = twin.pve.storage(&name("pbs-pihanga")).await.unwrap();
    assert!(
        storage
            .fingerprint
            .unwrap()
            .eq_ignore_ascii_case(actual.as_str())
    );
    assert_eq!(backup_451(&twin).await, "OK");
    let api_log = twin.lab.with_world(|w| {
        w.received
            .iter()
            .filter(|r| r.text.starts_with("PUT"))
            .map(|r| r.text.clone())
            .collect::<Vec<_>>()
    });
    assert_eq!(api_log, ["PUT /api2/json/storage/pbs-pihanga"]);

    // The same fix by `pvesm set` over SSH, from a fresh mismatch.
    twin.lab.with_world(|w| w.load("cert-mismatch")).unwrap();
    let set = twin
        .run(
            "pihanga",
            "pvesm set {storage} --fingerprint {fingerprint}",
            &[
                ("storage", Value::Name(name("pbs-pihanga"))),
                (
                    "fingerprint",
                    Value::Fingerprint(CertFingerprint::parse(actual.as_str()).unwrap()),
                ),
            ],
        )
        .await
        .unwrap();
    assert_eq!(set.exit_status, 0);
    let cfg = twin
        .sh("ruapehu", "grep fingerprint /etc/pve/storage.cfg")
        .await;
    assert!(
        cfg.stdout
            .trim()
            .ends_with(&actual.as_str().to_ascii_lowercase()),
        "{}",
        cfg.stdout
    );
    assert_eq!(backup_451(&twin).await, "OK");
}

#[tokio::test]
async fn starting_the_pbs_vm_brings_pbs_back() {
    let twin = Twin::start("pbs-vm-stopped").await;
    assert_eq!(backup_451(&twin).await, "job errors");
    let start = twin
        .run(
            "pihanga",
            "qm start {vmid}",
            &[("vmid", Value::Vmid(vmid(101)))],
        )
        .await
        .unwrap();
    assert_eq!(start.exit_status, 0);
    assert_eq!(
        twin.sh(
            "pbs",
            "systemctl is-active proxmox-backup proxmox-backup-proxy"
        )
        .await
        .exit_status,
        0
    );
    assert_eq!(twin.pbs.version().await.unwrap().release, "4");
    assert_eq!(backup_451(&twin).await, "OK");
    let again = twin
        .run(
            "pihanga",
            "qm start {vmid}",
            &[("vmid", Value::Vmid(vmid(101)))],
        )
        .await
        .unwrap();
    assert_eq!(again.exit_status, 255, "already running");
}

#[tokio::test]
async fn restarting_failed_services_brings_the_api_back() {
    let twin = Twin::start("pbs-down").await;
    assert!(twin.pbs.version().await.is_err());
    twin.sh("pbs", RESTART).await;
    assert_eq!(twin.pbs.version().await.unwrap().version, "3.2");
    assert_eq!(backup_451(&twin).await, "OK");
}

#[tokio::test]
async fn enabling_the_job_over_the_api_and_over_ssh() {
    let twin = Twin::start("job-disabled").await;
    let job = name("backup-3f2a1c9e-81d4");
    twin.pve.enable_backup_job(&job).await.unwrap();
    assert_eq!(twin.pve.backup_jobs().await.unwrap()[0].enabled, 1);

    twin.lab.with_world(|w| w.load("job-disabled")).unwrap();
    let set = twin
        .run(
            "ruapehu",
            "pvesh set /cluster/backup/{job} --enabled 1",
            &[("job", Value::Name(job))],
        )
        .await
        .unwrap();
    assert_eq!(set.exit_status, 0);
    assert_eq!(twin.pve.backup_jobs().await.unwrap()[0].enabled, 1);
}

#[tokio::test]
async fn a_vzdump_takes_its_configured_time_and_then_freshens_the_group() {
    let twin = Twin::start("healthy").await;
    twin.lab
        .with_world(|w| w.vzdump_duration = Duration::from_secs(90));
    let node = name("ruapehu");
    let before = age_hours(&twin, "vm/451").await;
    let VzdumpStart::Task(upid) = twin
        .pve
        .vzdump(&node, &[vmid(451)], &name("pbs-pihanga"))
        .await
        .unwrap()
    else {
        panic!("a task");
    };
    twin.clock.advance(chrono::Duration::seconds(89));
    assert!(
        twin.pve
            .task_status(&node, &upid)
            .await
            .unwrap()
            .is_running()
    );
    assert_eq!(
        age_hours(&twin, "vm/451").await,
        before,
        "nothing changes until the task ends"
    );
    twin.clock.advance(chrono::Duration::seconds(2));
    assert!(
        twin.pve
            .task_status(&node, &upid)
            .await
            .unwrap()
            .succeeded()
    );
    assert_eq!(age_hours(&twin, "vm/451").await, 0);
    // A guest not on that node: PVE answers OK and does nothing.
    let elsewhere = twin
        .pve
        .vzdump(&node, &[vmid(102)], &name("pbs-pihanga"))
        .await
        .unwrap();
    assert_eq!(elsewhere, VzdumpStart::NothingToDo);
}
