//! One node of a fleet: `flare-fleet NODE NATS_URL FLEET DIR`.
//!
//! A master with 2 workers in fleet FLEET on NATS_URL as node NODE, stats
//! and control on Unix sockets in DIR (`NODE-stats.sock`,
//! `NODE-control.sock`), fleet allow-list 17-31 (so 40 is refused).
//! Handlers print one FACT line each (`ms` is the handler's Unix time in
//! milliseconds):
//!
//! - 17, 18 (`workers`): `got17=NODE workerN`, `got18=NODE workerN`;
//! - 19 (`worker`, a pool): `got19=NODE workerN`;
//! - 20: a fleet-unique 1 s timer (`worker`): `tick=NODE ms`;
//! - 21: a local 200 ms timer (`worker`): `local=NODE ms`;
//! - 30 (`worker1`): sends 17 to `fleet:workers` from inside the group
//!   (through the bridge) and prints `ingroup=NODE REPORT` or
//!   `ingroup_err=NODE ERROR`;
//! - 31 (`workers`): `mark=NODE workerN` (an event tests wait for).
//!
//! Runs until SIGTERM (or SIGKILL).

use std::path::PathBuf;
use std::time::Duration;

use flare::{Master, Signal, Source};
use flare_tests::{fact, finish, init_log};

fn ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

fn me() -> String {
    flare::whoami().map_or("?".into(), |p| format!("{}{}", p.role, p.id))
}

fn main() {
    init_log();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        eprintln!("usage: flare-fleet NODE NATS_URL FLEET DIR");
        std::process::exit(2);
    }
    let (node, url, fleet, dir) = (
        args[0].clone(),
        args[1].clone(),
        args[2].clone(),
        PathBuf::from(&args[3]),
    );
    finish(run(node, url, fleet, dir));
}

fn run(node: String, url: String, fleet: String, dir: PathBuf) -> flare::Result<flare::Summary> {
    let stats = dir.join(format!("{node}-stats.sock")).display().to_string();
    let control = dir
        .join(format!("{node}-control.sock"))
        .display()
        .to_string();
    let mut fo = flare::fleet::FleetOptions::new(url, fleet, node.clone());
    fo.allow = Some((17..=31).collect());
    fo.reply_timeout = Duration::from_millis(1500);
    let master = Master::builder()
        .workers(2)
        .stats(stats.clone())
        .control(control.clone())
        .fleet_options(fo)
        .build()?;
    let n = node.clone();
    for num in [17u8, 18, 31] {
        let n = n.clone();
        let key = if num == 31 {
            "mark".to_owned()
        } else {
            format!("got{num}")
        };
        Signal::new(num)
            .register_handler("workers", move |_| fact(&key, format!("{n} {}", me())))?;
    }
    let n = node.clone();
    Signal::new(19).register_handler("worker", move |_| fact("got19", format!("{n} {}", me())))?;
    let n = node.clone();
    Signal::new(20).register_handler("worker", move |_| fact("tick", format!("{n} {}", ms())))?;
    let n = node.clone();
    Signal::new(21).register_handler("worker", move |_| fact("local", format!("{n} {}", ms())))?;
    let n = node.clone();
    Signal::new(30).register_handler("worker1", move |_| {
        match flare::fleet::send("fleet:workers", 17) {
            Ok(r) => fact("ingroup", format!("{n} {r}")),
            Err(e) => fact("ingroup_err", format!("{n} {e}")),
        }
    })?;
    Source::timer(Duration::from_secs(1))
        .fleet_unique()
        .raise(20)?;
    Source::timer(Duration::from_millis(200)).raise(21)?;
    fact("stats", &stats);
    fact("control", &control);
    fact("ready", &node);
    master.run()
}
