//! `flare signal ADDR NUM`: raise a signal on a remote node, with the exit
//! codes of `uwsgi --signal ADDR,NUM`; `flare signal nats://HOST:4222
//! TARGET NUM`: send it to a fleet (docs/fleet.md).

use std::time::Duration;

use flare::{Error, Signal};

/// Options of `flare signal`.
#[derive(clap::Args)]
pub struct Args {
    /// The node: `host:port`, `:port`, a Unix socket path or `@name`; or
    /// uWSGI's `ADDR,NUM` form with no NUM argument.
    addr: String,
    /// The signal number, 0-255 (anything else exits 3); for a NATS
    /// server, the fleet target (`fleet:workers`, `node:b:worker1`,
    /// `any-node:worker`), then the number.
    #[arg(allow_hyphen_values = true)]
    num: Option<String>,
    /// The signal number after a fleet target.
    #[arg(allow_hyphen_values = true)]
    fleet_num: Option<String>,
    /// Seconds to wait to connect, and again for the answer (for a fleet:
    /// for the nodes' answers; default 1).
    #[arg(long)]
    timeout: Option<f64>,
    /// The fleet's name (for a NATS server).
    #[arg(long, default_value = "flare")]
    fleet_name: String,
    #[command(flatten)]
    nats: NatsArgs,
}

/// NATS credentials and TLS, passed to the client as given.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct NatsArgs {
    /// A NATS credentials file (.creds).
    #[arg(long, value_name = "FILE")]
    pub nats_creds: Option<std::path::PathBuf>,
    /// NATS user (with --nats-password).
    #[arg(long, value_name = "USER")]
    pub nats_user: Option<String>,
    /// NATS password.
    #[arg(long, value_name = "PASSWORD")]
    pub nats_password: Option<String>,
    /// NATS token.
    #[arg(long, value_name = "TOKEN")]
    pub nats_token: Option<String>,
    /// CA certificates (PEM) for the server's TLS certificate.
    #[arg(long, value_name = "FILE")]
    pub nats_tls_ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM), with --nats-tls-key.
    #[arg(long, value_name = "FILE")]
    pub nats_tls_cert: Option<std::path::PathBuf>,
    /// Client key (PEM).
    #[arg(long, value_name = "FILE")]
    pub nats_tls_key: Option<std::path::PathBuf>,
    /// Require TLS.
    #[arg(long)]
    pub nats_tls: bool,
}

impl NatsArgs {
    /// Puts these settings into fleet options.
    pub fn apply(&self, o: &mut flare::fleet::FleetOptions) {
        o.creds = self.nats_creds.clone();
        if let (Some(u), Some(p)) = (&self.nats_user, &self.nats_password) {
            o.user_password = Some((u.clone(), p.clone()));
        }
        o.token = self.nats_token.clone();
        o.tls_ca = self.nats_tls_ca.clone();
        if let (Some(c), Some(k)) = (&self.nats_tls_cert, &self.nats_tls_key) {
            o.tls_cert_key = Some((c.clone(), k.clone()));
        }
        o.tls_required = self.nats_tls;
    }
}

fn is_nats(addr: &str) -> bool {
    ["nats://", "tls://", "ws://", "wss://"]
        .iter()
        .any(|p| addr.starts_with(p))
}

/// `flare signal nats://... TARGET NUM`.
fn run_fleet(args: &Args) -> u8 {
    let (Some(target), Some(num)) = (&args.num, &args.fleet_num) else {
        eprintln!(
            "flare signal: for a NATS server give the fleet target and the number: \
             `flare signal nats://host:4222 fleet:workers 17`"
        );
        return BAD_NUMBER;
    };
    let num: Signal = match num.parse() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("flare signal: {e}");
            return BAD_NUMBER;
        }
    };
    let mut o = flare::fleet::FleetOptions::new(&args.addr, &args.fleet_name, "cli");
    args.nats.apply(&mut o);
    if let Some(t) = args
        .timeout
        .and_then(|t| Duration::try_from_secs_f64(t).ok())
        .filter(|t| !t.is_zero())
    {
        o.reply_timeout = t;
    }
    let client = match flare::fleet::Client::with_options(o) {
        Ok(c) => c,
        Err(e) => {
            println!(
                "unable to deliver signal {num} to fleet {}: {e}",
                args.fleet_name
            );
            return UNREACHABLE;
        }
    };
    match client.send(target, num.num()) {
        Ok(report) => {
            println!("{report}");
            if !report.rejected.is_empty() {
                REJECTED
            } else if !report.missing.is_empty() || report.accepted.is_empty() {
                UNREACHABLE
            } else {
                DELIVERED
            }
        }
        Err(e) => {
            println!("unable to deliver signal {num} to {target}: {e}");
            UNREACHABLE
        }
    }
}

/// Exit codes, as uWSGI's.
const DELIVERED: u8 = 0;
const UNREACHABLE: u8 = 1;
const REJECTED: u8 = 2;
const BAD_NUMBER: u8 = 3;

pub fn run(args: Args) -> u8 {
    if is_nats(&args.addr) {
        return run_fleet(&args);
    }
    if args.fleet_num.is_some() {
        eprintln!("flare signal: one number only: `flare signal ADDR NUM`");
        return BAD_NUMBER;
    }
    let (addr, num) = match &args.num {
        Some(n) => (args.addr.as_str(), n.as_str()),
        None => match args.addr.rsplit_once(',') {
            Some(pair) => pair,
            None => {
                eprintln!(
                    "flare signal: give the signal number: `flare signal ADDR NUM` or `flare signal ADDR,NUM`"
                );
                return BAD_NUMBER;
            }
        },
    };
    let num: Signal = match num.parse() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("flare signal: {e}");
            return BAD_NUMBER;
        }
    };
    let timeout = Duration::try_from_secs_f64(args.timeout.unwrap_or(4.0))
        .ok()
        .filter(|t| !t.is_zero())
        .unwrap_or(flare::DEFAULT_TIMEOUT);
    match flare::send_remote(addr, num.num(), timeout) {
        Ok(()) => {
            println!("signal {num} delivered to node {addr}");
            DELIVERED
        }
        Err(Error::Rejected { .. }) => {
            println!("node {addr} rejected signal {num}");
            REJECTED
        }
        Err(e @ Error::Config(_)) => {
            eprintln!("flare signal: {e}");
            UNREACHABLE
        }
        Err(Error::Unreachable(e)) => {
            println!("unable to deliver signal {num} to node {addr}: {e}");
            UNREACHABLE
        }
        Err(e) => {
            println!(
                "unable to deliver signal {num} to node {addr}: {}",
                e.report()
            );
            UNREACHABLE
        }
    }
}
