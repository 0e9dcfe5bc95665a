//! The executors a run uses, built once from the inventory. Behind traits, so tests can swap
//! any of them.

use std::sync::Arc;

use crate::config::Inventory;
use crate::config::inventory::{PbsTarget, PveTarget};
use crate::exec::command::Name;
use crate::exec::http::ApiError;
use crate::exec::output::Redactor;
use crate::exec::pbs::{PbsApi, PbsClient};
use crate::exec::pve::{PveApi, PveClient};
use crate::exec::ssh::{RemoteShell, SshSession};

pub struct Estate {
    pub ssh: Arc<dyn RemoteShell>,
    pub pbs: Arc<dyn PbsApi>,
    pub pve: Arc<dyn PveApi>,
    pub pbs_target: PbsTarget,
    pub pve_target: PveTarget,
    /// The PVE hosts, to look for guests and backups on.
    pub pve_nodes: Vec<Name>,
}

#[derive(Debug, thiserror::Error)]
pub enum EstateError {
    #[error("the inventory has no {0} section; playbooks need it")]
    Missing(&'static str),
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl Estate {
    /// Real executors for `inventory`: one SSH session (one connection per host), the PBS and
    /// PVE clients, all cleaning what they return with one redactor that knows every secret in
    /// `inventory.secrets`.
    pub fn connect(inventory: &Inventory) -> Result<Self, EstateError> {
        let settings = inventory.ssh.clone().ok_or(EstateError::Missing("[ssh]"))?;
        let pbs_target = inventory.pbs.clone().ok_or(EstateError::Missing("[pbs]"))?;
        let pve_target = inventory.pve.clone().ok_or(EstateError::Missing("[pve]"))?;
        let pve_nodes = inventory.pve_hosts.clone();
        let redactor = Redactor::new(inventory.secrets.clone());
        Ok(Self {
            ssh: Arc::new(SshSession::new(
                inventory.ssh_hosts.clone(),
                settings,
                redactor.clone(),
            )),
            pbs: Arc::new(PbsClient::with_redactor(
                &pbs_target.endpoint,
                redactor.clone(),
            )?),
            pve: Arc::new(PveClient::with_redactor(&pve_target.endpoint, redactor)?),
            pbs_target,
            pve_target,
            pve_nodes,
        })
    }
}
