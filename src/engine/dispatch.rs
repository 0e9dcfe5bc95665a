//! From intake to runs: an alert that opens an incident starts the matching playbook's run
//! (one active run per target: a second alert for the same target attaches to it); a resolved
//! alert cancels its incident's run, unless the run is already verifying a fix.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::worker::Progress;
use crate::intake::{Alert, Labels};
use crate::playbook::Playbook;
use crate::store::Store;
use crate::store::runs::{Created, NewRun, RunError};

/// A run asked for by hand (`POST /api/v1/runs`, the `start_remediation` tool).
#[derive(Debug, Clone)]
pub struct HandStart<'a> {
    pub playbook: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub dry_run: bool,
    /// The caller's token name.
    pub actor: &'a str,
}

/// Why a run asked for by hand was not started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("there is no playbook '{name}' (known: {})", known.join(", "))]
    UnknownPlaybook { name: String, known: Vec<String> },
    #[error("labels: {0}")]
    InvalidLabels(String),
    #[error(transparent)]
    Run(#[from] RunError),
}

/// The engine's front door for the HTTP layer: which playbooks exist, how to wake the worker,
/// and the executors that read-only tools (diagnose, backup status) use.
pub struct Dispatcher {
    pub playbooks: Vec<Playbook>,
    /// Wakes the engine's worker when a run is created, so it does not wait for its next look.
    pub wake: std::sync::Arc<tokio::sync::Notify>,
    /// The same executors the worker uses.
    pub estate: std::sync::Arc<super::estate::Estate>,
}

impl Dispatcher {
    /// The playbook whose trigger matches the alert.
    pub fn playbook_for(&self, alert: &Alert) -> Option<&Playbook> {
        self.playbooks.iter().find(|p| {
            p.triggers.iter().any(|t| {
                let named = t.alertname.as_deref() == Some(alert.name.as_str())
                    || t.check_name.as_deref() == Some(alert.name.as_str());
                named
                    && t.source
                        .as_deref()
                        .is_none_or(|s| s == alert.source.as_str())
            })
        })
    }

    /// Starts (or attaches to) the run for a newly opened incident. `None`: no playbook
    /// matches, and the incident is only recorded.
    pub async fn start(
        &self,
        store: &Store,
        incident_id: i64,
        alert: &Alert,
        now: DateTime<Utc>,
    ) -> Result<Option<i64>, RunError> {
        let Some(playbook) = self.playbook_for(alert) else {
            return Ok(None);
        };
        let labels: std::collections::BTreeMap<String, String> = alert
            .labels
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let run = NewRun {
            incident_id: Some(incident_id),
            playbook: &playbook.name,
            target: &playbook.target,
            dry_run: false,
            actor: "engine",
            facts: json!({"labels": labels}),
        };
        Ok(Some(match store.create_run(run, now).await? {
            Created::New(id) => {
                self.wake.notify_one();
                id
            }
            Created::AlreadyActive(id) => id,
        }))
    }

    /// The playbook called `name`, or the only one when `name` is omitted.
    pub fn playbook(&self, name: Option<&str>) -> Result<&Playbook, StartError> {
        let unknown = |name: &str| StartError::UnknownPlaybook {
            name: name.escape_debug().to_string(),
            known: self.playbooks.iter().map(|p| p.name.clone()).collect(),
        };
        match name {
            Some(name) => self
                .playbooks
                .iter()
                .find(|p| p.name == name)
                .ok_or_else(|| unknown(name)),
            None => match self.playbooks.as_slice() {
                [only] => Ok(only),
                _ => Err(unknown("(none given)")),
            },
        }
    }

    /// `labels` as the alert labels they stand for, checked against `playbook`'s parameters,
    /// so a bad label is refused before anything reaches a host.
    pub fn labels(
        &self,
        playbook: &Playbook,
        labels: &BTreeMap<String, String>,
    ) -> Result<Labels, StartError> {
        let labels =
            Labels::parse(labels.clone()).map_err(|e| StartError::InvalidLabels(e.to_string()))?;
        super::scope::parameters(playbook, &self.estate, &labels)
            .map_err(StartError::InvalidLabels)?;
        Ok(labels)
    }

    /// Starts (or attaches to) a run of `playbook` asked for by a person or the agent, with
    /// `labels` as an alert would carry them. Labels are parsed as the playbook's parameters
    /// before anything is stored, so a bad label changes nothing.
    pub async fn start_by_hand(
        &self,
        store: &Store,
        request: HandStart<'_>,
        now: DateTime<Utc>,
    ) -> Result<Created, StartError> {
        let playbook = self.playbook(Some(request.playbook))?;
        self.labels(playbook, request.labels)?;
        let run = NewRun {
            incident_id: None,
            playbook: &playbook.name,
            target: &playbook.target,
            dry_run: request.dry_run,
            actor: request.actor,
            facts: json!({"labels": request.labels}),
        };
        let created = store.create_run(run, now).await?;
        if let Created::New(_) = created {
            self.wake.notify_one();
        }
        Ok(created)
    }

    /// Cancels the incident's active run when its source resolved it, unless the run is
    /// verifying (a fix is in flight: let it finish). Returns the run it cancelled.
    pub async fn source_resolved(
        &self,
        store: &Store,
        incident_id: i64,
        now: DateTime<Utc>,
    ) -> Result<Option<i64>, RunError> {
        let Some(run) = store.active_run_for_incident(incident_id).await? else {
            return Ok(None);
        };
        let progress: Progress = serde_json::from_value(run.facts.0.clone()).unwrap_or_default();
        let verifying = run
            .step
            .as_ref()
            .and_then(|step| progress.plan.iter().position(|s| s == step))
            .is_some_and(|position| position >= progress.remediation_len);
        if verifying {
            return Ok(None);
        }
        match store
            .cancel_run(run.id, "engine", "the alert's source resolved it", now)
            .await
        {
            Ok(()) => Ok(Some(run.id)),
            Err(RunError::Final { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }
}
