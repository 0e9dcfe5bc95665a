//! The one check of who else can touch a file runbookd trusts: a secret (a token, a private
//! key, the link key) must be readable by its owner only, and a known_hosts file must not be
//! writable by anyone but its owner, or any local user could read the secret or swap a pinned
//! host key. `check` and `serve` both refuse what fails, with the file, its mode and the fix.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Refuses a secret file that group or others may use. One exception: readable by the
/// process's own group, which is how Kubernetes mounts a Secret for a non-root pod
/// (`defaultMode: 0440`, owned by root and the pod's `fsGroup`/`runAsGroup`).
pub fn check_secret_file(path: &Path) -> Result<(), String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mode = meta.mode() & 0o777;
    let own_group_read_only = mode & 0o070 == 0o040 && meta.gid() == process_group();
    if mode & 0o007 != 0 || (mode & 0o070 != 0 && !own_group_read_only) {
        return Err(format!(
            "{} has mode {mode:04o}: a secret file must be readable by its owner only; run `chmod 600 {}`",
            path.display(),
            path.display()
        ));
    }
    Ok(())
}

/// Refuses a known_hosts file that group or others may write, or that belongs to another user
/// than this one or root, or that sits in a directory others may write (they could replace it).
pub fn check_known_hosts(path: &Path) -> Result<(), String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mode = meta.mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "{} has mode {mode:04o}: others could replace a pinned host key; run `chmod 644 {}`",
            path.display(),
            path.display()
        ));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(format!(
            "{} belongs to user {}: known_hosts must belong to this user ({me}) or root; run `chown {me} {}`",
            path.display(),
            meta.uid(),
            path.display()
        ));
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Ok(dir_meta) = std::fs::metadata(dir) {
        let dir_mode = dir_meta.mode() & 0o7777;
        // A sticky directory (/tmp) lets others add files but not replace this one.
        if dir_mode & 0o022 != 0 && dir_mode & 0o1000 == 0 {
            return Err(format!(
                "{} is in {}, which has mode {dir_mode:04o}: others could replace it; run `chmod go-w {}`",
                path.display(),
                dir.display(),
                dir.display()
            ));
        }
    }
    Ok(())
}

fn process_group() -> u32 {
    rustix::process::getegid().as_raw()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn file_at(mode: u32) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        file
    }

    #[test]
    fn a_secret_file_must_be_owner_only_but_for_the_processs_own_group() {
        for mode in [0o600, 0o400, 0o440] {
            assert_eq!(check_secret_file(file_at(mode).path()), Ok(()), "{mode:o}");
        }
        for mode in [0o666, 0o644, 0o604, 0o660, 0o620] {
            let file = file_at(mode);
            let message = check_secret_file(file.path()).unwrap_err();
            assert!(
                message.contains(&format!("{mode:04o}"))
                    && message.contains(&format!("chmod 600 {}", file.path().display())),
                "{message}"
            );
        }
    }

    #[test]
    fn known_hosts_may_be_world_readable_but_not_writable() {
        assert_eq!(check_known_hosts(file_at(0o644).path()), Ok(()));
        for mode in [0o666, 0o664, 0o646] {
            let file = file_at(mode);
            let message = check_known_hosts(file.path()).unwrap_err();
            assert!(message.contains("chmod 644"), "{message}");
        }
    }
}
