//! Running commands on hosts over SSH (async-ssh2-tokio).
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

use async_ssh2_tokio::{AuthMethod, Client, ServerCheckMethod};
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

    fn auth_method(&self) -> Result<AuthMethod, SshError> {
        match &self.settings.auth {
            SshAuth::KeyFile(path) => {
                if !path.exists() {
                    return Err(SshError::Credentials(format!(
                        "key file {} does not exist",
                        path.display()
                    )));
                }
                Ok(AuthMethod::with_key_file(path, None))
            }
            SshAuth::PasswordFile(path) => {
                let password = std::fs::read_to_string(path).map_err(|e| {
                    SshError::Credentials(format!("password file {}: {e}", path.display()))
                })?;
                Ok(AuthMethod::with_password(
                    password.trim_end_matches(['\n', '\r']),
                ))
            }
        }
    }

    async fn connect(&self, host: &SshHost) -> Result<Client, SshError> {
        let check = match &self.settings.host_keys {
            HostKeyCheck::KnownHosts(path) => {
                ServerCheckMethod::with_known_hosts_file(&path.to_string_lossy())
            }
            HostKeyCheck::InsecureSkip => ServerCheckMethod::NoCheck,
        };
        let config = russh::client::Config {
            inactivity_timeout: Some(Duration::from_secs(300)),
            keepalive_interval: Some(Duration::from_secs(15)),
            // Small request/response exchanges: Nagle's algorithm would add ~40 ms to each.
            nodelay: true,
            ..Default::default()
        };
        let (name, address) = (
            host.name.to_string(),
            format!("{}:{}", host.address, host.port),
        );
        let connecting = Client::connect_with_config(
            (host.address.as_str(), host.port),
            &host.user,
            self.auth_method()?,
            check,
            config,
        );
        match tokio::time::timeout(self.settings.connect_timeout, connecting).await {
            Err(_) => Err(SshError::ConnectTimeout {
                host: name,
                address,
                after: self.settings.connect_timeout,
            }),
            Ok(Ok(client)) => Ok(client),
            Ok(Err(error)) => Err(classify_connect_error(error, name, address)),
        }
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
        let mut channel = tokio::time::timeout_at(deadline, client.get_channel())
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

fn classify_connect_error(
    error: async_ssh2_tokio::Error,
    host: String,
    address: String,
) -> SshError {
    use async_ssh2_tokio::Error as E;
    match error {
        E::ServerCheckFailed
        | E::SshError(russh::Error::UnknownKey)
        | E::SshError(russh::Error::KeyChanged { .. }) => SshError::HostKeyRejected { host },
        E::KeyAuthFailed | E::PasswordWrong => SshError::AuthRejected { host },
        E::KeyInvalid(e) => SshError::Credentials(e.to_string()),
        other => SshError::Connect {
            host,
            address,
            detail: other.to_string(),
        },
    }
}
