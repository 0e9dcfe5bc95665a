//! Configuration: an optional TOML file, then command-line and environment overrides, then
//! built-in defaults that work with no file at all (listen on 127.0.0.1:8080, SQLite under
//! `./data`).
//!
//! Loading is two steps so `runbookd check` can report every problem at once:
//! [`Config::load`] parses the file (a syntax or type error stops there, with its line), then
//! [`Config::resolve_tokens`] reads every token secret and collects all that is wrong.
//! Secrets are read from an env var or a file, never from the config itself, and never printed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::auth::{Role, Token, TokenSecret, TokenTable};

pub mod inventory;
pub mod notify;
pub mod playbook_settings;
pub mod secret_file;

pub use inventory::{HostConfig, Inventory, PbsConfig, PveConfig, SshConfig};
pub use notify::{Notify, NotifyConfig};

/// Env var that adds an admin token, for quick starts and scripts.
pub const ADMIN_TOKEN_ENV: &str = "RUNBOOKD_ADMIN_TOKEN";
/// Env var that adds an ingest token, for quick starts and scripts.
pub const INGEST_TOKEN_ENV: &str = "RUNBOOKD_INGEST_TOKEN";
/// Names the audit trail uses for callers that are not `[[tokens]]` entries.
const RESERVED_TOKEN_NAMES: [&str; 3] = ["anonymous", "env-admin", "env-ingest"];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP API listens on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub engine: EngineConfig,
    #[serde(default)]
    pub incidents: IncidentsConfig,
    #[serde(default)]
    pub retention: RetentionConfig,
    /// Where the playbooks are (`*.yaml`); without it, the built-in playbooks.
    pub playbooks_dir: Option<PathBuf>,
    /// The estate's values for playbooks' `settings`; see [`playbook_settings`].
    #[serde(default)]
    pub playbook_settings: playbook_settings::PlaybookSettings,
    #[serde(default)]
    pub tokens: Vec<Spanned<TokenConfig>>,
    /// How to reach the estate's hosts; see [`inventory`].
    pub ssh: Option<Spanned<SshConfig>>,
    #[serde(default)]
    pub hosts: Vec<Spanned<HostConfig>>,
    pub pbs: Option<Spanned<PbsConfig>>,
    pub pve: Option<Spanned<PveConfig>>,
    /// Where notifications go; see [`notify`].
    #[serde(default)]
    pub notify: NotifyConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// The SQLite file; its directory is created if missing.
    pub path: PathBuf,
    /// How long a statement waits for a lock before it fails.
    pub busy_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Larger request bodies get 413.
    pub max_body_bytes: usize,
    /// A request that takes longer gets 503, so Alertmanager retries it.
    pub request_timeout_secs: u64,
    /// A client must send its request header within this long of connecting, or of its
    /// previous answer on a kept-alive connection; else the connection is closed.
    pub header_read_timeout_secs: u64,
    /// A connection on which no byte moves either way for this long is closed (a client that
    /// stops reading its answer); longer than `request_timeout_secs`.
    pub idle_timeout_secs: u64,
    /// Open client connections at most; past it new ones are closed at once. Unset: 512, or
    /// the open-file limit less 128 for the database, SSH and sinks, whichever is lower.
    pub max_connections: Option<usize>,
    /// Accept alerts with no token. Off unless the config says so.
    pub allow_anonymous_ingest: bool,
    /// Names this service is reached by (`Host` header values), besides loopback and the
    /// listen address. `/mcp` and `/api/call` refuse other hosts, against DNS rebinding.
    pub allowed_hosts: Vec<String>,
    /// Web origins (`scheme://host[:port]`) whose pages may call `/mcp` and `/api/call`,
    /// besides `notify.public_url`'s. A request from a browser carries its page's `Origin`;
    /// any other is refused, so a page elsewhere cannot drive the agent's tools.
    pub allowed_origins: Vec<String>,
    /// How long a web page sign-in lasts before the browser must sign in again.
    pub session_hours: u64,
}

/// How the engine drives runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// A worker's lease on a run; a crashed worker's runs are resumed this long after.
    pub lease_secs: u64,
    /// Mutating actions across all runs per rolling hour.
    pub hourly_budget: u32,
    /// Failed or escalated runs per target in 24 h that stop automatic runs.
    pub breaker_after: u32,
    /// How long an idle worker waits before it looks for work again; new runs, decisions,
    /// resume and cancel wake it at once.
    pub idle_poll_ms: u64,
}

impl EngineConfig {
    /// The limits the engine enforces and the safety overview shows; each step's cooldown
    /// comes from its playbook.
    pub fn limits(&self) -> crate::store::safety::Limits {
        crate::store::safety::Limits {
            cooldown: Duration::ZERO,
            hourly_budget: self.hourly_budget,
            breaker_after: self.breaker_after,
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            lease_secs: 60,
            hourly_budget: 20,
            breaker_after: 3,
            idle_poll_ms: 500,
        }
    }
}

/// The incident lifecycle: when a repeat is a new problem.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IncidentsConfig {
    /// After a run verifies its fix, repeats of its alerts for this long are the sender
    /// catching up and start nothing; a repeat after it is a recurrence, with a new run.
    pub settle_secs: u64,
    /// Per source that never sends `resolved` (the sweep, the forwarder): an open incident it
    /// has not repeated for this long is resolved as timed out, so the next one is new.
    pub resolve_after_secs: std::collections::BTreeMap<String, u64>,
}

impl Default for IncidentsConfig {
    fn default() -> Self {
        Self {
            settle_secs: 15 * 60,
            resolve_after_secs: [("pbs".to_owned(), 30 * 60), ("sweep".to_owned(), 6 * 3600)]
                .into(),
        }
    }
}

/// How long old rows are kept; see [`crate::store::retention`]. Every age is in days and off
/// (kept forever) unless set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Alerts nothing needs any more (their incident is over and no active run covers it, or
    /// they are old repeats), and refused alerts.
    pub alerts_days: Option<u32>,
    /// Deliveries none of whose alerts is kept, with the raw bodies only they referred to.
    pub deliveries_days: Option<u32>,
    /// Audit events: exported to `audit_export_dir` (JSONL), then pruned.
    pub audit_days: Option<u32>,
    pub audit_export_dir: Option<PathBuf>,
    /// How often the pruner runs.
    pub every_secs: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            alerts_days: None,
            deliveries_days: None,
            audit_days: None,
            audit_export_dir: None,
            every_secs: 3600,
        }
    }
}

impl RetentionConfig {
    /// The policy the pruner applies (the config is checked already).
    pub fn policy(&self) -> crate::store::retention::Retention {
        let days = |d: Option<u32>| d.map(|d| chrono::Duration::days(d.into()));
        crate::store::retention::Retention {
            alerts: days(self.alerts_days),
            deliveries: days(self.deliveries_days),
            audit: days(self.audit_days)
                .zip(self.audit_export_dir.clone())
                .map(|(age, dir)| crate::store::retention::AuditRetention { age, dir }),
        }
    }

    pub fn every(&self) -> Duration {
        Duration::from_secs(self.every_secs)
    }
}

/// The shortest ages `[retention]` accepts: an alert's history is worth a day, the audit trail
/// a week.
const MIN_RETENTION_DAYS: u32 = 1;
const MIN_AUDIT_RETENTION_DAYS: u32 = 7;
/// About a century: longer is "keep forever", which is leaving the key out.
const MAX_RETENTION_DAYS: u32 = 36_500;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `runbookd=debug,tower_http=info`; `RUST_LOG`
    /// overrides it.
    pub filter: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// One `[[tokens]]` entry. The secret comes from exactly one of `secret_env` or `secret_file`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub name: String,
    pub role: Role,
    pub secret_env: Option<String>,
    pub secret_file: Option<PathBuf>,
}

/// Values from the command line or its env vars; each wins over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub database: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
    pub playbooks_dir: Option<PathBuf>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("data/runbookd.db"),
            busy_timeout_ms: 5_000,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            request_timeout_secs: 30,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            max_connections: None,
            allow_anonymous_ingest: false,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            session_hours: 12,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            filter: "info".to_owned(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            database: DatabaseConfig::default(),
            http: HttpConfig::default(),
            log: LogConfig::default(),
            engine: EngineConfig::default(),
            incidents: IncidentsConfig::default(),
            retention: RetentionConfig::default(),
            playbooks_dir: None,
            playbook_settings: Default::default(),
            tokens: Vec::new(),
            ssh: None,
            hosts: Vec::new(),
            pbs: None,
            pve: None,
            notify: NotifyConfig::default(),
        }
    }
}

/// One thing wrong with the configuration, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `FILE:LINE:COL`, `FILE`, or `env NAME`.
    pub location: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// Where the config came from, kept to point problems at lines.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    path: Option<PathBuf>,
    text: String,
}

impl ConfigSource {
    pub(crate) fn locate(&self, span: std::ops::Range<usize>) -> String {
        let Some(path) = &self.path else {
            return "config".to_owned();
        };
        let before = &self.text[..span.start.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        format!("{}:{line}:{column}", path.display())
    }

    /// Where a dotted key such as `http.max_body_bytes` is set, or the file and key when the
    /// file does not set it.
    pub(crate) fn locate_key(&self, key: &str) -> String {
        let span = toml::de::DeTable::parse(&self.text).ok().and_then(|table| {
            let mut value = toml::de::DeValue::Table(table.into_inner());
            let mut span = None;
            for part in key.split('.') {
                let next = value.get(part)?;
                span = Some(next.span());
                value = next.get_ref().clone();
            }
            span
        });
        match span {
            Some(span) => self.locate(span),
            None => format!("{} [{key}]", self.file()),
        }
    }

    fn file(&self) -> String {
        self.path
            .as_deref()
            .map_or_else(|| "config".to_owned(), |p| p.display().to_string())
    }
}

impl Config {
    /// Reads `path` (or nothing: all defaults), then applies `overrides`.
    pub fn load(
        path: Option<&Path>,
        overrides: &Overrides,
    ) -> Result<(Config, ConfigSource), Vec<Problem>> {
        let (mut config, source) = match path {
            None => (Config::default(), ConfigSource::default()),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    vec![Problem {
                        location: path.display().to_string(),
                        message: format!("cannot read the config file: {e}"),
                    }]
                })?;
                let source = ConfigSource {
                    path: Some(path.to_owned()),
                    text,
                };
                let config = toml::from_str::<Config>(&source.text).map_err(|e| {
                    vec![Problem {
                        location: e
                            .span()
                            .map_or_else(|| source.file(), |span| source.locate(span)),
                        message: e.message().to_owned(),
                    }]
                })?;
                (config, source)
            }
        };
        if let Some(listen) = overrides.listen {
            config.listen = listen;
        }
        if let Some(database) = &overrides.database {
            config.database.path = database.clone();
        }
        if let Some(format) = overrides.log_format {
            config.log.format = format;
        }
        if let Some(dir) = &overrides.playbooks_dir {
            config.playbooks_dir = Some(dir.clone());
        }
        let problems = config.check_values(&source);
        if problems.is_empty() {
            Ok((config, source))
        } else {
            Err(problems)
        }
    }

    /// Range checks that serde cannot express.
    fn check_values(&self, source: &ConfigSource) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut problem = |key: &str, message: String| {
            problems.push(Problem {
                location: source.locate_key(key),
                message: format!("{key}: {message}"),
            })
        };
        if self.database.path.as_os_str().is_empty() {
            problem("database.path", "must not be empty".into());
        }
        if self.incidents.settle_secs > 7 * 86_400 {
            problem(
                "incidents.settle_secs",
                format!(
                    "{} is more than a week (604800)",
                    self.incidents.settle_secs
                ),
            );
        }
        for (source, secs) in &self.incidents.resolve_after_secs {
            if let Err(message) = crate::intake::Source::parse(source) {
                problem("incidents.resolve_after_secs", message);
            }
            if *secs > 366 * 86_400 {
                problem(
                    "incidents.resolve_after_secs",
                    format!("{source} = {secs} is more than a year (31622400)"),
                );
            }
            if *secs == 0 {
                problem(
                    "incidents.resolve_after_secs",
                    format!("{source} = 0: leave the source out to never time its incidents out"),
                );
            }
        }
        let retention = &self.retention;
        for (key, days, min) in [
            (
                "retention.alerts_days",
                retention.alerts_days,
                MIN_RETENTION_DAYS,
            ),
            (
                "retention.deliveries_days",
                retention.deliveries_days,
                MIN_RETENTION_DAYS,
            ),
            (
                "retention.audit_days",
                retention.audit_days,
                MIN_AUDIT_RETENTION_DAYS,
            ),
        ] {
            if let Some(days) = days.filter(|d| !(min..=MAX_RETENTION_DAYS).contains(d)) {
                problem(
                    key,
                    format!(
                        "{days} is outside {min}..={MAX_RETENTION_DAYS} days (leave it out to keep everything)"
                    ),
                );
            }
        }
        match (retention.audit_days, &retention.audit_export_dir) {
            (Some(_), None) => problem(
                "retention.audit_days",
                "needs retention.audit_export_dir: old audit events are exported there before they are pruned".into(),
            ),
            (None, Some(_)) => problem(
                "retention.audit_export_dir",
                "is used only with retention.audit_days".into(),
            ),
            (Some(_), Some(dir)) if dir.as_os_str().is_empty() => {
                problem("retention.audit_export_dir", "must not be empty".into())
            }
            _ => {}
        }
        if !(1..=86_400).contains(&retention.every_secs) {
            problem(
                "retention.every_secs",
                format!("{} is outside 1..=86400", retention.every_secs),
            );
        }
        if !(100..=60_000).contains(&self.database.busy_timeout_ms) {
            problem(
                "database.busy_timeout_ms",
                format!("{} is outside 100..=60000", self.database.busy_timeout_ms),
            );
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.http.max_body_bytes) {
            problem(
                "http.max_body_bytes",
                format!("{} is outside 1024..=67108864", self.http.max_body_bytes),
            );
        }
        if !(2..=3600).contains(&self.engine.lease_secs) {
            problem(
                "engine.lease_secs",
                format!("{} is outside 2..=3600", self.engine.lease_secs),
            );
        }
        if !(10..=60_000).contains(&self.engine.idle_poll_ms) {
            problem(
                "engine.idle_poll_ms",
                format!("{} is outside 10..=60000", self.engine.idle_poll_ms),
            );
        }
        if self.engine.breaker_after == 0 {
            problem("engine.breaker_after", "must be at least 1".into());
        }
        if !(1..=600).contains(&self.http.request_timeout_secs) {
            problem(
                "http.request_timeout_secs",
                format!("{} is outside 1..=600", self.http.request_timeout_secs),
            );
        }
        if !(1..=300).contains(&self.http.header_read_timeout_secs) {
            problem(
                "http.header_read_timeout_secs",
                format!("{} is outside 1..=300", self.http.header_read_timeout_secs),
            );
        }
        if self.http.idle_timeout_secs <= self.http.request_timeout_secs
            || self.http.idle_timeout_secs > 3600
        {
            problem(
                "http.idle_timeout_secs",
                format!(
                    "{} must be above http.request_timeout_secs ({}) and at most 3600",
                    self.http.idle_timeout_secs, self.http.request_timeout_secs
                ),
            );
        }
        if let Some(cap) = self.http.max_connections
            && !(8..=65_536).contains(&cap)
        {
            problem(
                "http.max_connections",
                format!("{cap} is outside 8..=65536"),
            );
        }
        if !(1..=720).contains(&self.http.session_hours) {
            problem(
                "http.session_hours",
                format!("{} is outside 1..=720", self.http.session_hours),
            );
        }
        for origin in &self.http.allowed_origins {
            if let Err(why) = parse_origin(origin) {
                problem("http.allowed_origins", format!("{origin:?}: {why}"));
            }
        }
        problems
    }

    /// The `Host` values `/mcp` and `/api/call` accept: loopback names, the listen address, the
    /// host of `notify.public_url` (where people and agents reach runbookd), and
    /// `http.allowed_hosts`.
    pub fn tool_allowed_hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(str::to_owned).into();
        if !self.listen.ip().is_unspecified() {
            hosts.push(self.listen.ip().to_string());
        }
        let public = self
            .notify
            .public_url
            .as_deref()
            .and_then(|u| url::Url::parse(u).ok());
        hosts.extend(public.and_then(|u| u.host_str().map(str::to_owned)));
        hosts.extend(self.http.allowed_hosts.iter().cloned());
        hosts.dedup();
        hosts
    }

    /// The `Origin` values `/mcp` and `/api/call` accept: `public_url`'s (where people reach
    /// runbookd: `notify.public_url`, or the listen address) and `http.allowed_origins`.
    /// Entries that are not an origin are reported when the config loads and skipped here.
    pub fn tool_allowed_origins(&self, public_url: &url::Url) -> Vec<url::Origin> {
        let mut origins = vec![public_url.origin()];
        origins.extend(
            self.http
                .allowed_origins
                .iter()
                .filter_map(|o| parse_origin(o).ok()),
        );
        origins.dedup();
        origins
    }

    /// Checks `[notify]` and reads every sink's token; every problem is reported.
    pub fn resolve_notify(
        &self,
        source: &ConfigSource,
        env: &impl Fn(&str) -> Option<String>,
    ) -> Result<Notify, Vec<Problem>> {
        self.notify.resolve(source, env)
    }

    /// Where the link-signing key is: `notify.link_key_file`, else beside the database.
    pub fn link_key_path(&self) -> PathBuf {
        self.notify.link_key_file.clone().unwrap_or_else(|| {
            let mut path = self.database.path.clone().into_os_string();
            path.push(".link-key");
            PathBuf::from(path)
        })
    }

    /// The link key's problem, if it has one: a configured file must exist; an existing one
    /// must be owner-only and hold a key. A missing default is fine: `serve` creates it.
    pub fn check_link_key(&self, source: &ConfigSource) -> Result<(), Vec<Problem>> {
        let path = self.link_key_path();
        let problem = |message: String| {
            vec![Problem {
                location: source.locate_key("notify.link_key_file"),
                message: format!("notify.link_key_file: {message}"),
            }]
        };
        if !path.exists() {
            return match self.notify.link_key_file {
                Some(_) => Err(problem(format!(
                    "{} does not exist; make one with `openssl rand -hex 32 > {}` and `chmod 600 {}`",
                    path.display(),
                    path.display(),
                    path.display()
                ))),
                None => Ok(()),
            };
        }
        crate::notify::links::read_key(&path)
            .map(drop)
            .map_err(|e| problem(format!("{e:#}")))
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.http.request_timeout_secs)
    }

    /// How the accept loop bounds client connections.
    pub fn connection_limits(&self) -> crate::http::serve::ConnectionLimits {
        crate::http::serve::ConnectionLimits {
            header_read_timeout: Duration::from_secs(self.http.header_read_timeout_secs),
            idle_timeout: Duration::from_secs(self.http.idle_timeout_secs),
            max_connections: self
                .http
                .max_connections
                .unwrap_or_else(crate::http::serve::ConnectionLimits::default_max_connections),
        }
    }

    /// How long a web sign-in lasts.
    pub fn session_lifetime(&self) -> Duration {
        Duration::from_secs(self.http.session_hours * 3600)
    }

    /// Reads every token's secret, plus the quick-start env tokens, and reports every problem.
    /// `env` looks up an environment variable (a parameter so tests need not touch the
    /// process environment).
    pub fn resolve_tokens(
        &self,
        source: &ConfigSource,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<TokenTable, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut tokens: Vec<Token> = Vec::new();
        let mut secrets: Vec<(String, String)> = Vec::new();

        for entry in &self.tokens {
            let location = source.locate(entry.span());
            let token = entry.get_ref();
            let mut problem = |message: String| {
                problems.push(Problem {
                    location: location.clone(),
                    message: format!("token '{}': {message}", token.name),
                })
            };
            if !is_token_name(&token.name) {
                problem("the name must be 1-64 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit".into());
            }
            if RESERVED_TOKEN_NAMES.contains(&token.name.as_str()) {
                problem("this name is reserved for runbookd's own use".into());
            }
            if tokens.iter().any(|t| t.name() == token.name) {
                problem("this name is used by an earlier token".into());
            }
            let secret = read_secret(
                "secret",
                token.secret_env.as_deref(),
                token.secret_file.as_deref(),
                &env,
            )
            .map_err(&mut problem)
            .ok();
            if let Some(secret) = secret {
                match check_secret(&secret, &secrets) {
                    Ok(parsed) => {
                        secrets.push((token.name.clone(), secret.clone()));
                        tokens.push(Token::new(&token.name, token.role, &parsed));
                    }
                    Err(message) => problem(message),
                }
            }
        }

        for (var, name, role) in [
            (ADMIN_TOKEN_ENV, "env-admin", Role::Admin),
            (INGEST_TOKEN_ENV, "env-ingest", Role::Ingest),
        ] {
            let Some(secret) = env(var).filter(|s| !s.is_empty()) else {
                continue;
            };
            match check_secret(&secret, &secrets) {
                Ok(parsed) => {
                    secrets.push((name.to_owned(), secret.clone()));
                    tokens.push(Token::new(name, role, &parsed));
                }
                Err(message) => problems.push(Problem {
                    location: format!("env {var}"),
                    message,
                }),
            }
        }

        if problems.is_empty() {
            Ok(TokenTable::new(tokens))
        } else {
            Err(problems)
        }
    }
}

/// Reads a secret from exactly one of an env var or a file (its trailing newline dropped).
/// `what` names the pair of keys in messages: `secret` for `secret_env`/`secret_file`.
pub(crate) fn read_secret(
    what: &str,
    from_env: Option<&str>,
    from_file: Option<&Path>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    match (from_env, from_file) {
        (Some(_), Some(_)) => Err(format!("set {what}_env or {what}_file, not both")),
        (None, None) => Err(format!(
            "set {what}_env (an env var name) or {what}_file (a path)"
        )),
        (Some(var), None) => env(var).ok_or_else(|| format!("the env var {var} is not set")),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {what}_file {}: {e}", path.display()))?;
            secret_file::check_secret_file(path).map_err(|e| format!("{what}_file {e}"))?;
            // Files usually end with a newline that is not part of the secret.
            Ok(text.trim_end_matches(['\n', '\r']).to_owned())
        }
    }
}

fn is_token_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
}

/// An entry of `http.allowed_origins`: `http` or `https`, a host, an optional port, and
/// nothing else, as a browser sends it in `Origin`.
fn parse_origin(text: &str) -> Result<url::Origin, String> {
    let url = url::Url::parse(text).map_err(|e| format!("not an origin ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("the scheme must be http or https".into());
    }
    if url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
    {
        return Err("an origin is scheme://host[:port], with no path, query or user".into());
    }
    Ok(url.origin())
}

/// Refuses weak secrets (see [`TokenSecret::parse`]) and a secret shared with another token
/// (which would make its role ambiguous). Messages never contain the secret.
fn check_secret(secret: &str, earlier: &[(String, String)]) -> Result<TokenSecret, String> {
    let parsed = TokenSecret::parse(secret).map_err(|weak| weak.to_string())?;
    if let Some((other, _)) = earlier.iter().find(|(_, s)| s == secret) {
        return Err(format!("the secret is the same as token '{other}''s"));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_tools_accept_loopback_the_listen_address_the_public_url_and_the_configured_hosts() {
        let mut config = Config {
            listen: "192.0.2.10:8080".parse().unwrap(),
            ..Config::default()
        };
        config.notify.public_url = Some("https://runbookd.example.net/".to_owned());
        config.http.allowed_hosts = vec!["runbookd.lan".to_owned()];
        assert_eq!(
            config.tool_allowed_hosts(),
            [
                "localhost",
                "127.0.0.1",
                "::1",
                "192.0.2.10",
                "runbookd.example.net",
                "runbookd.lan"
            ]
        );
    }

    use super::*;
    use std::collections::HashMap;
    use std::io::Write;

    #[test]
    fn the_tools_accept_the_public_urls_origin_and_the_configured_origins() {
        let mut config = Config::default();
        config.http.allowed_origins = vec!["https://agents.example.net:8443".to_owned()];
        let public = url::Url::parse("https://runbookd.example.net/ops/").unwrap();
        let origins: Vec<String> = config
            .tool_allowed_origins(&public)
            .iter()
            .map(url::Origin::ascii_serialization)
            .collect();
        assert_eq!(
            origins,
            [
                "https://runbookd.example.net",
                "https://agents.example.net:8443"
            ]
        );
    }

    #[test]
    fn an_allowed_origin_that_is_not_an_origin_is_refused_by_name() {
        for bad in [
            "runbookd.lan",
            "ftp://runbookd.lan",
            "https://runbookd.lan/page",
            "https://runbookd.lan/?q=1",
        ] {
            let mut config = Config::default();
            config.http.allowed_origins = vec![bad.to_owned()];
            let problems = config.check_values(&ConfigSource::default());
            assert!(
                problems
                    .iter()
                    .any(|p| p.to_string().contains("http.allowed_origins")),
                "{bad}: {problems:?}"
            );
        }
    }

    fn write_config(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        file
    }

    #[test]
    fn no_file_gives_working_defaults() {
        let (config, _) = Config::load(None, &Overrides::default()).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.database.path, PathBuf::from("data/runbookd.db"));
        assert_eq!(config.http.max_body_bytes, 1024 * 1024);
        assert!(!config.http.allow_anonymous_ingest);
    }

    #[test]
    fn overrides_win_over_the_file() {
        let file = write_config("listen = \"127.0.0.1:9000\"\n[database]\npath = \"a.db\"\n");
        let overrides = Overrides {
            listen: Some("127.0.0.1:9100".parse().unwrap()),
            database: None,
            log_format: Some(LogFormat::Json),
            playbooks_dir: None,
        };
        let (config, _) = Config::load(Some(file.path()), &overrides).unwrap();
        assert_eq!(config.listen.port(), 9100);
        assert_eq!(config.database.path, PathBuf::from("a.db"));
        assert_eq!(config.log.format, LogFormat::Json);
    }

    #[test]
    fn a_type_error_points_at_its_line() {
        let file =
            write_config("listen = \"127.0.0.1:9000\"\n\n[http]\nmax_body_bytes = \"big\"\n");
        let problems = Config::load(Some(file.path()), &Overrides::default()).unwrap_err();
        assert_eq!(problems.len(), 1);
        let expected = format!("{}:4:", file.path().display());
        assert!(problems[0].location.starts_with(&expected), "{problems:?}");
    }

    #[test]
    fn a_value_out_of_range_points_at_its_line() {
        let file = write_config(
            "[database]\npath = \"x.db\"\n\n[http]\nrequest_timeout_secs = 0\nmax_body_bytes = 10\n",
        );
        let problems = Config::load(Some(file.path()), &Overrides::default()).unwrap_err();
        let printed: Vec<String> = problems.iter().map(ToString::to_string).collect();
        let at = |line: usize| format!("{}:{line}:", file.path().display());
        assert_eq!(printed.len(), 2, "{printed:#?}");
        assert!(
            printed[0].starts_with(&at(6))
                && printed[0].contains("http.max_body_bytes: 10 is outside"),
            "{printed:#?}"
        );
        assert!(
            printed[1].starts_with(&at(5))
                && printed[1].contains("http.request_timeout_secs: 0 is outside"),
            "{printed:#?}"
        );
    }

    #[test]
    fn connection_limits_are_checked_and_default_below_the_open_file_limit() {
        let (config, _) = Config::load(None, &Overrides::default()).unwrap();
        let limits = config.connection_limits();
        assert_eq!(limits.header_read_timeout, Duration::from_secs(10));
        assert_eq!(limits.idle_timeout, Duration::from_secs(60));
        assert!((16..=512).contains(&limits.max_connections), "{limits:?}");

        let file = write_config(
            "[http]
request_timeout_secs = 30
header_read_timeout_secs = 0
idle_timeout_secs = 30
max_connections = 4
",
        );
        let problems = Config::load(Some(file.path()), &Overrides::default()).unwrap_err();
        let printed: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(printed.len(), 3, "{printed:#?}");
        for expected in [
            "http.header_read_timeout_secs: 0 is outside 1..=300",
            "http.idle_timeout_secs: 30 must be above http.request_timeout_secs (30)",
            "http.max_connections: 4 is outside 8..=65536",
        ] {
            assert!(
                printed.iter().any(|p| p.contains(expected)),
                "{expected}: {printed:#?}"
            );
        }
    }

    #[test]
    fn retention_ages_are_checked_with_their_lines() {
        let file = write_config(
            "[retention]\nalerts_days = 0\naudit_days = 3\nevery_secs = 0\ndeliveries_days = 14\n",
        );
        let problems = Config::load(Some(file.path()), &Overrides::default()).unwrap_err();
        let printed: Vec<String> = problems.iter().map(ToString::to_string).collect();
        let at = |line: usize| format!("{}:{line}:", file.path().display());
        let expected = [
            (2, "retention.alerts_days: 0 is outside 1..=36500 days"),
            (3, "retention.audit_days: 3 is outside 7..=36500 days"),
            (3, "retention.audit_days: needs retention.audit_export_dir"),
            (4, "retention.every_secs: 0 is outside 1..=86400"),
        ];
        assert_eq!(printed.len(), expected.len(), "{printed:#?}");
        for (line, message) in expected {
            assert!(
                printed
                    .iter()
                    .any(|p| p.starts_with(&at(line)) && p.contains(message)),
                "{message} at line {line}: {printed:#?}"
            );
        }

        let file = write_config(
            "[retention]\ndeliveries_days = 14\naudit_days = 400\naudit_export_dir = \"exports\"\n",
        );
        let (config, _) = Config::load(Some(file.path()), &Overrides::default()).unwrap();
        let policy = config.retention.policy();
        assert_eq!(policy.deliveries, Some(chrono::Duration::days(14)));
        assert_eq!(policy.alerts, None);
        let audit = policy.audit.unwrap();
        assert_eq!(
            (audit.age, audit.dir),
            (chrono::Duration::days(400), PathBuf::from("exports"))
        );
    }

    #[test]
    fn reserved_token_names_are_refused() {
        let file = write_config(
            "[[tokens]]\nname = \"anonymous\"\nrole = \"admin\"\nsecret_env = \"S\"\n",
        );
        let (config, source) = Config::load(Some(file.path()), &Overrides::default()).unwrap();
        let problems = config
            .resolve_tokens(&source, |_| Some("some-secret-0123456789abcdefghij".into()))
            .unwrap_err();
        assert!(problems[0].message.contains("reserved"), "{problems:?}");
    }

    #[test]
    fn an_unknown_key_is_refused() {
        let file = write_config("[http]\nallow_anonymous_ingestion = true\n");
        let problems = Config::load(Some(file.path()), &Overrides::default()).unwrap_err();
        assert!(
            problems[0].message.contains("unknown field"),
            "{problems:?}"
        );
    }

    #[test]
    fn every_token_problem_is_reported_with_its_line_and_no_secret() {
        let file = write_config(concat!(
            "[[tokens]]\nname = \"am\"\nrole = \"ingest\"\nsecret_env = \"AM_SECRET\"\n\n",
            "[[tokens]]\nname = \"am\"\nrole = \"admin\"\nsecret_env = \"SHORT\"\n\n",
            "[[tokens]]\nname = \"both\"\nrole = \"agent\"\nsecret_env = \"X\"\nsecret_file = \"/x\"\n\n",
            "[[tokens]]\nname = \"missing\"\nrole = \"agent\"\nsecret_file = \"/nonexistent/secret\"\n",
        ));
        let (config, source) = Config::load(Some(file.path()), &Overrides::default()).unwrap();
        let env: HashMap<&str, &str> = [
            ("AM_SECRET", "am-secret-0123456789abcdefghijklm"),
            ("SHORT", "tiny-secret"),
            (ADMIN_TOKEN_ENV, "am-secret-0123456789abcdefghijklm"),
        ]
        .into();
        let problems = config
            .resolve_tokens(&source, |k| env.get(k).map(|v| v.to_string()))
            .unwrap_err();
        let printed: Vec<String> = problems.iter().map(ToString::to_string).collect();
        let at = |line: usize| format!("{}:{line}:", file.path().display());
        assert!(
            printed
                .iter()
                .any(|p| p.starts_with(&at(6)) && p.contains("earlier token")),
            "{printed:#?}"
        );
        assert!(
            printed
                .iter()
                .any(|p| p.starts_with(&at(6)) && p.contains("shorter than 32")),
            "{printed:#?}"
        );
        assert!(
            printed
                .iter()
                .any(|p| p.starts_with(&at(11)) && p.contains("not both")),
            "{printed:#?}"
        );
        assert!(
            printed
                .iter()
                .any(|p| p.starts_with(&at(17)) && p.contains("cannot read secret_file")),
            "{printed:#?}"
        );
        assert!(
            printed
                .iter()
                .any(|p| p.starts_with("env RUNBOOKD_ADMIN_TOKEN")
                    && p.contains("same as token 'am'")),
            "{printed:#?}"
        );
        assert_eq!(problems.len(), 5, "{printed:#?}");
        for p in &printed {
            assert!(
                !p.contains("am-secret") && !p.contains("tiny-secret"),
                "{p}"
            );
        }
    }

    #[test]
    fn secret_files_lose_their_trailing_newline() {
        let secret = write_config("file-secret-0123456789abcdefghijk\n");
        let file = write_config(&format!(
            "[[tokens]]\nname = \"ops\"\nrole = \"admin\"\nsecret_file = \"{}\"\n",
            secret.path().display()
        ));
        let (config, source) = Config::load(Some(file.path()), &Overrides::default()).unwrap();
        let table = config.resolve_tokens(&source, |_| None).unwrap();
        let caller = table
            .authenticate("file-secret-0123456789abcdefghijk")
            .unwrap();
        assert_eq!((caller.name.as_str(), caller.role), ("ops", Role::Admin));
    }
}
