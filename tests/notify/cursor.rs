//! The notifier's cursor: history and gaps are not replayed, nothing is sent twice, and an
//! event that keeps failing is skipped and audited.

use super::*;

#[tokio::test]
async fn history_from_before_notifications_is_not_sent() {
    let receiver = Receiver::start(0).await;
    // A first life without sinks leaves an approval in the trail.
    let app = TestApp::spawn().await;
    approval(&app, "pbs", Duration::from_secs(600)).await;
    let mut db = app.db().await;
    let cursor: Option<i64> = sqlx::query_scalar("SELECT last_event_id FROM notify_cursor")
        .fetch_optional(&mut db)
        .await
        .unwrap();
    assert_eq!(cursor, None, "no sinks, no cursor");
    drop(db);
    let db_path = app.db_path.clone();
    let dir = app.stop().await;

    let untokened = ntfy_sink(&receiver).replace("token_file = \"TOKEN_FILE\"\n", "");
    let app = reopen(db_path, dir.path(), &untokened).await;
    let ten_minutes = Duration::from_secs(600);
    parked_on(
        &app,
        "pbs-b",
        (
            "enable_job",
            "pvesh set /cluster/backup/job-1 --enabled 1",
            "medium",
        ),
        ten_minutes,
    )
    .await;
    let message = receiver.wait_for("/", "/topic", "runbookd-alerts").await;
    assert!(
        message.body["title"]
            .as_str()
            .unwrap()
            .contains("enable_job")
    );
    assert_eq!(message.authorization, None);
    let attempts = eventually("the delivery's audit", WAIT, || async {
        let attempts = audit(&app, "notify.attempt").await;
        (!attempts.is_empty()).then_some(attempts)
    })
    .await;
    assert_eq!(attempts.len(), 1, "only the new approval: {attempts:?}");
    assert_eq!(receiver.on("/").len(), 1);
    app.stop().await;
    drop(dir);
}

/// The cursor in memory moves on even when its copy in the database cannot be written (a
/// trigger refuses the write here, as a busy database would): nothing is sent twice.
#[tokio::test]
async fn a_cursor_that_cannot_be_saved_does_not_resend() {
    let receiver = Receiver::start(0).await;
    let (app, _secrets) = app_with("", &ntfy_sink(&receiver)).await;
    // The notifier has placed its cursor at start; from now on it cannot save it.
    let mut db = app.db().await;
    sqlx::query(
        "CREATE TRIGGER fail_cursor BEFORE UPDATE ON notify_cursor
         BEGIN SELECT RAISE(ABORT, 'injected fault'); END",
    )
    .execute(&mut db)
    .await
    .unwrap();
    approval_named(&app, "pbs-a", "first_step").await;
    wait_titled(&receiver, "first_step").await;
    approval_named(&app, "pbs-b", "second_step").await;
    wait_titled(&receiver, "second_step").await;
    let attempts = eventually("both deliveries audited", WAIT, || async {
        let attempts = audit(&app, "notify.attempt").await;
        (attempts.len() >= 2).then_some(attempts)
    })
    .await;
    assert_eq!(titled(&receiver, "first_step"), 1, "sent once");
    assert_eq!(titled(&receiver, "second_step"), 1, "sent once");
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    app.stop().await;
}

#[tokio::test]
async fn the_saved_cursor_never_moves_backwards() {
    let app = TestApp::spawn().await;
    let read = |app: &TestApp| {
        let path = app.db_path.clone();
        async move {
            let mut db = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&path)
                .connect()
                .await
                .unwrap();
            sqlx::query_scalar::<_, i64>("SELECT last_event_id FROM notify_cursor")
                .fetch_one(&mut db)
                .await
                .unwrap()
        }
    };
    let start = app.store.notify_cursor().await.unwrap();
    app.store.set_notify_cursor(start + 10).await.unwrap();
    assert_eq!(read(&app).await, start + 10);
    app.store.set_notify_cursor(start + 5).await.unwrap();
    assert_eq!(
        read(&app).await,
        start + 10,
        "a late, older write changes nothing"
    );
    app.store.set_notify_cursor(start + 11).await.unwrap();
    assert_eq!(read(&app).await, start + 11);
    app.stop().await;
}

/// Sinks on, then off for a while (events happen), then on again: what happened while they
/// were off is not sent.
#[tokio::test]
async fn sinks_turned_off_and_on_again_do_not_replay_the_gap() {
    let receiver = Receiver::start(0).await;
    let (app, secrets) = app_with("", &ntfy_sink(&receiver)).await;
    approval_named(&app, "pbs-a", "while_on").await;
    wait_titled(&receiver, "while_on").await;
    let db_path = app.db_path.clone();
    let dir = app.stop().await;

    let app = TestApp::spawn_with(|config| config.database.path = db_path.clone()).await;
    approval_named(&app, "pbs-b", "while_off").await;
    let dir2 = app.stop().await;

    let app = reopen(db_path, secrets.path(), &ntfy_sink(&receiver)).await;
    approval_named(&app, "pbs-c", "on_again").await;
    wait_titled(&receiver, "on_again").await;
    assert_eq!(titled(&receiver, "while_off"), 0, "{:#?}", receiver.on("/"));
    assert_eq!(titled(&receiver, "while_on"), 1);
    app.stop().await;
    drop((dir, dir2));
}

/// An event that cannot become a notification (its run's row no longer decodes) is skipped
/// after a few tries, audited, and later events are still sent.
#[tokio::test]
async fn an_event_that_keeps_failing_is_skipped_and_audited() {
    let receiver = Receiver::start(0).await;
    let (app, _secrets) = app_with("", &ntfy_sink(&receiver)).await;
    let now = app.clock.now();
    let broken = leased_run(&app.store, None, "pbs-broken", now).await;
    let mut db = app.db().await;
    sqlx::query("UPDATE runs SET state = 'no-such-state' WHERE id = ?")
        .bind(broken.run_id)
        .execute(&mut db)
        .await
        .unwrap();
    // An event on the broken run, after the corruption.
    app.store
        .record_event(
            runbookd::store::audit::NewAuditEvent {
                actor: "test",
                action: runbookd::store::audit::AuditAction::RunFinished,
                incident_id: None,
                run_id: Some(broken.run_id),
                detail: json!({"state": "resolved"}),
            },
            now,
        )
        .await
        .unwrap();
    approval_named(&app, "pbs-after", "after_the_broken_one").await;
    wait_titled(&receiver, "after_the_broken_one").await;
    // The broken run's earlier events (created, leased) may be read after the corruption too.
    let skipped = audit(&app, "notify.skipped").await;
    assert!(
        skipped.iter().any(|(_, d)| d["action"] == "run.finished"),
        "{skipped:?}"
    );
    for (actor, detail) in &skipped {
        assert_eq!(actor, "notifier");
        assert_eq!(detail["failures"], 10);
        assert!(
            detail["error"].as_str().unwrap().contains("no-such-state"),
            "{detail}"
        );
    }
    app.stop().await;
}
