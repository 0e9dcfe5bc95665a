//! Intake: every payload shape runbookd accepts, turned into normalized [`Alert`]s.
//!
//! | format | how it is recognised | source |
//! |---|---|---|
//! | Alertmanager webhook v4 | `?source=alertmanager`, `/webhook/alertmanager`, or an `alerts` array | `alertmanager` |
//! | sweep finding | `?source=sweep`, or a `check_name` field | `sweep` |
//! | IngestPayload (forwarder, manual) | `?source=pbs\|manual\|generic`, or an `alert_name` field | the query, else the body's `source`, else `generic` |
//!
//! Parsing is pure: it touches no database, and the same bytes declared the same way always
//! give the same delivery, so a body that came before is not parsed again ([`RecentParses`]).
//! A body that cannot be read at all (not JSON, no known shape, a bad envelope) is refused
//! whole; otherwise each alert of it is either accepted or refused on its own, with the
//! reason, so one bad alert never loses its group.

pub mod alert;
mod alertmanager;
mod backup_group;
pub mod fingerprint;
mod ingest_payload;
mod raw_body;
mod sweep;

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Deserialize;
use serde::de::IgnoredAny;

pub use alert::{
    Alert, AlertName, AlertStatus, Annotations, Fingerprint, Labels, Severity, Source,
};
pub use ingest_payload::FAILURE_ANNOTATION;
pub use raw_body::{RawBody, RecentParses};

/// One delivery may carry at most this many alerts.
pub const MAX_ALERTS_PER_DELIVERY: usize = 1000;

/// The body shapes runbookd reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
/// decides. The body is read straight into each format's types, without a JSON tree between.
pub fn parse(body: &[u8], declared: Option<(Source, Format)>) -> Result<Delivery, IntakeError> {
    let (source, format) = match declared {
        Some((source, format)) => (Some(source), format),
        None => (None, sniff(body)?),
    };
    match format {
        Format::Alertmanager => alertmanager::normalize(typed(body)?, source),
        Format::SweepFinding => sweep::normalize(typed(body)?, source),
        Format::IngestPayload => ingest_payload::normalize(typed(body)?, source),
    }
}

/// An undeclared body's format, by which of its top-level fields it has.
fn sniff(body: &[u8]) -> Result<Format, IntakeError> {
    let fields: HashMap<Cow<'_, str>, IgnoredAny> = typed(body)?;
    if fields.contains_key("alerts") {
        Ok(Format::Alertmanager)
    } else if fields.contains_key("check_name") {
        Ok(Format::SweepFinding)
    } else if fields.contains_key("alert_name") {
        Ok(Format::IngestPayload)
    } else {
        Err(IntakeError::Invalid(format!(
            "cannot tell the payload's format: expected an `alerts` array (Alertmanager), \
             `check_name` (sweep finding) or `alert_name` (IngestPayload), or name the \
             sender with ?source= ({KNOWN_SOURCES})"
        )))
    }
}

/// Deserializes a whole body, with the failing field's path in the message
/// (`alerts[0].labels.backup_id: invalid type: integer 451, expected a string`). Every format
/// is an object: a struct would also read an array of its fields in order.
fn typed<'de, T: Deserialize<'de>>(body: &'de [u8]) -> Result<T, IntakeError> {
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(match serde_json::from_slice::<serde_json::Value>(body) {
            Err(syntax) => IntakeError::InvalidJson(syntax.to_string()),
            Ok(_) => IntakeError::Invalid("the body must be a JSON object".to_owned()),
        });
    }
    typed_at(|| None, body)
}

/// [`typed`] for a part of the body at `prefix` (`alerts[3]`), which the message names. A body
/// that is not JSON at all is refused as such, wherever its shape went wrong first. A body
/// that fits is read once, without tracking paths (a quarter of parsing the reference body);
/// only a failure is read again to name its field.
fn typed_at<'de, T: Deserialize<'de>>(
    prefix: impl FnOnce() -> Option<String>,
    body: &'de [u8],
) -> Result<T, IntakeError> {
    serde_json::from_slice(body).map_err(|error| why_untyped::<T>(prefix().as_deref(), body, error))
}

/// Why `body` is not a `T`, with the failing field's path: `error` is what the plain read said.
fn why_untyped<'de, T: Deserialize<'de>>(
    prefix: Option<&str>,
    body: &'de [u8],
    error: serde_json::Error,
) -> IntakeError {
    let mut json = serde_json::Deserializer::from_slice(body);
    let e = match serde_path_to_error::deserialize::<_, T>(&mut json) {
        // The value fits: what follows it does not.
        Ok(_) => return IntakeError::InvalidJson(error.to_string()),
        Err(e) => e,
    };
    if e.inner().classify() != serde_json::error::Category::Data {
        return IntakeError::InvalidJson(e.inner().to_string());
    }
    // The shape went wrong first; the JSON may still be broken further on.
    if let Err(syntax) = serde_json::from_slice::<serde_json::Value>(body) {
        return IntakeError::InvalidJson(syntax.to_string());
    }
    let path = e.path().to_string();
    let message = e.inner().to_string();
    IntakeError::Invalid(match (prefix, path.as_str()) {
        (None, ".") => message,
        (None, path) => format!("{path}: {message}"),
        (Some(prefix), ".") => format!("{prefix}: {message}"),
        (Some(prefix), path) => format!("{prefix}.{path}: {message}"),
    })
}

/// Prefixes a validation message with the field it is about.
fn at(path: impl std::fmt::Display) -> impl FnOnce(String) -> IntakeError {
    move |message| IntakeError::Invalid(format!("{path}: {message}"))
}
