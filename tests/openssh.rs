//! Acceptance 3 of the executors: the SSH executor against Debian's OpenSSH server on
//! 127.0.0.1, started here with its own config, keys and a free port (`scripts/test.sh`
//! installs `openssh-server`).

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::eventually;
use runbookd::exec::command::{AbsPath, Name, Value, render};
use runbookd::exec::output::Redactor;
use runbookd::exec::ssh::{
    HostKeyCheck, RemoteShell, SshAuth, SshError, SshHost, SshSession, SshSettings,
};
use runbookd::lab::ssh::{generate_key, private_key_pem, public_key_line};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

const OUTPUT_CAP: usize = 64 * 1024;

struct Sshd {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    user: String,
}

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

impl Sshd {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let user = String::from_utf8(
            std::process::Command::new("id")
                .arg("-un")
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim()
        .to_owned();
        let host_key = generate_key();
        let client_key = generate_key();
        write_private(&dir.path().join("host_key"), &private_key_pem(&host_key));
        write_private(
            &dir.path().join("id_ed25519"),
            &private_key_pem(&client_key),
        );
        std::fs::write(
            dir.path().join("authorized_keys"),
            public_key_line(client_key.public_key()) + "\n",
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::fs::write(
            dir.path().join("known_hosts"),
            format!(
                "[127.0.0.1]:{port} {}\n",
                public_key_line(host_key.public_key())
            ),
        )
        .unwrap();
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host_key\nPidFile {dir}/sshd.pid\n\
                 AuthorizedKeysFile {dir}/authorized_keys\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
                 LogLevel ERROR\n",
                dir = dir.path().display()
            ),
        )
        .unwrap();
        let child = spawn_sshd(&config, port).await;
        Self {
            child,
            port,
            dir,
            user,
        }
    }

    /// Stops sshd and starts it again on the same port: every open connection dies.
    async fn restart(&mut self) {
        self.child.kill().await.unwrap();
        self.child = spawn_sshd(&self.path("sshd_config"), self.port).await;
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn session(&self, key: &Path, known_hosts: &Path) -> SshSession {
        let host = SshHost {
            name: Name::parse("sshd").unwrap(),
            address: "127.0.0.1".to_owned(),
            port: self.port,
            user: self.user.clone(),
        };
        let settings = SshSettings {
            auth: SshAuth::KeyFile(key.to_owned()),
            host_keys: HostKeyCheck::KnownHosts(known_hosts.to_owned()),
            connect_timeout: Duration::from_secs(5),
            output_cap: OUTPUT_CAP,
        };
        SshSession::new([host], settings, Redactor::default())
    }

    fn good_session(&self) -> SshSession {
        self.session(&self.path("id_ed25519"), &self.path("known_hosts"))
    }
}

async fn spawn_sshd(config: &Path, port: u16) -> Child {
    // sshd insists on its privilege-separation directory.
    let _ = std::fs::create_dir_all("/run/sshd");
    let child = Command::new("/usr/sbin/sshd")
        .args(["-D", "-e", "-f"])
        .arg(config)
        .kill_on_drop(true)
        .spawn()
        .expect("/usr/sbin/sshd starts (scripts/test.sh installs openssh-server)");
    eventually("sshd to greet", Duration::from_secs(20), || async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let mut banner = [0u8; 8];
        stream.read_exact(&mut banner).await.ok()?;
        (&banner == b"SSH-2.0-").then_some(())
    })
    .await;
    child
}

fn path(p: &Path) -> Value {
    Value::Path(AbsPath::parse(p.to_str().unwrap()).unwrap())
}

fn host() -> Name {
    Name::parse("sshd").unwrap()
}

/// Processes whose command line is exactly `argv`.
fn processes(argv: &[&str]) -> usize {
    let want: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|cmdline| *cmdline == want)
        .count()
}

#[tokio::test]
async fn exit_codes_and_stderr_come_back_separately() {
    let sshd = Sshd::start().await;
    let ssh = sshd.good_session();
    std::fs::write(sshd.path("greeting"), "kia ora\n").unwrap();
    let cat = ssh
        .run(
            &host(),
            &render("cat {p}", &[("p", path(&sshd.path("greeting")))]).unwrap(),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(
        (cat.exit_status, cat.stdout.as_str(), cat.stderr.as_str()),
        (0, "kia ora\n", "")
    );
    let missing = sshd.path("missing");
    let ls = ssh
        .run(
            &host(),
            &render("ls {p}", &[("p", path(&missing))]).unwrap(),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(ls.exit_status, 2);
    assert_eq!(ls.stdout, "");
    assert_eq!(
        ls.stderr,
        format!(
            "ls: cannot access '{}': No such file or directory\n",
            missing.display()
        )
    );
}

#[tokio::test]
async fn a_command_over_its_timeout_is_killed_on_the_host() {
    let sshd = Sshd::start().await;
    let ssh = sshd.good_session();
    let sleep = render("sleep {n}", &[("n", Value::Count(31337))]).unwrap();
    let out = ssh
        .run(&host(), &sleep, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(out.timed_out_on_host(), "{out:?}");
    eventually(
        "the remote sleep to be gone",
        Duration::from_secs(5),
        || async { (processes(&["sleep", "31337"]) == 0).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn a_disconnected_client_does_not_leave_the_command_running() {
    let sshd = Sshd::start().await;
    let sleep = render("sleep {n}", &[("n", Value::Count(31338))]).unwrap();
    let ssh = sshd.good_session();
    let running =
        tokio::spawn(async move { ssh.run(&host(), &sleep, Duration::from_secs(3)).await });
    eventually(
        "the remote sleep to start",
        Duration::from_secs(10),
        || async { (processes(&["sleep", "31338"]) == 1).then_some(()) },
    )
    .await;
    // The client goes away mid-command; the host's own `timeout 3` still ends it.
    running.abort();
    eventually(
        "the orphaned sleep to be killed by the host's timeout",
        Duration::from_secs(15),
        || async { (processes(&["sleep", "31338"]) == 0).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn a_wrong_host_key_and_a_wrong_client_key_are_refused_distinctly() {
    let sshd = Sshd::start().await;
    let hostname = render("hostname", &[]).unwrap();

    let impostor = generate_key();
    std::fs::write(
        sshd.path("wrong_known_hosts"),
        format!(
            "[127.0.0.1]:{} {}\n",
            sshd.port,
            public_key_line(impostor.public_key())
        ),
    )
    .unwrap();
    let wrong_host = sshd.session(&sshd.path("id_ed25519"), &sshd.path("wrong_known_hosts"));
    let error = wrong_host
        .run(&host(), &hostname, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        matches!(error, SshError::HostKeyRejected { .. }),
        "{error:?}"
    );
    assert!(!error.is_retryable());

    write_private(&sshd.path("stranger"), &private_key_pem(&generate_key()));
    let wrong_client = sshd.session(&sshd.path("stranger"), &sshd.path("known_hosts"));
    let error = wrong_client
        .run(&host(), &hostname, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(error, SshError::AuthRejected { .. }), "{error:?}");
    assert!(!error.is_retryable());

    let fine = sshd
        .good_session()
        .run(&host(), &hostname, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(fine.exit_status, 0);
}

#[tokio::test]
async fn five_megabytes_of_output_are_capped() {
    let sshd = Sshd::start().await;
    let big = sshd.path("big");
    std::fs::write(&big, "x".repeat(5_000_000)).unwrap();
    let out = sshd
        .good_session()
        .run(
            &host(),
            &render("cat {p}", &[("p", path(&big))]).unwrap(),
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    assert_eq!(out.exit_status, 0);
    assert!(out.truncated);
    assert!(out.stdout.starts_with(&"x".repeat(OUTPUT_CAP)));
    assert!(
        out.stdout.len() < OUTPUT_CAP + 200,
        "{} bytes kept",
        out.stdout.len()
    );
    assert!(out.stdout.ends_with(&format!(
        "[runbookd: output truncated, {} more bytes dropped]\n",
        5_000_000 - OUTPUT_CAP
    )));
}

#[tokio::test]
async fn a_dropped_connection_is_reopened_once_for_the_next_command() {
    let mut sshd = Sshd::start().await;
    let ssh = sshd.good_session();
    let hostname = render("hostname", &[]).unwrap();
    let first = ssh
        .run(&host(), &hostname, Duration::from_secs(5))
        .await
        .unwrap();
    sshd.restart().await;
    let second = ssh
        .run(&host(), &hostname, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(first.stdout, second.stdout);
}

#[tokio::test]
async fn secrets_in_output_are_redacted() {
    let sshd = Sshd::start().await;
    let host_entry = SshHost {
        name: host(),
        address: "127.0.0.1".into(),
        port: sshd.port,
        user: sshd.user.clone(),
    };
    let settings = SshSettings {
        auth: SshAuth::KeyFile(sshd.path("id_ed25519")),
        host_keys: HostKeyCheck::KnownHosts(sshd.path("known_hosts")),
        connect_timeout: Duration::from_secs(5),
        output_cap: OUTPUT_CAP,
    };
    let ssh = SshSession::new(
        [host_entry],
        settings,
        Redactor::new(["s3cret-api-token".to_owned()]),
    );
    let file = sshd.path("storage.cfg");
    std::fs::write(
        &file,
        "password s3cret-api-token\nAuthorization: PBSAPIToken=root@pam!ops:abc-123\n",
    )
    .unwrap();
    let out = ssh
        .run(
            &host(),
            &render("cat {p}", &[("p", path(&file))]).unwrap(),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(
        out.stdout,
        "password [REDACTED]\nAuthorization: PBSAPIToken=root@pam!ops:[REDACTED]\n"
    );
}
