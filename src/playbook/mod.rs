//! Playbooks: declarative YAML an operator can read and edit without recompiling
//! (`playbooks/*.yaml`). [`load_dir`] parses every file and validates it, reporting each
//! problem with its file and line: unknown keys, bad references, unreachable steps, facts used
//! but never produced, templates that are not one simple command or that use untyped input.
//!
//! A playbook holds triggers; typed parameters from alert labels; read-only probes (run in
//! parallel) and the facts extracted from them; causes as ordered conditions over facts, each
//! with its remediation steps; verification steps; per-step risk, approval policy, timeout,
//! retries, cooldown, guards and `idempotent` flag; and an escalation.
//!
//! A file that validates is compiled ([`compiled`]) once, when it loads: the engine never parses
//! a duration, a template or an action again.

pub mod builtin;
pub mod compiled;
pub mod matcher;
pub mod model;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::Problem;
use crate::exec::command::{CommandTemplate, Name};
use model::{Condition, Step, ValueType};

pub use compiled::Playbook;

/// A playbook with where it came from.
#[derive(Debug, Clone)]
pub struct PlaybookFile {
    pub path: PathBuf,
    pub playbook: Playbook,
    /// The text it was parsed from, which a run pins.
    pub version: PlaybookVersion,
}

/// A playbook's text under its content hash: what a run pins when it is created, so the run
/// is driven by the text it started with whatever later happens to the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaybookVersion {
    /// SHA-256 of the text, lower-case hex.
    pub hash: String,
    pub text: std::sync::Arc<str>,
}

impl PlaybookVersion {
    pub fn of(text: &str) -> Self {
        use sha2::Digest;
        Self {
            hash: hex::encode(sha2::Sha256::digest(text.as_bytes())),
            text: text.into(),
        }
    }
}

/// Inventory values templates may use, and what they are.
const INVENTORY_PLACEHOLDERS: [(&str, ValueType); 6] = [
    ("pbs.host", ValueType::Name),
    ("pbs.datastore", ValueType::Name),
    ("pbs.mountpoint", ValueType::Path),
    ("pbs.vm.host", ValueType::Name),
    ("pbs.vm.vmid", ValueType::Vmid),
    ("pve.storage", ValueType::Name),
];

/// Loads and validates every `*.yaml`/`*.yml` in `dir`, reporting every problem.
pub fn load_dir(dir: &Path) -> Result<Vec<PlaybookFile>, Vec<Problem>> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        vec![Problem {
            location: dir.display().to_string(),
            message: format!("cannot read the playbook directory: {e}"),
        }]
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    paths.sort();
    let mut problems = Vec::new();
    let mut files: Vec<PlaybookFile> = Vec::new();
    for path in paths {
        match std::fs::read_to_string(&path) {
            Ok(text) => match parse(&path, &text) {
                Ok(playbook) => {
                    if let Some(other) = files.iter().find(|f| f.playbook.name == playbook.name) {
                        problems.push(Problem {
                            location: locate(&path, &text, &format!("name: {}", playbook.name)),
                            message: format!(
                                "playbook name '{}' is also used by {}",
                                playbook.name,
                                other.path.display()
                            ),
                        });
                    }
                    let version = PlaybookVersion::of(&text);
                    files.push(PlaybookFile {
                        path,
                        playbook,
                        version,
                    });
                }
                Err(found) => problems.extend(found),
            },
            Err(e) => problems.push(Problem {
                location: path.display().to_string(),
                message: format!("cannot read: {e}"),
            }),
        }
    }
    if problems.is_empty() {
        Ok(files)
    } else {
        Err(problems)
    }
}

/// Parses, validates and compiles one playbook file.
pub fn parse(path: &Path, text: &str) -> Result<Playbook, Vec<Problem>> {
    let playbook: model::Playbook = serde_norway::from_str(text).map_err(|e| {
        let location = match e.location() {
            Some(at) => format!("{}:{}:{}", path.display(), at.line(), at.column()),
            None => path.display().to_string(),
        };
        vec![Problem {
            location,
            message: e.to_string(),
        }]
    })?;
    let problems = Validator::new(path, text, &playbook).run();
    if !problems.is_empty() {
        return Err(problems);
    }
    compiled::compile(&playbook).map_err(|message| {
        vec![Problem {
            location: path.display().to_string(),
            message,
        }]
    })
}

/// `file:line` of the first line containing `needle`, or just the file.
fn locate(path: &Path, text: &str, needle: &str) -> String {
    match text.lines().position(|line| line.contains(needle)) {
        Some(index) => format!("{}:{}", path.display(), index + 1),
        None => path.display().to_string(),
    }
}

/// Parses `500ms`, `10s`, `30m`, `2h`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let seconds = match unit {
        "ms" => return Some(Duration::from_millis(number)),
        "s" => number,
        "m" => number.checked_mul(60)?,
        "h" => number.checked_mul(3600)?,
        _ => return None,
    };
    Some(Duration::from_secs(seconds))
}

struct Validator<'a> {
    path: &'a Path,
    text: &'a str,
    playbook: &'a model::Playbook,
    problems: Vec<Problem>,
    /// Facts the probes produce, with their declared type.
    facts: BTreeMap<String, Option<ValueType>>,
    probes: BTreeSet<String>,
}

impl<'a> Validator<'a> {
    fn new(path: &'a Path, text: &'a str, playbook: &'a model::Playbook) -> Self {
        Self {
            path,
            text,
            playbook,
            problems: Vec::new(),
            facts: BTreeMap::new(),
            probes: BTreeSet::new(),
        }
    }

    fn problem(&mut self, needle: &str, message: impl Into<String>) {
        let location = locate(self.path, self.text, needle);
        self.problems.push(Problem {
            location,
            message: message.into(),
        });
    }

    fn run(mut self) -> Vec<Problem> {
        let playbook = self.playbook;
        if Name::parse(&playbook.name).is_err() {
            self.problem(
                "name:",
                format!("name '{}' must be [A-Za-z0-9_.-]+", playbook.name),
            );
        }
        if Name::parse(&playbook.target).is_err() {
            self.problem(
                "target:",
                format!(
                    "target '{}' must be an inventory host name",
                    playbook.target
                ),
            );
        }
        if playbook.triggers.is_empty() {
            self.problem("triggers:", "at least one trigger is needed");
        }
        for trigger in &playbook.triggers {
            if trigger.alertname.is_some() && trigger.check_name.is_some() {
                self.problem(
                    "triggers:",
                    "a trigger names alertname or check_name, not both (an alert has one name)",
                );
            }
            for text in &trigger.matchers {
                if let Err(error) = matcher::Matcher::parse(text) {
                    self.problem(text, error);
                }
            }
            if trigger.matchers.is_empty()
                && let Err(error) = trigger.route()
            {
                self.problem("triggers:", error);
            }
        }
        for (name, parameter) in &playbook.parameters {
            if parameter.labels.is_empty() {
                self.problem(
                    &format!("{name}:"),
                    format!("parameter '{name}' reads no label"),
                );
            }
            if let Some(default) = &parameter.default {
                self.template(
                    &format!("{name}:"),
                    default,
                    &format!("parameter '{name}' default"),
                );
            }
        }
        self.probes_and_facts();
        for cause in &playbook.causes {
            let at = format!("id: {}", cause.id);
            self.condition(&at, &cause.when, &format!("cause '{}'", cause.id));
            for step in cause.remediate.iter().chain(&cause.offer) {
                if !playbook.steps.contains_key(step) {
                    self.problem(
                        &at,
                        format!(
                            "cause '{}' names step '{step}', which is not defined under steps",
                            cause.id
                        ),
                    );
                }
            }
        }
        let mut ids = BTreeSet::new();
        for cause in &playbook.causes {
            if !ids.insert(&cause.id) {
                self.problem(
                    &format!("id: {}", cause.id),
                    format!("cause id '{}' is used twice", cause.id),
                );
            }
        }
        for fact in &playbook.report {
            if !self.facts.contains_key(fact) {
                self.problem(
                    "report:",
                    format!("report names fact '{fact}', which no probe produces"),
                );
            }
        }
        for step in &playbook.verify {
            if !playbook.steps.contains_key(step) {
                self.problem(
                    "verify:",
                    format!("verify names step '{step}', which is not defined under steps"),
                );
            }
        }
        for (name, step) in &playbook.steps {
            self.step(name, step);
        }
        let reachable: BTreeSet<&String> = playbook
            .causes
            .iter()
            .flat_map(|c| c.remediate.iter().chain(&c.offer))
            .chain(&playbook.verify)
            .collect();
        for name in playbook.steps.keys() {
            if !reachable.contains(name) {
                self.problem(&format!("  {name}:"), format!("step '{name}' is unreachable: no cause remediates or offers it and verify does not run it"));
            }
        }
        self.template(
            "escalation:",
            &playbook.escalation.summary,
            "escalation summary",
        );
        if let Some(window) = &playbook.approval_window {
            self.duration("approval_window:", window, "approval_window");
        }
        for (name, intervals) in &playbook.time_intervals {
            for interval in intervals {
                if let Err(e) = compiled::TimeInterval::parse(interval) {
                    self.problem(&format!("{name}:"), format!("time interval '{name}': {e}"));
                }
            }
        }
        self.problems
    }

    fn guard(&mut self, at: &str, guard: &model::Guard, what: &str) {
        for fact in &guard.require {
            if !self.probes.contains(&fact.probe) {
                self.problem(
                    at,
                    format!(
                        "{what}: the guard re-runs probe '{}', which is not a probe",
                        fact.probe
                    ),
                );
            }
            self.condition(at, &fact.holds, &format!("{what} guard"));
        }
        for name in guard.active.iter().chain(&guard.mute) {
            if !self.playbook.time_intervals.contains_key(name) {
                self.problem(
                    at,
                    format!("{what}: the guard names time interval '{name}', which is not defined under time_intervals"),
                );
            }
        }
        match &guard.max_wait {
            Some(max_wait) => self.duration(at, max_wait, &format!("{what} guard max_wait")),
            None => self.problem(
                at,
                format!("{what}: the guard needs max_wait, how long the step may wait before the run escalates"),
            ),
        }
        if let Some(every) = &guard.every {
            self.duration(at, every, &format!("{what} guard re-check interval"));
        }
    }

    fn probes_and_facts(&mut self) {
        let playbook = self.playbook;
        for probe in &playbook.diagnose {
            let at = format!("id: {}", probe.id);
            if Name::parse(&probe.id).is_err() {
                self.problem(
                    &at,
                    format!("probe id '{}' must be [A-Za-z0-9_.-]+", probe.id),
                );
            }
            for earlier in &probe.after {
                if !self.probes.contains(earlier) {
                    self.problem(&at, format!("probe '{}' waits for '{earlier}', which is not a probe defined before it", probe.id));
                }
            }
            if !self.probes.insert(probe.id.clone()) {
                self.problem(&at, format!("probe id '{}' is used twice", probe.id));
            }
            let actions = [
                probe.ssh.is_some(),
                probe.pbs.is_some(),
                probe.pve.is_some(),
                probe.builtin.is_some(),
            ];
            if actions.iter().filter(|a| **a).count() != 1 {
                self.problem(
                    &at,
                    format!(
                        "probe '{}' needs exactly one of ssh, pbs, pve, builtin",
                        probe.id
                    ),
                );
            }
            if let Some(ssh) = &probe.ssh {
                self.ssh(&at, &ssh.host, &ssh.run, &format!("probe '{}'", probe.id));
            }
            if let Some(timeout) = &probe.timeout {
                self.duration(&at, timeout, &format!("probe '{}' timeout", probe.id));
            }
            for (fact, extract) in &probe.facts {
                let ways = [
                    extract.ok.is_some(),
                    extract.exit_ok.is_some(),
                    extract.regex.is_some(),
                    extract.json.is_some(),
                ];
                if ways.iter().filter(|w| **w).count() != 1 {
                    self.problem(
                        &format!("{fact}:"),
                        format!("fact '{fact}' needs exactly one of ok, exit_ok, regex, json"),
                    );
                }
                if let Some(pattern) = &extract.regex
                    && let Err(e) = regex::Regex::new(pattern)
                {
                    self.problem(
                        &format!("{fact}:"),
                        format!("fact '{fact}': the regex does not compile: {e}"),
                    );
                }
                if let Some(pointer) = &extract.json
                    && !pointer.starts_with('/')
                {
                    self.problem(
                        &format!("{fact}:"),
                        format!(
                            "fact '{fact}': json '{pointer}' must be a JSON pointer starting with /"
                        ),
                    );
                }
                if self.facts.insert(fact.clone(), extract.kind).is_some() {
                    self.problem(
                        &format!("{fact}:"),
                        format!("fact '{fact}' is produced by two probes"),
                    );
                }
            }
        }
    }

    fn step(&mut self, name: &str, step: &Step) {
        let at = format!("  {name}:");
        let what = format!("step '{name}'");
        let actions = [
            step.ssh.is_some(),
            step.pve_vzdump.is_some(),
            step.pve_set_fingerprint.is_some(),
            step.pve_enable_job.is_some(),
            step.pbs_forget_groups.is_some(),
            step.poll.is_some(),
            step.wait.is_some(),
        ];
        if actions.iter().filter(|a| **a).count() != 1 {
            self.problem(&at, format!("{what} needs exactly one of ssh, pve_vzdump, pve_set_fingerprint, pve_enable_job, pbs_forget_groups, poll, wait"));
        }
        if let Some(ssh) = &step.ssh {
            self.ssh(&at, &ssh.host, &ssh.run, &what);
        }
        if let Some(vzdump) = &step.pve_vzdump {
            if vzdump.host != "all" {
                self.host(&at, &vzdump.host, &what);
            }
            match &vzdump.vmids {
                serde_norway::Value::String(all) if all == "all" => {}
                serde_norway::Value::Sequence(ids) => {
                    for id in ids {
                        match id {
                            serde_norway::Value::String(template) => {
                                self.template(&at, template, &what)
                            }
                            serde_norway::Value::Number(_) => {}
                            _ => {
                                self.problem(&at, format!("{what}: vmids are numbers or templates"))
                            }
                        }
                    }
                }
                _ => self.problem(&at, format!("{what}: vmids is `all` or a list")),
            }
        }
        if let Some(set) = &step.pve_set_fingerprint {
            self.template(&at, &set.storage, &what);
            self.template(&at, &set.fingerprint, &what);
        }
        if let Some(enable) = &step.pve_enable_job {
            self.template(&at, &enable.job, &what);
        }
        if let Some(forget) = &step.pbs_forget_groups {
            self.template(&at, &forget.datastore, &what);
            self.fact_reference(&at, &forget.groups, &what);
        }
        if let Some(poll) = &step.poll {
            if !self.probes.contains(&poll.probe) {
                self.problem(
                    &at,
                    format!("{what} polls '{}', which is not a probe", poll.probe),
                );
            }
            self.condition(&at, &poll.until, &what);
            self.duration(&at, &poll.every, &format!("{what} poll interval"));
        }
        if let Some(wait) = &step.wait {
            self.duration(&at, wait, &format!("{what} wait"));
        }
        if let Some(recheck) = &step.recheck
            && !self.probes.contains(recheck)
        {
            self.problem(
                &at,
                format!("{what} rechecks '{recheck}', which is not a probe"),
            );
        }
        if !step.idempotent
            && step.recheck.is_none()
            && step.risk != model::Risk::None
            && step.poll.is_none()
            && step.wait.is_none()
        {
            self.problem(&at, format!("{what} is neither idempotent nor has a recheck probe: after a crash mid-step runbookd could not tell whether to run it again"));
        }
        if let Some(condition) = &step.only_if {
            self.condition(&at, condition, &what);
        }
        self.accept_exit(&at, step.accept_exit.as_deref().unwrap_or_default(), &what);
        if let Some(cooldown) = &step.cooldown {
            self.duration(&at, cooldown, &format!("{what} cooldown"));
        }
        if let Some(retries) = &step.retries {
            self.duration(&at, &retries.backoff, &format!("{what} retry backoff"));
            if retries.attempts == 0 || retries.attempts > 20 {
                self.problem(&at, format!("{what}: retries.attempts must be 1-20"));
            }
        }
        self.duration(&at, &step.timeout, &format!("{what} timeout"));
        if let Some(window) = &step.approval_window {
            self.duration(&at, window, &format!("{what} approval_window"));
        }
        if let Some(guard) = &step.guard {
            self.guard(&at, guard, &what);
        }
    }

    /// Exit codes are 0-255, each listed once; a reason says something.
    fn accept_exit(&mut self, at: &str, accepted: &[model::AcceptExit], what: &str) {
        let mut seen = BTreeSet::new();
        for exit in accepted {
            let code = exit.code();
            if code > 255 {
                self.problem(
                    at,
                    format!("{what}: accept_exit {code} is not an exit code (0-255)"),
                );
            }
            if !seen.insert(code) {
                self.problem(at, format!("{what}: accept_exit lists {code} twice"));
            }
            if exit.reason().is_some_and(|r| r.trim().is_empty()) {
                self.problem(
                    at,
                    format!("{what}: accept_exit {code} has an empty reason"),
                );
            }
        }
    }

    fn duration(&mut self, at: &str, text: &str, what: &str) {
        match parse_duration(text) {
            Some(d) if !d.is_zero() => {}
            _ => self.problem(
                at,
                format!("{what}: '{text}' is not a duration like 500ms, 10s, 30m or 2h"),
            ),
        }
    }

    fn host(&mut self, at: &str, host: &str, what: &str) {
        if host.starts_with('{') {
            self.template(at, host, what);
        } else if Name::parse(host).is_err() {
            self.problem(
                at,
                format!("{what}: host '{host}' must be an inventory name or a placeholder for one"),
            );
        }
    }

    fn ssh(&mut self, at: &str, host: &str, run: &str, what: &str) {
        self.host(at, host, what);
        self.template(at, run, what);
    }

    /// A template must be one simple command whose placeholders are all typed.
    fn template(&mut self, at: &str, text: &str, what: &str) {
        let template = match CommandTemplate::parse(text) {
            Ok(t) => t,
            Err(e) => {
                self.problem(at, format!("{what}: {e}"));
                return;
            }
        };
        for placeholder in template.placeholders() {
            if let Some(message) = self.untyped(placeholder) {
                self.problem(
                    at,
                    format!("{what}: placeholder '{{{placeholder}}}' {message}"),
                );
            }
        }
    }

    /// Why a placeholder cannot be filled with a typed value, if it cannot.
    fn untyped(&self, placeholder: &str) -> Option<String> {
        if INVENTORY_PLACEHOLDERS
            .iter()
            .any(|(name, _)| *name == placeholder)
            || self.playbook.parameters.contains_key(placeholder)
        {
            return None;
        }
        if let Some(fact) = placeholder.strip_prefix("facts.") {
            return match self.facts.get(fact) {
                None => Some(format!("uses fact '{fact}', which no probe produces")),
                Some(None) => Some(format!(
                    "uses fact '{fact}', which declares no type: templates take only typed input"
                )),
                Some(Some(_)) => None,
            };
        }
        if let Some(path) = placeholder.strip_prefix("settings.") {
            let mut value = None::<&serde_norway::Value>;
            for (i, part) in path.split('.').enumerate() {
                value = if i == 0 {
                    self.playbook.settings.get(part)
                } else {
                    value.and_then(|v| v.get(part))
                };
            }
            return match value {
                Some(serde_norway::Value::Number(n)) if n.as_u64().is_some() => None,
                Some(serde_norway::Value::String(s)) if Name::parse(s).is_ok() => None,
                Some(_) => Some("is a setting that is not a whole number or a name".to_owned()),
                None => Some("names a setting that does not exist".to_owned()),
            };
        }
        Some("is not a parameter, an inventory value (pbs.host, pbs.mountpoint, ...), a setting or a fact".to_owned())
    }

    /// `{facts.X}` standing alone, for steps that take a fact's whole value.
    fn fact_reference(&mut self, at: &str, text: &str, what: &str) {
        let fact = text
            .strip_prefix("{facts.")
            .and_then(|t| t.strip_suffix('}'));
        match fact {
            Some(fact) if self.facts.contains_key(fact) => {}
            _ => self.problem(
                at,
                format!("{what}: '{text}' must be {{facts.NAME}} for a fact a probe produces"),
            ),
        }
    }

    fn condition(&mut self, at: &str, condition: &Condition, what: &str) {
        let forms = [
            condition.all.is_some(),
            condition.any.is_some(),
            condition.not.is_some(),
            condition.fact.is_some(),
        ];
        if forms.iter().filter(|f| **f).count() != 1 {
            self.problem(
                at,
                format!("{what}: a condition is exactly one of all, any, not, fact"),
            );
            return;
        }
        for inner in condition.all.iter().chain(&condition.any).flatten() {
            self.condition(at, inner, what);
        }
        if let Some(inner) = &condition.not {
            self.condition(at, inner, what);
        }
        if let Some(fact) = &condition.fact {
            let tests = [
                condition.is.is_some(),
                condition.empty.is_some(),
                condition.contains.is_some(),
                condition.equals_fact.is_some(),
            ];
            if tests.iter().filter(|t| **t).count() != 1 {
                self.problem(at, format!("{what}: fact '{fact}' needs exactly one of is, empty, contains, equals_fact"));
            }
            for used in std::iter::once(fact).chain(&condition.equals_fact) {
                if !self.facts.contains_key(used) {
                    self.problem(
                        at,
                        format!("{what} uses fact '{used}', which no probe produces"),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("30m"), Some(Duration::from_secs(1800)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        for bad in ["", "10", "s", "1.5s", "10d", "-1s"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }
}
