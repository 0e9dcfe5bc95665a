//! The kill switch over HTTP, and the playbook listing.

use crate::common;

use common::{ADMIN_TOKEN, TestApp};
use serde_json::Value;

#[tokio::test]
async fn pause_and_resume_flip_the_persisted_switch_and_are_audited_with_the_caller() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get_json("/api/v1/playbooks").await["paused"], false);

    for (path, paused) in [("/api/v1/pause", true), ("/api/v1/resume", false)] {
        let response = app
            .client
            .post(app.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.json::<Value>().await.unwrap()["paused"], paused);
        assert_eq!(app.get_json("/api/v1/playbooks").await["paused"], paused);
    }

    let mut db = app.db().await;
    let trail: Vec<(String, i64)> = sqlx::query_as(
        "SELECT actor, json_extract(detail, '$.value') FROM audit_events
         WHERE action = 'setting.changed' ORDER BY id",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert_eq!(trail, [("admin".to_owned(), 1), ("admin".to_owned(), 0)]);
}
