//! The CLI walks an incident from `incidents` to `approve` against a running service: the real
//! binary as the service (`serve --lab nfs-unmounted`) and the real binary as the client, with
//! the URL and tokens in the environment as a person would set them. Output goes to a pipe,
//! so it must carry no colour, and no token may appear in any of it. Waiting polls the REST API;
//! the CLI runs once what it should show is there.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::eventually;
use common::process::ServiceProcess;
use serde_json::Value;

const ADMIN: &str = "cli-test-admin-secret-0123456789abcdef";
const AGENT: &str = "cli-test-agent-secret-0123456789abcdef";
const APPROVER: &str = "cli-test-approver-secret-0123456789abc";
const SECRETS: [&str; 7] = [
    ADMIN,
    AGENT,
    APPROVER,
    common::ADMIN_TOKEN,
    common::AGENT_TOKEN,
    common::APPROVER_TOKEN,
    common::INGEST_TOKEN,
];

/// One finished CLI invocation.
struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `runbookd ARGS` with `RUNBOOKD_URL=url` and `RUNBOOKD_TOKEN=token`, stdout and
/// stderr piped; checks what every invocation must hold: no ANSI escapes, no token.
async fn cli(url: &str, token: Option<&str>, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_runbookd"));
    command
        .args(args)
        .env("RUNBOOKD_URL", url)
        .env_remove("RUNBOOKD_TOKEN")
        .env_remove("NO_COLOR")
        .kill_on_drop(true);
    if let Some(token) = token {
        command.env("RUNBOOKD_TOKEN", token);
    }
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the CLI ends within 60 s")
        .unwrap();
    let output = Output {
        code: output.status.code().expect("the CLI exits, not killed"),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    };
    assert!(
        !output.stdout.contains('\u{1b}') && !output.stderr.contains('\u{1b}'),
        "no colour into a pipe: {args:?}\n{output:?}"
    );
    for secret in SECRETS {
        assert!(
            !output.stdout.contains(secret) && !output.stderr.contains(secret),
            "a token in the output of {args:?}\n{output:?}"
        );
    }
    output
}

async fn start_service(dir: &Path) -> ServiceProcess {
    let tokens = [("agent", "agent", AGENT), ("oncall", "approver", APPROVER)];
    ServiceProcess::start_lab(dir, "nfs-unmounted", ADMIN, &tokens, "", &[]).await
}

/// `GET path` on the service, read by the test itself: waiting polls the API, and the CLI runs
/// once what it should show is there.
async fn api_get(url: &str, path: &str) -> Value {
    let response = reqwest::Client::new()
        .get(format!("{url}{path}"))
        .bearer_auth(ADMIN)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "GET {path}: {response:?}");
    response.json().await.unwrap()
}

/// The ids of the pending approvals for `step`, as the API lists them now.
async fn pending(url: &str, step: &str) -> Vec<i64> {
    let list = api_get(url, "/api/v1/approvals?status=pending").await;
    list.as_array()
        .unwrap()
        .iter()
        .filter(|a| a["step"] == step)
        .filter_map(|a| a["id"].as_i64())
        .collect()
}

/// The id of the pending approval for `step`, once the API lists one.
async fn pending_approval(url: &str, step: &str) -> i64 {
    eventually(
        &format!("a pending approval for {step}"),
        Duration::from_secs(90),
        || async { pending(url, step).await.first().copied() },
    )
    .await
}

/// What `runbookd ARGS` prints on a terminal: run under `script`, which gives it a pty.
async fn on_a_terminal(url: &str, token: &str, args: &[&str], no_color: Option<&str>) -> String {
    let line = std::iter::once(env!("CARGO_BIN_EXE_runbookd"))
        .chain(args.iter().copied())
        .map(|a| shlex::try_quote(a).unwrap().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let mut command = tokio::process::Command::new("script");
    command
        .args(["-qec", &line, "/dev/null"])
        .env("RUNBOOKD_URL", url)
        .env("RUNBOOKD_TOKEN", token)
        .env_remove("NO_COLOR")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(value) = no_color {
        command.env("NO_COLOR", value);
    }
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the CLI ends within 60 s")
        .expect("script(1) from bsdutils runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{text}");
    assert!(!text.contains(token), "the token on a terminal");
    text
}

/// The line of `text` whose first column is `id`.
/// The card of approval `id` in `runbookd approvals`' output: its first line to the next card.
fn card(text: &str, id: i64) -> String {
    let start = text
        .find(&format!("approval {id} for "))
        .unwrap_or_else(|| panic!("no approval {id} in\n{text}"));
    let rest = &text[start..];
    let end = rest[1..]
        .find("\n  approval ")
        .map_or(rest.len(), |e| e + 1);
    rest[..end].to_owned()
}

/// No JSON object or `"key":` in text meant for people.
fn assert_no_json(text: &str) {
    let key = regex::Regex::new(r#""\w+":"#).unwrap();
    assert!(
        !text.contains('{') && !key.is_match(text),
        "raw JSON in:\n{text}"
    );
}

fn row(text: &str, id: i64) -> &str {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(id.to_string().as_str()))
        .unwrap_or_else(|| panic!("no row {id} in\n{text}"))
}

#[tokio::test]
async fn the_cli_walks_an_incident_from_incidents_to_approve() {
    let dir = tempfile::tempdir().unwrap();
    let service = start_service(dir.path()).await;
    let url = service.address.as_str();

    let posted = service.post_reference_alert(ADMIN).await;
    let incident = posted["incident_id"].as_i64().unwrap();
    let run = posted["run_id"].as_i64().unwrap();

    // The run diagnoses, then waits for a human before the remount (`umount -l`, `mount`, ...).
    let unmount = pending_approval(url, "lazy_unmount").await;
    let out = cli(url, Some(APPROVER), &["approvals", "--json"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let listed: Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == unmount && a["status"] == "pending"),
        "{out:?}"
    );

    let out = cli(url, Some(AGENT), &["incidents"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let line = row(&out.stdout, incident);
    assert!(
        line.contains("PBSBackupStale")
            && line.contains("open")
            && line.contains(&format!("{run} waiting_approval")),
        "{out:?}"
    );

    let out = cli(
        url,
        Some(AGENT),
        &["incidents", "show", &incident.to_string()],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    for expected in [
        format!("incident {incident} PBSBackupStale"),
        format!("run {run} pbs-backup-stale"),
        "waiting_approval at step lazy_unmount".to_owned(),
        "cause nfs_mount_missing".to_owned(),
        format!("approval {unmount} for lazy_unmount  pending"),
        "$ umount -l /".to_owned(),
        "incident.opened".to_owned(),
        format!("the run's timeline: runbookd runs show {run}"),
    ] {
        assert!(
            out.stdout.contains(&expected),
            "missing {expected:?}: {out:?}"
        );
    }

    let out = cli(url, Some(APPROVER), &["runs", "show", &run.to_string()]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("cause nfs_mount_missing")
            && out.stdout.contains("$ umount -l /")
            && out.stdout.contains("evidence")
            && out.stdout.contains("approval.requested"),
        "{out:?}"
    );

    // The card names the host of every command, what each changes, and what happens if
    // nobody decides.
    let out = cli(url, Some(APPROVER), &["approvals"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let card = card(&out.stdout, unmount);
    for expected in [
        format!("approval {unmount} for lazy_unmount  pending"),
        "risk high".to_owned(),
        "on pbs: $ umount -l /mnt/pbs-datastore".to_owned(),
        "changes: detaches the datastore's NFS mount from PBS".to_owned(),
        "on pbs: $ mount /mnt/pbs-datastore".to_owned(),
        "on pbs: $ systemctl restart proxmox-backup proxmox-backup-proxy".to_owned(),
        "if nobody decides by ".to_owned(),
        "it is rejected and the run escalates to a human".to_owned(),
    ] {
        assert!(card.contains(&expected), "missing {expected:?} in\n{card}");
    }

    // The agent may read but never decide: refused, and nothing changed.
    let out = cli(url, Some(AGENT), &["approve", &unmount.to_string()]).await;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(
        out.stderr
            .contains("token 'agent' has role 'agent', which may not decide approvals"),
        "{out:?}"
    );
    assert_eq!(pending(url, "lazy_unmount").await, [unmount]);

    let out = cli(
        url,
        Some(APPROVER),
        &[
            "approve",
            &unmount.to_string(),
            "--comment",
            "cli test: the mount is gone",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.starts_with(&format!(
            "approval {unmount} approved by oncall: run {run} step lazy_unmount"
        )),
        "{out:?}"
    );

    // Deciding again reports the first decision, whichever way it is asked.
    let out = cli(url, Some(ADMIN), &["approve", &unmount.to_string()]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.starts_with(&format!(
            "approval {unmount} was already approved by oncall"
        )),
        "{out:?}"
    );
    let out = cli(url, Some(APPROVER), &["reject", &unmount.to_string()]).await;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stdout.starts_with(&format!(
            "approval {unmount} was not rejected: it is approved by oncall"
        )),
        "{out:?}"
    );

    // The one approval covered the whole remount: the run goes on to the end without asking.
    eventually("the run to end", Duration::from_secs(120), || async {
        let detail = api_get(url, &format!("/api/v1/runs/{run}")).await;
        let state = detail["run"]["state"].as_str()?;
        assert!(
            state != "escalated" && state != "cancelled",
            "the run ended {state}: {detail:#}"
        );
        (state == "resolved").then_some(())
    })
    .await;
    let out = cli(url, Some(AGENT), &["runs", "show", &run.to_string()]).await;
    let first = out.stdout.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(&format!("run {run} pbs-backup-stale on "))
            && first.ends_with("  resolved"),
        "{out:?}"
    );
    for expected in [
        "comment: cli test: the mount is gone",
        "$ mount /",
        "approval.decided",
        "oncall",
        // umount finds nothing mounted: exit 32, which the playbook accepts, with its reason.
        "exit 32: nothing was mounted (expected)",
        "ran `umount -l /mnt/pbs-datastore` on pbs in ",
        ": exit 32: nothing was mounted (as the playbook expects)",
        "oncall approved `umount -l /mnt/pbs-datastore` on pbs, then `mount /mnt/pbs-datastore` on pbs",
    ] {
        assert!(
            out.stdout.contains(expected),
            "missing {expected:?}: {out:?}"
        );
    }
    assert_no_json(&out.stdout);
    let out = cli(url, Some(AGENT), &["approvals"]).await;
    assert_eq!(out.stdout, "no approvals\n", "nothing is pending any more");

    // On a terminal there is colour, unless NO_COLOR asks for none.
    let show = ["runs", "show", &run.to_string()];
    let coloured = on_a_terminal(url, AGENT, &show, None).await;
    assert!(
        coloured.contains("\u{1b}[") && coloured.contains("approval.decided"),
        "{coloured}"
    );
    let plain = on_a_terminal(url, AGENT, &show, Some("1")).await;
    assert!(
        !plain.contains('\u{1b}') && plain.contains("approval.decided"),
        "{plain}"
    );

    service.terminate().await;
}

#[tokio::test]
async fn pause_and_resume_need_an_admin_and_refusals_are_plain() {
    let dir = tempfile::tempdir().unwrap();
    let service = start_service(dir.path()).await;
    let url = service.address.as_str();
    let paused = || async {
        api_get(url, "/api/v1/playbooks").await["paused"]
            .as_bool()
            .unwrap()
    };

    let out = cli(url, Some(APPROVER), &["pause"]).await;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr
            .contains("token 'oncall' has role 'approver', which may not pause or resume runbookd"),
        "{out:?}"
    );
    assert!(!paused().await, "a refused pause changes nothing");

    let out = cli(url, Some(ADMIN), &["pause"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.starts_with("paused: new runs are held"),
        "{out:?}"
    );
    assert!(paused().await);
    let out = cli(url, Some(ADMIN), &["resume", "--json"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        serde_json::from_str::<Value>(&out.stdout).unwrap(),
        serde_json::json!({"paused": false})
    );
    assert!(!paused().await);

    // Not found, an unknown token, and no token at all.
    let out = cli(url, Some(AGENT), &["incidents", "show", "999999"]).await;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr.contains("there is no incident 999999"),
        "{out:?}"
    );
    let out = cli(url, Some(AGENT), &["runs", "show", "999999"]).await;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("there is no run 999999"), "{out:?}");
    let out = cli(url, Some(&AGENT.replace('a', "b")), &["incidents"]).await;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr.contains("the bearer token is not valid"),
        "{out:?}"
    );
    let out = cli(url, None, &["incidents"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("RUNBOOKD_TOKEN"), "{out:?}");
    let out = cli(url, Some(AGENT), &["incidents"]).await;
    assert_eq!((out.code, out.stdout.as_str()), (0, "no incidents\n"));

    service.terminate().await;
}

#[tokio::test]
async fn an_unreachable_service_is_named_in_the_error() {
    // Port 1 (tcpmux) on loopback: no test binds it (they all take port 0, from the ephemeral
    // range), so unlike a port freed a moment ago nothing can take it meanwhile. Checked first,
    // so a machine that does serve it fails here and says so.
    let closed: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
    match std::net::TcpStream::connect_timeout(&closed, Duration::from_secs(5)) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
        other => panic!("this test needs {closed} to refuse connections; got {other:?}"),
    }
    let out = cli("http://127.0.0.1:1", Some(AGENT), &["incidents"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(
        out.stderr
            .contains("cannot reach http://127.0.0.1:1/: Connection refused"),
        "{out:?}"
    );
    let out = cli("127.0.0.1:8080", Some(AGENT), &["approvals"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("is not valid"), "{out:?}");
    // The port fails to parse before the credentials are looked at: still never shown.
    let out = cli("http://u:secret@host:99999", Some(AGENT), &["incidents"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("is not valid") && !out.stderr.contains("secret"),
        "{out:?}"
    );
}

#[tokio::test]
async fn an_expired_approval_cannot_be_approved_and_the_cli_says_why() {
    use runbookd::clock::Clock;
    use runbookd::store::approvals::{ApprovalAction, ApprovalRequest, OnTimeout};

    let app = common::TestApp::spawn().await;
    // The engine's side, on the app's own database: a run parked on an approval for 10 min.
    let store = &app.store;
    let now = app.clock.now();
    let lease = common::leased_run(store, None, "pbs", now).await;
    let run_id = lease.run_id;
    let request = ApprovalRequest {
        step: "lazy_unmount",
        command: "umount -l /mnt/pbs-datastore",
        risk: "high",
        evidence: serde_json::json!({"nfs_mounted": false}),
        expires_in: Duration::from_secs(600),
        on_timeout: OnTimeout::Reject,
        actions: vec![ApprovalAction {
            step: "lazy_unmount".to_owned(),
            host: Some("pbs".to_owned()),
            command: "umount -l /mnt/pbs-datastore".to_owned(),
            changes: Some("detaches the datastore's NFS mount from PBS".to_owned()),
        }],
    };
    let approval = store.request_approval(&lease, request, now).await.unwrap();

    let out = cli(&app.address, Some(common::APPROVER_TOKEN), &["approvals"]).await;
    let expires = (now + chrono::Duration::minutes(10)).format("%Y-%m-%d %H:%M:%SZ");
    assert!(
        card(&out.stdout, approval).contains(&format!("if nobody decides by {expires} (")),
        "{out:?}"
    );
    app.clock.advance(chrono::Duration::minutes(11));
    let out = cli(
        &app.address,
        Some(common::APPROVER_TOKEN),
        &["approve", &approval.to_string(), "--comment", "too late"],
    )
    .await;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("approval {approval} expired at"))
            && out
                .stderr
                .contains("it can no longer be approved (409 Conflict)"),
        "the server's message: {out:?}"
    );
    let run = cli(
        &app.address,
        Some(common::AGENT_TOKEN),
        &["runs", "show", &run_id.to_string(), "--json"],
    )
    .await;
    let run: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        run["approvals"][0]["decided_by"],
        Value::Null,
        "nothing decided"
    );
    assert_eq!(run["run"]["state"], "waiting_approval");
    store.close().await;
    app.stop().await;
}
