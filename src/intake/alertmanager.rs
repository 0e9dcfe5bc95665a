//! Alertmanager's webhook body, version 4 (reference/alertmanager-v4.json).

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::fingerprint::fingerprint;
use super::{
    Alert, AlertName, AlertStatus, Annotations, Delivery, IntakeError, Labels,
    MAX_ALERTS_PER_DELIVERY, RefusedAlert, Severity, Source, at, typed_at,
};

/// Only what runbookd reads; the group fields stay in the kept raw body. Each alert is read on
/// its own, so one that does not parse is refused alone.
#[derive(Debug, Deserialize)]
pub(super) struct Webhook<'a> {
    // `alerts` first: when both are missing, the body is not a webhook at all, and saying so
    // helps more than asking for a version.
    #[serde(borrow)]
    alerts: Vec<&'a RawValue>,
    version: Cow<'a, str>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WebhookAlert {
    status: String,
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    starts_at: Option<DateTime<Utc>>,
    ends_at: Option<DateTime<Utc>>,
    fingerprint: Option<String>,
}

pub(super) fn normalize(
    webhook: Webhook<'_>,
    source: Option<Source>,
) -> Result<Delivery, IntakeError> {
    if webhook.version != "4" {
        return Err(IntakeError::Invalid(format!(
            "version: webhook version '{}' is not supported; runbookd reads version 4",
            webhook.version.escape_debug()
        )));
    }
    if webhook.alerts.is_empty() {
        return Err(IntakeError::Invalid(
            "alerts: the array is empty; a notification carries at least one alert".to_owned(),
        ));
    }
    if webhook.alerts.len() > MAX_ALERTS_PER_DELIVERY {
        return Err(IntakeError::Invalid(format!(
            "alerts: {} alerts in one delivery; at most {MAX_ALERTS_PER_DELIVERY} are accepted \
             (set max_alerts on the webhook receiver)",
            webhook.alerts.len()
        )));
    }
    let source = match source {
        Some(source) => source,
        None => Source::parse("alertmanager").map_err(IntakeError::Invalid)?,
    };
    let entries: Vec<Result<Alert, RefusedAlert>> = webhook
        .alerts
        .into_iter()
        .enumerate()
        .map(|(i, raw)| {
            typed_at::<WebhookAlert>(|| Some(format!("alerts[{i}]")), raw.get().as_bytes())
                .and_then(|alert| normalize_alert(i, alert, &source))
                .map_err(|error| RefusedAlert {
                    position: i,
                    name: alert_name(raw),
                    reason: error.to_string(),
                })
        })
        .collect();
    // Nothing to accept: the whole body is wrong, and the sender hears it as one 4xx.
    if let Some(first) = entries.iter().find_map(|e| e.as_ref().err())
        && entries.iter().all(Result::is_err)
    {
        return Err(IntakeError::Invalid(first.reason.clone()));
    }
    Ok(Delivery { source, entries })
}

fn normalize_alert(i: usize, alert: WebhookAlert, source: &Source) -> Result<Alert, IntakeError> {
    let status = AlertStatus::parse(&alert.status).map_err(at(format!("alerts[{i}].status")))?;
    let name = alert.labels.get("alertname").ok_or_else(|| {
        IntakeError::Invalid(format!(
            "alerts[{i}].labels: the alertname label is missing"
        ))
    })?;
    let name = AlertName::parse(name).map_err(at(format!("alerts[{i}].labels.alertname")))?;
    let severity = Severity::parse(alert.labels.get("severity").map(String::as_str));
    let labels = Labels::parse(alert.labels).map_err(at(format!("alerts[{i}].labels")))?;
    let annotations =
        Annotations::parse(alert.annotations).map_err(at(format!("alerts[{i}].annotations")))?;
    let fingerprint = fingerprint(alert.fingerprint.as_deref(), &name, &labels)
        .map_err(at(format!("alerts[{i}].fingerprint")))?;
    Ok(Alert {
        source: source.clone(),
        name,
        severity,
        status,
        labels,
        annotations,
        starts_at: alert.starts_at.and_then(set_time),
        ends_at: alert.ends_at.and_then(set_time),
        fingerprint,
    })
}

/// A refused alert's name, when its `alertname` label can be read at all.
fn alert_name(raw: &RawValue) -> Option<String> {
    let alert: serde_json::Value = serde_json::from_str(raw.get()).ok()?;
    alert["labels"]["alertname"].as_str().map(str::to_owned)
}

/// Go's zero time (`0001-01-01T00:00:00Z`) means "not set".
fn set_time(time: DateTime<Utc>) -> Option<DateTime<Utc>> {
    (time.year() > 1).then_some(time)
}
