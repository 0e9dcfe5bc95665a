//! Acceptance 1: the agent clients users really run, against the real binary on the
//! cert-mismatch twin: the official MCP Python SDK 2.x, and mcp 1.x with LangChain's MCP
//! adapters (what LangGraph agents use; they need mcp<2), each pinned in its own venv by
//! scripts/install-python-deps.sh. Each lists the tools, diagnoses (the fingerprint mismatch),
//! starts a remediation up to its pending approval, and is refused when it tries to approve
//! with the agent's token.

use crate::common;

use std::path::PathBuf;
use std::time::Duration;

use common::process::ServiceProcess;
use serde_json::Value;

const ADMIN: &str = "mcp-admin-secret-0123456789abcdef";
const AGENT: &str = "mcp-agent-secret-0123456789abcdef";

/// The python of `venv` under target/.
fn python(venv: &str) -> PathBuf {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(venv)
        .join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/install-python-deps.sh (scripts/test.sh does)",
        python.display()
    );
    python
}

/// Runs `script` (under tests/python) with `venv`'s python as the agent, against `service`;
/// what it printed.
async fn agent_flow(service: &ServiceProcess, venv: &str, script: &str) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(python(venv))
            .arg(script)
            .env("RUNBOOKD_URL", &service.address)
            .env("RUNBOOKD_AGENT_TOKEN", AGENT)
            // LangSmith tracing stays off: nothing leaves loopback.
            .env("LANGSMITH_TRACING", "false")
            .env("LANGCHAIN_TRACING_V2", "false")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the MCP client finishes within 120 s")
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the MCP client failed:\n{stdout}\n{stderr}"
    );
    serde_json::from_str(stdout.trim()).expect("the client prints JSON")
}

/// What both clients must have seen: the agent's tools, the diagnosis, the run waiting for a
/// person's approval of the risky step, and no way for the agent to approve it.
fn assert_the_agent_flow(seen: &Value) {
    assert_eq!(
        seen["tools"],
        serde_json::json!([
            "cancel_run",
            "diagnose",
            "explain_playbook",
            "get_backup_status",
            "get_incident",
            "list_incidents",
            "list_pending_approvals",
            "start_remediation"
        ])
    );
    assert_eq!(seen["cause"], "fingerprint_mismatch", "{seen:#}");
    assert_ne!(
        seen["evidence"]["pbs_fingerprint"], seen["evidence"]["storage_fingerprint"],
        "the evidence shows the two fingerprints"
    );
    assert!(
        seen["bad_arguments_error"]
            .as_str()
            .unwrap()
            .contains("incident_id"),
        "{seen:#}"
    );
    assert_eq!(seen["run_state"], "waiting_approval");
    let approval = &seen["pending_approval"];
    assert_eq!(approval["step"], "set_storage_fingerprint");
    assert_eq!(approval["risk"], "high");
    assert!(
        approval["command"]
            .as_str()
            .unwrap()
            .starts_with("PUT /storage/pbs-pihanga fingerprint="),
        "{approval}"
    );
    assert_eq!(seen["pending_ids"], serde_json::json!([approval["id"]]));
    assert!(
        seen["approve_tool"]
            .as_str()
            .unwrap()
            .starts_with("there is no tool 'approve'"),
        "{seen:#}"
    );
    assert_eq!(seen["rest_approve_status"], 403);
}

/// Nothing was decided, the trail names the agent for what it did, and its token is not in
/// the log.
async fn assert_nothing_decided(service: ServiceProcess, dir: &std::path::Path, seen: &Value) {
    // Nothing was decided, and the trail names the agent for what it did.
    let client = reqwest::Client::new();
    let get = |path: String| {
        let client = client.clone();
        let url = format!("{}{path}", service.address);
        async move {
            let response = client.get(url).bearer_auth(ADMIN).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    let run_id = seen["run_id"].as_i64().unwrap();
    let run = get(format!("/api/v1/runs/{run_id}")).await;
    assert_eq!(run["run"]["state"], "waiting_approval");
    assert_eq!(run["approvals"][0]["status"], "pending");
    assert!(
        run["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["step"] != "set_storage_fingerprint")
    );
    let created = run["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "run.created")
        .expect("the run's creation is audited");
    assert_eq!(created["actor"], "langgraph");
    let log = service.log_text();
    assert!(service.terminate().await.success());
    assert!(!log.contains(AGENT), "the agent's token is never logged");

    // The read-only diagnosis is on the record too: who probed the estate, and what it found.
    use sqlx::{ConnectOptions, sqlite::SqliteConnectOptions};
    let mut db = SqliteConnectOptions::new()
        .filename(dir.join("data/runbookd.db"))
        .connect()
        .await
        .unwrap();
    let diagnosed: Vec<(String, String)> = sqlx::query_as(
        "SELECT actor, json_extract(detail, '$.cause') FROM audit_events
         WHERE action = 'tool.diagnosed'",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert_eq!(
        diagnosed,
        [("langgraph".to_owned(), "fingerprint_mismatch".to_owned())]
    );
}

#[tokio::test]
async fn the_python_mcp_client_diagnoses_starts_a_run_and_cannot_approve() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = [("langgraph", "agent", AGENT)];
    let service =
        ServiceProcess::start_lab(dir.path(), "cert-mismatch", ADMIN, &tokens, "", &[]).await;
    let seen = agent_flow(&service, "python-venv", "mcp_agent_flow.py").await;
    assert_eq!(seen["server"], "runbookd");
    assert_the_agent_flow(&seen);
    assert_nothing_decided(service, dir.path(), &seen).await;
}

#[tokio::test]
async fn langchains_mcp_adapters_diagnose_start_a_run_and_cannot_approve() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = [("langgraph", "agent", AGENT)];
    let service =
        ServiceProcess::start_lab(dir.path(), "cert-mismatch", ADMIN, &tokens, "", &[]).await;
    let seen = agent_flow(&service, "python-venv-langchain", "langchain_agent_flow.py").await;
    // No alert came in: the agent starts the run itself.
    assert_eq!(seen["incidents"], serde_json::json!([]), "{seen:#}");
    assert_the_agent_flow(&seen);
    assert_nothing_decided(service, dir.path(), &seen).await;
}
