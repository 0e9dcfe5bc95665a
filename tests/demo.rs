//! `runbookd demo` tells the stale-nfs story in a terminal: alert → diagnosis → cause →
//! restart → canary → full backup → fresh, then the incident's story in chapters, every event
//! a sentence and none of it JSON.

use runbookd::store::audit::AuditAction;

/// `runbookd demo --scenario SCENARIO`'s output, after checking it succeeded.
fn demo(scenario: &str) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_runbookd"))
        .args([
            "demo",
            "--scenario",
            scenario,
            "--playbooks",
            concat!(env!("CARGO_MANIFEST_DIR"), "/playbooks"),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Each of `lines` in `text`, in this order.
fn in_order(text: &str, lines: &[&str]) {
    let mut from = 0;
    for line in lines {
        let at = text[from..]
            .find(line)
            .unwrap_or_else(|| panic!("{line:?} missing, or out of order, in:\n{text}"));
        from += at + line.len();
    }
}

/// What a person reads: sentences, never JSON or bare action names.
fn reads_as_words(text: &str) {
    let key = regex::Regex::new(r#""\w+":"#).unwrap();
    assert!(
        !text.contains('{') && !key.is_match(text),
        "raw JSON in:\n{text}"
    );
    for action in AuditAction::ALL {
        assert!(
            !text.contains(action.as_str()),
            "the bare action name {} in:\n{text}",
            action.as_str()
        );
    }
}

#[test]
fn the_demo_tells_the_stale_nfs_story() {
    let stdout = demo("stale-nfs");
    in_order(
        &stdout,
        &[
            "alert → PBSBackupStale",
            "The engine took up the run and began diagnosing",
            "Diagnosis found stale_nfs_handles (evidence: log_classes: ",
            "ran `systemctl restart proxmox-backup proxmox-backup-proxy` on pbs in ",
            ": exit 0",
            "ran `vzdump 200 on ruapehu (PVE API)`",
            "ran `vzdump all on every PVE host (PVE API)`",
            "ran `poll stale_groups every 15s`",
            "run 1 resolved",
            "the story of incident 1:",
            "  The alert\n",
            "PBSBackupStale (from alertmanager) fired: a new incident opened",
            "started a run of pbs-backup-stale on pbs",
            "  Diagnosis\n",
            "Diagnosis found stale_nfs_handles",
            "  The fix\n",
            "ran `systemctl restart proxmox-backup proxmox-backup-proxy` on pbs",
            "  Verification\n",
            "ran `vzdump 200 on ruapehu (PVE API)`",
            "  The end\n",
            "The run ended resolved",
            "The incident is resolved: the run verified its fix",
        ],
    );
    reads_as_words(&stdout);
    let story = stdout.split("the story of incident 1:").nth(1).unwrap();
    assert!(
        !story.contains("started step"),
        "a step is told once, by its end:\n{story}"
    );
}

/// After the approval the run is taken up again at its step: diagnosis is not told again.
#[test]
fn a_resumed_run_does_not_diagnose_again_in_the_story() {
    let stdout = demo("nfs-unmounted");
    let progress = stdout.split("the story of incident 1:").next().unwrap();
    assert_eq!(
        progress.matches("began diagnosing").count(),
        1,
        "diagnosis is told once:\n{stdout}"
    );
    in_order(
        &stdout,
        &[
            "Diagnosis found nfs_mount_missing (evidence: nfs_mounted: false)",
            "asked for approval of lazy_unmount: `umount -l /mnt/pbs-datastore` on pbs, then `mount /mnt/pbs-datastore` on pbs",
            "demo approved `umount -l /mnt/pbs-datastore` on pbs",
            "The engine took up the run again (lease attempt 2), at step lazy_unmount",
            "ran `umount -l /mnt/pbs-datastore` on pbs in ",
            ": exit 32: nothing was mounted (as the playbook expects)",
            "run 1 resolved",
        ],
    );
    reads_as_words(&stdout);
}
