//! `flare ctl ADDR COMMAND...`: one command to the control endpoint.

use std::process::ExitCode;
use std::time::Duration;

/// Options of `flare ctl`.
#[derive(clap::Args)]
pub struct Args {
    /// The control endpoint: a Unix socket path or `@name`.
    addr: String,
    /// The command: raise N, pause workerN, resume workerN, cheap workerN,
    /// uncheap workerN, reload, stats, help.
    #[arg(required = true, num_args = 1.., allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Prints the answer; exit 0 for `ok`, 1 for a refusal or no answer.
pub fn run(args: Args) -> ExitCode {
    match flare::stats::control(&args.addr, &args.command.join(" "), Duration::from_secs(10)) {
        Ok(answer) => {
            println!("ok {answer}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("flare ctl: {}", e.report());
            ExitCode::FAILURE
        }
    }
}
