//! Trigger matchers, as Alertmanager writes them: `name=value`, `name!=value`, `name=~regex`,
//! `name!~regex`; a value may be double-quoted (`alertname=~"PBS backup failed: .*"`). Regexes
//! are anchored at both ends, as in Alertmanager. A label the alert does not carry reads as the
//! empty string.
//!
//! Besides the alert's labels, a matcher can name `alertname` (the alert's name, whatever the
//! sender), `source` (who sent it: `alertmanager`, `sweep`, `pbs`, ...) and `check_name` (a
//! sweep finding's check, empty for other senders).

use std::fmt;

use regex::Regex;

use crate::intake::Alert;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Equal,
    NotEqual,
    Matches,
    NotMatches,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Self::Equal => "=",
            Self::NotEqual => "!=",
            Self::Matches => "=~",
            Self::NotMatches => "!~",
        }
    }
}

/// One compiled matcher.
#[derive(Debug, Clone)]
pub struct Matcher {
    name: String,
    op: Op,
    value: String,
    /// The anchored regex, for `=~` and `!~`.
    regex: Option<Regex>,
}

impl Matcher {
    /// Parses `name op value`, compiling a regex value.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let name_end = text
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(text.len());
        let (name, rest) = text.split_at(name_end);
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!(
                "matcher '{}' must start with a label name",
                text.escape_debug()
            ));
        }
        let rest = rest.trim_start();
        let (op, rest) = [Op::Matches, Op::NotMatches, Op::NotEqual, Op::Equal]
            .into_iter()
            .find_map(|op| rest.strip_prefix(op.as_str()).map(|rest| (op, rest)))
            .ok_or_else(|| {
                format!(
                    "matcher '{}' needs one of =, !=, =~, !~ after '{name}'",
                    text.escape_debug()
                )
            })?;
        let value =
            unquote(rest.trim()).map_err(|e| format!("matcher '{}': {e}", text.escape_debug()))?;
        let regex = match op {
            Op::Matches | Op::NotMatches => Some(
                Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| format!("matcher '{}': bad regex: {e}", text.escape_debug()))?,
            ),
            Op::Equal | Op::NotEqual => None,
        };
        Ok(Self {
            name: name.to_owned(),
            op,
            value,
            regex,
        })
    }

    /// `name = value`: what a trigger's `alertname:` or `source:` shorthand means.
    pub fn equal(name: &str, value: &str) -> Self {
        Self {
            name: name.to_owned(),
            op: Op::Equal,
            value: value.to_owned(),
            regex: None,
        }
    }

    pub fn matches(&self, alert: &Alert) -> bool {
        let field = match self.name.as_str() {
            "alertname" => alert.name.as_str(),
            "source" => alert.source.as_str(),
            "check_name" if alert.source.as_str() == "sweep" => alert.name.as_str(),
            "check_name" => "",
            label => alert.labels.get(label).unwrap_or_default(),
        };
        match (self.op, &self.regex) {
            (Op::Equal, _) => field == self.value,
            (Op::NotEqual, _) => field != self.value,
            (Op::Matches, Some(regex)) => regex.is_match(field),
            (Op::NotMatches, Some(regex)) => !regex.is_match(field),
            (Op::Matches | Op::NotMatches, None) => false,
        }
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{:?}", self.name, self.op.as_str(), self.value)
    }
}

/// A double-quoted value with `\"`, `\\` and `\n` escapes, or the bare text.
fn unquote(text: &str) -> Result<String, String> {
    let Some(inner) = text.strip_prefix('"') else {
        return Ok(text.to_owned());
    };
    let mut value = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' if chars.as_str().trim().is_empty() => return Ok(value),
            '"' => return Err("text after the closing quote".to_owned()),
            '\\' => match chars.next() {
                Some('n') => value.push('\n'),
                Some(escaped @ ('"' | '\\')) => value.push(escaped),
                None => return Err("a dangling backslash".to_owned()),
                Some(other) => {
                    // Regex escapes (`\.`, `\d`) pass through as written.
                    value.push('\\');
                    value.push(other);
                }
            },
            other => value.push(other),
        }
    }
    Err("the closing quote is missing".to_owned())
}

/// A trigger: every matcher must hold.
#[derive(Debug, Clone)]
pub struct Route(pub Vec<Matcher>);

impl Route {
    pub fn matches(&self, alert: &Alert) -> bool {
        self.0.iter().all(|m| m.matches(alert))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intake;

    fn alert(source: &str, body: &str) -> Alert {
        let declared = intake::declared_source(source).unwrap();
        let delivery = intake::parse(body.as_bytes(), Some(declared)).unwrap();
        delivery.alerts().next().unwrap().clone()
    }

    fn forwarder() -> Alert {
        alert(
            "pbs",
            r#"{"alert_name":"PBS backup failed: pbs-datastore:vm/451","labels":{"service":"pbs"}}"#,
        )
    }

    #[test]
    fn the_four_operators() {
        let a = forwarder();
        for (text, expected) in [
            (r#"alertname=~"PBS backup failed: .*""#, true),
            (r#"alertname=~"PBS backup failed""#, false), // anchored
            ("alertname!~PBSBackupStale", true),
            ("source=pbs", true),
            (r#"source!="pbs""#, false),
            ("service=pbs", true),
            ("missing=", true), // absent reads as empty
            ("missing!=", false),
            (r#"backup_id=~"\d+""#, true), // filled in from the name
            ("check_name=pbs_backup_stale", false),
        ] {
            let matcher = Matcher::parse(text).unwrap();
            assert_eq!(matcher.matches(&a), expected, "{text}");
        }
    }

    #[test]
    fn check_name_is_a_sweep_findings_check() {
        let sweep = alert(
            "sweep",
            r#"{"check_name":"pbs_backup_stale","evidence":{"group":"vm/451"}}"#,
        );
        assert!(
            Matcher::parse("check_name=pbs_backup_stale")
                .unwrap()
                .matches(&sweep)
        );
    }

    #[test]
    fn malformed_matchers_are_refused_with_the_reason() {
        for (text, says) in [
            ("alertname", "needs one of"),
            ("=x", "label name"),
            (r#"alertname=~"(unclosed""#, "bad regex"),
            (r#"alertname="open"#, "closing quote"),
            (r#"alertname="a" b"#, "after the closing quote"),
        ] {
            let error = Matcher::parse(text).unwrap_err();
            assert!(error.contains(says), "{text}: {error}");
        }
    }
}
