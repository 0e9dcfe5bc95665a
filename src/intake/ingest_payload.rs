//! The flat IngestPayload of the existing pipeline: the alert-forwarder CronJob
//! (reference/ingest-pbs-forwarder.json) and manual posts (reference/ingest-generic.json).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::fingerprint::fingerprint;
use super::{
    Alert, AlertName, AlertStatus, Annotations, Delivery, IntakeError, Labels, Severity, Source, at,
};

/// The annotation that carries a failed task's error text, for the diagnosis to read.
pub const FAILURE_ANNOTATION: &str = "failure";

#[derive(Debug, Deserialize)]
pub(super) struct IngestPayload {
    alert_name: String,
    description: Option<String>,
    severity: Option<String>,
    fingerprint: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    source: Option<String>,
    status: Option<String>,
}

pub(super) fn normalize(
    payload: IngestPayload,
    declared: Option<Source>,
) -> Result<Delivery, IntakeError> {
    let source = match (declared, &payload.source) {
        (Some(source), _) => source,
        (None, Some(named)) => Source::parse(named).map_err(at("source"))?,
        (None, None) => Source::parse("generic").map_err(IntakeError::Invalid)?,
    };
    let name = AlertName::parse(&payload.alert_name).map_err(at("alert_name"))?;
    let severity = Severity::parse(payload.severity.as_deref());
    let status = match &payload.status {
        Some(status) => AlertStatus::parse(status).map_err(at("status"))?,
        None => AlertStatus::Firing,
    };
    let mut labels = payload.labels;
    let mut annotations = payload.annotations;
    // The forwarder names the group only in its text (`PBS backup failed: pbs-datastore:vm/451`,
    // `Worker: pbs-datastore:vm/451`) and the task's failure in `labels.status`.
    super::backup_group::fill_labels(
        &mut labels,
        &[
            &payload.alert_name,
            payload.description.as_deref().unwrap_or_default(),
        ],
    );
    if labels.get("type").map(String::as_str) == Some("backup")
        && let Some(failure) = labels.get("status")
    {
        annotations
            .entry(FAILURE_ANNOTATION.to_owned())
            .or_insert_with(|| failure.clone());
    }
    let labels = Labels::parse(labels).map_err(at("labels"))?;
    if let Some(description) = payload.description {
        annotations
            .entry("description".to_owned())
            .or_insert(description);
    }
    let annotations = Annotations::parse(annotations).map_err(at("annotations"))?;
    let fingerprint =
        fingerprint(payload.fingerprint.as_deref(), &name, &labels).map_err(at("fingerprint"))?;
    Ok(Delivery::one(Alert {
        source,
        name,
        severity,
        status,
        labels,
        annotations,
        starts_at: None,
        ends_at: None,
        fingerprint,
    }))
}
