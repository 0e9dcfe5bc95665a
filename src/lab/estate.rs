//! The estate the twin simulates: reference/estate.toml's hosts, guests, datastore and
//! decommissioned groups, with every address replaced by loopback.

/// What a guest is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestKind {
    Qemu,
    Lxc,
}

impl GuestKind {
    /// The PBS backup type: `vm` or `ct`.
    pub fn backup_type(self) -> &'static str {
        match self {
            Self::Qemu => "vm",
            Self::Lxc => "ct",
        }
    }

    /// The vzdump log prefix: `qemu` or `lxc`.
    pub fn log_prefix(self) -> &'static str {
        match self {
            Self::Qemu => "qemu",
            Self::Lxc => "lxc",
        }
    }

    /// `VM` or `CT`, as vzdump writes it.
    pub fn vzdump_word(self) -> &'static str {
        match self {
            Self::Qemu => "VM",
            Self::Lxc => "CT",
        }
    }
}

pub const PBS_HOST: &str = "pbs";
pub const PVE_HOSTS: [&str; 3] = ["ruapehu", "pihanga", "hikurangi"];
pub const DATASTORE: &str = "pbs-datastore";
pub const MOUNTPOINT: &str = "/mnt/pbs-datastore";
/// The NFS export, by name: the real one's address is production and never appears here.
pub const NFS_EXPORT: &str = "truenas-hdd:/mnt/Taupo/pbs";
pub const PBS_SERVICES: [&str; 2] = ["proxmox-backup", "proxmox-backup-proxy"];
pub const PVE_STORAGE_ID: &str = "pbs-pihanga";
/// PBS runs as VM 101 on pihanga.
pub const PBS_VM_HOST: &str = "pihanga";
pub const PBS_VMID: u32 = 101;
pub const CANARY_HOST: &str = "ruapehu";
pub const CANARY_VMID: u32 = 200;
pub const BACKUP_JOB_ID: &str = "backup-3f2a1c9e-81d4";

/// A guest as the estate lists it.
#[derive(Debug, Clone, Copy)]
pub struct EstateGuest {
    pub host: &'static str,
    pub kind: GuestKind,
    pub vmid: u32,
    pub name: &'static str,
}

const fn qemu(host: &'static str, vmid: u32, name: &'static str) -> EstateGuest {
    EstateGuest {
        host,
        kind: GuestKind::Qemu,
        vmid,
        name,
    }
}

const fn lxc(host: &'static str, vmid: u32, name: &'static str) -> EstateGuest {
    EstateGuest {
        host,
        kind: GuestKind::Lxc,
        vmid,
        name,
    }
}

pub const GUESTS: [EstateGuest; 13] = [
    qemu("ruapehu", 109, "home-assistant"),
    qemu("ruapehu", 400, "k8s-cp-1"),
    qemu("ruapehu", 401, "k8s-worker-1"),
    qemu("ruapehu", 402, "k8s-worker-2"),
    qemu("ruapehu", 403, "k8s-worker-3"),
    qemu("ruapehu", 450, "nextcloud"),
    qemu("ruapehu", 451, "gitlab"),
    lxc("ruapehu", 200, "canary"),
    qemu("pihanga", 101, "pbs"),
    qemu("pihanga", 200, "unifi"),
    lxc("hikurangi", 100, "pihole"),
    lxc("hikurangi", 101, "postgres"),
    lxc("hikurangi", 102, "grafana"),
];

/// Backup groups of guests removed from every host.
pub const DECOMMISSIONED: [(GuestKind, u32); 8] = [
    (GuestKind::Qemu, 330),
    (GuestKind::Qemu, 331),
    (GuestKind::Qemu, 332),
    (GuestKind::Qemu, 133),
    (GuestKind::Qemu, 104),
    (GuestKind::Lxc, 105),
    (GuestKind::Lxc, 139),
    (GuestKind::Lxc, 103),
];
