//! Operations scenarios: `flare-ops notify SOCKET WATCHDOG_USEC` runs a
//! group under a fake systemd (the test's datagram socket), `flare-ops
//! metrics` serves `/metrics` and the stats document, `flare-ops
//! deadletter` dead-letters signal 5 (its handler ends its worker). All
//! run until SIGTERM and print `FACT key=value` lines and a `SUMMARY`;
//! logs follow `FLARE_LOG` and `FLARE_LOG_FORMAT` (flare::logging).

use flare::{Master, Signal};
use flare_tests::{fact, finish};

fn main() {
    if let Err(e) = flare::logging::init() {
        eprintln!("{e}");
        std::process::exit(2);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("notify") if args.len() == 3 => notify(&args[1], &args[2]),
        Some("metrics") if args.len() == 1 => metrics(),
        Some("deadletter") if args.len() == 1 => deadletter(),
        _ => {
            eprintln!(
                "usage: flare-ops notify SOCKET WATCHDOG_USEC | flare-ops metrics | flare-ops deadletter"
            );
            std::process::exit(2);
        }
    };
    finish(result);
}

/// Two workers and a mule, under systemd's notify protocol as a service
/// manager sets it up: the socket, the watchdog period and our pid.
fn notify(socket: &str, watchdog_usec: &str) -> flare::Result<flare::Summary> {
    // SAFETY: the scenario has one thread here; nothing reads the
    // environment concurrently.
    unsafe {
        std::env::set_var("NOTIFY_SOCKET", socket);
        std::env::set_var("WATCHDOG_USEC", watchdog_usec);
        std::env::set_var("WATCHDOG_PID", std::process::id().to_string());
    }
    let master = Master::builder().workers(2).mules(1).build()?;
    fact("master", std::process::id());
    master.run()
}

/// Two workers and a mule with the metrics and stats endpoints on: the
/// mule raises signal 7 (`workers`) five times, signal 9 (`mule`) twice
/// then says `FACT raised=yes`. Runs until SIGTERM.
fn metrics() -> flare::Result<flare::Summary> {
    let master = Master::builder()
        .workers(2)
        .mules(1)
        .metrics("127.0.0.1:0")
        .stats("127.0.0.1:0")
        .mule_entry(|_| {
            for _ in 0..5 {
                Signal::new(7).send().expect("send 7");
            }
            for _ in 0..2 {
                Signal::new(9).send().expect("send 9");
            }
            fact("raised", "yes");
            flare::serve_forever();
        })
        .build()?;
    Signal::new(7).register_handler("workers", |_| {})?;
    Signal::new(9).register_handler("mule", |_| {})?;
    fact("metrics", master.metrics_addr().unwrap_or_default());
    fact("stats", master.stats_addr().unwrap_or_default());
    master.run()
}

/// One worker whose handler of signal 5 ends the process: with one attempt
/// allowed, the master dead-letters the signal (and logs it) when the
/// worker dies. Raised by the master before `run()`.
fn deadletter() -> flare::Result<flare::Summary> {
    let master = Master::builder().workers(1).max_attempts(1).build()?;
    Signal::new(5).register_handler("worker", |_| std::process::exit(3))?;
    Signal::new(5).send()?;
    master.run()
}
