//! One-tap links: each works once, for its one decision, until it expires; bad uses are
//! refused, rate-limited and audited.

use super::*;

#[tokio::test]
async fn an_ntfy_approve_link_works_once_and_every_bad_use_is_refused_and_audited() {
    let receiver = Receiver::start(0).await;
    let (app, _secrets) = app_with("", &ntfy_sink(&receiver)).await;
    let (run_id, approval_id) = approval(&app, "pbs", Duration::from_secs(600)).await;

    let message = receiver.wait_for("/", "/topic", "runbookd-alerts").await;
    let body = &message.body;
    assert_eq!(
        message.authorization.as_deref(),
        Some(format!("Bearer {SINK_TOKEN}").as_str())
    );
    assert!(
        body["title"]
            .as_str()
            .unwrap()
            .contains("remount_datastore"),
        "{body:#}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("umount -l /mnt/datastore"),
        "{body:#}"
    );
    let actions = body["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 3, "{body:#}");
    assert_eq!(
        (
            &actions[0]["action"],
            &actions[0]["label"],
            &actions[0]["method"]
        ),
        (&json!("http"), &json!("Approve"), &json!("POST"))
    );
    assert_eq!(
        (&actions[1]["action"], &actions[1]["label"]),
        (&json!("http"), &json!("Reject"))
    );
    assert_eq!(
        (&actions[2]["action"], &actions[2]["label"]),
        (&json!("view"), &json!("Open"))
    );
    let approve = actions[0]["url"].as_str().unwrap().to_owned();
    let reject = actions[1]["url"].as_str().unwrap().to_owned();
    assert_eq!(
        actions[2]["url"],
        app.url(&format!("/approvals/{approval_id}")),
        "Open is the approval's web page"
    );
    assert!(approve.starts_with(&app.url("/links/")), "{approve}");
    assert_ne!(approve, reject);

    // The confirmation page shows the step and changes nothing.
    let page = app.client.get(&approve).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    let html = page.text().await.unwrap();
    assert!(html.contains("umount -l /mnt/datastore"), "{html}");
    assert!(html.contains("<form method=\"post\">"), "{html}");
    assert!(!html.contains("<script"), "{html}");
    let pending = |app: &TestApp| {
        let store = app.store.clone();
        async move { store.approval(approval_id).await.unwrap().unwrap() }
    };
    assert_eq!(pending(&app).await.status, ApprovalStatus::Pending);

    // The approve link with its decision swapped to reject: the signature no longer holds.
    let mut bytes = URL_SAFE_NO_PAD.decode(token_of(&approve)).unwrap();
    assert_eq!(bytes[9], b'a', "the decision byte");
    bytes[9] = b'r';
    let swapped = app.url(&format!("/links/{}", URL_SAFE_NO_PAD.encode(&bytes)));
    let (status, answer) = post_link(&app, &swapped).await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (403, &json!("forbidden"))
    );
    // One character changed.
    let mut tampered = approve.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let (status, _) = post_link(&app, &tampered).await;
    assert_eq!(status, 403);
    assert_eq!(pending(&app).await.status, ApprovalStatus::Pending);

    // The real link approves, as the sink.
    let (status, answer) = post_link(&app, &approve).await;
    assert_eq!(status, 200, "{answer:#}");
    assert_eq!(answer["decided_now"], true);
    assert_eq!(answer["approval"]["status"], "approved");
    assert_eq!(answer["approval"]["decided_by"], "link:phone");
    let decided = pending(&app).await;
    assert_eq!(
        (decided.status, decided.decided_by.as_deref()),
        (ApprovalStatus::Approved, Some("link:phone"))
    );

    // A replay is refused; the reject link reports the first decision and changes nothing.
    let (status, answer) = post_link(&app, &approve).await;
    assert_eq!((status, &answer["error"]["code"]), (410, &json!("gone")));
    let (status, answer) = post_link(&app, &reject).await;
    assert_eq!(status, 200, "{answer:#}");
    assert_eq!(answer["decided_now"], false);
    assert_eq!(answer["approval"]["status"], "approved");
    assert_eq!(pending(&app).await.status, ApprovalStatus::Approved);

    let decisions = audit(&app, "approval.decided").await;
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    assert_eq!(decisions[0].0, "link:phone");
    let refused = audit(&app, "link.refused").await;
    let reasons: Vec<&str> = refused
        .iter()
        .map(|(_, d)| d["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["bad_signature", "bad_signature", "used"]);
    assert_eq!(refused[0].1["approval_id"], Value::Null, "unverified");
    assert_eq!(refused[0].1["remote"], "127.0.0.1");
    assert_eq!(refused[2].1["approval_id"], approval_id);
    assert_eq!(refused[2].0, "link:phone");
    let mut db = app.db().await;
    let refused_on_run: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_events WHERE action = 'link.refused' AND run_id = ?",
    )
    .bind(run_id)
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(refused_on_run, 1, "the replay is on the run's timeline");

    // No key, link or sink token in the audit trail.
    let text = audit_text(&app).await;
    let key = link_key(&app).await;
    for secret in [
        hex::encode(&key),
        URL_SAFE_NO_PAD.encode(&key),
        token_of(&approve).to_owned(),
        token_of(&reject).to_owned(),
        SINK_TOKEN.to_owned(),
    ] {
        assert!(!text.contains(&secret), "a secret in the audit trail");
    }
    let attempts = eventually("the delivery's audit", WAIT, || async {
        let attempts = audit(&app, "notify.attempt").await;
        (!attempts.is_empty()).then_some(attempts)
    })
    .await;
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0].1["sink"], "phone");
    assert_eq!(attempts[0].1["outcome"], "delivered");
    assert!(
        !attempts[0]
            .1
            .to_string()
            .contains(&receiver.address.to_string()),
        "no sink URL in the audit"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_link_expires_with_its_lifetime_and_the_refusal_is_audited() {
    let receiver = Receiver::start(0).await;
    let (app, _secrets) = app_with("link_ttl_secs = 60", &ntfy_sink(&receiver)).await;
    let (_, approval_id) = approval(&app, "pbs", Duration::from_secs(600)).await;
    let message = receiver.wait_for("/", "/topic", "runbookd-alerts").await;
    let approve = message.action_url(0);

    app.clock.advance(chrono::Duration::seconds(61));
    let (status, answer) = post_link(&app, &approve).await;
    assert_eq!((status, &answer["error"]["code"]), (410, &json!("gone")));
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
    let page = app.client.get(&approve).send().await.unwrap();
    assert_eq!(page.status(), 410, "the page refuses it too");
    let approval = app.store.approval(approval_id).await.unwrap().unwrap();
    assert_eq!(
        approval.status,
        ApprovalStatus::Pending,
        "the approval itself has not expired"
    );
    let refused = audit(&app, "link.refused").await;
    assert_eq!(refused.len(), 2, "{refused:?}");
    for (_, detail) in &refused {
        assert_eq!(detail["reason"], "expired");
        assert_eq!(detail["approval_id"], approval_id);
        assert_eq!(detail["decision"], "approve");
    }
    assert_eq!(
        (&refused[0].1["method"], &refused[1].1["method"]),
        (&json!("POST"), &json!("GET"))
    );
    app.stop().await;
}

#[tokio::test]
async fn two_simultaneous_uses_of_one_link_decide_once() {
    let receiver = Receiver::start(0).await;
    let (app, _secrets) = app_with("", &ntfy_sink(&receiver)).await;
    let (_, approval_id) = approval(&app, "pbs", Duration::from_secs(600)).await;
    let message = receiver.wait_for("/", "/topic", "runbookd-alerts").await;
    let reject = message.action_url(1);

    // All released at once, so the uses really overlap.
    const USES: usize = 20;
    let start = Arc::new(tokio::sync::Barrier::new(USES));
    let uses: Vec<_> = (0..USES)
        .map(|_| {
            let (client, url, start) = (app.client.clone(), reject.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                let response = client
                    .post(&url)
                    .header("accept", "application/json")
                    .send()
                    .await
                    .unwrap();
                response.status().as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for used in uses {
        statuses.push(used.await.unwrap());
    }
    statuses.sort();
    let mut expected = vec![410; USES];
    expected[0] = 200;
    assert_eq!(statuses, expected, "exactly one decides");
    let approval = app.store.approval(approval_id).await.unwrap().unwrap();
    assert_eq!(approval.status, ApprovalStatus::Rejected);
    assert_eq!(audit(&app, "approval.decided").await.len(), 1);
    app.stop().await;
}

/// A link's use and its decision are one transaction: when the decision fails (here a trigger
/// makes the approval's update fail, as a busy or broken database would), the link is not
/// spent and the approval stays pending; the same link then works once the fault is gone.
#[tokio::test]
async fn a_failed_decision_does_not_spend_the_link() {
    let receiver = Receiver::start(0).await;
    let (app, _secrets) = app_with("", &ntfy_sink(&receiver)).await;
    let (_, approval_id) = approval(&app, "pbs", Duration::from_secs(600)).await;
    let message = receiver.wait_for("/", "/topic", "runbookd-alerts").await;
    let approve = message.action_url(0);

    let mut db = app.db().await;
    sqlx::query(
        "CREATE TRIGGER fail_decisions BEFORE UPDATE ON approvals
         BEGIN SELECT RAISE(ABORT, 'injected fault'); END",
    )
    .execute(&mut db)
    .await
    .unwrap();
    let (status, answer) = post_link(&app, &approve).await;
    assert_eq!(status, 500, "{answer:#}");
    assert_eq!(app.count("used_links").await, 0, "the link is not spent");
    let approval = app.store.approval(approval_id).await.unwrap().unwrap();
    assert_eq!(approval.status, ApprovalStatus::Pending);

    sqlx::query("DROP TRIGGER fail_decisions")
        .execute(&mut db)
        .await
        .unwrap();
    let (status, answer) = post_link(&app, &approve).await;
    assert_eq!(status, 200, "{answer:#}");
    assert_eq!(answer["decided_now"], true);
    assert_eq!(answer["approval"]["decided_by"], "link:phone");
    assert_eq!(app.count("used_links").await, 1);
    let (status, _) = post_link(&app, &approve).await;
    assert_eq!(status, 410, "still single-use");
    app.stop().await;
}

/// `runbookd_link_requests_limited_total` as /metrics reports it; 0 before the first 429.
async fn limited(app: &TestApp) -> u64 {
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("runbookd_link_requests_limited_total "))
        .map_or(0, |value| value.trim().parse::<f64>().unwrap() as u64)
}

/// Garbage links are audited, but one address cannot flood the trail: past its quota it gets
/// 429 (JSON or a page), counted in a metric and not audited.
#[tokio::test]
async fn link_requests_past_the_per_address_limit_get_429_and_no_audit_row() {
    let (app, _secrets) = app_with("link_requests_per_minute = 3", "").await;
    let garbage = app.url("/links/AAAAnot-a-real-link");
    for _ in 0..2 {
        let (status, _) = post_link(&app, &garbage).await;
        assert_eq!(status, 403);
    }
    let page = app.client.get(&garbage).send().await.unwrap();
    assert_eq!(page.status(), 403);
    assert_eq!(audit(&app, "link.refused").await.len(), 3);

    let before = limited(&app).await;
    let response = app
        .client
        .post(&garbage)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry_after = |response: &reqwest::Response| -> u64 {
        let header = response.headers().get("retry-after");
        let header = header.unwrap_or_else(|| panic!("no Retry-After: {response:?}"));
        header.to_str().unwrap().parse().unwrap()
    };
    assert!(retry_after(&response) >= 1);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"]["code"], "too_many_requests");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("too many requests from your address"),
        "{answer:#}"
    );
    let page = app.client.get(&garbage).send().await.unwrap();
    assert_eq!(page.status(), 429);
    assert!(retry_after(&page) >= 1, "the page says when to retry too");
    assert!(page.text().await.unwrap().contains("too many requests"));
    assert_eq!(
        audit(&app, "link.refused").await.len(),
        3,
        "refusals past the limit are not audited"
    );
    // The counter is process-wide (other tests add to it): it grew by at least our two.
    assert!(limited(&app).await >= before + 2);
    app.stop().await;
}

/// A browser's POST that decides is answered 303 to the link's own page, which shows the
/// decision: a reload shows it again instead of re-POSTing, and no refusal is audited for it.
/// A replay (a POST) is still refused and audited.
#[tokio::test]
async fn a_browser_post_is_redirected_to_the_page_showing_the_decision() {
    let receiver = Receiver::start(0).await;
    let (app, _secrets) = app_with("", &ntfy_sink(&receiver)).await;
    let (_, approval_id) = approval(&app, "pbs", Duration::from_secs(600)).await;
    let message = receiver.wait_for("/", "/topic", "runbookd-alerts").await;
    let approve = message.action_url(0);
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let answer = browser.post(&approve).send().await.unwrap();
    assert_eq!(answer.status(), 303);
    assert_eq!(answer.headers()["referrer-policy"], "no-referrer");
    let location = answer.headers()["location"].to_str().unwrap();
    let target = reqwest::Url::parse(&approve)
        .unwrap()
        .join(location)
        .unwrap();
    assert_eq!(target.as_str(), approve, "back to the link itself");
    for _ in 0..2 {
        let page = browser.get(target.clone()).send().await.unwrap();
        assert_eq!(page.status(), 200);
        let html = page.text().await.unwrap();
        assert!(html.contains("approved by link:phone"), "{html}");
        assert!(!html.contains("<form method=\"post\">"), "{html}");
    }
    let approval = app.store.approval(approval_id).await.unwrap().unwrap();
    assert_eq!(approval.status, ApprovalStatus::Approved);
    assert_eq!(audit(&app, "approval.decided").await.len(), 1);
    assert_eq!(
        audit(&app, "link.refused").await.len(),
        0,
        "viewing is no refusal"
    );

    let replay = browser.post(&approve).send().await.unwrap();
    assert_eq!(replay.status(), 410);
    let refused = audit(&app, "link.refused").await;
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].1["reason"], "used");
    app.stop().await;
}

/// A link is honoured only while its sink carries links: turning a sink's links off revokes
/// the links it sent, and a link signed for a name that is no such sink is refused too; each
/// refusal is a 403 audited as `unknown_sink`, and the approval stays pending.
#[tokio::test]
async fn links_from_a_sink_that_no_longer_carries_links_are_refused() {
    let receiver = Receiver::start(0).await;
    let sinks = format!(
        "{}
[[sinks]]
name = \"hook\"\nkind = \"webhook\"\nurl = \"{}\"\n",
        ntfy_sink(&receiver),
        receiver.url("/hook")
    );
    let (app, secrets) = app_with("", &sinks).await;
    let (_, approval_id) = approval(&app, "pbs", Duration::from_secs(600)).await;
    let message = receiver.wait_for("/", "/topic", "runbookd-alerts").await;
    let approve = token_of(&message.action_url(0)).to_owned();

    // Signed with the real key, for a removed sink and for a sink without links.
    let signer = LinkSigner::new(&link_key(&app).await, Duration::from_secs(3600));
    let now = app.clock.now();
    let expires = now + chrono::Duration::minutes(5);
    for sink in ["retired", "hook"] {
        let token = signer
            .sign(approval_id, Decision::Approve, now, expires, sink)
            .unwrap();
        let (status, answer) = post_link(&app, &app.url(&format!("/links/{token}"))).await;
        assert_eq!(
            (status, &answer["error"]["code"]),
            (403, &json!("forbidden")),
            "{sink}"
        );
    }
    let db_path = app.db_path.clone();
    let dir = app.stop().await;

    // The same database, with the phone's links turned off.
    let linkless = format!("{}links = false\n", ntfy_sink(&receiver));
    let app = reopen(db_path, secrets.path(), &linkless).await;
    let sent = app.url(&format!("/links/{approve}"));
    let (status, answer) = post_link(&app, &sent).await;
    assert_eq!(status, 403, "{answer:#}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked"),
        "{answer:#}"
    );
    let page = app.client.get(&sent).send().await.unwrap();
    assert_eq!(page.status(), 403, "the page refuses it too");
    let approval = app.store.approval(approval_id).await.unwrap().unwrap();
    assert_eq!(approval.status, ApprovalStatus::Pending);

    let refused = audit(&app, "link.refused").await;
    let seen: Vec<(&str, &Value, &Value)> = refused
        .iter()
        .map(|(actor, d)| (actor.as_str(), &d["reason"], &d["sink"]))
        .collect();
    let unknown = json!("unknown_sink");
    assert_eq!(
        seen,
        [
            ("link:retired", &unknown, &json!("retired")),
            ("link:hook", &unknown, &json!("hook")),
            ("link:phone", &unknown, &json!("phone")),
            ("link:phone", &unknown, &json!("phone")),
        ]
    );
    assert_eq!(app.count("used_links").await, 0);
    app.stop().await;
    drop(dir);
}

/// Only refusals are charged to an address: once garbage from one address (or one proxy,
/// for every phone behind it) has used up the quota, a genuine link from there still works;
/// refusing it again is charged.
#[tokio::test]
async fn a_genuine_link_works_after_garbage_used_up_the_limit() {
    let receiver = Receiver::start(0).await;
    let (app, _secrets) = app_with("link_requests_per_minute = 3", &ntfy_sink(&receiver)).await;
    let (_, approval_id) = approval(&app, "pbs", Duration::from_secs(600)).await;
    let message = receiver.wait_for("/", "/topic", "runbookd-alerts").await;
    let approve = message.action_url(0);

    let garbage = app.url("/links/AAAAnot-a-real-link");
    for _ in 0..3 {
        assert_eq!(post_link(&app, &garbage).await.0, 403);
    }
    assert_eq!(
        post_link(&app, &garbage).await.0,
        429,
        "the quota is used up"
    );

    let page = app.client.get(&approve).send().await.unwrap();
    assert_eq!(
        page.status(),
        200,
        "the genuine link's page is not throttled"
    );
    let (status, answer) = post_link(&app, &approve).await;
    assert_eq!(status, 200, "{answer:#}");
    assert_eq!(answer["approval"]["decided_by"], "link:phone");
    let approval = app.store.approval(approval_id).await.unwrap().unwrap();
    assert_eq!(approval.status, ApprovalStatus::Approved);

    let (status, _) = post_link(&app, &approve).await;
    assert_eq!(status, 429, "a replay is a refusal, and charged");
    assert_eq!(audit(&app, "link.refused").await.len(), 3);
    app.stop().await;
}

/// The confirmation page escapes what the run asked for (a hostile command) and carries the
/// web page's security headers, with no Referer for the credential in its URL.
#[tokio::test]
async fn the_link_page_escapes_a_hostile_command_and_sends_the_security_headers() {
    let receiver = Receiver::start(0).await;
    let (app, _secrets) = app_with("", &ntfy_sink(&receiver)).await;
    let ten_minutes = Duration::from_secs(600);
    parked_on(
        &app,
        "pbs",
        ("hostile", "echo \"<script>alert(1)</script>\"", "high"),
        ten_minutes,
    )
    .await;
    let message = receiver.wait_for("/", "/topic", "runbookd-alerts").await;
    let approve = message.action_url(0);

    let page = app.client.get(&approve).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    assert!(
        headers["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("default-src 'none'"),
        "{headers:?}"
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["cache-control"], "no-store");
    let html = page.text().await.unwrap();
    assert!(
        html.contains("echo &quot;&lt;script&gt;alert(1)&lt;/script&gt;&quot;"),
        "{html}"
    );
    assert!(!html.contains("<script"), "{html}");

    // Refusal pages too.
    let refused = app
        .client
        .get(app.url("/links/garbage"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused.headers().contains_key("content-security-policy"));
    app.stop().await;
}
