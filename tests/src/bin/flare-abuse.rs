//! The group and the clients of the abuse tests (tests/tests/abuse.rs).
//!
//! `flare-abuse group REMOTE STATS CONTROL [UID]`: a master with two workers
//! and all three endpoints (remote signals allow 17 and 18); `UID`, when
//! given, may use every Unix-socket endpoint besides root and the master's
//! user. Prints `FACT remote=`, `FACT stats=`, `FACT control=`, `FACT
//! ready=` (worker 1's pid), and `SUMMARY <json>` after SIGTERM.
//!
//! `flare-abuse client remote|stats|control ADDR [ARG]`: one request, as the
//! tests run it under another uid. Prints `RESULT ok ...` or `RESULT error
//! ...` and exits 0 either way (1 only for bad arguments).

use std::time::Duration;

use flare::{Master, Signal};
use flare_tests::{fact, init_log};

fn main() {
    init_log();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("group") if args.len() >= 4 => match group(&args[1..]) {
            Ok(summary) => println!(
                "SUMMARY {}",
                serde_json::to_string(&summary).expect("serialize")
            ),
            Err(e) => {
                eprintln!("flare-abuse: {e}");
                std::process::exit(1);
            }
        },
        Some("client") if args.len() >= 3 => client(&args[1], &args[2], args.get(3)),
        _ => {
            eprintln!(
                "usage: flare-abuse group REMOTE STATS CONTROL [UID] | \
                 flare-abuse client remote|stats|control ADDR [NUM|COMMAND]"
            );
            std::process::exit(1);
        }
    }
}

fn group(args: &[String]) -> flare::Result<flare::Summary> {
    let mut remote = flare::RemoteOptions::new(args[0].clone());
    remote.allow = Some([17, 18].into_iter().collect());
    let mut builder = Master::builder()
        .workers(2)
        .remote_options(remote)
        .stats(args[1].clone())
        .control(args[2].clone());
    if let Some(uid) = args.get(3) {
        builder = builder.allow_uids([uid.parse().expect("UID")]);
    }
    let master = builder
        .worker_entry(|me| {
            if me.id == 1 {
                fact("ready", me.pid);
            }
            flare::serve_forever();
        })
        .build()?;
    fact("remote", master.remote_addr().expect("remote"));
    fact("stats", master.stats_addr().expect("stats"));
    fact("control", master.control_addr().expect("control"));
    Signal::new(17).register_handler("worker", |_| {})?;
    Signal::new(18).register_handler("workers", |_| {})?;
    master.run()
}

fn client(kind: &str, addr: &str, arg: Option<&String>) {
    let t = Duration::from_secs(5);
    let result = match kind {
        "remote" => {
            let num = arg.map_or(Ok(17), |n| n.parse()).expect("NUM");
            flare::send_remote(addr, num, t).map(|()| format!("signal {num} delivered"))
        }
        "stats" => flare::stats::fetch(addr, t).map(|d| format!("stats of master {}", d.pid)),
        "control" => flare::stats::control(addr, arg.map_or("help", |s| s.as_str()), t),
        other => {
            eprintln!("unknown client `{other}`: remote, stats or control");
            std::process::exit(1);
        }
    };
    match result {
        Ok(s) => println!("RESULT ok {}", s.lines().next().unwrap_or("")),
        Err(e) => println!("RESULT error {e}"),
    }
}
