//! One SSH server per simulated host (russh, the version the client uses). Each command is
//! logged, read by [`super::shell`], and answered after the host's injected latency.
//! Unreachable hosts accept TCP and never speak; `flaky-ssh` drops every Nth connection.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{PrivateKey, PublicKey};
use russh::server::{Auth, Msg, Session};
use russh::{Channel, ChannelId};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::estate::PBS_HOST;
use super::shell::{self, Completion};
use super::world::{Received, World};

/// How long a hung command may hold its task, at most.
const HUNG_COMMAND_CAP: Duration = Duration::from_secs(3600);
/// How long an unreachable host holds a silent connection before dropping it.
const SILENT_HOLD: Duration = Duration::from_secs(120);

pub type SharedWorld = Arc<Mutex<World>>;

/// A fresh Ed25519 key from the system's random source.
pub fn generate_key() -> PrivateKey {
    let seed: [u8; 32] = hex::decode(super::random_hex(32))
        .expect("hex decodes")
        .try_into()
        .expect("32 bytes");
    PrivateKey::from(Ed25519Keypair::from_seed(&seed))
}

/// The key in OpenSSH private-key format, for a key file.
pub fn private_key_pem(key: &PrivateKey) -> String {
    key.to_openssh(LineEnding::LF)
        .expect("an Ed25519 key encodes")
        .to_string()
}

/// `ssh-ed25519 AAAA…`, for known_hosts and authorized_keys.
pub fn public_key_line(key: &PublicKey) -> String {
    key.to_openssh().expect("an Ed25519 key encodes")
}

/// Who may log in to the twin's hosts: `root`, with the lab's key or the lab's password.
#[derive(Clone)]
pub struct LabLogin {
    pub client_key: PublicKey,
    pub password: String,
}

/// Starts the SSH server for `host` on `listener`.
pub fn serve(
    host: &str,
    listener: TcpListener,
    host_key: PrivateKey,
    login: LabLogin,
    world: SharedWorld,
) -> JoinHandle<()> {
    let config = Arc::new(russh::server::Config {
        keys: vec![host_key],
        auth_rejection_time: Duration::from_millis(100),
        auth_rejection_time_initial: Some(Duration::ZERO),
        inactivity_timeout: Some(Duration::from_secs(600)),
        ..Default::default()
    });
    let host = host.to_owned();
    let login = Arc::new(login);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _peer)) = listener.accept().await else {
                continue;
            };
            let (silent, drop_it) = {
                let mut world = world.lock().expect("world lock");
                world.ssh_connections += 1;
                let silent = world.unreachable.contains(&host)
                    || (host == PBS_HOST && !world.pbs_vm_running());
                let drop_it = world
                    .drop_every_nth_ssh
                    .is_some_and(|n| n > 0 && world.ssh_connections.is_multiple_of(n));
                (silent, drop_it)
            };
            if silent {
                tokio::spawn(async move {
                    tokio::time::sleep(SILENT_HOLD).await;
                    drop(stream);
                });
                continue;
            }
            if drop_it {
                drop(stream);
                continue;
            }
            let _ = stream.set_nodelay(true);
            let handler = HostSession {
                host: host.clone(),
                world: world.clone(),
                login: login.clone(),
            };
            let config = config.clone();
            tokio::spawn(async move {
                if let Ok(session) = russh::server::run_stream(config, stream, handler).await {
                    let _ = session.await;
                }
            });
        }
    })
}

/// Binds a loopback port for a host's SSH server.
pub async fn bind() -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

struct HostSession {
    host: String,
    world: SharedWorld,
    login: Arc<LabLogin>,
}

impl russh::server::Handler for HostSession {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        key: &PublicKey,
    ) -> Result<Auth, Self::Error> {
        Ok(self.decide(user == "root" && *key == self.login.client_key))
    }

    async fn auth_publickey(&mut self, user: &str, key: &PublicKey) -> Result<Auth, Self::Error> {
        Ok(self.decide(user == "root" && *key == self.login.client_key))
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        let ok = bool::from(password.as_bytes().ct_eq(self.login.password.as_bytes()));
        Ok(self.decide(user == "root" && ok))
    }

    async fn channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let line = String::from_utf8_lossy(data).into_owned();
        let (outcome, latency) = {
            let mut world = self.world.lock().expect("world lock");
            let outcome = shell::run(&mut world, &self.host, &line);
            let now = world.now();
            world.record(Received {
                at: now,
                host: self.host.clone(),
                channel: "ssh".to_owned(),
                text: line,
                executed: outcome.executed.clone(),
                exit: Some(outcome.exit),
            });
            let latency = world.latency.get(&self.host).copied().unwrap_or_default();
            (outcome, latency)
        };
        session.channel_success(channel)?;
        let handle = session.handle();
        let world = self.world.clone();
        tokio::spawn(async move {
            let wait = match outcome.completion {
                Completion::Now => Duration::ZERO,
                Completion::After(after) => after,
                Completion::Never => HUNG_COMMAND_CAP,
            };
            tokio::time::sleep(latency + wait).await;
            if !outcome.deferred.is_empty() {
                let mut world = world.lock().expect("world lock");
                let now = world.now();
                world.apply_backups(&outcome.deferred, now);
            }
            if !outcome.stdout.is_empty() {
                let _ = handle.data(channel, outcome.stdout.into_bytes()).await;
            }
            if !outcome.stderr.is_empty() {
                let _ = handle
                    .extended_data(channel, 1, outcome.stderr.into_bytes())
                    .await;
            }
            let _ = handle.exit_status_request(channel, outcome.exit).await;
            let _ = handle.eof(channel).await;
            let _ = handle.close(channel).await;
        });
        Ok(())
    }
}

impl HostSession {
    fn decide(&self, accept: bool) -> Auth {
        if accept {
            Auth::Accept
        } else {
            Auth::Reject {
                proceed_with_methods: None,
                partial_success: false,
            }
        }
    }
}
