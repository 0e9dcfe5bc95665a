//! The normalized [`Alert`] and the validated values it is made of. Every intake format ends
//! here; nothing downstream sees a raw payload.
//!
//! Validation happens once, at this edge: a value that exists is valid. Limits are generous
//! for real alerts and refuse abuse (10k labels, control characters other than line breaks and tabs).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Labels per alert, and annotations per alert.
pub const MAX_LABELS: usize = 64;
pub const MAX_LABEL_NAME_LEN: usize = 128;
pub const MAX_LABEL_VALUE_LEN: usize = 2048;
pub const MAX_ANNOTATION_VALUE_LEN: usize = 16 * 1024;
pub const MAX_NAME_LEN: usize = 256;

/// Where an alert came from: `alertmanager`, `sweep`, or an IngestPayload sender such as
/// `pbs` or `manual`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Source(String);

impl Source {
    /// Accepts a short lowercase sender name.
    pub fn parse(name: &str) -> Result<Self, String> {
        let valid = !name.is_empty()
            && name.len() <= 32
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if valid {
            Ok(Self(name.to_owned()))
        } else {
            Err(format!(
                "source '{}' must be 1-32 characters of a-z, 0-9, '-' or '_'",
                name.escape_debug()
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

impl AlertStatus {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "firing" => Ok(Self::Firing),
            "resolved" => Ok(Self::Resolved),
            other => Err(format!(
                "status '{}' is neither 'firing' nor 'resolved'",
                other.escape_debug()
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }
}

/// Alert severity. `None` is Prometheus' convention for "no severity" (Watchdog), and what an
/// alert without a known one gets: a label such as `severity: page` must not make Alertmanager
/// drop a whole group (it does not retry a 4xx). The label itself is kept as it came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    Error,
    Warning,
    Info,
    None,
}

impl Severity {
    /// Case-insensitive; a missing or unknown severity is [`Severity::None`].
    pub fn parse(text: Option<&str>) -> Self {
        match text.map(str::to_ascii_lowercase).as_deref() {
            Some("critical") => Self::Critical,
            Some("error") => Self::Error,
            Some("warning") => Self::Warning,
            Some("info") => Self::Info,
            _ => Self::None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::Error => "error",
            Self::Warning => "warning",
            Self::Info => "info",
            Self::None => "none",
        }
    }
}

/// An alert's name: `PBSBackupStale`, a sweep's `pbs_backup_stale`, or a forwarder's
/// free-text title. One line of printable text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct AlertName(String);

impl AlertName {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Err("the alert name is empty".into());
        }
        if text.chars().count() > MAX_NAME_LEN {
            return Err(format!(
                "the alert name is longer than {MAX_NAME_LEN} characters"
            ));
        }
        if text.chars().any(char::is_control) {
            return Err("the alert name contains control characters".into());
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Label names follow Prometheus: `[a-zA-Z_][a-zA-Z0-9_]*`.
fn check_label_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid || name.len() > MAX_LABEL_NAME_LEN {
        return Err(format!(
            "'{}' is not a valid name: use 1-{MAX_LABEL_NAME_LEN} characters of [a-zA-Z0-9_], not starting with a digit",
            name.escape_debug()
        ));
    }
    Ok(())
}

/// Identifying key/value pairs. Values are single-line printable text: they may end up in
/// playbook parameters (after their own typed validation), never in a shell.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Labels(BTreeMap<String, String>);

impl Labels {
    pub fn parse(map: BTreeMap<String, String>) -> Result<Self, String> {
        if map.len() > MAX_LABELS {
            return Err(format!(
                "{} labels; at most {MAX_LABELS} are accepted",
                map.len()
            ));
        }
        for (name, value) in &map {
            check_label_name(name)?;
            if value.chars().count() > MAX_LABEL_VALUE_LEN {
                return Err(format!(
                    "label '{name}' is longer than {MAX_LABEL_VALUE_LEN} characters"
                ));
            }
            // Prometheus allows any UTF-8 in a label value; line breaks and tabs occur in real
            // ones (error texts).
            if has_stray_control(value) {
                return Err(format!("label '{name}' contains control characters"));
            }
        }
        Ok(Self(map))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// Descriptive text (summary, description). Multi-line text is fine; other control
/// characters are not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Annotations(BTreeMap<String, String>);

impl Annotations {
    pub fn parse(map: BTreeMap<String, String>) -> Result<Self, String> {
        if map.len() > MAX_LABELS {
            return Err(format!(
                "{} annotations; at most {MAX_LABELS} are accepted",
                map.len()
            ));
        }
        for (name, value) in &map {
            check_label_name(name)?;
            if value.chars().count() > MAX_ANNOTATION_VALUE_LEN {
                return Err(format!(
                    "annotation '{name}' is longer than {MAX_ANNOTATION_VALUE_LEN} characters"
                ));
            }
            if has_stray_control(value) {
                return Err(format!("annotation '{name}' contains control characters"));
            }
        }
        Ok(Self(map))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// Control characters other than line breaks and tabs, which real texts carry.
fn has_stray_control(text: &str) -> bool {
    text.chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
}

/// The incident key. See [`crate::intake::fingerprint`] for how it is chosen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Fingerprint(pub(super) String);

impl Fingerprint {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One normalized alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alert {
    pub source: Source,
    pub name: AlertName,
    pub severity: Severity,
    pub status: AlertStatus,
    pub labels: Labels,
    pub annotations: Annotations,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub fingerprint: Fingerprint,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_names_follow_prometheus() {
        assert!(Labels::parse(labels(&[("backup_id", "451"), ("_x", "")])).is_ok());
        for bad in ["", "9lives", "backup-id", "a b", "ä"] {
            assert!(Labels::parse(labels(&[(bad, "x")])).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn label_values_allow_line_breaks_and_tabs_but_no_other_control_characters() {
        assert!(Labels::parse(labels(&[("a", "x\ny\tz\r")])).is_ok());
        assert!(Labels::parse(labels(&[("a", "x\u{7}")])).is_err());
        assert!(Labels::parse(labels(&[("a", "nul\u{0}")])).is_err());
        assert!(Annotations::parse(labels(&[("description", "line 1\nline 2\t")])).is_ok());
        assert!(Annotations::parse(labels(&[("description", "nul\u{0}")])).is_err());
    }

    #[test]
    fn too_many_labels_are_refused() {
        let many = (0..=MAX_LABELS)
            .map(|i| (format!("l{i}"), String::new()))
            .collect();
        assert!(Labels::parse(many).unwrap_err().contains("at most 64"));
    }

    #[test]
    fn severity_is_case_insensitive_and_missing_or_unknown_is_none() {
        assert_eq!(Severity::parse(Some("Critical")), Severity::Critical);
        assert_eq!(Severity::parse(None), Severity::None);
        assert_eq!(Severity::parse(Some("page")), Severity::None);
    }

    #[test]
    fn alert_names_are_one_printable_line() {
        assert!(AlertName::parse("PBS backup failed: pbs-datastore:vm/451").is_ok());
        assert!(AlertName::parse("  ").is_err());
        assert!(AlertName::parse("a\nb").is_err());
        assert!(AlertName::parse(&"x".repeat(MAX_NAME_LEN + 1)).is_err());
    }
}
