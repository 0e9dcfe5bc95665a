//! The engine's front door for the HTTP layer: which playbook an alert routes to, runs asked
//! for by hand (the REST API and the agent's tools), and the executors the read-only tools use.
//! Alerts reach runs through [`super::intake`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::worker::Progress;
use crate::intake::{Alert, Labels};
use crate::playbook::matcher::Route;
use crate::playbook::{Playbook, PlaybookFile, PlaybookVersion};
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
    /// The text each playbook (by name) was loaded from: a new run pins it.
    pub versions: BTreeMap<String, PlaybookVersion>,
    /// Wakes the engine's worker when there may be work for it (a run created, an approval
    /// decided, resume, cancel), so it does not wait for its next look.
    pub wake: std::sync::Arc<tokio::sync::Notify>,
    /// The same executors the worker uses.
    pub estate: std::sync::Arc<super::estate::Estate>,
    /// Each playbook's triggers, compiled once: (index into `playbooks`, route).
    routes: Vec<(usize, Route)>,
}

impl Dispatcher {
    /// Compiles every playbook's triggers. Playbooks that passed `check` always compile.
    pub fn new(
        files: &[PlaybookFile],
        estate: std::sync::Arc<super::estate::Estate>,
        wake: std::sync::Arc<tokio::sync::Notify>,
    ) -> Result<Self, String> {
        let playbooks: Vec<Playbook> = files.iter().map(|f| f.playbook.clone()).collect();
        let mut routes = Vec::new();
        for (index, playbook) in playbooks.iter().enumerate() {
            for trigger in &playbook.triggers {
                let route = trigger
                    .route()
                    .map_err(|e| format!("playbook '{}': trigger: {e}", playbook.name))?;
                routes.push((index, route));
            }
        }
        Ok(Self {
            playbooks,
            versions: files
                .iter()
                .map(|f| (f.playbook.name.clone(), f.version.clone()))
                .collect(),
            wake,
            estate,
            routes,
        })
    }

    /// Tells the worker there may be work.
    pub fn wake_worker(&self) {
        self.wake.notify_one();
    }

    /// The text `playbook` was loaded from: a new run pins it.
    pub fn version(&self, playbook: &Playbook) -> Result<&PlaybookVersion, RunError> {
        self.versions
            .get(&playbook.name)
            .ok_or_else(|| RunError::Unpinned(playbook.name.clone()))
    }

    /// The playbook whose trigger matches the alert (the first, in file order) with the text a
    /// new run pins, or why none.
    pub fn route(&self, alert: &Alert) -> Result<(&Playbook, &PlaybookVersion), String> {
        self.routes
            .iter()
            .find(|(_, route)| route.matches(alert))
            .and_then(|(index, _)| {
                let playbook = &self.playbooks[*index];
                Some((playbook, self.versions.get(&playbook.name)?))
            })
            .ok_or_else(|| {
                format!(
                    "no playbook's trigger matches alertname={:?} source={:?} (playbooks: {})",
                    alert.name.as_str(),
                    alert.source.as_str(),
                    self.playbooks
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
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
            version: self.version(playbook)?,
            target: &playbook.target,
            dry_run: request.dry_run,
            actor: request.actor,
            facts: json!(Progress::start(request.labels.clone())),
        };
        let created = store.create_run(run, now).await?;
        if let Created::New(_) = created {
            self.wake.notify_one();
        }
        Ok(created)
    }
}
