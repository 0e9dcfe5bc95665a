//! Acceptance 2: concurrent identical alerts make exactly one incident whose counter equals the
//! number of posts; resolve closes it; a later firing opens a new one.

use crate::common;

use chrono::Duration;
use common::{TestApp, reference};
use futures::future::join_all;
use serde_json::Value;

const POSTS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_duplicates_make_one_incident_and_count_every_post() {
    let app = TestApp::spawn().await;
    let body = reference("alertmanager-v4.json");
    let responses = join_all((0..POSTS).map(|_| async {
        let response = app.post_alertmanager(&body).await;
        assert_eq!(response.status(), 202);
        response.json::<Value>().await.unwrap()["incidents"][0].clone()
    }))
    .await;

    let first = responses[0]["incident_id"].clone();
    assert!(responses.iter().all(|r| r["incident_id"] == first));
    let fresh = responses
        .iter()
        .filter(|r| r["deduplicated"] == false)
        .count();
    assert_eq!(fresh, 1, "exactly one post opened the incident");

    let open = app.get_json("/api/v1/incidents?status=open").await;
    let incidents = open["incidents"].as_array().unwrap();
    assert_eq!(incidents.len(), 1);
    assert_eq!(incidents[0]["alert_count"], POSTS);
    // Every post is a delivery; the repeats changed nothing, so the opening alert is the one
    // stored, and the trail accounts for each repeat's delivery exactly once.
    assert_eq!(app.count("deliveries").await, POSTS as i64);
    assert_eq!(app.count("alerts").await, 1);
    let mut db = app.db().await;
    let mut counted: Vec<i64> = sqlx::query_scalar(
        "SELECT d.value FROM audit_events, json_each(detail, '$.deliveries') d
         WHERE action = 'incident.deduplicated'",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    let opening: i64 = sqlx::query_scalar(
        "SELECT json_extract(detail, '$.delivery_id') FROM audit_events
         WHERE action = 'incident.opened'",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    counted.push(opening);
    counted.sort_unstable();
    let deliveries: Vec<i64> = sqlx::query_scalar("SELECT id FROM deliveries ORDER BY id")
        .fetch_all(&mut db)
        .await
        .unwrap();
    assert_eq!(counted, deliveries, "each delivery in the trail once");
}

/// A repeat that changes something (here the description's age) is stored as an alert of its
/// own, and the incident shows it; one that changes nothing is counted and listed in the trail.
#[tokio::test]
async fn a_repeat_is_stored_when_it_changes_something_and_counted_when_it_does_not() {
    let app = TestApp::spawn().await;
    let body = reference("alertmanager-v4.json");
    let older = body.replace("last backed up 52h ago", "last backed up 53h ago");
    assert_ne!(older, body);
    let mut actions = Vec::new();
    for body in [&body, &body, &older, &older, &older] {
        let response = app.post_alertmanager(body).await;
        assert_eq!(response.status(), 202);
        let answer = response.json::<Value>().await.unwrap();
        actions.push(
            answer["incidents"][0]["action"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(
        actions,
        [
            "opened",
            "deduplicated",
            "deduplicated",
            "deduplicated",
            "deduplicated"
        ]
    );
    assert_eq!(app.count("deliveries").await, 5);
    assert_eq!(
        app.count("alerts").await,
        2,
        "the opening alert and the change"
    );

    let detail = app.get_incident(1).await;
    assert_eq!(detail["incident"]["alert_count"], 5);
    assert_eq!(
        detail["alerts"][0]["annotations"]["description"],
        "Backup group vm/451 on pbs-datastore last backed up 53h ago",
        "the newest alert first"
    );
    // Posted one by one, each repeat is its own batch: opened (delivery 1), the unchanged
    // repeat (2), the change with its alert (3), then the unchanged ones (4, 5).
    let mut db = app.db().await;
    let trail: Vec<(String, Option<i64>, Option<String>)> = sqlx::query_as(
        "SELECT action, json_extract(detail, '$.alert_id'), json_extract(detail, '$.deliveries')
         FROM audit_events ORDER BY id",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    let trail: Vec<(&str, Option<i64>, Option<&str>)> = trail
        .iter()
        .map(|(action, alert, deliveries)| (action.as_str(), *alert, deliveries.as_deref()))
        .collect();
    assert_eq!(
        trail,
        [
            ("incident.opened", Some(1), None),
            ("incident.deduplicated", None, Some("[2]")),
            ("incident.deduplicated", Some(2), None),
            ("incident.deduplicated", None, Some("[4]")),
            ("incident.deduplicated", None, Some("[5]")),
        ]
    );
}

#[tokio::test]
async fn resolve_closes_the_incident_and_a_new_firing_opens_another() {
    let app = TestApp::spawn().await;
    let firing = reference("alertmanager-v4.json");
    let resolved = firing.replace("\"firing\"", "\"resolved\"");

    let post = |body: String| {
        let app = &app;
        async move {
            let response = app.post_alertmanager(&body).await;
            assert_eq!(response.status(), 202);
            response.json::<Value>().await.unwrap()["incidents"][0].clone()
        }
    };

    let opened = post(firing.clone()).await;
    let first_id = opened["incident_id"].as_i64().unwrap();
    app.clock.advance(Duration::minutes(5));
    let repeat = post(firing.clone()).await;
    assert_eq!(repeat["incident_id"], first_id);
    assert_eq!(repeat["deduplicated"], true);

    app.clock.advance(Duration::minutes(5));
    let closed = post(resolved.clone()).await;
    assert_eq!(closed["incident_id"], first_id);
    assert_eq!(closed["action"], "resolved");
    let detail = app.get_incident(first_id).await;
    assert_eq!(detail["incident"]["status"], "resolved");
    assert_eq!(detail["incident"]["alert_count"], 2);
    assert!(
        detail["incident"]["resolved_at"]
            .as_str()
            .unwrap()
            .starts_with("2026-11-26T03:10:00")
    );
    assert!(
        detail["incident"]["last_seen"]
            .as_str()
            .unwrap()
            .starts_with("2026-11-26T03:10:00")
    );
    let actions: Vec<&str> = detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "incident.opened",
            "incident.deduplicated",
            "incident.source_resolved"
        ]
    );

    // Alertmanager repeats resolved notifications: a second one changes nothing.
    let again = post(resolved).await;
    assert_eq!(again["incident_id"], Value::Null);
    assert_eq!(again["action"], "resolve_unmatched");

    // The problem comes back: a new episode, with its own startsAt.
    let reopened = post(firing.replace("2026-11-26T02:30:00", "2026-11-26T05:30:00")).await;
    let second_id = reopened["incident_id"].as_i64().unwrap();
    assert_ne!(second_id, first_id);
    assert_eq!(reopened["deduplicated"], false);
    let all = app.get_json("/api/v1/incidents").await;
    let statuses: Vec<&str> = all["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["open", "resolved"], "newest first");
}
