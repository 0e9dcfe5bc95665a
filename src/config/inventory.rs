//! The estate runbookd acts on: hosts reached over SSH, the PBS and PVE APIs, and the PBS
//! facts playbooks need. Parsed from `[ssh]`, `[[hosts]]`, `[pbs]` and `[pve]`, validated by
//! `runbookd check`, and turned into executor settings by [`Config::resolve_inventory`].

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::secret_file::{check_known_hosts, check_secret_file};
use super::{Config, ConfigSource, Problem, read_secret};
use crate::exec::command::{AbsPath, CertFingerprint, Name, Vmid};
use crate::exec::http::{ApiEndpoint, TlsTrust};
use crate::exec::ssh::{HostKeyCheck, SshAuth, SshHost, SshSettings};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SshConfig {
    #[serde(default = "default_user")]
    pub user: String,
    pub key_file: Option<PathBuf>,
    pub password_file: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    #[serde(default)]
    pub insecure_skip_host_key_check: bool,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    #[serde(default = "default_output_cap")]
    pub output_cap_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HostKind {
    Pve,
    Pbs,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    pub name: String,
    pub kind: HostKind,
    /// DNS name or IP address.
    pub address: String,
    #[serde(default = "default_ssh_port")]
    pub port: u16,
}

/// An API endpoint: URL, TLS trust and token.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// `https://host:port`.
    pub url: String,
    /// SHA-256 certificate fingerprint to pin; or `ca_file`.
    pub fingerprint: Option<String>,
    pub ca_file: Option<PathBuf>,
    /// `USER@REALM!TOKENID`.
    pub token_id: String,
    pub token_secret_env: Option<String>,
    pub token_secret_file: Option<PathBuf>,
    #[serde(default = "default_api_timeout")]
    pub timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PbsConfig {
    /// The inventory host PBS runs on.
    pub host: String,
    #[serde(flatten)]
    pub api: ApiConfig,
    pub datastore: String,
    pub mountpoint: String,
    pub services: Vec<String>,
    /// The PVE guest PBS runs as, if it is one.
    pub vm: Option<GuestRef>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GuestRef {
    pub host: String,
    pub vmid: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PveConfig {
    #[serde(flatten)]
    pub api: ApiConfig,
    /// The PVE storage id that points at PBS.
    pub storage: String,
}

fn default_user() -> String {
    "root".to_owned()
}
fn default_connect_timeout() -> u64 {
    10
}
fn default_output_cap() -> usize {
    64 * 1024
}
fn default_ssh_port() -> u16 {
    22
}
fn default_api_timeout() -> u64 {
    15
}

/// The inventory, validated: what the executors are built from.
#[derive(Clone)]
pub struct Inventory {
    pub ssh_hosts: Vec<SshHost>,
    /// The hosts of kind `pve`.
    pub pve_hosts: Vec<Name>,
    pub ssh: Option<SshSettings>,
    pub pbs: Option<PbsTarget>,
    pub pve: Option<PveTarget>,
    /// Every secret the inventory holds, for output redaction.
    pub secrets: Vec<String>,
}

impl std::fmt::Debug for Inventory {
    /// Everything but the secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inventory")
            .field("ssh_hosts", &self.ssh_hosts)
            .field("pve_hosts", &self.pve_hosts)
            .field("ssh", &self.ssh)
            .field("pbs", &self.pbs)
            .field("pve", &self.pve)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct PbsTarget {
    pub host: Name,
    pub endpoint: ApiEndpoint,
    pub datastore: Name,
    pub mountpoint: AbsPath,
    pub services: Vec<Name>,
    pub vm: Option<(Name, Vmid)>,
}

#[derive(Debug, Clone)]
pub struct PveTarget {
    pub endpoint: ApiEndpoint,
    pub storage: Name,
}

impl Config {
    /// The estate sections playbooks need that this config does not have: without them no
    /// run can happen.
    pub fn missing_estate(&self) -> Vec<String> {
        [
            ("[ssh]", self.ssh.is_none()),
            ("[[hosts]]", self.hosts.is_empty()),
            ("[pbs]", self.pbs.is_none()),
            ("[pve]", self.pve.is_none()),
        ]
        .into_iter()
        .filter(|(_, missing)| *missing)
        .map(|(section, _)| section.to_owned())
        .collect()
    }

    /// Validates the inventory and reads its secrets, reporting every problem with its
    /// location.
    pub fn resolve_inventory(
        &self,
        source: &ConfigSource,
        env: &impl Fn(&str) -> Option<String>,
    ) -> Result<Inventory, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut secrets = Vec::new();

        let mut ssh_hosts = Vec::new();
        let mut kinds = Vec::new();
        for entry in &self.hosts {
            let location = source.locate(entry.span());
            let host = entry.get_ref();
            let mut problem = |message: String| {
                problems.push(Problem {
                    location: location.clone(),
                    message: format!("host '{}': {message}", host.name),
                })
            };
            let name = match Name::parse(&host.name) {
                Ok(name) => name,
                Err(e) => {
                    problem(e.to_string());
                    continue;
                }
            };
            if ssh_hosts.iter().any(|h: &SshHost| h.name == name) {
                problem("this name is used by an earlier host".into());
            }
            if host.address.trim().is_empty() || host.address.contains(char::is_whitespace) {
                problem("address must be a host name or IP address".into());
            }
            if host.port == 0 {
                problem("port must not be 0".into());
            }
            kinds.push((name.clone(), host.kind));
            ssh_hosts.push(SshHost {
                name,
                address: host.address.clone(),
                port: host.port,
                user: String::new(),
            });
        }

        let ssh = self.ssh.as_ref().and_then(|entry| {
            let location = source.locate(entry.span());
            let ssh = entry.get_ref();
            let mut problem = |message: String| problems.push(Problem { location: location.clone(), message: format!("ssh: {message}") });
            for host in &mut ssh_hosts {
                host.user = ssh.user.clone();
            }
            let auth = match (&ssh.key_file, &ssh.password_file) {
                (Some(key), None) => {
                    if !key.is_file() {
                        problem(format!("key_file {} does not exist", key.display()));
                    } else if let Err(e) = check_secret_file(key) {
                        problem(format!("key_file {e}"));
                    }
                    Some(SshAuth::KeyFile(key.clone()))
                }
                (None, Some(file)) => match std::fs::read_to_string(file)
                    .map_err(|e| format!("cannot read password_file {}: {e}", file.display()))
                    .and_then(|password| check_secret_file(file).map(|()| password).map_err(|e| format!("password_file {e}")))
                {
                    Ok(password) => {
                        secrets.push(password.trim_end_matches(['\n', '\r']).to_owned());
                        Some(SshAuth::PasswordFile(file.clone()))
                    }
                    Err(e) => {
                        problem(e);
                        None
                    }
                },
                _ => {
                    problem("set key_file or password_file, exactly one".into());
                    None
                }
            };
            let host_keys = match (&ssh.known_hosts, ssh.insecure_skip_host_key_check) {
                (Some(path), false) => {
                    if !path.is_file() {
                        problem(format!("known_hosts {} does not exist", path.display()));
                    } else if let Err(e) = check_known_hosts(path) {
                        problem(format!("known_hosts {e}"));
                    }
                    Some(HostKeyCheck::KnownHosts(path.clone()))
                }
                (None, true) => Some(HostKeyCheck::InsecureSkip),
                (Some(_), true) => {
                    problem("set known_hosts or insecure_skip_host_key_check, not both".into());
                    None
                }
                (None, false) => {
                    problem("set known_hosts to pin host keys (or, for a lab only, insecure_skip_host_key_check = true)".into());
                    None
                }
            };
            if !(1..=300).contains(&ssh.connect_timeout_secs) {
                problem(format!("connect_timeout_secs {} is outside 1..=300", ssh.connect_timeout_secs));
            }
            if !(1024..=16 * 1024 * 1024).contains(&ssh.output_cap_bytes) {
                problem(format!("output_cap_bytes {} is outside 1024..=16777216", ssh.output_cap_bytes));
            }
            Some(SshSettings {
                auth: auth?,
                host_keys: host_keys?,
                connect_timeout: Duration::from_secs(ssh.connect_timeout_secs),
                output_cap: ssh.output_cap_bytes,
            })
        });
        if !ssh_hosts.is_empty() && self.ssh.is_none() {
            problems.push(Problem {
                location: source.locate_key("hosts"),
                message: "hosts need an [ssh] section (user, key_file, known_hosts)".into(),
            });
        }

        let host_of_kind = |name: &str, kind: HostKind| {
            kinds.iter().any(|(n, k)| n.as_str() == name && *k == kind)
        };
        let pbs = self.pbs.as_ref().and_then(|entry| {
            let location = source.locate(entry.span());
            let pbs = entry.get_ref();
            let mut local = Vec::new();
            let endpoint = resolve_api("pbs", &pbs.api, env, &mut local, &mut secrets);
            if !host_of_kind(&pbs.host, HostKind::Pbs) {
                local.push(format!(
                    "host '{}' is not a [[hosts]] entry of kind \"pbs\"",
                    pbs.host
                ));
            }
            let host = noted(Name::parse(&pbs.host), &mut local);
            let datastore = noted(Name::parse(&pbs.datastore), &mut local);
            let mountpoint = noted(AbsPath::parse(&pbs.mountpoint), &mut local);
            let services: Option<Vec<Name>> = pbs
                .services
                .iter()
                .map(|s| noted(Name::parse(s), &mut local))
                .collect();
            let vm = match &pbs.vm {
                None => Some(None),
                Some(vm) => {
                    let host = noted(Name::parse(&vm.host), &mut local);
                    let vmid = noted(Vmid::new(vm.vmid), &mut local);
                    if !host_of_kind(&vm.host, HostKind::Pve) {
                        local.push(format!(
                            "vm.host '{}' is not a [[hosts]] entry of kind \"pve\"",
                            vm.host
                        ));
                    }
                    host.zip(vmid).map(Some)
                }
            };
            if pbs.services.is_empty() {
                local.push(
                    "services must name the PBS units (proxmox-backup, proxmox-backup-proxy)"
                        .into(),
                );
            }
            problems.extend(local.into_iter().map(|m| Problem {
                location: location.clone(),
                message: format!("pbs: {m}"),
            }));
            Some(PbsTarget {
                host: host?,
                endpoint: endpoint?,
                datastore: datastore?,
                mountpoint: mountpoint?,
                services: services?,
                vm: vm?,
            })
        });

        let pve = self.pve.as_ref().and_then(|entry| {
            let location = source.locate(entry.span());
            let pve = entry.get_ref();
            let mut local = Vec::new();
            let endpoint = resolve_api("pve", &pve.api, env, &mut local, &mut secrets);
            let storage = noted(Name::parse(&pve.storage), &mut local);
            problems.extend(local.into_iter().map(|m| Problem {
                location: location.clone(),
                message: format!("pve: {m}"),
            }));
            Some(PveTarget {
                endpoint: endpoint?,
                storage: storage?,
            })
        });

        if problems.is_empty() {
            let pve_hosts = kinds
                .iter()
                .filter(|(_, kind)| *kind == HostKind::Pve)
                .map(|(name, _)| name.clone())
                .collect();
            Ok(Inventory {
                ssh_hosts,
                pve_hosts,
                ssh,
                pbs,
                pve,
                secrets,
            })
        } else {
            Err(problems)
        }
    }
}

/// The value, or `None` with the error noted.
fn noted<T>(
    result: Result<T, crate::exec::command::TemplateError>,
    notes: &mut Vec<String>,
) -> Option<T> {
    result.map_err(|e| notes.push(e.to_string())).ok()
}

fn resolve_api(
    what: &str,
    api: &ApiConfig,
    env: &impl Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
    secrets: &mut Vec<String>,
) -> Option<ApiEndpoint> {
    match url::Url::parse(&api.url) {
        Ok(url) if url.scheme() != "https" => {
            problems.push(format!("url '{}' must start with https://", api.url))
        }
        Ok(url) if !url.username().is_empty() || url.password().is_some() => problems.push(
            "url must not carry credentials; use token_secret_env or token_secret_file".to_owned(),
        ),
        Ok(url) if url.path() != "/" || url.query().is_some() => problems.push(format!(
            "url '{}' must be only https://HOST:PORT (runbookd adds /api2/json)",
            api.url
        )),
        Ok(_) => {}
        Err(e) => problems.push(format!("url '{}' is not a URL: {e}", api.url)),
    }
    let trust = match (&api.fingerprint, &api.ca_file) {
        (Some(fingerprint), None) => CertFingerprint::parse(fingerprint)
            .map(TlsTrust::Fingerprint)
            .map_err(|e| problems.push(e.to_string()))
            .ok(),
        (None, Some(path)) => {
            if !path.is_file() {
                problems.push(format!("ca_file {} does not exist", path.display()));
            }
            Some(TlsTrust::CaFile(path.clone()))
        }
        _ => {
            problems.push(format!("{what}: set fingerprint (SHA-256, to pin a self-signed certificate) or ca_file, exactly one"));
            None
        }
    };
    let valid_token_id = api
        .token_id
        .split_once('!')
        .is_some_and(|(user, id)| user.contains('@') && !id.is_empty())
        && !api.token_id.contains([':', '=', ' ']);
    if !valid_token_id {
        problems.push(format!(
            "token_id '{}' must look like USER@REALM!TOKENID",
            api.token_id
        ));
    }
    let secret = read_secret(
        "token_secret",
        api.token_secret_env.as_deref(),
        api.token_secret_file.as_deref(),
        env,
    )
    .map_err(|e| problems.push(e))
    .ok();
    if let Some(secret) = &secret {
        secrets.push(secret.clone());
    }
    if !(1..=300).contains(&api.timeout_secs) {
        problems.push(format!(
            "timeout_secs {} is outside 1..=300",
            api.timeout_secs
        ));
    }
    Some(ApiEndpoint {
        base_url: api.url.trim_end_matches('/').to_owned(),
        trust: trust?,
        token_id: api.token_id.clone(),
        token_secret: secret?,
        timeout: Duration::from_secs(api.timeout_secs),
        connect_timeout: Duration::from_secs(api.timeout_secs.min(10)),
    })
}

#[cfg(test)]
mod tests {
    use super::super::{Config, Overrides};
    use std::io::Write;

    #[test]
    fn every_inventory_problem_is_reported_with_its_line() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(
            concat!(
                "[ssh]\nkey_file = \"/nonexistent/key\"\n\n",
                "[[hosts]]\nname = \"pbs box\"\nkind = \"pbs\"\naddress = \"127.0.0.1\"\n\n",
                "[[hosts]]\nname = \"ruapehu\"\nkind = \"pve\"\naddress = \"127.0.0.1\"\nport = 2201\n\n",
                "[pbs]\nhost = \"pbs\"\nurl = \"http://127.0.0.1:8007\"\nfingerprint = \"AB:CD\"\n",
                "token_id = \"root@pam\"\ntoken_secret_env = \"UNSET\"\ndatastore = \"pbs-datastore\"\n",
                "mountpoint = \"mnt\"\nservices = [\"proxmox-backup\"]\nvm = { host = \"nowhere\", vmid = 101 }\n",
            )
            .as_bytes(),
        )
        .unwrap();
        let (config, source) = Config::load(Some(file.path()), &Overrides::default()).unwrap();
        let problems = config.resolve_inventory(&source, &|_| None).unwrap_err();
        let printed: Vec<String> = problems.iter().map(ToString::to_string).collect();
        let at = |line: usize| format!("{}:{line}:", file.path().display());
        let has = |line: usize, text: &str| {
            printed
                .iter()
                .any(|p| p.starts_with(&at(line)) && p.contains(text))
        };
        assert!(
            has(4, "host 'pbs box': name 'pbs box' is invalid"),
            "{printed:#?}"
        );
        assert!(
            has(1, "key_file /nonexistent/key does not exist"),
            "{printed:#?}"
        );
        assert!(has(1, "set known_hosts to pin host keys"), "{printed:#?}");
        assert!(
            has(
                15,
                "pbs: url 'http://127.0.0.1:8007' must start with https://"
            ),
            "{printed:#?}"
        );
        assert!(has(15, "fingerprint 'AB:CD' is invalid"), "{printed:#?}");
        assert!(
            has(15, "token_id 'root@pam' must look like USER@REALM!TOKENID"),
            "{printed:#?}"
        );
        assert!(has(15, "the env var UNSET is not set"), "{printed:#?}");
        assert!(
            has(15, "host 'pbs' is not a [[hosts]] entry of kind \"pbs\""),
            "{printed:#?}"
        );
        assert!(has(15, "path 'mnt' is invalid"), "{printed:#?}");
        assert!(
            has(15, "vm.host 'nowhere' is not a [[hosts]] entry"),
            "{printed:#?}"
        );
    }
}
