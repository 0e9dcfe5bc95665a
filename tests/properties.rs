//! Property tests (issue 12): generated inputs, a bounded number of cases each, against the
//! intake parsers, the playbook loader and `runbookd check`, and the one quoting function and
//! the command templates, read back through a real `sh`. Failures are not written to disk (no
//! files appear in the repository); proptest prints the shrunk case, which then becomes a
//! regular regression test next to the code it is about.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use proptest::prelude::*;
use proptest::sample::Index;
use regex::Regex;
use runbookd::exec::command::{AbsPath, CertFingerprint, Name, Value, Vmid, quote, render};
use runbookd::intake::{
    self, AlertName, AlertStatus, IntakeError, Labels, Severity, fingerprint::fingerprint,
};
use runbookd::playbook;

/// `cases` cases, no failure files.
fn cases(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Characters that mean something to a shell, YAML or JSON, and other troublemakers.
const NASTY: &[&str] = &[
    "'",
    "\"",
    "\\",
    "$",
    "`",
    "(",
    ")",
    "{",
    "}",
    "[",
    "]",
    "*",
    "?",
    "~",
    "#",
    "!",
    "^",
    "%",
    "=",
    ",",
    ";",
    "|",
    "&",
    "<",
    ">",
    " ",
    "\t",
    "\n",
    "\r",
    "\u{1}",
    "\u{1b}",
    "\u{7f}",
    "-",
    "--",
    ":",
    "/",
    "..",
    "\u{a0}",
    "\u{202e}",
    "\u{feff}",
    "é",
    "４",
    "😀",
    "$(reboot)",
    "`id`",
    "${IFS}",
    "'\\''",
    "\\\n",
    "{a,b}",
    "*/",
    "&&",
    "-rf",
    "\u{85}",
    "\u{2028}",
];

/// Any text, weighted towards [`NASTY`] pieces.
fn text(max_pieces: usize) -> impl Strategy<Value = String> + Clone {
    let piece = prop_oneof![
        2 => any::<char>().prop_map(String::from),
        2 => "[a-z0-9]{1,6}",
        3 => prop::sample::select(NASTY).prop_map(str::to_owned),
    ];
    prop::collection::vec(piece, 0..max_pieces).prop_map(|pieces| pieces.concat())
}

/// [`text`] without NUL, which no shell word can hold.
fn shell_word() -> impl Strategy<Value = String> + Clone {
    text(12).prop_map(|word| word.replace('\0', ""))
}

// ---------------------------------------------------------------------------------------------
// Intake

/// A `?source=` the URL may declare, or none.
fn declared() -> impl Strategy<Value = Option<&'static str>> {
    prop::option::of(prop::sample::select(&[
        "alertmanager",
        "sweep",
        "pbs",
        "manual",
        "generic",
    ]))
}

/// Any delivery either is refused whole with a typed error that says something, or holds at
/// least one accepted alert, and every alert it refuses says why.
fn check_any_delivery(body: &[u8], declared: Option<&str>) -> Result<(), TestCaseError> {
    let declared = declared.map(|name| intake::declared_source(name).expect("a known source"));
    match intake::parse(body, declared) {
        Err(error) => prop_assert!(!error.to_string().is_empty()),
        Ok(delivery) => {
            prop_assert!(delivery.alerts().next().is_some(), "{delivery:?}");
            for (i, entry) in delivery.entries.iter().enumerate() {
                if let Err(refused) = entry {
                    prop_assert_eq!(refused.position, i);
                    prop_assert!(
                        refused.reason.starts_with(&format!("alerts[{i}]")),
                        "{}",
                        refused.reason
                    );
                }
            }
        }
    }
    Ok(())
}

/// Keys the parsers look for, so generated objects often take the paths that read them.
const KEYS: &[&str] = &[
    "alerts",
    "version",
    "status",
    "labels",
    "annotations",
    "startsAt",
    "endsAt",
    "fingerprint",
    "alertname",
    "severity",
    "check_name",
    "evidence",
    "group",
    "alert_name",
    "description",
    "source",
    "type",
    "datastore",
];

fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(KEYS).prop_map(str::to_owned),
        1 => "[a-zA-Z_][a-zA-Z0-9_]{0,8}",
        1 => text(4),
    ]
}

/// Any JSON value, with the words the parsers compare against among its strings.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value as Json;
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(Json::from),
        any::<f64>().prop_map(Json::from),
        prop::sample::select(&[
            "4",
            "firing",
            "resolved",
            "backup",
            "vm/451",
            "pbs-datastore:vm/451",
            "0001-01-01T00:00:00Z",
            "2026-11-26T02:30:00Z",
            "5f1c2a9e7b3d4c10",
        ])
        .prop_map(Json::from),
        text(10).prop_map(Json::String),
    ];
    leaf.prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Json::Array),
            prop::collection::btree_map(json_key(), inner, 0..6)
                .prop_map(|map| Json::Object(map.into_iter().collect())),
        ]
    })
}

/// A reference payload with a few bytes changed, inserted or removed.
fn mutated_reference() -> impl Strategy<Value = Vec<u8>> {
    let payloads = [
        "alertmanager-v4.json",
        "error-hunter-finding.json",
        "ingest-pbs-forwarder.json",
        "ingest-generic.json",
    ]
    .map(|name| common::reference(name).into_bytes());
    let edit = (any::<Index>(), 0u8..3, any::<u8>());
    (
        prop::sample::select(payloads.to_vec()),
        prop::collection::vec(edit, 1..6),
    )
        .prop_map(|(mut body, edits)| {
            for (at, kind, byte) in edits {
                let at = at.index(body.len() + 1);
                match kind {
                    0 => body.insert(at, byte),
                    1 if at < body.len() => body[at] = byte,
                    _ if at < body.len() => {
                        body.remove(at);
                    }
                    _ => body.push(byte),
                }
            }
            body
        })
}

/// A valid label name, often one the playbooks read.
fn label_name() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        prop::sample::select(&[
            "severity",
            "datastore",
            "backup_type",
            "backup_id",
            "namespace",
            "instance",
        ])
        .prop_map(str::to_owned),
        "[a-zA-Z_][a-zA-Z0-9_]{0,12}",
    ]
}

/// A valid label value: any text without control characters other than line breaks and tabs.
fn label_value() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        1 => prop::sample::select(&["critical", "Warning", "info", "page", "backup", ""])
            .prop_map(str::to_owned),
        3 => text(10).prop_map(|value| {
            value
                .chars()
                .filter(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t'))
                .collect()
        }),
    ]
}

/// A valid alert name: one line of printable text, not blank.
fn alert_name() -> impl Strategy<Value = String> + Clone {
    text(8)
        .prop_map(|name| name.chars().filter(|c| !c.is_control()).collect::<String>())
        .prop_filter("a name is not blank", |name| !name.trim().is_empty())
}

/// A sender's own fingerprint: `Some("")` counts as none.
fn upstream_fingerprint() -> impl Strategy<Value = Option<String>> + Clone {
    prop::option::of(prop_oneof![Just(String::new()), "[A-Za-z0-9._:-]{1,40}"])
}

/// A time Alertmanager could send, and the offset it is written in.
fn timestamp() -> impl Strategy<Value = (DateTime<Utc>, i32)> + Clone {
    (
        0i64..4_102_444_800,
        0u32..1_000_000_000,
        -14 * 4..=14 * 4i32,
    )
        .prop_map(|(secs, nanos, quarters)| {
            (
                DateTime::from_timestamp(secs, nanos).expect("in range"),
                quarters * 900,
            )
        })
}

/// How a time is written: not at all, `null`, Go's zero time (all "not set"), or a time.
fn time_field(time: &Option<(DateTime<Utc>, i32)>, unset: u8) -> Option<String> {
    match (time, unset % 3) {
        (Some((at, offset)), _) => {
            let offset = FixedOffset::east_opt(*offset).expect("within a day");
            let text = at
                .with_timezone(&offset)
                .to_rfc3339_opts(SecondsFormat::AutoSi, true);
            Some(json_string(&text))
        }
        (None, 0) => None,
        (None, 1) => Some("null".to_owned()),
        (None, _) => Some("\"0001-01-01T00:00:00Z\"".to_owned()),
    }
}

fn json_string(text: &str) -> String {
    serde_json::to_string(text).expect("a string serializes")
}

/// A JSON object written by hand, so the order of its keys is the generated one.
fn object_text(pairs: &[(String, String)]) -> String {
    let fields: Vec<String> = pairs
        .iter()
        .map(|(key, value)| format!("{}:{}", json_string(key), json_string(value)))
        .collect();
    format!("{{{}}}", fields.join(","))
}

/// How a generated Alertmanager alert is spoiled, if it is: each must be refused alone.
#[derive(Debug, Clone, Copy)]
enum Spoil {
    Status,
    LabelName,
    ControlCharacter,
    NoAlertname,
    NumberLabel,
    Fingerprint,
}

#[derive(Debug, Clone)]
struct GeneratedAlert {
    name: String,
    /// Every label but `alertname`, in the order they are written.
    labels: Vec<(String, String)>,
    annotations: Vec<(String, String)>,
    status: AlertStatus,
    starts_at: Option<(DateTime<Utc>, i32)>,
    ends_at: Option<(DateTime<Utc>, i32)>,
    unset: u8,
    fingerprint: Option<String>,
    spoil: Option<Spoil>,
}

impl GeneratedAlert {
    fn all_labels(&self) -> BTreeMap<String, String> {
        let mut labels: BTreeMap<String, String> = self.labels.iter().cloned().collect();
        labels.insert("alertname".to_owned(), self.name.clone());
        labels
    }

    /// The alert as Alertmanager writes it, its labels in the generated order or reversed.
    fn json(&self, reversed: bool) -> String {
        let mut labels = self.labels.clone();
        labels.push(("alertname".to_owned(), self.name.clone()));
        if reversed {
            labels.reverse();
        }
        let mut status = self.status.as_str().to_owned();
        let mut labels_text = object_text(&labels);
        let mut fingerprint = self.fingerprint.clone();
        match self.spoil {
            None => {}
            Some(Spoil::Status) => status = "pending".to_owned(),
            Some(Spoil::LabelName) => {
                labels.push(("backup-id".to_owned(), "451".to_owned()));
                labels_text = object_text(&labels);
            }
            Some(Spoil::ControlCharacter) => {
                labels.push(("note".to_owned(), "bell\u{7}".to_owned()));
                labels_text = object_text(&labels);
            }
            Some(Spoil::NoAlertname) => {
                labels.retain(|(key, _)| key != "alertname");
                labels_text = object_text(&labels);
            }
            Some(Spoil::NumberLabel) => {
                labels_text = format!("{},\"backup_id\":451}}", labels_text.trim_end_matches('}'))
                    .replacen("{,", "{", 1);
            }
            Some(Spoil::Fingerprint) => fingerprint = Some("abc; rm -rf /".to_owned()),
        }
        let mut fields = vec![
            format!("\"status\":{}", json_string(&status)),
            format!("\"labels\":{labels_text}"),
            format!("\"annotations\":{}", object_text(&self.annotations)),
            "\"generatorURL\":\"http://prometheus.monitoring:9090/graph\"".to_owned(),
        ];
        for (key, time) in [("startsAt", &self.starts_at), ("endsAt", &self.ends_at)] {
            if let Some(text) = time_field(time, self.unset) {
                fields.push(format!("\"{key}\":{text}"));
            }
        }
        if let Some(given) = fingerprint {
            fields.push(format!("\"fingerprint\":{}", json_string(&given)));
        }
        format!("{{{}}}", fields.join(","))
    }
}

fn generated_alert() -> impl Strategy<Value = GeneratedAlert> {
    (
        alert_name(),
        prop::collection::btree_map(label_name(), label_value(), 0..8),
        prop::collection::btree_map(label_name(), label_value(), 0..4),
        prop::bool::ANY,
        prop::option::of(timestamp()),
        prop::option::of(timestamp()),
        any::<u8>(),
        upstream_fingerprint(),
        prop::option::weighted(
            0.25,
            prop::sample::select(&[
                Spoil::Status,
                Spoil::LabelName,
                Spoil::ControlCharacter,
                Spoil::NoAlertname,
                Spoil::NumberLabel,
                Spoil::Fingerprint,
            ]),
        ),
    )
        .prop_flat_map(
            |(name, labels, annotations, firing, starts_at, ends_at, unset, fp, spoil)| {
                let labels: Vec<(String, String)> = labels
                    .into_iter()
                    .filter(|(key, _)| key != "alertname")
                    .collect();
                (Just(labels).prop_shuffle(), Just(annotations)).prop_map(
                    move |(labels, annotations)| GeneratedAlert {
                        name: name.clone(),
                        labels,
                        annotations: annotations.into_iter().collect(),
                        status: if firing {
                            AlertStatus::Firing
                        } else {
                            AlertStatus::Resolved
                        },
                        starts_at,
                        ends_at,
                        unset,
                        fingerprint: fp.clone(),
                        spoil,
                    },
                )
            },
        )
}

fn webhook(alerts: &[GeneratedAlert], reversed: bool) -> String {
    let alerts: Vec<String> = alerts.iter().map(|a| a.json(reversed)).collect();
    format!(
        "{{\"version\":\"4\",\"status\":\"firing\",\"receiver\":\"runbookd\",\
         \"groupLabels\":{{}},\"alerts\":[{}]}}",
        alerts.join(",")
    )
}

/// The fingerprint an alert must get: the sender's, else the hash of its name and labels.
fn expected_fingerprint(
    upstream: Option<&str>,
    name: &str,
    labels: BTreeMap<String, String>,
) -> String {
    let name = AlertName::parse(name).expect("a generated name is valid");
    let labels = Labels::parse(labels).expect("generated labels are valid");
    fingerprint(upstream, &name, &labels)
        .expect("a generated fingerprint is valid")
        .as_str()
        .to_owned()
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn intake_reads_any_bytes_as_a_typed_error_or_alerts(
        body in prop::collection::vec(any::<u8>(), 0..256),
        declared in declared(),
    ) {
        check_any_delivery(&body, declared)?;
    }

    #[test]
    fn intake_reads_damaged_reference_payloads_as_a_typed_error_or_alerts(
        body in mutated_reference(),
        declared in declared(),
    ) {
        check_any_delivery(&body, declared)?;
    }
}

proptest! {
    #![proptest_config(cases(128))]

    /// Every generated Alertmanager alert comes out with the labels, annotations, status, times
    /// and fingerprint it went in with, whatever the order of its labels; a spoiled alert is
    /// refused alone, at its position, and only a webhook of spoiled alerts is refused whole.
    #[test]
    fn alertmanager_webhooks_round_trip(alerts in prop::collection::vec(generated_alert(), 1..5)) {
        let body = webhook(&alerts, false);
        let parsed = intake::parse(body.as_bytes(), None);
        if alerts.iter().all(|a| a.spoil.is_some()) {
            prop_assert!(matches!(parsed, Err(IntakeError::Invalid(ref m)) if m.starts_with("alerts[0]")), "{parsed:?}");
            return Ok(());
        }
        let delivery = parsed.map_err(|e| TestCaseError::fail(format!("{e}\n{body}")))?;
        prop_assert_eq!(delivery.source.as_str(), "alertmanager");
        prop_assert_eq!(delivery.entries.len(), alerts.len());
        let reversed = intake::parse(webhook(&alerts, true).as_bytes(), None).unwrap();
        for (i, (generated, entry)) in alerts.iter().zip(&delivery.entries).enumerate() {
            let alert = match (generated.spoil, entry) {
                (Some(_), Err(refused)) => {
                    prop_assert_eq!(refused.position, i);
                    prop_assert!(refused.reason.starts_with(&format!("alerts[{i}]")), "{}", refused.reason);
                    continue;
                }
                (Some(spoil), Ok(_)) => return Err(TestCaseError::fail(format!("{spoil:?} accepted"))),
                (None, Err(refused)) => return Err(TestCaseError::fail(refused.reason.clone())),
                (None, Ok(alert)) => alert,
            };
            let labels = generated.all_labels();
            prop_assert_eq!(alert.name.as_str(), generated.name.as_str());
            prop_assert_eq!(alert.status, generated.status);
            prop_assert_eq!(alert.severity, Severity::parse(labels.get("severity").map(String::as_str)));
            prop_assert_eq!(alert.labels.iter().collect::<Vec<_>>(), labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<Vec<_>>());
            for (key, value) in &generated.annotations {
                prop_assert_eq!(alert.annotations.get(key), Some(value.as_str()));
            }
            prop_assert_eq!(alert.starts_at, generated.starts_at.map(|t| t.0));
            prop_assert_eq!(alert.ends_at, generated.ends_at.map(|t| t.0));
            let expected = expected_fingerprint(generated.fingerprint.as_deref(), &generated.name, labels);
            prop_assert_eq!(alert.fingerprint.as_str(), expected.as_str());
            let again = reversed.entries[i].as_ref().unwrap();
            prop_assert_eq!(&again.fingerprint, &alert.fingerprint, "the label order changes nothing");
        }
    }
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn intake_reads_any_json_object_as_a_typed_error_or_alerts(
        object in prop::collection::btree_map(json_key(), json_value(), 0..8),
        declared in declared(),
    ) {
        let body = serde_json::to_vec(&object).unwrap();
        check_any_delivery(&body, declared)?;
    }

    /// A computed fingerprint is 16 hex digits, the same for any order of the labels, and
    /// changes when any label value does.
    #[test]
    fn computed_fingerprints_are_stable_under_label_order(
        name in alert_name(),
        labels in prop::collection::btree_map(label_name(), label_value(), 1..10),
        changed in any::<Index>(),
    ) {
        let pairs: Vec<(String, String)> = labels.into_iter().collect();
        let forwards = expected_fingerprint(None, &name, pairs.iter().cloned().collect());
        let backwards = expected_fingerprint(None, &name, pairs.iter().rev().cloned().collect());
        prop_assert_eq!(&forwards, &backwards);
        prop_assert!(forwards.len() == 16 && forwards.bytes().all(|b| b.is_ascii_hexdigit()));
        let mut other = pairs.clone();
        other[changed.index(pairs.len())].1.push('x');
        prop_assert_ne!(forwards, expected_fingerprint(None, &name, other.into_iter().collect()));
    }

    /// A sweep finding's category, cluster, resource and text evidence come out as labels, its
    /// numbers and texts as annotations.
    #[test]
    fn sweep_findings_round_trip(
        check_name in alert_name(),
        fields in prop::collection::vec(prop::option::of(label_value()), 3),
        evidence in prop::collection::btree_map(
            label_name().prop_filter("group names a backup group", |k| k != "group"),
            prop_oneof![
                label_value().prop_map(serde_json::Value::from),
                any::<bool>().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                any::<i32>().prop_map(|n| serde_json::Value::from(f64::from(n) / 4.0)),
                Just(serde_json::Value::Null),
                Just(serde_json::json!([1, "x"])),
            ],
            0..6,
        ),
        severity in prop::option::of(label_value()),
        texts in prop::collection::vec(prop::option::of(label_value()), 2),
        upstream in upstream_fingerprint(),
    ) {
        let mut body = serde_json::json!({ "check_name": check_name, "evidence": evidence });
        let mut labels = BTreeMap::new();
        for (key, value) in ["check_category", "cluster", "resource"].into_iter().zip(&fields) {
            if let Some(value) = value {
                body[key] = value.clone().into();
                labels.insert(key.to_owned(), value.clone());
            }
        }
        let mut annotations = BTreeMap::new();
        for (key, value) in &evidence {
            match value {
                serde_json::Value::String(s) => {
                    labels.entry(key.clone()).or_insert_with(|| s.clone());
                }
                serde_json::Value::Bool(b) => {
                    labels.entry(key.clone()).or_insert_with(|| b.to_string());
                }
                serde_json::Value::Number(n) => {
                    annotations.insert(key.clone(), n.to_string());
                }
                _ => {}
            }
        }
        for (key, value) in ["description", "suggested_fix"].into_iter().zip(&texts) {
            if let Some(value) = value {
                body[key] = value.clone().into();
                if !value.is_empty() {
                    annotations.insert(key.to_owned(), value.clone());
                }
            }
        }
        if let Some(severity) = &severity {
            body["severity"] = severity.clone().into();
        }
        if let Some(upstream) = &upstream {
            body["fingerprint"] = upstream.clone().into();
        }
        let delivery = intake::parse(body.to_string().as_bytes(), None)
            .map_err(|e| TestCaseError::fail(format!("{e}\n{body}")))?;
        let alert = delivery.alerts().next().unwrap();
        prop_assert_eq!(alert.source.as_str(), "sweep");
        prop_assert_eq!(alert.name.as_str(), check_name.as_str());
        prop_assert_eq!(alert.status, AlertStatus::Firing);
        prop_assert_eq!(alert.severity, Severity::parse(severity.as_deref()));
        prop_assert_eq!(alert.labels.iter().collect::<Vec<_>>(), labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<Vec<_>>());
        for (key, value) in &annotations {
            prop_assert_eq!(alert.annotations.get(key), Some(value.as_str()));
        }
        let expected = expected_fingerprint(upstream.as_deref(), &check_name, labels);
        prop_assert_eq!(alert.fingerprint.as_str(), expected.as_str());
    }

    /// A forwarder's payload keeps its labels, adds the group its name or description names,
    /// and a failed backup's error text becomes the `failure` annotation.
    #[test]
    fn forwarder_payloads_round_trip(
        name in alert_name()
            .prop_map(|n| n.replace('/', ""))
            .prop_filter("a name is not blank", |n| !n.trim().is_empty()),
        group in prop::option::of(("[A-Za-z0-9][A-Za-z0-9_-]{0,10}", prop::sample::select(&["vm", "ct", "host"]), "[A-Za-z0-9_.-]{1,8}")),
        group_in_description in any::<bool>(),
        description in prop::option::of(label_value().prop_map(|d| d.replace('/', ""))),
        labels in prop::collection::btree_map(
            prop_oneof![Just("type".to_owned()), Just("status".to_owned()), label_name()],
            prop_oneof![Just("backup".to_owned()), label_value()],
            0..6,
        ),
        status in prop::option::of(prop::sample::select(&["firing", "resolved"])),
        source in prop::option::of("[a-z0-9_-]{1,12}"),
        declared in prop::option::of(prop::sample::select(&["pbs", "manual", "generic"])),
        upstream in upstream_fingerprint(),
    ) {
        let group_text = group.as_ref().map(|(store, kind, id)| format!(" failed: {store}:{kind}/{id}"));
        let mut name = name;
        let mut description = description;
        if let Some(text) = &group_text {
            if group_in_description {
                description = Some(format!("{}{text}", description.unwrap_or_default()));
            } else {
                name.push_str(text);
            }
        }
        let mut body = serde_json::json!({ "alert_name": name, "labels": labels });
        for (key, value) in [("description", description.as_deref()), ("status", status), ("source", source.as_deref())] {
            if let Some(value) = value {
                body[key] = value.into();
            }
        }
        if let Some(upstream) = &upstream {
            body["fingerprint"] = upstream.clone().into();
        }
        let declared_source = declared.map(|d| intake::declared_source(d).unwrap());
        let delivery = intake::parse(body.to_string().as_bytes(), declared_source)
            .map_err(|e| TestCaseError::fail(format!("{e}\n{body}")))?;
        let alert = delivery.alerts().next().unwrap();

        let mut expected = labels.clone();
        if let Some((store, kind, id)) = &group {
            for (key, value) in [("datastore", store), ("backup_type", &kind.to_string()), ("backup_id", id)] {
                expected.entry(key.to_owned()).or_insert_with(|| value.clone());
            }
        }
        prop_assert_eq!(alert.source.as_str(), declared.or(source.as_deref()).unwrap_or("generic"));
        prop_assert_eq!(alert.name.as_str(), name.as_str());
        prop_assert_eq!(alert.status.as_str(), status.unwrap_or("firing"));
        prop_assert_eq!(alert.labels.iter().collect::<Vec<_>>(), expected.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<Vec<_>>());
        let failure = (labels.get("type").map(String::as_str) == Some("backup"))
            .then(|| labels.get("status"))
            .flatten();
        prop_assert_eq!(alert.annotations.get(intake::FAILURE_ANNOTATION), failure.map(String::as_str));
        prop_assert_eq!(alert.annotations.get("description"), description.as_deref());
        let fp = expected_fingerprint(upstream.as_deref(), &name, expected);
        prop_assert_eq!(alert.fingerprint.as_str(), fp.as_str());
    }
}

// ---------------------------------------------------------------------------------------------
// The playbook loader and `runbookd check`

const SHIPPED: &str = include_str!("../playbooks/pbs-backup-stale.yaml");

/// One change to the shipped playbook's text.
#[derive(Debug, Clone)]
enum Mutation {
    DropLine(Index),
    DuplicateLine(Index),
    InsertLine(Index, String),
    /// A key (`timeout:`, `- id:`) gets another name.
    RenameKey(Index, String),
    /// A duration (`10s`, `4h`) becomes any text.
    Duration(Index, String),
    /// A snake_case word (a step, probe, fact or cause) becomes another one, or any text.
    Reference(Index, String),
    /// A template's `{placeholder}` or a whole `run:` becomes any text.
    Template(Index, String),
}

fn snake_words() -> Vec<String> {
    let word = Regex::new(r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b").unwrap();
    let mut words: Vec<String> = word
        .find_iter(SHIPPED)
        .map(|m| m.as_str().to_owned())
        .collect();
    words.sort();
    words.dedup();
    words
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let duration = prop_oneof![
        "[0-9]{0,22}(ms|s|m|h|d|)",
        prop::sample::select(&[
            "0s",
            "-1s",
            "1.5s",
            "10 s",
            "1e3s",
            "18446744073709551615h",
            "ms"
        ])
        .prop_map(str::to_owned),
        text(4),
    ];
    let reference = prop_oneof![
        2 => prop::sample::select(snake_words()),
        1 => "[a-z_]{1,12}",
        1 => text(4),
    ];
    let template = prop_oneof![
        "\\{[a-z0-9_.]{0,16}\\}",
        prop::sample::select(&[
            "{pbs.host}",
            "{facts.pbs_fingerprint}",
            "{settings.canary.vmid}",
            "{settings.decommissioned}",
            "{backup_id}",
            "{",
            "}",
            "{{x}}"
        ])
        .prop_map(str::to_owned),
        text(8),
    ];
    prop_oneof![
        any::<Index>().prop_map(Mutation::DropLine),
        any::<Index>().prop_map(Mutation::DuplicateLine),
        (any::<Index>(), text(8)).prop_map(|(at, line)| Mutation::InsertLine(at, line)),
        (any::<Index>(), prop_oneof!["[a-z_]{1,12}", text(3)])
            .prop_map(|(at, key)| Mutation::RenameKey(at, key)),
        (any::<Index>(), duration).prop_map(|(at, text)| Mutation::Duration(at, text)),
        (any::<Index>(), reference).prop_map(|(at, text)| Mutation::Reference(at, text)),
        (any::<Index>(), template).prop_map(|(at, text)| Mutation::Template(at, text)),
    ]
}

/// Replaces the `at`th match of `pattern` (its first group, if it has one) with `with`.
fn replace_match(text: &str, pattern: &str, at: Index, with: &str) -> String {
    let pattern = Regex::new(pattern).unwrap();
    let found: Vec<_> = pattern
        .captures_iter(text)
        .map(|c| c.get(1).unwrap_or_else(|| c.get(0).unwrap()).range())
        .collect();
    if found.is_empty() {
        return text.to_owned();
    }
    let range = found[at.index(found.len())].clone();
    format!("{}{with}{}", &text[..range.start], &text[range.end..])
}

fn apply(text: &str, mutation: &Mutation) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let joined = |lines: Vec<String>| lines.join("\n") + "\n";
    match mutation {
        Mutation::DropLine(at) => {
            lines.remove(at.index(lines.len()));
            joined(lines)
        }
        Mutation::DuplicateLine(at) => {
            let at = at.index(lines.len());
            lines.insert(at, lines[at].clone());
            joined(lines)
        }
        Mutation::InsertLine(at, line) => {
            lines.insert(at.index(lines.len() + 1), line.clone());
            joined(lines)
        }
        Mutation::RenameKey(at, key) => replace_match(text, r"(?m)^[ -]*([a-z_]+):", *at, key),
        Mutation::Duration(at, with) => replace_match(text, r"\b\d+(?:ms|s|m|h)\b", *at, with),
        Mutation::Reference(at, with) => {
            replace_match(text, r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b", *at, with)
        }
        Mutation::Template(at, with) => replace_match(
            text,
            r#"\{[a-z0-9_.]+\}|run: ("[^"\n]*"|[^,}"\n]+)"#,
            *at,
            with,
        ),
    }
}

fn mutated_playbook() -> impl Strategy<Value = String> {
    prop::collection::vec(mutation(), 0..4).prop_map(|mutations| {
        mutations
            .iter()
            .fold(SHIPPED.to_owned(), |text, m| apply(&text, m))
    })
}

/// A problem's location names `file`, and the line (and column) it gives is in the text.
fn check_located(
    problem: &runbookd::config::Problem,
    file: &Path,
    text: &str,
) -> Result<(), TestCaseError> {
    let file = file.display().to_string();
    prop_assert!(!problem.message.trim().is_empty(), "{problem:?}");
    let Some(rest) = problem.location.strip_prefix(&file) else {
        return Err(TestCaseError::fail(format!(
            "{problem:?} does not name {file}"
        )));
    };
    if rest.is_empty() {
        return Ok(());
    }
    let numbers: Vec<usize> = rest
        .strip_prefix(':')
        .unwrap_or("x")
        .split(':')
        .map(|n| {
            n.parse()
                .map_err(|_| TestCaseError::fail(format!("{problem:?}: not FILE:LINE[:COL]")))
        })
        .collect::<Result<_, _>>()?;
    prop_assert!(numbers.len() <= 2, "{problem:?}");
    let lines = text.lines().count();
    prop_assert!(
        (1..=lines + 1).contains(&numbers[0]),
        "{problem:?}: the text has {lines} lines"
    );
    Ok(())
}

proptest! {
    #![proptest_config(cases(128))]

    /// A mutated playbook loads, or fails with problems that each name its file and a line in
    /// it; the unmutated one loads.
    #[test]
    fn mutated_playbooks_load_or_fail_with_located_problems(text in mutated_playbook()) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mutated.yaml");
        std::fs::write(&file, &text).unwrap();
        match playbook::load_dir(dir.path()) {
            Ok(files) => prop_assert_eq!(files.len(), 1),
            Err(problems) => {
                prop_assert!(text != SHIPPED, "the shipped playbook loads: {problems:?}");
                prop_assert!(!problems.is_empty());
                for problem in &problems {
                    check_located(problem, &file, &text)?;
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(cases(24))]

    /// `runbookd check --playbooks DIR`, the real binary, agrees with the loader: it exits 0 for
    /// a playbook that loads and 1, naming the file, for one that does not; it never crashes.
    #[test]
    fn runbookd_check_agrees_with_the_loader(text in mutated_playbook()) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mutated.yaml");
        std::fs::write(&file, &text).unwrap();
        let loads = playbook::load_dir(dir.path()).is_ok();
        let output = Command::new(env!("CARGO_BIN_EXE_runbookd"))
            .args(["check", "--playbooks"])
            .arg(dir.path())
            .env_remove("RUNBOOKD_CONFIG")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        prop_assert_eq!(output.status.code(), Some(if loads { 0 } else { 1 }), "{}", stderr);
        prop_assert!(loads || stderr.contains(&file.display().to_string()), "{}", stderr);
    }
}

// ---------------------------------------------------------------------------------------------
// The one quoting function and the command templates, through a real shell

/// The words `shell` reads from `line` as a simple command's arguments, each as it would
/// reach a program's argv.
fn shell_argv(shell: &str, line: &str) -> Vec<String> {
    let output = Command::new(shell)
        .arg("-c")
        .arg(format!("printf '%s\\0' {line}"))
        .env("LC_ALL", "C.UTF-8")
        .output()
        .unwrap_or_else(|e| panic!("{shell}: {e}"));
    assert!(
        output.status.success(),
        "{shell} -c {line:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut words: Vec<String> = output
        .stdout
        .split(|&b| b == 0)
        .map(|w| String::from_utf8(w.to_vec()).expect("the words were UTF-8"))
        .collect();
    assert_eq!(words.pop().as_deref(), Some(""), "every word ends in NUL");
    words
}

/// The shells that run remote commands: `/bin/sh` (dash here), and bash, Proxmox's login shell.
const SHELLS: [&str; 2] = ["/bin/sh", "bash"];

/// A value of the given type made from `text`, if it is one.
fn typed_value(kind: u8, text: &str) -> Option<Value> {
    match kind % 5 {
        0 => Vmid::parse(text).ok().map(Value::Vmid),
        1 => Name::parse(text).ok().map(Value::Name),
        2 => AbsPath::parse(text).ok().map(Value::Path),
        3 => CertFingerprint::parse(text).ok().map(Value::Fingerprint),
        _ => text.parse().ok().map(Value::Count),
    }
}

/// The text a value stands for in a command: numbers as printed, fingerprints upper-case.
fn rendered_text(value: &Value) -> String {
    match value {
        Value::Vmid(vmid) => vmid.to_string(),
        Value::Name(name) => name.as_str().to_owned(),
        Value::Path(path) => path.as_str().to_owned(),
        Value::Fingerprint(fingerprint) => fingerprint.as_str().to_owned(),
        Value::Count(count) => count.to_string(),
    }
}

/// Text that parses as a value of its type more often than not, from each type's alphabet.
fn value_text() -> impl Strategy<Value = (u8, String)> {
    prop_oneof![
        (Just(0u8), "[1-9][0-9]{2,8}"),
        (Just(1u8), "[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}"),
        (Just(2u8), "(/[A-Za-z0-9_.-]{1,8}){1,4}/?"),
        (Just(3u8), "[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){31}"),
        (Just(4u8), "[0-9]{1,9}"),
        (0u8..5, shell_word()),
    ]
}

/// One word of a template: literal text, a placeholder, or a placeholder inside literal text.
#[derive(Debug, Clone)]
struct TemplateWord {
    prefix: String,
    value: Option<(u8, String)>,
    suffix: String,
}

/// Literal template text: any character but blanks, braces, NUL and the shell operators the
/// template parser refuses.
fn literal() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            3 => "[A-Za-z0-9_./:=,+%@^-]",
            1 => any::<char>().prop_map(String::from),
        ],
        0..6,
    )
    .prop_map(|chars| {
        chars
            .concat()
            .chars()
            .filter(|c| !";|&$`<>()\n\r\\\"'*?[]#~!{} \t\0".contains(*c))
            .collect()
    })
}

fn template_words() -> impl Strategy<Value = Vec<TemplateWord>> {
    let word = (literal(), prop::option::of(value_text()), literal())
        .prop_map(|(prefix, value, suffix)| TemplateWord {
            prefix,
            value,
            suffix,
        })
        .prop_filter("a word is not empty", |w| {
            w.value.is_some() || !w.prefix.is_empty() || !w.suffix.is_empty()
        });
    prop::collection::vec(word, 1..6)
}

proptest! {
    #![proptest_config(cases(96))]

    /// Whatever the text, its quoted form is read back by a real shell as exactly that text,
    /// one argument per quoted word.
    #[test]
    fn quoted_words_read_back_as_themselves_through_sh(words in prop::collection::vec(shell_word(), 1..5)) {
        let quoted: Vec<String> = words.iter().map(|w| quote(w).unwrap()).collect();
        let line = quoted.join(" ");
        for shell in SHELLS {
            prop_assert_eq!(&shell_argv(shell, &line), &words, "{} read {:?}", shell, line);
        }
    }

    /// A rendered template is one simple command whose arguments, as a real shell reads them,
    /// are the template's words with each placeholder replaced by its value's text: a value
    /// never splits a word, starts another or runs anything. Text that is not a value of its
    /// type never gets that far.
    #[test]
    fn rendered_templates_keep_each_value_inside_its_word(words in template_words()) {
        let mut template = String::from("printf");
        let mut values = Vec::new();
        let mut expected = Vec::new();
        for (i, word) in words.iter().enumerate() {
            let mut text = word.prefix.clone();
            let mut template_word = word.prefix.clone();
            if let Some((kind, raw)) = &word.value {
                let Some(value) = typed_value(*kind, raw) else {
                    continue;
                };
                let name = format!("v{i}");
                template_word.push_str(&format!("{{{name}}}"));
                text.push_str(&rendered_text(&value));
                values.push((name, value));
            }
            text.push_str(&word.suffix);
            template_word.push_str(&word.suffix);
            template.push(' ');
            template.push_str(&template_word);
            expected.push(text);
        }
        let values: Vec<(&str, Value)> = values.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
        if expected.is_empty() {
            return Ok(());
        }
        let command = render(&template, &values).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let line = command.as_str().strip_prefix("printf ").unwrap();
        for shell in SHELLS {
            prop_assert_eq!(&shell_argv(shell, line), &expected, "{} read {:?}", shell, line);
        }
    }
}
