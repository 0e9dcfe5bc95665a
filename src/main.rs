//! The `runbookd` command line. Everything it runs lives in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use runbookd::clock::SystemClock;
use runbookd::config::{Config, ConfigSource, LogFormat, Overrides, Problem};
use runbookd::startup::{Application, shutdown_signal};
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
    Serve(ConfigArgs),
    /// Validate the config (and every token's secret) and report every problem.
    Check(ConfigArgs),
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
}

impl ConfigArgs {
    fn load(&self) -> Result<(Config, ConfigSource), Vec<Problem>> {
        let overrides = Overrides {
            listen: self.listen,
            database: self.db.clone(),
            log_format: self.log_format,
        };
        Config::load(self.config.as_deref(), &overrides)
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(args) => serve(&args),
        Command::Check(args) => check(&args),
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

fn check(args: &ConfigArgs) -> ExitCode {
    let (config, source) = match args.load() {
        Ok(loaded) => loaded,
        Err(problems) => {
            report(&problems);
            return ExitCode::FAILURE;
        }
    };
    match config.resolve_tokens(&source, env_var) {
        Ok(tokens) => {
            println!(
                "config ok: listen {}, database {}, {} token(s)",
                config.listen,
                config.database.path.display(),
                tokens.tokens().len()
            );
            for token in tokens.tokens() {
                println!("  token {} ({})", token.name(), token.role().as_str());
            }
            ExitCode::SUCCESS
        }
        Err(problems) => {
            report(&problems);
            ExitCode::FAILURE
        }
    }
}

fn serve(args: &ConfigArgs) -> ExitCode {
    let loaded = args
        .load()
        .and_then(|(config, source)| Ok((config.resolve_tokens(&source, env_var)?, config)));
    let (tokens, config) = match loaded {
        Ok(loaded) => loaded,
        Err(problems) => {
            report(&problems);
            eprintln!("not starting: fix the config (runbookd check reports the same)");
            return ExitCode::from(2);
        }
    };
    telemetry::init_logging(&config.log);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let app = Application::build(&config, tokens, Arc::new(SystemClock)).await?;
        tracing::info!(address = %app.local_addr(), "listening on {}", app.local_addr());
        app.run_until(shutdown_signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("runbookd stopped: {error:#}");
            ExitCode::FAILURE
        }
    }
}
