//! A finding from the periodic sweep (reference/error-hunter-finding.json).
//!
//! The finding's text `evidence` becomes labels next to `check_category`, `cluster` and
//! `resource`, so playbooks read `datastore` or `group` the same way whatever the source;
//! numeric evidence becomes annotations. Nested evidence stays in the kept raw body.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::fingerprint::fingerprint;
use super::{
    Alert, AlertName, AlertStatus, Annotations, Delivery, IntakeError, Labels, Severity, Source, at,
};

#[derive(Debug, Deserialize)]
pub(super) struct Finding {
    check_name: String,
    check_category: Option<String>,
    cluster: Option<String>,
    resource: Option<String>,
    severity: Option<String>,
    description: Option<String>,
    #[serde(default)]
    evidence: serde_json::Map<String, Value>,
    fingerprint: Option<String>,
    suggested_fix: Option<String>,
}

pub(super) fn normalize(
    finding: Finding,
    declared: Option<Source>,
) -> Result<Delivery, IntakeError> {
    let source = match declared {
        Some(source) => source,
        None => Source::parse("sweep").map_err(IntakeError::Invalid)?,
    };
    let name = AlertName::parse(&finding.check_name).map_err(at("check_name"))?;
    let severity = Severity::parse(finding.severity.as_deref());

    let mut labels = BTreeMap::new();
    for (key, value) in [
        ("check_category", finding.check_category),
        ("cluster", finding.cluster),
        ("resource", finding.resource),
    ] {
        if let Some(value) = value {
            labels.insert(key.to_owned(), value);
        }
    }
    // Text and flags identify the problem and become labels; numbers (`age_hours`) change
    // from one sweep to the next and go to annotations, so they never split an incident.
    let mut measures = BTreeMap::new();
    for (key, value) in finding.evidence {
        match value {
            Value::String(s) => {
                labels.entry(key).or_insert(s);
            }
            Value::Bool(b) => {
                labels.entry(key).or_insert(b.to_string());
            }
            Value::Number(n) => {
                measures.insert(key, n.to_string());
            }
            Value::Null | Value::Array(_) | Value::Object(_) => {}
        }
    }
    if let Some(group) = labels.get("group").cloned() {
        super::backup_group::fill_labels(&mut labels, &[&group]);
    }
    let labels = Labels::parse(labels).map_err(at("evidence"))?;

    let mut annotations = measures;
    for (key, value) in [
        ("description", finding.description),
        ("suggested_fix", finding.suggested_fix),
    ] {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            annotations.insert(key.to_owned(), value);
        }
    }
    let annotations = Annotations::parse(annotations).map_err(at("finding"))?;
    let fingerprint =
        fingerprint(finding.fingerprint.as_deref(), &name, &labels).map_err(at("fingerprint"))?;

    Ok(Delivery::one(Alert {
        source,
        name,
        severity,
        // A sweep reports what it finds now; it has no resolve message.
        status: AlertStatus::Firing,
        labels,
        annotations,
        starts_at: None,
        ends_at: None,
        fingerprint,
    }))
}
