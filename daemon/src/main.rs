//! `finderd`: a per-host daemon that keeps warm, inotify-validated listings
//! of Python search-path directories and answers import queries over gRPC on
//! a Unix socket. See docs/architecture.md for how the modules fit.

mod activity;
mod bytecode;
mod check;
mod cli;
mod config;
mod connection;
mod genfile;
mod index;
mod logging;
mod namespace;
mod openat2;
mod plan;
mod policy;
mod profile;
mod refresh;
mod replay;
mod server;
mod stats;
mod strace;
mod systemd;
mod targets;
mod uds;
mod uring;
mod views;
mod walk;
mod watch;
mod wire;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("finderd: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve(&args),
        Command::Replay(args) => {
            print!("{}", replay::run(&args.log, args.rounds)?);
            Ok(())
        }
        Command::Profile(args) => {
            print!("{}", profile::run(&args.command)?);
            Ok(())
        }
        command => {
            logging::init(None, "warn")?;
            runtime()?.block_on(async {
                match command {
                    Command::Stats(args) => cli::stats(&args).await,
                    Command::Health(args) => cli::health(&args).await,
                    Command::Serve(_) | Command::Replay(_) | Command::Profile(_) => {
                        unreachable!("handled above")
                    }
                }
            })
        }
    }
}

fn serve(args: &cli::ServeArgs) -> anyhow::Result<()> {
    let source = args.source();
    let mut config = source.load()?;
    let log_level = logging::init(config.values.log_level.as_deref(), "info")?;
    // Before any thread exists: it edits the environment.
    let activated = systemd::take_activation_socket()?;
    config.activated = activated.is_some();
    runtime_with(config.values.worker_threads)?
        .block_on(server::run(config, source, log_level, activated))?;
    Ok(())
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    runtime_with(0)
}

/// `workers` 0: one current-thread runtime (requests are answered inline
/// and crawls go to the blocking pool, so one thread serves the wire);
/// otherwise a multi-thread runtime with that many workers.
fn runtime_with(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = if workers == 0 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    };
    builder.enable_all().thread_name("finderd").build()
}
