//! The one model of the simulated estate. Every SSH command, API call and control request reads
//! and changes this, so a remediation made over SSH shows in the API and vice versa.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::estate::{
    self, BACKUP_JOB_ID, DATASTORE, DECOMMISSIONED, GUESTS, GuestKind, MOUNTPOINT, PBS_SERVICES,
    PBS_VM_HOST, PBS_VMID, PVE_STORAGE_ID,
};
use crate::clock::Clock;

/// The NFS mount of the datastore on the PBS host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Nfs {
    Mounted,
    Unmounted,
    /// The NFS server stopped answering: `df` and `ls` on the mount block.
    Hung,
}

/// The datastore handles held inside the PBS processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Handles {
    Fresh,
    /// Stale, reported as `No such file or directory (os error 2)`.
    StaleEnoent,
    /// Stale, reported as `Stale file handle (os error 116)`.
    StaleEstale,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    Active,
    Inactive,
    Failed,
}

impl ServiceState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Inactive => "inactive",
            Self::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Guest {
    pub host: String,
    pub kind: GuestKind,
    pub vmid: u32,
    pub name: String,
    pub running: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub kind: GuestKind,
    pub vmid: u32,
    pub last_backup: DateTime<Utc>,
    pub count: u32,
}

/// A vzdump task started through the PVE API.
#[derive(Debug, Clone, Serialize)]
pub struct Task {
    pub upid: String,
    pub node: String,
    pub vmids: Vec<u32>,
    pub started: DateTime<Utc>,
    pub ends: DateTime<Utc>,
    /// `OK` or `job errors`, known from the start and reported once the task ends.
    pub exitstatus: String,
    pub log: Vec<String>,
    /// Effects on groups and logs wait until the task ends.
    pub applied: bool,
    pub results: Vec<GuestBackup>,
}

/// The outcome of backing up one guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GuestBackup {
    pub host: String,
    pub kind: GuestKind,
    pub vmid: u32,
    pub ok: bool,
    /// The status of PBS's own backup task, when the client reached PBS at all.
    pub pbs_status: Option<String>,
    /// Lines for the per-guest log; `None` when the job failed before any guest (the old log
    /// file stays, stale).
    pub guest_log: Option<Vec<String>>,
}

/// What an API host answers instead, to requests whose path contains `path`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ApiFault {
    pub status: u16,
    pub body: String,
    /// Empty: every request.
    #[serde(default)]
    pub path: String,
    /// Pads the body with spaces to this many bytes.
    #[serde(default)]
    pub bytes: usize,
}

/// Who sent what to the twin.
#[derive(Debug, Clone, Serialize)]
pub struct Received {
    pub at: DateTime<Utc>,
    pub host: String,
    /// `ssh`, `pbs-api`, `pve-api`.
    pub channel: String,
    /// The command line or `METHOD /path`, exactly as received.
    pub text: String,
    /// For SSH: every simple command a POSIX shell would run for `text`, as argv joined by
    /// spaces. One entry for a well-formed command; more means something was injected.
    pub executed: Vec<String>,
    pub exit: Option<u32>,
}

/// The simulated estate.
#[derive(Serialize)]
pub struct World {
    pub scenario: String,
    pub nfs: Nfs,
    pub handles: Handles,
    pub services: BTreeMap<String, ServiceState>,
    pub guests: Vec<Guest>,
    pub groups: Vec<Group>,
    pub job_enabled: bool,
    /// The fingerprint of the certificate the PBS API really serves.
    pub pbs_cert_fingerprint: String,
    /// The fingerprint in /etc/pve/storage.cfg for the PBS storage.
    pub storage_fingerprint: String,
    /// Per-guest vzdump logs: (host, path) → text.
    #[serde(serialize_with = "files_by_host_path")]
    pub files: BTreeMap<(String, String), String>,
    pub tasks: Vec<Task>,
    /// Hosts whose SSH and API accept a connection and then never answer.
    pub unreachable: BTreeSet<String>,
    /// Drop every Nth SSH connection (flaky-ssh).
    pub drop_every_nth_ssh: Option<u32>,
    #[serde(skip)]
    pub ssh_connections: u32,
    /// Extra delay before each answer, per host.
    #[serde(with = "latency_millis")]
    pub latency: BTreeMap<String, Duration>,
    /// Per API host: an answer given instead of the real one (an error body, an oversized
    /// body), for what runbookd does with a hostile or broken API.
    pub api_faults: BTreeMap<String, ApiFault>,
    /// PBS datastores besides the main one, by name, with their own groups. None in any
    /// scenario; tests add them.
    pub other_datastores: BTreeMap<String, Vec<Group>>,
    /// How long a vzdump takes.
    #[serde(with = "duration_millis")]
    pub vzdump_duration: Duration,
    pub received: Vec<Received>,
    #[serde(skip)]
    next_pid: u32,
    #[serde(skip)]
    clock: Option<Arc<dyn Clock>>,
}

/// `{"host:/path": "text"}`: JSON keys must be strings.
fn files_by_host_path<S: serde::Serializer>(
    files: &BTreeMap<(String, String), String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut out = s.serialize_map(Some(files.len()))?;
    for ((host, path), text) in files {
        out.serialize_entry(&format!("{host}:{path}"), text)?;
    }
    out.end()
}

mod duration_millis {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

mod latency_millis {
    use std::collections::BTreeMap;
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(
        map: &BTreeMap<String, Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut out = s.serialize_map(Some(map.len()))?;
        for (host, d) in map {
            out.serialize_entry(host, &(d.as_millis() as u64))?;
        }
        out.end()
    }
}

/// Every scenario the twin knows.
pub const SCENARIOS: [&str; 13] = [
    "healthy",
    "stale-nfs",
    "stale-nfs-estale",
    "nfs-unmounted",
    "cert-mismatch",
    "pbs-down",
    "pbs-vm-stopped",
    "decommissioned-only",
    "mixed",
    "job-disabled",
    "host-unreachable",
    "flaky-ssh",
    "hung-nfs",
];

/// The guests whose backups go stale in the failing scenarios.
pub const STALE_GUESTS: [(GuestKind, u32); 2] = [(GuestKind::Qemu, 451), (GuestKind::Lxc, 101)];

/// The host that is unreachable in `host-unreachable`.
pub const UNREACHABLE_HOST: &str = "hikurangi";
/// `flaky-ssh` drops every Nth connection.
pub const FLAKY_EVERY: u32 = 3;

impl World {
    /// A fresh, healthy estate, then `scenario` applied. Times are relative to `clock`.
    pub fn new(
        scenario: &str,
        clock: Arc<dyn Clock>,
        pbs_cert_fingerprint: &str,
    ) -> Result<Self, String> {
        let mut world = World {
            scenario: String::new(),
            nfs: Nfs::Mounted,
            handles: Handles::Fresh,
            services: BTreeMap::new(),
            guests: Vec::new(),
            groups: Vec::new(),
            job_enabled: true,
            pbs_cert_fingerprint: pbs_cert_fingerprint.to_owned(),
            storage_fingerprint: pbs_cert_fingerprint.to_owned(),
            files: BTreeMap::new(),
            tasks: Vec::new(),
            unreachable: BTreeSet::new(),
            drop_every_nth_ssh: None,
            ssh_connections: 0,
            latency: BTreeMap::new(),
            api_faults: BTreeMap::new(),
            other_datastores: BTreeMap::new(),
            vzdump_duration: Duration::from_secs(2),
            received: Vec::new(),
            next_pid: 0x1000,
            clock: Some(clock),
        };
        world.load(scenario)?;
        Ok(world)
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.as_ref().expect("a world has a clock").now()
    }

    /// Resets everything but the received log, latency and API faults to `scenario`.
    pub fn load(&mut self, scenario: &str) -> Result<(), String> {
        if !SCENARIOS.contains(&scenario) {
            return Err(format!(
                "unknown scenario '{}'; known: {}",
                scenario.escape_debug(),
                SCENARIOS.join(", ")
            ));
        }
        let now = self.now();
        // Last night's 02:00 run, and the good one two nights before a failure.
        let last_run = last_daily_run(now);
        let last_good = last_run - chrono::Duration::hours(48);
        self.scenario = scenario.to_owned();
        self.nfs = Nfs::Mounted;
        self.handles = Handles::Fresh;
        self.services = PBS_SERVICES
            .iter()
            .map(|s| (s.to_string(), ServiceState::Active))
            .collect();
        self.guests = GUESTS
            .iter()
            .map(|g| Guest {
                host: g.host.to_owned(),
                kind: g.kind,
                vmid: g.vmid,
                name: g.name.to_owned(),
                running: true,
            })
            .collect();
        self.job_enabled = true;
        self.storage_fingerprint = self.pbs_cert_fingerprint.clone();
        self.tasks.clear();
        self.unreachable.clear();
        self.drop_every_nth_ssh = None;
        self.files.clear();
        self.other_datastores.clear();

        // Every guest but PBS itself is backed up nightly; the decommissioned groups are old.
        self.groups = GUESTS
            .iter()
            .filter(|g| !(g.host == PBS_VM_HOST && g.vmid == PBS_VMID && g.kind == GuestKind::Qemu))
            .map(|g| Group {
                kind: g.kind,
                vmid: g.vmid,
                last_backup: last_run,
                count: 30,
            })
            .collect();
        // Decommissioned guests' groups linger (old, harmless) in the scenarios about them;
        // elsewhere they have been cleaned up.
        let lingering = matches!(scenario, "decommissioned-only" | "mixed");
        for (i, (kind, vmid)) in DECOMMISSIONED.iter().enumerate().filter(|_| lingering) {
            self.groups.push(Group {
                kind: *kind,
                vmid: *vmid,
                last_backup: last_run - chrono::Duration::days(200 + i as i64),
                count: 3,
            });
        }
        let guests: Vec<Guest> = self.guests.clone();
        for guest in &guests {
            if self.group(guest.kind, guest.vmid).is_some() {
                self.write_guest_log(
                    &guest.host,
                    guest.kind,
                    guest.vmid,
                    success_log(guest, last_run),
                );
            }
        }

        let stale = |world: &mut World, cause: Option<GuestFailure>| {
            for (kind, vmid) in STALE_GUESTS {
                if let Some(group) = world
                    .groups
                    .iter_mut()
                    .find(|g| g.kind == kind && g.vmid == vmid)
                {
                    group.last_backup = last_good;
                }
                let Some(guest) = world
                    .guests
                    .iter()
                    .find(|g| g.kind == kind && g.vmid == vmid)
                    .cloned()
                else {
                    continue;
                };
                let log = match cause {
                    Some(cause) => failure_log(&guest, last_run, cause),
                    // The job never reached the guest: its log is still the last good run's.
                    None => success_log(&guest, last_good),
                };
                world.write_guest_log(&guest.host, kind, vmid, log);
            }
        };
        match scenario {
            "healthy" => {}
            "stale-nfs" | "mixed" => {
                self.handles = Handles::StaleEnoent;
                stale(self, Some(GuestFailure::ChunkStore(Handles::StaleEnoent)));
            }
            "stale-nfs-estale" => {
                self.handles = Handles::StaleEstale;
                stale(self, Some(GuestFailure::ChunkStore(Handles::StaleEstale)));
            }
            "nfs-unmounted" => {
                self.nfs = Nfs::Unmounted;
                self.handles = Handles::StaleEnoent;
                stale(self, Some(GuestFailure::ChunkStore(Handles::StaleEnoent)));
            }
            "hung-nfs" => {
                self.nfs = Nfs::Hung;
                stale(self, None);
            }
            "cert-mismatch" => {
                self.storage_fingerprint = other_fingerprint(&self.pbs_cert_fingerprint);
                stale(self, Some(GuestFailure::Fingerprint));
            }
            "pbs-down" => {
                for state in self.services.values_mut() {
                    *state = ServiceState::Failed;
                }
                stale(self, None);
            }
            "pbs-vm-stopped" => {
                if let Some(pbs) = self.guest_mut(PBS_VM_HOST, GuestKind::Qemu, PBS_VMID) {
                    pbs.running = false;
                }
                for state in self.services.values_mut() {
                    *state = ServiceState::Inactive;
                }
                stale(self, None);
            }
            "decommissioned-only" => {}
            "job-disabled" => {
                self.job_enabled = false;
                stale(self, None);
            }
            "host-unreachable" => {
                self.unreachable.insert(UNREACHABLE_HOST.to_owned());
            }
            "flaky-ssh" => {
                self.drop_every_nth_ssh = Some(FLAKY_EVERY);
            }
            _ => unreachable!("checked against SCENARIOS"),
        }
        Ok(())
    }

    pub fn group(&self, kind: GuestKind, vmid: u32) -> Option<&Group> {
        self.groups
            .iter()
            .find(|g| g.kind == kind && g.vmid == vmid)
    }

    pub fn guest(&self, host: &str, kind: GuestKind, vmid: u32) -> Option<&Guest> {
        self.guests
            .iter()
            .find(|g| g.host == host && g.kind == kind && g.vmid == vmid)
    }

    fn guest_mut(&mut self, host: &str, kind: GuestKind, vmid: u32) -> Option<&mut Guest> {
        self.guests
            .iter_mut()
            .find(|g| g.host == host && g.kind == kind && g.vmid == vmid)
    }

    pub fn pbs_vm_running(&self) -> bool {
        self.guest(PBS_VM_HOST, GuestKind::Qemu, PBS_VMID)
            .is_some_and(|g| g.running)
    }

    /// The PBS API answers only while its VM runs and the proxy is active.
    pub fn pbs_api_up(&self) -> bool {
        self.pbs_vm_running()
            && self.services.get("proxmox-backup-proxy") == Some(&ServiceState::Active)
    }

    /// Why PBS cannot open the datastore, in its words, or `None` when it can. Stale handles
    /// inside the PBS processes do not show here: listing and usage go by path and work; only
    /// backups, which write through the held chunk store, fail.
    pub fn datastore_error(&self) -> Option<String> {
        match self.nfs {
            Nfs::Mounted => None,
            Nfs::Hung => Some("datastore is not responding".to_owned()),
            Nfs::Unmounted => Some(format!(
                "unable to open chunk store at \"{MOUNTPOINT}/.chunks\" - No such file or directory (os error 2)"
            )),
        }
    }

    pub fn fingerprint_matches(&self) -> bool {
        self.storage_fingerprint
            .eq_ignore_ascii_case(&self.pbs_cert_fingerprint)
    }

    pub fn log_path(kind: GuestKind, vmid: u32) -> String {
        format!("/var/log/vzdump/{}-{vmid}.log", kind.log_prefix())
    }

    fn write_guest_log(&mut self, host: &str, kind: GuestKind, vmid: u32, lines: Vec<String>) {
        let mut text = lines.join("\n");
        text.push('\n');
        self.files
            .insert((host.to_owned(), Self::log_path(kind, vmid)), text);
    }

    /// `/etc/pve/storage.cfg`, the same on every PVE host (it lives in the cluster filesystem).
    pub fn storage_cfg(&self) -> String {
        format!(
            "dir: local\n\tpath /var/lib/vz\n\tcontent iso,vztmpl,backup\n\n\
             lvmthin: local-lvm\n\tthinpool data\n\tvgname pve\n\tcontent rootdir,images\n\n\
             pbs: {PVE_STORAGE_ID}\n\tdatastore {DATASTORE}\n\tserver 127.0.0.1\n\tcontent backup\n\
             \tfingerprint {}\n\tprune-backups keep-all=1\n\tusername root@pam\n",
            self.storage_fingerprint.to_ascii_lowercase()
        )
    }

    /// Reads a file on `host`, for `cat`, `tail` and `grep`.
    pub fn read_file(&self, host: &str, path: &str) -> Option<String> {
        if estate::PVE_HOSTS.contains(&host) && path == "/etc/pve/storage.cfg" {
            return Some(self.storage_cfg());
        }
        self.files.get(&(host.to_owned(), path.to_owned())).cloned()
    }

    /// Backs up `vmids` on `node` (or every guest there when `vmids` is empty), deciding each
    /// outcome now. Returns `None` when none of the guests is on the node.
    pub fn backup_plan(
        &mut self,
        node: &str,
        vmids: &[u32],
    ) -> Option<(Vec<GuestBackup>, Vec<String>)> {
        let guests: Vec<Guest> = self
            .guests
            .iter()
            .filter(|g| g.host == node && (vmids.is_empty() || vmids.contains(&g.vmid)))
            .filter(|g| !(g.kind == GuestKind::Qemu && g.vmid == PBS_VMID && g.host == PBS_VM_HOST))
            .cloned()
            .collect();
        // PVE queues VMIDs it does not know; they fail with the job.
        let unknown: Vec<u32> = vmids
            .iter()
            .copied()
            .filter(|id| !self.guests.iter().any(|g| g.vmid == *id))
            .collect();
        if guests.is_empty() && unknown.is_empty() {
            return None;
        }
        let now = self.now();
        // PBS unreachable fails the whole job before any guest: per-guest logs stay stale.
        let job_error = (!self.pbs_api_up()).then(|| format!(
            "could not activate storage '{PVE_STORAGE_ID}': {PVE_STORAGE_ID}: error fetching datastores - 500 Can't connect to 127.0.0.1:8007 (Connection refused)"
        ));
        let guest_failure = if !self.fingerprint_matches() {
            Some(GuestFailure::Fingerprint)
        } else {
            match (self.nfs, self.handles) {
                (Nfs::Mounted, Handles::Fresh) => None,
                (Nfs::Hung, _) => Some(GuestFailure::Timeout),
                (_, Handles::StaleEstale) => Some(GuestFailure::ChunkStore(Handles::StaleEstale)),
                _ => Some(GuestFailure::ChunkStore(Handles::StaleEnoent)),
            }
        };
        let mut task_log = vec![format!(
            "INFO: starting new backup job: vzdump {} --storage {PVE_STORAGE_ID} --mode snapshot",
            guests
                .iter()
                .map(|g| g.vmid.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        )];
        let mut results: Vec<GuestBackup> = unknown
            .iter()
            .map(|vmid| GuestBackup {
                host: node.to_owned(),
                kind: GuestKind::Qemu,
                vmid: *vmid,
                ok: false,
                pbs_status: None,
                guest_log: None,
            })
            .collect();
        task_log.extend(
            unknown
                .iter()
                .map(|vmid| format!("ERROR: unable to find VM '{vmid}'")),
        );
        if let Some(error) = &job_error {
            task_log.push(format!("ERROR: {error}"));
            task_log.push("INFO: Backup job finished with errors".to_owned());
            for g in &guests {
                results.push(GuestBackup {
                    host: g.host.clone(),
                    kind: g.kind,
                    vmid: g.vmid,
                    ok: false,
                    pbs_status: None,
                    guest_log: None,
                });
            }
            return Some((results, task_log));
        }
        let mut all_ok = unknown.is_empty();
        for g in &guests {
            let failure = guest_failure;
            let lines = match failure {
                None => success_log(g, now),
                Some(cause) => failure_log(g, now, cause),
            };
            if failure == Some(GuestFailure::Fingerprint) {
                task_log.push(
                    "WARNING: certificate fingerprint does not match expected fingerprint!"
                        .to_owned(),
                );
                task_log.push(
                    "certificate validation failed - Certificate fingerprint was not confirmed."
                        .to_owned(),
                );
                task_log.push("Error: client error (Connect)".to_owned());
            }
            task_log.extend(lines.iter().map(|l| strip_timestamp(l).to_owned()));
            all_ok &= failure.is_none();
            let pbs_status = match failure {
                None => Some("OK".to_owned()),
                Some(GuestFailure::ChunkStore(handles)) => Some(chunk_store_error(handles)),
                Some(GuestFailure::Timeout) => Some("datastore is not responding".to_owned()),
                Some(GuestFailure::Fingerprint) => None,
            };
            results.push(GuestBackup {
                host: g.host.clone(),
                kind: g.kind,
                vmid: g.vmid,
                ok: failure.is_none(),
                pbs_status,
                guest_log: Some(lines),
            });
        }
        task_log.push(if all_ok {
            "INFO: Backup job finished successfully".to_owned()
        } else {
            "INFO: Backup job finished with errors".to_owned()
        });
        Some((results, task_log))
    }

    /// Applies finished backups: fresh groups for the good ones, rewritten per-guest logs.
    pub fn apply_backups(&mut self, results: &[GuestBackup], at: DateTime<Utc>) {
        for result in results {
            if result.ok {
                match self
                    .groups
                    .iter_mut()
                    .find(|g| g.kind == result.kind && g.vmid == result.vmid)
                {
                    Some(group) => {
                        group.last_backup = at;
                        group.count += 1;
                    }
                    None => self.groups.push(Group {
                        kind: result.kind,
                        vmid: result.vmid,
                        last_backup: at,
                        count: 1,
                    }),
                }
            }
            if let Some(lines) = &result.guest_log {
                self.write_guest_log(&result.host, result.kind, result.vmid, lines.clone());
            }
        }
    }

    /// Starts a vzdump task as the PVE API does; returns its UPID, or `None` for "OK, nothing
    /// to do".
    pub fn start_vzdump_task(&mut self, node: &str, vmids: &[u32]) -> Option<String> {
        let (results, log) = self.backup_plan(node, vmids)?;
        let now = self.now();
        self.next_pid += 1;
        let id = if vmids.len() == 1 {
            vmids[0].to_string()
        } else {
            String::new()
        };
        let upid = format!(
            "UPID:{node}:{:08X}:{:08X}:{:08X}:vzdump:{id}:root@pam!runbookd:",
            self.next_pid,
            self.next_pid * 7,
            now.timestamp()
        );
        let ok = results.iter().all(|r| r.ok);
        self.tasks.push(Task {
            upid: upid.clone(),
            node: node.to_owned(),
            vmids: vmids.to_vec(),
            started: now,
            ends: now + chrono::Duration::from_std(self.vzdump_duration).unwrap_or_default(),
            exitstatus: if ok {
                "OK".to_owned()
            } else {
                "job errors".to_owned()
            },
            log,
            applied: false,
            results,
        });
        Some(upid)
    }

    /// Finishes every task whose time has come.
    pub fn settle(&mut self) {
        let now = self.now();
        let due: Vec<(Vec<GuestBackup>, DateTime<Utc>)> = self
            .tasks
            .iter_mut()
            .filter(|t| !t.applied && t.ends <= now)
            .map(|t| {
                t.applied = true;
                (t.results.clone(), t.ends)
            })
            .collect();
        for (results, at) in due {
            self.apply_backups(&results, at);
        }
    }

    /// `qm start` on the PBS VM brings PBS up: services start, and fresh handles if the store
    /// is mounted.
    pub fn start_guest(&mut self, host: &str, kind: GuestKind, vmid: u32) -> Result<(), String> {
        let guest = self
            .guest_mut(host, kind, vmid)
            .ok_or_else(|| format!("guest {vmid} is not on {host}"))?;
        if guest.running {
            return Err(format!("{} {vmid} already running", kind.vzdump_word()));
        }
        guest.running = true;
        if host == PBS_VM_HOST && kind == GuestKind::Qemu && vmid == PBS_VMID {
            self.restart_services(&PBS_SERVICES.map(String::from));
        }
        Ok(())
    }

    /// `systemctl restart`: the units become active; PBS handles are fresh again only if the
    /// store is mounted.
    pub fn restart_services(&mut self, units: &[String]) {
        for unit in units {
            self.services.insert(unit.clone(), ServiceState::Active);
        }
        if units.iter().any(|u| PBS_SERVICES.contains(&u.as_str())) && self.nfs == Nfs::Mounted {
            self.handles = Handles::Fresh;
        }
    }

    pub fn record(&mut self, received: Received) {
        self.received.push(received);
    }

    pub fn backup_job_json(&self) -> serde_json::Value {
        let next = last_daily_run(self.now()) + chrono::Duration::days(1);
        serde_json::json!([{
            "id": BACKUP_JOB_ID, "type": "vzdump", "schedule": "02:00",
            "enabled": u8::from(self.job_enabled), "all": 1, "storage": PVE_STORAGE_ID,
            "mode": "snapshot", "compress": "zstd", "next-run": next.timestamp(),
            "notes-template": "{{guestname}}"
        }])
    }
}

/// Why one guest's backup fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GuestFailure {
    ChunkStore(Handles),
    Fingerprint,
    Timeout,
}

/// PBS's words for a chunk store it cannot use.
fn chunk_store_error(handles: Handles) -> String {
    let errno = if handles == Handles::StaleEstale {
        "Stale file handle (os error 116)"
    } else {
        "No such file or directory (os error 2)"
    };
    format!("unable to open chunk store at \"{MOUNTPOINT}/.chunks\" - {errno}")
}

/// The most recent 02:00 UTC at or before `now`.
pub fn last_daily_run(now: DateTime<Utc>) -> DateTime<Utc> {
    let today = now
        .date_naive()
        .and_hms_opt(2, 0, 0)
        .expect("02:00 exists")
        .and_utc();
    if today <= now {
        today
    } else {
        today - chrono::Duration::days(1)
    }
}

fn stamp(at: DateTime<Utc>, seconds: i64) -> String {
    (at + chrono::Duration::seconds(seconds))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

fn strip_timestamp(line: &str) -> &str {
    line.get(20..).unwrap_or(line)
}

fn success_log(guest: &Guest, at: DateTime<Utc>) -> Vec<String> {
    let word = guest.kind.vzdump_word();
    let id = guest.vmid;
    let archive_time = at.format("%Y-%m-%dT%H:%M:%SZ");
    vec![
        format!(
            "{} INFO: Starting Backup of {word} {id} ({})",
            stamp(at, 4),
            guest.kind.log_prefix()
        ),
        format!("{} INFO: status = running", stamp(at, 4)),
        format!("{} INFO: {word} Name: {}", stamp(at, 4), guest.name),
        format!("{} INFO: backup mode: snapshot", stamp(at, 4)),
        format!("{} INFO: ionice priority: 7", stamp(at, 4)),
        format!(
            "{} INFO: creating Proxmox Backup Server archive '{}/{id}/{archive_time}'",
            stamp(at, 4),
            guest.kind.backup_type()
        ),
        format!(
            "{} INFO: transferred 412.00 MiB in 3 seconds (137.3 MiB/s)",
            stamp(at, 8)
        ),
        format!(
            "{} INFO: Finished Backup of {word} {id} (00:00:04)",
            stamp(at, 8)
        ),
    ]
}

fn failure_log(guest: &Guest, at: DateTime<Utc>, cause: GuestFailure) -> Vec<String> {
    let word = guest.kind.vzdump_word();
    let id = guest.vmid;
    let mut lines = vec![
        format!(
            "{} INFO: Starting Backup of {word} {id} ({})",
            stamp(at, 3),
            guest.kind.log_prefix()
        ),
        format!("{} INFO: status = running", stamp(at, 3)),
        format!("{} INFO: backup mode: snapshot", stamp(at, 3)),
    ];
    match (cause, guest.kind) {
        (GuestFailure::ChunkStore(handles), GuestKind::Qemu) => {
            let detail = format!(
                "VM {id} qmp command 'backup' failed - backup connect failed: command error: {}",
                chunk_store_error(handles)
            );
            lines.push(format!(
                "{} INFO: creating Proxmox Backup Server archive 'vm/{id}/{}'",
                stamp(at, 3),
                at.format("%Y-%m-%dT%H:%M:%SZ")
            ));
            lines.push(format!("{} ERROR: {detail}", stamp(at, 4)));
            lines.push(format!(
                "{} ERROR: Backup of VM {id} failed - {detail}",
                stamp(at, 4)
            ));
        }
        (GuestFailure::ChunkStore(handles), GuestKind::Lxc) => {
            lines.push(format!(
                "{} ERROR: Backup of CT {id} failed - command '/usr/bin/proxmox-backup-client backup ...' failed: {}",
                stamp(at, 4),
                chunk_store_error(handles)
            ));
        }
        (GuestFailure::Fingerprint, _) => {
            lines.push(format!(
                "{} ERROR: Backup of {word} {id} failed - command '/usr/bin/proxmox-backup-client backup ...' failed: exit code 255",
                stamp(at, 2)
            ));
        }
        (GuestFailure::Timeout, _) => {
            lines.push(format!(
                "{} ERROR: Backup of {word} {id} failed - backup connect failed: command error: datastore is not responding",
                stamp(at, 63)
            ));
        }
    }
    lines
}

/// A fingerprint that differs from `actual` (the certificate PBS had before it was renewed).
fn other_fingerprint(actual: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest: [u8; 32] = Sha256::digest(format!("previous certificate of {actual}")).into();
    crate::exec::command::CertFingerprint::from_digest(&digest)
        .as_str()
        .to_owned()
}
