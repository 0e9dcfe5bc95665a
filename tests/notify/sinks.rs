//! Sinks: the ntfy, webhook and Slack payloads, retries and dead or redirecting sinks, `check`
//! on bad sinks, and the real service on the twin driven by ntfy links.

use super::*;

#[tokio::test]
async fn webhook_and_slack_payloads_carry_the_links_and_every_event_is_sent() {
    let receiver = Receiver::start(0).await;
    let sinks = format!(
        "[[sinks]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}\"\n\n\
         [[sinks]]\nname = \"chat\"\nkind = \"slack\"\nurl = \"{}\"\nevents = [\"approval_requested\"]\n\n\
         [[sinks]]\nname = \"trusted\"\nkind = \"webhook\"\nurl = \"{}\"\nlinks = true\nevents = [\"approval_requested\"]\n",
        receiver.url("/hook"),
        receiver.url("/chat/T000/B000/secret-part"),
        receiver.url("/trusted"),
    );
    let (app, _secrets) = app_with("", &sinks).await;
    let (run_id, approval_id) = approval(&app, "pbs", Duration::from_secs(600)).await;

    let hook = receiver
        .wait_for("/hook", "/event", "approval_requested")
        .await;
    let body = &hook.body;
    assert_eq!(hook.authorization, None);
    assert_eq!(body["run"]["id"], run_id);
    assert_eq!(body["approval"]["id"], approval_id);
    assert_eq!(body["approval"]["step"], "remount_datastore");
    assert_eq!(
        body["approval"]["command"],
        "umount -l /mnt/datastore && mount /mnt/datastore"
    );
    assert_eq!(body["approval"]["risk"], "high");
    assert!(body["approval"]["expires_at"].is_string());
    // A webhook may feed a program (the agent's pipeline): no working links unless asked for.
    assert_eq!(
        body["links"]["open"],
        app.url(&format!("/approvals/{approval_id}"))
    );
    assert_eq!(body["links"]["approve"], Value::Null, "{body:#}");
    assert_eq!(body["links"]["reject"], Value::Null, "{body:#}");
    assert!(!body.to_string().contains("/links/"), "{body:#}");
    let trusted = receiver
        .wait_for("/trusted", "/event", "approval_requested")
        .await;
    let approve = trusted.body["links"]["approve"].as_str().unwrap();
    let reject = trusted.body["links"]["reject"].as_str().unwrap();
    assert!(approve.starts_with(&app.url("/links/")));
    assert!(reject.starts_with(&app.url("/links/")));

    let chat = eventually("the slack message", WAIT, || async {
        receiver
            .on("/chat/T000/B000/secret-part")
            .into_iter()
            .next()
    })
    .await;
    let blocks = chat.body["blocks"].as_array().unwrap();
    assert!(
        chat.body["text"]
            .as_str()
            .unwrap()
            .contains("remount_datastore")
    );
    assert_eq!(blocks[0]["type"], "section");
    assert_eq!(blocks[1]["type"], "actions");
    let buttons = blocks[1]["elements"].as_array().unwrap();
    let labels: Vec<&str> = buttons
        .iter()
        .map(|b| b["text"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["Approve", "Reject", "Open"]);
    let slack_approve = buttons[0]["url"].as_str().unwrap();
    assert!(slack_approve.starts_with(&app.url("/links/")));
    assert_ne!(slack_approve, approve, "each sink gets its own links");
    // A Slack button opens the confirmation page; its form makes the decision.
    let page = app.client.get(slack_approve).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let answer = app.client.post(slack_approve).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    assert!(
        answer
            .text()
            .await
            .unwrap()
            .contains("approved by link:chat")
    );

    // A rejection by REST escalates its run: that is sent to the webhook only.
    // The approved run is back in the queue; nothing drives it in this test.
    app.store
        .cancel_run(run_id, "test", "not driven here", app.clock.now())
        .await
        .unwrap();
    let (_, second) = approval(&app, "pbs-1", Duration::from_secs(600)).await;
    // Both sinks hear of it before it is decided (the notifier skips decided approvals).
    eventually("the second approval on both sinks", WAIT, || async {
        let heard = |path: &str| {
            receiver.on(path).iter().any(|r| {
                r.body.pointer("/approval/id") == Some(&json!(second))
                    || r.body["text"].as_str().is_some_and(|t| t.contains("pbs-1"))
            })
        };
        (heard("/hook") && heard("/chat/T000/B000/secret-part")).then_some(())
    })
    .await;
    app.reject(second).await;
    let escalated = receiver.wait_for("/hook", "/event", "run_escalated").await;
    assert!(
        escalated.body["reason"]
            .as_str()
            .unwrap()
            .contains("rejected by approver"),
        "{:#}",
        escalated.body
    );

    // A run that resolves, one that escalates, and a tripped breaker.
    let now = app.clock.now();
    let resolved = leased_run(&app.store, None, "pbs-resolved", now).await;
    app.store
        .finish_run(
            &resolved,
            Ending::Resolved,
            &json!({"cause": "stale_nfs_handles"}),
            now,
        )
        .await
        .unwrap();
    let done = receiver.wait_for("/hook", "/event", "run_resolved").await;
    assert_eq!(done.body["run"]["id"], resolved.run_id);
    assert_eq!(
        done.body["links"]["open"],
        app.url("/"),
        "no incident: the home page"
    );

    let failed = leased_run(&app.store, None, "pbs-2", now).await;
    app.store
        .finish_run(
            &failed,
            Ending::Escalated,
            &json!({"reason": "the canary backup failed"}),
            now,
        )
        .await
        .unwrap();
    receiver
        .wait_for("/hook", "/reason", "the canary backup failed")
        .await;

    let limits = Limits {
        cooldown: Duration::ZERO,
        hourly_budget: 100,
        breaker_after: 1,
    };
    for _ in 0..2 {
        let lease = leased_run(&app.store, None, "pbs-2", now).await;
        let verdict = app
            .store
            .reserve_action(&lease, "restart_pbs", "pbs-2", limits, now)
            .await
            .unwrap();
        assert!(
            matches!(verdict, Err(Blocked::Breaker { .. })),
            "{verdict:?}"
        );
        app.store
            .finish_run(&lease, Ending::Resolved, &json!({}), now)
            .await
            .unwrap();
    }
    let breaker = receiver
        .wait_for("/hook", "/event", "breaker_tripped")
        .await;
    assert!(breaker.body["title"].as_str().unwrap().contains("pbs-2"));
    // Both blocked runs' resolutions arrive after the breaker events were read.
    eventually("both later resolutions", WAIT, || async {
        let resolved = receiver
            .on("/hook")
            .iter()
            .filter(|r| r.body["event"] == "run_resolved")
            .count();
        (resolved == 3).then_some(())
    })
    .await;
    let breakers = receiver
        .on("/hook")
        .iter()
        .filter(|r| r.body["event"] == "breaker_tripped")
        .count();
    assert_eq!(
        breakers, 1,
        "one notification per trip, not per blocked action"
    );
    assert_eq!(
        receiver.on("/chat/T000/B000/secret-part").len(),
        2,
        "the slack sink wants approvals only"
    );
    assert!(
        !audit_text(&app).await.contains("secret-part"),
        "no sink URL in the audit trail"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_flaky_sink_is_retried_and_a_dead_one_stops_nothing_else() {
    let flaky = Receiver::start(2).await;
    let phone = Receiver::start(0).await;
    let dead = closed_port().await;
    let sinks = format!(
        "[[sinks]]\nname = \"flaky\"\nkind = \"webhook\"\nurl = \"{}\"\n\n\
         [[sinks]]\nname = \"dead\"\nkind = \"webhook\"\nurl = \"http://{dead}/hook\"\n\n{}",
        flaky.url("/flaky"),
        ntfy_sink(&phone),
    );
    let (app, _secrets) = app_with("", &sinks).await;
    let (_, approval_id) = approval(&app, "pbs", Duration::from_secs(600)).await;

    let message = phone.wait_for("/", "/topic", "runbookd-alerts").await;
    flaky
        .wait_for("/flaky", "/event", "approval_requested")
        .await;
    let approve = message.action_url(0);
    let (status, _) = post_link(&app, &approve).await;
    assert_eq!(status, 200);
    assert_eq!(
        app.store
            .approval(approval_id)
            .await
            .unwrap()
            .unwrap()
            .status,
        ApprovalStatus::Approved
    );

    let by_sink = |attempts: &[(String, Value)], sink: &str| -> Vec<Value> {
        attempts
            .iter()
            .filter(|(_, d)| d["sink"] == sink)
            .map(|(_, d)| d.clone())
            .collect()
    };
    let attempts = eventually("three attempts for each retried sink", WAIT, || async {
        let attempts = audit(&app, "notify.attempt").await;
        (by_sink(&attempts, "flaky").len() == 3 && by_sink(&attempts, "dead").len() == 3)
            .then_some(attempts)
    })
    .await;
    let flaky_attempts = by_sink(&attempts, "flaky");
    let outcomes: Vec<(&Value, &Value, &Value)> = flaky_attempts
        .iter()
        .map(|d| (&d["attempt"], &d["outcome"], &d["status"]))
        .collect();
    assert_eq!(
        outcomes,
        [
            (&json!(1), &json!("failed"), &json!(500)),
            (&json!(2), &json!("failed"), &json!(500)),
            (&json!(3), &json!("delivered"), &json!(200)),
        ]
    );
    let dead_attempts = by_sink(&attempts, "dead");
    for (i, attempt) in dead_attempts.iter().enumerate() {
        assert_eq!(attempt["attempt"], i as u64 + 1);
        assert_eq!(attempt["outcome"], "failed");
        assert_eq!(attempt["status"], Value::Null);
        assert!(
            attempt["error"]
                .as_str()
                .unwrap()
                .contains("error sending request")
        );
        assert!(
            !attempt["error"]
                .as_str()
                .unwrap()
                .contains(&dead.to_string()),
            "no sink URL in the error"
        );
        assert_eq!(attempt["gave_up"], i == 2);
    }
    assert_eq!(by_sink(&attempts, "phone").len(), 1);
    app.stop().await;
}

/// `runbookd check` on a config holding `text`: whether it passed, and its stderr.
fn check(config: &std::path::Path, text: &str) -> (bool, String) {
    std::fs::write(config, text).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_runbookd"))
        .args(["check", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.success(), stderr)
}

#[test]
fn check_refuses_bad_sinks_with_clear_messages() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("runbookd.toml");
    let (passed, stderr) = check(
        &config,
        "[[notify.sinks]]\nname = \"pager\"\nkind = \"ntfy\"\nurl = \"http://127.0.0.1:9/\"\n\n\
         [[notify.sinks]]\nname = \"chat\"\nkind = \"slack\"\nurl = \"http://127.0.0.1:9/hook\"\ntoken = \"inline-secret-value\"\n",
    );
    assert!(!passed);
    let at = |line: usize| format!("{}:{line}:1: notify sink", config.display());
    assert!(
        stderr.contains(&at(1)) && stderr.contains("'pager': an ntfy sink needs a topic"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&at(6))
            && stderr.contains("'chat': secrets are not accepted in the config"),
        "{stderr}"
    );
    assert!(!stderr.contains("inline-secret-value"), "{stderr}");

    let refusals = [
        (
            "[[notify.sinks]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\nlinks = \"yes\"\n",
            "invalid type: string \"yes\", expected a boolean",
        ),
        (
            "[[notify.sinks]]\nname = \"pager\"\nkind = \"email\"\nurl = \"http://127.0.0.1:9/\"\n",
            "unknown variant `email`, expected one of `webhook`, `ntfy`, `slack`",
        ),
    ];
    for (text, message) in refusals {
        let (passed, stderr) = check(&config, text);
        assert!(!passed, "{text}");
        assert!(stderr.contains(message), "{stderr}");
    }
}

/// The acceptance story through the real binary on the twin: `serve --lab nfs-unmounted`
/// asks once on ntfy for the whole remount (every command listed), one tap on Approve works
/// once, the run resolves and that is announced too; the service's own log (at debug for the HTTP layer)
/// holds no link, link key or sink token.
#[tokio::test]
async fn the_real_service_on_the_twin_is_driven_to_resolved_by_ntfy_links() {
    use common::process::ServiceProcess;
    const ADMIN: &str = "notify-admin-secret-0123456789abcdef";

    let receiver = Receiver::start(0).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data/runbookd.db");
    let config = format!(
        "[notify]\npoll_interval_ms = 50\nbackoff_initial_ms = 10\nbackoff_max_ms = 50\n\n\
         [[notify.sinks]]\nname = \"phone\"\nkind = \"ntfy\"\nurl = \"{}\"\ntopic = \"runbookd-alerts\"\ntoken_env = \"NTFY_TOKEN\"\n",
        receiver.url("/")
    );
    let env = [
        ("NTFY_TOKEN", SINK_TOKEN),
        ("RUST_LOG", "info,tower_http=debug,runbookd=debug"),
    ];
    let service =
        ServiceProcess::start_lab(dir.path(), "nfs-unmounted", ADMIN, &[], &config, &env).await;
    let client = reqwest::Client::new();
    let run_id = service.post_reference_alert(ADMIN).await["run_id"]
        .as_i64()
        .unwrap();

    let approval_message = |step: &'static str| {
        let receiver = receiver.clone();
        async move {
            eventually(
                &format!("the approval of {step} on ntfy"),
                Duration::from_secs(60),
                || async {
                    receiver.on("/").into_iter().find(|r| {
                        r.body["title"]
                            .as_str()
                            .is_some_and(|t| t.starts_with("Approval needed") && t.contains(step))
                    })
                },
            )
            .await
        }
    };
    let message = approval_message("lazy_unmount").await;
    assert_eq!(
        message.authorization.as_deref(),
        Some(format!("Bearer {SINK_TOKEN}").as_str())
    );
    let text = message.body["message"].as_str().unwrap();
    assert!(
        text.contains("`umount -l /mnt/pbs-datastore` on pbs (detaches the datastore's NFS mount")
            && text.contains(", then `mount /mnt/pbs-datastore` on pbs (mounts")
            && text.contains("`systemctl restart proxmox-backup proxmox-backup-proxy` on pbs"),
        "the one approval lists every command of the remount, each with its host and what it changes: {text}"
    );
    assert!(
        text.contains("If nobody decides by ")
            && text.ends_with("it is rejected and the run escalates to a human."),
        "the message says what happens if nobody decides: {text}"
    );
    let approve = message.action_url(0);
    assert!(
        approve.starts_with(&format!("{}/links/", service.address)),
        "{approve}"
    );
    let answer = client
        .post(&approve)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().await.unwrap();
    assert_eq!(answer["approval"]["step"], "lazy_unmount");
    assert_eq!(answer["approval"]["decided_by"], "link:phone");
    let used = [approve];
    eventually(
        "the resolution on ntfy",
        Duration::from_secs(90),
        || async {
            receiver.on("/").into_iter().find(|r| {
                r.body["title"]
                    .as_str()
                    .is_some_and(|t| t.starts_with(&format!("Run {run_id} resolved")))
            })
        },
    )
    .await;
    let asked = receiver
        .on("/")
        .into_iter()
        .filter(|r| {
            r.body["title"]
                .as_str()
                .is_some_and(|t| t.starts_with("Approval needed"))
        })
        .count();
    assert_eq!(asked, 1, "one tap: the rest of the remount did not ask");
    let replay = client.post(&used[0]).send().await.unwrap();
    assert_eq!(replay.status(), 410);

    let key = common::link_key(&db);
    let log = service.log_text();
    assert!(
        log.contains("\"path\":\"/links/…\""),
        "the HTTP layer logged link requests, with the token cut out"
    );
    for secret in [
        hex::encode(&key),
        URL_SAFE_NO_PAD.encode(&key),
        token_of(&used[0]).to_owned(),
        SINK_TOKEN.to_owned(),
    ] {
        assert!(!log.contains(&secret), "a secret in the service log");
    }
    assert!(service.terminate().await.success());
}

/// A sink that answers with a redirect is not followed (the body holds links and the request
/// the sink's token): one failed attempt, not retried, and the redirect's target gets nothing.
#[tokio::test]
async fn a_redirecting_sink_is_a_failure_that_is_not_followed_or_retried() {
    let elsewhere = Receiver::start(0).await;
    let target = elsewhere.url("/stolen");
    let router = axum::Router::new().fallback(axum::routing::post(move || {
        let target = target.clone();
        async move { (StatusCode::TEMPORARY_REDIRECT, [("location", target)]) }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let phone = Receiver::start(0).await;
    let sinks = format!(
        "[[sinks]]\nname = \"moved\"\nkind = \"ntfy\"\nurl = \"http://{address}/\"\ntopic = \"t\"\ntoken_file = \"TOKEN_FILE\"\n\n{}",
        ntfy_sink(&phone).replace("phone", "phone2"),
    );
    let (app, _secrets) = app_with("", &sinks).await;
    approval_named(&app, "pbs", "redirected_step").await;
    wait_titled(&phone, "redirected_step").await;
    let moved = eventually("the redirected attempt", WAIT, || async {
        let attempts: Vec<Value> = audit(&app, "notify.attempt")
            .await
            .into_iter()
            .filter(|(_, d)| d["sink"] == "moved")
            .map(|(_, d)| d)
            .collect();
        (!attempts.is_empty()).then_some(attempts)
    })
    .await;
    assert_eq!(moved.len(), 1, "not retried: {moved:?}");
    assert_eq!(moved[0]["status"], 307);
    assert_eq!(moved[0]["outcome"], "failed");
    assert_eq!(moved[0]["gave_up"], true);
    assert!(
        elsewhere.received.lock().unwrap().is_empty(),
        "not followed"
    );
    app.stop().await;
}
