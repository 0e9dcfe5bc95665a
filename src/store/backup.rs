//! `runbookd backup FILE`: a consistent copy of the database while the service runs.
//!
//! `VACUUM INTO` on a read-only connection writes one transaction's snapshot of the whole
//! database into a new, compact file; the service keeps writing meanwhile (WAL readers never
//! block the writer). The file is created first, empty and 0600, so a backup is never readable
//! by others and never replaces an existing file.

use std::path::{Path, PathBuf};

use anyhow::Context;
use sqlx::Connection;

use crate::config::DatabaseConfig;

/// The tables a backup reports counts of.
const COUNTED: [&str; 6] = [
    "incidents",
    "alerts",
    "deliveries",
    "runs",
    "approvals",
    "audit_events",
];

#[derive(Debug, Clone)]
pub struct BackupReport {
    pub path: PathBuf,
    pub bytes: u64,
    /// Rows per table in the copy.
    pub counts: Vec<(&'static str, i64)>,
}

/// Copies `database` into `out`, a file that must not exist yet.
pub async fn backup(database: &DatabaseConfig, out: &Path) -> anyhow::Result<BackupReport> {
    let mut source = super::connect_existing(database, true).await?;
    let created = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(out)
    };
    if let Err(error) = created {
        return Err(if error.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::anyhow!(
                "{} already exists; a backup never overwrites",
                out.display()
            )
        } else {
            anyhow::Error::new(error).context(format!("cannot create {}", out.display()))
        });
    }
    let copied = async {
        let target = out
            .to_str()
            .context("the backup's path is not valid UTF-8")?;
        sqlx::query("VACUUM INTO ?")
            .bind(target)
            .execute(&mut source)
            .await
            .context("the copy failed")?;
        source.close().await?;
        count(out).await
    }
    .await;
    match copied {
        Ok(counts) => Ok(BackupReport {
            path: out.to_owned(),
            bytes: std::fs::metadata(out)?.len(),
            counts,
        }),
        Err(error) => {
            // Only the empty or partial file this call created.
            let _ = std::fs::remove_file(out);
            Err(error)
        }
    }
}

/// Rows per table of the copy, read from the copy itself: proof that it opens.
async fn count(copy: &Path) -> anyhow::Result<Vec<(&'static str, i64)>> {
    use sqlx::ConnectOptions;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(copy)
        .connect()
        .await?;
    let mut counts = Vec::with_capacity(COUNTED.len());
    for table in COUNTED {
        let rows: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&mut conn)
            .await?;
        counts.push((table, rows));
    }
    conn.close().await?;
    Ok(counts)
}
