//! `runbookd demo`: the whole story in a terminal, against the twin. An Alertmanager alert
//! arrives, the run diagnoses, names the cause with its evidence, remediates, verifies (canary,
//! full backup, fresh groups) and ends; progress is printed as it happens, then the timeline.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use crate::auth::{Role, Token, TokenTable};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, Notify, Overrides};
use crate::engine::estate::Estate;
use crate::intake;
use crate::lab::RunningLab;
use crate::startup::{Application, EngineParts};
use crate::store::approvals::{ApprovalStatus, Decision};

/// The Alertmanager notification the demo sends (reference/alertmanager-v4.json).
const ALERT: &str = include_str!("../tests/fixtures/reference/alertmanager-v4.json");
const DEMO_SECRET: &str = "demo-ingest-secret-not-for-production";

/// Runs the story for `scenario`, printing to `out`. Approvals are granted by "demo" after a
/// pause, so the story can go on; a real run would wait for a human.
pub async fn run(
    scenario: &str,
    playbooks_dir: Option<&Path>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("cannot create a directory for the demo")?;
    let lab = RunningLab::launch(&dir.path().join("lab"), scenario).await?;
    let (lab_config, source) = Config::load(Some(&lab.config), &Overrides::default())
        .map_err(|p| anyhow::anyhow!("{p:?}"))?;
    let inventory = lab_config
        .resolve_inventory(&source, &|_| None)
        .map_err(|p| anyhow::anyhow!("{p:?}"))?;
    let playbooks = crate::playbook::builtin::load(playbooks_dir)
        .map_err(|p| anyhow::anyhow!("the playbooks are invalid: {p:?}"))?;
    let mut config = Config {
        listen: "127.0.0.1:0".parse()?,
        ..Config::default()
    };
    config.database.path = dir.path().join("runbookd.db");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let tokens = TokenTable::new(vec![Token::new("alertmanager", Role::Ingest, DEMO_SECRET)]);
    let engine = EngineParts {
        playbooks,
        estate: Arc::new(Estate::connect(&inventory)?),
    };
    let app =
        Application::build(&config, tokens, Notify::off(), clock.clone(), Some(engine)).await?;
    let store = app.store().clone();
    let address = app.local_addr();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut server_stop = stop_rx;
    let server = tokio::spawn(app.run_until(async move {
        let _ = server_stop.changed().await;
    }));

    writeln!(
        out,
        "runbookd demo: scenario {scenario}, the simulated estate on loopback"
    )?;
    let delivery = intake::parse(ALERT.as_bytes(), None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let alert = delivery
        .alerts()
        .next()
        .ok_or_else(|| anyhow::anyhow!("the demo alert is refused"))?;
    writeln!(
        out,
        "alert → {} {} (fingerprint {}), posted to http://{address}/webhook/alertmanager",
        alert.name.as_str(),
        labels_line(alert),
        alert.fingerprint.as_str()
    )?;
    let response: Value = reqwest::Client::new()
        .post(format!("http://{address}/webhook/alertmanager"))
        .bearer_auth(DEMO_SECRET)
        .header("content-type", "application/json")
        .body(ALERT)
        .send()
        .await?
        .json()
        .await?;
    let entry = &response["incidents"][0];
    let (Some(incident), Some(run_id)) = (entry["incident_id"].as_i64(), entry["run_id"].as_i64())
    else {
        anyhow::bail!("the alert started no run: {response}");
    };
    writeln!(
        out,
        "incident {incident} opened; run {run_id} of playbook pbs-backup-stale started"
    )?;

    let mut shown = 0;
    let ending = loop {
        let events = store.run_timeline(run_id, 1000).await?;
        for event in &events[shown..] {
            if let Some(line) = describe(&event.action, &event.detail.0) {
                writeln!(out, "  {} {line}", event.at.format("%H:%M:%S%.3f"))?;
            }
        }
        shown = events.len();
        let run = store.run(run_id).await?.context("the run disappeared")?;
        if run.state.is_final() {
            break run;
        }
        for approval in store.approvals_for_run(run_id).await? {
            if approval.status == ApprovalStatus::Pending {
                writeln!(
                    out,
                    "  waiting for approval {} of `{}` ({} risk); the demo approves it",
                    approval.id, approval.command, approval.risk
                )?;
                tokio::time::sleep(Duration::from_millis(800)).await;
                store
                    .decide(
                        approval.id,
                        Decision::Approve,
                        "demo",
                        Some("approved by runbookd demo"),
                        clock.now(),
                    )
                    .await?;
            }
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    };
    let outcome = ending.outcome.map(|o| o.0).unwrap_or_default();
    writeln!(
        out,
        "run {run_id} {}: {}",
        ending.state.as_str(),
        outcome["reason"]
            .as_str()
            .unwrap_or("every step done, the backups are fresh")
    )?;

    writeln!(out, "\ntimeline of incident {incident}:")?;
    for event in store.incident_timeline(incident, 1000).await? {
        writeln!(
            out,
            "  {} {:<26} {}",
            event.at.format("%H:%M:%S%.3f"),
            event.action,
            event.actor
        )?;
    }
    writeln!(out, "timeline of run {run_id}:")?;
    for event in store.run_timeline(run_id, 1000).await? {
        writeln!(
            out,
            "  {} {:<26} {}",
            event.at.format("%H:%M:%S%.3f"),
            event.action,
            event.actor
        )?;
    }
    let _ = stop_tx.send(true);
    let _ = server.await;
    drop(lab);
    Ok(())
}

fn labels_line(alert: &intake::Alert) -> String {
    alert
        .labels
        .iter()
        .filter(|(k, _)| *k != "alertname")
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One progress line for an audit event of the run.
fn describe(action: &str, detail: &Value) -> Option<String> {
    Some(match action {
        "run.leased" => {
            "diagnosis: probing PBS, NFS, certificates, guests and logs in parallel".to_owned()
        }
        "run.advanced" => match detail["reason"].as_str() {
            Some(reason) if reason.starts_with("cause ") => format!(
                "{reason}\n               next: {}",
                detail["step"].as_str().unwrap_or_default()
            ),
            Some(reason) => format!(
                "{reason}; next: {}",
                detail["step"].as_str().unwrap_or_default()
            ),
            None => return None,
        },
        "step.started" => format!(
            "step {}: {} {}",
            detail["step"].as_str()?,
            detail["host"]
                .as_str()
                .map(|h| format!("on {h}:"))
                .unwrap_or_default(),
            detail["command"].as_str()?
        ),
        "step.finished" => match (&detail["exit_status"], detail["error"].as_str()) {
            (_, Some(error)) => format!("  failed: {error}"),
            (Value::Number(exit), None) => format!("  done, exit {exit}"),
            _ => "  done".to_owned(),
        },
        "control.blocked" => format!("safety control: {}", detail["reason"].as_str()?),
        "approval.requested" => format!("approval requested for {}", detail["step"].as_str()?),
        "approval.decided" => format!(
            "approval {} {}",
            detail["approval_id"],
            detail["decision"].as_str().unwrap_or("decided")
        ),
        "run.finished" => format!("run ended: {}", detail["state"].as_str()?),
        _ => return None,
    })
}
