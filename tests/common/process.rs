//! The real `runbookd` binary as a child process, for tests and benchmarks that need a
//! separate process: restarts, signals, RSS.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub struct ServiceProcess {
    pub child: Child,
    pub address: String,
    /// Its lease owner (`runbookd-<uuid>`), as it logged when it started listening.
    pub owner: String,
    /// Every log line the process has printed so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl ServiceProcess {
    /// Starts `runbookd serve` on a free loopback port with `db`, and returns once it logs
    /// that it is listening. `env` adds environment variables.
    pub async fn start(db: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_with(db, env, &[]).await
    }

    /// As [`Self::start`], with more arguments for `serve`.
    pub async fn start_with(db: &Path, env: &[(&str, &str)], args: &[&str]) -> Self {
        Self::launch(db, env, args, None).await
    }

    /// As [`Self::start_with`]; with `open_files`, the process starts under that open-file
    /// limit (soft and hard), set by util-linux's `prlimit`, which then runs it in its place.
    async fn launch(
        db: &Path,
        env: &[(&str, &str)],
        args: &[&str],
        open_files: Option<u64>,
    ) -> Self {
        let binary = env!("CARGO_BIN_EXE_runbookd");
        let mut command = match open_files {
            Some(limit) => {
                let mut command = Command::new("prlimit");
                command
                    .arg(format!("--nofile={limit}:{limit}"))
                    .arg("--")
                    .arg(binary);
                command
            }
            None => Command::new(binary),
        };
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(args)
            .arg("--db")
            .arg(db)
            .env_remove("RUNBOOKD_CONFIG")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("the runbookd binary starts");
        let log = Arc::new(Mutex::new(Vec::new()));

        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let (address, owner) = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = stdout.next_line().await.unwrap() {
                log.lock().unwrap().push(line.clone());
                let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if let Some(address) = event["address"].as_str() {
                    let owner = event["owner"].as_str().unwrap_or_default().to_owned();
                    return (format!("http://{address}"), owner);
                }
            }
            panic!(
                "runbookd exited before listening: {:?}",
                log.lock().unwrap()
            );
        })
        .await
        .expect("runbookd starts listening within 30 s");

        drain(log.clone(), stdout);
        drain(
            log.clone(),
            BufReader::new(child.stderr.take().unwrap()).lines(),
        );
        Self {
            child,
            address,
            owner,
            log,
        }
    }

    /// `runbookd serve --lab SCENARIO` on the repository's playbooks, under `dir`: an admin
    /// token from `RUNBOOKD_ADMIN_TOKEN`, each of `tokens` (name, role, secret) as a
    /// `[[tokens]]` entry whose secret comes from the environment, then `config` (more TOML)
    /// and `env` (more variables).
    pub async fn start_lab(
        dir: &Path,
        scenario: &str,
        admin: &str,
        tokens: &[(&str, &str, &str)],
        config: &str,
        env: &[(&str, &str)],
    ) -> Self {
        Self::lab(dir, scenario, admin, tokens, config, env, None).await
    }

    /// As [`Self::start_lab`], under an open-file limit of `open_files`.
    pub async fn start_lab_with_open_files(
        dir: &Path,
        scenario: &str,
        admin: &str,
        config: &str,
        open_files: u64,
    ) -> Self {
        Self::lab(dir, scenario, admin, &[], config, &[], Some(open_files)).await
    }

    async fn lab(
        dir: &Path,
        scenario: &str,
        admin: &str,
        tokens: &[(&str, &str, &str)],
        config: &str,
        env: &[(&str, &str)],
        open_files: Option<u64>,
    ) -> Self {
        let mut text = String::new();
        let mut variables: Vec<(String, String)> =
            vec![("RUNBOOKD_ADMIN_TOKEN".to_owned(), admin.to_owned())];
        for (i, (name, role, secret)) in tokens.iter().enumerate() {
            let variable = format!("RUNBOOKD_TEST_TOKEN_{i}");
            text.push_str(&format!(
                "[[tokens]]\nname = \"{name}\"\nrole = \"{role}\"\nsecret_env = \"{variable}\"\n\n"
            ));
            variables.push((variable, (*secret).to_owned()));
        }
        text.push_str(config);
        let file = dir.join("runbookd.toml");
        std::fs::write(&file, text).unwrap();
        variables.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let variables: Vec<(&str, &str)> = variables
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let playbooks = concat!(env!("CARGO_MANIFEST_DIR"), "/playbooks");
        Self::launch(
            &dir.join("data/runbookd.db"),
            &variables,
            &[
                "--lab",
                scenario,
                "--playbooks",
                playbooks,
                "--config",
                file.to_str().unwrap(),
            ],
            open_files,
        )
        .await
    }

    /// Posts the reference Alertmanager alert with `token`; the answer's entry for it
    /// (`incident_id`, `run_id`, ...).
    pub async fn post_reference_alert(&self, token: &str) -> serde_json::Value {
        let response = reqwest::Client::new()
            .post(format!("{}/webhook/alertmanager", self.address))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(include_str!("../fixtures/reference/alertmanager-v4.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let answer: serde_json::Value = response.json().await.unwrap();
        answer["incidents"][0].clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("the process is running")
    }

    /// Sends SIGTERM and waits for the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM failed");
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("runbookd exits within 30 s of SIGTERM")
            .unwrap()
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

/// Keeps reading a child's output into `log`, so the child never blocks on a full pipe.
fn drain<R>(log: Arc<Mutex<Vec<String>>>, mut lines: tokio::io::Lines<R>)
where
    R: tokio::io::AsyncBufRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            log.lock().unwrap().push(line);
        }
    });
}

/// The resident set size of process `pid`, in MiB (0 if it cannot be read).
#[allow(dead_code)] // the benches include this file and read it; the suite does not
pub fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}
