//! `runbookd check --probe`: before runbookd is pointed at real hosts, connect read-only to
//! every configured host and API and say, one line per check, what holds and how to fix what
//! does not. Nothing here changes anything: SSH host keys are read by a handshake that is
//! refused before authentication, the SSH login runs `hostname`, the APIs are asked for the
//! token's own permissions, and the playbooks' probes are the read-only diagnosis. A host key
//! that is not pinned is never trusted: its fingerprint and the exact known_hosts line are
//! shown for a human to check and add.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::keys::PublicKeyOrCertificate;
use russh::keys::{HashAlg, PublicKey};
use serde_json::Value as Json;

use crate::config::Inventory;
use crate::engine::estate::Estate;
use crate::exec::http::{ApiClient, ApiEndpoint, ApiError, Dialect, TlsTrust};
use crate::exec::output::Redactor;
use crate::exec::ssh::{
    HostKeyCheck, RemoteShell, SshAuth, SshError, SshHost, SshSession, SshSettings,
};
use crate::playbook::PlaybookFile;

/// How long the SSH login check may take on a host that answered the handshake.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What a check found: `Ok(detail)` or a failure with its fix.
type Outcome = Result<String, Failure>;

struct Failure {
    problem: String,
    fix: String,
}

fn fail(problem: impl Into<String>, fix: impl Into<String>) -> Outcome {
    Err(Failure {
        problem: problem.into(),
        fix: fix.into(),
    })
}

/// Prints one line per check; returns how many failed.
struct Report<'a, W: Write> {
    out: &'a mut W,
    failed: usize,
}

impl<W: Write> Report<'_, W> {
    fn line(&mut self, check: &str, outcome: Outcome) -> std::io::Result<bool> {
        match outcome {
            Ok(detail) => {
                writeln!(self.out, "ok    {check}: {detail}")?;
                Ok(true)
            }
            Err(failure) => {
                self.failed += 1;
                writeln!(
                    self.out,
                    "FAIL  {check}: {} -- fix: {}",
                    failure.problem, failure.fix
                )?;
                Ok(false)
            }
        }
    }
}

/// Runs every check against `inventory` and the playbooks' probes; returns the number of
/// failed checks.
pub async fn run(
    inventory: &Inventory,
    playbooks: &[PlaybookFile],
    out: &mut impl Write,
) -> anyhow::Result<usize> {
    let mut report = Report { out, failed: 0 };
    let (Some(ssh), Some(pbs), Some(pve)) = (&inventory.ssh, &inventory.pbs, &inventory.pve) else {
        report.line(
            "estate",
            fail(
                "the config has no estate to probe ([ssh], [[hosts]], [pbs] and [pve] are all needed)",
                "add them as in examples/runbookd.toml (README, \"Connecting a real estate\")",
            ),
        )?;
        return Ok(report.failed);
    };

    let mut reachable = true;
    for host in &inventory.ssh_hosts {
        let key = host_key(host, ssh).await;
        let key_ok = report.line(&format!("ssh-host-key {}", host.name), key)?;
        if key_ok {
            let login = login(host, ssh, &inventory.secrets).await;
            reachable &= report.line(&format!("ssh-login {}", host.name), login)?;
        } else {
            reachable = false;
        }
    }
    for (name, dialect, endpoint, wanted) in [
        (
            "pbs",
            Dialect::Pbs,
            &pbs.endpoint,
            pbs_privileges(pbs.datastore.as_str()),
        ),
        (
            "pve",
            Dialect::Pve,
            &pve.endpoint,
            pve_privileges(pve.storage.as_str()),
        ),
    ] {
        let redactor = Redactor::new(inventory.secrets.clone());
        let (api, privileges) = api_checks(dialect, endpoint, &wanted, redactor).await;
        reachable &= report.line(&format!("{name}-api"), api)?;
        if let Some(privileges) = privileges {
            reachable &= report.line(&format!("{name}-privileges"), privileges)?;
        }
    }

    if !reachable {
        writeln!(
            report.out,
            "skip  probes: the playbooks' read-only probes run once every check above passes"
        )?;
        return Ok(report.failed);
    }
    let estate = Estate::connect(inventory)?;
    for file in playbooks {
        let labels = Default::default();
        let diagnosis =
            crate::engine::diagnose::diagnose(&file.playbook, &estate, &labels, chrono::Utc::now())
                .await;
        let records = match diagnosis {
            Ok(diagnosis) => diagnosis.probes,
            Err(error) => {
                report.line(
                    &format!("probes {}", file.playbook.name),
                    fail(
                        error,
                        "fix the playbook's parameters or settings (runbookd check)",
                    ),
                )?;
                continue;
            }
        };
        for record in records {
            let outcome = match record.error {
                None => Ok(match record.exit {
                    Some(exit) => format!("{} (exit {exit})", record.request),
                    None => record.request,
                }),
                Some(error) => fail(
                    format!("{}: {error}", record.request),
                    "the probe must run for a diagnosis: check the host, path or API it names",
                ),
            };
            report.line(
                &format!("probe {}/{}", file.playbook.name, record.id),
                outcome,
            )?;
        }
    }
    Ok(report.failed)
}

/// `[address]:port`, as known_hosts names a host (a bare address on port 22).
fn known_hosts_name(host: &SshHost) -> String {
    if host.port == 22 {
        host.address.clone()
    } else {
        format!("[{}]:{}", host.address, host.port)
    }
}

/// Records the server's host key and refuses it, so the handshake stops before any
/// authentication.
struct KeyCatcher(Arc<Mutex<Option<PublicKey>>>);

impl russh::client::Handler for KeyCatcher {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        presented: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = match presented {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            PublicKeyOrCertificate::Certificate(cert) => cert.public_key().clone().into(),
        };
        *self.0.lock().expect("key lock") = Some(key);
        Ok(false)
    }
}

/// The host's key against known_hosts: pinned, changed, or missing (with the line to add).
async fn host_key(host: &SshHost, ssh: &SshSettings) -> Outcome {
    let address = format!("{}:{}", host.address, host.port);
    let caught = Arc::new(Mutex::new(None));
    let handshake = russh::client::connect(
        Arc::new(russh::client::Config::default()),
        (host.address.as_str(), host.port),
        KeyCatcher(caught.clone()),
    );
    let answer = tokio::time::timeout(ssh.connect_timeout, handshake).await;
    let presented = caught.lock().expect("key lock").take();
    let Some(key) = presented else {
        let detail = match answer {
            Err(_) => format!("no answer within {:?}", ssh.connect_timeout),
            Ok(Err(error)) => error.to_string(),
            Ok(Ok(_)) => "the server sent no host key".to_owned(),
        };
        return fail(
            format!("cannot reach {} at {address}: {detail}", host.name),
            format!(
                "check the address and port of [[hosts]] '{}' and that sshd runs there (systemctl status ssh)",
                host.name
            ),
        );
    };
    let fingerprint = key.fingerprint(HashAlg::Sha256);
    let line = format!(
        "{} {}",
        known_hosts_name(host),
        key.to_openssh().unwrap_or_default()
    );
    let path = match &ssh.host_keys {
        HostKeyCheck::KnownHosts(path) => path,
        HostKeyCheck::InsecureSkip => {
            return fail(
                format!(
                    "host keys are not checked (insecure_skip_host_key_check); {} presents {fingerprint}",
                    host.name
                ),
                "set [ssh] known_hosts to a file that pins every host's key",
            );
        }
    };
    match russh::keys::check_known_hosts_path(&host.address, host.port, &key, path) {
        Ok(true) => Ok(format!("{fingerprint} is pinned in {}", path.display())),
        Ok(false) => fail(
            format!(
                "{} ({address}) has no entry in {}; it presents {fingerprint}",
                host.name,
                path.display()
            ),
            format!(
                "check that fingerprint on the host's console (ssh-keygen -lf /etc/ssh/ssh_host_{}_key.pub), then add this line to {}: {line}",
                key.algorithm().as_str().trim_start_matches("ssh-"),
                path.display()
            ),
        ),
        Err(russh::keys::Error::KeyChanged { line: number }) => fail(
            format!(
                "the host key of {} ({address}) changed: line {number} of {} pins another key, and it now presents {fingerprint}",
                host.name,
                path.display()
            ),
            format!(
                "if the host was reinstalled, check the fingerprint on its console and replace line {number} of {} with: {line}; if not, something else answers at {address}: do not connect",
                path.display()
            ),
        ),
        Err(error) => fail(
            format!("cannot read {}: {error}", path.display()),
            "make known_hosts a readable OpenSSH known_hosts file",
        ),
    }
}

/// Logs in with the configured credentials and runs `hostname`.
async fn login(host: &SshHost, ssh: &SshSettings, secrets: &[String]) -> Outcome {
    let session = SshSession::new([host.clone()], ssh.clone(), Redactor::new(secrets.to_vec()));
    let command = crate::exec::command::render("hostname", &[]).expect("a literal command");
    let credential = match &ssh.auth {
        SshAuth::KeyFile(path) => format!("the key {}", path.display()),
        SshAuth::PasswordFile(path) => format!("the password in {}", path.display()),
    };
    match session.run(&host.name, &command, LOGIN_TIMEOUT).await {
        Ok(output) if output.exit_status == 0 => {
            Ok(format!("{} logs in with {credential}", host.user))
        }
        Ok(output) => fail(
            format!("`hostname` exited {} on {}", output.exit_status, host.name),
            "check the login shell of the user runbookd logs in as",
        ),
        Err(SshError::AuthRejected { .. }) => {
            let fix = match &ssh.auth {
                SshAuth::KeyFile(path) => {
                    let public = russh::keys::load_secret_key(path, None)
                        .ok()
                        .and_then(|key| key.public_key().to_openssh().ok())
                        .unwrap_or_else(|| format!("the public half of {}", path.display()));
                    format!(
                        "add this line to ~{}/.ssh/authorized_keys on {}: {public}",
                        host.user, host.name
                    )
                }
                SshAuth::PasswordFile(path) => format!(
                    "put {}'s password on {} in {}",
                    host.user,
                    host.name,
                    path.display()
                ),
            };
            fail(
                format!("{} refused {credential} for user {}", host.name, host.user),
                fix,
            )
        }
        Err(error) => fail(
            error.to_string(),
            format!("check that {} accepts SSH logins from here", host.name),
        ),
    }
}

/// Privileges each API token needs for the shipped playbook: the reads of its diagnosis and
/// the calls of its remediations and verification, as `(path, privilege)`.
fn pbs_privileges(datastore: &str) -> Vec<(String, &'static str)> {
    let store = format!("/datastore/{datastore}");
    vec![
        (store.clone(), "Datastore.Audit"),
        // Forgetting decommissioned groups.
        (store, "Datastore.Modify"),
        ("/system/tasks".to_owned(), "Sys.Audit"),
    ]
}

fn pve_privileges(storage: &str) -> Vec<(String, &'static str)> {
    let storage = format!("/storage/{storage}");
    vec![
        ("/vms".to_owned(), "VM.Audit"),
        ("/vms".to_owned(), "VM.Backup"),
        (storage.clone(), "Datastore.AllocateSpace"),
        // Setting the storage's fingerprint.
        (storage, "Datastore.Allocate"),
        // Reading and enabling the backup job.
        ("/".to_owned(), "Sys.Audit"),
        ("/".to_owned(), "Sys.Modify"),
    ]
}

/// Whether `granted` (path → privilege → 1/true, as `/access/permissions` answers) gives
/// `privilege` on `path`: set there or on a path above it (privileges propagate down).
fn holds(granted: &BTreeMap<String, BTreeMap<String, Json>>, path: &str, privilege: &str) -> bool {
    granted.iter().any(|(at, privileges)| {
        let covers = at == "/" || path == at || path.starts_with(&format!("{at}/"));
        covers
            && privileges
                .get(privilege)
                .is_some_and(|v| v.as_bool() == Some(true) || v.as_u64() == Some(1))
    })
}

/// The API's TLS pin, the token and (when those hold) its privileges.
async fn api_checks(
    dialect: Dialect,
    endpoint: &ApiEndpoint,
    wanted: &[(String, &'static str)],
    redactor: Redactor,
) -> (Outcome, Option<Outcome>) {
    let (service, host_command) = match dialect {
        Dialect::Pbs => ("PBS", "proxmox-backup-manager cert info"),
        Dialect::Pve => ("PVE", "pvenode cert info"),
    };
    let client = match ApiClient::new(dialect, endpoint, redactor) {
        Ok(client) => client,
        Err(error) => {
            return (
                fail(error.to_string(), "fix the API's section in the config"),
                None,
            );
        }
    };
    let answer = client
        .get::<BTreeMap<String, BTreeMap<String, Json>>>("/access/permissions")
        .await;
    let granted = match answer {
        Ok(granted) => granted,
        Err(error) => {
            let outcome = match &error {
                ApiError::CertificateRejected { detail, .. } => {
                    let presented = regex::Regex::new(r"certificate fingerprint ([0-9A-Fa-f:]+)")
                        .expect("a valid regex")
                        .captures(detail)
                        .map(|c| c[1].to_owned());
                    let fix = match (&endpoint.trust, presented) {
                        (TlsTrust::Fingerprint(_), Some(presented)) => format!(
                            "if `{host_command}` on the host shows the fingerprint {presented}, set fingerprint = \"{presented}\"; if not, something else answers at {}",
                            endpoint.base_url
                        ),
                        _ => format!(
                            "pin the certificate `{host_command}` shows on the host (fingerprint = \"...\") or point ca_file at its CA"
                        ),
                    };
                    fail(error.to_string(), fix)
                }
                ApiError::Status { status: 401, .. } => fail(
                    format!("{service} refused the token {}", endpoint.token_id),
                    format!(
                        "put the secret shown when the token {} was made into its token_secret_file (or token_secret_env), or make a new token",
                        endpoint.token_id
                    ),
                ),
                ApiError::Connect { .. } | ApiError::Timeout { .. } => fail(
                    error.to_string(),
                    format!(
                        "check the url and that {service}'s API answers at {} (its proxy service runs, the port is open)",
                        endpoint.base_url
                    ),
                ),
                _ => fail(
                    error.to_string(),
                    format!("check {service}'s API at {}", endpoint.base_url),
                ),
            };
            return (outcome, None);
        }
    };
    let api = Ok(format!(
        "{} answers; TLS {} and token {} accepted",
        endpoint.base_url,
        match endpoint.trust {
            TlsTrust::Fingerprint(_) => "pin",
            TlsTrust::CaFile(_) => "CA",
        },
        endpoint.token_id
    ));
    let lacking: Vec<String> = wanted
        .iter()
        .filter(|(path, privilege)| !holds(&granted, path, privilege))
        .map(|(path, privilege)| format!("{privilege} on {path}"))
        .collect();
    let privileges = if lacking.is_empty() {
        Ok(format!("{} privileges the playbook needs", wanted.len()))
    } else {
        fail(
            format!(
                "the token {} lacks {}",
                endpoint.token_id,
                lacking.join(", ")
            ),
            format!(
                "grant them to the token in {service}'s permissions (or use a token without privilege separation)"
            ),
        )
    };
    (api, Some(privileges))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn privileges_propagate_down_and_must_be_set() {
        let granted: BTreeMap<String, BTreeMap<String, Json>> = serde_json::from_value(json!({
            "/": {"Sys.Audit": 1},
            "/storage/pbs-pihanga": {"Datastore.Allocate": true, "Datastore.AllocateSpace": 0},
        }))
        .unwrap();
        assert!(holds(&granted, "/vms", "Sys.Audit"));
        assert!(holds(
            &granted,
            "/storage/pbs-pihanga",
            "Datastore.Allocate"
        ));
        assert!(!holds(
            &granted,
            "/storage/pbs-pihanga",
            "Datastore.AllocateSpace"
        ));
        assert!(!holds(&granted, "/storage/other", "Datastore.Allocate"));
        assert!(!holds(
            &granted,
            "/storage/pbs-pihanga-2",
            "Datastore.Allocate"
        ));
    }
}
