//! Acceptance 2: the MCP flows through the REST bridge `POST /api/call`, in both envelopes,
//! against the real binary on the cert-mismatch twin; bad arguments get `status: "error"`
//! with a message that says what to change, and change nothing.

use crate::common;

use common::process::ServiceProcess;
use serde_json::{Value, json};

const ADMIN: &str = "bridge-admin-secret-0123456789abcdef";
const AGENT: &str = "bridge-agent-secret-0123456789abcdef";

struct Bridge {
    service: ServiceProcess,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Bridge {
    async fn start(scenario: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tokens = [("langgraph", "agent", AGENT)];
        let service =
            ServiceProcess::start_lab(dir.path(), scenario, ADMIN, &tokens, "", &[]).await;
        Self {
            service,
            client: reqwest::Client::new(),
            _dir: dir,
        }
    }

    /// Posts `body` to /api/call as the agent; the status and the JSON answer.
    async fn call(&self, body: Value) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}/api/call", self.service.address))
            .bearer_auth(AGENT)
            .json(&body)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    async fn get(&self, path: &str) -> Value {
        self.client
            .get(format!("{}{path}", self.service.address))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn the_mcp_flows_work_through_the_bridge_in_both_envelopes() {
    let bridge = Bridge::start("cert-mismatch").await;

    let (status, diagnosis) = bridge
        .call(json!({"tool": "diagnose", "arguments": {}}))
        .await;
    assert_eq!(status, 200, "{diagnosis}");
    assert_eq!(diagnosis["status"], "success");
    assert_eq!(diagnosis["tool"], "diagnose");
    assert_eq!(diagnosis["output"]["cause"], "fingerprint_mismatch");
    let remediation = &diagnosis["output"]["remediation"][0];
    assert_eq!(remediation["step"], "set_storage_fingerprint");
    assert_eq!(remediation["needs_approval"], true);

    // The same call in the params envelope gives the same cause.
    let (status, wrapped) = bridge
        .call(
            json!({"params": {"tool": "diagnose", "arguments": {"playbook": "pbs-backup-stale"}}}),
        )
        .await;
    assert_eq!(status, 200, "{wrapped}");
    assert_eq!(wrapped["output"]["cause"], "fingerprint_mismatch");

    let (status, started) = bridge
        .call(json!({"params": {"tool": "start_remediation", "arguments": {}}}))
        .await;
    assert_eq!(status, 200, "{started}");
    let output = &started["output"];
    assert_eq!(output["state"], "waiting_approval", "{output:#}");
    assert_eq!(output["attached"], false);
    assert_eq!(
        output["pending_approval"]["step"],
        "set_storage_fingerprint"
    );
    assert!(output["note"].as_str().unwrap().contains("cannot approve"));

    // Asking again attaches to the same run instead of starting a second one.
    let (_, again) = bridge
        .call(json!({"tool": "start_remediation", "arguments": {}}))
        .await;
    assert_eq!(again["output"]["run_id"], output["run_id"]);
    assert_eq!(again["output"]["attached"], true);

    let (_, pending) = bridge.call(json!({"tool": "list_pending_approvals"})).await;
    let approvals = pending["output"]["approvals"].as_array().unwrap();
    assert_eq!(approvals.len(), 1);
    assert_eq!(approvals[0]["id"], output["pending_approval"]["id"]);

    let (_, incidents) = bridge.call(json!({"tool": "list_incidents"})).await;
    assert_eq!(incidents["status"], "success");
    let (_, explained) = bridge.call(json!({"tool": "explain_playbook"})).await;
    let causes: Vec<&str> = explained["output"]["causes_in_order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(causes.first(), Some(&"nothing_stale"));
    assert!(causes.contains(&"fingerprint_mismatch"));
    let cause = |id: &str| {
        explained["output"]["causes_in_order"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(cause("nfs_mount_missing")["approval"], "once");
    let restart = &cause("stale_nfs_handles")["remediate"][0];
    assert_eq!(restart["step"], "restart_pbs");
    assert_eq!(restart["guard"]["requires"][0]["probe"], "vzdump_running");
    assert_eq!(restart["guard"]["mute"], json!(["change_freeze"]));
    assert_eq!(restart["approval_window_seconds"], 3600);
    let (status, backups) = bridge.call(json!({"tool": "get_backup_status"})).await;
    assert_eq!(status, 200, "{backups}");
    let stale: Vec<&str> = backups["output"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["stale"] == true)
        .map(|g| g["group"].as_str().unwrap())
        .collect();
    assert!(stale.contains(&"vm/451"), "{backups:#}");

    // The agent cancels; its pending approval goes with the run, and a second cancel says so.
    let run_id = output["run_id"].clone();
    let (status, cancelled) = bridge
        .call(json!({"tool": "cancel_run", "arguments": {"run_id": run_id, "reason": "human is on it"}}))
        .await;
    assert_eq!(status, 200, "{cancelled}");
    let run = bridge.get(&format!("/api/v1/runs/{run_id}")).await;
    assert_eq!(run["run"]["state"], "cancelled");
    assert_eq!(run["approvals"][0]["status"], "cancelled");
    let (status, twice) = bridge
        .call(json!({"tool": "cancel_run", "arguments": {"run_id": run_id}}))
        .await;
    assert_eq!(status, 409, "{twice}");
    assert_eq!(twice["status"], "error");
    assert!(bridge.service.terminate().await.success());
}

#[tokio::test]
async fn bad_calls_get_status_error_with_a_useful_message_and_change_nothing() {
    let bridge = Bridge::start("cert-mismatch").await;
    let cases: [(Value, u16, &str); 14] = [
        (
            json!({"tool": "get_incident", "arguments": {"incident_id": "seven"}}),
            400,
            "get_incident: argument 'incident_id': invalid type: string \"seven\", expected i64",
        ),
        (
            json!({"tool": "get_incident", "arguments": {}}),
            400,
            "missing field `incident_id`",
        ),
        (
            json!({"tool": "get_incident", "arguments": {"incident_id": 99}}),
            404,
            "there is no incident 99",
        ),
        (
            json!({"tool": "start_remediation", "arguments": {"playbok": "x"}}),
            400,
            "unknown field `playbok`",
        ),
        // The same refusal, and status, as POST /api/v1/runs gives.
        (
            json!({"tool": "start_remediation", "arguments": {"playbook": "nope"}}),
            422,
            "there is no playbook 'nope' (known: pbs-backup-stale)",
        ),
        (
            json!({"tool": "diagnose", "arguments": {"playbook": "nope"}}),
            422,
            "there is no playbook 'nope' (known: pbs-backup-stale)",
        ),
        (
            json!({"tool": "diagnose", "arguments": {"labels": {"vm_id": "$(reboot)"}}}),
            422,
            "label 'vm_id'",
        ),
        (
            json!({"tool": "start_remediation", "arguments": {"labels": {"backup_id": "451; rm -rf /"}}}),
            422,
            "label 'backup_id'",
        ),
        (
            json!({"tool": "list_incidents", "arguments": {"limit": 1000}}),
            400,
            "'limit' must be between 1 and 100",
        ),
        (
            json!({"tool": "list_incidents", "arguments": [1, 2]}),
            400,
            "arguments must be a JSON object",
        ),
        (
            json!({"tool": "cancel_run", "arguments": {"run_id": 1, "reason": "a\u{0}b"}}),
            400,
            "'reason' must be at most 500 characters of text",
        ),
        (
            json!({"tool": "approve", "arguments": {"approval_id": 1}}),
            404,
            "there is no tool 'approve'",
        ),
        (json!({"arguments": {}}), 400, "the body must be"),
        (
            json!({"tool": "diagnose", "arguments": {}, "extra": 1}),
            400,
            "with no other fields",
        ),
    ];
    for (body, want_status, want_message) in cases {
        let (status, answer) = bridge.call(body.clone()).await;
        assert_eq!(status, want_status, "{body} → {answer}");
        assert_eq!(answer["status"], "error", "{body} → {answer}");
        let message = answer["error"].as_str().unwrap();
        assert!(
            message.contains(want_message),
            "{body}: {message:?} should mention {want_message:?}"
        );
    }
    // Not JSON at all, and JSON with the wrong content type, in the same shape.
    let response = bridge
        .client
        .post(format!("{}/api/call", bridge.service.address))
        .bearer_auth(AGENT)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["status"], "error");

    // None of it started a run or touched an incident.
    let incidents = bridge.get("/api/v1/incidents").await;
    assert_eq!(incidents["incidents"], json!([]));
    let run = bridge
        .client
        .get(format!("{}/api/v1/runs/1", bridge.service.address))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(run.status(), 404);
    assert!(bridge.service.terminate().await.success());
}
