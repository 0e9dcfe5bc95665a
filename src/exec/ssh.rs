//! Running commands on hosts over SSH (russh's client).
//!
//! - One connection per host per [`SshSession`] (a run makes one session), reused by every
//!   step; commands on one host run as concurrent channels of that connection.
//! - Host keys are pinned through a known_hosts file; skipping the check must be asked for
//!   explicitly and logs a warning.
//! - Connecting has a timeout; every command has one on both sides: the client stops waiting,
//!   and the host runs the command under `timeout`, because a disconnected client does not stop
//!   a remote command.
//! - A connection found dead before a command is sent is re-established once. A connection that
//!   dies while a command runs is reported as such: the command may have run, so it is not
//!   repeated here.
//! - stdout and stderr are capped while they stream in, then redacted.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use russh::client::{Handle, Handler};
use russh::keys::PrivateKeyWithHashAlg;
use russh::keys::PublicKeyOrCertificate;
use tokio::sync::Mutex;

use super::command::{Name, RemoteCommand};
use super::output::{CappedBuffer, Redactor};

/// How the client proves who it is. Passwords come from a file, never from config.
#[derive(Debug, Clone)]
pub enum SshAuth {
    KeyFile(PathBuf),
    PasswordFile(PathBuf),
}

/// How the server proves who it is.
#[derive(Debug, Clone)]
pub enum HostKeyCheck {
    KnownHosts(PathBuf),
    /// Accept any host key. Only for labs; logs a warning.
    InsecureSkip,
}

/// A host runbookd may run commands on.
#[derive(Debug, Clone)]
pub struct SshHost {
    pub name: Name,
    /// DNS name or IP address, as known_hosts names it.
    pub address: String,
    pub port: u16,
    pub user: String,
}

#[derive(Debug, Clone)]
pub struct SshSettings {
    pub auth: SshAuth,
    pub host_keys: HostKeyCheck,
    pub connect_timeout: Duration,
    /// Bytes kept of each of stdout and stderr.
    pub output_cap: usize,
}

/// What a command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    pub exit_status: u32,
    pub stdout: String,
    pub stderr: String,
    pub truncated: bool,
    pub duration: Duration,
}

impl CommandOutput {
    /// `timeout` on the host exits 124 when it had to stop the command.
    pub fn timed_out_on_host(&self) -> bool {
        self.exit_status == 124
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("'{0}' is not a host in the inventory")]
    UnknownHost(String),
    #[error("cannot read the SSH credentials: {0}")]
    Credentials(String),
    #[error("cannot connect to {host} ({address}): {detail}")]
    Connect {
        host: String,
        address: String,
        detail: String,
    },
    #[error("connecting to {host} ({address}) timed out after {after:?}")]
    ConnectTimeout {
        host: String,
        address: String,
        after: Duration,
    },
    #[error("{host} presented a host key that is not pinned for it; refusing to connect")]
    HostKeyRejected { host: String },
    #[error("{host} refused the SSH credentials")]
    AuthRejected { host: String },
    #[error("'{command}' on {host} did not finish within {after:?}")]
    Timeout {
        host: String,
        command: String,
        after: Duration,
    },
    #[error("the connection to {host} dropped while '{command}' ran; whether it ran is unknown")]
    Dropped { host: String, command: String },
}

impl SshError {
    /// Worth trying again later: the network or the host may recover. Host-key and credential
    /// problems need a human.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. }
                | Self::ConnectTimeout { .. }
                | Self::Timeout { .. }
                | Self::Dropped { .. }
        )
    }
}

/// Runs commands on inventory hosts. The engine holds an `Arc<dyn RemoteShell>` so tests can
/// swap the transport.
#[async_trait::async_trait]
pub trait RemoteShell: Send + Sync {
    /// Runs `command` on `host`, bounded by `timeout` on both sides.
    async fn run(
        &self,
        host: &Name,
        command: &RemoteCommand,
        timeout: Duration,
    ) -> Result<CommandOutput, SshError>;
}

/// Extra time the client waits beyond the remote `timeout`: the host's `-k 5` plus latency.
const CLIENT_GRACE: Duration = Duration::from_secs(7);

/// One connection per host, opened on first use and reused.
pub struct SshSession {
    hosts: BTreeMap<Name, SshHost>,
    settings: SshSettings,
    redactor: Redactor,
    connections: Mutex<HashMap<Name, Arc<Mutex<Option<Client>>>>>,
}

/// Whether a failed exec may be retried on a new connection.
enum ExecFailure {
    /// Nothing reached the host.
    NotStarted(String),
    Failed(SshError),
}

impl SshSession {
    pub fn new(
        hosts: impl IntoIterator<Item = SshHost>,
        settings: SshSettings,
        redactor: Redactor,
    ) -> Self {
        if matches!(settings.host_keys, HostKeyCheck::InsecureSkip) {
            tracing::warn!(
                "SSH host key checking is OFF (insecure_skip_host_key_check): any machine can impersonate the hosts"
            );
        }
        Self {
            hosts: hosts.into_iter().map(|h| (h.name.clone(), h)).collect(),
            settings,
            redactor,
            connections: Mutex::new(HashMap::new()),
        }
    }

    /// Proves who we are on a fresh connection.
    async fn authenticate(
        &self,
        handle: &mut Handle<PinnedHostKey>,
        host: &SshHost,
    ) -> Result<(), SshError> {
        let outcome = match &self.settings.auth {
            SshAuth::KeyFile(path) => {
                let key = russh::keys::load_secret_key(path, None).map_err(|e| {
                    SshError::Credentials(format!("key file {}: {e}", path.display()))
                })?;
                let hash = handle
                    .best_supported_rsa_hash()
                    .await
                    .map_err(|e| connect_failed(host, e))?
                    .flatten();
                handle
                    .authenticate_publickey(
                        &host.user,
                        PrivateKeyWithHashAlg::new(Arc::new(key), hash),
                    )
                    .await
            }
            SshAuth::PasswordFile(path) => {
                let password = std::fs::read_to_string(path).map_err(|e| {
                    SshError::Credentials(format!("password file {}: {e}", path.display()))
                })?;
                handle
                    .authenticate_password(&host.user, password.trim_end_matches(['\n', '\r']))
                    .await
            }
        };
        match outcome {
            Ok(result) if result.success() => Ok(()),
            Ok(_) => Err(SshError::AuthRejected {
                host: host.name.to_string(),
            }),
            Err(error) => Err(connect_failed(host, error)),
        }
    }

    async fn connect(&self, host: &SshHost) -> Result<Client, SshError> {
        let config = russh::client::Config {
            inactivity_timeout: Some(Duration::from_secs(300)),
            keepalive_interval: Some(Duration::from_secs(15)),
            // Small request/response exchanges: Nagle's algorithm would add ~40 ms to each.
            nodelay: true,
            ..Default::default()
        };
        let pinned = PinnedHostKey {
            address: host.address.clone(),
            port: host.port,
            check: self.settings.host_keys.clone(),
        };
        let connecting = async {
            let mut handle = russh::client::connect(
                Arc::new(config),
                (host.address.as_str(), host.port),
                pinned,
            )
            .await
            .map_err(|error| match error {
                russh::Error::UnknownKey | russh::Error::KeyChanged { .. } => {
                    SshError::HostKeyRejected {
                        host: host.name.to_string(),
                    }
                }
                other => connect_failed(host, other),
            })?;
            self.authenticate(&mut handle, host).await?;
            Ok(Arc::new(handle))
        };
        tokio::time::timeout(self.settings.connect_timeout, connecting)
            .await
            .unwrap_or_else(|_| {
                Err(SshError::ConnectTimeout {
                    host: host.name.to_string(),
                    address: format!("{}:{}", host.address, host.port),
                    after: self.settings.connect_timeout,
                })
            })
    }

    /// The host's connection, opening it if needed. Concurrent callers for one host share one
    /// connection attempt.
    async fn client(&self, host: &SshHost, fresh: bool) -> Result<Client, SshError> {
        let slot = {
            let mut connections = self.connections.lock().await;
            connections.entry(host.name.clone()).or_default().clone()
        };
        let mut slot = slot.lock().await;
        if let Some(client) = slot.as_ref().filter(|c| !fresh && !c.is_closed()) {
            return Ok(client.clone());
        }
        let client = self.connect(host).await?;
        *slot = Some(client.clone());
        Ok(client)
    }

    /// [`Self::client`], bounded: queued behind another caller's slow connect to the same
    /// host, a caller still gives up in time (nothing was sent, so it is a connect failure).
    async fn client_within(&self, host: &SshHost, fresh: bool) -> Result<Client, SshError> {
        let bound = 2 * self.settings.connect_timeout;
        tokio::time::timeout(bound, self.client(host, fresh))
            .await
            .unwrap_or_else(|_| {
                Err(SshError::ConnectTimeout {
                    host: host.name.to_string(),
                    address: format!("{}:{}", host.address, host.port),
                    after: bound,
                })
            })
    }

    async fn exec(
        &self,
        client: &Client,
        host: &SshHost,
        line: &str,
        shown: &str,
        limit: Duration,
    ) -> Result<CommandOutput, ExecFailure> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + limit;
        let mut channel = tokio::time::timeout_at(deadline, client.channel_open_session())
            .await
            .map_err(|_| ExecFailure::NotStarted("opening a channel timed out".to_owned()))?
            .map_err(|e| ExecFailure::NotStarted(e.to_string()))?;
        channel
            .exec(true, line)
            .await
            .map_err(|e| ExecFailure::NotStarted(e.to_string()))?;
        let mut stdout = CappedBuffer::new(self.settings.output_cap);
        let mut stderr = CappedBuffer::new(self.settings.output_cap);
        let mut exit = None;
        loop {
            match tokio::time::timeout_at(deadline, channel.wait()).await {
                Err(_) => {
                    let _ = channel.close().await;
                    return Err(ExecFailure::Failed(SshError::Timeout {
                        host: host.name.to_string(),
                        command: shown.to_owned(),
                        after: limit,
                    }));
                }
                Ok(None) => break,
                Ok(Some(russh::ChannelMsg::Data { data })) => stdout.push(&data),
                Ok(Some(russh::ChannelMsg::ExtendedData { data, ext: 1 })) => stderr.push(&data),
                Ok(Some(russh::ChannelMsg::ExitStatus { exit_status })) => exit = Some(exit_status),
                Ok(Some(russh::ChannelMsg::ExitSignal { .. })) => exit = exit.or(Some(128 + 9)),
                Ok(Some(_)) => {}
            }
        }
        let Some(exit_status) = exit else {
            return Err(ExecFailure::Failed(SshError::Dropped {
                host: host.name.to_string(),
                command: shown.to_owned(),
            }));
        };
        let truncated = stdout.truncated() || stderr.truncated();
        Ok(CommandOutput {
            exit_status,
            stdout: stdout.finish(&self.redactor),
            stderr: stderr.finish(&self.redactor),
            truncated,
            duration: started.elapsed(),
        })
    }
}

#[async_trait::async_trait]
impl RemoteShell for SshSession {
    async fn run(
        &self,
        host: &Name,
        command: &RemoteCommand,
        timeout: Duration,
    ) -> Result<CommandOutput, SshError> {
        let target = self
            .hosts
            .get(host)
            .ok_or_else(|| SshError::UnknownHost(host.to_string()))?;
        let remote_seconds = timeout.as_secs().max(1);
        let line = command.with_remote_timeout(remote_seconds);
        let limit = Duration::from_secs(remote_seconds) + CLIENT_GRACE;
        let client = self.client_within(target, false).await?;
        match self
            .exec(&client, target, &line, command.as_str(), limit)
            .await
        {
            Ok(output) => Ok(output),
            Err(ExecFailure::Failed(error)) => Err(error),
            Err(ExecFailure::NotStarted(reason)) => {
                tracing::info!(host = %host, %reason, "SSH connection was dead before the command was sent; reconnecting once");
                let client = self.client_within(target, true).await?;
                match self
                    .exec(&client, target, &line, command.as_str(), limit)
                    .await
                {
                    Ok(output) => Ok(output),
                    Err(ExecFailure::Failed(error)) => Err(error),
                    Err(ExecFailure::NotStarted(detail)) => Err(SshError::Connect {
                        host: host.to_string(),
                        address: target.address.clone(),
                        detail,
                    }),
                }
            }
        }
    }
}

/// A connection that failed for a reason that may pass: the network, the host, the protocol.
fn connect_failed(host: &SshHost, error: russh::Error) -> SshError {
    SshError::Connect {
        host: host.name.to_string(),
        address: format!("{}:{}", host.address, host.port),
        detail: error.to_string(),
    }
}

/// One connection to a host, shared by the commands of a session.
type Client = Arc<Handle<PinnedHostKey>>;

/// Accepts the server only if its key is the one pinned for it in known_hosts (or, asked for
/// explicitly, any key).
struct PinnedHostKey {
    address: String,
    port: u16,
    check: HostKeyCheck,
}

impl Handler for PinnedHostKey {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        presented: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(match (&self.check, presented) {
            (HostKeyCheck::InsecureSkip, _) => true,
            // Unknown, changed, or an unreadable file: all refuse.
            (HostKeyCheck::KnownHosts(path), PublicKeyOrCertificate::PublicKey { key, .. }) => {
                russh::keys::check_known_hosts_path(&self.address, self.port, key, path)
                    .unwrap_or(false)
            }
            // Hosts are pinned by key; a certificate authority is not a pin.
            (HostKeyCheck::KnownHosts(_), PublicKeyOrCertificate::Certificate(_)) => false,
        })
    }
}
