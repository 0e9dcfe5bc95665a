//! Facts out of probe results, and conditions over facts.
//!
//! A fact a probe could not establish is `null`: unknown, not false. Conditions use three-valued
//! logic, so an unknown fact never makes a cause match by accident (`not` of unknown is
//! unknown); a cause matches only when its condition is known to hold.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::exec::command::CertFingerprint;
use crate::playbook::compiled::{Extract, ExtractRule};
use crate::playbook::model::{Condition, ValueType};

/// What one probe returned.
#[derive(Debug, Clone, Default)]
pub struct ProbeResult {
    /// The probe ran and answered (a command ran, an API answered).
    pub ok: bool,
    pub exit: Option<u32>,
    pub stdout: String,
    /// The API's or builtin's answer as JSON.
    pub data: Value,
}

/// Extracts one fact.
pub fn extract(extract: &Extract, result: &ProbeResult) -> Value {
    if let ExtractRule::Ok = extract.rule {
        return Value::Bool(result.ok);
    }
    if !result.ok {
        return Value::Null;
    }
    let value = match &extract.rule {
        ExtractRule::Ok => Value::Bool(result.ok),
        ExtractRule::ExitOk => Value::Bool(result.exit == Some(0)),
        ExtractRule::Regex(regex) => match regex.captures(&result.stdout) {
            Some(captures) => match captures.get(1) {
                Some(group) => Value::String(group.as_str().to_owned()),
                None => Value::Bool(true),
            },
            None if regex.captures_len() > 1 => Value::Null,
            None => Value::Bool(false),
        },
        ExtractRule::Json(pointer) => result.data.pointer(pointer).cloned().unwrap_or(Value::Null),
    };
    // Fingerprints compare case-insensitively: keep one spelling.
    match (extract.kind, &value) {
        (Some(ValueType::Fingerprint), Value::String(text)) => CertFingerprint::parse(text)
            .map(|f| Value::String(f.as_str().to_owned()))
            .unwrap_or(Value::Null),
        _ => value,
    }
}

fn yaml_to_json(value: &serde_norway::Value) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::String(x), Value::String(y)) => x.eq_ignore_ascii_case(y),
        _ => a == b,
    }
}

/// Evaluates `condition`: `Some(true)`, `Some(false)`, or `None` when it depends on unknown
/// facts. Every fact it read goes into `evidence`.
pub fn evaluate(
    condition: &Condition,
    facts: &BTreeMap<String, Value>,
    evidence: &mut BTreeMap<String, Value>,
) -> Option<bool> {
    if let Some(all) = &condition.all {
        let results: Vec<Option<bool>> = all.iter().map(|c| evaluate(c, facts, evidence)).collect();
        return if results.contains(&Some(false)) {
            Some(false)
        } else if results.iter().all(|r| *r == Some(true)) {
            Some(true)
        } else {
            None
        };
    }
    if let Some(any) = &condition.any {
        let results: Vec<Option<bool>> = any.iter().map(|c| evaluate(c, facts, evidence)).collect();
        return if results.contains(&Some(true)) {
            Some(true)
        } else if results.iter().all(|r| *r == Some(false)) {
            Some(false)
        } else {
            None
        };
    }
    if let Some(inner) = &condition.not {
        return evaluate(inner, facts, evidence).map(|b| !b);
    }
    let name = condition.fact.as_ref()?;
    let fact = facts.get(name).cloned().unwrap_or(Value::Null);
    evidence.insert(name.clone(), fact.clone());
    if fact.is_null() {
        return None;
    }
    if let Some(expected) = &condition.is {
        return Some(same(&fact, &yaml_to_json(expected)));
    }
    if let Some(empty) = condition.empty {
        let is_empty = match &fact {
            Value::Array(a) => a.is_empty(),
            Value::String(s) => s.is_empty(),
            Value::Object(o) => o.is_empty(),
            _ => false,
        };
        return Some(is_empty == empty);
    }
    if let Some(needle) = &condition.contains {
        let needle = yaml_to_json(needle);
        return match &fact {
            Value::Array(items) => Some(items.iter().any(|i| same(i, &needle))),
            Value::String(text) => needle.as_str().map(|n| text.contains(n)),
            _ => Some(false),
        };
    }
    if let Some(other) = &condition.equals_fact {
        let other_value = facts.get(other).cloned().unwrap_or(Value::Null);
        evidence.insert(other.clone(), other_value.clone());
        if other_value.is_null() {
            return None;
        }
        return Some(same(&fact, &other_value));
    }
    None
}
