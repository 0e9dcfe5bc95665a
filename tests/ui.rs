//! The web page without a browser: login and its cookie, CSRF on every form, roles, escaping,
//! the security headers, and decisions that go through the engine's rules.

use crate::common;

use std::time::Duration;

use common::{ADMIN_TOKEN, AGENT_TOKEN, APPROVER_TOKEN, INGEST_TOKEN, TestApp};
use runbookd::clock::Clock;
use runbookd::config::DatabaseConfig;
use runbookd::store::Store;
use runbookd::store::approvals::{ApprovalAction, ApprovalRequest, ApprovalStatus, OnTimeout};
use runbookd::store::safety::Switch;
use serde_json::{Value, json};

const HOSTILE_LABEL: &str = "<script>alert('label')</script>";
const HOSTILE_COMMAND: &str = "umount -l /mnt/datastore \"><img src=x onerror=alert(1)>";

/// A browser without a browser: keeps the session cookie, follows no redirects.
struct Visitor<'a> {
    app: &'a TestApp,
    client: reqwest::Client,
    cookie: Option<String>,
}

impl<'a> Visitor<'a> {
    fn new(app: &'a TestApp) -> Self {
        Self {
            app,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            cookie: None,
        }
    }

    async fn signed_in(app: &'a TestApp, token: &str) -> Self {
        let mut visitor = Self::new(app);
        let response = visitor.login(token).await;
        assert_eq!(response.status(), 303, "{token} signs in");
        visitor
    }

    async fn login(&mut self, token: &str) -> reqwest::Response {
        self.login_to(token, &[]).await
    }

    /// Signs in with more fields in the form (`next`).
    async fn login_to(&mut self, token: &str, more: &[(&str, &str)]) -> reqwest::Response {
        let response = common::web::sign_in(&self.client, &self.app.address, token, more).await;
        if let Some(cookie) = session_cookie(&response) {
            self.cookie = Some(cookie.split(';').next().unwrap().to_owned());
        }
        response
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        let mut request = self.client.get(self.app.url(path));
        if let Some(cookie) = &self.cookie {
            request = request.header("cookie", cookie);
        }
        request.send().await.unwrap()
    }

    async fn page(&self, path: &str) -> String {
        let response = self.get(path).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.text().await.unwrap()
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.post_with(path, form, &[]).await
    }

    async fn post_with(
        &self,
        path: &str,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self.client.post(self.app.url(path)).form(form);
        if let Some(cookie) = &self.cookie {
            request = request.header("cookie", cookie);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }

    /// The CSRF token the home page's forms carry for this session.
    async fn csrf(&self) -> String {
        csrf_in(&self.page("/").await)
    }
}

fn session_cookie(response: &reqwest::Response) -> Option<String> {
    common::web::set_cookie(response, "runbookd_session")
}

use common::web::csrf_in;

fn location(response: &reqwest::Response) -> &str {
    response.headers()["location"].to_str().unwrap()
}

/// An incident opened through intake with a hostile label, and a run of it parked on a pending
/// approval whose command and evidence are hostile too, written through the store as the engine
/// would. Returns (store, incident id, approval id).
async fn waiting_approval(app: &TestApp) -> (Store, i64, i64) {
    let body = json!({
        "alert_name": "PBSBackupStale",
        "severity": "warning",
        "labels": {"backup_id": "451", "note": HOSTILE_LABEL},
    });
    let response = app
        .post_json("/ingest?source=pbs", INGEST_TOKEN, &body.to_string())
        .await;
    assert_eq!(response.status(), 202);
    let incident = response.json::<Value>().await.unwrap()["incidents"][0]["incident_id"]
        .as_i64()
        .unwrap();
    let store = app.store.clone();
    let now = app.clock.now();
    let lease = common::leased_run(&store, Some(incident), "pbs", now).await;
    let request = ApprovalRequest {
        step: "lazy_unmount",
        command: HOSTILE_COMMAND,
        risk: "high",
        evidence: json!({"nfs_mounted": false, "error": HOSTILE_LABEL}),
        expires_in: Duration::from_secs(600),
        on_timeout: OnTimeout::Reject,
        actions: vec![ApprovalAction {
            step: "lazy_unmount".to_owned(),
            host: Some("pbs".to_owned()),
            command: HOSTILE_COMMAND.to_owned(),
            changes: Some(HOSTILE_LABEL.to_owned()),
        }],
    };
    let approval = store.request_approval(&lease, request, now).await.unwrap();
    (store, incident, approval)
}

async fn status_of(store: &Store, approval: i64) -> ApprovalStatus {
    store.approval(approval).await.unwrap().unwrap().status
}

/// No script, no framing, no sniffing, no caching: what every UI answer must carry.
fn assert_strict_headers(response: &reqwest::Response, what: &str) {
    let headers = response.headers();
    let csp = headers
        .get("content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no CSP"))
        .to_str()
        .unwrap();
    for directive in [
        "default-src 'none'",
        "style-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(directive), "{what}: {csp}");
    }
    assert!(
        !csp.contains("script-src"),
        "{what}: no script is allowed: {csp}"
    );
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "same-origin"),
        ("cache-control", "no-store"),
    ] {
        assert_eq!(
            headers.get(name).and_then(|v| v.to_str().ok()),
            Some(value),
            "{what}: {name}"
        );
    }
}

#[tokio::test]
async fn pages_need_a_session_and_every_response_carries_strict_headers() {
    let app = TestApp::spawn().await;
    let (_store, incident, approval) = waiting_approval(&app).await;
    let anonymous = Visitor::new(&app);
    for (path, login) in [
        ("/", "/login"),
        ("/incidents/1", "/login?next=%2Fincidents%2F1"),
        ("/approvals/1", "/login?next=%2Fapprovals%2F1"),
    ] {
        let response = anonymous.get(path).await;
        assert_eq!(response.status(), 303, "GET {path}");
        assert_eq!(location(&response), login);
        assert_strict_headers(&response, &format!("the redirect from {path}"));
    }
    let response = anonymous.post("/pause", &[("csrf", "00")]).await;
    assert_eq!(response.status(), 401);
    assert_strict_headers(&response, "401");
    assert!(response.text().await.unwrap().contains("not signed in"));

    let response = anonymous.get("/login").await;
    assert_eq!(response.status(), 200);
    assert_strict_headers(&response, "GET /login");
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = response.text().await.unwrap();
    assert!(html.contains(r#"name="viewport""#), "{html}");
    assert!(!html.contains("<script"), "{html}");
    let refused = Visitor::new(&app).login("not-a-token").await;
    assert_eq!(refused.status(), 401);
    assert_strict_headers(&refused, "a refused login");

    let mut agent = Visitor::new(&app);
    let signed_in = agent.login(AGENT_TOKEN).await;
    assert_eq!(signed_in.status(), 303);
    assert_strict_headers(&signed_in, "a login's redirect");
    for path in [
        "/".to_owned(),
        format!("/incidents/{incident}"),
        format!("/approvals/{approval}"),
    ] {
        let response = agent.get(&path).await;
        assert_eq!(response.status(), 200, "GET {path}");
        assert_strict_headers(&response, &format!("GET {path}"));
    }
    let missing = agent.get("/incidents/999999").await;
    assert_eq!(missing.status(), 404);
    assert_strict_headers(&missing, "404");
    let bad_path = agent.get("/approvals/abc").await;
    assert_eq!(bad_path.status(), 400);
    assert_strict_headers(&bad_path, "400");
    let csrf = agent.csrf().await;
    let forbidden = agent
        .post(
            &format!("/approvals/{approval}/approve"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(forbidden.status(), 403);
    assert_strict_headers(&forbidden, "403 by role");
    let bad_csrf = agent.post("/logout", &[("csrf", "00")]).await;
    assert_eq!(bad_csrf.status(), 403);
    assert_strict_headers(&bad_csrf, "403 by CSRF");
    let posted = agent.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(posted.status(), 303);
    assert_strict_headers(&posted, "a form POST's answer");

    let css = anonymous.get("/static/style.css").await;
    assert_eq!(css.status(), 200);
    assert!(
        css.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    assert_eq!(css.headers()["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn login_sets_an_http_only_strict_cookie_and_refuses_bad_and_ingest_tokens() {
    let app = TestApp::spawn().await;
    let mut visitor = Visitor::new(&app);

    let bad = visitor.login("not-a-token").await;
    assert_eq!(bad.status(), 401);
    assert!(session_cookie(&bad).is_none());
    assert!(
        bad.text()
            .await
            .unwrap()
            .contains("That token is not valid")
    );

    let ingest = visitor.login(INGEST_TOKEN).await;
    assert_eq!(ingest.status(), 403);
    assert!(session_cookie(&ingest).is_none());
    assert!(ingest.text().await.unwrap().contains("ingest token"));

    let (login_cookie, login_csrf) = common::web::login_form(&visitor.client, &app.address).await;
    let cross_site = visitor
        .client
        .post(app.url("/login"))
        .header("sec-fetch-site", "cross-site")
        .header("cookie", &login_cookie)
        .form(&[("token", APPROVER_TOKEN), ("csrf", &login_csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), 403);
    assert!(session_cookie(&cross_site).is_none());
    assert!(visitor.cookie.is_none());

    let ok = visitor.login(APPROVER_TOKEN).await;
    assert_eq!(ok.status(), 303);
    assert_eq!(location(&ok), "/");
    let cookie = session_cookie(&ok).unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(
        !cookie.contains("Secure"),
        "plain http cannot keep a Secure cookie"
    );
    let home = visitor.page("/").await;
    assert!(home.contains("approver · approver"), "{home}");

    // Through https (a proxy says so, or the browser's Origin does) the cookie is Secure.
    let over_https = visitor
        .client
        .post(app.url("/login"))
        .header("x-forwarded-proto", "https")
        .header("cookie", &login_cookie)
        .form(&[("token", APPROVER_TOKEN), ("csrf", &login_csrf)])
        .send()
        .await
        .unwrap();
    assert!(session_cookie(&over_https).unwrap().contains("Secure"));

    // Signing out clears the cookie.
    let csrf = visitor.csrf().await;
    let out = visitor.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status(), 303);
    assert_eq!(location(&out), "/login");
    let cleared = session_cookie(&out).unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
}

#[tokio::test]
async fn a_form_without_the_right_csrf_token_or_from_another_site_changes_nothing() {
    let app = TestApp::spawn().await;
    let (store, _, approval) = waiting_approval(&app).await;
    let approver = Visitor::signed_in(&app, APPROVER_TOKEN).await;
    let admin = Visitor::signed_in(&app, ADMIN_TOKEN).await;
    let approver_csrf = approver.csrf().await;
    let admin_csrf = admin.csrf().await;
    assert_ne!(
        approver_csrf, admin_csrf,
        "the token is bound to the session"
    );
    let approve = format!("/approvals/{approval}/approve");
    let audit_before = app.count("audit_events").await;

    for (what, form) in [
        ("no token", vec![("comment", "go")]),
        ("an empty token", vec![("csrf", ""), ("comment", "go")]),
        (
            "another session's token",
            vec![("csrf", admin_csrf.as_str()), ("comment", "go")],
        ),
        ("a forged token", vec![("csrf", &"ab".repeat(32))]),
    ] {
        let response = approver.post(&approve, &form).await;
        assert_eq!(response.status(), 403, "{what}");
        assert!(
            response.text().await.unwrap().contains("Reload the page"),
            "{what}"
        );
    }
    let foreign = approver
        .post_with(
            &approve,
            &[("csrf", &approver_csrf)],
            &[("origin", "http://evil.example")],
        )
        .await;
    assert_eq!(foreign.status(), 403, "another origin");
    let cross_site = approver
        .post_with(
            &approve,
            &[("csrf", &approver_csrf)],
            &[("sec-fetch-site", "cross-site")],
        )
        .await;
    assert_eq!(cross_site.status(), 403, "a cross-site fetch");
    let pause = admin.post("/pause", &[("csrf", &approver_csrf)]).await;
    assert_eq!(pause.status(), 403);

    assert_eq!(status_of(&store, approval).await, ApprovalStatus::Pending);
    assert!(!store.switch(Switch::Paused).await.unwrap());
    assert_eq!(app.count("audit_events").await, audit_before);

    // The same form from our own origin, with the session's token, goes through.
    let host = app.address.trim_start_matches("http://").to_owned();
    let ok = approver
        .post_with(
            &approve,
            &[("csrf", &approver_csrf)],
            &[
                ("origin", &format!("http://{host}")),
                ("sec-fetch-site", "same-origin"),
            ],
        )
        .await;
    assert_eq!(ok.status(), 303);
    assert_eq!(status_of(&store, approval).await, ApprovalStatus::Approved);
}

#[tokio::test]
async fn an_agent_sees_no_buttons_and_cannot_decide_or_pause() {
    let app = TestApp::spawn().await;
    let (store, _, approval) = waiting_approval(&app).await;
    let agent = Visitor::signed_in(&app, AGENT_TOKEN).await;
    let home = agent.page("/").await;
    assert!(home.contains("lazy_unmount"), "the agent sees the approval");
    assert!(!home.contains(">Approve<"), "{home}");
    assert!(!home.contains("Pause all runs"), "{home}");
    assert!(home.contains("may not decide approvals"));

    let csrf = csrf_in(&home);
    let response = agent
        .post(
            &format!("/approvals/{approval}/approve"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(response.status(), 403);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("role 'agent', which may not decide approvals")
    );
    let response = agent.post("/pause", &[("csrf", &csrf)]).await;
    assert_eq!(response.status(), 403);
    assert_eq!(status_of(&store, approval).await, ApprovalStatus::Pending);
    assert!(!store.switch(Switch::Paused).await.unwrap());
}

#[tokio::test]
async fn an_approver_decides_once_with_a_comment_and_the_page_shows_it() {
    let app = TestApp::spawn().await;
    let (store, incident, approval) = waiting_approval(&app).await;
    let approver = Visitor::signed_in(&app, APPROVER_TOKEN).await;
    let home = approver.page("/").await;
    assert!(
        home.contains(">Approve<") && home.contains(">Reject<"),
        "{home}"
    );
    assert!(!home.contains("Pause all runs"), "only admins pause");
    assert!(
        home.contains(&format!(
            r#"<a href="/incidents/{incident}">incident #{incident}</a>"#
        )),
        "the pending approval names its run's incident: {home}"
    );
    let csrf = csrf_in(&home);

    let response = approver
        .post(
            &format!("/approvals/{approval}/approve"),
            &[("csrf", &csrf), ("comment", "remount it\r\nthen watch")],
        )
        .await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), format!("/approvals/{approval}"));
    let decided = store.approval(approval).await.unwrap().unwrap();
    assert_eq!(decided.status, ApprovalStatus::Approved);
    assert_eq!(decided.decided_by.as_deref(), Some("approver"));
    assert_eq!(decided.comment.as_deref(), Some("remount it\nthen watch"));

    // A second decision reports the first.
    let again = approver
        .post(&format!("/approvals/{approval}/reject"), &[("csrf", &csrf)])
        .await;
    assert_eq!(again.status(), 303);
    assert_eq!(status_of(&store, approval).await, ApprovalStatus::Approved);
    let page = approver.page(&format!("/approvals/{approval}")).await;
    assert!(
        page.contains("approved by <strong>approver</strong>"),
        "{page}"
    );
    assert!(!page.contains(">Approve<"));

    let incident_page = approver.page(&format!("/incidents/{incident}")).await;
    for text in [
        "approval.decided",
        "remount it",
        "lazy_unmount",
        "run.created",
    ] {
        assert!(incident_page.contains(text), "{text} in {incident_page}");
    }
    let missing = approver.get("/incidents/999999").await;
    assert_eq!(missing.status(), 404);
    assert!(
        missing
            .text()
            .await
            .unwrap()
            .contains("There is no incident 999999")
    );
    let nonsense = approver.get("/incidents/abc").await;
    assert_eq!(nonsense.status(), 400);
}

#[tokio::test]
async fn an_expired_approval_cannot_be_approved_from_the_page() {
    let app = TestApp::spawn().await;
    let (store, _, approval) = waiting_approval(&app).await;
    let approver = Visitor::signed_in(&app, APPROVER_TOKEN).await;
    let csrf = approver.csrf().await;
    app.clock.advance(chrono::Duration::minutes(11));

    let page = approver.page(&format!("/approvals/{approval}")).await;
    assert!(page.contains("it can no longer be approved"), "{page}");
    assert!(!page.contains(">Approve<"));
    let response = approver
        .post(
            &format!("/approvals/{approval}/approve"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(response.status(), 409);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("it can no longer be approved")
    );
    assert_eq!(status_of(&store, approval).await, ApprovalStatus::Pending);
}

#[tokio::test]
async fn hostile_labels_commands_and_evidence_are_escaped() {
    let app = TestApp::spawn().await;
    let (_store, incident, approval) = waiting_approval(&app).await;
    let admin = Visitor::signed_in(&app, ADMIN_TOKEN).await;
    for path in [
        "/".to_owned(),
        format!("/incidents/{incident}"),
        format!("/approvals/{approval}"),
    ] {
        let html = admin.page(&path).await;
        assert!(!html.contains("<script"), "{path}: {html}");
        assert!(!html.contains("<img"), "{path}: {html}");
        assert!(
            html.contains("&lt;script&gt;alert('label')&lt;/script&gt;"),
            "{path} shows the label as text: {html}"
        );
    }
    let html = admin.page(&format!("/approvals/{approval}")).await;
    assert!(
        html.contains("umount -l /mnt/datastore &quot;&gt;&lt;img src=x onerror=alert(1)&gt;"),
        "{html}"
    );
}

#[tokio::test]
async fn an_admin_pauses_and_resumes_from_the_page() {
    let app = TestApp::spawn().await;
    let store = Store::open(&DatabaseConfig {
        path: app.db_path.clone(),
        busy_timeout_ms: 5_000,
    })
    .await
    .unwrap();
    let admin = Visitor::signed_in(&app, ADMIN_TOKEN).await;
    let home = admin.page("/").await;
    assert!(home.contains("Active.") && home.contains("Pause all runs"));

    let response = admin.post("/pause", &[("csrf", &csrf_in(&home))]).await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), "/");
    assert!(store.switch(Switch::Paused).await.unwrap());
    let home = admin.page("/").await;
    assert!(
        home.contains("Paused.") && home.contains("Resume runs"),
        "{home}"
    );

    let response = admin.post("/resume", &[("csrf", &csrf_in(&home))]).await;
    assert_eq!(response.status(), 303);
    assert!(!store.switch(Switch::Paused).await.unwrap());
    let audit: i64 = {
        use sqlx::Connection;
        let mut db = app.db().await;
        let n = sqlx::query_scalar(
            "SELECT COUNT(*) FROM audit_events WHERE action = 'setting.changed' AND actor = 'admin'",
        )
        .fetch_one(&mut db)
        .await
        .unwrap();
        db.close().await.unwrap();
        n
    };
    assert_eq!(audit, 2, "both changes are audited with the admin's name");
}

/// The page's role matrix: every UI route for nobody and for each role that can sign in.
#[tokio::test]
async fn every_page_and_form_answers_each_role_as_the_role_table_says() {
    let app = TestApp::spawn().await;
    let (_store, incident, approval) = waiting_approval(&app).await;
    let pages = [
        "/".to_owned(),
        format!("/incidents/{incident}"),
        format!("/approvals/{approval}"),
    ];
    // (path, who may post it)
    let forms = [
        (
            format!("/approvals/{approval}/reject"),
            ["approver", "admin"].as_slice(),
        ),
        (
            format!("/approvals/{approval}/approve"),
            &["approver", "admin"],
        ),
        ("/pause".to_owned(), &["admin"]),
        ("/resume".to_owned(), &["admin"]),
        ("/logout".to_owned(), &["agent", "approver", "admin"]),
    ];

    let nobody = Visitor::new(&app);
    for page in &pages {
        assert_eq!(
            nobody.get(page).await.status(),
            303,
            "GET {page} signed out"
        );
    }
    for (form, _) in &forms {
        let response = nobody.post(form, &[("csrf", "00")]).await;
        assert_eq!(response.status(), 401, "POST {form} signed out");
    }
    assert_eq!(Visitor::new(&app).login(INGEST_TOKEN).await.status(), 403);

    for (role, token) in [
        ("agent", AGENT_TOKEN),
        ("approver", APPROVER_TOKEN),
        ("admin", ADMIN_TOKEN),
    ] {
        let visitor = Visitor::signed_in(&app, token).await;
        for page in &pages {
            assert_eq!(
                visitor.get(page).await.status(),
                200,
                "GET {page} as {role}"
            );
        }
        let csrf = visitor.csrf().await;
        for (form, allowed) in &forms {
            let expected = if allowed.contains(&role) { 303 } else { 403 };
            let response = visitor.post(form, &[("csrf", &csrf)]).await;
            assert_eq!(response.status(), expected, "POST {form} as {role}");
        }
    }
}

/// Behind a proxy that rewrites `Host` (nginx's default `proxy_pass`), the browser's `Origin`
/// is the public address, not the `Host` runbookd sees: logins and forms from `public_url` and
/// `http.allowed_hosts` go through; other origins, or the public host over another scheme or
/// port, do not.
#[tokio::test]
async fn forms_through_a_proxy_that_rewrites_host_are_accepted_from_the_public_origin_only() {
    let app = TestApp::spawn_with(|config| {
        config.notify.public_url = Some("https://runbookd.example.net/".to_owned());
        config.http.allowed_hosts = vec!["runbookd.lan".to_owned()];
    })
    .await;
    let (store, _, approval) = waiting_approval(&app).await;
    let browser = Visitor::new(&app);
    let (login_cookie, login_csrf) = common::web::login_form(&browser.client, &app.address).await;
    // reqwest sends `Host: 127.0.0.1:PORT`, as the proxy would after rewriting it.
    let login_from = |origin: &str| {
        browser
            .client
            .post(app.url("/login"))
            .header("origin", origin)
            .header("cookie", &login_cookie)
            .form(&[("token", APPROVER_TOKEN), ("csrf", &login_csrf)])
            .send()
    };
    for refused in [
        "https://evil.example",
        "http://runbookd.example.net",
        "https://runbookd.example.net:8443",
        "https://runbookd.example.net.evil.example",
        "null",
    ] {
        let response = login_from(refused).await.unwrap();
        assert_eq!(response.status(), 403, "login from {refused}");
        assert!(session_cookie(&response).is_none(), "{refused}");
    }
    for accepted in [
        "https://runbookd.example.net",
        "http://runbookd.lan",
        "https://runbookd.lan",
    ] {
        let response = login_from(accepted).await.unwrap();
        assert_eq!(response.status(), 303, "login from {accepted}");
        assert!(session_cookie(&response).is_some(), "{accepted}");
    }

    let approver = Visitor::signed_in(&app, APPROVER_TOKEN).await;
    let csrf = approver.csrf().await;
    let approve = format!("/approvals/{approval}/approve");
    let foreign = approver
        .post_with(
            &approve,
            &[("csrf", &csrf)],
            &[
                ("origin", "https://evil.example"),
                ("x-forwarded-host", "runbookd.example.net"),
            ],
        )
        .await;
    assert_eq!(foreign.status(), 403);
    assert_eq!(status_of(&store, approval).await, ApprovalStatus::Pending);
    let proxied = approver
        .post_with(
            &approve,
            &[("csrf", &csrf)],
            &[
                ("origin", "https://runbookd.example.net"),
                ("sec-fetch-site", "same-origin"),
            ],
        )
        .await;
    assert_eq!(proxied.status(), 303);
    assert_eq!(status_of(&store, approval).await, ApprovalStatus::Approved);
}

/// A proxy that forwards the public host and scheme in `X-Forwarded-*` is trusted for them; the
/// scheme must match too.
#[tokio::test]
async fn a_forwarded_host_is_compared_with_its_forwarded_scheme() {
    let app = TestApp::spawn().await;
    let browser = Visitor::new(&app);
    let (login_cookie, login_csrf) = common::web::login_form(&browser.client, &app.address).await;
    let login = |origin: &'static str, proto: &'static str| {
        browser
            .client
            .post(app.url("/login"))
            .header("origin", origin)
            .header("x-forwarded-host", "ops.example.org")
            .header("x-forwarded-proto", proto)
            .header("cookie", &login_cookie)
            .form(&[("token", APPROVER_TOKEN), ("csrf", &login_csrf)])
            .send()
    };
    assert_eq!(
        login("https://ops.example.org", "https")
            .await
            .unwrap()
            .status(),
        303
    );
    assert_eq!(
        login("http://ops.example.org", "https")
            .await
            .unwrap()
            .status(),
        403
    );
}

/// A notification's "Open" link reaches the approval through the login page: the session
/// cookie is SameSite=Strict, so a tap from a chat app arrives signed out. Only a path on this
/// site is followed after signing in.
#[tokio::test]
async fn signing_in_returns_to_the_page_that_asked_for_it_and_only_to_a_local_one() {
    let app = TestApp::spawn().await;
    let (_store, _, approval) = waiting_approval(&app).await;
    let path = format!("/approvals/{approval}");
    let mut visitor = Visitor::new(&app);

    let response = visitor.get(&path).await;
    assert_eq!(response.status(), 303);
    let login = location(&response).to_owned();
    assert_eq!(login, format!("/login?next=%2Fapprovals%2F{approval}"));
    let form = visitor.page(&login).await;
    assert!(
        form.contains(&format!(r#"name="next" value="{path}""#)),
        "{form}"
    );
    let bad = visitor.login_to("not-a-token", &[("next", &path)]).await;
    assert_eq!(bad.status(), 401);
    assert!(
        bad.text()
            .await
            .unwrap()
            .contains(&format!(r#"name="next" value="{path}""#)),
        "a failed attempt keeps where to go"
    );
    let ok = visitor.login_to(APPROVER_TOKEN, &[("next", &path)]).await;
    assert_eq!(ok.status(), 303);
    assert_eq!(location(&ok), path);
    assert!(visitor.page(&path).await.contains(">Approve<"));

    for hostile in [
        "//evil.example",
        "https://evil.example",
        "/\\evil.example",
        "/\\/evil.example",
        "evil.example",
        "javascript:alert(1)",
        "/approvals/1\r\nSet-Cookie: x=y",
        "/\tevil",
    ] {
        let response = Visitor::new(&app)
            .login_to(APPROVER_TOKEN, &[("next", hostile)])
            .await;
        assert_eq!(response.status(), 303, "{hostile:?}");
        assert_eq!(location(&response), "/", "{hostile:?} is not followed");
        let form = visitor
            .page(&format!(
                "/login?next={}",
                url::form_urlencoded::byte_serialize(hostile.as_bytes()).collect::<String>()
            ))
            .await;
        assert!(!form.contains(r#"name="next""#), "{hostile:?}: {form}");
    }
}

/// An incident's timeline is its own and its runs' events, newest 1000 of them, oldest first;
/// the page says when older ones are left out.
#[tokio::test]
async fn a_long_timeline_shows_its_latest_events_and_says_so() {
    let app = TestApp::spawn().await;
    let (_store, incident, _) = waiting_approval(&app).await;
    let admin = Visitor::signed_in(&app, ADMIN_TOKEN).await;
    let timeline_items = |html: &str| {
        let list = html.split(r#"<ol class="timeline">"#).nth(1).unwrap();
        list.split("</ol>").next().unwrap().matches("<li>").count()
    };
    let page = admin.page(&format!("/incidents/{incident}")).await;
    let short = timeline_items(&page);
    assert!(short > 1 && page.contains("incident.opened"), "{page}");
    assert!(!page.contains("(latest "), "{page}");

    // 1,200 events from the run, written in one go as an operator's sqlite3 could.
    {
        use sqlx::Connection;
        let mut db = app.db().await;
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1200)
             INSERT INTO audit_events (at, actor, action, incident_id, run_id, detail)
             SELECT e.at, 'engine', 'step.finished', NULL, e.run_id, json_object('n', n.i)
             FROM n, (SELECT at, run_id FROM audit_events WHERE run_id IS NOT NULL LIMIT 1) AS e",
        )
        .execute(&mut db)
        .await
        .unwrap();
        db.close().await.unwrap();
    }
    let page = admin.page(&format!("/incidents/{incident}")).await;
    assert_eq!(timeline_items(&page), 1000, "the cap, once");
    assert!(page.contains("(latest 1000 events)"), "{page}");
    assert!(page.contains("{&quot;n&quot;:1200}"), "the newest is shown");
    assert!(!page.contains("incident.opened"), "the oldest is left out");
}

#[tokio::test]
async fn the_home_page_says_remediation_is_off_and_what_is_missing() {
    // The test app has no estate and no engine, as `serve` without [ssh]/[pbs]/[pve].
    let app = TestApp::spawn().await;
    let visitor = Visitor::signed_in(&app, ADMIN_TOKEN).await;
    let page = visitor.page("/").await;
    assert!(page.contains("Remediation is off."), "{page}");
    assert!(
        page.contains("missing [ssh], [[hosts]], [pbs], [pve]"),
        "{page}"
    );
}
