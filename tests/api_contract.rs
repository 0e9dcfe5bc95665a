//! The API description holds against the real binary: `/openapi.json` is valid OpenAPI 3.1
//! under openapi-spec-validator, and schemathesis, fuzzing every operation it describes with
//! each role's token on the twin, finds no 5xx, no undocumented status and no answer off its
//! schema; afterwards the database holds no half-written row. Both tools are pinned in
//! tests/python/requirements-contract.txt (scripts/install-python-deps.sh installs them) and
//! only ever reach the service on loopback.

use crate::common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::process::ServiceProcess;
use serde_json::Value;
use sqlx::{ConnectOptions, sqlite::SqliteConnectOptions};

const ADMIN: &str = "contract-admin-secret-0123456789";
const TOKENS: [(&str, &str, &str); 3] = [
    ("ingest", "ingest", "contract-ingest-secret-0123456789"),
    ("agent", "agent", "contract-agent-secret-0123456789"),
    (
        "approver",
        "approver",
        "contract-approver-secret-0123456789",
    ),
];

/// Examples per operation in schemathesis's fuzzing phase, for each role.
const EXAMPLES_PER_OPERATION: u32 = 8;

fn contract_tool(name: &str) -> PathBuf {
    let tool = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/python-venv-contract/bin")
        .join(name);
    assert!(
        tool.exists(),
        "{} is missing: run scripts/install-python-deps.sh (scripts/test.sh does)",
        tool.display()
    );
    tool
}

#[tokio::test]
async fn the_served_description_is_valid_openapi_3_1() {
    let dir = tempfile::tempdir().unwrap();
    let service = ServiceProcess::start(&dir.path().join("runbookd.db"), &[]).await;
    let text = reqwest::get(format!("{}/openapi.json", service.address))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let api: Value = serde_json::from_str(&text).unwrap();
    assert!(
        api["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        api["openapi"]
    );
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, &text).unwrap();
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(contract_tool("openapi-spec-validator"))
            .args(["--schema", "3.1", "--validation-errors", "all"])
            .arg(&file)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("openapi-spec-validator finishes within 60 s")
    .unwrap();
    assert!(
        output.status.success(),
        "openapi-spec-validator refuses /openapi.json:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// One schemathesis run with `token`; the number of test cases it ran.
async fn fuzz(service: &ServiceProcess, role: &str, token: &str, reports: &std::path::Path) -> u64 {
    let report = reports.join(format!("{role}.json"));
    let output = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::process::Command::new(contract_tool("schemathesis"))
            .arg("run")
            .arg(format!("{}/openapi.json", service.address))
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,response_schema_conformance",
                "--phases",
                "examples,coverage,fuzzing",
                "--max-examples",
                &EXAMPLES_PER_OPERATION.to_string(),
                "--seed",
                "1212",
                // One worker: hypothesis describes its strategies with `ast`, which is not
                // thread-safe, and the four roles already run side by side.
                "--workers",
                "1",
                "--request-timeout",
                "30",
                "--max-redirects",
                "0",
                "--suppress-health-check",
                "all",
                "--report",
                "json",
            ])
            .arg("--report-json-path")
            .arg(&report)
            .args(["--header", &format!("Authorization: Bearer {token}")])
            .env("NO_COLOR", "1")
            .current_dir(reports)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("schemathesis as {role} finishes within 300 s"))
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis as {role} found problems:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    summary["test_cases"]["generated"]
        .as_u64()
        .unwrap_or_else(|| panic!("no case count in {summary}"))
}

#[tokio::test]
async fn schemathesis_finds_nothing_across_every_route_and_role() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[http]\nrequest_timeout_secs = 10\n";
    let service =
        ServiceProcess::start_lab(dir.path(), "stale-nfs", ADMIN, &TOKENS, config, &[]).await;
    // Something to read and decide: an incident, its run, a pending approval in time.
    service.post_reference_alert(ADMIN).await;

    let reports = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let roles: Vec<(&str, &str)> = TOKENS
        .iter()
        .map(|(name, _, secret)| (*name, *secret))
        .chain([("admin", ADMIN)])
        .collect();
    let runs = roles
        .iter()
        .map(|(role, token)| async { (*role, fuzz(&service, role, token, reports.path()).await) });
    let cases = futures::future::join_all(runs).await;
    let total: u64 = cases.iter().map(|(_, n)| n).sum();
    println!(
        "schemathesis: {total} test cases in {:.1} s ({cases:?}), {EXAMPLES_PER_OPERATION} fuzzed examples per operation and role",
        started.elapsed().as_secs_f64()
    );
    assert!(service.terminate().await.success());

    let mut db = SqliteConnectOptions::new()
        .filename(dir.path().join("data/runbookd.db"))
        .read_only(true)
        .connect()
        .await
        .unwrap();
    let half_written = [
        (
            "a delivery with neither alerts nor refused alerts",
            "SELECT id FROM deliveries d WHERE NOT EXISTS (SELECT 1 FROM alerts WHERE delivery_id = d.id)
               AND NOT EXISTS (SELECT 1 FROM refused_alerts WHERE delivery_id = d.id)
               AND NOT EXISTS (SELECT 1 FROM audit_events e, json_each(e.detail, '$.deliveries') r
                               WHERE e.action = 'incident.deduplicated' AND r.value = d.id)",
        ),
        (
            "an incident with no alert",
            "SELECT id FROM incidents i WHERE NOT EXISTS (SELECT 1 FROM alerts WHERE incident_id = i.id)",
        ),
        (
            "an incident whose opening is not audited",
            "SELECT id FROM incidents i WHERE NOT EXISTS
               (SELECT 1 FROM audit_events WHERE incident_id = i.id AND action = 'incident.opened')",
        ),
        (
            "a run of an incident without its incident link",
            "SELECT id FROM runs r WHERE incident_id IS NOT NULL AND NOT EXISTS
               (SELECT 1 FROM run_incidents WHERE run_id = r.id AND incident_id = r.incident_id)",
        ),
        (
            "a run whose creation is not audited",
            "SELECT id FROM runs r WHERE NOT EXISTS
               (SELECT 1 FROM audit_events WHERE run_id = r.id AND action = 'run.created')",
        ),
        (
            "a decided approval whose decision is not audited",
            "SELECT id FROM approvals a WHERE status IN ('approved', 'rejected') AND NOT EXISTS
               (SELECT 1 FROM audit_events WHERE action = 'approval.decided'
                  AND json_extract(detail, '$.approval_id') = a.id)",
        ),
        (
            "a breaker reset that is not audited",
            "SELECT id FROM breaker_resets b WHERE NOT EXISTS
               (SELECT 1 FROM audit_events WHERE action = 'breaker.reset'
                  AND json_extract(detail, '$.target') = b.target)",
        ),
        (
            "an idempotency key left in progress",
            "SELECT rowid FROM idempotency_keys WHERE response_status IS NULL",
        ),
    ];
    for (what, query) in half_written {
        let rows: Vec<(i64,)> = sqlx::query_as(query).fetch_all(&mut db).await.unwrap();
        assert!(rows.is_empty(), "{what}: {rows:?}");
    }
    let dangling: Vec<(String, i64, String, i64)> = sqlx::query_as("PRAGMA foreign_key_check")
        .fetch_all(&mut db)
        .await
        .unwrap();
    assert!(dangling.is_empty(), "rows pointing nowhere: {dangling:?}");
    let integrity: (String,) = sqlx::query_as("PRAGMA integrity_check")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(integrity.0, "ok");
}
