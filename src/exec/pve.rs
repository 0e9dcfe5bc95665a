//! The Proxmox VE API, typed (reference/pve-api.md).

use serde::Deserialize;

use super::command::{CertFingerprint, Name, Vmid};
use super::http::{ApiClient, ApiEndpoint, ApiError, Dialect};
use super::output::Redactor;

/// What `POST /nodes/{node}/vzdump` started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VzdumpStart {
    /// A task to poll.
    Task(String),
    /// None of the guests is on that node: PVE answered "OK" and did nothing.
    NothingToDo,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TaskStatus {
    pub upid: String,
    /// `running` or `stopped`.
    pub status: String,
    /// Once stopped: `OK`, `WARNINGS: N`, or the error (`job errors` for a vzdump with a failed
    /// guest).
    pub exitstatus: Option<String>,
}

impl TaskStatus {
    pub fn is_running(&self) -> bool {
        self.status == "running"
    }

    pub fn succeeded(&self) -> bool {
        !self.is_running() && self.exitstatus.as_deref() == Some("OK")
    }
}

/// A task in a node's task list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct TaskSummary {
    pub upid: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// The VMID for a one-guest vzdump.
    pub id: Option<String>,
    /// Absent while the task runs.
    pub status: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct GuestSummary {
    pub vmid: u32,
    /// `running` or `stopped`.
    pub status: String,
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct Storage {
    pub storage: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub server: Option<String>,
    pub datastore: Option<String>,
    pub fingerprint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct BackupJob {
    pub id: String,
    pub schedule: Option<String>,
    pub storage: Option<String>,
    /// PVE sends 0/1; an absent value means enabled.
    #[serde(default = "enabled_default")]
    pub enabled: u8,
}

fn enabled_default() -> u8 {
    1
}

/// What runbookd asks of PVE.
#[async_trait::async_trait]
pub trait PveApi: Send + Sync {
    async fn vzdump(
        &self,
        node: &Name,
        vmids: &[Vmid],
        storage: &Name,
    ) -> Result<VzdumpStart, ApiError>;
    async fn task_status(&self, node: &Name, upid: &str) -> Result<TaskStatus, ApiError>;
    async fn qemu(&self, node: &Name) -> Result<Vec<GuestSummary>, ApiError>;
    async fn lxc(&self, node: &Name) -> Result<Vec<GuestSummary>, ApiError>;
    async fn storage(&self, storage: &Name) -> Result<Storage, ApiError>;
    async fn set_storage_fingerprint(
        &self,
        storage: &Name,
        fingerprint: &CertFingerprint,
    ) -> Result<(), ApiError>;
    async fn backup_jobs(&self) -> Result<Vec<BackupJob>, ApiError>;
    async fn enable_backup_job(&self, id: &Name) -> Result<(), ApiError>;
    /// The vzdump tasks running on `node` now.
    async fn running_vzdump_tasks(&self, node: &Name) -> Result<Vec<TaskSummary>, ApiError>;
    /// The vzdump tasks on `node` that started at or after `since` (epoch seconds), running or
    /// ended.
    async fn vzdump_tasks_since(
        &self,
        node: &Name,
        since: i64,
    ) -> Result<Vec<TaskSummary>, ApiError>;
}

pub struct PveClient {
    api: ApiClient,
}

impl PveClient {
    /// A client that redacts its own token secret, PEM private keys and token headers.
    pub fn new(endpoint: &ApiEndpoint) -> Result<Self, ApiError> {
        Self::with_redactor(endpoint, Redactor::default())
    }

    /// A client whose answers and errors `redactor` cleans (the service's one redactor).
    pub fn with_redactor(endpoint: &ApiEndpoint, redactor: Redactor) -> Result<Self, ApiError> {
        Ok(Self {
            api: ApiClient::new(Dialect::Pve, endpoint, redactor)?,
        })
    }
}

/// UPIDs go into a path: only the characters PVE uses in them are let through.
fn upid_path(upid: &str) -> Result<&str, ApiError> {
    let valid = upid.starts_with("UPID:")
        && upid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":@!._-".contains(c));
    if valid {
        Ok(upid)
    } else {
        Err(ApiError::Config {
            service: "PVE",
            detail: format!("'{}' is not a UPID", upid.escape_debug()),
        })
    }
}

#[async_trait::async_trait]
impl PveApi for PveClient {
    async fn vzdump(
        &self,
        node: &Name,
        vmids: &[Vmid],
        storage: &Name,
    ) -> Result<VzdumpStart, ApiError> {
        let list = vmids
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let form = [
            ("vmid", list),
            ("storage", storage.to_string()),
            ("mode", "snapshot".to_owned()),
            ("compress", "zstd".to_owned()),
        ];
        let data: String = self
            .api
            .post_form(&format!("/nodes/{node}/vzdump"), &form)
            .await?;
        Ok(if data == "OK" {
            VzdumpStart::NothingToDo
        } else {
            VzdumpStart::Task(data)
        })
    }

    async fn task_status(&self, node: &Name, upid: &str) -> Result<TaskStatus, ApiError> {
        self.api
            .get(&format!("/nodes/{node}/tasks/{}/status", upid_path(upid)?))
            .await
    }

    async fn qemu(&self, node: &Name) -> Result<Vec<GuestSummary>, ApiError> {
        self.api.get(&format!("/nodes/{node}/qemu")).await
    }

    async fn lxc(&self, node: &Name) -> Result<Vec<GuestSummary>, ApiError> {
        self.api.get(&format!("/nodes/{node}/lxc")).await
    }

    async fn storage(&self, storage: &Name) -> Result<Storage, ApiError> {
        self.api.get(&format!("/storage/{storage}")).await
    }

    async fn set_storage_fingerprint(
        &self,
        storage: &Name,
        fingerprint: &CertFingerprint,
    ) -> Result<(), ApiError> {
        let _: serde_json::Value = self
            .api
            .put_form(
                &format!("/storage/{storage}"),
                &[("fingerprint", fingerprint.as_str().to_owned())],
            )
            .await?;
        Ok(())
    }

    async fn backup_jobs(&self) -> Result<Vec<BackupJob>, ApiError> {
        self.api.get("/cluster/backup").await
    }

    async fn running_vzdump_tasks(&self, node: &Name) -> Result<Vec<TaskSummary>, ApiError> {
        self.api
            .get(&format!(
                "/nodes/{node}/tasks?source=active&typefilter=vzdump"
            ))
            .await
    }

    async fn vzdump_tasks_since(
        &self,
        node: &Name,
        since: i64,
    ) -> Result<Vec<TaskSummary>, ApiError> {
        self.api
            .get(&format!(
                "/nodes/{node}/tasks?typefilter=vzdump&since={since}"
            ))
            .await
    }

    async fn enable_backup_job(&self, id: &Name) -> Result<(), ApiError> {
        let _: serde_json::Value = self
            .api
            .put_form(
                &format!("/cluster/backup/{id}"),
                &[("enabled", "1".to_owned())],
            )
            .await?;
        Ok(())
    }
}
