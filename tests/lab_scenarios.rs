//! Acceptance 1 of the twin: for every scenario, runbookd's executors (SSH, PBS API, PVE API)
//! connect to the twin and read the outputs the playbook relies on, in the reference texts.

use crate::common;

use std::time::Duration;

use common::twin::{Twin, name};
use runbookd::exec::command::{Value, Vmid};
use runbookd::exec::http::ApiError;
use runbookd::exec::pbs::PbsApi;
use runbookd::exec::pve::PveApi;
use runbookd::exec::ssh::{RemoteShell, SshError};

fn vmid(id: u32) -> Value {
    Value::Vmid(Vmid::new(id).unwrap())
}

const STORE: &str = "pbs-datastore";
const SERVICES: &str = "systemctl is-active proxmox-backup proxmox-backup-proxy";
const FINGERPRINT: &str =
    "openssl x509 -in /etc/proxmox-backup/proxy.pem -noout -fingerprint -sha256";

/// Ages in hours of the groups PBS lists, by `type/id`.
async fn group_ages(twin: &Twin) -> Vec<(String, i64)> {
    let now = twin.lab.with_world(|w| w.now().timestamp());
    let groups = twin.pbs.groups(&name(STORE)).await.unwrap();
    groups
        .into_iter()
        .map(|g| {
            (
                format!("{}/{}", g.backup_type, g.backup_id),
                (now - g.last_backup) / 3600,
            )
        })
        .collect()
}

async fn storage_cfg_fingerprint(twin: &Twin) -> String {
    let line = twin
        .sh("ruapehu", "grep fingerprint /etc/pve/storage.cfg")
        .await;
    assert_eq!(line.exit_status, 0);
    line.stdout
        .trim()
        .strip_prefix("fingerprint ")
        .unwrap()
        .to_owned()
}

async fn pbs_fingerprint(twin: &Twin) -> String {
    let out = twin.sh("pbs", FINGERPRINT).await;
    out.stdout
        .trim()
        .strip_prefix("sha256 Fingerprint=")
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn healthy() {
    let twin = Twin::start("healthy").await;
    let active = twin.sh("pbs", SERVICES).await;
    assert_eq!(
        (active.exit_status, active.stdout.as_str()),
        (0, "active\nactive\n")
    );
    let mount = twin
        .sh("pbs", "findmnt -n -o SOURCE,FSTYPE /mnt/pbs-datastore")
        .await;
    assert_eq!(mount.stdout, "truenas-hdd:/mnt/Taupo/pbs nfs4\n");
    let df = twin.sh("pbs", "df -h /mnt/pbs-datastore").await;
    assert!(
        df.stdout
            .lines()
            .nth(1)
            .unwrap()
            .ends_with("/mnt/pbs-datastore"),
        "{}",
        df.stdout
    );
    let chunks = twin.sh("pbs", "ls /mnt/pbs-datastore/.chunks").await;
    assert_eq!(chunks.exit_status, 0);
    assert_eq!(twin.pbs.version().await.unwrap().version, "3.2");
    assert!(twin.pbs.datastore_usage().await.unwrap()[0].error.is_none());
    let ages = group_ages(&twin).await;
    assert_eq!(ages.len(), 12, "every guest but PBS itself: {ages:?}");
    assert!(ages.iter().all(|(_, hours)| *hours < 48), "{ages:?}");
    assert!(
        pbs_fingerprint(&twin)
            .await
            .eq_ignore_ascii_case(&storage_cfg_fingerprint(&twin).await)
    );
    let jobs = twin.pve.backup_jobs().await.unwrap();
    assert_eq!(jobs[0].enabled, 1);
    let log = twin
        .run(
            "ruapehu",
            "cat /var/log/vzdump/qemu-{vmid}.log",
            &[("vmid", vmid(451))],
        )
        .await
        .unwrap();
    assert!(
        log.stdout
            .lines()
            .last()
            .unwrap()
            .ends_with("INFO: Finished Backup of VM 451 (00:00:04)"),
        "{}",
        log.stdout
    );
    let status = twin
        .run("ruapehu", "qm status {vmid}", &[("vmid", vmid(451))])
        .await
        .unwrap();
    assert_eq!(
        (status.exit_status, status.stdout.as_str()),
        (0, "status: running\n")
    );
    let ct = twin
        .run("hikurangi", "pct status {vmid}", &[("vmid", vmid(101))])
        .await
        .unwrap();
    assert_eq!(ct.stdout, "status: running\n");
    let unknown = twin.sh("pbs", "frobnicate --now").await;
    assert_eq!(
        (unknown.exit_status, unknown.stderr.as_str()),
        (127, "bash: line 1: frobnicate: command not found\n")
    );
    assert_eq!(twin.ssh_log()[0], format!("pbs timeout -k 5 5 {SERVICES}"));
}

async fn assert_chunk_store_failure(scenario: &str, errno: &str) {
    let twin = Twin::start(scenario).await;
    // PBS is up and the mount is fine: only the handles inside PBS are stale.
    assert_eq!(twin.sh("pbs", SERVICES).await.exit_status, 0);
    assert_eq!(
        twin.sh("pbs", "findmnt -n /mnt/pbs-datastore")
            .await
            .exit_status,
        0
    );
    let ages = group_ages(&twin).await;
    let stale: Vec<&String> = ages
        .iter()
        .filter(|(_, h)| *h >= 48)
        .map(|(g, _)| g)
        .collect();
    assert_eq!(
        stale,
        ["vm/451", "ct/101"]
            .map(String::from)
            .iter()
            .collect::<Vec<_>>()
    );
    let vm = twin
        .run(
            "ruapehu",
            "tail -n 2 /var/log/vzdump/qemu-{vmid}.log",
            &[("vmid", vmid(451))],
        )
        .await
        .unwrap();
    assert!(vm.stdout.contains(&format!("ERROR: Backup of VM 451 failed - VM 451 qmp command 'backup' failed - backup connect failed: command error: unable to open chunk store at \"/mnt/pbs-datastore/.chunks\" - {errno}")), "{}", vm.stdout);
    let ct = twin
        .run(
            "hikurangi",
            "cat /var/log/vzdump/lxc-{vmid}.log",
            &[("vmid", vmid(101))],
        )
        .await
        .unwrap();
    assert!(ct.stdout.contains(errno), "{}", ct.stdout);
}

#[tokio::test]
async fn stale_nfs() {
    assert_chunk_store_failure("stale-nfs", "No such file or directory (os error 2)").await;
}

#[tokio::test]
async fn stale_nfs_estale() {
    assert_chunk_store_failure("stale-nfs-estale", "Stale file handle (os error 116)").await;
}

#[tokio::test]
async fn nfs_unmounted() {
    let twin = Twin::start("nfs-unmounted").await;
    let findmnt = twin.sh("pbs", "findmnt -n /mnt/pbs-datastore").await;
    assert_eq!((findmnt.exit_status, findmnt.stdout.as_str()), (1, ""));
    let mounts = twin.sh("pbs", "mount").await;
    assert!(
        !mounts.stdout.contains("pbs-datastore"),
        "{}",
        mounts.stdout
    );
    let df = twin.sh("pbs", "df -h /mnt/pbs-datastore").await;
    assert!(
        df.stdout.lines().nth(1).unwrap().ends_with(" /"),
        "df shows the root filesystem: {}",
        df.stdout
    );
    let ls = twin.sh("pbs", "ls /mnt/pbs-datastore/.chunks").await;
    assert_eq!(ls.exit_status, 2);
    assert_eq!(
        ls.stderr,
        "ls: cannot access '/mnt/pbs-datastore/.chunks': No such file or directory\n"
    );
    let usage = twin.pbs.datastore_usage().await.unwrap();
    assert_eq!(
        usage[0].error.as_deref(),
        Some(
            "unable to open chunk store at \"/mnt/pbs-datastore/.chunks\" - No such file or directory (os error 2)"
        )
    );
    match twin.pbs.groups(&name(STORE)).await {
        Err(ApiError::Status {
            status: 400,
            message,
            ..
        }) => assert!(
            message.starts_with("unable to open chunk store"),
            "{message}"
        ),
        other => panic!("groups: {other:?}"),
    }
}

#[tokio::test]
async fn cert_mismatch() {
    let twin = Twin::start("cert-mismatch").await;
    let actual = pbs_fingerprint(&twin).await;
    assert_eq!(
        actual,
        twin.lab.pbs_fingerprint.as_str(),
        "openssl shows the certificate PBS serves"
    );
    let configured = storage_cfg_fingerprint(&twin).await;
    assert!(!actual.eq_ignore_ascii_case(&configured));
    let storage = twin.pve.storage(&name("pbs-pihanga")).await.unwrap();
    assert_eq!(storage.fingerprint.as_deref(), Some(configured.as_str()));
    let ct = twin
        .run(
            "hikurangi",
            "cat /var/log/vzdump/lxc-{vmid}.log",
            &[("vmid", vmid(101))],
        )
        .await
        .unwrap();
    assert!(ct.stdout.contains("ERROR: Backup of CT 101 failed - command '/usr/bin/proxmox-backup-client backup ...' failed: exit code 255"), "{}", ct.stdout);
}

#[tokio::test]
async fn pbs_down() {
    let twin = Twin::start("pbs-down").await;
    let active = twin.sh("pbs", SERVICES).await;
    assert_eq!(
        (active.exit_status, active.stdout.as_str()),
        (3, "failed\nfailed\n")
    );
    let status = twin
        .sh("pbs", "systemctl status proxmox-backup-proxy")
        .await;
    assert!(
        status.stdout.contains("Active: failed"),
        "{}",
        status.stdout
    );
    assert!(matches!(
        twin.pbs.version().await,
        Err(ApiError::Connect { .. })
    ));
}

#[tokio::test]
async fn pbs_vm_stopped() {
    let twin = Twin::start("pbs-vm-stopped").await;
    let status = twin
        .run("pihanga", "qm status {vmid}", &[("vmid", vmid(101))])
        .await
        .unwrap();
    assert_eq!(status.stdout, "status: stopped\n");
    assert!(matches!(
        twin.run("pbs", "hostname", &[]).await,
        Err(SshError::ConnectTimeout { .. })
    ));
    let fast = runbookd::exec::pbs::PbsClient::new(&runbookd::exec::http::ApiEndpoint {
        timeout: Duration::from_secs(1),
        ..twin.lab.pbs_endpoint()
    })
    .unwrap();
    assert!(matches!(
        fast.version().await,
        Err(ApiError::Timeout { .. })
    ));
}

#[tokio::test]
async fn decommissioned_only() {
    let twin = Twin::start("decommissioned-only").await;
    let ages = group_ages(&twin).await;
    let stale: Vec<&str> = ages
        .iter()
        .filter(|(_, h)| *h >= 48)
        .map(|(g, _)| g.as_str())
        .collect();
    assert_eq!(
        stale,
        [
            "vm/330", "vm/331", "vm/332", "vm/133", "vm/104", "ct/105", "ct/139", "ct/103"
        ]
    );
    for host in ["ruapehu", "pihanga", "hikurangi"] {
        let gone = twin
            .run(host, "qm status {vmid}", &[("vmid", vmid(330))])
            .await
            .unwrap();
        assert_eq!(gone.exit_status, 2);
        assert_eq!(
            gone.stderr,
            format!("Configuration file 'nodes/{host}/qemu-server/330.conf' does not exist\n")
        );
        let node = name(host);
        assert!(
            twin.pve
                .qemu(&node)
                .await
                .unwrap()
                .iter()
                .all(|g| g.vmid != 330)
        );
    }
}

#[tokio::test]
async fn mixed() {
    let twin = Twin::start("mixed").await;
    let ages = group_ages(&twin).await;
    let stale: Vec<&str> = ages
        .iter()
        .filter(|(_, h)| *h >= 48)
        .map(|(g, _)| g.as_str())
        .collect();
    assert!(
        stale.contains(&"vm/451") && stale.contains(&"ct/101") && stale.contains(&"vm/330"),
        "{stale:?}"
    );
    let vm = twin
        .run(
            "ruapehu",
            "cat /var/log/vzdump/qemu-{vmid}.log",
            &[("vmid", vmid(451))],
        )
        .await
        .unwrap();
    assert!(
        vm.stdout.contains("unable to open chunk store"),
        "{}",
        vm.stdout
    );
}

#[tokio::test]
async fn job_disabled() {
    let twin = Twin::start("job-disabled").await;
    let jobs = twin
        .sh("ruapehu", "pvesh get /cluster/backup --output-format json")
        .await;
    let jobs: serde_json::Value = serde_json::from_str(&jobs.stdout).unwrap();
    assert_eq!(jobs[0]["enabled"], 0);
    assert_eq!(twin.pve.backup_jobs().await.unwrap()[0].enabled, 0);
    // The job never ran: the guest's log is the last good run's, two nights old.
    let log = twin
        .run(
            "ruapehu",
            "cat /var/log/vzdump/qemu-{vmid}.log",
            &[("vmid", vmid(451))],
        )
        .await
        .unwrap();
    assert!(log.stdout.contains("Finished Backup of VM 451"));
    let first_stamp = &log.stdout[..19];
    assert_eq!(
        first_stamp, "2026-11-24 02:00:04",
        "a stale file: its first timestamp predates the last schedule"
    );
}

#[tokio::test]
async fn host_unreachable() {
    let twin = Twin::start("host-unreachable").await;
    assert!(matches!(
        twin.run("hikurangi", "hostname", &[]).await,
        Err(SshError::ConnectTimeout { .. })
    ));
    assert_eq!(twin.sh("ruapehu", "hostname").await.stdout, "ruapehu\n");
    let hikurangi = runbookd::exec::pve::PveClient::new(&runbookd::exec::http::ApiEndpoint {
        timeout: Duration::from_secs(1),
        ..twin.lab.pve_endpoint("hikurangi")
    })
    .unwrap();
    assert!(matches!(
        hikurangi.backup_jobs().await,
        Err(ApiError::Timeout { .. })
    ));
}

#[tokio::test]
async fn flaky_ssh_drops_every_third_connection() {
    let twin = Twin::start("flaky-ssh").await;
    let mut results = Vec::new();
    for _ in 0..6 {
        // A new session each time: a fresh connection.
        let ssh = runbookd::exec::ssh::SshSession::new(
            twin.lab.ssh_hosts(),
            twin.lab.ssh_settings(),
            Default::default(),
        );
        let command = runbookd::exec::command::render("hostname", &[]).unwrap();
        results.push(
            ssh.run(&name("pbs"), &command, Duration::from_secs(5))
                .await
                .is_ok(),
        );
    }
    assert_eq!(results, [true, true, false, true, true, false]);
}

#[tokio::test]
async fn hung_nfs_blocks_df_and_ls_until_the_remote_timeout() {
    let twin = Twin::start("hung-nfs").await;
    for probe in ["df -h /mnt/pbs-datastore", "ls /mnt/pbs-datastore/.chunks"] {
        let out = twin
            .run_within("pbs", probe, &[], Duration::from_secs(1))
            .await
            .unwrap();
        assert!(out.timed_out_on_host(), "{probe}: {out:?}");
        assert!(
            out.duration >= Duration::from_secs(1),
            "{probe} blocked until its timeout"
        );
    }
    // findmnt reads the mount table and does not block.
    assert_eq!(
        twin.sh("pbs", "findmnt -n /mnt/pbs-datastore")
            .await
            .exit_status,
        0
    );
    let fast = runbookd::exec::pbs::PbsClient::new(&runbookd::exec::http::ApiEndpoint {
        timeout: Duration::from_secs(1),
        ..twin.lab.pbs_endpoint()
    })
    .unwrap();
    assert!(matches!(
        fast.groups(&name(STORE)).await,
        Err(ApiError::Timeout { .. })
    ));
}

#[tokio::test]
async fn one_connection_per_host_per_session_and_password_auth_from_a_file() {
    let twin = Twin::start("healthy").await;
    for _ in 0..5 {
        twin.sh("pbs", "hostname").await;
    }
    twin.sh("ruapehu", "hostname").await;
    assert_eq!(
        twin.lab.with_world(|w| w.ssh_connections),
        2,
        "one per host, reused"
    );

    // A password from a file, and (for a lab only) no host key check.
    let settings = runbookd::exec::ssh::SshSettings {
        auth: runbookd::exec::ssh::SshAuth::PasswordFile(twin.lab.dir.join("password")),
        host_keys: runbookd::exec::ssh::HostKeyCheck::InsecureSkip,
        ..twin.lab.ssh_settings()
    };
    let ssh =
        runbookd::exec::ssh::SshSession::new(twin.lab.ssh_hosts(), settings, Default::default());
    let command = runbookd::exec::command::render("hostname", &[]).unwrap();
    let out = ssh
        .run(&name("pihanga"), &command, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(out.stdout, "pihanga\n");

    std::fs::write(twin.lab.dir.join("wrong-password"), "not-the-password\n").unwrap();
    let settings = runbookd::exec::ssh::SshSettings {
        auth: runbookd::exec::ssh::SshAuth::PasswordFile(twin.lab.dir.join("wrong-password")),
        ..twin.lab.ssh_settings()
    };
    let ssh =
        runbookd::exec::ssh::SshSession::new(twin.lab.ssh_hosts(), settings, Default::default());
    assert!(matches!(
        ssh.run(&name("pihanga"), &command, Duration::from_secs(5))
            .await,
        Err(SshError::AuthRejected { .. })
    ));
}
