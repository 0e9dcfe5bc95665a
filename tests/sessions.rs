//! Web sessions (issue 12, acceptance 1): the cookie carries a random id, never the token; a
//! session ends on sign-out, at its expiry, and when its token leaves the config; the sign-in
//! form needs its CSRF token and its own origin; failed sign-ins are limited per address.

use crate::common;

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use common::process::ServiceProcess;
use common::web::{csrf_in, login_form, set_cookie, sign_in};
use common::{ADMIN_TOKEN, APPROVER_TOKEN, TestApp};
use sha2::{Digest, Sha256};
use sqlx::{Connection, Row};

/// A client that keeps no cookies and follows no redirects, so each answer is seen as sent.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The status of GET `path` with `cookie`: 200 signed in, 303 sent to the sign-in form.
async fn get_status(client: &reqwest::Client, base: &str, path: &str, cookie: &str) -> u16 {
    client
        .get(format!("{base}{path}"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Every text stored in the audit trail, as one string.
async fn audit_text(app: &TestApp) -> String {
    let mut db = app.db().await;
    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT actor, action, detail FROM audit_events ORDER BY id")
            .fetch_all(&mut db)
            .await
            .unwrap();
    format!("{rows:?}")
}

async fn audited(app: &TestApp, action: &str) -> Vec<(String, serde_json::Value)> {
    let mut db = app.db().await;
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT actor, detail FROM audit_events WHERE action = ? ORDER BY id")
            .bind(action)
            .fetch_all(&mut db)
            .await
            .unwrap();
    rows.into_iter()
        .map(|(actor, detail)| (actor, serde_json::from_str(&detail).unwrap()))
        .collect()
}

#[tokio::test]
async fn the_cookie_carries_a_random_id_that_the_database_keeps_only_hashed() {
    let app = TestApp::spawn().await;
    let client = client();
    let response = sign_in(&client, &app.address, APPROVER_TOKEN, &[]).await;
    assert_eq!(response.status(), 303);
    let set = set_cookie(&response, "runbookd_session").expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attribute), "{set}");
    }
    let value = set
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("runbookd_session=")
        .to_owned();
    let token = APPROVER_TOKEN.as_bytes();
    for (encoding, encoded) in [
        ("the token", APPROVER_TOKEN.to_owned()),
        ("hex", hex::encode(token)),
        ("HEX", hex::encode_upper(token)),
        ("base64", STANDARD.encode(token)),
        ("base64 unpadded", STANDARD_NO_PAD.encode(token)),
        ("base64url", URL_SAFE.encode(token)),
        ("base64url unpadded", URL_SAFE_NO_PAD.encode(token)),
    ] {
        assert!(
            !set.contains(&encoded),
            "the cookie holds {encoding}: {set}"
        );
        // Nor a piece of it long enough to matter.
        assert!(
            !value.contains(&encoded[..16]) && !encoded.contains(&value[..16]),
            "the cookie shares a run with {encoding}: {set}"
        );
    }
    assert_eq!(value.len(), 64, "256 bits, hex: {value}");
    let again = sign_in(&client, &app.address, APPROVER_TOKEN, &[]).await;
    let second = set_cookie(&again, "runbookd_session").unwrap();
    assert_ne!(
        second.split(';').next().unwrap(),
        format!("runbookd_session={value}"),
        "each sign-in draws a new id"
    );

    // The database has the id's SHA-256 and the token's name: neither the id nor the token.
    let mut db = app.db().await;
    let rows = sqlx::query("SELECT * FROM sessions")
        .fetch_all(&mut db)
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    let hashed: Vec<u8> = rows[0].get("id_sha256");
    assert_eq!(hashed, Sha256::digest(value.as_bytes()).to_vec());
    assert_eq!(rows[0].get::<String, _>("token_name"), "approver");
    let dump = format!(
        "{:?}",
        rows.iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| {
                        row.try_get::<Vec<u8>, _>(i)
                            .map(hex::encode)
                            .unwrap_or_else(|_| row.get::<String, _>(i))
                    })
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    );
    for secret in [
        value.clone(),
        hex::encode(value.as_bytes()),
        APPROVER_TOKEN.to_owned(),
        hex::encode(token),
        hex::encode(Sha256::digest(token)),
    ] {
        assert!(!dump.contains(&secret), "{secret} is stored: {dump}");
    }
    let audit = audit_text(&app).await;
    assert!(
        !audit.contains(APPROVER_TOKEN) && !audit.contains(&value),
        "{audit}"
    );
    let succeeded = audited(&app, "login.succeeded").await;
    assert_eq!(succeeded.len(), 2);
    assert_eq!(succeeded[0].0, "approver");
    assert_eq!(succeeded[0].1["remote"], "127.0.0.1");

    // A cookie of the old kind, the token hex-encoded, opens nothing.
    let old_style = format!("runbookd_session={}", hex::encode(ADMIN_TOKEN));
    assert_eq!(
        get_status(&client, &app.address, "/", &old_style).await,
        303
    );
    let cookie = format!("runbookd_session={value}");
    assert_eq!(get_status(&client, &app.address, "/", &cookie).await, 200);
}

#[tokio::test]
async fn a_cookie_replayed_after_signing_out_or_past_its_lifetime_is_refused() {
    let app = TestApp::spawn_with(|config| config.http.session_hours = 1).await;
    let client = client();
    let base = &app.address;
    let cookie = common::web::session_cookie(&client, base, ADMIN_TOKEN).await;
    let home = client
        .get(format!("{base}/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(home.status(), 200);
    let csrf = csrf_in(&home.text().await.unwrap());
    let out = client
        .post(format!("{base}/logout"))
        .header("cookie", &cookie)
        .form(&[("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    assert_eq!(
        app.count("sessions").await,
        0,
        "signing out deletes the row"
    );

    // The browser dropped it; a copy of it, replayed, is refused for pages and forms alike.
    assert_eq!(get_status(&client, base, "/", &cookie).await, 303);
    let replayed = client
        .post(format!("{base}/pause"))
        .header("cookie", &cookie)
        .form(&[("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status(), 401);
    assert!(
        !app.store
            .switch(runbookd::store::safety::Switch::Paused)
            .await
            .unwrap()
    );

    // A session lasts `http.session_hours`, by the app's clock.
    let cookie = common::web::session_cookie(&client, base, ADMIN_TOKEN).await;
    app.clock.advance(chrono::Duration::minutes(59));
    assert_eq!(get_status(&client, base, "/", &cookie).await, 200);
    app.clock.advance(chrono::Duration::minutes(2));
    let expired = client
        .get(format!("{base}/incidents/1"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(expired.status(), 303);
    assert_eq!(
        expired.headers()["location"],
        "/login?next=%2Fincidents%2F1"
    );
}

/// `runbookd serve` on `db` with `config` (tokens by `secret_env`), written to `file`.
async fn serve(db: &Path, file: &Path, config: &str, env: &[(&str, &str)]) -> ServiceProcess {
    std::fs::write(file, config).unwrap();
    ServiceProcess::start_with(db, env, &["--config", file.to_str().unwrap()]).await
}

const OPS_SECRET: &str = "sessions-ops-secret-7f3a9c1e";
const ALICE_SECRET: &str = "sessions-alice-secret-2b8d4e6f";
const BOB_SECRET: &str = "sessions-bob-secret-9a1c3e5b";
const BOB_NEW_SECRET: &str = "sessions-bob-rotated-4d6f8a0c";
const CAROL_SECRET: &str = "sessions-carol-secret-1e3a5c7d";

fn tokens_config(entries: &[(&str, &str)]) -> String {
    entries
        .iter()
        .map(|(name, role)| {
            format!(
                "[[tokens]]\nname = \"{name}\"\nrole = \"{role}\"\nsecret_env = \"SESSIONS_{}\"\n\n",
                name.to_uppercase()
            )
        })
        .collect()
}

/// Removing a token from the config and restarting ends its sessions; so does giving it a new
/// secret or another role. A token left as it was keeps its session across the restart.
#[tokio::test]
async fn a_session_ends_when_its_token_leaves_the_config_or_changes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runbookd.db");
    let client = client();
    let before = tokens_config(&[
        ("ops", "admin"),
        ("alice", "approver"),
        ("bob", "approver"),
        ("carol", "approver"),
    ]);
    let service = serve(
        &db,
        &dir.path().join("before.toml"),
        &before,
        &[
            ("SESSIONS_OPS", OPS_SECRET),
            ("SESSIONS_ALICE", ALICE_SECRET),
            ("SESSIONS_BOB", BOB_SECRET),
            ("SESSIONS_CAROL", CAROL_SECRET),
        ],
    )
    .await;
    let base = service.address.clone();
    let mut cookies = Vec::new();
    for secret in [OPS_SECRET, ALICE_SECRET, BOB_SECRET, CAROL_SECRET] {
        let cookie = common::web::session_cookie(&client, &base, secret).await;
        assert_eq!(get_status(&client, &base, "/", &cookie).await, 200);
        cookies.push(cookie);
    }
    assert!(service.terminate().await.success());

    // alice is gone, bob has a new secret, carol is an admin now, ops is unchanged.
    let after = tokens_config(&[("ops", "admin"), ("bob", "approver"), ("carol", "admin")]);
    let service = serve(
        &db,
        &dir.path().join("after.toml"),
        &after,
        &[
            ("SESSIONS_OPS", OPS_SECRET),
            ("SESSIONS_BOB", BOB_NEW_SECRET),
            ("SESSIONS_CAROL", CAROL_SECRET),
        ],
    )
    .await;
    let base = service.address.clone();
    let [ops, alice, bob, carol] = &cookies[..] else {
        unreachable!()
    };
    assert_eq!(
        get_status(&client, &base, "/", ops).await,
        200,
        "ops is unchanged"
    );
    for (who, cookie) in [("alice", alice), ("bob", bob), ("carol", carol)] {
        assert_eq!(get_status(&client, &base, "/", cookie).await, 303, "{who}");
    }
    // The removed token's rows went at start-up.
    let mut db = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let names: Vec<String> = sqlx::query_scalar("SELECT token_name FROM sessions ORDER BY 1")
        .fetch_all(&mut db)
        .await
        .unwrap();
    assert!(!names.contains(&"alice".to_owned()), "{names:?}");
    assert!(names.contains(&"ops".to_owned()), "{names:?}");
    assert!(service.terminate().await.success());
}

#[tokio::test]
async fn signing_in_needs_the_forms_csrf_token_and_this_site_as_its_origin() {
    let app = TestApp::spawn().await;
    let client = client();
    let base = &app.address;
    let (cookie, csrf) = login_form(&client, base).await;
    let (other_cookie, _) = login_form(&client, base).await;
    let audit_before = app.count("audit_events").await;
    let host = base.trim_start_matches("http://");

    let post = |cookie: Option<&str>,
                form: Vec<(&'static str, String)>,
                headers: Vec<(&'static str, String)>| {
        let mut request = client.post(format!("{base}/login")).form(&form);
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie.to_owned());
        }
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request.send()
    };
    let token = || ("token", ADMIN_TOKEN.to_owned());
    let cases = [
        ("no cookie, no token", None, vec![token()], vec![]),
        (
            "no CSRF token",
            Some(cookie.as_str()),
            vec![token()],
            vec![],
        ),
        (
            "the CSRF token of no cookie",
            None,
            vec![token(), ("csrf", csrf.clone())],
            vec![],
        ),
        (
            "another form's cookie",
            Some(other_cookie.as_str()),
            vec![token(), ("csrf", csrf.clone())],
            vec![],
        ),
        (
            "a forged CSRF token",
            Some(cookie.as_str()),
            vec![token(), ("csrf", "ab".repeat(32))],
            vec![],
        ),
        (
            "another origin",
            Some(cookie.as_str()),
            vec![token(), ("csrf", csrf.clone())],
            vec![("origin", "https://evil.example".to_owned())],
        ),
        (
            "another site's page as referrer",
            Some(cookie.as_str()),
            vec![token(), ("csrf", csrf.clone())],
            vec![("referer", "https://evil.example/login.html".to_owned())],
        ),
        (
            "a cross-site fetch",
            Some(cookie.as_str()),
            vec![token(), ("csrf", csrf.clone())],
            vec![("sec-fetch-site", "cross-site".to_owned())],
        ),
    ];
    for (what, cookie, form, headers) in cases {
        let response = post(cookie, form, headers).await.unwrap();
        assert_eq!(response.status(), 403, "{what}");
        assert!(
            set_cookie(&response, "runbookd_session").is_none(),
            "{what}"
        );
    }
    assert_eq!(app.count("sessions").await, 0);
    assert_eq!(
        app.count("audit_events").await,
        audit_before,
        "nothing audited, nothing changed"
    );

    // The same form from this site, as a browser sends it, signs in.
    let ok = post(
        Some(&cookie),
        vec![token(), ("csrf", csrf.clone())],
        vec![
            ("origin", format!("http://{host}")),
            ("referer", format!("http://{host}/login")),
            ("sec-fetch-site", "same-origin".to_owned()),
        ],
    )
    .await
    .unwrap();
    assert_eq!(ok.status(), 303);
    assert!(set_cookie(&ok, "runbookd_session").is_some());
    assert_eq!(app.count("sessions").await, 1);
}

#[tokio::test]
async fn the_eleventh_failed_sign_in_in_a_minute_from_one_address_gets_429() {
    let app = TestApp::spawn().await;
    let client = client();
    let base = &app.address;
    let bad = "not-the-token-but-close-0123456789";
    let attempt = |token: &'static str| sign_in(&client, base, token, &[]);

    for n in 1..=9 {
        assert_eq!(attempt(bad).await.status(), 401, "failure {n}");
    }
    // Successes do not count.
    for _ in 0..3 {
        assert_eq!(attempt(ADMIN_TOKEN).await.status(), 303);
    }
    assert_eq!(attempt(bad).await.status(), 401, "failure 10");
    let limited = attempt(bad).await;
    assert_eq!(limited.status(), 429, "the 11th failure");
    assert_eq!(limited.headers()["retry-after"], "60");
    let page = limited.text().await.unwrap();
    assert!(
        page.contains("Too many failed sign-ins from your address. Try again in 60 seconds."),
        "{page}"
    );
    // While limited, the right token is refused too, so guessing learns nothing.
    let right = attempt(ADMIN_TOKEN).await;
    assert_eq!(right.status(), 429);
    assert!(set_cookie(&right, "runbookd_session").is_none());

    // Ten failures audited, with the address and the reason, never what was typed.
    let failed = audited(&app, "login.failed").await;
    assert_eq!(failed.len(), 10);
    assert_eq!(failed[0].0, "anonymous");
    assert_eq!(failed[0].1["remote"], "127.0.0.1");
    assert_eq!(failed[0].1["reason"], "the token is not valid");
    let audit = audit_text(&app).await;
    for secret in [bad, ADMIN_TOKEN, &bad[..12]] {
        assert!(!audit.contains(secret), "{secret} in {audit}");
    }

    // A minute after the first failures, the address may try again.
    app.clock.advance(chrono::Duration::seconds(61));
    assert_eq!(attempt(ADMIN_TOKEN).await.status(), 303);
}
