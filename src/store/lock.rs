//! One process per database: `<db>.lock` beside the SQLite file, held with an advisory lock
//! (`flock`) for as long as the process serves. A second process on the same file is refused
//! at start, told which file and who holds it; the kernel drops the lock when the holder exits,
//! however it exits, so a crash never leaves the database locked.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, Utc};
use rustix::fs::{FlockOperation, flock};
use rustix::io::Errno;

/// The held lock; dropping it releases it.
#[derive(Debug)]
pub struct DatabaseLock {
    _file: File,
}

/// Where the lock of `database` lives.
pub fn lock_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

impl DatabaseLock {
    /// Takes the lock of `database` for `holder` (this process's lease owner), or says who has
    /// it. Creates the database's directory (owner-only) if needed.
    pub fn acquire(database: &Path, holder: &str, now: DateTime<Utc>) -> anyhow::Result<Self> {
        super::create_database_dir(database)?;
        let path = lock_path(database);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => {
                let mut held_by = String::new();
                let _ = file.read_to_string(&mut held_by);
                let held_by = held_by.trim();
                anyhow::bail!(
                    "the database {} is in use by another runbookd process ({}); one process per database (lock file {})",
                    database.display(),
                    if held_by.is_empty() {
                        "holder unknown"
                    } else {
                        held_by
                    },
                    path.display()
                );
            }
            Err(error) => {
                return Err(error).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        // Who holds it, for the message a second process prints.
        file.set_len(0)?;
        file.rewind()?;
        writeln!(
            file,
            "pid {}, {holder}, since {}",
            std::process::id(),
            now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )?;
        file.sync_data()?;
        Ok(Self { _file: file })
    }
}
