//! The `runbookd` command line. Everything it runs lives in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use runbookd::clock::{Clock, SystemClock};
use runbookd::config::{Config, ConfigSource, LogFormat, Overrides, Problem};
use runbookd::engine::estate::Estate;
use runbookd::lab::RunningLab;
use runbookd::startup::{Application, EngineParts, shutdown_signal};
use runbookd::telemetry;

#[derive(Debug, Parser)]
#[command(
    name = "runbookd",
    version,
    about = "Alert-driven remediation for a Proxmox homelab"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service.
    Serve(ServeArgs),
    /// Validate the config (tokens, inventory, secrets, playbook settings) and report every
    /// problem; with --probe, also connect read-only to every configured host and API.
    Check(CheckArgs),
    /// Print the built-in playbooks, or export them as files to start your own from.
    Playbooks(PlaybooksArgs),
    /// Ask a running service's /healthz (the container image's health check; no curl needed).
    Health(HealthArgs),
    /// Run the simulated estate on loopback until interrupted.
    Lab(LabArgs),
    /// Tell the whole story in this terminal: an alert, the diagnosis, the fix, the checks.
    Demo(DemoArgs),
    /// Copy the database into FILE (new, 0600) while the service runs: a consistent snapshot.
    Backup(BackupArgs),
    /// The audit trail's one exit: `audit export --before AGE|TIME --out FILE.jsonl` writes the
    /// older events to FILE, then prunes exactly those, recording `audit.pruned`.
    Audit(AuditArgs),
    /// Clients of a running service (RUNBOOKD_URL, RUNBOOKD_TOKEN).
    #[command(flatten)]
    Client(runbookd::cli::ClientCommand),
}

#[derive(Debug, Args)]
struct BackupArgs {
    /// Where to write the copy; an existing file is never overwritten.
    file: PathBuf,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Debug, Args)]
struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Write every audit event older than --before to --out (one JSON object per line, every
    /// column), then delete exactly those events; `audit.pruned` records the count, the id and
    /// time range, and the file's SHA-256.
    Export(AuditExportArgs),
}

#[derive(Debug, Args)]
struct AuditExportArgs {
    /// An RFC 3339 time (2026-01-31T00:00:00Z), or an age before now (90d, 36h, 45m).
    #[arg(long)]
    before: runbookd::store::retention::Before,
    /// The JSONL file to write; an existing file is never overwritten.
    #[arg(long)]
    out: PathBuf,
    /// Export only: delete nothing.
    #[arg(long)]
    keep: bool,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Debug, Args)]
struct DemoArgs {
    #[arg(long, default_value = "stale-nfs")]
    scenario: String,
    /// Directory of playbooks [default: the built-in playbooks].
    #[arg(long, env = "RUNBOOKD_PLAYBOOKS")]
    playbooks: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct CheckArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Also connect to every configured host and API, read-only: host keys, authentication,
    /// tokens and privileges, TLS pins, the playbooks' read-only probes. One line per check,
    /// with the fix for each failure.
    #[arg(long)]
    probe: bool,
}

#[derive(Debug, Args)]
struct PlaybooksArgs {
    /// Write the built-in playbooks into this directory (never overwriting a file) instead of
    /// printing them; then use it with --playbooks DIR.
    #[arg(long, value_name = "DIR")]
    export: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct HealthArgs {
    /// The service's address [default: RUNBOOKD_LISTEN, else 127.0.0.1:8080; an unspecified
    /// address such as 0.0.0.0 means this machine].
    #[arg(long, env = "RUNBOOKD_LISTEN")]
    listen: Option<SocketAddr>,
}

#[derive(Debug, Args)]
struct ConfigArgs {
    /// TOML config file; without one, the built-in defaults apply.
    #[arg(long, env = "RUNBOOKD_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "RUNBOOKD_LISTEN")]
    listen: Option<SocketAddr>,
    /// SQLite database file [default: data/runbookd.db].
    #[arg(long, env = "RUNBOOKD_DB")]
    db: Option<PathBuf>,
    /// Log format [default: text].
    #[arg(long, env = "RUNBOOKD_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// Directory of playbooks [default: the built-in playbooks].
    #[arg(long, env = "RUNBOOKD_PLAYBOOKS")]
    playbooks: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Start the simulated estate in-process (optionally with a scenario) and use it as the
    /// inventory.
    #[arg(long, num_args = 0..=1, default_missing_value = "healthy", value_name = "SCENARIO")]
    lab: Option<String>,
    /// Refuse to start, naming what is missing, unless remediation can run (an estate in the
    /// config, or --lab, and valid playbooks). The shipped compose, Kubernetes and systemd
    /// configs set it.
    #[arg(long, env = "RUNBOOKD_REQUIRE_ENGINE")]
    require_engine: bool,
}

#[derive(Debug, Args)]
struct LabArgs {
    /// healthy, stale-nfs, stale-nfs-estale, nfs-unmounted, cert-mismatch, pbs-down,
    /// pbs-vm-stopped, decommissioned-only, mixed, job-disabled, host-unreachable, flaky-ssh,
    /// hung-nfs.
    #[arg(long, default_value = "healthy")]
    scenario: String,
    /// Where to write the lab's config, keys and certificates.
    #[arg(long, default_value = "lab")]
    dir: PathBuf,
}

impl ConfigArgs {
    fn load(&self) -> Result<(Config, ConfigSource), Vec<Problem>> {
        let overrides = Overrides {
            listen: self.listen,
            database: self.db.clone(),
            log_format: self.log_format,
            playbooks_dir: self.playbooks.clone(),
        };
        Config::load(self.config.as_deref(), &overrides)
    }
}

/// mimalloc: intake allocates and frees many small buffers per request (JSON, SQL rows, HTTP);
/// measured under the peer benchmark, it is cheaper at that than glibc's malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(args) => serve(&args),
        Command::Check(args) => check(&args),
        Command::Playbooks(args) => playbooks(&args),
        Command::Health(args) => health(&args),
        Command::Lab(args) => lab(&args),
        Command::Demo(args) => demo(&args),
        Command::Backup(args) => backup(&args),
        Command::Audit(AuditArgs {
            command: AuditCommand::Export(args),
        }) => audit_export(&args),
        Command::Client(command) => runbookd::cli::run(command, &SystemClock),
    }
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn report(problems: &[Problem]) {
    for problem in problems {
        eprintln!("{problem}");
    }
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => Some(runtime),
        Err(error) => {
            eprintln!("cannot start the async runtime: {error}");
            None
        }
    }
}

/// The configured playbooks (a directory, or the built-in ones) with the config's settings
/// overrides applied.
fn load_playbooks(
    config: &Config,
    source: &ConfigSource,
) -> Result<Vec<runbookd::playbook::PlaybookFile>, Vec<Problem>> {
    let mut files = runbookd::playbook::builtin::load(config.playbooks_dir.as_deref())?;
    config.apply_playbook_settings(source, &mut files)?;
    Ok(files)
}

fn check(args: &CheckArgs) -> ExitCode {
    let (config, source) = match args.config.load() {
        Ok(loaded) => loaded,
        Err(problems) => {
            report(&problems);
            return ExitCode::FAILURE;
        }
    };
    let tokens = config.resolve_tokens(&source, env_var);
    let inventory = config.resolve_inventory(&source, &env_var);
    let notify = config.resolve_notify(&source, &env_var);
    let playbooks = load_playbooks(&config, &source);
    let link_key = config.check_link_key(&source);
    let mut problems = Vec::new();
    problems.extend(link_key.err().into_iter().flatten());
    problems.extend(tokens.as_ref().err().into_iter().flatten().cloned());
    problems.extend(inventory.as_ref().err().into_iter().flatten().cloned());
    problems.extend(notify.as_ref().err().into_iter().flatten().cloned());
    problems.extend(playbooks.as_ref().err().into_iter().flatten().cloned());
    let (Ok(tokens), Ok(inventory), Ok(notify), Ok(playbooks)) =
        (tokens, inventory, notify, playbooks)
    else {
        report(&problems);
        return ExitCode::FAILURE;
    };
    println!(
        "config ok: listen {}, database {}, {} token(s), {} host(s), PBS {}, PVE {}",
        config.listen,
        config.database.path.display(),
        tokens.tokens().len(),
        inventory.ssh_hosts.len(),
        if inventory.pbs.is_some() {
            "configured"
        } else {
            "not configured"
        },
        if inventory.pve.is_some() {
            "configured"
        } else {
            "not configured"
        },
    );
    for token in tokens.tokens() {
        println!("  token {} ({})", token.name(), token.role().as_str());
    }
    for sink in &notify.sinks {
        let events: Vec<&str> = sink.events.iter().map(|e| e.as_str()).collect();
        println!("  notify sink {} ({})", sink.name, events.join(", "));
    }
    for file in &playbooks {
        println!(
            "  playbook {} ({})",
            file.playbook.name,
            file.path.display()
        );
    }
    if !args.probe {
        return ExitCode::SUCCESS;
    }
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let mut out = std::io::stdout();
    match runtime.block_on(runbookd::preflight::run(&inventory, &playbooks, &mut out)) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(failed) => {
            eprintln!("{failed} check(s) failed: fix them before pointing runbookd at this estate");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("runbookd check --probe: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn playbooks(args: &PlaybooksArgs) -> ExitCode {
    match &args.export {
        Some(dir) => match runbookd::playbook::builtin::export(dir) {
            Ok(written) => {
                for path in written {
                    println!("wrote {}", path.display());
                }
                println!(
                    "use them with: runbookd serve --playbooks {}",
                    dir.display()
                );
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("runbookd playbooks --export: {error}");
                ExitCode::FAILURE
            }
        },
        None => {
            for (file, text) in runbookd::playbook::builtin::BUILTIN {
                println!("# builtin:{file}");
                print!("{text}");
            }
            ExitCode::SUCCESS
        }
    }
}

fn health(args: &HealthArgs) -> ExitCode {
    let mut address = args.listen.unwrap_or_else(|| Config::default().listen);
    if address.ip().is_unspecified() {
        address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let url = format!("http://{address}/healthz");
    let answer = runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        client.get(&url).send().await?.error_for_status()
    });
    match answer {
        Ok(_) => {
            println!("{url}: ok");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{url}: {error}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: &ServeArgs) -> ExitCode {
    let loaded = args.config.load().and_then(|(config, source)| {
        let tokens = config.resolve_tokens(&source, env_var)?;
        let inventory = config.resolve_inventory(&source, &env_var)?;
        let notify = config.resolve_notify(&source, &env_var)?;
        config.check_link_key(&source)?;
        Ok((tokens, inventory, notify, config, source))
    });
    let (tokens, inventory, notify, config, source) = match loaded {
        Ok(loaded) => loaded,
        Err(problems) => {
            report(&problems);
            eprintln!("not starting: fix the config (runbookd check reports the same)");
            return ExitCode::from(2);
        }
    };
    telemetry::init_logging(&config.log);
    let playbooks = load_playbooks(&config, &source);
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let result = runtime.block_on(async {
        // Before anything is written: a second process on this database stops here.
        let claim = Application::claim(&config, clock.as_ref())?;
        // Kept alive for as long as the service runs.
        let mut lab = None;
        let inventory = match &args.lab {
            Some(scenario) => {
                let dir = config.database.path.parent().unwrap_or(std::path::Path::new(".")).join("lab");
                let running = RunningLab::launch(&dir, scenario).await?;
                // The twin is the inventory: its generated config must hold up like any other.
                let (lab_config, source) = Config::load(Some(&running.config), &Overrides::default())
                    .map_err(|problems| anyhow::anyhow!("the lab's config is invalid: {problems:?}"))?;
                let inventory = lab_config
                    .resolve_inventory(&source, &env_var)
                    .map_err(|problems| anyhow::anyhow!("the lab's inventory is invalid: {problems:?}"))?;
                tracing::info!(
                    scenario,
                    config = %running.config.display(),
                    control = %format!("http://{}", running.control),
                    "the simulated estate is running in-process"
                );
                eprint!("{}", running.guide());
                lab = Some(running);
                inventory
            }
            None => inventory,
        };
        // Sink credentials are secrets too: the executors' one redactor hides them as well.
        let mut inventory = inventory;
        inventory.secrets.extend(notify.sinks.iter().filter_map(|sink| sink.token.clone()));
        let engine = match (playbooks, Estate::connect(&inventory)) {
            (Ok(playbooks), Ok(estate)) if !playbooks.is_empty() => Some(EngineParts { playbooks, estate: Arc::new(estate) }),
            (Ok(_), Ok(_)) => {
                tracing::warn!(dir = ?config.playbooks_dir, "no playbooks: incidents are recorded, nothing runs");
                None
            }
            (Err(problems), _) => {
                tracing::warn!(?problems, "playbooks could not be loaded: incidents are recorded, nothing runs");
                None
            }
            (_, Err(error)) => {
                tracing::warn!(%error, "no engine: incidents are recorded, nothing runs");
                None
            }
        };
        if engine.is_none() {
            let missing = config.missing_estate();
            if args.require_engine {
                anyhow::bail!(
                    "--require-engine: remediation cannot run ({}); add the missing sections (runbookd check --probe tests them) or start with --lab",
                    if missing.is_empty() { "no valid playbooks".to_owned() } else { format!("the config has no {}", missing.join(", ")) }
                );
            }
            tracing::warn!(?missing, "remediation is OFF: incidents are recorded, nothing runs (see /readyz; --require-engine refuses to start like this)");
        }
        let app = Application::build_claimed(claim, &config, tokens, notify, clock, engine).await?;
        // Before "listening": a SIGTERM from then on is a graceful stop.
        let shutdown = shutdown_signal();
        tracing::info!(address = %app.local_addr(), engine = app.has_engine(), owner = app.owner(), "listening on {}", app.local_addr());
        let served = app.run_until(shutdown).await;
        drop(lab);
        served
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("runbookd stopped: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn lab(args: &LabArgs) -> ExitCode {
    telemetry::init_logging(&Default::default());
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let result = runtime.block_on(async {
        let lab = RunningLab::launch(&args.dir, &args.scenario).await?;
        print!("{}", lab.guide());
        println!("lab ready; Ctrl-C stops it");
        shutdown_signal().await;
        anyhow::Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("runbookd lab: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn demo(args: &DemoArgs) -> ExitCode {
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let mut out = std::io::stdout();
    match runtime.block_on(runbookd::demo::run(
        &args.scenario,
        args.playbooks.as_deref(),
        &mut out,
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("runbookd demo: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The database `config` names; problems are reported.
fn database(config: &ConfigArgs) -> Option<runbookd::config::DatabaseConfig> {
    match config.load() {
        Ok((config, _)) => Some(config.database),
        Err(problems) => {
            report(&problems);
            None
        }
    }
}

fn backup(args: &BackupArgs) -> ExitCode {
    let (Some(database), Some(runtime)) = (database(&args.config), runtime()) else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(runbookd::store::backup::backup(&database, &args.file)) {
        Ok(report) => {
            println!(
                "backup written: {} ({} bytes)",
                report.path.display(),
                report.bytes
            );
            for (table, rows) in report.counts {
                println!("  {table}: {rows}");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("runbookd backup: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn audit_export(args: &AuditExportArgs) -> ExitCode {
    use runbookd::store::retention::{Overwrite, export_audit, prune_exported};
    let (Some(database), Some(runtime)) = (database(&args.config), runtime()) else {
        return ExitCode::FAILURE;
    };
    let now = SystemClock.now();
    let before = args.before.at(now);
    let result = runtime.block_on(async {
        let mut conn = runbookd::store::connect_existing(&database, false).await?;
        let Some(export) =
            export_audit(&mut conn, before, &args.out, None, Overwrite::Refuse).await?
        else {
            println!(
                "no audit events before {}: nothing written",
                before.to_rfc3339()
            );
            return anyhow::Ok(());
        };
        println!(
            "exported {} audit event(s) before {} to {} (sha256 {})",
            export.events.len(),
            before.to_rfc3339(),
            export.path.display(),
            export.sha256
        );
        if !args.keep {
            let pruned = prune_exported(&mut conn, &export, "audit-export", now).await?;
            println!("pruned {pruned} audit event(s); audit.pruned records it");
        }
        anyhow::Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("runbookd audit export: {error:#}");
            ExitCode::FAILURE
        }
    }
}
