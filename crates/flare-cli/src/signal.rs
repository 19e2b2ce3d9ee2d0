//! `flare signal ADDR NUM`: raise a signal on a remote node, with the exit
//! codes of `uwsgi --signal ADDR,NUM`.

use std::process::ExitCode;
use std::time::Duration;

use flare::{Error, Signal};

/// Options of `flare signal`.
#[derive(clap::Args)]
pub struct Args {
    /// The node: `host:port`, `:port`, a Unix socket path or `@name`; or
    /// uWSGI's `ADDR,NUM` form with no NUM argument.
    addr: String,
    /// The signal number, 0-255 (anything else exits 3).
    #[arg(allow_hyphen_values = true)]
    num: Option<String>,
    /// Seconds to wait to connect, and again for the answer.
    #[arg(long, default_value_t = 4.0)]
    timeout: f64,
}

/// Exit codes, as uWSGI's.
const DELIVERED: u8 = 0;
const UNREACHABLE: u8 = 1;
const REJECTED: u8 = 2;
const BAD_NUMBER: u8 = 3;

pub fn run(args: Args) -> ExitCode {
    let (addr, num) = match &args.num {
        Some(n) => (args.addr.as_str(), n.as_str()),
        None => match args.addr.rsplit_once(',') {
            Some(pair) => pair,
            None => {
                eprintln!(
                    "flare signal: give the signal number: `flare signal ADDR NUM` or `flare signal ADDR,NUM`"
                );
                return ExitCode::from(BAD_NUMBER);
            }
        },
    };
    let num: Signal = match num.parse() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("flare signal: {e}");
            return ExitCode::from(BAD_NUMBER);
        }
    };
    let timeout = Duration::try_from_secs_f64(args.timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .unwrap_or(flare::DEFAULT_TIMEOUT);
    match flare::send_remote(addr, num.num(), timeout) {
        Ok(()) => {
            println!("signal {num} delivered to node {addr}");
            ExitCode::from(DELIVERED)
        }
        Err(Error::Rejected { .. }) => {
            println!("node {addr} rejected signal {num}");
            ExitCode::from(REJECTED)
        }
        Err(e @ Error::Config(_)) => {
            eprintln!("flare signal: {e}");
            ExitCode::from(UNREACHABLE)
        }
        Err(Error::Unreachable(e)) => {
            println!("unable to deliver signal {num} to node {addr}: {e}");
            ExitCode::from(UNREACHABLE)
        }
        Err(e) => {
            println!(
                "unable to deliver signal {num} to node {addr}: {}",
                e.report()
            );
            ExitCode::from(UNREACHABLE)
        }
    }
}
