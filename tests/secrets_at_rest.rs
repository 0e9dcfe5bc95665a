//! Secrets at rest: the database and its WAL files are owner-only; the link key is not in the
//! database, so a copy of it cannot make links, and replacing the key file retires every link
//! signed under the old one; a well-signed link claiming more than the link lifetime is
//! refused; secret files others can read and a known_hosts others can write are refused by
//! `check` and `serve`; weak tokens are refused with how to make a strong one.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::process::ServiceProcess;
use common::{TestApp, leased_run};
use runbookd::clock::Clock as _;
use runbookd::config::NotifyConfig;
use runbookd::notify::links::LinkSigner;
use runbookd::store::approvals::{
    ApprovalAction, ApprovalRequest, ApprovalStatus, Decision, OnTimeout,
};
use serde_json::{Value, json};
use sqlx::Row;

const ADMIN: &str = "secrets-admin-secret-0123456789abcdef";
const LIFETIME: Duration = Duration::from_secs(3600);

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn sibling(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

/// `runbookd serve` on a database it creates (under a directory it creates) makes the
/// directory 0700 and the database, its -wal and -shm, and the link key 0600, whatever the
/// umask (the test's is usually 022).
#[tokio::test]
async fn a_fresh_serve_creates_the_database_its_wal_files_and_the_link_key_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state/runbookd.db");
    let service = ServiceProcess::start(&db, &[("RUNBOOKD_ADMIN_TOKEN", ADMIN)]).await;
    // A write, so the WAL holds something while the service runs.
    let answer = reqwest::Client::new()
        .post(format!("{}/api/v1/pause", service.address))
        .bearer_auth(ADMIN)
        .json(&json!({"reason": "mode check"}))
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "{}", answer.status());
    assert_eq!(mode(db.parent().unwrap()), 0o700, "the directory");
    for file in [
        db.clone(),
        sibling(&db, "-wal"),
        sibling(&db, "-shm"),
        sibling(&db, ".link-key"),
    ] {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    service.terminate().await;
}

/// The app with a webhook sink that carries links (its receiver is a closed loopback port:
/// deliveries fail, links still verify), the link key in its default place.
async fn app_with_links() -> TestApp {
    let notify: NotifyConfig = toml::from_str(
        "attempts = 1\nlink_requests_per_minute = 10000\n[[sinks]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\nlinks = true\n",
    )
    .unwrap();
    TestApp::spawn_with(|config| config.notify = notify).await
}

/// A pending approval of a remount on `target`; its id.
async fn pending_approval(app: &TestApp, target: &str) -> i64 {
    let now = app.clock.now();
    let lease = leased_run(&app.store, None, target, now).await;
    let command = "umount -l /mnt/datastore && mount /mnt/datastore";
    let request = ApprovalRequest {
        step: "remount_datastore",
        command,
        risk: "high",
        evidence: json!({}),
        expires_in: Duration::from_secs(600),
        on_timeout: OnTimeout::Reject,
        actions: vec![ApprovalAction {
            step: "remount_datastore".to_owned(),
            host: Some(target.to_owned()),
            command: command.to_owned(),
            changes: None,
        }],
    };
    app.store
        .request_approval(&lease, request, now)
        .await
        .unwrap()
}

async fn post_link(app: &TestApp, token: &str) -> (u16, Value) {
    let response = app
        .client
        .post(app.url(&format!("/links/{token}")))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn status_of(app: &TestApp, approval_id: i64) -> ApprovalStatus {
    app.store
        .approval(approval_id)
        .await
        .unwrap()
        .unwrap()
        .status
}

/// The reasons of every `link.refused`, oldest first.
async fn refusals(app: &TestApp) -> Vec<String> {
    let mut db = app.db().await;
    sqlx::query_scalar::<_, String>(
        "SELECT json_extract(detail, '$.reason') FROM audit_events WHERE action = 'link.refused' ORDER BY id",
    )
    .fetch_all(&mut db)
    .await
    .unwrap()
}

/// Every value a copy of the database holds, as candidate keys: each BLOB's bytes, and each
/// text's bytes and, where it decodes, its hex.
async fn every_blob_in_the_database(app: &TestApp) -> Vec<Vec<u8>> {
    let mut db = app.db().await;
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
            .fetch_all(&mut db)
            .await
            .unwrap();
    let mut candidates = Vec::new();
    for table in tables {
        let rows = sqlx::query(&format!("SELECT * FROM \"{table}\""))
            .fetch_all(&mut db)
            .await
            .unwrap();
        for row in rows {
            for i in 0..row.len() {
                if let Ok(Some(bytes)) = row.try_get::<Option<Vec<u8>>, _>(i) {
                    candidates.extend(hex::decode(&bytes).ok());
                    candidates.push(bytes);
                }
            }
        }
    }
    candidates.retain(|c| !c.is_empty());
    candidates
}

/// Acceptance 7: a script that reads a copy of the database and signs a link with every value
/// in it gets nothing approved (403, audited as a bad signature), because the key is not
/// there; a link under the real key file works, so the forgeries failed for the key alone.
#[tokio::test]
async fn a_link_forged_from_a_copy_of_the_database_approves_nothing() {
    let app = app_with_links().await;
    let approval_id = pending_approval(&app, "pbs").await;
    let now = app.clock.now();
    let expires = now + chrono::Duration::minutes(5);

    let candidates = every_blob_in_the_database(&app).await;
    assert!(
        candidates.len() > 10,
        "the copy holds data: {}",
        candidates.len()
    );
    let key = common::link_key(&app.db_path);
    assert!(
        !candidates
            .iter()
            .any(|c| c.windows(key.len()).any(|w| w == key)),
        "the link key is nowhere in the database"
    );
    for candidate in &candidates {
        let token = LinkSigner::new(candidate, LIFETIME)
            .sign(approval_id, Decision::Approve, now, expires, "hook")
            .unwrap();
        let (status, answer) = post_link(&app, &token).await;
        assert_eq!(status, 403, "{answer:#}");
    }
    assert_eq!(status_of(&app, approval_id).await, ApprovalStatus::Pending);
    let reasons = refusals(&app).await;
    assert_eq!(reasons.len(), candidates.len());
    assert!(reasons.iter().all(|r| r == "bad_signature"), "{reasons:?}");

    let genuine = LinkSigner::new(&key, LIFETIME)
        .sign(approval_id, Decision::Approve, now, expires, "hook")
        .unwrap();
    let (status, answer) = post_link(&app, &genuine).await;
    assert_eq!(status, 200, "{answer:#}");
    assert_eq!(status_of(&app, approval_id).await, ApprovalStatus::Approved);
    app.stop().await;
}

/// Rotation: a link signed before the key file is replaced fails after the restart, and
/// links under the new key work.
#[tokio::test]
async fn a_link_from_before_a_key_rotation_fails_after_it() {
    let app = app_with_links().await;
    let approval_id = pending_approval(&app, "pbs").await;
    let now = app.clock.now();
    let expires = now + chrono::Duration::minutes(5);
    let old_key = common::link_key(&app.db_path);
    let old_link = LinkSigner::new(&old_key, LIFETIME)
        .sign(approval_id, Decision::Approve, now, expires, "hook")
        .unwrap();
    let db_path = app.db_path.clone();
    let dir = app.stop().await;

    // As the README says: a new key in the file, then a restart.
    let key_file = sibling(&db_path, ".link-key");
    std::fs::write(
        &key_file,
        format!("{}\n", hex::encode([0x5a_u8; 16].repeat(2))),
    )
    .unwrap();
    let notify: NotifyConfig = toml::from_str(
        "attempts = 1\nlink_requests_per_minute = 10000\n[[sinks]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\nlinks = true\n",
    )
    .unwrap();
    let app = TestApp::spawn_with(|config| {
        config.notify = notify;
        config.database.path = db_path.clone();
    })
    .await;
    let new_key = common::link_key(&db_path);
    assert_ne!(new_key, old_key);

    let (status, answer) = post_link(&app, &old_link).await;
    assert_eq!(status, 403, "{answer:#}");
    assert_eq!(refusals(&app).await, ["bad_signature"]);
    assert_eq!(status_of(&app, approval_id).await, ApprovalStatus::Pending);

    let now = app.clock.now();
    let new_link = LinkSigner::new(&new_key, LIFETIME)
        .sign(approval_id, Decision::Reject, now, expires, "hook")
        .unwrap();
    let (status, answer) = post_link(&app, &new_link).await;
    assert_eq!(status, 200, "{answer:#}");
    assert_eq!(status_of(&app, approval_id).await, ApprovalStatus::Rejected);
    app.stop().await;
    drop(dir);
}

/// A link signed with the real key but claiming a 10-year life is refused with a message that
/// says why, audited as `overlong_expiry`, and approves nothing.
#[tokio::test]
async fn a_well_signed_link_with_a_ten_year_expiry_is_refused() {
    let app = app_with_links().await;
    let approval_id = pending_approval(&app, "pbs").await;
    let now = app.clock.now();
    let signer = LinkSigner::new(&common::link_key(&app.db_path), LIFETIME);
    let ten_years = signer
        .sign(
            approval_id,
            Decision::Approve,
            now,
            now + chrono::Duration::days(3650),
            "hook",
        )
        .unwrap();
    let (status, answer) = post_link(&app, &ten_years).await;
    assert_eq!(status, 403, "{answer:#}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("further off than runbookd's link lifetime")
            && message.contains("notify.link_ttl_secs"),
        "{message}"
    );
    assert_eq!(refusals(&app).await, ["overlong_expiry"]);
    assert_eq!(status_of(&app, approval_id).await, ApprovalStatus::Pending);
    app.stop().await;
}

/// A config using every kind of secret file, all of them under `dir`.
fn config_with_secret_files(dir: &Path) -> std::path::PathBuf {
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        set_mode(&path, 0o600);
    };
    write("admin-token", "file-admin-secret-0123456789abcdef\n");
    write("id_ed25519", "-----BEGIN OPENSSH PRIVATE KEY-----\n");
    write("pve-token", "00000000-1111-2222-3333-444444444444\n");
    write("link-key", &format!("{}\n", "0123456789abcdef".repeat(4)));
    write("known_hosts", "[127.0.0.1]:2201 ssh-ed25519 AAAA\n");
    set_mode(&dir.join("known_hosts"), 0o644);
    let fingerprint = ["AB"; 32].join(":");
    let d = dir.display();
    let text = format!(
        "[[tokens]]\nname = \"ops\"\nrole = \"admin\"\nsecret_file = \"{d}/admin-token\"\n\n\
         [ssh]\nkey_file = \"{d}/id_ed25519\"\nknown_hosts = \"{d}/known_hosts\"\n\n\
         [[hosts]]\nname = \"pve1\"\nkind = \"pve\"\naddress = \"127.0.0.1\"\nport = 2201\n\n\
         [pve]\nurl = \"https://127.0.0.1:8006\"\nfingerprint = \"{fingerprint}\"\n\
         token_id = \"root@pam!runbookd\"\ntoken_secret_file = \"{d}/pve-token\"\nstorage = \"pbs\"\n\n\
         [notify]\nlink_key_file = \"{d}/link-key\"\n"
    );
    let config = dir.join("runbookd.toml");
    std::fs::write(&config, text).unwrap();
    config
}

fn runbookd(args: &[&str], config: &Path, env: &[(&str, &str)]) -> (bool, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_runbookd"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("RUNBOOKD_ADMIN_TOKEN")
        .env_remove("RUNBOOKD_INGEST_TOKEN")
        .env_remove("RUNBOOKD_CONFIG")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Acceptance 7: at 0666 every secret file and known_hosts is refused by the real binary's
/// `check`, each message naming the file, its mode and the fix; at 0600 (known_hosts 0644)
/// the same config checks out. `serve` refuses the same files before it starts.
#[test]
fn check_and_serve_refuse_files_others_can_read_or_write() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_secret_files(dir.path());
    let (ok, text) = runbookd(&["check"], &config, &[]);
    assert!(ok, "{text}");
    assert!(text.contains("config ok"), "{text}");

    let secrets = ["admin-token", "id_ed25519", "pve-token", "link-key"];
    for name in secrets.iter().chain(&["known_hosts"]) {
        set_mode(&dir.path().join(name), 0o666);
    }
    let (ok, text) = runbookd(&["check"], &config, &[]);
    assert!(!ok, "{text}");
    for name in secrets {
        let path = dir.path().join(name);
        let expected = format!(
            "{} has mode 0666: a secret file must be readable by its owner only; run `chmod 600 {}`",
            path.display(),
            path.display()
        );
        assert!(text.contains(&expected), "{name}: {text}");
    }
    let known_hosts = dir.path().join("known_hosts");
    assert!(
        text.contains(&format!(
            "{} has mode 0666: others could replace a pinned host key; run `chmod 644 {}`",
            known_hosts.display(),
            known_hosts.display()
        )),
        "{text}"
    );

    let db = dir.path().join("runbookd.db");
    let (ok, text) = runbookd(&["serve", "--db", db.to_str().unwrap()], &config, &[]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("chmod 600") && text.contains("not starting"),
        "{text}"
    );
    assert!(!db.exists(), "serve stopped before it created anything");
}

/// A token of 16 `a`s, or a short one, is refused by `check` with how to make a good one; an
/// `openssl rand -hex 32` one is accepted.
#[test]
fn weak_tokens_are_refused_with_how_to_make_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("runbookd.toml");
    std::fs::write(&config, "").unwrap();
    for weak in [
        "a".repeat(16),
        "a".repeat(40),
        "abcdefghij0123456789".to_owned(),
    ] {
        let (ok, text) = runbookd(&["check"], &config, &[("RUNBOOKD_ADMIN_TOKEN", &weak)]);
        assert!(!ok, "{weak}: {text}");
        assert!(
            text.contains("env RUNBOOKD_ADMIN_TOKEN: the secret is too weak")
                && text.contains("openssl rand -hex 32"),
            "{text}"
        );
        assert!(!text.contains(&weak), "{text}");
    }
    let strong = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let (ok, text) = runbookd(&["check"], &config, &[("RUNBOOKD_ADMIN_TOKEN", strong)]);
    assert!(ok, "{text}");
}
