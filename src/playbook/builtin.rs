//! The shipped playbooks, built into the binary so a release binary started anywhere (a
//! container, a systemd unit) runs them with no `playbooks/` beside it. `--playbooks DIR` (or
//! `playbooks_dir`) replaces them; `runbookd playbooks --export DIR` writes them out as a start.

use std::path::{Path, PathBuf};

use super::{PlaybookFile, PlaybookVersion, load_dir, parse};
use crate::config::Problem;

/// File name and text of each shipped playbook.
pub const BUILTIN: [(&str, &str); 1] = [(
    "pbs-backup-stale.yaml",
    include_str!("../../playbooks/pbs-backup-stale.yaml"),
)];

/// Where problems in a built-in playbook are reported: `builtin:FILE`.
fn builtin_path(file: &str) -> PathBuf {
    PathBuf::from(format!("builtin:{file}"))
}

/// The built-in playbooks, validated like any directory's.
pub fn load_builtin() -> Result<Vec<PlaybookFile>, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut files = Vec::new();
    for (file, text) in BUILTIN {
        let path = builtin_path(file);
        match parse(&path, text) {
            Ok(playbook) => files.push(PlaybookFile {
                path,
                playbook,
                version: PlaybookVersion::of(text),
            }),
            Err(found) => problems.extend(found),
        }
    }
    if problems.is_empty() {
        Ok(files)
    } else {
        Err(problems)
    }
}

/// The playbooks in `dir`, or the built-in ones when no directory is given.
pub fn load(dir: Option<&Path>) -> Result<Vec<PlaybookFile>, Vec<Problem>> {
    match dir {
        Some(dir) => load_dir(dir),
        None => load_builtin(),
    }
}

/// Writes every built-in playbook into `dir` (created if missing); refuses to overwrite a file
/// that is already there. Returns the paths written.
pub fn export(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for (file, text) in BUILTIN {
        let path = dir.join(file);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut out| std::io::Write::write_all(&mut out, text.as_bytes()))
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_playbooks_are_the_shipped_files_and_valid() {
        let files = load_builtin().unwrap();
        assert_eq!(files.len(), BUILTIN.len());
        assert_eq!(files[0].playbook.name, "pbs-backup-stale");
        assert_eq!(files[0].path, Path::new("builtin:pbs-backup-stale.yaml"));
    }

    #[test]
    fn export_writes_the_files_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let written = export(dir.path()).unwrap();
        assert_eq!(written, [dir.path().join("pbs-backup-stale.yaml")]);
        assert!(load_dir(dir.path()).is_ok());
        let again = export(dir.path()).unwrap_err();
        assert_eq!(again.kind(), std::io::ErrorKind::AlreadyExists);
    }
}
