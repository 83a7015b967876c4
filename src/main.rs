//! The `strata` binary: configuration, the command line and wiring of the library crates.

mod check;
mod cli;
mod config;
mod gc;
mod metrics;
mod run;
mod sql;
mod status;
mod storage;
mod telemetry;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::{Cli, Command};
use crate::config::{Config, DEFAULT_CONFIG_TOML};

/// Exit code of a command that is not built yet.
const EXIT_NOT_BUILT: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Config { defaults: true } = cli.command {
        print!("{DEFAULT_CONFIG_TOML}");
        return Ok(ExitCode::SUCCESS);
    }
    let path = cli.config.clone().or_else(|| {
        let local = PathBuf::from("strata.toml");
        local.exists().then_some(local)
    });
    let config = Config::load(path.as_deref(), std::env::vars())?;
    telemetry::init_logging(&config.log)?;
    tracing::debug!(config = ?path, "configuration loaded");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("strata")
        .build()?;
    runtime.block_on(dispatch(cli.command, config))
}

async fn dispatch(command: Command, config: Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::Config { .. } => {
            print!("{}", config.to_toml_redacted());
            Ok(ExitCode::SUCCESS)
        }
        Command::Check => {
            let results = check::run_checks(&config).await;
            let mut failed = false;
            for r in &results {
                let ms = r.elapsed.as_millis();
                match &r.outcome {
                    Ok(found) => println!("ok    {:<16} {}  {found} ({ms} ms)", r.name, r.target),
                    Err(e) => {
                        failed = true;
                        println!("FAIL  {:<16} {}  {e:#} ({ms} ms)", r.name, r.target);
                    }
                }
            }
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Run => {
            run::run(config).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sql { query, format } => {
            sql::sql(&config, query, format).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status => {
            let healthy = status::status(&config).await?;
            Ok(if healthy {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Gc {
            older_than,
            dry_run,
            unsafe_allow_short_grace,
        } => {
            gc::check_older_than(older_than, dry_run, unsafe_allow_short_grace)?;
            let storage = storage::Storage::open(&config.storage)?;
            let report = gc::collect(&storage, older_than, dry_run, chrono::Utc::now()).await?;
            gc::print(&report, &storage, older_than);
            Ok(ExitCode::SUCCESS)
        }
        Command::Restore { .. } => not_built("strata restore", "restore jobs"),
        Command::Export { .. } => not_built("strata export", "native exports"),
    }
}

/// Says plainly that a command is not there yet, and fails with its own exit code.
fn not_built(command: &str, waits_for: &str) -> anyhow::Result<ExitCode> {
    eprintln!("{command} is not built yet: it arrives with {waits_for}.");
    Ok(ExitCode::from(EXIT_NOT_BUILT))
}
