//! The whole story through the real binary: `runbookd serve --lab stale-nfs`, an Alertmanager
//! post, and the run that follows: diagnosis, restart, canary, full backup, fresh groups,
//! resolved; a repeat of the alert attaches to the run; a resolve during a finished run changes
//! nothing.

use crate::common;

use std::time::Duration;

use common::eventually;
use common::process::ServiceProcess;
use common::reference;
use serde_json::Value;

const ADMIN: &str = "serve-lab-admin-secret-0123456789";

#[tokio::test]
async fn an_alert_becomes_a_resolved_run_on_the_twin() {
    let dir = tempfile::tempdir().unwrap();
    let service = ServiceProcess::start_lab(dir.path(), "stale-nfs", ADMIN, &[], "", &[]).await;
    let client = reqwest::Client::new();
    let first = service.post_reference_alert(ADMIN).await;
    let run_id = first["run_id"].as_i64().expect("the alert started a run");
    let repeat = service.post_reference_alert(ADMIN).await;
    assert_eq!(repeat["run_id"], run_id, "a repeat attaches to the run");

    let run = eventually("the run to end", Duration::from_secs(90), || async {
        let detail = common::fetch_json(
            &client,
            &format!("{}/api/v1/runs/{run_id}", service.address),
            ADMIN,
        )
        .await?;
        let state = detail["run"]["state"].as_str()?.to_owned();
        (state == "resolved" || state == "escalated").then_some(detail)
    })
    .await;
    assert_eq!(run["run"]["state"], "resolved", "{run:#}");
    assert_eq!(run["run"]["outcome"]["cause"], "stale_nfs_handles");
    let steps: Vec<&str> = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "restart_pbs",
            "check_pbs_active",
            "canary_backup",
            "full_backup",
            "groups_fresh"
        ]
    );
    assert_eq!(
        run["steps"][0]["command"],
        "systemctl restart proxmox-backup proxmox-backup-proxy"
    );
    assert_eq!(run["steps"][0]["exit_status"], 0);
    let actions: Vec<&str> = run["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions.first(), Some(&"run.created"));
    // The run ends, and its verified fix resolves the incident it covers.
    assert_eq!(
        actions[actions.len() - 2..],
        ["run.finished", "incident.run_resolved"]
    );
    assert!(actions.contains(&"control.allowed"), "{actions:?}");

    // The incident's detail carries the same run with its steps.
    let incident_id = first["incident_id"].as_i64().unwrap();
    let incident: Value = client
        .get(format!(
            "{}/api/v1/incidents/{incident_id}",
            service.address
        ))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        incident["runs"].as_array().unwrap().len(),
        1,
        "{incident:#}"
    );
    assert_eq!(incident["runs"][0]["run"]["id"], run_id);
    assert_eq!(incident["runs"][0]["steps"], run["steps"]);
    // Its timeline tells the whole story: the alerts and the run's own events.
    let incident_actions: Vec<&str> = incident["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for action in [
        "incident.opened",
        "run.created",
        "step.finished",
        "run.finished",
    ] {
        assert!(
            incident_actions.contains(&action),
            "{action}: {incident_actions:?}"
        );
    }
    // And the list says where each incident's newest run stands, without a detail per row.
    let list: Value = client
        .get(format!("{}/api/v1/incidents", service.address))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let latest = &list["incidents"][0]["latest_run"];
    assert_eq!(latest["id"], run_id, "{list:#}");
    assert_eq!(latest["state"], "resolved");
    assert_eq!(latest["cause"], "stale_nfs_handles");
    assert!(service.terminate().await.success());
}

async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<&str>,
    key: Option<&str>,
) -> (u16, Value) {
    let mut request = client.request(method, url).bearer_auth(ADMIN);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn runs_by_hand_approvals_and_cancel_over_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let service = ServiceProcess::start_lab(dir.path(), "nfs-unmounted", ADMIN, &[], "", &[]).await;
    let client = reqwest::Client::new();
    let base = service.address.clone();
    let start =
        r#"{"playbook":"pbs-backup-stale","labels":{"backup_type":"vm","backup_id":"451"}}"#;

    let (status, first) = call(
        &client,
        reqwest::Method::POST,
        format!("{base}/api/v1/runs"),
        Some(start),
        Some("key-1"),
    )
    .await;
    assert_eq!(status, 201, "{first}");
    let (status, again) = call(
        &client,
        reqwest::Method::POST,
        format!("{base}/api/v1/runs"),
        Some(start),
        Some("key-1"),
    )
    .await;
    assert_eq!(
        (status, &again),
        (201, &first),
        "a retry gets the first answer"
    );
    let (status, _) = call(
        &client,
        reqwest::Method::POST,
        format!("{base}/api/v1/runs"),
        Some(r#"{"playbook":"pbs-backup-stale"}"#),
        Some("key-1"),
    )
    .await;
    assert_eq!(status, 409, "the key was used for another request");
    let (status, body) = call(
        &client,
        reqwest::Method::POST,
        format!("{base}/api/v1/runs"),
        Some(r#"{"playbook":"nope"}"#),
        None,
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let run_id = first["run_id"].as_i64().unwrap();

    let pending = |step: &'static str| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            eventually(
                &format!("an approval for {step}"),
                Duration::from_secs(60),
                || async {
                    let (_, list) = call(
                        &client,
                        reqwest::Method::GET,
                        format!("{base}/api/v1/approvals?status=pending"),
                        None,
                        None,
                    )
                    .await;
                    list.as_array()?
                        .iter()
                        .find(|a| a["step"] == step)
                        .map(|a| a["id"].as_i64().unwrap())
                },
            )
            .await
        }
    };
    // The remount asks once, for all of its commands.
    let approval = pending("lazy_unmount").await;
    let (status, rejected) = call(
        &client,
        reqwest::Method::POST,
        format!("{base}/api/v1/approvals/{approval}/reject"),
        Some(r#"{"comment":"not at 3 am"}"#),
        None,
    )
    .await;
    assert_eq!(
        (status, rejected["approval"]["status"].as_str()),
        (200, Some("rejected"))
    );
    let (_, run) = call(
        &client,
        reqwest::Method::GET,
        format!("{base}/api/v1/runs/{run_id}"),
        None,
        None,
    )
    .await;
    assert_eq!(run["run"]["state"], "escalated");
    assert_eq!(run["run"]["outcome"]["comment"], "not at 3 am");

    let (_, second) = call(
        &client,
        reqwest::Method::POST,
        format!("{base}/api/v1/runs"),
        Some(start),
        None,
    )
    .await;
    let second = second["run_id"].as_i64().unwrap();
    let (status, _) = call(
        &client,
        reqwest::Method::POST,
        format!("{base}/api/v1/runs/{second}/cancel"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(
        &client,
        reqwest::Method::POST,
        format!("{base}/api/v1/runs/{second}/cancel"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 409, "cancelling twice");

    let (_, third) = call(
        &client,
        reqwest::Method::POST,
        format!("{base}/api/v1/runs"),
        Some(start),
        None,
    )
    .await;
    assert!(third["run_id"].as_i64().unwrap() > second);
    let approval = pending("lazy_unmount").await;
    let url = format!("{base}/api/v1/approvals/{approval}/approve");
    let (a, b) = tokio::join!(
        call(
            &client,
            reqwest::Method::POST,
            url.clone(),
            Some(r#"{"comment":"go"}"#),
            None
        ),
        call(&client, reqwest::Method::POST, url.clone(), None, None)
    );
    assert_eq!((a.0, b.0), (200, 200));
    assert_eq!(
        [a.1["decided_now"].as_bool(), b.1["decided_now"].as_bool()]
            .iter()
            .filter(|d| **d == Some(true))
            .count(),
        1,
        "two approvals at once give one decision"
    );
    assert_eq!(a.1["approval"]["decided_by"], "env-admin");
    assert!(service.terminate().await.success());
}

#[tokio::test]
async fn duplicates_start_nothing_new_and_a_resolve_during_diagnosis_cancels_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let service = ServiceProcess::start_lab(dir.path(), "stale-nfs", ADMIN, &[], "", &[]).await;
    let control = service
        .log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|e| e["control"].as_str().map(str::to_owned))
        .unwrap();
    let client = reqwest::Client::new();
    // Slow PBS commands keep the run in diagnosis for a while.
    assert!(
        client
            .put(format!("{control}/latency/pbs?ms=10000"))
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );

    let firing = reference("alertmanager-v4.json");
    let post = |body: String| {
        let client = client.clone();
        let url = format!("{}/webhook/alertmanager", service.address);
        async move {
            let response = client
                .post(url)
                .bearer_auth(ADMIN)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 202);
            response.json::<Value>().await.unwrap()["incidents"][0].clone()
        }
    };
    // An alert no playbook matches is recorded, not run.
    let unmatched = client
        .post(format!("{}/ingest", service.address))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(r#"{"alert_name":"DiskFull","labels":{"host":"pbs"}}"#)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert!(unmatched["incidents"][0]["incident_id"].is_i64());
    assert_eq!(unmatched["incidents"][0]["run_id"], Value::Null);

    let first = post(firing.clone()).await;
    let run_id = first["run_id"].as_i64().unwrap();
    // 200 duplicates, 20 at a time: few enough to land inside the slow diagnosis on a busy
    // machine.
    for _ in 0..10 {
        let batch = futures::future::join_all((0..20).map(|_| post(firing.clone()))).await;
        assert!(
            batch
                .iter()
                .all(|r| r["run_id"] == run_id && r["deduplicated"] == true)
        );
    }
    let runs: i64 = {
        use sqlx::{ConnectOptions, Connection};
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.path().join("data/runbookd.db"))
            .connect()
            .await
            .unwrap();
        let count = sqlx::query_scalar("SELECT COUNT(*) FROM runs")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        count
    };
    assert_eq!(runs, 1, "200 duplicates started nothing new");

    let run = get_run(&client, &service.address, run_id).await;
    assert_eq!(run["run"]["step"], Value::Null, "still diagnosing");
    let resolved = post(firing.replace("\"firing\"", "\"resolved\"")).await;
    assert_eq!(resolved["run_id"], run_id);
    let run = get_run(&client, &service.address, run_id).await;
    assert_eq!(run["run"]["state"], "cancelled");
    assert_eq!(
        run["run"]["outcome"]["reason"],
        "the alert's source resolved it"
    );
    assert!(service.terminate().await.success());
}

async fn get_run(client: &reqwest::Client, address: &str, run_id: i64) -> Value {
    client
        .get(format!("{address}/api/v1/runs/{run_id}"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
