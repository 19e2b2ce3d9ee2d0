//! The `flare` command.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod ctl;
mod demo;
mod signal;
mod stats;
mod top;

/// Pre-forked process groups that talk through numbered signals.
#[derive(Parser)]
#[command(name = "flare", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scripted demo group: 4 workers, 2 mules in farm `reports`, 1
    /// spooler; every target kind gets a signal. Ends by itself (Ctrl-C
    /// stops it at once, gracefully).
    Demo(demo::Args),
    /// Raise a signal on a remote node (uWSGI: `uwsgi --signal ADDR,NUM`).
    /// Exit 0 delivered, 1 unable to deliver, 2 rejected, 3 bad number.
    Signal(signal::Args),
    /// Print a master's stats (its stats endpoint), readable or as JSON.
    Stats(stats::Args),
    /// Send a command to a master's control endpoint.
    Ctl(ctl::Args),
    /// A live view of a master (its stats endpoint): one row per process.
    Top(top::Args),
}

fn main() -> ExitCode {
    let filter = std::env::var("FLARE_LOG")
        .ok()
        .and_then(|f| tracing_subscriber::EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_env_filter(filter)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Signal(args) => return signal::run(args),
        Command::Stats(args) => stats::run(args),
        Command::Ctl(args) => return ctl::run(args),
        Command::Top(args) => top::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flare: error: {}", e.report());
            ExitCode::FAILURE
        }
    }
}
