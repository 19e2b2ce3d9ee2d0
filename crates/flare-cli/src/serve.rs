//! `flare serve`: a master with no code of its own, for groups whose
//! members join through the attach socket (docs/attach.md): web workers
//! of any server, processes in any language. It routes their signals,
//! runs the sources they add (one per distinct source, however many
//! members add it) and serves stats and control.

use flare::Master;

/// Options of `flare serve`.
#[derive(clap::Args)]
pub struct Args {
    /// The attach socket: a path (created 0600) or `@name` (abstract).
    #[arg(long, value_name = "PATH")]
    attach: String,
    /// How many processes may be attached at once (their slots are
    /// numbered after the forked workers).
    #[arg(long, value_name = "N", default_value_t = 8)]
    attach_workers: u32,
    /// Forked workers besides (they only serve signals: handlers come
    /// from attached processes).
    #[arg(long, value_name = "N", default_value_t = 0)]
    workers: u32,
    /// Listen for remote signals here (`host:port`, `:port`, a socket path).
    #[arg(long, value_name = "ADDR")]
    remote: Option<String>,
    /// Serve stats here (`host:port` or a socket path).
    #[arg(long, value_name = "ADDR")]
    stats: Option<String>,
    /// Take control commands on this Unix socket.
    #[arg(long, value_name = "PATH")]
    control: Option<String>,
    /// Serve Prometheus metrics at `http://ADDR/metrics`.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
    /// Users (uids, comma separated) who may use the Unix-socket endpoints
    /// (attach included) besides root and this user.
    #[arg(long, value_name = "UIDS", value_delimiter = ',')]
    allow_uid: Vec<u32>,
    /// Print the run's summary as JSON at the end.
    #[arg(long)]
    summary: bool,
}

/// Runs the master until SIGTERM or Ctrl-C, then prints its summary.
///
/// # Errors
///
/// The master's: a socket that cannot be bound, bad options.
pub fn run(args: Args) -> flare::Result<()> {
    let mut b = Master::builder()
        .workers(args.workers)
        .attach(args.attach.clone())
        .attach_workers(args.attach_workers)
        .allow_uids(args.allow_uid.iter().copied());
    if let Some(addr) = args.remote {
        b = b.remote(addr);
    }
    if let Some(addr) = args.stats {
        b = b.stats(addr);
    }
    if let Some(addr) = args.control {
        b = b.control(addr);
    }
    if let Some(addr) = args.metrics {
        b = b.metrics(addr);
    }
    let master = b.build()?;
    println!(
        "flare serve: attach socket {} ({} slots); Ctrl-C or SIGTERM stops",
        args.attach, args.attach_workers
    );
    let summary = master.run()?;
    if args.summary {
        match serde_json::to_string(&summary) {
            Ok(json) => println!("SUMMARY {json}"),
            Err(e) => eprintln!("flare serve: the summary cannot be written as JSON: {e}"),
        }
    } else {
        print!("{}", summary.table());
    }
    Ok(())
}
