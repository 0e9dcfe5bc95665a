//! Idempotency keys: concurrent duplicates claim once; a repeat gets the first answer; a
//! different body with the same key is refused; keys are per caller.

use chrono::{TimeZone, Utc};
use futures::future::join_all;
use runbookd::config::DatabaseConfig;
use runbookd::store::Store;
use runbookd::store::idempotency::{Claim, request_hash};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_duplicates_claim_once_and_repeats_get_the_first_answer() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&DatabaseConfig {
        path: dir.path().join("i.db"),
        busy_timeout_ms: 5_000,
    })
    .await
    .unwrap();
    let now = Utc.with_ymd_and_hms(2026, 11, 26, 3, 0, 0).unwrap();
    let hash = request_hash(
        "POST",
        "/api/v1/runs",
        br#"{"playbook":"pbs-backup-stale"}"#,
    );

    let claims =
        join_all((0..20).map(|_| store.claim_idempotent("agent", "key-1", &hash, now))).await;
    let claims: Vec<Claim> = claims.into_iter().map(Result::unwrap).collect();
    assert_eq!(claims.iter().filter(|c| **c == Claim::New).count(), 1);
    assert!(
        claims
            .iter()
            .filter(|c| **c != Claim::New)
            .all(|c| *c == Claim::InProgress)
    );

    store
        .complete_idempotent("agent", "key-1", 201, r#"{"run_id":7}"#)
        .await
        .unwrap();
    assert_eq!(
        store
            .claim_idempotent("agent", "key-1", &hash, now)
            .await
            .unwrap(),
        Claim::Done {
            status: 201,
            body: r#"{"run_id":7}"#.into()
        }
    );
    let other_body = request_hash("POST", "/api/v1/runs", br#"{"playbook":"other"}"#);
    assert_eq!(
        store
            .claim_idempotent("agent", "key-1", &other_body, now)
            .await
            .unwrap(),
        Claim::Mismatch
    );
    assert_eq!(
        store
            .claim_idempotent("admin", "key-1", &hash, now)
            .await
            .unwrap(),
        Claim::New,
        "keys are per caller"
    );

    // A request that failed without an answer frees its key for a retry.
    assert_eq!(
        store
            .claim_idempotent("agent", "key-2", &hash, now)
            .await
            .unwrap(),
        Claim::New
    );
    store.release_idempotent("agent", "key-2").await.unwrap();
    assert_eq!(
        store
            .claim_idempotent("agent", "key-2", &hash, now)
            .await
            .unwrap(),
        Claim::New
    );
}
