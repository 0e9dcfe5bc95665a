//! Remote commands are templates. A template is one simple command written by the playbook
//! author (no `;`, `|`, `&`, `$`, backticks, redirections or newlines); its `{placeholders}` are
//! filled only with typed, validated values, each quoted by the one quoting function,
//! [`quote`]. Alert label text never reaches a shell: a label must first parse into one of the
//! value types here, and `"451; rm -rf /"` is not a [`Vmid`].

use std::collections::BTreeMap;
use std::fmt;

/// Characters a template's literal text may not contain: anything a shell would treat as more
/// than a word. Values are quoted; the template itself must need no quoting.
const SHELL_OPERATORS: &[char] = &[
    ';', '|', '&', '$', '`', '<', '>', '(', ')', '\n', '\r', '\\', '"', '\'', '*', '?', '[', ']',
    '#', '~', '!',
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("template '{template}': {message}")]
    Template { template: String, message: String },
    #[error("{what} '{value}' is invalid: {reason}")]
    Value {
        what: &'static str,
        value: String,
        reason: String,
    },
}

fn invalid(what: &'static str, value: &str, reason: impl Into<String>) -> TemplateError {
    TemplateError::Value {
        what,
        value: value.escape_debug().to_string(),
        reason: reason.into(),
    }
}

/// A Proxmox guest id: an integer in 100..=999999999.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vmid(u32);

impl Vmid {
    pub fn new(id: u32) -> Result<Self, TemplateError> {
        if (100..=999_999_999).contains(&id) {
            Ok(Self(id))
        } else {
            Err(invalid(
                "VMID",
                &id.to_string(),
                "must be between 100 and 999999999",
            ))
        }
    }

    /// Parses label text: digits only, no sign, no spaces.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid("VMID", text, "must be an integer"));
        }
        let id = text
            .parse::<u32>()
            .map_err(|_| invalid("VMID", text, "must be between 100 and 999999999"))?;
        Self::new(id)
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Vmid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A store, storage, service or inventory name: `[A-Za-z0-9_.-]+`, at most 64 characters, not
/// starting with `-` (so it can never be read as an option).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

impl Name {
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        if text.is_empty() || text.len() > 64 {
            return Err(invalid("name", text, "must be 1-64 characters"));
        }
        if text.starts_with('-') {
            return Err(invalid("name", text, "must not start with '-'"));
        }
        if text == "." || text == ".." {
            return Err(invalid("name", text, "must not be '.' or '..'"));
        }
        if !text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            return Err(invalid("name", text, "may only contain A-Z a-z 0-9 _ . -"));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An absolute path made of name characters, such as `/mnt/pbs-datastore`; no `..`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbsPath(String);

impl AbsPath {
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        if !text.starts_with('/') || text.len() > 256 {
            return Err(invalid(
                "path",
                text,
                "must be absolute and at most 256 characters",
            ));
        }
        if text.split('/').any(|part| part == "..") {
            return Err(invalid("path", text, "must not contain '..'"));
        }
        if text.trim_end_matches('/').is_empty() {
            return Err(invalid("path", text, "must not be the root directory"));
        }
        if !text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/'))
        {
            return Err(invalid(
                "path",
                text,
                "may only contain A-Z a-z 0-9 _ . - /",
            ));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A SHA-256 certificate fingerprint: 32 hex bytes separated by colons, stored upper-case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFingerprint(String);

impl CertFingerprint {
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let parts: Vec<&str> = text.split(':').collect();
        let valid = parts.len() == 32
            && parts
                .iter()
                .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
        if valid {
            Ok(Self(text.to_ascii_uppercase()))
        } else {
            Err(invalid(
                "fingerprint",
                text,
                "must be 32 colon-separated hex bytes (SHA-256)",
            ))
        }
    }

    /// From raw digest bytes.
    pub fn from_digest(digest: &[u8; 32]) -> Self {
        Self(
            digest
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect::<Vec<_>>()
                .join(":"),
        )
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A value that may fill a placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Vmid(Vmid),
    Name(Name),
    Path(AbsPath),
    Fingerprint(CertFingerprint),
    Count(u32),
}

impl Value {
    fn text(&self) -> String {
        match self {
            Value::Vmid(v) => v.to_string(),
            Value::Name(n) => n.as_str().to_owned(),
            Value::Path(p) => p.as_str().to_owned(),
            Value::Fingerprint(f) => f.as_str().to_owned(),
            Value::Count(n) => n.to_string(),
        }
    }
}

/// Quotes one word for a POSIX shell. The only quoting function in runbookd.
pub fn quote(word: &str) -> Result<String, TemplateError> {
    shlex::try_quote(word)
        .map(|q| q.into_owned())
        .map_err(|_| invalid("value", word, "contains a NUL byte"))
}

/// One simple command with `{name}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandTemplate {
    text: String,
    placeholders: Vec<String>,
}

impl CommandTemplate {
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let fail = |message: String| TemplateError::Template {
            template: text.escape_debug().to_string(),
            message,
        };
        let mut placeholders = Vec::new();
        let mut rest = text;
        let mut literal = String::new();
        while let Some(open) = rest.find('{') {
            literal.push_str(&rest[..open]);
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| fail("an unclosed '{'".into()))?;
            let name = &rest[open + 1..open + close];
            let valid = !name.is_empty()
                && name.split('.').all(|part| {
                    !part.is_empty()
                        && part
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                });
            if !valid {
                return Err(fail(format!(
                    "placeholder '{{{name}}}' must be dotted [a-z0-9_] words, such as {{vmid}} or {{pbs.mountpoint}}"
                )));
            }
            placeholders.push(name.to_owned());
            rest = &rest[open + close + 1..];
        }
        literal.push_str(rest);
        if literal.contains('}') {
            return Err(fail("a '}' without '{'".into()));
        }
        if let Some(c) = literal.chars().find(|c| SHELL_OPERATORS.contains(c)) {
            return Err(fail(format!(
                "'{}' is a shell operator; a template is one simple command",
                c.escape_debug()
            )));
        }
        if literal.trim().is_empty() && placeholders.is_empty() {
            return Err(fail("the template is empty".into()));
        }
        Ok(Self {
            text: text.to_owned(),
            placeholders,
        })
    }

    pub fn placeholders(&self) -> &[String] {
        &self.placeholders
    }

    /// Fills every placeholder from `values`, quoting each value. A missing or unused value is
    /// an error: both mean the template and its caller disagree.
    pub fn render(&self, values: &BTreeMap<&str, Value>) -> Result<RemoteCommand, TemplateError> {
        for name in values.keys() {
            if !self.placeholders.iter().any(|p| p == name) {
                return Err(TemplateError::Template {
                    template: self.text.clone(),
                    message: format!("no placeholder '{{{name}}}' for the value given"),
                });
            }
        }
        let mut out = String::with_capacity(self.text.len());
        let mut rest = self.text.as_str();
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let close = open + rest[open..].find('}').expect("validated at parse");
            let name = &rest[open + 1..close];
            let value = values.get(name).ok_or_else(|| TemplateError::Template {
                template: self.text.clone(),
                message: format!("no value for '{{{name}}}'"),
            })?;
            out.push_str(&quote(&value.text())?);
            rest = &rest[close + 1..];
        }
        out.push_str(rest);
        Ok(RemoteCommand(out))
    }
}

/// A command ready to run on a host. Only [`CommandTemplate::render`] makes one, so every
/// command that reaches an executor was built from a template and typed values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteCommand(String);

impl RemoteCommand {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The command as the host runs it: bounded by `timeout` on the host too, because a
    /// disconnected SSH client does not stop a remote command. `-k 5` follows up with SIGKILL
    /// for commands that ignore SIGTERM.
    pub fn with_remote_timeout(&self, seconds: u64) -> String {
        format!("timeout -k 5 {seconds} {}", self.0)
    }
}

impl fmt::Display for RemoteCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Builds a command from a template and `(placeholder, value)` pairs.
pub fn render(template: &str, values: &[(&str, Value)]) -> Result<RemoteCommand, TemplateError> {
    let values: BTreeMap<&str, Value> = values.iter().cloned().collect();
    CommandTemplate::parse(template)?.render(&values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_values_fill_and_are_quoted() {
        let cmd = render(
            "qm status {vmid}",
            &[("vmid", Value::Vmid(Vmid::parse("451").unwrap()))],
        )
        .unwrap();
        assert_eq!(cmd.as_str(), "qm status 451");
        assert_eq!(cmd.with_remote_timeout(10), "timeout -k 5 10 qm status 451");
    }

    #[test]
    fn label_text_that_is_not_a_vmid_is_refused() {
        for bad in [
            "451; rm -rf /",
            "$(reboot)",
            "-1",
            "45 1",
            "",
            "99",
            "4294967296",
            "٤٥١",
        ] {
            let error = Vmid::parse(bad).unwrap_err();
            assert!(error.to_string().starts_with("VMID"), "{bad:?}: {error}");
        }
    }

    #[test]
    fn names_refuse_options_and_metacharacters() {
        assert!(Name::parse("pbs-datastore").is_ok());
        assert!(Name::parse("proxmox-backup-proxy.service").is_ok());
        for bad in [
            "--all", "a;b", "a b", "a'b", "a\nb", "$(x)", "`x`", "ä", "a/b",
        ] {
            assert!(Name::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn paths_are_absolute_below_the_root() {
        assert!(AbsPath::parse("/mnt/pbs-datastore").is_ok());
        for bad in ["/", "//", "mnt", "/mnt/../etc", "/mnt/a b", ""] {
            assert!(AbsPath::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn templates_are_one_simple_command() {
        for bad in [
            "mount | grep pbs",
            "a; b",
            "a && b",
            "echo $(x)",
            "echo `x`",
            "cat > f",
            "a\nb",
            "echo '{x}'",
            "x {Bad}",
            "x {unclosed",
            "x }",
            "",
        ] {
            assert!(CommandTemplate::parse(bad).is_err(), "{bad:?}");
        }
        let t = CommandTemplate::parse("pvesm set {storage} --fingerprint {fingerprint}").unwrap();
        assert_eq!(t.placeholders(), ["storage", "fingerprint"]);
    }

    #[test]
    fn missing_and_unused_values_are_errors() {
        let t = CommandTemplate::parse("qm start {vmid}").unwrap();
        assert!(t.render(&BTreeMap::new()).is_err());
        let mut values = BTreeMap::new();
        values.insert("vmid", Value::Vmid(Vmid::new(101).unwrap()));
        values.insert("extra", Value::Count(1));
        assert!(t.render(&values).is_err());
    }

    #[test]
    fn quote_makes_any_text_one_inert_word() {
        assert_eq!(quote("pbs-datastore").unwrap(), "pbs-datastore");
        assert_eq!(quote("a b").unwrap(), "'a b'");
        assert!(quote("nul\0").is_err());
        let nasty = "x'; rm -rf / #$(reboot)`id`\n";
        assert_eq!(shlex::split(&quote(nasty).unwrap()).unwrap(), [nasty]);
    }

    #[test]
    fn fingerprints_are_normalized() {
        let lower = vec!["ab"; 32].join(":");
        assert_eq!(
            CertFingerprint::parse(&lower).unwrap().as_str(),
            vec!["AB"; 32].join(":")
        );
        assert!(CertFingerprint::parse("AB:CD").is_err());
        assert_eq!(
            CertFingerprint::from_digest(&[0xab; 32]).as_str(),
            vec!["AB"; 32].join(":")
        );
    }
}
