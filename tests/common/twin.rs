//! The twin with runbookd's executors pointed at it: what the playbook will use.

use std::sync::Arc;
use std::time::Duration;

use runbookd::exec::command::{Name, Value, render};
use runbookd::exec::output::Redactor;
use runbookd::exec::pbs::PbsClient;
use runbookd::exec::pve::PveClient;
use runbookd::exec::ssh::{CommandOutput, RemoteShell, SshError, SshSession};
use runbookd::lab::Lab;

use super::TestClock;

pub struct Twin {
    pub lab: Lab,
    pub clock: Arc<TestClock>,
    pub ssh: SshSession,
    pub pbs: PbsClient,
    pub pve: PveClient,
    _dir: tempfile::TempDir,
}

pub fn name(text: &str) -> Name {
    Name::parse(text).unwrap()
}

impl Twin {
    pub async fn start(scenario: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(TestClock::new());
        let lab = Lab::start(dir.path(), scenario, clock.clone())
            .await
            .unwrap();
        let mut settings = lab.ssh_settings();
        settings.connect_timeout = Duration::from_secs(2);
        let ssh = SshSession::new(lab.ssh_hosts(), settings, Redactor::default());
        let pbs = PbsClient::new(&lab.pbs_endpoint()).unwrap();
        let pve = PveClient::new(&lab.pve_endpoint("ruapehu")).unwrap();
        Self {
            lab,
            clock,
            ssh,
            pbs,
            pve,
            _dir: dir,
        }
    }

    /// Runs a template on `host` with a 5 s timeout.
    pub async fn run(
        &self,
        host: &str,
        template: &str,
        values: &[(&str, Value)],
    ) -> Result<CommandOutput, SshError> {
        self.run_within(host, template, values, Duration::from_secs(5))
            .await
    }

    pub async fn run_within(
        &self,
        host: &str,
        template: &str,
        values: &[(&str, Value)],
        timeout: Duration,
    ) -> Result<CommandOutput, SshError> {
        let command = render(template, values).unwrap();
        self.ssh.run(&name(host), &command, timeout).await
    }

    /// Runs a template with no values and expects it to complete.
    pub async fn sh(&self, host: &str, template: &str) -> CommandOutput {
        self.run(host, template, &[]).await.unwrap()
    }

    /// What the engine runs on against this twin: the playbooks in `dir`, and executors
    /// pointed at the twin (short SSH connect timeout).
    pub fn engine_parts(&self, dir: &std::path::Path) -> runbookd::startup::EngineParts {
        let path = self.lab.write_files().unwrap();
        let (config, source) =
            runbookd::config::Config::load(Some(&path), &Default::default()).unwrap();
        let mut inventory = config.resolve_inventory(&source, &|_| None).unwrap();
        if let Some(ssh) = &mut inventory.ssh {
            ssh.connect_timeout = Duration::from_secs(1);
        }
        runbookd::startup::EngineParts {
            playbooks: runbookd::playbook::load_dir(dir).unwrap(),
            estate: Arc::new(runbookd::engine::estate::Estate::connect(&inventory).unwrap()),
        }
    }

    /// Every mutating request the twin received (API writes, restarts, starts, mounts), in
    /// order, each as `host text`.
    pub fn mutations(&self) -> Vec<String> {
        self.lab.with_world(|w| {
            w.received
                .iter()
                .map(|r| format!("{} {}", r.host, r.text))
                .filter(|t| {
                    t.contains(" POST ")
                        || t.contains(" PUT ")
                        || t.contains(" DELETE ")
                        || ["restart", "qm start", " mount ", "umount"]
                            .iter()
                            .any(|m| t.contains(m))
                })
                .collect()
        })
    }

    /// Every command line the twin received over SSH, in order.
    pub fn ssh_log(&self) -> Vec<String> {
        self.lab.with_world(|w| {
            w.received
                .iter()
                .filter(|r| r.channel == "ssh")
                .map(|r| format!("{} {}", r.host, r.text))
                .collect()
        })
    }
}
