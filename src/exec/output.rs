//! What comes back from a host or an API, bounded and cleaned before anyone stores or logs it:
//! output is capped as it streams in (a 5 MB `cat` never sits in memory), and secrets are
//! redacted.
//!
//! [`Redactor`] is the one redactor. It runs at the executors' boundary, once per kind of text,
//! before anything reaches the engine: SSH output in [`CappedBuffer::finish`], every PBS/PVE answer
//! and error in `ApiClient::send`. Whatever the
//! engine stores (step attempts, facts, probe records, audit details) or returns (the HTTP API,
//! MCP tools) was built from that redacted text.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value as Json;

/// Collects up to `cap` bytes, counting what it dropped. A little more than `cap` is held
/// until [`CappedBuffer::finish`] redacts, so a secret that straddles the cap is still found
/// whole and never shows a prefix.
#[derive(Debug)]
pub struct CappedBuffer {
    bytes: Vec<u8>,
    cap: usize,
    seen: usize,
}

/// Held beyond the cap for redaction: longer than any secret runbookd knows.
const REDACTION_SLACK: usize = 1024;

impl CappedBuffer {
    pub fn new(cap: usize) -> Self {
        Self {
            bytes: Vec::new(),
            cap,
            seen: 0,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        let room = (self.cap + REDACTION_SLACK).saturating_sub(self.bytes.len());
        self.bytes.extend_from_slice(&data[..room.min(data.len())]);
        self.seen += data.len();
    }

    pub fn truncated(&self) -> bool {
        self.seen > self.cap
    }

    /// The text, lossily decoded and redacted, cut to the cap, with a marker when bytes were
    /// dropped.
    pub fn finish(self, redactor: &Redactor) -> String {
        let mut text = redactor.redact(&String::from_utf8_lossy(&self.bytes));
        if self.seen > self.cap {
            let mut cut = self.cap.min(text.len());
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str(&format!(
                "\n[runbookd: output truncated, {} more bytes dropped]\n",
                self.seen - self.cap
            ));
        }
        text
    }
}

/// Replaces known secrets, PEM private-key blocks, and the secret part of Proxmox API token
/// headers with `[REDACTED]`.
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    /// How many secrets it knows, never which.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

pub const REDACTED: &str = "[REDACTED]";

/// A PEM private-key block (PKCS#8, OPENSSH, RSA, EC, ENCRYPTED...), or its start when the text
/// was cut before its end.
static PRIVATE_KEY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?s)-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\z)",
    )
    .expect("a valid pattern")
});

impl Redactor {
    /// `secrets` shorter than 6 characters are ignored: redacting them would shred ordinary
    /// output.
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        Self {
            secrets: secrets.into_iter().filter(|s| s.len() >= 6).collect(),
        }
    }

    /// The same redactor knowing `more` secrets as well.
    pub fn with_secrets(mut self, more: impl IntoIterator<Item = String>) -> Self {
        for secret in more {
            if secret.len() >= 6 && !self.secrets.contains(&secret) {
                self.secrets.push(secret);
            }
        }
        self
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = PRIVATE_KEY
            .replace_all(text, |c: &regex::Captures<'_>| {
                format!(
                    "-----BEGIN {kind}PRIVATE KEY-----{REDACTED}-----END {kind}PRIVATE KEY-----",
                    kind = &c[1]
                )
            })
            .into_owned();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), REDACTED);
            }
        }
        for marker in ["PBSAPIToken=", "PVEAPIToken="] {
            out = redact_token_secret(&out, marker);
        }
        out
    }

    /// Every string in `value` redacted, in place: API answers are cleaned after decoding, so
    /// JSON escapes cannot hide a secret.
    pub fn redact_json(&self, value: &mut Json) {
        match value {
            Json::String(text) => {
                let clean = self.redact(text);
                if clean != *text {
                    *text = clean;
                }
            }
            Json::Array(items) => items.iter_mut().for_each(|v| self.redact_json(v)),
            Json::Object(fields) => fields.values_mut().for_each(|v| self.redact_json(v)),
            _ => {}
        }
    }
}

/// `PBSAPIToken=user@pam!id:SECRET` keeps `user@pam!id` and hides the secret after its first
/// `:` or `=` following the `!`.
fn redact_token_secret(text: &str, marker: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(marker) {
        let after = start + marker.len();
        out.push_str(&rest[..after]);
        let tail = &rest[after..];
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        let token = &tail[..end];
        match token
            .find('!')
            .and_then(|bang| token[bang..].find([':', '=']).map(|i| bang + i))
        {
            Some(split) => {
                out.push_str(&token[..=split]);
                out.push_str(REDACTED);
            }
            None => out.push_str(REDACTED),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_capped_while_it_streams() {
        let mut buffer = CappedBuffer::new(10);
        buffer.push(b"0123456");
        buffer.push(b"789abcdef");
        assert!(buffer.truncated());
        let text = buffer.finish(&Redactor::default());
        assert!(
            text.starts_with("0123456789\n[runbookd: output truncated, 6 more bytes dropped]"),
            "{text}"
        );
    }

    #[test]
    fn a_secret_across_the_cap_is_redacted_not_cut() {
        let mut buffer = CappedBuffer::new(8);
        buffer.push(b"pw=hunter2-secret and more");
        let text = buffer.finish(&Redactor::new(["hunter2-secret".to_owned()]));
        assert!(text.starts_with("pw=[REDA"), "{text}");
        assert!(!text.contains("hunt"), "{text}");
    }

    #[test]
    fn private_key_blocks_are_redacted_whole_or_cut() {
        let redactor = Redactor::default();
        for kind in ["", "OPENSSH ", "RSA ", "EC ", "ENCRYPTED "] {
            let text = format!(
                "key:\n-----BEGIN {kind}PRIVATE KEY-----\nMIIEvQIBADANBgkq\nhkiG9w0BAQEFAASC\n-----END {kind}PRIVATE KEY-----\ndone"
            );
            assert_eq!(
                redactor.redact(&text),
                format!(
                    "key:\n-----BEGIN {kind}PRIVATE KEY-----[REDACTED]-----END {kind}PRIVATE KEY-----\ndone"
                )
            );
        }
        let cut = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA";
        assert!(
            !redactor.redact(cut).contains("b3Blbn"),
            "{}",
            redactor.redact(cut)
        );
        let public = "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkq\n-----END PUBLIC KEY-----";
        assert_eq!(redactor.redact(public), public);
    }

    #[test]
    fn json_strings_are_redacted_and_debug_shows_no_secret() {
        let redactor = Redactor::new(["tok-secret-77".to_owned()]);
        let mut value =
            serde_json::json!({"error": "bad tok-secret-77", "list": ["x tok-secret-77"], "n": 1});
        redactor.redact_json(&mut value);
        assert_eq!(
            value,
            serde_json::json!({"error": "bad [REDACTED]", "list": ["x [REDACTED]"], "n": 1})
        );
        let debug = format!("{redactor:?}");
        assert_eq!(debug, "Redactor { secrets: 1 }");
    }

    #[test]
    fn secrets_and_token_headers_are_redacted() {
        let redactor = Redactor::new(["hunter2-secret".to_owned(), "abc".to_owned()]);
        let text = "pw=hunter2-secret abc Authorization: PBSAPIToken=root@pam!runbookd:0f3c-77 next PVEAPIToken=root@pam!ops=xyz";
        assert_eq!(
            redactor.redact(text),
            "pw=[REDACTED] abc Authorization: PBSAPIToken=root@pam!runbookd:[REDACTED] next PVEAPIToken=root@pam!ops=[REDACTED]"
        );
    }
}
