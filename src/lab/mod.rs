//! The simulated estate ("the twin"): the hosts of reference/estate.toml on loopback, all
//! backed by one [`world::World`].
//!
//! - [`estate`]: who is who (hosts, guests, datastore), with loopback in place of addresses.
//! - [`world`]: the state and the scenarios; remediations change it.
//! - [`shell`]: what a host does with a command line.
//! - [`ssh`]: one SSH server per host.

pub mod api;
pub mod control;
pub mod estate;
pub mod https;
pub mod shell;
pub mod ssh;
pub mod world;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::exec::command::{CertFingerprint, Name};
use crate::exec::http::{ApiEndpoint, TlsTrust};
use crate::exec::ssh::{HostKeyCheck, SshAuth, SshHost, SshSettings};
use api::ApiToken;
use https::{Admission, SelfSigned};
use ssh::{LabLogin, SharedWorld};
use world::World;

/// A running twin.
pub struct Lab {
    pub world: SharedWorld,
    /// SSH address of each host, by name.
    pub ssh: BTreeMap<String, SocketAddr>,
    /// The PBS API's address and certificate fingerprint.
    pub pbs_api: SocketAddr,
    pub pbs_fingerprint: CertFingerprint,
    /// The PVE API's address on each PVE host, and their (shared) certificate fingerprint.
    pub pve_api: BTreeMap<String, SocketAddr>,
    pub pve_fingerprint: CertFingerprint,
    /// The token both APIs accept: PBS as `ID:SECRET`, PVE as `ID=SECRET`.
    pub api_token: ApiToken,
    pbs_cert_pem: String,
    pve_cert_pem: String,
    /// Files a client needs: `id_ed25519`, `known_hosts`, `password`.
    pub dir: PathBuf,
    tasks: Vec<JoinHandle<()>>,
}

impl Lab {
    /// Starts every host of the estate on loopback, with `scenario` loaded, and writes the
    /// client's key, known_hosts and password under `dir`.
    pub async fn start(dir: &Path, scenario: &str, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let pbs_cert = SelfSigned::generate()?;
        let pve_cert = SelfSigned::generate()?;
        let pbs_fingerprint = pbs_cert.fingerprint();
        let world =
            World::new(scenario, clock, pbs_fingerprint.as_str()).map_err(anyhow::Error::msg)?;
        let world: SharedWorld = Arc::new(Mutex::new(world));
        let api_token = ApiToken {
            id: "root@pam!runbookd".to_owned(),
            secret: random_hex(16),
        };

        let client_key = ssh::generate_key();
        let password = random_hex(12);
        write_private(&dir.join("id_ed25519"), &ssh::private_key_pem(&client_key))?;
        write_private(&dir.join("password"), &format!("{password}\n"))?;
        let login = LabLogin {
            client_key: client_key.public_key().clone(),
            password,
        };

        let mut ssh_addrs = BTreeMap::new();
        let mut known_hosts = String::new();
        let mut tasks = Vec::new();
        for host in estate::PVE_HOSTS.iter().chain([&estate::PBS_HOST]) {
            let host_key = ssh::generate_key();
            let (listener, addr) = ssh::bind().await?;
            known_hosts.push_str(&format!(
                "[{}]:{} {}\n",
                addr.ip(),
                addr.port(),
                ssh::public_key_line(host_key.public_key())
            ));
            tasks.push(ssh::serve(
                host,
                listener,
                host_key,
                login.clone(),
                world.clone(),
            ));
            ssh_addrs.insert(host.to_string(), addr);
        }
        std::fs::write(dir.join("known_hosts"), known_hosts)?;

        let (listener, pbs_api) = https::bind().await?;
        let pbs_world = world.clone();
        let pbs_router = api::pbs_router(world.clone(), api_token.clone());
        tasks.push(https::serve(listener, &pbs_cert, pbs_router, move || {
            let world = pbs_world.lock().expect("world lock");
            if !world.pbs_vm_running() {
                Admission::Stall
            } else if !world.pbs_api_up() {
                Admission::Refuse
            } else {
                Admission::Serve
            }
        })?);
        let mut pve_api = BTreeMap::new();
        for host in estate::PVE_HOSTS {
            let (listener, addr) = https::bind().await?;
            let host_world = world.clone();
            let router = api::pve_router(world.clone(), host, api_token.clone());
            tasks.push(https::serve(listener, &pve_cert, router, move || {
                if host_world
                    .lock()
                    .expect("world lock")
                    .unreachable
                    .contains(host)
                {
                    Admission::Stall
                } else {
                    Admission::Serve
                }
            })?);
            pve_api.insert(host.to_owned(), addr);
        }
        Ok(Self {
            world,
            ssh: ssh_addrs,
            pbs_api,
            pbs_fingerprint,
            pve_api,
            pve_fingerprint: pve_cert.fingerprint(),
            api_token,
            pbs_cert_pem: pbs_cert.cert_pem.clone(),
            pve_cert_pem: pve_cert.cert_pem.clone(),
            dir: dir.to_owned(),
            tasks,
        })
    }

    /// The inventory entries a [`crate::exec::ssh::SshSession`] needs to reach the twin.
    pub fn ssh_hosts(&self) -> Vec<SshHost> {
        self.ssh
            .iter()
            .map(|(name, addr)| SshHost {
                name: Name::parse(name).expect("estate names are valid"),
                address: addr.ip().to_string(),
                port: addr.port(),
                user: "root".to_owned(),
            })
            .collect()
    }

    /// Key auth with pinned host keys: what runbookd's config for the twin says.
    pub fn ssh_settings(&self) -> SshSettings {
        SshSettings {
            auth: SshAuth::KeyFile(self.dir.join("id_ed25519")),
            host_keys: HostKeyCheck::KnownHosts(self.dir.join("known_hosts")),
            connect_timeout: std::time::Duration::from_secs(5),
            output_cap: 64 * 1024,
        }
    }

    /// How to reach the PBS API, with its certificate pinned.
    pub fn pbs_endpoint(&self) -> ApiEndpoint {
        self.endpoint(self.pbs_api, &self.pbs_fingerprint)
    }

    /// How to reach the PVE API on `host`.
    pub fn pve_endpoint(&self, host: &str) -> ApiEndpoint {
        self.endpoint(self.pve_api[host], &self.pve_fingerprint)
    }

    fn endpoint(&self, addr: SocketAddr, fingerprint: &CertFingerprint) -> ApiEndpoint {
        ApiEndpoint {
            base_url: format!("https://{addr}"),
            trust: TlsTrust::Fingerprint(fingerprint.clone()),
            token_id: self.api_token.id.clone(),
            token_secret: self.api_token.secret.clone(),
            timeout: std::time::Duration::from_secs(10),
            connect_timeout: std::time::Duration::from_secs(5),
        }
    }

    /// Writes what a person or runbookd needs to use the twin, and returns the config's path:
    /// - `runbookd.toml`: `[ssh]`, `[[hosts]]`, `[pbs]`, `[pve]` for this twin;
    /// - `api.token`: the API token's secret; `pbs.pem`, `pve.pem`: the API certificates;
    /// - `ssh_config`: for `ssh -F lab/ssh_config pbs ...`;
    /// - `env`: shell variables (`PBS_API`, `PVE_API`, `TOKEN_ID`, ...) for `curl`.
    pub fn write_files(&self) -> anyhow::Result<PathBuf> {
        let dir = &self.dir;
        write_private(
            &dir.join("api.token"),
            &format!("{}\n", self.api_token.secret),
        )?;
        std::fs::write(dir.join("pbs.pem"), &self.pbs_cert_pem)?;
        std::fs::write(dir.join("pve.pem"), &self.pve_cert_pem)?;
        let mut ssh_config = String::new();
        let mut hosts = String::new();
        for (name, addr) in &self.ssh {
            ssh_config.push_str(&format!(
                "Host {name}\n  HostName {}\n  Port {}\n  User root\n  IdentityFile {}\n  IdentitiesOnly yes\n  UserKnownHostsFile {}\n  StrictHostKeyChecking yes\n\n",
                addr.ip(),
                addr.port(),
                dir.join("id_ed25519").display(),
                dir.join("known_hosts").display()
            ));
            let kind = if name == estate::PBS_HOST {
                "pbs"
            } else {
                "pve"
            };
            hosts.push_str(&format!(
                "[[hosts]]\nname = \"{name}\"\nkind = \"{kind}\"\naddress = \"{}\"\nport = {}\n\n",
                addr.ip(),
                addr.port()
            ));
        }
        std::fs::write(dir.join("ssh_config"), ssh_config)?;
        let pve_url = format!("https://{}", self.pve_api[estate::PVE_HOSTS[0]]);
        let config = format!(
            "# runbookd config for the simulated estate (runbookd lab). Check it with:\n\
             #   runbookd check --config {config}\n\n\
             [ssh]\nuser = \"root\"\nkey_file = \"{key}\"\nknown_hosts = \"{known_hosts}\"\nconnect_timeout_secs = 5\n\n\
             {hosts}\
             [pbs]\nhost = \"{pbs_host}\"\nurl = \"https://{pbs_api}\"\nfingerprint = \"{pbs_fp}\"\n\
             token_id = \"{token_id}\"\ntoken_secret_file = \"{token_file}\"\ndatastore = \"{store}\"\n\
             mountpoint = \"{mountpoint}\"\nservices = [\"proxmox-backup\", \"proxmox-backup-proxy\"]\n\
             vm = {{ host = \"{vm_host}\", vmid = {vmid} }}\n\n\
             [pve]\nurl = \"{pve_url}\"\nfingerprint = \"{pve_fp}\"\ntoken_id = \"{token_id}\"\n\
             token_secret_file = \"{token_file}\"\nstorage = \"{storage}\"\n",
            config = dir.join("runbookd.toml").display(),
            key = dir.join("id_ed25519").display(),
            known_hosts = dir.join("known_hosts").display(),
            pbs_host = estate::PBS_HOST,
            pbs_api = self.pbs_api,
            pbs_fp = self.pbs_fingerprint.as_str(),
            token_id = self.api_token.id,
            token_file = dir.join("api.token").display(),
            store = estate::DATASTORE,
            mountpoint = estate::MOUNTPOINT,
            vm_host = estate::PBS_VM_HOST,
            vmid = estate::PBS_VMID,
            pve_fp = self.pve_fingerprint.as_str(),
            storage = estate::PVE_STORAGE_ID,
        );
        let path = dir.join("runbookd.toml");
        std::fs::write(&path, config)?;
        let mut env = format!(
            "PBS_API=https://{}\nPVE_API={pve_url}\nTOKEN_ID='{}'\n",
            self.pbs_api, self.api_token.id
        );
        for (name, addr) in &self.ssh {
            env.push_str(&format!(
                "{}_SSH_PORT={}\n",
                name.to_uppercase(),
                addr.port()
            ));
        }
        std::fs::write(dir.join("env"), env)?;
        Ok(path)
    }

    /// Serves the control API on a loopback port; `clock` must be the one the lab runs on.
    pub async fn start_control(
        &mut self,
        clock: Arc<control::OffsetClock>,
    ) -> anyhow::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let router = control::router(self.world.clone(), clock);
        self.tasks.push(tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        }));
        Ok(addr)
    }

    /// Runs `f` on the world, under its lock.
    pub fn with_world<T>(&self, f: impl FnOnce(&mut World) -> T) -> T {
        f(&mut self.world.lock().expect("world lock"))
    }
}

/// A lab with its control API and its files written: what `runbookd lab` and
/// `runbookd serve --lab` run.
pub struct RunningLab {
    pub lab: Lab,
    pub control: SocketAddr,
    /// The generated runbookd config for this twin.
    pub config: PathBuf,
}

impl RunningLab {
    pub async fn launch(dir: &Path, scenario: &str) -> anyhow::Result<Self> {
        let clock = Arc::new(control::OffsetClock::default());
        let mut lab = Lab::start(dir, scenario, clock.clone()).await?;
        let control = lab.start_control(clock).await?;
        let config = lab.write_files()?;
        let mut env = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("env"))?;
        std::io::Write::write_all(&mut env, format!("CONTROL=http://{control}\n").as_bytes())?;
        Ok(Self {
            lab,
            control,
            config,
        })
    }

    /// How to use it, for a person at a terminal.
    pub fn guide(&self) -> String {
        let dir = self.lab.dir.display();
        let scenario = self.lab.with_world(|w| w.scenario.clone());
        let mut text = format!("runbookd lab: scenario {scenario}, files in {dir}/\n");
        text.push_str(&format!(
            "  config   {}   (runbookd check --config {})\n",
            self.config.display(),
            self.config.display()
        ));
        for (name, addr) in &self.lab.ssh {
            text.push_str(&format!(
                "  ssh      {name:<10} {addr}   ssh -F {dir}/ssh_config {name} hostname\n"
            ));
        }
        text.push_str(&format!(
            "  PBS API  https://{}   fingerprint {}\n",
            self.lab.pbs_api,
            self.lab.pbs_fingerprint.as_str()
        ));
        for (name, addr) in &self.lab.pve_api {
            text.push_str(&format!("  PVE API  {name:<10} https://{addr}\n"));
        }
        text.push_str(&format!(
            "  token    {} (secret in {dir}/api.token)\n",
            self.lab.api_token.id
        ));
        text.push_str(&format!("  control  http://{}   GET /received, GET /world, POST /scenario/NAME, POST /clock/advance?seconds=N, PUT /latency/HOST?ms=N\n", self.control));
        text
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    // `mode` applies only to a new file; an existing one keeps its mode unless set again.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// `bytes` random bytes from the system's source, in hex.
pub fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut buffer)
        .expect("the system random source works");
    hex::encode(buffer)
}
