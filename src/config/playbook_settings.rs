//! `[playbook_settings.NAME]`: an estate's values for a playbook's `settings` (the canary guest,
//! the decommissioned groups, the backup schedule, the staleness threshold), so nobody forks a
//! shipped playbook to change them. Each override must name a setting the playbook has, keep
//! the shape of the playbook's value, and, for the settings the builtins read, hold a value
//! they accept; `runbookd check` reports every problem at its line in the config.

use std::collections::BTreeMap;

use serde_norway::Value;

use super::{Config, ConfigSource, Problem};
use crate::exec::command::{Name, Vmid};
use crate::playbook::compiled::BackupSettings;
use crate::playbook::{PlaybookFile, PlaybookVersion};

/// Playbook name → setting name → value.
pub type PlaybookSettings = BTreeMap<String, BTreeMap<String, toml::Value>>;

impl Config {
    /// Replaces the playbooks' settings with the config's overrides, or reports every override
    /// that names no playbook or setting, changes a value's shape, or is out of range.
    pub fn apply_playbook_settings(
        &self,
        source: &ConfigSource,
        files: &mut [PlaybookFile],
    ) -> Result<(), Vec<Problem>> {
        let mut problems = Vec::new();
        for (playbook_name, overrides) in &self.playbook_settings {
            let key = format!("playbook_settings.{playbook_name}");
            let Some(file) = files.iter_mut().find(|f| &f.playbook.name == playbook_name) else {
                let known: Vec<&str> = files.iter().map(|f| f.playbook.name.as_str()).collect();
                problems.push(Problem {
                    location: source.locate_key(&key),
                    message: format!(
                        "{key}: no playbook is named '{playbook_name}' (loaded: {})",
                        known.join(", ")
                    ),
                });
                continue;
            };
            let mut changed = false;
            for (setting, value) in overrides {
                let key = format!("{key}.{setting}");
                let checked = match file.playbook.settings.get(setting) {
                    None => Err(format!(
                        "playbook '{playbook_name}' has no setting '{setting}' (it has: {})",
                        file.playbook
                            .settings
                            .keys()
                            .map(String::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                    Some(default) => serde_norway::to_value(value)
                        .map_err(|e| e.to_string())
                        .and_then(|value| {
                            same_shape(default, &value)?;
                            check_value(setting, &value, &mut file.playbook.backups)?;
                            Ok(value)
                        }),
                };
                match checked {
                    Ok(value) => {
                        file.playbook.settings.insert(setting.clone(), value);
                        changed = true;
                    }
                    Err(message) => problems.push(Problem {
                        location: source.locate_key(&key),
                        message: format!("{key}: {message}"),
                    }),
                }
            }
            if changed {
                match pinned_text(&file.version.text, &file.playbook.settings) {
                    Ok(text) => file.version = PlaybookVersion::of(&text),
                    Err(message) => problems.push(Problem {
                        location: source.locate_key(&key),
                        message: format!("{key}: {message}"),
                    }),
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// The playbook's text with `settings` replaced: what a run pins, so a run keeps the estate's
/// values it started with even when the config changes later.
fn pinned_text(text: &str, settings: &BTreeMap<String, Value>) -> Result<String, String> {
    let mut document: Value = serde_norway::from_str(text).map_err(|e| e.to_string())?;
    let Value::Mapping(map) = &mut document else {
        return Err("the playbook is not a mapping".to_owned());
    };
    map.insert(
        Value::String("settings".to_owned()),
        serde_norway::to_value(settings).map_err(|e| e.to_string())?,
    );
    serde_norway::to_string(&document).map_err(|e| e.to_string())
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "true or false",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a table",
        Value::Tagged(_) => "a tagged value",
    }
}

/// The override is what the playbook's own value is: the same kind, a table with the same
/// keys, a list whose items are like the playbook's first item.
fn same_shape(default: &Value, value: &Value) -> Result<(), String> {
    match (default, value) {
        (Value::Number(_), Value::Number(_))
        | (Value::String(_), Value::String(_))
        | (Value::Bool(_), Value::Bool(_)) => Ok(()),
        (Value::Sequence(items), Value::Sequence(new)) => match items.first() {
            Some(first) => new.iter().try_for_each(|item| same_shape(first, item)),
            None => Ok(()),
        },
        (Value::Mapping(fields), Value::Mapping(new)) => {
            for (field, inner) in fields {
                let name = field.as_str().unwrap_or("?");
                let given = new
                    .get(field)
                    .ok_or_else(|| format!("'{name}' is missing"))?;
                same_shape(inner, given).map_err(|e| format!("{name}: {e}"))?;
            }
            match new.keys().find(|k| !fields.contains_key(*k)) {
                Some(extra) => Err(format!("unknown key '{}'", extra.as_str().unwrap_or("?"))),
                None => Ok(()),
            }
        }
        _ => Err(format!(
            "must be {} like the playbook's, not {}",
            kind(default),
            kind(value)
        )),
    }
}

/// What the builtins and templates that read these settings accept; a backup setting that
/// passes is read into the playbook's typed `backups` at once.
fn check_value(setting: &str, value: &Value, backups: &mut BackupSettings) -> Result<(), String> {
    match setting {
        "canary" => {
            let host = value
                .get("host")
                .and_then(Value::as_str)
                .unwrap_or_default();
            Name::parse(host).map_err(|e| format!("host: {e}"))?;
            if !matches!(
                value.get("kind").and_then(Value::as_str),
                Some("lxc" | "qemu")
            ) {
                return Err("kind: must be \"lxc\" or \"qemu\"".into());
            }
            let vmid = value.get("vmid").and_then(Value::as_u64).unwrap_or(0);
            u32::try_from(vmid)
                .ok()
                .and_then(|id| Vmid::new(id).ok())
                .map(|_| ())
                .ok_or_else(|| format!("vmid: {vmid} is not a guest id (100..=999999999)"))
        }
        other => backups.read(other, value),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Overrides;
    use super::*;
    use std::io::Write;

    fn load(
        text: &str,
    ) -> (
        tempfile::NamedTempFile,
        Result<Vec<PlaybookFile>, Vec<String>>,
    ) {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        let (config, source) = Config::load(Some(file.path()), &Overrides::default()).unwrap();
        let mut files = crate::playbook::builtin::load_builtin().unwrap();
        let applied = config
            .apply_playbook_settings(&source, &mut files)
            .map(|()| files)
            .map_err(|problems| problems.iter().map(ToString::to_string).collect());
        (file, applied)
    }

    #[test]
    fn overrides_replace_the_playbooks_settings() {
        let (_file, files) = load(concat!(
            "[playbook_settings.pbs-backup-stale]\n",
            "stale_after_hours = 72\n",
            "schedule = \"03:30\"\n",
            "canary = { host = \"pihanga\", kind = \"qemu\", vmid = 151 }\n",
            "decommissioned = [\"vm/330\"]\n",
        ));
        let playbook = &files.unwrap()[0].playbook;
        let settings = &playbook.settings;
        assert_eq!(settings["stale_after_hours"].as_u64(), Some(72));
        assert_eq!(settings["schedule"].as_str(), Some("03:30"));
        assert_eq!(settings["canary"]["host"].as_str(), Some("pihanga"));
        assert_eq!(settings["canary"]["vmid"].as_u64(), Some(151));
        assert_eq!(settings["decommissioned"].as_sequence().unwrap().len(), 1);
        // What the builtins read, typed.
        assert_eq!(playbook.backups.stale_after_hours, 72);
        assert_eq!(
            playbook.backups.schedule,
            chrono::NaiveTime::from_hms_opt(3, 30, 0)
        );
        assert_eq!(
            playbook.backups.decommissioned,
            ["vm/330".to_owned()].into()
        );
    }

    #[test]
    fn every_bad_override_is_reported_at_its_line() {
        let (file, files) = load(concat!(
            "[playbook_settings.pbs-backup-stale]\n",
            "stale_after_hours = \"two days\"\n",
            "schedule = \"2am\"\n",
            "canary = { host = \"ruapehu\", vmid = 200 }\n",
            "decommissioned = [\"vm/330\", \"lxc/5\"]\n",
            "canary_host = \"ruapehu\"\n",
            "\n[playbook_settings.nfs-stale]\n",
            "x = 1\n",
        ));
        let printed = files.unwrap_err();
        let at = |line: usize| format!("{}:{line}:", file.path().display());
        let has = |line: usize, text: &str| {
            printed
                .iter()
                .any(|p| p.starts_with(&at(line)) && p.contains(text))
        };
        assert!(
            has(
                2,
                "stale_after_hours: must be a number like the playbook's, not a string"
            ),
            "{printed:#?}"
        );
        assert!(
            has(3, "schedule: must be a time of day as HH:MM"),
            "{printed:#?}"
        );
        assert!(has(4, "canary: 'kind' is missing"), "{printed:#?}");
        assert!(
            has(5, "'lxc/5' is not a backup group like vm/330"),
            "{printed:#?}"
        );
        assert!(
            has(
                6,
                "playbook 'pbs-backup-stale' has no setting 'canary_host'"
            ),
            "{printed:#?}"
        );
        assert!(has(8, "no playbook is named 'nfs-stale'"), "{printed:#?}");
        assert_eq!(printed.len(), 6, "{printed:#?}");
    }
}
