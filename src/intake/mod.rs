//! Intake: every payload shape runbookd accepts, turned into normalized [`Alert`]s.
//!
//! | format | how it is recognised | source |
//! |---|---|---|
//! | Alertmanager webhook v4 | `?source=alertmanager`, `/webhook/alertmanager`, or an `alerts` array | `alertmanager` |
//! | sweep finding | `?source=sweep`, or a `check_name` field | `sweep` |
//! | IngestPayload (forwarder, manual) | `?source=pbs\|manual\|generic`, or an `alert_name` field | the query, else the body's `source`, else `generic` |
//!
//! Parsing is pure: it touches no database. A body that cannot be read at all (not JSON, no
//! known shape, a bad envelope) is refused whole; otherwise each alert of it is either accepted
//! or refused on its own, with the reason, so one bad alert never loses its group.

pub mod alert;
mod alertmanager;
mod backup_group;
pub mod fingerprint;
mod ingest_payload;
mod sweep;

use serde::de::DeserializeOwned;
use serde_json::Value;

pub use alert::{
    Alert, AlertName, AlertStatus, Annotations, Fingerprint, Labels, Severity, Source,
};
pub use ingest_payload::FAILURE_ANNOTATION;

/// One delivery may carry at most this many alerts.
pub const MAX_ALERTS_PER_DELIVERY: usize = 1000;

/// The body shapes runbookd reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Alertmanager,
    SweepFinding,
    IngestPayload,
}

/// Why a delivery was refused. Every message says what to change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IntakeError {
    #[error(
        "unknown source '{0}': use one of {KNOWN_SOURCES}, or leave ?source out and let the body tell"
    )]
    UnknownSource(String),
    #[error("the body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("{0}")]
    Invalid(String),
}

const KNOWN_SOURCES: &str = "alertmanager, sweep, pbs, manual, generic";

/// A delivery's alerts, in the sender's order, each accepted or refused, and who sent them.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub source: Source,
    pub entries: Vec<Result<Alert, RefusedAlert>>,
}

/// An alert of a delivery that could not be accepted; the rest of the delivery still is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedAlert {
    /// Its index in the delivery's alerts.
    pub position: usize,
    /// Its name, when that much could be read.
    pub name: Option<String>,
    pub reason: String,
}

impl Delivery {
    /// A delivery of one alert (the flat formats), from the alert's own source.
    fn one(alert: Alert) -> Self {
        Self {
            source: alert.source.clone(),
            entries: vec![Ok(alert)],
        }
    }

    /// The accepted alerts, in order.
    pub fn alerts(&self) -> impl Iterator<Item = &Alert> {
        self.entries.iter().filter_map(|entry| entry.as_ref().ok())
    }
}

/// Resolves `?source=` to the sender and its format. Unknown names are refused rather than
/// guessed: a typo in a forwarder's URL should fail loudly, not land as `generic`.
pub fn declared_source(name: &str) -> Result<(Source, Format), IntakeError> {
    let format = match name {
        "alertmanager" => Format::Alertmanager,
        "sweep" => Format::SweepFinding,
        "pbs" | "manual" | "generic" => Format::IngestPayload,
        _ => return Err(IntakeError::UnknownSource(name.escape_debug().to_string())),
    };
    let source = Source::parse(name).map_err(IntakeError::Invalid)?;
    Ok((source, format))
}

/// Parses one delivery. `declared` is the source the URL named; without it the body's shape
/// decides.
pub fn parse(body: &[u8], declared: Option<(Source, Format)>) -> Result<Delivery, IntakeError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| IntakeError::InvalidJson(e.to_string()))?;
    let Value::Object(object) = &value else {
        return Err(IntakeError::Invalid(
            "the body must be a JSON object".to_owned(),
        ));
    };
    let (source, format) = match declared {
        Some(declared) => (Some(declared.0), declared.1),
        None if object.contains_key("alerts") => (None, Format::Alertmanager),
        None if object.contains_key("check_name") => (None, Format::SweepFinding),
        None if object.contains_key("alert_name") => (None, Format::IngestPayload),
        None => {
            return Err(IntakeError::Invalid(format!(
                "cannot tell the payload's format: expected an `alerts` array (Alertmanager), \
                 `check_name` (sweep finding) or `alert_name` (IngestPayload), or name the \
                 sender with ?source= ({KNOWN_SOURCES})"
            )));
        }
    };
    let delivery = match format {
        Format::Alertmanager => alertmanager::normalize(typed(value)?, source)?,
        Format::SweepFinding => sweep::normalize(typed(value)?, source)?,
        Format::IngestPayload => ingest_payload::normalize(typed(value)?, source)?,
    };
    Ok(delivery)
}

/// Deserializes with the failing field's path in the message (`alerts[0].labels.backup_id:
/// invalid type: integer 451, expected a string`).
fn typed<T: DeserializeOwned>(value: Value) -> Result<T, IntakeError> {
    typed_at(None, value)
}

/// [`typed`] for a part of the body at `prefix` (`alerts[3]`), which the message names.
fn typed_at<T: DeserializeOwned>(prefix: Option<&str>, value: Value) -> Result<T, IntakeError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        IntakeError::Invalid(match (prefix, path.as_str()) {
            (None, ".") => message,
            (None, path) => format!("{path}: {message}"),
            (Some(prefix), ".") => format!("{prefix}: {message}"),
            (Some(prefix), path) => format!("{prefix}.{path}: {message}"),
        })
    })
}

/// Prefixes a validation message with the field it is about.
fn at(path: impl std::fmt::Display) -> impl FnOnce(String) -> IntakeError {
    move |message| IntakeError::Invalid(format!("{path}: {message}"))
}
