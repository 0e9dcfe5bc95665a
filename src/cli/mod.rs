//! `runbookd incidents|runs|approvals|approve|reject|pause|resume|safety|breaker|dry-run|backups`:
//! clients of a running service's REST API, for the on-call human at a terminal.
//!
//! The URL and token come from `RUNBOOKD_URL` and `RUNBOOKD_TOKEN` (or `--url`/`--token`; the
//! env var is better for the token, as flags show in `ps`). Output is text for people: tables
//! and timelines, coloured only on a terminal without `NO_COLOR`; `--json` prints the service's
//! raw answer for scripts.
//!
//! Exit codes: 0 done; 1 the service could not be reached or failed; 2 usage or config (no
//! token, a bad URL); 3 the service refused (401, 403, 404, 409, other 4xx), or the approval
//! had already been decided the other way.
//!
//! - [`client`]: the HTTP client and its errors.
//! - [`model`]: the client's views of the API's answers.
//! - [`render`]: text from those views, testable without a terminal.

pub mod backups;
pub mod client;
pub mod model;
pub mod render;

use std::io::Write;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use crate::clock::Clock;
use client::{ApiClient, ClientError};
use render::Paint;

pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_REFUSED: u8 = 3;

/// Where the service is and who is asking. `Debug` never shows the token.
#[derive(Clone, Args)]
pub struct Connection {
    /// Base URL of the runbookd service.
    #[arg(long, env = "RUNBOOKD_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API token (a `[[tokens]]` entry of the service's config). Prefer the RUNBOOKD_TOKEN env
    /// var: command-line flags are visible to other users in `ps`.
    #[arg(long, env = "RUNBOOKD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the service's raw JSON answer instead of text.
    #[arg(long)]
    pub json: bool,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("json", &self.json)
            .finish()
    }
}

/// The API client commands; `main.rs` flattens them into its own.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// List incidents, newest first, with their run's state; `incidents show ID` for one.
    Incidents(IncidentsArgs),
    /// Show a run: `runs show ID`, with its cause, evidence, steps, approvals and timeline.
    Runs(RunsArgs),
    /// List approvals (pending ones by default) with the exact command and expiry.
    Approvals(ApprovalsArgs),
    /// Approve a pending step; the run goes on. Needs an approver or admin token.
    Approve(DecideArgs),
    /// Reject a pending step; the run escalates. Needs an approver or admin token.
    Reject(DecideArgs),
    /// Hold new runs; running runs stop at their next step boundary. Needs an admin token.
    Pause(Connection),
    /// Let runs go on after `pause`. Needs an admin token.
    Resume(Connection),
    /// Show every safety control: each target's circuit breaker, cooldowns in force, the
    /// hourly budget, pause and dry-run.
    Safety(Connection),
    /// Reset a target's circuit breaker: `breaker reset TARGET --reason TEXT`. Needs an admin
    /// token.
    Breaker(BreakerArgs),
    /// Switch global dry-run: `dry-run on|off --reason TEXT`. New runs are created dry while it
    /// is on; runs already created keep their mode. Needs an admin token.
    DryRun(DryRunArgs),
    /// Every PBS backup group's age against the playbook's threshold, as a bar: fresh, stale
    /// or decommissioned, with the run that last worked on it.
    Backups(BackupsArgs),
}

#[derive(Debug, Args)]
pub struct BackupsArgs {
    /// The PBS datastore; the service's configured one when omitted.
    #[arg(long)]
    pub datastore: Option<String>,
    /// The playbook whose threshold applies; needed only when several are loaded.
    #[arg(long)]
    pub playbook: Option<String>,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, Args)]
pub struct BreakerArgs {
    #[command(subcommand)]
    pub command: BreakerCommand,
}

#[derive(Debug, Subcommand)]
pub enum BreakerCommand {
    /// From now on, the breaker counts only failures after this reset.
    Reset(ResetArgs),
}

#[derive(Debug, Args)]
pub struct ResetArgs {
    /// The target, as a playbook names it (see `runbookd safety`).
    pub target: String,
    /// Why: recorded in the audit trail. Required.
    #[arg(long)]
    pub reason: String,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Debug, Args)]
pub struct DryRunArgs {
    pub state: OnOff,
    /// Why: recorded in the audit trail. Required.
    #[arg(long)]
    pub reason: String,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct IncidentsArgs {
    #[command(subcommand)]
    pub show: Option<IncidentsCommand>,
    /// Only incidents in this state.
    #[arg(long, value_enum)]
    pub status: Option<IncidentStatus>,
    /// At most this many (1-500).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub limit: u32,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, Subcommand)]
pub enum IncidentsCommand {
    /// One incident: its alerts' labels, its runs with steps and approvals, its timeline.
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    #[command(subcommand)]
    pub command: RunsCommand,
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// One run: state, cause, evidence, each step's host, command, exit, duration and output,
    /// its approvals and its timeline.
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    pub id: i64,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum IncidentStatus {
    Open,
    Resolved,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ApprovalStatus {
    Pending,
    Approved,
    Rejected,
    Expired,
    Cancelled,
    /// Every approval, whatever its state.
    All,
}

#[derive(Debug, Args)]
pub struct ApprovalsArgs {
    /// Which approvals to list.
    #[arg(long, value_enum, default_value = "pending")]
    pub status: ApprovalStatus,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, Args)]
pub struct DecideArgs {
    /// The approval's id (see `runbookd approvals`).
    pub id: i64,
    /// Why: recorded with the decision and shown in the timeline.
    #[arg(long)]
    pub comment: Option<String>,
    #[command(flatten)]
    pub connection: Connection,
}

/// Runs one client command to the end and returns the process's exit code; `clock` says what
/// "now" is for spans such as "5m ago".
pub fn run(command: ClientCommand, clock: &dyn Clock) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("runbookd: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match runtime.block_on(execute(command, clock, Paint::for_stdout())) {
        Ok(Outcome { text, code }) => {
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = stdout
                .write_all(text.as_bytes())
                .and_then(|()| stdout.flush());
            ExitCode::from(code)
        }
        Err(error) => {
            eprintln!("runbookd: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

/// What a command prints, and how it exits.
#[derive(Debug)]
pub struct Outcome {
    pub text: String,
    pub code: u8,
}

impl Outcome {
    fn ok(text: String) -> Self {
        Self { text, code: 0 }
    }
}

/// Runs one client command and returns its text; nothing is printed here. "Now" is read from
/// `clock` when the answer is rendered.
pub async fn execute(
    command: ClientCommand,
    clock: &dyn Clock,
    paint: Paint,
) -> Result<Outcome, ClientError> {
    match command {
        ClientCommand::Incidents(args) => match args.show {
            Some(IncidentsCommand::Show(show)) => {
                let client = connect(&show.connection)?;
                let raw = client.get(&format!("api/v1/incidents/{}", show.id)).await?;
                if show.connection.json {
                    return Ok(Outcome::ok(pretty(&raw)));
                }
                let detail: model::IncidentDetail = client.parse(&raw)?;
                Ok(Outcome::ok(render::incident(&detail, clock.now(), paint)))
            }
            None => {
                let client = connect(&args.connection)?;
                let mut path = format!("api/v1/incidents?limit={}", args.limit);
                if let Some(status) = args.status {
                    path.push_str(match status {
                        IncidentStatus::Open => "&status=open",
                        IncidentStatus::Resolved => "&status=resolved",
                    });
                }
                let raw = client.get(&path).await?;
                if args.connection.json {
                    return Ok(Outcome::ok(pretty(&raw)));
                }
                let page: model::IncidentPage = client.parse(&raw)?;
                Ok(Outcome::ok(render::incidents(
                    &page.incidents,
                    clock.now(),
                    paint,
                )))
            }
        },
        ClientCommand::Runs(RunsArgs {
            command: RunsCommand::Show(show),
        }) => {
            let client = connect(&show.connection)?;
            let raw = client.get(&format!("api/v1/runs/{}", show.id)).await?;
            if show.connection.json {
                return Ok(Outcome::ok(pretty(&raw)));
            }
            let detail: model::RunDetail = client.parse(&raw)?;
            Ok(Outcome::ok(render::run(&detail, clock.now(), paint)))
        }
        ClientCommand::Approvals(args) => {
            let client = connect(&args.connection)?;
            let path = match args.status {
                ApprovalStatus::All => "api/v1/approvals".to_owned(),
                status => format!(
                    "api/v1/approvals?status={}",
                    status
                        .to_possible_value()
                        .map(|v| v.get_name().to_owned())
                        .unwrap_or_default()
                ),
            };
            let raw = client.get(&path).await?;
            if args.connection.json {
                return Ok(Outcome::ok(pretty(&raw)));
            }
            let list: Vec<model::Approval> = client.parse(&raw)?;
            Ok(Outcome::ok(render::approvals(&list, clock.now(), paint)))
        }
        ClientCommand::Approve(args) => decide(args, "approve", "approved", paint).await,
        ClientCommand::Reject(args) => decide(args, "reject", "rejected", paint).await,
        ClientCommand::Pause(connection) => switch(&connection, "api/v1/pause").await,
        ClientCommand::Resume(connection) => switch(&connection, "api/v1/resume").await,
        ClientCommand::Safety(connection) => {
            let client = connect(&connection)?;
            let raw = client.get("api/v1/safety").await?;
            if connection.json {
                return Ok(Outcome::ok(pretty(&raw)));
            }
            let overview: model::SafetyOverview = client.parse(&raw)?;
            Ok(Outcome::ok(render::safety(&overview, clock.now(), paint)))
        }
        ClientCommand::Breaker(BreakerArgs {
            command: BreakerCommand::Reset(args),
        }) => {
            let client = connect(&args.connection)?;
            // The target is one path segment, whatever it holds.
            let target: String =
                url::form_urlencoded::byte_serialize(args.target.as_bytes()).collect();
            let raw = client
                .post(
                    &format!("api/v1/breakers/{}/reset", target.replace('+', "%20")),
                    Some(&json!({"reason": args.reason})),
                )
                .await?;
            if args.connection.json {
                return Ok(Outcome::ok(pretty(&raw)));
            }
            let breaker: model::Breaker = client.parse(&raw)?;
            Ok(Outcome::ok(format!(
                "breaker reset: {}",
                render::breaker(&breaker, clock.now(), paint)
            )))
        }
        ClientCommand::DryRun(args) => {
            let client = connect(&args.connection)?;
            let enabled = args.state == OnOff::On;
            let raw = client
                .post(
                    "api/v1/dry-run",
                    Some(&json!({"enabled": enabled, "reason": args.reason})),
                )
                .await?;
            if args.connection.json {
                return Ok(Outcome::ok(pretty(&raw)));
            }
            let state: model::DryRunState = client.parse(&raw)?;
            Ok(Outcome::ok(render::dry_run(state.dry_run)))
        }
        ClientCommand::Backups(args) => {
            let client = connect(&args.connection)?;
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            if let Some(datastore) = &args.datastore {
                query.append_pair("datastore", datastore);
            }
            if let Some(playbook) = &args.playbook {
                query.append_pair("playbook", playbook);
            }
            let query = query.finish();
            let path = if query.is_empty() {
                "api/v1/backups".to_owned()
            } else {
                format!("api/v1/backups?{query}")
            };
            let raw = client.get(&path).await?;
            if args.connection.json {
                return Ok(Outcome::ok(pretty(&raw)));
            }
            let status: backups::BackupStatus = client.parse(&raw)?;
            Ok(Outcome::ok(backups::render(&status, clock.now(), paint)))
        }
    }
}

fn connect(connection: &Connection) -> Result<ApiClient, ClientError> {
    ApiClient::new(&connection.url, connection.token.as_deref())
}

fn pretty(value: &Value) -> String {
    format!(
        "{}\n",
        serde_json::to_string_pretty(value).unwrap_or_default()
    )
}

async fn decide(
    args: DecideArgs,
    verb: &str,
    wanted: &str,
    paint: Paint,
) -> Result<Outcome, ClientError> {
    let client = connect(&args.connection)?;
    let body = args.comment.as_ref().map(|c| json!({"comment": c}));
    let raw = client
        .post(
            &format!("api/v1/approvals/{}/{verb}", args.id),
            body.as_ref(),
        )
        .await?;
    let answer: model::DecisionAnswer = client.parse(&raw)?;
    // Asked for one decision, found the other standing: a script must not read that as done.
    let code = if answer.approval.status == wanted {
        0
    } else {
        EXIT_REFUSED
    };
    let text = if args.connection.json {
        pretty(&raw)
    } else {
        render::decision(&answer, wanted, paint)
    };
    Ok(Outcome { text, code })
}

async fn switch(connection: &Connection, path: &str) -> Result<Outcome, ClientError> {
    let client = connect(connection)?;
    let raw = client.post(path, None).await?;
    if connection.json {
        return Ok(Outcome::ok(pretty(&raw)));
    }
    let state: model::SwitchState = client.parse(&raw)?;
    Ok(Outcome::ok(render::switch(state.paused)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_token() {
        let connection = Connection {
            url: "http://127.0.0.1:8080".to_owned(),
            token: Some("cli-secret-token-0123456789".to_owned()),
            json: false,
        };
        let printed = format!("{connection:?}");
        assert!(!printed.contains("cli-secret"), "{printed}");
        assert!(printed.contains("<redacted>"), "{printed}");
    }
}
