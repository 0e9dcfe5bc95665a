//! The playbook file, as an operator writes it (`playbooks/*.yaml`). Unknown keys are refused.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Playbook {
    pub name: String,
    pub description: String,
    pub triggers: Vec<Trigger>,
    /// The inventory host the run is about: one active run, cooldowns and the breaker are
    /// per target.
    pub target: String,
    #[serde(default)]
    pub automation: Automation,
    /// Data for the builtin probes and for templates (`{settings.canary.host}`).
    #[serde(default)]
    pub settings: BTreeMap<String, serde_norway::Value>,
    #[serde(default)]
    pub parameters: BTreeMap<String, Parameter>,
    pub diagnose: Vec<Probe>,
    pub causes: Vec<Cause>,
    /// Facts reported whatever the cause (mixed cases).
    #[serde(default)]
    pub report: Vec<String>,
    #[serde(default)]
    pub steps: BTreeMap<String, Step>,
    #[serde(default)]
    pub verify: Vec<String>,
    pub escalation: Escalation,
    /// How long a human has to decide an approval, unless a step says otherwise (default 1h).
    pub approval_window: Option<String>,
    /// Named time intervals, as Alertmanager's: guards name them as `active` or `mute`.
    #[serde(default)]
    pub time_intervals: BTreeMap<String, Vec<TimeInterval>>,
}

/// An alert that starts this playbook: every matcher given must hold. `alertname`,
/// `check_name` and `source` are shorthands for `name="value"` matchers; `matchers` are
/// Alertmanager-style (`=`, `!=`, `=~`, `!~`) over the alert's name, labels, source and check
/// (see [`super::matcher`]).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    pub alertname: Option<String>,
    pub check_name: Option<String>,
    /// Only from this source (`alertmanager`, `sweep`, `pbs`, ...).
    pub source: Option<String>,
    #[serde(default)]
    pub matchers: Vec<String>,
}

impl Trigger {
    /// The trigger as one route: its shorthands and its matchers, compiled.
    pub fn route(&self) -> Result<super::matcher::Route, String> {
        use super::matcher::Matcher;
        let mut matchers = Vec::new();
        for (name, value) in [
            ("alertname", &self.alertname),
            ("check_name", &self.check_name),
            ("source", &self.source),
        ] {
            if let Some(value) = value {
                matchers.push(Matcher::equal(name, value));
            }
        }
        for text in &self.matchers {
            matchers.push(Matcher::parse(text)?);
        }
        if matchers.is_empty() {
            return Err("a trigger needs alertname, check_name, source or matchers".to_owned());
        }
        Ok(super::matcher::Route(matchers))
    }
}

/// Which mutating steps need a human.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Automation {
    /// Every one.
    Manual,
    /// Every one, and an expired approval follows the step's `on_timeout`.
    Prompted,
    /// Only high-risk ones.
    #[default]
    Standard,
    /// None, except steps marked `approval: always`.
    Autonomous,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    Vmid,
    Name,
    /// `vm`, `ct` or `host`.
    BackupType,
    Fingerprint,
    Path,
}

/// A value taken from the alert's labels, validated by type before anything uses it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Parameter {
    /// Labels to read, first present wins.
    pub labels: Vec<String>,
    #[serde(rename = "type")]
    pub kind: ValueType,
    #[serde(default)]
    pub optional: bool,
    /// A template (`{pbs.datastore}`) used when no label is present.
    pub default: Option<String>,
}

/// A command run over SSH: `host` is an inventory name or a placeholder for one.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SshCall {
    pub host: String,
    pub run: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PbsRead {
    Version,
    Datastores,
    DatastoreUsage,
    BackupTasks,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PveRead {
    Storage,
    BackupJobs,
    Guests,
}

/// Probes whose logic is code: they read several sources and compute one result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Builtin {
    StaleGroups,
    VzdumpLogs,
    VzdumpRunning,
}

/// A read-only probe. Exactly one of `ssh`, `pbs`, `pve`, `builtin`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    pub id: String,
    pub ssh: Option<SshCall>,
    pub pbs: Option<PbsRead>,
    pub pve: Option<PveRead>,
    pub builtin: Option<Builtin>,
    /// Probes to wait for; the rest run in parallel.
    #[serde(default)]
    pub after: Vec<String>,
    pub timeout: Option<String>,
    #[serde(default)]
    pub facts: BTreeMap<String, Extract>,
}

/// How a fact comes out of a probe's result. Exactly one of `ok`, `exit_ok`, `regex`, `json`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Extract {
    /// The probe answered at all.
    pub ok: Option<bool>,
    /// The command exited 0.
    pub exit_ok: Option<bool>,
    /// A multi-line regex over stdout: the first capture group, or whether it matched.
    pub regex: Option<String>,
    /// A JSON pointer into the result.
    pub json: Option<String>,
    /// Facts used in templates must say what they are.
    #[serde(rename = "type")]
    pub kind: Option<ValueType>,
}

/// A condition over facts.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub all: Option<Vec<Condition>>,
    pub any: Option<Vec<Condition>>,
    pub not: Option<Box<Condition>>,
    pub fact: Option<String>,
    pub is: Option<serde_norway::Value>,
    pub empty: Option<bool>,
    pub contains: Option<serde_norway::Value>,
    pub equals_fact: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Cause {
    pub id: String,
    pub when: Condition,
    pub remediate: Vec<String>,
    /// Steps offered, never run without an approval.
    #[serde(default)]
    pub offer: Vec<String>,
    /// `once`: one approval, listing every command, covers the whole remediation sequence.
    #[serde(default)]
    pub approval: SequenceApproval,
}

/// How a cause's remediation asks a human.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SequenceApproval {
    /// Each step that needs approval asks for itself.
    #[default]
    Each,
    /// The first step that needs approval asks for the whole sequence; the rest do not ask.
    Once,
}

/// When a step may act: checked just before it acts; while it may not, it waits and re-checks
/// every `every`, and escalates after `max_wait`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Guard {
    /// Facts that must hold, from read-only probes re-run at that moment.
    #[serde(default)]
    pub require: Vec<GuardFact>,
    /// Named `time_intervals` the step may act in (any of them); none named: any time.
    #[serde(default)]
    pub active: Vec<String>,
    /// Named `time_intervals` the step must not act in.
    #[serde(default)]
    pub mute: Vec<String>,
    pub max_wait: Option<String>,
    /// How often to re-check (default 30s).
    pub every: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GuardFact {
    pub probe: String,
    pub holds: Condition,
}

/// One time interval, as Alertmanager's `time_intervals` entries: every field given must
/// match. `times` are `HH:MM-HH:MM` (start inclusive, end exclusive, up to 24:00); weekdays
/// are `monday` or ranges `monday:friday`; `location` is `UTC` (the default) or a fixed offset
/// such as `+13:00`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TimeInterval {
    #[serde(default)]
    pub times: Vec<String>,
    #[serde(default)]
    pub weekdays: Vec<String>,
    pub location: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    /// Read-only: never needs approval.
    None,
    Low,
    Medium,
    High,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalPolicy {
    /// As the automation level says for the step's risk.
    #[default]
    Auto,
    /// Always ask, whatever the level.
    Always,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnTimeout {
    #[default]
    Reject,
    Approve,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Retries {
    pub attempts: u32,
    pub backoff: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SetFingerprint {
    pub storage: String,
    pub fingerprint: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EnableJob {
    pub job: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ForgetGroups {
    /// The datastore the groups were read from (a template): the cleanup deletes there and
    /// nowhere else.
    pub datastore: String,
    pub groups: String,
}

/// `host: all` and `vmids: all` back up everything everywhere.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Vzdump {
    pub host: String,
    pub vmids: serde_norway::Value,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Poll {
    pub probe: String,
    pub until: Condition,
    pub every: String,
}

/// A step. Exactly one action: `ssh`, `pve_vzdump`, `pve_set_fingerprint`, `pve_enable_job`,
/// `pbs_forget_groups`, `poll`, `wait`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub ssh: Option<SshCall>,
    pub pve_vzdump: Option<Vzdump>,
    pub pve_set_fingerprint: Option<SetFingerprint>,
    pub pve_enable_job: Option<EnableJob>,
    pub pbs_forget_groups: Option<ForgetGroups>,
    pub poll: Option<Poll>,
    pub wait: Option<String>,
    pub risk: Risk,
    #[serde(default)]
    pub approval: ApprovalPolicy,
    #[serde(default)]
    pub on_timeout: OnTimeout,
    /// How long a human has to decide (default: the playbook's `approval_window`).
    pub approval_window: Option<String>,
    /// Conditions checked just before the step acts.
    pub guard: Option<Guard>,
    /// Safe to run again after a crash left it `started` but not `finished`.
    #[serde(default)]
    pub idempotent: bool,
    /// For a non-idempotent step: the probe to run again before deciding whether to repeat it.
    pub recheck: Option<String>,
    /// Run only when this holds; otherwise the run escalates.
    pub only_if: Option<Condition>,
    /// Exit codes that count as success (default `[0]`), each with an optional reason that
    /// every surface shows next to it ("exit 32: nothing was mounted").
    pub accept_exit: Option<Vec<AcceptExit>>,
    /// What the step changes, in words, for the approval card that asks a human (for
    /// example "detaches the NFS datastore from PBS, even while busy").
    pub changes: Option<String>,
    /// At most once per this long per target.
    pub cooldown: Option<String>,
    pub retries: Option<Retries>,
    pub timeout: String,
}

/// One accepted exit code: `32`, or `{ code: 32, reason: "nothing was mounted" }`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(
    untagged,
    expecting = "an exit code such as 32, or { code: 32, reason: \"why 32 is fine\" }"
)]
pub enum AcceptExit {
    Code(u32),
    Explained(ExplainedExit),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainedExit {
    pub code: u32,
    pub reason: String,
}

impl AcceptExit {
    pub fn code(&self) -> u32 {
        match self {
            Self::Code(code) | Self::Explained(ExplainedExit { code, .. }) => *code,
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Code(_) => None,
            Self::Explained(explained) => Some(&explained.reason),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Escalation {
    pub summary: String,
}
