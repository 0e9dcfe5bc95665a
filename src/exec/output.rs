//! What comes back from a host, bounded and cleaned before anyone stores or logs it: output is
//! capped as it streams in (a 5 MB `cat` never sits in memory), and secrets are redacted.

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

/// Replaces known secrets, and the secret part of Proxmox API token headers, with
/// `[REDACTED]`.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

const REDACTED: &str = "[REDACTED]";

impl Redactor {
    /// `secrets` shorter than 6 characters are ignored: redacting them would shred ordinary
    /// output.
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        Self {
            secrets: secrets.into_iter().filter(|s| s.len() >= 6).collect(),
        }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
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
    fn secrets_and_token_headers_are_redacted() {
        let redactor = Redactor::new(["hunter2-secret".to_owned(), "abc".to_owned()]);
        let text = "pw=hunter2-secret abc Authorization: PBSAPIToken=root@pam!runbookd:0f3c-77 next PVEAPIToken=root@pam!ops=xyz";
        assert_eq!(
            redactor.redact(text),
            "pw=[REDACTED] abc Authorization: PBSAPIToken=root@pam!runbookd:[REDACTED] next PVEAPIToken=root@pam!ops=[REDACTED]"
        );
    }
}
