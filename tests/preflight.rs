//! `runbookd check --probe`, the real binary against `runbookd lab`: it passes on the twin as
//! generated, and each broken piece of the config fails its own check with the named fix: a
//! changed host key, a missing known_hosts entry, a wrong SSH key, a wrong PBS token, a wrong
//! TLS pin, a host that is down. The twin's log shows it made no mutating call.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// `runbookd lab` in a directory, stopped when the test ends.
struct Lab {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Lab {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_runbookd"))
            .args(["lab", "--scenario", "stale-nfs", "--dir"])
            .arg(dir.path().join("lab"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lab = Self { child, dir };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while lab.env("CONTROL").is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "the lab did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        lab
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join("lab").join(name)
    }

    fn env(&self, key: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.path("env")).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(str::to_owned)
    }

    fn config(&self) -> String {
        std::fs::read_to_string(self.path("runbookd.toml")).unwrap()
    }

    /// `check --probe` on `config` (written beside the lab's own): exit success and stdout.
    fn probe(&self, name: &str, config: &str) -> (bool, String) {
        let file = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&file, config).unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_runbookd"))
            .args(["check", "--probe", "--config"])
            .arg(&file)
            .env_remove("RUNBOOKD_CONFIG")
            .env_remove("RUNBOOKD_PLAYBOOKS")
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8(output.stdout).unwrap(),
        )
    }
}

/// The line of `check` in `out`.
fn line<'a>(out: &'a str, check: &str) -> &'a str {
    out.lines()
        .find(|l| {
            l.get(6..)
                .is_some_and(|l| l.starts_with(&format!("{check}:")))
        })
        .unwrap_or_else(|| panic!("no line for {check} in:\n{out}"))
}

/// `config` with `key`'s value in `[section]` replaced.
fn set(config: &str, section: &str, key: &str, value: &str) -> String {
    let start = config.find(&format!("[{section}]")).unwrap();
    let at = start + config[start..].find(&format!("\n{key} = ")).unwrap() + 1;
    let end = at + config[at..].find('\n').unwrap();
    format!("{}{key} = {value}{}", &config[..at], &config[end..])
}

fn known_hosts_line(path: &Path, port: &str) -> (usize, String) {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .enumerate()
        .find(|(_, l)| l.starts_with(&format!("[127.0.0.1]:{port} ")))
        .map(|(i, l)| (i + 1, l.to_owned()))
        .unwrap()
}

#[test]
fn preflight_passes_on_the_twin_and_names_the_fix_for_each_broken_piece() {
    let lab = Lab::start();
    let config = lab.config();

    let (passed, out) = lab.probe("good", &config);
    assert!(passed, "{out}");
    assert!(!out.contains("FAIL") && !out.contains("skip"), "{out}");
    for check in [
        "ssh-host-key ruapehu",
        "ssh-login pbs",
        "pbs-api",
        "pbs-privileges",
        "pve-api",
        "pve-privileges",
        "probe pbs-backup-stale/nfs_mount",
        "probe pbs-backup-stale/stale_groups",
    ] {
        line(&out, check);
    }

    // A changed host key: ruapehu's known_hosts line now pins pbs's key.
    let known_hosts = lab.path("known_hosts");
    let ruapehu = lab.env("RUAPEHU_SSH_PORT").unwrap();
    let pbs = lab.env("PBS_SSH_PORT").unwrap();
    let (number, ruapehu_line) = known_hosts_line(&known_hosts, &ruapehu);
    let (_, pbs_line) = known_hosts_line(&known_hosts, &pbs);
    let pinned_elsewhere = lab.dir.path().join("known_hosts.changed");
    let pbs_key = pbs_line.split_once(' ').unwrap().1;
    std::fs::write(
        &pinned_elsewhere,
        std::fs::read_to_string(&known_hosts)
            .unwrap()
            .replace(&ruapehu_line, &format!("[127.0.0.1]:{ruapehu} {pbs_key}")),
    )
    .unwrap();
    let (passed, out) = lab.probe(
        "changed-key",
        &set(
            &config,
            "ssh",
            "known_hosts",
            &format!("{pinned_elsewhere:?}"),
        ),
    );
    assert!(!passed);
    let changed = line(&out, "ssh-host-key ruapehu");
    assert!(changed.starts_with("FAIL"), "{changed}");
    assert!(changed.contains("changed"), "{changed}");
    assert!(
        changed.contains(&format!("replace line {number} of")) && changed.contains(&ruapehu_line),
        "{changed}"
    );
    assert!(line(&out, "ssh-host-key pbs").starts_with("ok"), "{out}");

    // A missing entry: the fingerprint and the exact line to add, never a silent trust.
    let without = lab.dir.path().join("known_hosts.missing");
    std::fs::write(
        &without,
        std::fs::read_to_string(&known_hosts)
            .unwrap()
            .replace(&format!("{ruapehu_line}\n"), ""),
    )
    .unwrap();
    let (passed, out) = lab.probe(
        "missing-entry",
        &set(&config, "ssh", "known_hosts", &format!("{without:?}")),
    );
    assert!(!passed);
    let missing = line(&out, "ssh-host-key ruapehu");
    assert!(
        missing.contains("has no entry") && missing.contains("SHA256:"),
        "{missing}"
    );
    assert!(
        missing.contains(&format!(
            "add this line to {}: {ruapehu_line}",
            without.display()
        )),
        "{missing}"
    );
    assert!(!out.contains("ok    ssh-login ruapehu"), "{out}");

    // A wrong SSH key: every host refuses it, and the fix is its public line.
    let other_key = lab.dir.path().join("other_ed25519");
    let keygen = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "preflight-test",
            "-f",
        ])
        .arg(&other_key)
        .status()
        .expect("ssh-keygen (openssh-client) runs");
    assert!(keygen.success());
    let public = std::fs::read_to_string(other_key.with_extension("pub")).unwrap();
    let public = public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let (passed, out) = lab.probe(
        "wrong-key",
        &set(&config, "ssh", "key_file", &format!("{other_key:?}")),
    );
    assert!(!passed);
    let refused = line(&out, "ssh-login pihanga");
    assert!(refused.contains("refused the key"), "{refused}");
    assert!(
        refused.contains("~root/.ssh/authorized_keys") && refused.contains(&public),
        "{refused}"
    );

    // A wrong PBS token.
    let wrong_token = lab.dir.path().join("wrong.token");
    std::fs::write(&wrong_token, "not-the-token-0123456789\n").unwrap();
    // Owner-only, as runbookd requires of a secret file.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrong_token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (passed, out) = lab.probe(
        "wrong-token",
        &set(
            &config,
            "pbs",
            "token_secret_file",
            &format!("{wrong_token:?}"),
        ),
    );
    assert!(!passed);
    let token = line(&out, "pbs-api");
    assert!(
        token.contains("PBS refused the token root@pam!runbookd")
            && token.contains("token_secret_file"),
        "{token}"
    );
    assert!(line(&out, "pve-api").starts_with("ok"), "{out}");

    // A wrong TLS pin: the fix names the fingerprint the server presents.
    let fingerprint = config
        .lines()
        .skip_while(|l| *l != "[pbs]")
        .find_map(|l| l.strip_prefix("fingerprint = "))
        .unwrap()
        .trim_matches('"')
        .to_owned();
    let wrong = vec!["AB"; 32].join(":");
    let (passed, out) = lab.probe(
        "wrong-pin",
        &set(&config, "pbs", "fingerprint", &format!("\"{wrong}\"")),
    );
    assert!(!passed);
    let pin = line(&out, "pbs-api");
    assert!(
        pin.contains("not trusted")
            && pin.contains(&format!("set fingerprint = \"{fingerprint}\"")),
        "{pin}"
    );

    // A host that is down: nothing listens on its port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = config.replace(
        &format!("port = {ruapehu}\n"),
        &format!("port = {closed}\n"),
    );
    let (passed, out) = lab.probe("host-down", &down);
    assert!(!passed);
    let unreachable = line(&out, "ssh-host-key ruapehu");
    assert!(
        unreachable.contains("cannot reach ruapehu") && unreachable.contains("sshd runs there"),
        "{unreachable}"
    );

    // Read-only throughout: only GETs reached the APIs, and no SSH command changed anything.
    let control = lab.env("CONTROL").unwrap();
    let received: Vec<Value> = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async {
            reqwest::get(format!("{control}/received"))
                .await?
                .json()
                .await
        })
        .unwrap();
    assert!(!received.is_empty());
    for entry in &received {
        let text = entry["text"].as_str().unwrap();
        match entry["channel"].as_str().unwrap() {
            "ssh" => assert!(
                !["restart", "start ", "mount /", "umount", "set", "forget"]
                    .iter()
                    .any(|verb| text.contains(verb)),
                "a mutating command: {text}"
            ),
            _ => assert!(text.starts_with("GET "), "a mutating call: {text}"),
        }
    }
}
