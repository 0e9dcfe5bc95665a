//! Faults of the database's disk, with the real binary: a full filesystem (a small tmpfs this
//! test mounts), a write lock held by another program (the `sqlite3` shell), and a slow fsync
//! (an LD_PRELOAD shim). Each gives bounded 503s with `Retry-After`, never a hang or a 500; a
//! run waits at its step boundary and goes on; and every alert answered 202 is kept.

use crate::common;

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::eventually;
use common::process::ServiceProcess;
use common::reference;
use serde_json::Value;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, SqliteConnection};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const ADMIN: &str = "faults-admin-secret-0123456789abcdef";

/// The reference alert as alert `fingerprint`, under a name no playbook matches: it opens an
/// incident and starts no run.
fn unmatched_alert(fingerprint: &str) -> String {
    reference("alertmanager-v4.json")
        .replace("\"5f1c2a9e7b3d4c10\"", &format!("{fingerprint:?}"))
        .replace("PBSBackupStale", "DiskFaultProbe")
}

/// A client whose bounded timeout fails the test if an answer hangs.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(45))
        .build()
        .unwrap()
}

/// One intake post: the status, `Retry-After`, and the body.
async fn post(client: &reqwest::Client, base: &str, body: String) -> (u16, Option<u64>, Value) {
    let response = client
        .post(format!("{base}/webhook/alertmanager"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("intake answers within the client's timeout");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    (
        status,
        retry_after,
        response.json().await.unwrap_or(Value::Null),
    )
}

async fn open(path: &Path) -> SqliteConnection {
    SqliteConnectOptions::new()
        .filename(path)
        .connect()
        .await
        .unwrap()
}

/// The fingerprints of the incidents in the database at `path`.
async fn stored_fingerprints(path: &Path) -> HashSet<String> {
    let mut db = open(path).await;
    let stored: Vec<String> = sqlx::query_scalar("SELECT fingerprint FROM incidents")
        .fetch_all(&mut db)
        .await
        .unwrap();
    db.close().await.unwrap();
    stored.into_iter().collect()
}

/// Every delivery is whole or absent: each has its alert (or, an unchanged repeat, is listed by
/// the audit event that counted it), each alert its incident, and each incident the audit
/// event that opened it.
async fn assert_no_half_deliveries(path: &Path) {
    let mut db = open(path).await;
    for (what, sql) in [
        (
            "deliveries without their alert",
            "SELECT COUNT(*) FROM deliveries d WHERE NOT EXISTS (SELECT 1 FROM alerts a WHERE a.delivery_id = d.id)
               AND NOT EXISTS (SELECT 1 FROM audit_events e, json_each(e.detail, '$.deliveries') r
                               WHERE e.action = 'incident.deduplicated' AND r.value = d.id)",
        ),
        (
            "firing alerts without their incident",
            "SELECT COUNT(*) FROM alerts WHERE status = 'firing' AND incident_id IS NULL",
        ),
        (
            "incidents without their opening audit event",
            "SELECT COUNT(*) FROM incidents i WHERE NOT EXISTS (SELECT 1 FROM audit_events e WHERE e.incident_id = i.id AND e.action = 'incident.opened')",
        ),
    ] {
        let count: i64 = sqlx::query_scalar(sql).fetch_one(&mut db).await.unwrap();
        assert_eq!(count, 0, "{what}");
    }
    db.close().await.unwrap();
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts it, or says why it cannot (not root and no way to become it).
    fn mount(path: &Path, size: &str) -> Result<Self, String> {
        std::fs::create_dir_all(path).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !mounted.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&mounted.stderr).trim()
            ));
        }
        Ok(Self {
            path: path.to_owned(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: the service may still be closing its files.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// Appends to `file` until its filesystem has no byte left; returns how many it wrote.
fn fill(file: &Path) -> u64 {
    let mut filler = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .unwrap();
    let mut written = 0;
    for chunk in [1 << 16, 4096, 512, 1] {
        let block = vec![0u8; chunk];
        loop {
            match filler.write(&block) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(error) => {
                    assert_eq!(
                        error.raw_os_error(),
                        Some(28),
                        "the filler stops at ENOSPC: {error}"
                    );
                    break;
                }
            }
        }
    }
    let _ = filler.sync_all();
    written
}

/// Keeps the filesystem of `file` full: SQLite gives space back when a write fails (the WAL
/// is rolled back), and the filler takes it again, until the returned flag is set.
fn keep_full(
    file: PathBuf,
) -> (
    Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<u64>,
) {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let filler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut written = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                written += fill(&file);
                // A fault injector's pace, not a wait for a condition.
                std::thread::sleep(Duration::from_millis(5));
            }
            written
        })
    };
    (stop, filler)
}

async fn run_detail(client: &reqwest::Client, base: &str, run_id: i64) -> Option<Value> {
    client
        .get(format!("{base}/api/v1/runs/{run_id}"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

fn step_names(detail: &Value) -> Vec<String> {
    detail["steps"]
        .as_array()
        .map(|steps| {
            steps
                .iter()
                .filter_map(|s| s["step"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Acceptance 8, full disk: the database's filesystem fills while a run is between steps and
/// alerts arrive. Intake answers 503 saying the disk is full and that nothing was stored,
/// with `Retry-After`; the run waits at its step boundary, never escalates and never runs its
/// restart twice; once space returns, intake takes alerts again, the run resolves, and every
/// alert answered 202 before, during and after is in the database, each delivery whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_gives_503s_holds_the_run_at_a_step_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _tmpfs = match Tmpfs::mount(&data, "16m") {
        Ok(tmpfs) => tmpfs,
        Err(reason) => {
            println!("SKIPPED: a small filesystem cannot be made here: {reason}");
            return;
        }
    };
    let service = ServiceProcess::start_lab(dir.path(), "stale-nfs", ADMIN, &[], "", &[]).await;
    let base = service.address.clone();
    let db_path = data.join("runbookd.db");
    let control = service
        .log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|event| event["control"].as_str().map(str::to_owned))
        .expect("the start-up log names the twin's control API");
    let client = client();
    // Backups take long enough that the disk fills while one runs.
    let slowed = client
        .put(format!("{control}/vzdump?ms=3000"))
        .send()
        .await
        .unwrap();
    assert!(slowed.status().is_success());

    let mut acknowledged: Vec<String> = Vec::new();
    for i in 0..5 {
        let fingerprint = format!("before-{i}");
        let (status, _, body) = post(&client, &base, unmatched_alert(&fingerprint)).await;
        assert_eq!(status, 202, "{body}");
        acknowledged.push(fingerprint);
    }
    let run_id = service.post_reference_alert(ADMIN).await["run_id"]
        .as_i64()
        .expect("the alert started a run");
    eventually(
        "the run to restart PBS",
        Duration::from_secs(90),
        || async {
            let detail = run_detail(&client, &base, run_id).await?;
            step_names(&detail)
                .contains(&"check_pbs_active".to_owned())
                .then_some(())
        },
    )
    .await;

    let filler = data.join("filler");
    let filled = fill(&filler);
    let (stop_filling, filling) = keep_full(filler.clone());
    let mut refused: Vec<String> = Vec::new();
    let mut full_answer = None;
    for i in 0..2000 {
        let fingerprint = format!("during-{i}");
        let (status, retry_after, body) = post(&client, &base, unmatched_alert(&fingerprint)).await;
        match status {
            // The WAL may still have room of its own for a while.
            202 => acknowledged.push(fingerprint),
            503 => {
                refused.push(fingerprint);
                full_answer = Some((retry_after, body));
                break;
            }
            other => panic!("a full disk answered {other}: {body}"),
        }
    }
    let (retry_after, body) = full_answer.expect("intake refuses once the disk is full");
    println!(
        "filled {filled} bytes; 202s on the full disk before the first 503: {}; the 503: {body}",
        acknowledged.len() - 5
    );
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("nothing was stored")
            && (message.contains("disk is full") || message.contains("disk failed")),
        "{message}"
    );
    assert_eq!(retry_after, Some(30), "{body}");
    // More deliveries during the fault are each answered: refused the same way, or stored
    // whole in a moment SQLite found room.
    for i in 0..5 {
        let fingerprint = format!("refused-{i}");
        let (status, retry_after, body) = post(&client, &base, unmatched_alert(&fingerprint)).await;
        match status {
            202 => acknowledged.push(fingerprint),
            _ => {
                assert_eq!((status, retry_after), (503, Some(30)), "{body}");
                refused.push(fingerprint);
            }
        }
    }

    // The run reaches its next write while the disk is still full, and is held there: its
    // write fails, and fails again when retried.
    eventually(
        "the run to wait for the disk at its step boundary",
        Duration::from_secs(60),
        || async {
            service
                .log_text()
                .lines()
                .any(|l| {
                    l.contains("the run waits at its step boundary") && l.contains("\"failures\":2")
                })
                .then_some(())
        },
    )
    .await;
    // The run is held where it stands, not failed.
    let at_fill = run_detail(&client, &base, run_id).await.unwrap();
    println!(
        "the run when the disk filled: {} at {}, steps {:?}",
        at_fill["run"]["state"],
        at_fill["run"]["step"],
        step_names(&at_fill)
    );
    let waiting = run_detail(&client, &base, run_id).await.unwrap();
    assert_eq!(waiting["run"]["state"], "running", "{waiting:#}");
    assert!(
        !service.log_text().contains("\"panicked\""),
        "{}",
        service.log_text()
    );

    stop_filling.store(true, std::sync::atomic::Ordering::SeqCst);
    let topped_up = filling.join().unwrap();
    println!("the filler took back {topped_up} bytes while the disk was full");
    std::fs::remove_file(&filler).unwrap();
    eventually(
        "intake to take alerts again",
        Duration::from_secs(60),
        || {
            let client = client.clone();
            let base = base.clone();
            async move {
                let (status, _, _) = post(&client, &base, unmatched_alert("after-0")).await;
                (status == 202).then_some(())
            }
        },
    )
    .await;
    acknowledged.push("after-0".to_owned());
    for i in 1..5 {
        let fingerprint = format!("after-{i}");
        let (status, _, body) = post(&client, &base, unmatched_alert(&fingerprint)).await;
        assert_eq!(status, 202, "{body}");
        acknowledged.push(fingerprint);
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let run = loop {
        let detail = run_detail(&client, &base, run_id).await;
        if let Some(detail) = detail.filter(|d| {
            !matches!(
                d["run"]["state"].as_str(),
                Some("running" | "pending") | None
            )
        }) {
            break detail;
        }
        if tokio::time::Instant::now() > deadline {
            let world: Value = client
                .get(format!("{control}/world"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let log = service.log_text();
            let tail: Vec<&str> = log
                .lines()
                .rev()
                .take(80)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            panic!(
                "timed out after 120 s waiting for the run to end; the run: {:#}\nthe twin's /world: {world:#}\nthe service's last log lines:\n{}",
                run_detail(&client, &base, run_id).await.unwrap_or_default(),
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(run["run"]["state"], "resolved", "{run:#}");
    for line in service.log_text().lines().filter(|l| {
        l.contains("the run waits at its step boundary")
            || l.contains("giving the run back")
            || l.contains("the run's write landed")
            || l.contains("closing a database connection")
    }) {
        println!("held and resumed: {line}");
    }
    // Each step ran once: the one whose record waited for the disk was not run again.
    assert_eq!(
        step_names(&run),
        [
            "restart_pbs",
            "check_pbs_active",
            "canary_backup",
            "full_backup",
            "groups_fresh"
        ],
        "{run:#}"
    );
    let received: Value = client
        .get(format!("{control}/received"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let restarts = received
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["executed"].as_array().cloned().unwrap_or_default())
        .filter(|c| {
            c.as_str()
                .is_some_and(|c| c.contains("systemctl restart proxmox-backup"))
        })
        .count();
    assert_eq!(restarts, 1, "{received:#}");

    let stored = stored_fingerprints(&db_path).await;
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|f| !stored.contains(*f))
        .collect();
    assert!(lost.is_empty(), "answered 202 and lost: {lost:?}");
    let kept: Vec<&String> = refused.iter().filter(|f| stored.contains(*f)).collect();
    assert!(kept.is_empty(), "answered 503 and stored: {kept:?}");
    assert_no_half_deliveries(&db_path).await;
    assert!(service.terminate().await.success());
}

/// The `sqlite3` shell holding the database's write lock until told to let go.
struct LockHolder {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl LockHolder {
    async fn take(db: &Path) -> Self {
        let mut child = tokio::process::Command::new("sqlite3")
            .arg(db)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the sqlite3 shell runs (Debian's sqlite3 package)");
        let mut holder = Self {
            stdin: child.stdin.take().unwrap(),
            stdout: BufReader::new(child.stdout.take().unwrap()).lines(),
            child,
        };
        holder
            .say(
                ".timeout 10000\nBEGIN IMMEDIATE;\n.print locked\n",
                "locked",
            )
            .await;
        holder
    }

    async fn say(&mut self, commands: &str, answer: &str) {
        self.stdin.write_all(commands.as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
        let line = tokio::time::timeout(Duration::from_secs(30), self.stdout.next_line())
            .await
            .expect("the sqlite3 shell answers")
            .unwrap();
        assert_eq!(line.as_deref(), Some(answer));
    }

    async fn release(mut self) {
        self.say("ROLLBACK;\n.print released\n", "released").await;
        drop(self.stdin);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

/// Acceptance 8, locked database: while another program holds the write lock, intake answers
/// 503 saying the database is locked, with `Retry-After`, each answer bounded by the busy
/// timeout; once it lets go, 202s return and every alert answered 202 is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_locked_by_another_program_gives_bounded_503s_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("runbookd.db");
    let config = dir.path().join("runbookd.toml");
    std::fs::write(&config, "[database]\nbusy_timeout_ms = 500\n").unwrap();
    let service = ServiceProcess::start_with(
        &db_path,
        &[("RUNBOOKD_ADMIN_TOKEN", ADMIN)],
        &["--config", config.to_str().unwrap()],
    )
    .await;
    let base = service.address.clone();
    let client = client();
    let mut acknowledged = Vec::new();
    for i in 0..3 {
        let fingerprint = format!("before-{i}");
        let (status, _, body) = post(&client, &base, unmatched_alert(&fingerprint)).await;
        assert_eq!(status, 202, "{body}");
        acknowledged.push(fingerprint);
    }

    let lock = LockHolder::take(&db_path).await;
    let mut refused = Vec::new();
    let answers: Vec<_> = futures::future::join_all((0..8).map(|i| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let fingerprint = format!("locked-{i}");
            let answer = post(&client, &base, unmatched_alert(&fingerprint)).await;
            (fingerprint, answer)
        }
    }))
    .await;
    for (fingerprint, (status, retry_after, body)) in answers {
        assert_eq!(status, 503, "{body}");
        assert_eq!(retry_after, Some(1), "{body}");
        assert_eq!(body["error"]["code"], "unavailable", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("locked by another writer") && message.contains("nothing was stored"),
            "{message}"
        );
        refused.push(fingerprint);
    }
    // Reads go on meanwhile: the lock holds writers back, not readers.
    let ready = client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(ready, 200);
    lock.release().await;

    eventually(
        "intake to take alerts again",
        Duration::from_secs(30),
        || {
            let (client, base) = (client.clone(), base.clone());
            async move {
                let (status, _, _) = post(&client, &base, unmatched_alert("after-0")).await;
                (status == 202).then_some(())
            }
        },
    )
    .await;
    acknowledged.push("after-0".to_owned());
    let stored = stored_fingerprints(&db_path).await;
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|f| !stored.contains(*f))
        .collect();
    assert!(lost.is_empty(), "answered 202 and lost: {lost:?}");
    let kept: Vec<&String> = refused.iter().filter(|f| stored.contains(*f)).collect();
    assert!(kept.is_empty(), "answered 503 and stored: {kept:?}");
    assert_no_half_deliveries(&db_path).await;
    assert!(service.terminate().await.success());
}

/// The slow-fsync shim, compiled into target/ for this test.
fn slow_fsync_shim() -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/faults/slow_fsync.c");
    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-shims");
    std::fs::create_dir_all(&out_dir).unwrap();
    let shim = out_dir.join("slow_fsync.so");
    let built = std::process::Command::new("gcc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&shim)
        .arg(&source)
        .arg("-ldl")
        .status()
        .expect("gcc runs");
    assert!(built.success(), "the shim compiles");
    shim
}

/// A slow disk, simulated: while every fsync takes 1.5 s, concurrent deliveries are each
/// answered (202, or 503 with a reason), none hangs, and the queue stays bounded; once fsync is
/// fast again, intake answers 202 and every alert answered 202 is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_fsync_keeps_intake_answering_and_it_recovers() {
    let shim = slow_fsync_shim();
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("runbookd.db");
    let flag = dir.path().join("slow-fsync");
    let hits = dir.path().join("slow-fsync.hits");
    let service = ServiceProcess::start(
        &db_path,
        &[
            ("RUNBOOKD_ADMIN_TOKEN", ADMIN),
            ("LD_PRELOAD", shim.to_str().unwrap()),
            ("SLOW_FSYNC_FLAG", flag.to_str().unwrap()),
        ],
    )
    .await;
    let base = service.address.clone();
    let client = client();
    std::fs::write(&flag, "1500").unwrap();

    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let (client, base, acknowledged) = (client.clone(), base.clone(), acknowledged.clone());
            tokio::spawn(async move {
                let mut refusals = Vec::new();
                for i in 0..4 {
                    let fingerprint = format!("slow-{c}-{i}");
                    let (status, retry_after, body) =
                        post(&client, &base, unmatched_alert(&fingerprint)).await;
                    match status {
                        202 => acknowledged.lock().unwrap().push(fingerprint),
                        503 => refusals.push((retry_after, body)),
                        other => panic!("a slow disk answered {other}: {body}"),
                    }
                }
                refusals
            })
        })
        .collect();
    let mut refusals = Vec::new();
    for client in clients {
        refusals.extend(client.await.unwrap());
    }
    let slowed = std::fs::read(&hits).map(|h| h.len()).unwrap_or(0);
    assert!(slowed > 0, "the shim slowed no fsync: it is not in effect");
    for (_, body) in &refusals {
        assert_eq!(body["error"]["code"], "unavailable", "{body}");
    }
    println!(
        "slow fsync (1.5 s): {slowed} slowed syncs, {} deliveries answered 202, {} answered 503",
        acknowledged.lock().unwrap().len(),
        refusals.len()
    );

    std::fs::remove_file(&flag).unwrap();
    let (status, _, body) = post(&client, &base, unmatched_alert("fast-again")).await;
    assert_eq!(status, 202, "{body}");
    acknowledged.lock().unwrap().push("fast-again".to_owned());
    let stored = stored_fingerprints(&db_path).await;
    let acknowledged = acknowledged.lock().unwrap().clone();
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|f| !stored.contains(*f))
        .collect();
    assert!(lost.is_empty(), "answered 202 and lost: {lost:?}");
    assert_no_half_deliveries(&db_path).await;
    assert!(service.terminate().await.success());
}
