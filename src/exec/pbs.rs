//! The Proxmox Backup Server API, typed (reference/pbs-api.md).

use serde::{Deserialize, Serialize};

use super::command::Name;
use super::http::{ApiClient, ApiEndpoint, ApiError, Dialect};
use super::output::Redactor;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Version {
    pub version: String,
    pub release: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Datastore {
    pub store: String,
    pub comment: Option<String>,
}

/// A backup group; groups with no snapshot are not listed by PBS.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct BackupGroup {
    pub backup_type: String,
    pub backup_id: String,
    /// Epoch seconds.
    pub last_backup: i64,
    pub backup_count: u64,
    #[serde(default)]
    pub owner: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct SnapshotFile {
    pub filename: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Snapshot {
    pub backup_type: String,
    pub backup_id: String,
    pub backup_time: i64,
    pub files: Vec<SnapshotFile>,
}

impl Snapshot {
    /// A snapshot is complete only when it has `index.json.blob`.
    pub fn is_complete(&self) -> bool {
        self.files.iter().any(|f| f.filename == "index.json.blob")
    }
}

/// One datastore's usage, or the error that stops PBS opening it (NFS gone, chunk store
/// missing): an API-side probe of the NFS failure.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct DatastoreUsage {
    pub store: String,
    pub total: Option<u64>,
    pub used: Option<u64>,
    pub avail: Option<u64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct PbsTask {
    pub upid: String,
    pub worker_type: String,
    pub worker_id: Option<String>,
    pub starttime: i64,
    pub endtime: Option<i64>,
    /// `OK`, `WARNINGS: N`, the error text, or `unknown`.
    pub status: Option<String>,
}

/// What runbookd asks of PBS. Behind a trait so the engine's tests can swap it.
#[async_trait::async_trait]
pub trait PbsApi: Send + Sync {
    async fn version(&self) -> Result<Version, ApiError>;
    async fn datastores(&self) -> Result<Vec<Datastore>, ApiError>;
    async fn groups(&self, store: &Name) -> Result<Vec<BackupGroup>, ApiError>;
    async fn snapshots(
        &self,
        store: &Name,
        backup_type: &Name,
        backup_id: &Name,
    ) -> Result<Vec<Snapshot>, ApiError>;
    async fn datastore_usage(&self) -> Result<Vec<DatastoreUsage>, ApiError>;
    async fn backup_tasks(&self, store: &Name) -> Result<Vec<PbsTask>, ApiError>;
    /// Removes a backup group and all its snapshots.
    async fn forget_group(
        &self,
        store: &Name,
        backup_type: &Name,
        backup_id: &Name,
    ) -> Result<(), ApiError>;
}

pub struct PbsClient {
    api: ApiClient,
}

impl PbsClient {
    /// A client that redacts its own token secret, PEM private keys and token headers.
    pub fn new(endpoint: &ApiEndpoint) -> Result<Self, ApiError> {
        Self::with_redactor(endpoint, Redactor::default())
    }

    /// A client whose answers and errors `redactor` cleans (the service's one redactor).
    pub fn with_redactor(endpoint: &ApiEndpoint, redactor: Redactor) -> Result<Self, ApiError> {
        Ok(Self {
            api: ApiClient::new(Dialect::Pbs, endpoint, redactor)?,
        })
    }
}

#[async_trait::async_trait]
impl PbsApi for PbsClient {
    async fn version(&self) -> Result<Version, ApiError> {
        self.api.get("/version").await
    }

    async fn datastores(&self) -> Result<Vec<Datastore>, ApiError> {
        self.api.get("/admin/datastore").await
    }

    async fn groups(&self, store: &Name) -> Result<Vec<BackupGroup>, ApiError> {
        self.api
            .get(&format!("/admin/datastore/{store}/groups"))
            .await
    }

    async fn snapshots(
        &self,
        store: &Name,
        backup_type: &Name,
        backup_id: &Name,
    ) -> Result<Vec<Snapshot>, ApiError> {
        self.api
            .get(&format!(
                "/admin/datastore/{store}/snapshots?backup-type={backup_type}&backup-id={backup_id}"
            ))
            .await
    }

    async fn datastore_usage(&self) -> Result<Vec<DatastoreUsage>, ApiError> {
        self.api.get("/status/datastore-usage").await
    }

    async fn forget_group(
        &self,
        store: &Name,
        backup_type: &Name,
        backup_id: &Name,
    ) -> Result<(), ApiError> {
        let _: serde_json::Value = self
            .api
            .delete(&format!(
                "/admin/datastore/{store}/groups?backup-type={backup_type}&backup-id={backup_id}"
            ))
            .await?;
        Ok(())
    }

    async fn backup_tasks(&self, store: &Name) -> Result<Vec<PbsTask>, ApiError> {
        self.api
            .get(&format!(
                "/nodes/localhost/tasks?typefilter=backup&store={store}&limit=200"
            ))
            .await
    }
}
