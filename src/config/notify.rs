//! `[notify]` and `[[notify.sinks]]`: where notifications go and how hard to try.
//!
//! ```toml
//! [notify]
//! public_url = "https://runbookd.example.net"   # links point here; default: the listen address
//! link_ttl_secs = 3600                          # links also expire with their approval
//! link_key_file = "/etc/runbookd/link-key"      # default: <database>.link-key, made on start
//! link_requests_per_minute = 30                 # refused /links requests per address; then 429
//!
//! [[notify.sinks]]
//! name = "phone"
//! kind = "ntfy"                                 # webhook | ntfy | slack
//! url = "https://ntfy.example.net"
//! topic = "runbookd"
//! token_env = "NTFY_TOKEN"                      # or token_file; never inline
//! events = ["approval_requested", "run_escalated"]
//! links = true                                  # Approve/Reject links; default true for
//!                                               # ntfy and slack, false for webhook
//! ```
//! A sink's URL may itself be a secret (a Slack webhook's is), so only the sink's name is ever
//! logged or audited.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;
use url::Url;

use super::{ConfigSource, Problem, read_secret};

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// The base URL of links in notifications, as the phone reaches runbookd.
    pub public_url: Option<String>,
    /// A link expires this long after it is sent, or with its approval if that is sooner; a
    /// link claiming a longer life is refused.
    pub link_ttl_secs: u64,
    /// The file holding the key that signs links (hex or base64, at least 32 bytes, owner-only);
    /// default: `<database>.link-key`, created on first start. Replace it and restart to rotate.
    pub link_key_file: Option<PathBuf>,
    /// Delivery attempts per notification and sink, the first included.
    pub attempts: u32,
    /// The wait before the first retry; it doubles up to `backoff_max_ms`.
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// Each delivery request gives up after this long.
    pub timeout_secs: u64,
    /// How often the notifier looks for new events.
    pub poll_interval_ms: u64,
    /// Refused requests to `/links/...` one address (an IPv6 one by its /64) may make per
    /// minute (a burst of this many, then one more every 60/n seconds); beyond it a refusal is
    /// answered 429 and not audited. Genuine links are never charged.
    pub link_requests_per_minute: u32,
    pub sinks: Vec<Spanned<SinkConfig>>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            public_url: None,
            link_ttl_secs: 3600,
            link_key_file: None,
            attempts: 5,
            backoff_initial_ms: 1000,
            backoff_max_ms: 60_000,
            timeout_secs: 10,
            poll_interval_ms: 1000,
            link_requests_per_minute: 30,
            sinks: Vec::new(),
        }
    }
}

/// One `[[notify.sinks]]` entry.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    pub name: String,
    pub kind: SinkKind,
    pub url: String,
    /// ntfy only: the topic to publish to.
    pub topic: Option<String>,
    /// Sent as `Authorization: Bearer …`.
    pub token_env: Option<String>,
    pub token_file: Option<PathBuf>,
    /// Here only to refuse it with a useful message: secrets never sit in the config.
    token: Option<toml::Value>,
    /// Which events this sink gets; all of them when absent.
    pub events: Option<Vec<EventKind>>,
    /// Whether approval notifications carry working Approve and Reject links. Default: true
    /// for ntfy and Slack (a person's phone or chat), false for a webhook, which may feed a
    /// program (the agent's pipeline, say) that must never approve.
    pub links: Option<bool>,
}

/// The settings and each sink by name and kind: a sink's URL may be its secret (a Slack
/// webhook's is), so it is never printed.
impl std::fmt::Debug for NotifyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyConfig")
            .field("public_url", &self.public_url)
            .field("link_ttl_secs", &self.link_ttl_secs)
            .field("attempts", &self.attempts)
            .field("timeout_secs", &self.timeout_secs)
            .field(
                "sinks",
                &self.sinks.iter().map(Spanned::get_ref).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// The sink's name and kind; never its URL or token.
impl std::fmt::Debug for SinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// A generic JSON webhook.
    Webhook,
    /// An ntfy server, with action buttons.
    Ntfy,
    /// A Slack-compatible incoming webhook.
    Slack,
}

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    ApprovalRequested,
    RunEscalated,
    RunResolved,
    BreakerTripped,
}

impl EventKind {
    pub const ALL: [EventKind; 4] = [
        Self::ApprovalRequested,
        Self::RunEscalated,
        Self::RunResolved,
        Self::BreakerTripped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApprovalRequested => "approval_requested",
            Self::RunEscalated => "run_escalated",
            Self::RunResolved => "run_resolved",
            Self::BreakerTripped => "breaker_tripped",
        }
    }
}

/// A sink ready to use: its token read, its URL parsed. No `Debug`: it holds secrets.
#[derive(Clone)]
pub struct Sink {
    pub name: String,
    pub kind: SinkKind,
    pub url: Url,
    pub topic: Option<String>,
    pub token: Option<String>,
    pub events: Vec<EventKind>,
    /// Approve and Reject links go in this sink's approval notifications.
    pub links: bool,
}

/// `[notify]` resolved: the sinks and the delivery settings.
#[derive(Clone)]
pub struct Notify {
    pub public_url: Option<Url>,
    pub link_ttl: Duration,
    pub attempts: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub timeout: Duration,
    pub poll_interval: Duration,
    pub link_requests_per_minute: NonZeroU32,
    pub sinks: Vec<Sink>,
}

impl Notify {
    /// No sinks and the default settings: nothing is sent, links still verify.
    pub fn off() -> Self {
        NotifyConfig::default()
            .resolve(&ConfigSource::default(), &|_| None)
            .expect("the default [notify] is valid")
    }
}

impl NotifyConfig {
    /// Checks every value, reads every sink's token, and reports every problem.
    pub fn resolve(
        &self,
        source: &ConfigSource,
        env: &impl Fn(&str) -> Option<String>,
    ) -> Result<Notify, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut problem = |key: &str, message: String| {
            problems.push(Problem {
                location: source.locate_key(key),
                message: format!("{key}: {message}"),
            })
        };
        let public_url = match self.public_url.as_deref().map(web_url) {
            // The web page's own links and forms are root-absolute; under a path prefix the
            // "Open" button would work and the page behind it would not.
            Some(Ok(url)) if url.path() != "/" || url.query().is_some() => {
                problem(
                    "notify.public_url",
                    format!(
                        "must be the root of a host (like https://runbookd.example.net), not a \
                         path under one ({}): serve runbookd on its own host name",
                        url.path()
                    ),
                );
                None
            }
            Some(Ok(url)) => Some(url),
            Some(Err(message)) => {
                problem("notify.public_url", message);
                None
            }
            None => None,
        };
        for (key, value, range) in [
            ("notify.link_ttl_secs", self.link_ttl_secs, 60..=7 * 86_400),
            ("notify.attempts", u64::from(self.attempts), 1..=20),
            (
                "notify.backoff_initial_ms",
                self.backoff_initial_ms,
                1..=600_000,
            ),
            ("notify.backoff_max_ms", self.backoff_max_ms, 1..=3_600_000),
            ("notify.timeout_secs", self.timeout_secs, 1..=300),
            (
                "notify.poll_interval_ms",
                self.poll_interval_ms,
                10..=60_000,
            ),
            (
                "notify.link_requests_per_minute",
                u64::from(self.link_requests_per_minute),
                1..=10_000,
            ),
        ] {
            if !range.contains(&value) {
                problem(
                    key,
                    format!("{value} is outside {}..={}", range.start(), range.end()),
                );
            }
        }
        if self.backoff_max_ms < self.backoff_initial_ms {
            problem(
                "notify.backoff_max_ms",
                "must be at least notify.backoff_initial_ms".into(),
            );
        }

        let mut sinks: Vec<Sink> = Vec::new();
        for entry in &self.sinks {
            let location = source.locate(entry.span());
            let sink = entry.get_ref();
            let mut problem = |message: String| {
                problems.push(Problem {
                    location: location.clone(),
                    message: format!("notify sink '{}': {message}", sink.name),
                })
            };
            if !super::is_token_name(&sink.name) {
                problem("the name must be 1-64 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit".into());
            }
            if sinks.iter().any(|s| s.name == sink.name) {
                problem("this name is used by an earlier sink".into());
            }
            if sink.token.is_some() {
                problem("secrets are not accepted in the config: put the token in an env var (token_env) or a file (token_file)".into());
            }
            let url = web_url(&sink.url).map_err(&mut problem).ok();
            match (sink.kind, &sink.topic) {
                (SinkKind::Ntfy, None) => problem("an ntfy sink needs a topic".into()),
                (SinkKind::Ntfy, Some(topic)) if !is_ntfy_topic(topic) => {
                    problem("the topic must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'".into())
                }
                (SinkKind::Webhook | SinkKind::Slack, Some(_)) => {
                    problem("topic is only for ntfy sinks".into())
                }
                _ => {}
            }
            if sink.events.as_ref().is_some_and(Vec::is_empty) {
                problem("events must name at least one event, or be left out for all".into());
            }
            let token = match (&sink.token_env, &sink.token_file) {
                (None, None) => Some(None),
                (from_env, from_file) => {
                    read_secret("token", from_env.as_deref(), from_file.as_deref(), env)
                        .and_then(|token| {
                            if token.is_empty() || token.chars().any(char::is_control) {
                                Err("the token is empty or contains control characters".into())
                            } else {
                                Ok(Some(token))
                            }
                        })
                        .map_err(&mut problem)
                        .ok()
                }
            };
            if let (Some(url), Some(token)) = (url, token) {
                sinks.push(Sink {
                    name: sink.name.clone(),
                    kind: sink.kind,
                    url,
                    topic: sink.topic.clone(),
                    token,
                    events: sink
                        .events
                        .clone()
                        .unwrap_or_else(|| EventKind::ALL.to_vec()),
                    links: sink.links.unwrap_or(sink.kind != SinkKind::Webhook),
                });
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Notify {
            public_url,
            link_ttl: Duration::from_secs(self.link_ttl_secs),
            attempts: self.attempts,
            backoff_initial: Duration::from_millis(self.backoff_initial_ms),
            backoff_max: Duration::from_millis(self.backoff_max_ms),
            timeout: Duration::from_secs(self.timeout_secs),
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            link_requests_per_minute: NonZeroU32::new(self.link_requests_per_minute)
                .unwrap_or(NonZeroU32::MIN),
            sinks,
        })
    }
}

/// An `https` URL (or `http` on loopback) without credentials in it (those belong in
/// `token_env`/`token_file`). Links are credentials and sinks carry tokens, so neither may
/// cross a network unencrypted.
fn web_url(text: &str) -> Result<Url, String> {
    // The text is not echoed: a sink's URL may be its secret.
    let url = Url::parse(text).map_err(|e| format!("the URL does not parse: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("the URL must start with http:// or https://".into());
    }
    if url.scheme() == "http" && !is_loopback(&url) {
        return Err(
            "the URL must be https:// (plain http:// is for loopback only: 127.0.0.0/8, ::1, localhost), since links and tokens travel in it".into(),
        );
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the URL holds credentials: put the token in token_env or token_file".into());
    }
    Ok(url)
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

fn is_ntfy_topic(topic: &str) -> bool {
    (1..=64).contains(&topic.len())
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, Overrides};
    use std::io::Write;

    #[test]
    fn public_url_must_be_the_root_of_a_host() {
        let mut notify = super::NotifyConfig::default();
        for good in [
            "https://runbookd.example.net",
            "https://runbookd.example.net:8443/",
        ] {
            notify.public_url = Some(good.to_owned());
            assert!(
                notify.resolve(&Default::default(), &|_| None).is_ok(),
                "{good}"
            );
        }
        notify.public_url = Some("https://example.net/runbookd/".to_owned());
        let Err(problems) = notify.resolve(&Default::default(), &|_| None) else {
            panic!("a path under a host is refused");
        };
        assert!(
            problems[0]
                .to_string()
                .contains("must be the root of a host"),
            "{problems:?}"
        );
    }

    #[test]
    fn sinks_and_public_url_must_be_https_off_loopback() {
        let mut notify = super::NotifyConfig::default();
        for (url, ok) in [
            ("http://127.0.0.1:8080", true),
            ("http://127.3.4.5:8080", true),
            ("http://[::1]:8080", true),
            ("http://localhost:8080", true),
            ("https://runbookd.example.net", true),
            ("http://runbookd.example.net", false),
            ("http://192.168.1.20:8080", false),
        ] {
            notify.public_url = Some(url.to_owned());
            let result = notify.resolve(&Default::default(), &|_| None);
            assert_eq!(result.is_ok(), ok, "{url}");
            if let Err(problems) = result {
                assert!(
                    problems[0]
                        .to_string()
                        .contains("notify.public_url: the URL must be https://"),
                    "{problems:?}"
                );
            }
        }
        let sink = |url: &str| {
            format!("[[notify.sinks]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{url}\"\n")
        };
        assert_eq!(
            problems(&sink("http://127.0.0.1:9/hook"), &[]),
            Vec::<String>::new()
        );
        assert_eq!(
            problems(&sink("https://hooks.example.net/x"), &[]),
            Vec::<String>::new()
        );
        let printed = problems(&sink("http://hooks.example.net/x"), &[]);
        assert!(
            printed.len() == 1 && printed[0].contains("sink 'hook': the URL must be https://"),
            "{printed:#?}"
        );
    }

    #[test]
    fn off_is_the_valid_default_with_no_sinks() {
        let off = super::Notify::off();
        assert!(off.sinks.is_empty());
        assert!(off.public_url.is_none());
    }

    fn problems(text: &str, env: &[(&str, &str)]) -> Vec<String> {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        let (config, source) = match Config::load(Some(file.path()), &Overrides::default()) {
            Ok(loaded) => loaded,
            Err(problems) => return problems.iter().map(ToString::to_string).collect(),
        };
        let lookup = |var: &str| {
            env.iter()
                .find(|(k, _)| *k == var)
                .map(|(_, v)| v.to_string())
        };
        match config.resolve_notify(&source, &lookup) {
            Ok(_) => Vec::new(),
            Err(problems) => problems.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_good_sink_resolves_with_its_token() {
        let text = "[notify]\npublic_url = \"https://runbookd.example.net\"\n\n[[notify.sinks]]\nname = \"phone\"\nkind = \"ntfy\"\nurl = \"https://ntfy.example.net\"\ntopic = \"alerts\"\ntoken_env = \"NTFY\"\nevents = [\"approval_requested\"]\n";
        assert_eq!(
            problems(text, &[("NTFY", "tk_0123456789")]),
            Vec::<String>::new()
        );
    }

    #[test]
    fn every_sink_problem_is_reported_without_secrets() {
        let text = concat!(
            "[notify]\nattempts = 0\n\n",
            "[[notify.sinks]]\nname = \"a\"\nkind = \"ntfy\"\nurl = \"http://127.0.0.1:1/\"\n\n",
            "[[notify.sinks]]\nname = \"a\"\nkind = \"webhook\"\nurl = \"https://user:hunter2-secret@example.net/\"\ntopic = \"x\"\n\n",
            "[[notify.sinks]]\nname = \"c\"\nkind = \"slack\"\nurl = \"not a url\"\ntoken = \"inline-secret\"\ntoken_env = \"UNSET\"\nevents = []\n",
        );
        let printed = problems(text, &[]);
        for expected in [
            "notify.attempts: 0 is outside 1..=20",
            "sink 'a': an ntfy sink needs a topic",
            "sink 'a': this name is used by an earlier sink",
            "sink 'a': the URL holds credentials",
            "sink 'a': topic is only for ntfy sinks",
            "sink 'c': secrets are not accepted in the config",
            "sink 'c': the URL does not parse",
            "sink 'c': events must name at least one event",
            "sink 'c': the env var UNSET is not set",
        ] {
            assert!(
                printed.iter().any(|p| p.contains(expected)),
                "{expected}: {printed:#?}"
            );
        }
        assert!(
            !printed
                .iter()
                .any(|p| p.contains("hunter2") || p.contains("inline-secret"))
        );
    }

    #[test]
    fn debug_shows_sinks_by_name_and_kind_never_their_url_or_token() {
        let text = "[[sinks]]\nname = \"chat\"\nkind = \"slack\"\nurl = \"https://hooks.example.net/T000/B000/secret-part\"\ntoken = \"inline-secret\"\n";
        let config: super::NotifyConfig = toml::from_str(text).unwrap();
        let printed = format!("{config:?}");
        assert!(
            printed.contains("\"chat\"") && printed.contains("Slack"),
            "{printed}"
        );
        assert!(!printed.contains("secret-part"), "{printed}");
        assert!(!printed.contains("inline-secret"), "{printed}");
        assert!(!printed.contains("hooks.example.net"), "{printed}");
    }

    #[test]
    fn an_unknown_kind_is_refused_with_the_known_ones() {
        let printed = problems(
            "[[notify.sinks]]\nname = \"a\"\nkind = \"email\"\nurl = \"http://127.0.0.1:1/\"\n",
            &[],
        );
        assert!(
            printed[0]
                .contains("unknown variant `email`, expected one of `webhook`, `ntfy`, `slack`"),
            "{printed:#?}"
        );
    }
}
