//! `runbookd demo`: the whole story in a terminal, against the twin. An Alertmanager alert
//! arrives, the run diagnoses, names the cause with its evidence, remediates, verifies (canary,
//! full backup, fresh groups) and ends; progress is printed as it happens, in the audit
//! trail's sentences, then the incident's story told from its trail in chapters.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use crate::audit_story::sentence;
use crate::auth::{Role, Token, TokenSecret, TokenTable};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, Notify, Overrides};
use crate::engine::estate::Estate;
use crate::engine::worker::Progress;
use crate::intake;
use crate::lab::RunningLab;
use crate::startup::{Application, EngineParts};
use crate::store::approvals::{ApprovalStatus, Decision};
use crate::store::audit::{AuditAction, AuditDetail};
use crate::store::runs::RunState;

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
    let secret = TokenSecret::parse(DEMO_SECRET)?;
    let tokens = TokenTable::new(vec![Token::new("alertmanager", Role::Ingest, &secret)]);
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
            if shown_as_progress(event.action) {
                writeln!(
                    out,
                    "  {} {}",
                    event.at.format("%H:%M:%S%.3f"),
                    sentence(&event.actor, &event.detail)
                )?;
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
                    "  waiting for approval {} ({} risk); the demo approves it",
                    approval.id, approval.risk
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
    let outcome = ending
        .outcome
        .as_ref()
        .map(|o| o.0.clone())
        .unwrap_or_default();
    writeln!(
        out,
        "run {run_id} {}: {}",
        ending.state.as_str(),
        outcome["reason"]
            .as_str()
            .unwrap_or("every step done, the backups are fresh")
    )?;

    let progress = Progress::decode(&ending.facts.0).unwrap_or_default();
    let verify_from = progress.plan.get(progress.remediation_len).cloned();
    writeln!(out, "\nthe story of incident {incident}:")?;
    let mut current = Chapter::Alert;
    let mut titled = None;
    for event in store.incident_timeline(incident, 1000).await? {
        let detail = &event.detail;
        // The chapter this event is told in, and the one the events after it are.
        let (this, after) = match detail {
            AuditDetail::RunLeased(_) if current == Chapter::Alert => {
                (Chapter::Diagnosis, Chapter::Diagnosis)
            }
            AuditDetail::RunAdvanced(moved)
                if moved.step.is_some() && moved.step == verify_from =>
            {
                (current, Chapter::Verification)
            }
            AuditDetail::RunAdvanced(moved) if moved.cause.is_some() => (current, Chapter::Fix),
            AuditDetail::RunFinished(_) => (Chapter::End, Chapter::End),
            _ => (current, current),
        };
        if told_in_story(detail) {
            if titled != Some(this) {
                writeln!(out, "  {}", this.title())?;
                titled = Some(this);
            }
            writeln!(
                out,
                "    {} {}",
                event.at.format("%H:%M:%S"),
                sentence(&event.actor, detail)
            )?;
        }
        current = after;
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

/// Whether the run's progress shows this event: what the run does, not its bookkeeping.
fn shown_as_progress(action: AuditAction) -> bool {
    !matches!(
        action,
        AuditAction::ActionAllowed | AuditAction::NotifyAttempt | AuditAction::NotifySkipped
    )
}

/// Whether the closing story tells this event: a step's start is told by its end (which names
/// the command), and moving to the next step by the step that finished.
fn told_in_story(detail: &AuditDetail) -> bool {
    match detail {
        AuditDetail::StepStarted(_)
        | AuditDetail::ActionAllowed(_)
        | AuditDetail::NotifyAttempt(_)
        | AuditDetail::NotifySkipped(_) => false,
        AuditDetail::RunAdvanced(moved) => {
            moved.cause.is_some() || moved.state == Some(RunState::Pending)
        }
        AuditDetail::RunLeased(leased) => !leased.resumed,
        _ => true,
    }
}

/// The parts of the closing story.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chapter {
    Alert,
    Diagnosis,
    Fix,
    Verification,
    End,
}

impl Chapter {
    fn title(self) -> &'static str {
        match self {
            Self::Alert => "The alert",
            Self::Diagnosis => "Diagnosis",
            Self::Fix => "The fix",
            Self::Verification => "Verification",
            Self::End => "The end",
        }
    }
}
