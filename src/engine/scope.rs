//! Typed values for template placeholders. A placeholder is a playbook parameter (from the
//! alert's labels, parsed by type), an inventory value (`pbs.mountpoint`), a setting
//! (`settings.canary.vmid`) or a typed fact (`facts.pbs_fingerprint`). Nothing else can fill
//! a template, so label text never reaches a shell unparsed.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use super::estate::Estate;
use crate::exec::command::{
    AbsPath, CertFingerprint, CommandTemplate, Name, RemoteCommand, Value, Vmid,
};
use crate::intake::Labels;
use crate::playbook::Playbook;
use crate::playbook::compiled::HostRef;
use crate::playbook::model::ValueType;

/// Where placeholders are looked up.
pub struct Scope<'a> {
    pub estate: &'a Estate,
    pub playbook: &'a Playbook,
    pub parameters: &'a BTreeMap<String, Value>,
    pub facts: &'a BTreeMap<String, Json>,
}

fn typed(kind: ValueType, text: &str) -> Result<Value, String> {
    let value = match kind {
        ValueType::Vmid => Vmid::parse(text).map(Value::Vmid),
        ValueType::Name => Name::parse(text).map(Value::Name),
        ValueType::Path => AbsPath::parse(text).map(Value::Path),
        ValueType::Fingerprint => CertFingerprint::parse(text).map(Value::Fingerprint),
        ValueType::BackupType => {
            return match text {
                "vm" | "ct" | "host" => {
                    Ok(Value::Name(Name::parse(text).map_err(|e| e.to_string())?))
                }
                other => Err(format!(
                    "backup type '{}' is not vm, ct or host",
                    other.escape_debug()
                )),
            };
        }
    };
    value.map_err(|e| e.to_string())
}

/// The playbook's parameters from the alert's labels: typed, or refused with a clear error.
pub fn parameters(
    playbook: &Playbook,
    estate: &Estate,
    labels: &Labels,
) -> Result<BTreeMap<String, Value>, String> {
    let mut values = BTreeMap::new();
    for (name, parameter) in &playbook.parameters {
        let label = parameter
            .labels
            .iter()
            .find_map(|l| labels.get(l).map(|v| (l, v)));
        let value = match (label, &parameter.default) {
            (Some((label, text)), _) => {
                typed(parameter.kind, text).map_err(|e| format!("label '{label}': {e}"))?
            }
            (None, Some(default)) => {
                let empty = BTreeMap::new();
                let scope = Scope {
                    estate,
                    playbook,
                    parameters: &values,
                    facts: &empty,
                };
                let text = scope.fill(default)?.as_str().to_owned();
                typed(parameter.kind, &text)?
            }
            (None, None) if parameter.optional => continue,
            (None, None) => {
                return Err(format!(
                    "the alert has none of the labels {:?} that parameter '{name}' needs",
                    parameter.labels
                ));
            }
        };
        values.insert(name.clone(), value);
    }
    Ok(values)
}

impl Scope<'_> {
    /// The typed value of one placeholder.
    pub fn value(&self, key: &str) -> Result<Value, String> {
        let pbs = &self.estate.pbs_target;
        let inventory = match key {
            "pbs.host" => Some(Value::Name(pbs.host.clone())),
            "pbs.datastore" => Some(Value::Name(pbs.datastore.clone())),
            "pbs.mountpoint" => Some(Value::Path(pbs.mountpoint.clone())),
            "pbs.vm.host" => pbs.vm.as_ref().map(|(host, _)| Value::Name(host.clone())),
            "pbs.vm.vmid" => pbs.vm.as_ref().map(|(_, vmid)| Value::Vmid(*vmid)),
            "pve.storage" => Some(Value::Name(self.estate.pve_target.storage.clone())),
            _ => None,
        };
        if let Some(value) = inventory {
            return Ok(value);
        }
        if key.starts_with("pbs.vm.") {
            return Err("the inventory's [pbs] has no vm".to_owned());
        }
        if let Some(value) = self.parameters.get(key) {
            return Ok(value.clone());
        }
        if let Some(fact) = key.strip_prefix("facts.") {
            let kind = self
                .playbook
                .diagnose
                .iter()
                .find_map(|p| p.facts.get(fact))
                .and_then(|e| e.kind)
                .ok_or_else(|| format!("fact '{fact}' has no type"))?;
            return match self.facts.get(fact) {
                Some(Json::String(text)) => typed(kind, text),
                Some(Json::Number(n)) => typed(kind, &n.to_string()),
                _ => Err(format!("fact '{fact}' is not known")),
            };
        }
        if let Some(path) = key.strip_prefix("settings.") {
            let mut parts = path.split('.');
            let mut value = parts
                .next()
                .and_then(|first| self.playbook.settings.get(first));
            for part in parts {
                value = value.and_then(|v| v.get(part));
            }
            return match value {
                Some(serde_norway::Value::Number(n)) => {
                    match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
                        Some(n) => Ok(Vmid::new(n).map(Value::Vmid).unwrap_or(Value::Count(n))),
                        None => Err(format!("setting '{path}' is not a whole number")),
                    }
                }
                Some(serde_norway::Value::String(s)) => {
                    Name::parse(s).map(Value::Name).map_err(|e| e.to_string())
                }
                _ => Err(format!(
                    "setting '{path}' is missing or not a number or a name"
                )),
            };
        }
        Err(format!("placeholder '{{{key}}}' has no value"))
    }

    /// Fills a template with typed, quoted values.
    pub fn fill(&self, template: &CommandTemplate) -> Result<RemoteCommand, String> {
        let mut values = BTreeMap::new();
        for key in template.placeholders() {
            values.insert(key.as_str(), self.value(key)?);
        }
        template.render(&values).map_err(|e| e.to_string())
    }

    /// An inventory host name, written literally or as a placeholder.
    pub fn host(&self, host: &HostRef) -> Result<Name, String> {
        match host {
            HostRef::Named(name) => Ok(name.clone()),
            HostRef::Template(template) => {
                Name::parse(self.fill(template)?.as_str()).map_err(|e| e.to_string())
            }
        }
    }
}
