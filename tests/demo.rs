//! `runbookd demo` tells the stale-nfs story in a terminal: alert → diagnosis → cause →
//! restart → canary → full backup → fresh, then the timeline.

#[test]
fn the_demo_tells_the_stale_nfs_story() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_runbookd"))
        .args([
            "demo",
            "--scenario",
            "stale-nfs",
            "--playbooks",
            concat!(env!("CARGO_MANIFEST_DIR"), "/playbooks"),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let story = [
        "alert → PBSBackupStale",
        "diagnosis: probing",
        "cause stale_nfs_handles",
        "step restart_pbs: on pbs: systemctl restart proxmox-backup proxmox-backup-proxy",
        "step canary_backup:  vzdump 200 on ruapehu",
        "step full_backup:  vzdump all on every PVE host",
        "step groups_fresh:",
        "run 1 resolved",
        "timeline of incident 1:",
        "timeline of run 1:",
    ];
    let mut from = 0;
    for line in story {
        let at = stdout[from..]
            .find(line)
            .unwrap_or_else(|| panic!("{line:?} missing, or out of order, in:\n{stdout}"));
        from += at + line.len();
    }
}
