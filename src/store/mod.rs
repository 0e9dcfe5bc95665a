//! SQLite persistence, one repository module per aggregate.
//!
//! Writes go through a pool of exactly one connection: SQLite allows one writer at a time
//! anyway, and queueing writers in the pool (fair, async) beats polling in SQLite's busy
//! handler under an alert storm. Reads use a separate pool whose connections are
//! `query_only`, so a read path can never write by mistake.
//!
//! The database runs in WAL mode with `synchronous = FULL` (intake's connection fsyncs the WAL
//! itself, see `engine::intake`): once intake answers 202 the alert is on disk, even across a
//! power cut. Its directory (when runbookd makes it), the file and
//! its WAL files are owner-only.
//!
//! Intake writes on a connection of its own, synchronous (rusqlite) on the intake writer's
//! thread, so a batch of deliveries costs no async round trip per statement. It writes only
//! while it holds the writer pool's connection ([`Store::hold_writer`]), so there is still one
//! writer at a time and it queues fairly with the others.

pub mod activity;
pub mod approvals;
pub mod audit;
pub mod backup;
pub mod backup_groups;
pub mod idempotency;
pub mod incidents;
pub mod intake;
pub mod lock;
pub mod notify;
pub mod retention;
pub mod runs;
pub mod safety;
pub mod sessions;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use sqlx::SqlitePool;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::config::DatabaseConfig;

/// The table the newest migration creates: a database without it was last opened by an older
/// runbookd, and the commands that open the file directly refuse it.
const NEWEST_TABLE: &str = "audit_prune_permit";

/// How long a request waits for a connection before it gets 503.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
const READ_CONNECTIONS: u32 = 4;

#[derive(Clone, Debug)]
pub struct Store {
    writer: SqlitePool,
    reader: SqlitePool,
    path: PathBuf,
    busy_timeout: Duration,
}

/// A storage failure, classified where it happens. `Busy`, `DiskFull` and `Io` clear on their
/// own (the other program lets go of its lock, space is freed): the caller gets 503 with
/// `Retry-After` and the engine retries the write; `Other` is a fault (500).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database is locked by another writer")]
    Busy(#[source] Cause),
    #[error("the database's disk is full")]
    DiskFull(#[source] Cause),
    #[error("the database's disk failed to read or write")]
    Io(#[source] Cause),
    #[error("database error")]
    Other(#[source] Cause),
}

/// What failed underneath: sqlx, or rusqlite on the intake writer's connection.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// What an SQLite result code says about the database's availability, whichever driver
/// reported it: the one classification behind [`StoreError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqliteFault {
    /// SQLITE_BUSY (5) or SQLITE_LOCKED (6): another connection holds the lock.
    Busy,
    /// SQLITE_FULL (13): the filesystem (or the database's size limit) is full.
    DiskFull,
    /// SQLITE_IOERR (10): a read, write or fsync failed, as when the WAL cannot grow.
    Io,
    Other,
}

impl SqliteFault {
    /// The fault a result code (primary or extended) names.
    pub fn of_code(code: i32) -> Self {
        match code & 0xff {
            5 | 6 => Self::Busy,
            13 => Self::DiskFull,
            10 => Self::Io,
            _ => Self::Other,
        }
    }
}

impl StoreError {
    /// The error for a failure of either driver, by its fault.
    fn of_fault(fault: SqliteFault, cause: Cause) -> Self {
        match fault {
            SqliteFault::Busy => Self::Busy(cause),
            SqliteFault::DiskFull => Self::DiskFull(cause),
            SqliteFault::Io => Self::Io(cause),
            SqliteFault::Other => Self::Other(cause),
        }
    }

    /// How long to wait before trying again, for a failure that clears on its own; `None` for
    /// a fault. A lock clears within the busy timeout; a full disk waits for a person.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Busy(_) => Some(Duration::from_secs(1)),
            Self::DiskFull(_) | Self::Io(_) => Some(Duration::from_secs(30)),
            Self::Other(_) => None,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        let fault = match &error {
            sqlx::Error::PoolTimedOut => SqliteFault::Busy,
            sqlx::Error::Database(db) => db
                .code()
                .and_then(|code| code.parse::<i32>().ok())
                .map_or(SqliteFault::Other, SqliteFault::of_code),
            _ => SqliteFault::Other,
        };
        Self::of_fault(fault, error.into())
    }
}

/// The one mapping of the intake connection's errors, through the same classification.
impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        let fault = match &error {
            rusqlite::Error::SqliteFailure(failure, _) => {
                SqliteFault::of_code(failure.extended_code)
            }
            _ => SqliteFault::Other,
        };
        Self::of_fault(fault, error.into())
    }
}

/// Times as sqlx stores them (RFC 3339, `+00:00`), so both connections write the same text and
/// SQL compares them in order.
pub(crate) fn sql_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

/// A stored time, in the forms sqlx reads: RFC 3339, or SQLite's `YYYY-MM-DD HH:MM:SS` as UTC.
pub(crate) fn parse_sql_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(text, "%F %T%.f")
                .ok()
                .map(|at| at.and_utc())
        })
}

/// One connection to an existing database, beside the service if it runs (the service locks
/// `<db>.lock`, not the database): for the commands that work on the file itself (backup,
/// audit export). It never migrates: a database from an older runbookd is refused.
pub async fn connect_existing(
    config: &DatabaseConfig,
    read_only: bool,
) -> anyhow::Result<sqlx::SqliteConnection> {
    use sqlx::ConnectOptions;
    anyhow::ensure!(
        config.path.is_file(),
        "there is no database at {}",
        config.path.display()
    );
    let mut conn = SqliteConnectOptions::new()
        .filename(&config.path)
        .busy_timeout(Duration::from_millis(config.busy_timeout_ms))
        .foreign_keys(true)
        .read_only(read_only)
        .connect()
        .await
        .with_context(|| format!("cannot open the database {}", config.path.display()))?;
    let current: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = ?)")
            .bind(NEWEST_TABLE)
            .fetch_one(&mut conn)
            .await?;
    anyhow::ensure!(
        current,
        "the database {} is not at this runbookd's schema: start `runbookd serve` on it once first",
        config.path.display()
    );
    Ok(conn)
}

/// Creates the database's directory, owner-only (0700), when it is missing: it holds the
/// database, its WAL and the link key.
pub(crate) fn create_database_dir(database: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(dir) = database.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create the database directory {}", dir.display()))?;
    }
    Ok(())
}

/// Creates the database file owner-only (0600) before SQLite opens it: SQLite gives the -wal
/// and -shm files the database file's mode, so all three are owner-only. An existing file
/// keeps its mode (it is the operator's), with a warning when others may read it.
fn create_database_file(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let mode = std::fs::metadata(path)?.mode() & 0o777;
            if mode & 0o077 != 0 {
                let p = path.display();
                tracing::warn!(
                    "the database {p} has mode {mode:04o}: other users can read it (alerts, runs, the audit trail); run `chmod 600 {p} {p}-wal {p}-shm`"
                );
            }
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("cannot create the database {}", path.display())),
    }
}

/// Whether an idle connection may be used again. On a full disk or an I/O error SQLite may
/// roll a transaction back on its own; sqlx's ROLLBACK then fails and its count of open
/// transactions stays at one. Used again, such a connection would nest each later transaction
/// in a savepoint of one that never commits: writes would succeed unseen and hold the write
/// lock for good. An idle connection that still counts a transaction is closed instead, and
/// the pool opens a fresh one.
fn in_step_with_sqlite(conn: &sqlx::SqliteConnection) -> bool {
    use sqlx::Connection;
    let in_step = !conn.is_in_transaction();
    if !in_step {
        tracing::warn!(
            "closing a database connection left inside a failed transaction; opening a fresh one"
        );
    }
    in_step
}

impl Store {
    /// Opens (creating if needed, owner-only) the database and brings its schema up to date.
    pub async fn open(config: &DatabaseConfig) -> anyhow::Result<Self> {
        create_database_dir(&config.path)?;
        create_database_file(&config.path)?;
        let base = SqliteConnectOptions::from_str("sqlite:")?
            .filename(&config.path)
            .busy_timeout(Duration::from_millis(config.busy_timeout_ms))
            .foreign_keys(true);

        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // A ping per acquire is a round trip to the connection's thread for every
            // intake batch; a dead connection fails its first statement all the same.
            .test_before_acquire(false)
            .before_acquire(|conn, _| Box::pin(async move { Ok(in_step_with_sqlite(conn)) }))
            .connect_with(
                base.clone()
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full),
            )
            .await
            .with_context(|| format!("cannot open the database {}", config.path.display()))?;
        sqlx::migrate!()
            .run(&writer)
            .await
            .context("cannot apply the database migrations")?;

        let reader = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(base.pragma("query_only", "ON"))
            .await
            .context("cannot open the database for reading")?;
        Ok(Self {
            writer,
            reader,
            path: config.path.clone(),
            busy_timeout: Duration::from_millis(config.busy_timeout_ms),
        })
    }

    /// A synchronous connection for intake (its writer's, and the one its checkpoint thread
    /// uses), with the writer pool's settings (WAL, the busy timeout, foreign keys)
    /// but `synchronous = NORMAL`: intake fsyncs the WAL itself before it answers (see
    /// `engine::intake::writer`). Open it after [`Store::open`], which migrated the file.
    pub(crate) fn open_sync(&self) -> Result<rusqlite::Connection, StoreError> {
        let conn = rusqlite::Connection::open(&self.path)?;
        conn.busy_timeout(self.busy_timeout)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
        )?;
        // Measured under the peer benchmark (scripts/bench-peer.sh): statement journals in
        // memory spare a temporary file's open and close per savepoint. Intake's checkpoint
        // thread checkpoints every few milliseconds, off the writer's path; the writer
        // checkpoints itself only if the WAL still reaches 10000 pages (about 40 MiB), a
        // bound should those checkpoints fall behind.
        conn.execute_batch("PRAGMA temp_store = MEMORY; PRAGMA wal_autocheckpoint = 10000;")?;
        // Every statement intake runs stays prepared.
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    }

    /// The database's write-ahead log, beside it.
    pub(crate) fn wal_path(&self) -> PathBuf {
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        wal.into()
    }

    /// The writer pool's one connection, held so that nothing else writes meanwhile: the
    /// intake writer holds it while its own connection writes.
    pub(crate) async fn hold_writer(&self) -> Result<PoolConnection<sqlx::Sqlite>, StoreError> {
        Ok(self.writer.acquire().await?)
    }

    /// A transaction on the writer, for a change that spans repositories (intake).
    pub async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        Ok(self.writer.begin().await?)
    }

    /// Answers when the database does: the readiness probe.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    /// Closes both pools, checkpointing the WAL.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}
