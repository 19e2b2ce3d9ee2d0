//! The `flare` command as a library: [`main_with_args`] is the whole
//! command, so the Python package can put the same `flare` on PATH.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod ctl;
mod demo;
mod serve;
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
    /// Run a master for attached processes only (gunicorn, uvicorn, granian
    /// workers, any docs/attach.md client): routing, sources, stats.
    Serve(serve::Args),
}

/// Runs the `flare` command with `args` (the program name first, as in
/// `std::env::args_os()`) and returns its exit status: what `main` does,
/// for a program that embeds the command (the Python package's `flare`
/// entry point calls it).
pub fn main_with_args<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    ExitCode::from(exit_status(args))
}

/// Like [`main_with_args`], with the status as a number (0 success; `flare
/// signal` documents its own; 2 for a usage error).
pub fn exit_status<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    if let Err(e) = flare::logging::init() {
        eprintln!("flare: error: {e}");
        return 2;
    }
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are "errors" that print to stdout.
            let _ = e.print();
            return u8::try_from(e.exit_code()).unwrap_or(2);
        }
    };
    let result = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Signal(args) => return signal::run(args),
        Command::Stats(args) => stats::run(args),
        Command::Ctl(args) => return ctl::run(args),
        Command::Top(args) => top::run(args),
        Command::Serve(args) => serve::run(args),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("flare: error: {}", e.report());
            1
        }
    }
}
