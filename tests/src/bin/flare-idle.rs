//! Scenarios for idle time and stuck members: `flare-idle NAME DIR`.
//!
//! - `idle DIR`: a master with every endpoint on (stats, control, remote
//!   signals, the attach socket with two free slots, all Unix sockets in
//!   DIR); signal 10 goes to worker1, whose
//!   handler holds until the file DIR/go appears (and removes it), so a
//!   test can keep a reload or a cheap waiting while it measures the
//!   master. Runs until SIGTERM.
//! - `stall DIR STALL_MS N`: workers 1 and 2 report their pids; once
//!   DIR/go exists (the test has stopped worker 2 with SIGSTOP), mule 1
//!   sends N `workers` signals through small water marks, reports how long
//!   that took, and stops the group; the summary tells what became of them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flare::{Master, Role, Signal};
use flare_tests::{fact, finish, init_log};

fn main() {
    init_log();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let result = match arg(0).as_str() {
        "idle" => idle(PathBuf::from(arg(1))),
        "stall" => stall(
            PathBuf::from(arg(1)),
            arg(2).parse().unwrap_or(2000),
            arg(3).parse().unwrap_or(40_000),
        ),
        other => {
            eprintln!("unknown scenario `{other}`; scenarios: idle DIR, stall DIR STALL_MS N");
            std::process::exit(2);
        }
    };
    finish(result);
}

/// Waits (deadline 60 s) until `path` exists, then removes it.
fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::remove_file(path).is_err() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn sock(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

fn idle(dir: PathBuf) -> flare::Result<flare::Summary> {
    let master = Master::builder()
        .workers(2)
        .mules(1)
        .stats(sock(&dir, "stats.sock"))
        .control(sock(&dir, "control.sock"))
        .remote(sock(&dir, "remote.sock"))
        .attach(sock(&dir, "attach.sock"))
        .attach_workers(2)
        .build()?;
    let go = dir.join("go");
    Signal::new(10).register_handler("worker1", move |_| {
        fact("holding", std::process::id());
        wait_for_file(&go);
    })?;
    fact("stats", master.stats_addr().expect("stats"));
    fact("control", master.control_addr().expect("control"));
    master.run()
}

fn stall(dir: PathBuf, stall_ms: u64, n: u64) -> flare::Result<flare::Summary> {
    let go = dir.join("go");
    let limit = Some(Duration::from_millis(stall_ms));
    let master = Master::builder()
        .workers(2)
        .mules(1)
        .stall_limit(Role::Worker, limit)
        .water_marks(4, 16)
        .drain_timeout(Duration::from_secs(60))
        .stats(sock(&dir, "stats.sock"))
        .worker_entry(|me| {
            fact(&format!("worker{}", me.id), me.pid);
            flare::serve_forever();
        })
        .mule_entry(move |_| {
            wait_for_file(&go);
            fact("sending", n);
            let t = Instant::now();
            for _ in 0..n {
                Signal::new(1).send().expect("send");
            }
            fact("sent_ms", t.elapsed().as_millis());
            flare::stop().expect("stop");
            flare::serve_forever();
        })
        .build()?;
    Signal::new(1).register_handler("workers", |_| {})?;
    fact("stats", master.stats_addr().expect("stats"));
    master.run()
}
