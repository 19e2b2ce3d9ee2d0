//! `flare stats ADDR`: the stats document, readable or as JSON.

use std::fmt::Write;
use std::time::Duration;

use flare::stats::{ProcStats, StatsDoc};

/// Options of `flare stats`.
#[derive(clap::Args)]
pub struct Args {
    /// The stats endpoint: `host:port`, a Unix socket path or `@name`.
    addr: String,
    /// Print the JSON document as served.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> flare::Result<()> {
    let doc = flare::stats::fetch(&args.addr, Duration::from_secs(5))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&doc)
                .map_err(|e| flare::Error::Protocol(e.to_string()))?
        );
    } else {
        print!("{}", render(&doc));
    }
    Ok(())
}

/// Every process of the document, workers first.
pub fn processes(doc: &StatsDoc) -> impl Iterator<Item = &ProcStats> {
    doc.workers.iter().chain(&doc.mules).chain(&doc.spoolers)
}

/// The readable form.
pub fn render(doc: &StatsDoc) -> String {
    let mut s = String::new();
    let f = &doc.flare;
    let c = &f.counters;
    let _ = writeln!(
        s,
        "{} master pid {}, up {:.1} s, {} signals queued, cwd {}",
        doc.version,
        doc.pid,
        f.uptime_ms as f64 / 1000.0,
        doc.signal_queue,
        doc.cwd
    );
    let _ = writeln!(
        s,
        "raised {} | routed {} | unrouted {} | delivered {} | handled {} | dropped {} | \
         redelivered {} | dead-lettered {} | timeouts {} | stalls {}",
        c.raised,
        c.routed,
        c.unrouted,
        c.delivered,
        c.handled,
        c.dropped,
        c.redelivered,
        c.dead_lettered,
        c.timeouts,
        c.stalls
    );
    let _ = writeln!(
        s,
        "\n{:<10} {:>7} {:<10} {:<10} {:>9} {:>7} {:>9} {:>8} {:>5} {:>9}",
        "process",
        "pid",
        "state",
        "status",
        "handled",
        "queued",
        "stuck ms",
        "respawns",
        "last",
        "busy ms"
    );
    for p in processes(doc) {
        let _ = writeln!(
            s,
            "{:<10} {:>7} {:<10} {:<10} {:>9} {:>7} {:>9} {:>8} {:>5} {:>9}",
            format!("{}{}", p.role, p.id),
            p.pid,
            p.state,
            p.status,
            p.signals,
            p.signal_queue,
            p.stalled_ms,
            p.respawn_count,
            p.last_signal.map_or("-".into(), |n| n.to_string()),
            p.current_ms.map_or("-".into(), |n| n.to_string())
        );
    }
    if !f.table.is_empty() {
        let _ = writeln!(
            s,
            "\n{:>4}  {:<16} {:<10} runners",
            "sig", "target", "owner"
        );
        for r in &f.table {
            let target = if r.reserved { "(reserved)" } else { &r.target };
            let _ = writeln!(
                s,
                "{:>4}  {:<16} {:<10} {}",
                r.num,
                target,
                r.owner,
                r.runners.join(",")
            );
        }
    }
    if !f.sources.is_empty() {
        let _ = writeln!(
            s,
            "\n{:>4} {:>4}  {:<40} {:>7} {:>7} {:>9}",
            "id", "sig", "source", "fired", "held", "next ms"
        );
        for src in &f.sources {
            let _ = writeln!(
                s,
                "{:>4} {:>4}  {:<40} {:>7} {:>7} {:>9}",
                src.id,
                src.sig,
                src.what,
                src.fired,
                src.held,
                src.next_in_ms.map_or("-".into(), |n| n.to_string())
            );
        }
    }
    if !doc.sockets.is_empty() {
        let _ = writeln!(s);
        for sock in &doc.sockets {
            let _ = writeln!(s, "{:<8} {}", sock.proto, sock.name);
        }
    }
    s
}
