//! Attached processes: `flare-attach master DIR HOLD_MS` runs a master with
//! one forked worker (`alone`: none, see [`master`]), two attach slots (worker2, worker3) on
//! `DIR/attach.sock`, and control and stats sockets in DIR; it prints
//! `FACT attach=PATH` once the socket is bound. `flare-attach client SOCK
//! TAG GATE` joins that group as a Rust attached process
//! (`flare::attach_with`) once the file `GATE.go` exists, and reports what
//! it handles. Both log to stderr (`FLARE_LOG`).
//!
//! Signals: 17 `workers` (attached clients), 19 `worker` (pool, raised by a
//! 200 ms timer every client adds: one shared source), 20 `worker1` (the
//! forked worker; each client raises it once), 22 `workers` (attached
//! clients) and 23 `worker` (pool, attached clients): their handlers wait
//! while the file GATE does not exist, so the test decides when deliveries
//! pile up behind them.

use std::time::Duration;

use flare::{Master, Signal, Source};
use flare_tests::{fact, finish};

fn main() {
    if let Err(e) = flare::logging::init() {
        eprintln!("{e}");
        std::process::exit(2);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["master", dir, hold_ms] => finish(master(dir, hold_ms, 1)),
        ["alone", dir, hold_ms] => finish(master(dir, hold_ms, 0)),
        ["client", sock, tag, gate] => finish(client(sock, tag, gate)),
        _ => {
            eprintln!("usage: flare-attach master DIR HOLD_MS | flare-attach client SOCK TAG GATE");
            std::process::exit(2);
        }
    }
}

/// `forked`: 1 for the group above; 0 for `alone`, whose only workers are
/// the two attach slots (the master registers 23 for `worker` itself, as
/// an app imported in the master does).
fn master(dir: &str, hold_ms: &str, forked: u32) -> flare::Result<flare::Summary> {
    let hold: u64 = hold_ms
        .parse()
        .map_err(|_| flare::Error::Config(format!("HOLD_MS `{hold_ms}` is not a number")))?;
    let mut opts = flare::Options::default();
    opts.attach_hold = Duration::from_millis(hold);
    if forked == 0 {
        // A drain that waited for deliveries nobody can take would show.
        opts.drain_timeout = Duration::from_secs(300);
    }
    let sock = format!("{dir}/attach.sock");
    let master = Master::builder()
        .options(opts)
        .workers(forked)
        .attach(&sock)
        .attach_workers(2)
        .control(format!("{dir}/control.sock"))
        .stats(format!("{dir}/stats.sock"))
        .build()?;
    if forked > 0 {
        Signal::new(20).register_handler("worker1", |rx| {
            fact("w20", format!("worker1:{}", rx.origin));
        })?;
    } else {
        Signal::new(23).register_handler("worker", |_| {})?;
    }
    fact("attach", &sock);
    master.run()
}

fn client(sock: &str, tag: &str, gate: &str) -> flare::Result<()> {
    let tag = tag.to_owned();
    let gate = std::path::PathBuf::from(gate);
    // Started ahead, it joins when the test says so (the file `GATE.go`).
    let go = gate.with_extension("go");
    while !go.exists() {
        std::thread::sleep(Duration::from_millis(2));
    }
    let me = flare::attach_with(sock, |me| {
        let name = format!("{}:{tag}", me.proc_id());
        let n17 = name.clone();
        Signal::new(17).register_handler("workers", move |_| fact("got17", &n17))?;
        let n19 = name.clone();
        Signal::new(19).register_handler("worker", move |_| fact("tick", &n19))?;
        // Stand for handlers that take as long as the test wants.
        for (num, target) in [(22u8, "workers"), (23, "worker")] {
            let (who, gate) = (name.clone(), gate.clone());
            Signal::new(num).register_handler(target, move |rx| {
                fact(&format!("got{num}"), format!("{who}:{}", rx.attempt));
                while !gate.exists() {
                    std::thread::sleep(Duration::from_millis(5));
                }
            })?;
        }
        Source::timer(Duration::from_millis(200)).raise(19)?;
        Ok(())
    })?;
    Signal::new(20).send()?;
    // Not its parent: the master it joined.
    fact("master_pid", flare::master_pid()?);
    fact(
        "owner17",
        Signal::new(17)
            .owner()
            .map_or("none".into(), |p| p.to_string()),
    );
    fact("attached", me.proc_id());
    loop {
        std::thread::park();
    }
}
