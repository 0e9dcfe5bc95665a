//! The SSH executor against the twin, scenario by scenario: the outputs the playbook relies on,
//! in the reference texts.

use std::sync::Arc;
use std::time::Duration;

use runbookd::clock::SystemClock;
use runbookd::exec::command::{Name, Value, Vmid, render};
use runbookd::exec::output::Redactor;
use runbookd::exec::ssh::{CommandOutput, RemoteShell, SshError, SshSession};
use runbookd::lab::Lab;

struct Twin {
    lab: Lab,
    ssh: SshSession,
    _dir: tempfile::TempDir,
}

async fn twin(scenario: &str) -> Twin {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(dir.path(), scenario, Arc::new(SystemClock))
        .await
        .unwrap();
    let ssh = SshSession::new(lab.ssh_hosts(), lab.ssh_settings(), Redactor::default());
    Twin {
        lab,
        ssh,
        _dir: dir,
    }
}

impl Twin {
    async fn run(
        &self,
        host: &str,
        template: &str,
        values: &[(&str, Value)],
    ) -> Result<CommandOutput, SshError> {
        let command = render(template, values).unwrap();
        self.ssh
            .run(
                &Name::parse(host).unwrap(),
                &command,
                Duration::from_secs(5),
            )
            .await
    }

    async fn ok(&self, host: &str, template: &str) -> CommandOutput {
        self.run(host, template, &[]).await.unwrap()
    }
}

fn vmid(id: u32) -> Value {
    Value::Vmid(Vmid::new(id).unwrap())
}

#[tokio::test]
async fn healthy_pbs_services_nfs_and_guests() {
    let twin = twin("healthy").await;
    let active = twin
        .ok(
            "pbs",
            "systemctl is-active proxmox-backup proxmox-backup-proxy",
        )
        .await;
    assert_eq!(
        (active.exit_status, active.stdout.as_str()),
        (0, "active\nactive\n")
    );
    let mount = twin
        .ok("pbs", "findmnt -n -o SOURCE,FSTYPE /mnt/pbs-datastore")
        .await;
    assert_eq!(mount.stdout, "truenas-hdd:/mnt/Taupo/pbs nfs4\n");
    let status = twin
        .run("ruapehu", "qm status {vmid}", &[("vmid", vmid(451))])
        .await
        .unwrap();
    assert_eq!(
        (status.exit_status, status.stdout.as_str()),
        (0, "status: running\n")
    );
    let missing = twin
        .run("ruapehu", "qm status {vmid}", &[("vmid", vmid(999))])
        .await
        .unwrap();
    assert_eq!(missing.exit_status, 2);
    assert_eq!(
        missing.stderr,
        "Configuration file 'nodes/ruapehu/qemu-server/999.conf' does not exist\n"
    );
    let unknown = twin.ok("pbs", "frobnicate --now").await;
    assert_eq!(unknown.exit_status, 127);

    let log = twin.lab.with_world(|w| {
        w.received
            .iter()
            .map(|r| r.text.clone())
            .collect::<Vec<_>>()
    });
    assert_eq!(
        log[0],
        "timeout -k 5 5 systemctl is-active proxmox-backup proxmox-backup-proxy"
    );
}
