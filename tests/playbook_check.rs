//! `runbookd check` validates every playbook: the shipped one passes, and each broken variant
//! is caught with a message a person can act on, at its file and line.

use std::path::Path;
use std::time::Duration;

use runbookd::playbook;
use runbookd::playbook::model::SequenceApproval;

const SHIPPED: &str = include_str!("../playbooks/pbs-backup-stale.yaml");

/// Each case: what is broken, a replacement applied to the shipped playbook, and a fragment
/// the problem must say.
const BROKEN: [(&str, &str, &str, &str); 25] = [
    (
        "an unknown key",
        "automation: standard",
        "automation: standard\nautomaton: manual",
        "unknown field `automaton`",
    ),
    (
        "a misspelled step key",
        "    risk: medium\n    idempotent: true\n    cooldown: 30m\n",
        "    risk: medium\n    idempotnt: true\n    cooldown: 30m\n",
        "unknown field `idempotnt`",
    ),
    (
        "a cause naming a missing step",
        "remediate: [restart_pbs, check_pbs_active]\n  - id: pbs_services_down",
        "remediate: [restart_pbs, check_pbs_activ]\n  - id: pbs_services_down",
        "names step 'check_pbs_activ', which is not defined",
    ),
    (
        "an unreachable step",
        "verify: [canary_backup, full_backup, groups_fresh]",
        "verify: [canary_backup, groups_fresh]",
        "step 'full_backup' is unreachable",
    ),
    (
        "a fact used but never produced",
        "when: { fact: nfs_mounted, is: false }",
        "when: { fact: nfs_mountd, is: false }",
        "uses fact 'nfs_mountd', which no probe produces",
    ),
    (
        "an untyped fact in a template",
        "backup_job_id: { json: \"/0/id\", type: name }",
        "backup_job_id: { json: \"/0/id\" }",
        "uses fact 'backup_job_id', which declares no type",
    ),
    (
        "a template with a shell pipe",
        "run: \"findmnt -n -o SOURCE,FSTYPE {pbs.mountpoint}\"",
        "run: \"mount | grep {pbs.mountpoint}\"",
        "'|' is a shell operator",
    ),
    (
        "a template with an unknown placeholder",
        "run: \"df -h {pbs.mountpoint}\"",
        "run: \"df -h {labels.mount}\"",
        "placeholder '{labels.mount}' is not a parameter",
    ),
    (
        "a regex that does not compile",
        "regex: \"^status: running$\"",
        "regex: \"^status: (running$\"",
        "the regex does not compile",
    ),
    (
        "a bad duration",
        "cooldown: 30m\n    timeout: 120s\n  lazy_unmount:",
        "cooldown: 30 minutes\n    timeout: 120s\n  lazy_unmount:",
        "'30 minutes' is not a duration",
    ),
    (
        "a trigger matcher that does not compile",
        "'alertname=~\"PBS backup failed: .+\"'",
        "'alertname=~\"PBS backup failed: (.+\"'",
        "bad regex",
    ),
    (
        "a probe waiting for a later probe",
        "    after: [stale_groups]",
        "    after: [vzdump_running]",
        "waits for 'vzdump_running', which is not a probe defined before it",
    ),
    (
        "a non-idempotent step without a recheck",
        "    idempotent: false\n    recheck: nfs_mount",
        "    idempotent: false",
        "neither idempotent nor has a recheck probe",
    ),
    (
        "a condition with two tests",
        "when: { fact: backup_job_enabled, is: 0 }",
        "when: { fact: backup_job_enabled, is: 0, empty: true }",
        "needs exactly one of is, empty, contains, equals_fact",
    ),
    (
        "a guard re-running an unknown probe",
        "- probe: vzdump_running\n",
        "- probe: vzdump_runing\n",
        "the guard re-runs probe 'vzdump_runing', which is not a probe",
    ),
    (
        "a guard without max_wait",
        "      max_wait: 4h\n",
        "",
        "the guard needs max_wait",
    ),
    (
        "a guard with a bad re-check interval",
        "      every: 30s\n",
        "      every: soon\n",
        "guard re-check interval: 'soon' is not a duration",
    ),
    (
        "a guard naming an undefined time interval",
        "mute: [change_freeze]",
        "mute: [change_frieze]",
        "names time interval 'change_frieze', which is not defined under time_intervals",
    ),
    (
        "a time range that ends before it starts",
        "change_freeze: []",
        "change_freeze: [{ times: [\"05:00-01:00\"] }]",
        "time range '05:00-01:00' must be HH:MM-HH:MM",
    ),
    (
        "a misspelled weekday",
        "change_freeze: []",
        "change_freeze: [{ weekdays: [\"mondey:friday\"] }]",
        "weekday 'mondey:friday' must be a day",
    ),
    (
        "a time zone name",
        "change_freeze: []",
        "change_freeze: [{ times: [\"01:00-05:00\"], location: Pacific/Auckland }]",
        "location 'Pacific/Auckland' must be UTC or a fixed offset",
    ),
    (
        "an accepted exit code listed twice",
        "accept_exit: [0, { code: 32, reason: nothing was mounted }]",
        "accept_exit: [0, 32, { code: 32, reason: nothing was mounted }]",
        "step 'lazy_unmount': accept_exit lists 32 twice",
    ),
    (
        "an accepted exit that is no exit code",
        "accept_exit: [0, { code: 32, reason: nothing was mounted }]",
        "accept_exit: [0, { code: 320, reason: nothing was mounted }]",
        "accept_exit 320 is not an exit code (0-255)",
    ),
    (
        "an accepted exit with a misspelled reason",
        "accept_exit: [0, { code: 32, reason: nothing was mounted }]",
        "accept_exit: [0, { code: 32, reasn: nothing was mounted }]",
        "an exit code such as 32, or { code: 32, reason:",
    ),
    (
        "a bad approval window",
        "approval_window: 1h",
        "approval_window: 1 hour",
        "approval_window: '1 hour' is not a duration",
    ),
];

#[test]
fn the_shipped_playbook_is_valid() {
    let parsed = playbook::parse(Path::new("playbooks/pbs-backup-stale.yaml"), SHIPPED).unwrap();
    assert_eq!(parsed.name, "pbs-backup-stale");
    let causes: Vec<&str> = parsed.causes.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(
        causes,
        [
            "nothing_stale",
            "decommissioned_only",
            "pbs_unreachable",
            "nfs_mount_missing",
            "stale_nfs_handles",
            "pbs_services_down",
            "fingerprint_mismatch",
            "backup_job_disabled"
        ],
        "every cause of the runbook, in DESIGN.md's order"
    );
    assert_eq!(
        parsed.verify,
        ["canary_backup", "full_backup", "groups_fresh"]
    );
}

#[test]
fn the_shipped_playbook_compiles_its_guards_windows_and_one_approval_remount() {
    let parsed = playbook::parse(Path::new("p.yaml"), SHIPPED).unwrap();
    for step in ["restart_pbs", "canary_backup", "full_backup"] {
        let guard = parsed.steps[step]
            .guard
            .as_ref()
            .unwrap_or_else(|| panic!("{step} is guarded"));
        assert_eq!(guard.require[0].probe, "vzdump_running", "{step}");
        assert_eq!(guard.mute[0].0, "change_freeze", "{step}");
        assert_eq!(guard.max_wait, Duration::from_secs(4 * 3600), "{step}");
        assert_eq!(guard.every, Duration::from_secs(30), "{step}");
    }
    assert_eq!(
        parsed.steps["lazy_unmount"].approval_window,
        Duration::from_secs(3600)
    );
    assert_eq!(
        parsed.cause("nfs_mount_missing").unwrap().approval,
        SequenceApproval::Once
    );
    // umount's 32 (nothing was mounted) is accepted, with the reason people are shown.
    let unmount = &parsed.steps["lazy_unmount"];
    assert_eq!(
        unmount.accepted_exit(32).and_then(|a| a.reason.as_deref()),
        Some("nothing was mounted")
    );
    assert!(unmount.accepted_exit(0).is_some_and(|a| a.reason.is_none()));
    assert!(unmount.accepted_exit(1).is_none());
    assert!(
        parsed.steps["restart_pbs"].accepted_exit(0).is_some(),
        "a step that lists none accepts 0"
    );
    assert!(
        unmount
            .changes
            .as_deref()
            .is_some_and(|c| c.contains("NFS mount"))
    );
    let step_window = SHIPPED.replacen(
        "    approval: always\n",
        "    approval: always\n    approval_window: 5m\n",
        1,
    );
    let parsed = playbook::parse(Path::new("p.yaml"), &step_window).unwrap();
    assert_eq!(
        parsed.steps["set_storage_fingerprint"].approval_window,
        Duration::from_secs(300),
        "a step's window wins over the playbook's"
    );
    assert_eq!(
        parsed.steps["forget_decommissioned_groups"].approval_window,
        Duration::from_secs(3600)
    );
}

#[test]
fn each_broken_playbook_is_caught_with_a_useful_message_and_its_line() {
    let path = Path::new("playbooks/broken.yaml");
    let mut failures = Vec::new();
    for (what, from, to, says) in BROKEN {
        assert!(
            SHIPPED.contains(from),
            "{what}: the shipped playbook no longer contains {from:?}"
        );
        let broken = SHIPPED.replacen(from, to, 1);
        match playbook::parse(path, &broken) {
            Ok(_) => failures.push(format!("{what}: accepted")),
            Err(problems) => {
                let found = problems.iter().find(|p| p.message.contains(says));
                match found {
                    None => failures.push(format!("{what}: {problems:?} does not say {says:?}")),
                    Some(p) if !p.location.starts_with("playbooks/broken.yaml:") => {
                        failures.push(format!("{what}: no line in {:?}", p.location))
                    }
                    Some(_) => {}
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn runbookd_check_reports_a_broken_playbook_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("good.yaml"), SHIPPED).unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        SHIPPED
            .replace("name: pbs-backup-stale", "name: other")
            .replace(
                "when: { fact: nfs_mounted, is: false }",
                "when: { fact: nfs_mountd, is: false }",
            ),
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a playbook").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_runbookd"))
        .args(["check", "--playbooks"])
        .arg(dir.path())
        .env_remove("RUNBOOKD_CONFIG")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = SHIPPED
        .lines()
        .position(|l| l.contains("id: nfs_mount_missing"))
        .unwrap()
        + 1;
    assert!(
        stderr.contains(&format!(
            "{}:{line}: cause 'nfs_mount_missing' uses fact 'nfs_mountd'",
            dir.path().join("bad.yaml").display()
        )),
        "{stderr}"
    );

    std::fs::remove_file(dir.path().join("bad.yaml")).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_runbookd"))
        .args(["check", "--playbooks"])
        .arg(dir.path())
        .env_remove("RUNBOOKD_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("playbook pbs-backup-stale"), "{stdout}");
}
