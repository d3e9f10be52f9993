//! `finderd`: a per-host daemon that keeps warm, inotify-validated listings
//! of Python search-path directories and answers import queries over gRPC on
//! a Unix socket. See docs/architecture.md for how the modules fit.

mod cli;
mod config;
mod genfile;
mod index;
mod policy;
mod refresh;
mod server;
mod stats;
mod watch;
mod wire;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (log_level, default_level) = match &cli.command {
        Command::Serve(args) => (args.log_level.clone(), "info"),
        _ => (None, "warn"),
    };
    if let Err(error) = init_logging(log_level.as_deref(), default_level) {
        eprintln!("finderd: {error:#}");
        return ExitCode::FAILURE;
    }
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("finderd: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("finderd")
        .build()?;
    runtime.block_on(async {
        match command {
            Command::Serve(args) => Ok(server::run(args.config()).await?),
            Command::Stats(args) => cli::stats(&args).await,
            Command::Health(args) => cli::health(&args).await,
        }
    })
}

/// One line per event with key=value fields on stderr; no colours unless
/// stderr is a terminal; no timestamps under systemd's journal, which keeps
/// its own. `--log-level` wins over `RUST_LOG`; the default is `info`
/// (`warn` for the client commands).
fn init_logging(level: Option<&str>, default_level: &str) -> anyhow::Result<()> {
    let filter = match level {
        Some(level) => EnvFilter::try_new(level)?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().init();
    } else {
        builder.init();
    }
    Ok(())
}
