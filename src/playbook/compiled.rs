//! A playbook as the engine uses it: compiled once when it loads. Actions and probe kinds are
//! enums, durations are [`Duration`]s, templates and regexes are parsed, time intervals are
//! numbers. Nothing is parsed again while a run works.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Datelike, FixedOffset, NaiveTime, Timelike, Utc};

use super::model::{
    self, ApprovalPolicy, Automation, Builtin, Condition, Escalation, OnTimeout, PbsRead, PveRead,
    Risk, SequenceApproval, Trigger, ValueType,
};
use super::parse_duration;
use crate::exec::command::{CommandTemplate, Name, Vmid};

/// How long a human has to decide, unless the playbook or the step says otherwise.
pub const DEFAULT_APPROVAL_WINDOW: Duration = Duration::from_secs(3600);
/// How often a guard re-checks, unless it says otherwise.
pub const DEFAULT_GUARD_EVERY: Duration = Duration::from_secs(30);
const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Playbook {
    pub name: String,
    pub description: String,
    pub triggers: Vec<Trigger>,
    pub target: String,
    pub automation: Automation,
    /// For templates (`{settings.canary.host}`).
    pub settings: BTreeMap<String, serde_norway::Value>,
    /// The settings the backup builtins and the backup status read, parsed from `settings`.
    pub backups: BackupSettings,
    pub parameters: BTreeMap<String, Parameter>,
    pub diagnose: Vec<Probe>,
    pub causes: Vec<Cause>,
    pub report: Vec<String>,
    pub steps: BTreeMap<String, Step>,
    pub verify: Vec<String>,
    pub escalation: Escalation,
    /// The file as its author wrote it, for listings.
    pub source: model::Playbook,
}

impl Playbook {
    pub fn probe(&self, id: &str) -> Option<&Probe> {
        self.diagnose.iter().find(|p| p.id == id)
    }

    pub fn cause(&self, id: &str) -> Option<&Cause> {
        self.causes.iter().find(|c| c.id == id)
    }
}

/// The settings the backup builtins and `GET /api/v1/backups` read, parsed when the playbook
/// compiles (and again after the config overrides them), so a bad value stops the load rather
/// than falling back to a default while a run works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSettings {
    /// A group at least this many hours old is stale (`stale_after_hours`).
    pub stale_after_hours: u32,
    /// When the nightly backup job starts, UTC (`schedule`): a vzdump log older than its last
    /// start is stale.
    pub schedule: Option<NaiveTime>,
    /// Groups whose guest is gone, like `vm/330` (`decommissioned`): never remediated.
    pub decommissioned: BTreeSet<String>,
}

impl Default for BackupSettings {
    fn default() -> Self {
        Self {
            stale_after_hours: 48,
            schedule: None,
            decommissioned: BTreeSet::new(),
        }
    }
}

impl BackupSettings {
    /// Reads every setting these know from a playbook's `settings`.
    pub fn parse(settings: &BTreeMap<String, serde_norway::Value>) -> Result<Self, String> {
        let mut parsed = Self::default();
        for (name, value) in settings {
            parsed
                .read(name, value)
                .map_err(|e| format!("settings.{name}: {e}"))?;
        }
        Ok(parsed)
    }

    /// Reads one setting into its field; a setting these do not read is left alone. The one
    /// place that says what each accepts, for playbook files and config overrides alike.
    pub fn read(&mut self, name: &str, value: &serde_norway::Value) -> Result<(), String> {
        match name {
            "stale_after_hours" => {
                self.stale_after_hours = value
                    .as_u64()
                    .and_then(|hours| u32::try_from(hours).ok())
                    .filter(|hours| (1..=8760).contains(hours))
                    .ok_or("must be a whole number of hours in 1..=8760")?;
            }
            "schedule" => {
                self.schedule = Some(
                    value
                        .as_str()
                        .and_then(|at| NaiveTime::parse_from_str(at, "%H:%M").ok())
                        .ok_or("must be a time of day as HH:MM (UTC), like \"02:00\"")?,
                );
            }
            "decommissioned" => {
                let groups = value
                    .as_sequence()
                    .ok_or("must be a list of backup groups like vm/330 or ct/105")?;
                self.decommissioned = groups
                    .iter()
                    .map(|group| {
                        let text = group.as_str().unwrap_or_default();
                        let valid = text.split_once('/').is_some_and(|(kind, id)| {
                            matches!(kind, "vm" | "ct")
                                && id.parse().ok().and_then(|id| Vmid::new(id).ok()).is_some()
                        });
                        if valid {
                            Ok(text.to_owned())
                        } else {
                            Err(format!(
                                "'{text}' is not a backup group like vm/330 or ct/105"
                            ))
                        }
                    })
                    .collect::<Result<_, _>>()?;
            }
            _ => {}
        }
        Ok(())
    }

    /// The most recent start of the backup job at or before `now`, if the playbook names one.
    pub fn last_scheduled(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let today = now.date_naive().and_time(self.schedule?).and_utc();
        Some(if today <= now {
            today
        } else {
            today - chrono::Duration::days(1)
        })
    }
}

#[derive(Debug, Clone)]
pub struct Parameter {
    pub labels: Vec<String>,
    pub kind: ValueType,
    pub optional: bool,
    pub default: Option<CommandTemplate>,
}

/// An inventory host, written literally or as a placeholder.
#[derive(Debug, Clone)]
pub enum HostRef {
    Named(Name),
    Template(CommandTemplate),
}

#[derive(Debug, Clone)]
pub struct SshCall {
    pub host: HostRef,
    pub run: CommandTemplate,
}

#[derive(Debug, Clone)]
pub enum ProbeKind {
    Ssh(SshCall),
    Pbs(PbsRead),
    Pve(PveRead),
    Builtin(Builtin),
}

#[derive(Debug, Clone)]
pub struct Probe {
    pub id: String,
    pub kind: ProbeKind,
    pub after: Vec<String>,
    pub timeout: Duration,
    pub facts: BTreeMap<String, Extract>,
}

/// How a fact comes out of a probe's result.
#[derive(Debug, Clone)]
pub enum ExtractRule {
    Ok,
    ExitOk,
    /// Multi-line.
    Regex(regex::Regex),
    /// A JSON pointer.
    Json(String),
}

#[derive(Debug, Clone)]
pub struct Extract {
    pub rule: ExtractRule,
    pub kind: Option<ValueType>,
}

#[derive(Debug, Clone)]
pub struct Cause {
    pub id: String,
    pub when: Condition,
    pub remediate: Vec<String>,
    pub offer: Vec<String>,
    pub approval: SequenceApproval,
}

#[derive(Debug, Clone)]
pub enum VzdumpHosts {
    All,
    One(HostRef),
}

#[derive(Debug, Clone)]
pub enum VmidRef {
    Literal(Vmid),
    Template(CommandTemplate),
}

#[derive(Debug, Clone)]
pub enum VzdumpGuests {
    All,
    List(Vec<VmidRef>),
}

#[derive(Debug, Clone)]
pub struct Poll {
    pub probe: String,
    pub until: Condition,
    pub every: Duration,
}

/// What a step does: exactly one action.
#[derive(Debug, Clone)]
pub enum Action {
    Ssh(SshCall),
    Vzdump {
        hosts: VzdumpHosts,
        guests: VzdumpGuests,
    },
    SetFingerprint {
        storage: CommandTemplate,
        fingerprint: CommandTemplate,
    },
    EnableJob {
        job: CommandTemplate,
    },
    /// Forgets the groups a fact lists, from the datastore they were read from.
    ForgetGroups {
        datastore: CommandTemplate,
        fact: String,
    },
    Poll(Poll),
    Wait(Duration),
}

#[derive(Debug, Clone)]
pub struct Retries {
    pub attempts: u32,
    pub backoff: Duration,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub action: Action,
    pub risk: Risk,
    pub approval: ApprovalPolicy,
    pub on_timeout: OnTimeout,
    pub approval_window: Duration,
    pub idempotent: bool,
    pub recheck: Option<String>,
    pub only_if: Option<Condition>,
    pub accept_exit: Vec<AcceptedExit>,
    /// What it changes, in words (the playbook's `changes`), for approval cards.
    pub changes: Option<String>,
    pub cooldown: Option<Duration>,
    pub retries: Option<Retries>,
    pub timeout: Duration,
    pub guard: Option<Guard>,
}

/// An exit code the step accepts as success, and why it is fine when it is not 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedExit {
    pub code: u32,
    pub reason: Option<String>,
}

impl Step {
    /// The playbook's word on this exit code; `None`: the step failed.
    pub fn accepted_exit(&self, code: u32) -> Option<&AcceptedExit> {
        self.accept_exit.iter().find(|a| a.code == code)
    }
}

#[derive(Debug, Clone)]
pub struct GuardFact {
    pub probe: String,
    pub holds: Condition,
}

#[derive(Debug, Clone)]
pub struct Guard {
    pub require: Vec<GuardFact>,
    /// Named intervals the step may act in; empty: any time.
    pub active: Vec<(String, Vec<TimeInterval>)>,
    /// Named intervals the step must not act in.
    pub mute: Vec<(String, Vec<TimeInterval>)>,
    pub max_wait: Duration,
    pub every: Duration,
}

/// An Alertmanager-style time interval, compiled: minutes of the day, weekdays (0 = Monday).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeInterval {
    /// `[start, end)` in minutes after midnight; empty: all day.
    pub times: Vec<(u32, u32)>,
    /// Inclusive ranges of weekdays, Monday = 0; empty: every day.
    pub weekdays: Vec<(u32, u32)>,
    pub location: FixedOffset,
}

impl TimeInterval {
    /// Whether `at` falls in this interval, read in its location.
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        let local = at.with_timezone(&self.location);
        let minute = local.hour() * 60 + local.minute();
        let weekday = local.weekday().num_days_from_monday();
        let in_times = self.times.is_empty()
            || self
                .times
                .iter()
                .any(|(start, end)| (*start..*end).contains(&minute));
        let on_day = self.weekdays.is_empty()
            || self
                .weekdays
                .iter()
                .any(|(first, last)| (*first..=*last).contains(&weekday));
        in_times && on_day
    }

    pub fn parse(interval: &model::TimeInterval) -> Result<Self, String> {
        let times = interval
            .times
            .iter()
            .map(|t| parse_time_range(t))
            .collect::<Result<Vec<_>, _>>()?;
        let weekdays = interval
            .weekdays
            .iter()
            .map(|d| parse_weekday_range(d))
            .collect::<Result<Vec<_>, _>>()?;
        let location = match interval.location.as_deref() {
            None | Some("UTC") => FixedOffset::east_opt(0).expect("zero offset"),
            Some(offset) => parse_offset(offset)?,
        };
        Ok(Self {
            times,
            weekdays,
            location,
        })
    }
}

/// `HH:MM` to minutes after midnight; `24:00` is the end of the day.
fn parse_clock_time(text: &str) -> Option<u32> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    let minutes = h * 60 + m;
    (m < 60 && minutes <= 24 * 60).then_some(minutes)
}

fn parse_time_range(text: &str) -> Result<(u32, u32), String> {
    let bad = || {
        format!(
            "time range '{text}' must be HH:MM-HH:MM with the start before the end, such as 01:00-05:00"
        )
    };
    let (start, end) = text.split_once('-').ok_or_else(bad)?;
    let (Some(start), Some(end)) = (parse_clock_time(start.trim()), parse_clock_time(end.trim()))
    else {
        return Err(bad());
    };
    if start >= end {
        return Err(bad());
    }
    Ok((start, end))
}

const WEEKDAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

fn parse_weekday_range(text: &str) -> Result<(u32, u32), String> {
    let day = |d: &str| {
        WEEKDAYS
            .iter()
            .position(|w| w.eq_ignore_ascii_case(d.trim()))
            .map(|i| i as u32)
    };
    let bad = || {
        format!("weekday '{text}' must be a day such as monday, or a range such as monday:friday")
    };
    match text.split_once(':') {
        None => day(text).map(|d| (d, d)).ok_or_else(bad),
        Some((first, last)) => match (day(first), day(last)) {
            (Some(first), Some(last)) if first <= last => Ok((first, last)),
            _ => Err(bad()),
        },
    }
}

/// `+13:00` or `-05:30`.
fn parse_offset(text: &str) -> Result<FixedOffset, String> {
    let bad = || {
        format!(
            "location '{text}' must be UTC or a fixed offset such as +13:00 (time zone names are not supported)"
        )
    };
    let (sign, rest) = match text.as_bytes().first() {
        Some(b'+') => (1, &text[1..]),
        Some(b'-') => (-1, &text[1..]),
        _ => return Err(bad()),
    };
    let minutes = parse_clock_time(rest)
        .filter(|m| *m < 24 * 60)
        .ok_or_else(bad)?;
    FixedOffset::east_opt(sign * minutes as i32 * 60).ok_or_else(bad)
}

fn duration(text: &str, what: &str) -> Result<Duration, String> {
    parse_duration(text)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{what}: '{text}' is not a duration like 500ms, 10s, 30m or 2h"))
}

fn template(text: &str) -> Result<CommandTemplate, String> {
    CommandTemplate::parse(text).map_err(|e| e.to_string())
}

fn host(text: &str) -> Result<HostRef, String> {
    if text.starts_with('{') {
        template(text).map(HostRef::Template)
    } else {
        Name::parse(text)
            .map(HostRef::Named)
            .map_err(|e| e.to_string())
    }
}

fn ssh(call: &model::SshCall) -> Result<SshCall, String> {
    Ok(SshCall {
        host: host(&call.host)?,
        run: template(&call.run)?,
    })
}

/// Compiles a playbook the validator accepted. An error here names what could not be compiled.
pub fn compile(source: &model::Playbook) -> Result<Playbook, String> {
    let parameters = source
        .parameters
        .iter()
        .map(|(name, p)| {
            Ok((
                name.clone(),
                Parameter {
                    labels: p.labels.clone(),
                    kind: p.kind,
                    optional: p.optional,
                    default: p.default.as_deref().map(template).transpose()?,
                },
            ))
        })
        .collect::<Result<_, String>>()?;
    let diagnose = source
        .diagnose
        .iter()
        .map(probe)
        .collect::<Result<Vec<_>, _>>()?;
    let causes = source
        .causes
        .iter()
        .map(|c| Cause {
            id: c.id.clone(),
            when: c.when.clone(),
            remediate: c.remediate.clone(),
            offer: c.offer.clone(),
            approval: c.approval,
        })
        .collect();
    let window = source
        .approval_window
        .as_deref()
        .map(|w| duration(w, "approval_window"))
        .transpose()?
        .unwrap_or(DEFAULT_APPROVAL_WINDOW);
    let intervals = source
        .time_intervals
        .iter()
        .map(|(name, list)| {
            let list = list
                .iter()
                .map(TimeInterval::parse)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("time interval '{name}': {e}"))?;
            Ok((name.clone(), list))
        })
        .collect::<Result<BTreeMap<String, Vec<TimeInterval>>, String>>()?;
    let steps = source
        .steps
        .iter()
        .map(|(name, s)| {
            step(s, window, &intervals)
                .map(|s| (name.clone(), s))
                .map_err(|e| format!("step '{name}': {e}"))
        })
        .collect::<Result<_, String>>()?;
    Ok(Playbook {
        name: source.name.clone(),
        description: source.description.clone(),
        triggers: source.triggers.clone(),
        target: source.target.clone(),
        automation: source.automation,
        settings: source.settings.clone(),
        backups: BackupSettings::parse(&source.settings)?,
        parameters,
        diagnose,
        causes,
        report: source.report.clone(),
        steps,
        verify: source.verify.clone(),
        escalation: source.escalation.clone(),
        source: source.clone(),
    })
}

fn probe(p: &model::Probe) -> Result<Probe, String> {
    let kind = match (&p.ssh, p.pbs, p.pve, p.builtin) {
        (Some(call), None, None, None) => ProbeKind::Ssh(ssh(call)?),
        (None, Some(read), None, None) => ProbeKind::Pbs(read),
        (None, None, Some(read), None) => ProbeKind::Pve(read),
        (None, None, None, Some(builtin)) => ProbeKind::Builtin(builtin),
        _ => return Err(format!("probe '{}' needs exactly one action", p.id)),
    };
    let facts = p
        .facts
        .iter()
        .map(|(name, e)| {
            let rule = match (&e.ok, &e.exit_ok, &e.regex, &e.json) {
                (Some(_), None, None, None) => ExtractRule::Ok,
                (None, Some(_), None, None) => ExtractRule::ExitOk,
                (None, None, Some(pattern), None) => ExtractRule::Regex(
                    regex::RegexBuilder::new(pattern)
                        .multi_line(true)
                        .build()
                        .map_err(|e| e.to_string())?,
                ),
                (None, None, None, Some(pointer)) => ExtractRule::Json(pointer.clone()),
                _ => return Err(format!("fact '{name}' needs exactly one rule")),
            };
            Ok((name.clone(), Extract { rule, kind: e.kind }))
        })
        .collect::<Result<_, String>>()?;
    Ok(Probe {
        id: p.id.clone(),
        kind,
        after: p.after.clone(),
        timeout: p
            .timeout
            .as_deref()
            .map(|t| duration(t, "timeout"))
            .transpose()?
            .unwrap_or(DEFAULT_PROBE_TIMEOUT),
        facts,
    })
}

fn action(s: &model::Step) -> Result<Action, String> {
    let mut actions = Vec::new();
    if let Some(call) = &s.ssh {
        actions.push(Action::Ssh(ssh(call)?));
    }
    if let Some(v) = &s.pve_vzdump {
        let hosts = if v.host == "all" {
            VzdumpHosts::All
        } else {
            VzdumpHosts::One(host(&v.host)?)
        };
        let guests = match &v.vmids {
            serde_norway::Value::String(all) if all == "all" => VzdumpGuests::All,
            serde_norway::Value::Sequence(ids) => VzdumpGuests::List(
                ids.iter()
                    .map(|id| match id {
                        serde_norway::Value::String(text) => template(text).map(VmidRef::Template),
                        serde_norway::Value::Number(n) => n
                            .as_u64()
                            .and_then(|n| u32::try_from(n).ok())
                            .and_then(|n| Vmid::new(n).ok())
                            .map(VmidRef::Literal)
                            .ok_or_else(|| format!("vmid {n} is not a VMID")),
                        _ => Err("vmids are numbers or templates".to_owned()),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            _ => return Err("vmids is `all` or a list".to_owned()),
        };
        actions.push(Action::Vzdump { hosts, guests });
    }
    if let Some(set) = &s.pve_set_fingerprint {
        actions.push(Action::SetFingerprint {
            storage: template(&set.storage)?,
            fingerprint: template(&set.fingerprint)?,
        });
    }
    if let Some(enable) = &s.pve_enable_job {
        actions.push(Action::EnableJob {
            job: template(&enable.job)?,
        });
    }
    if let Some(forget) = &s.pbs_forget_groups {
        let fact = forget
            .groups
            .strip_prefix("{facts.")
            .and_then(|t| t.strip_suffix('}'))
            .ok_or_else(|| format!("'{}' must be {{facts.NAME}}", forget.groups))?;
        actions.push(Action::ForgetGroups {
            datastore: template(&forget.datastore)?,
            fact: fact.to_owned(),
        });
    }
    if let Some(poll) = &s.poll {
        actions.push(Action::Poll(Poll {
            probe: poll.probe.clone(),
            until: poll.until.clone(),
            every: duration(&poll.every, "poll interval")?,
        }));
    }
    if let Some(wait) = &s.wait {
        actions.push(Action::Wait(duration(wait, "wait")?));
    }
    match (actions.pop(), actions.is_empty()) {
        (Some(action), true) => Ok(action),
        _ => Err("needs exactly one action".to_owned()),
    }
}

fn step(
    s: &model::Step,
    playbook_window: Duration,
    intervals: &BTreeMap<String, Vec<TimeInterval>>,
) -> Result<Step, String> {
    let named = |names: &[String]| {
        names
            .iter()
            .map(|n| {
                intervals
                    .get(n)
                    .map(|list| (n.clone(), list.clone()))
                    .ok_or_else(|| format!("no time interval named '{n}'"))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let guard = match &s.guard {
        None => None,
        Some(g) => Some(Guard {
            require: g
                .require
                .iter()
                .map(|f| GuardFact {
                    probe: f.probe.clone(),
                    holds: f.holds.clone(),
                })
                .collect(),
            active: named(&g.active)?,
            mute: named(&g.mute)?,
            max_wait: duration(
                g.max_wait.as_deref().ok_or("the guard needs max_wait")?,
                "guard max_wait",
            )?,
            every: g
                .every
                .as_deref()
                .map(|e| duration(e, "guard every"))
                .transpose()?
                .unwrap_or(DEFAULT_GUARD_EVERY),
        }),
    };
    Ok(Step {
        action: action(s)?,
        risk: s.risk,
        approval: s.approval,
        on_timeout: s.on_timeout,
        approval_window: s
            .approval_window
            .as_deref()
            .map(|w| duration(w, "approval_window"))
            .transpose()?
            .unwrap_or(playbook_window),
        idempotent: s.idempotent,
        recheck: s.recheck.clone(),
        only_if: s.only_if.clone(),
        accept_exit: match &s.accept_exit {
            None => vec![AcceptedExit {
                code: 0,
                reason: None,
            }],
            Some(codes) => codes
                .iter()
                .map(|a| AcceptedExit {
                    code: a.code(),
                    reason: a.reason().map(str::to_owned),
                })
                .collect(),
        },
        changes: s.changes.clone(),
        cooldown: s
            .cooldown
            .as_deref()
            .map(|c| duration(c, "cooldown"))
            .transpose()?,
        retries: s
            .retries
            .as_ref()
            .map(|r| {
                Ok::<_, String>(Retries {
                    attempts: r.attempts.max(1),
                    backoff: duration(&r.backoff, "retry backoff")?,
                })
            })
            .transpose()?,
        timeout: duration(&s.timeout, "timeout")?,
        guard,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const SHIPPED: &str = include_str!("../../playbooks/pbs-backup-stale.yaml");

    fn shipped_with(from: &str, to: &str) -> Result<Playbook, String> {
        assert!(SHIPPED.contains(from), "{from}");
        super::super::parse(
            std::path::Path::new("pbs-backup-stale.yaml"),
            &SHIPPED.replace(from, to),
        )
        .map_err(|problems| {
            problems
                .iter()
                .map(|p| p.message.clone())
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    #[test]
    fn the_backup_settings_are_typed_when_the_playbook_loads() {
        let backups = shipped_with("", "").unwrap().backups;
        assert_eq!(backups.stale_after_hours, 48);
        assert_eq!(backups.schedule, NaiveTime::from_hms_opt(2, 0, 0));
        assert_eq!(backups.decommissioned.len(), 8);
        assert!(backups.decommissioned.contains("vm/330"));
        // The job starts at 02:00: at 01:00 its last start was the day before.
        let at = |d, h| Utc.with_ymd_and_hms(2026, 11, d, h, 0, 0).unwrap();
        assert_eq!(backups.last_scheduled(at(26, 6)), Some(at(26, 2)));
        assert_eq!(backups.last_scheduled(at(26, 1)), Some(at(25, 2)));
    }

    #[test]
    fn a_bad_backup_setting_stops_the_playbook_loading() {
        for (from, to, expected) in [
            (
                "stale_after_hours: 48",
                "stale_after_hours: two days",
                "settings.stale_after_hours: must be a whole number of hours in 1..=8760",
            ),
            (
                "schedule: \"02:00\"",
                "schedule: \"2am\"",
                "settings.schedule: must be a time of day as HH:MM (UTC)",
            ),
            (
                "decommissioned: [vm/330,",
                "decommissioned: [vm/three,",
                "settings.decommissioned: 'vm/three' is not a backup group like vm/330 or ct/105",
            ),
        ] {
            let error = shipped_with(from, to).unwrap_err();
            assert!(error.contains(expected), "{to}: {error}");
        }
    }

    fn interval(yaml: &str) -> Result<TimeInterval, String> {
        TimeInterval::parse(&serde_norway::from_str(yaml).unwrap())
    }

    #[test]
    fn time_intervals_match_as_alertmanager_reads_them() {
        // 2026-11-26 is a Thursday.
        let at = |h, m| Utc.with_ymd_and_hms(2026, 11, 26, h, m, 0).unwrap();
        let night = interval("times: ['01:00-05:00']").unwrap();
        assert!(night.contains(at(1, 0)));
        assert!(night.contains(at(4, 59)));
        assert!(!night.contains(at(5, 0)), "the end is exclusive");
        assert!(!night.contains(at(0, 59)));
        let weekdays = interval("weekdays: ['monday:wednesday', friday]").unwrap();
        assert!(!weekdays.contains(at(12, 0)));
        assert!(weekdays.contains(at(12, 0) + chrono::Duration::days(1)));
        // 03:00 UTC is 16:00 in +13:00.
        let auckland = interval("times: ['15:00-17:00']\nlocation: '+13:00'").unwrap();
        assert!(auckland.contains(at(3, 0)));
        assert!(!auckland.contains(at(15, 30)));
        assert!(interval("{}").unwrap().contains(at(9, 0)), "empty: always");
    }

    #[test]
    fn malformed_intervals_are_refused() {
        for bad in [
            "times: ['05:00-01:00']",
            "times: ['1:00-05:00']",
            "times: ['01:00-25:00']",
            "times: ['01:00']",
            "weekdays: [funday]",
            "weekdays: ['friday:monday']",
            "location: Pacific/Auckland",
            "location: '+25:00'",
        ] {
            assert!(interval(bad).is_err(), "{bad}");
        }
    }
}
