//! The chaos harness: `flare-chaos [SECONDS] [KILL_EVERY_MS]`.
//!
//! Starts a group (the `chaos` scenario of flare-scenario: 4 workers, 2
//! mules in a farm, 1 spooler, every child raising signals on every target
//! kind), SIGKILLs a random child every few milliseconds for SECONDS, lets
//! the group settle, stops the master with SIGTERM, and checks the
//! accounting of its summary:
//!
//! - raised = routed + unrouted, in total and for every signal number;
//! - delivered = handled + dead-lettered + pending at exit, likewise, and
//!   per process (plus pool deliveries moved to another member);
//! - nothing dropped, nothing pending at exit;
//! - every delivery counted as handled ran its handler at least once
//!   (handler runs counted by the children >= handled, per number).
//!
//! Prints the figures; exits 1 when a check fails.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let secs: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(20);
    let every_ms: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let scenario = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("flare-scenario")))
        .expect("flare-scenario next to flare-chaos");
    let mut child = Command::new(&scenario)
        .args(["chaos", &secs.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the chaos scenario");
    let master = child.id() as i32;
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    // Handshake: the master is built and about to fork.
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.starts_with("FACT ready="));
    assert!(ready, "the chaos scenario did not start");

    let started = Instant::now();
    let mut rng = Rng(started.elapsed().as_nanos() as u64 ^ u64::from(std::process::id()));
    let mut kills = 0u64;
    println!("flare-chaos: {secs} s, a SIGKILL every ~{every_ms} ms, master pid {master}");
    while started.elapsed() < Duration::from_secs(secs) {
        let kids = children_of(master);
        if !kids.is_empty() {
            let victim = kids[(rng.next() % kids.len() as u64) as usize];
            let killed = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(victim),
                nix::sys::signal::Signal::SIGKILL,
            );
            kills += u64::from(killed.is_ok());
        }
        // The attack's cadence: 0.5 to 1.5 times `every_ms`.
        let pause = every_ms * 1000 / 2 + rng.next() % (every_ms * 1000);
        std::thread::sleep(Duration::from_micros(pause));
    }
    // Settle: wait (with a deadline) until all 7 children are back, so no
    // signal is held for a dead one when the shutdown starts.
    let deadline = Instant::now() + Duration::from_secs(30);
    while children_of(master).len() < 7 {
        assert!(Instant::now() < deadline, "children did not come back");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(master),
        nix::sys::signal::Signal::SIGTERM,
    );
    let summary = lines
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("SUMMARY ").map(str::to_owned))
        .expect("a summary");
    let status = child.wait().expect("wait");
    let s: Value = serde_json::from_str(&summary).expect("summary JSON");
    let ok = status.success() & check(&s, kills, started.elapsed());
    std::process::exit(if ok { 0 } else { 1 });
}

/// Checks the accounting and prints the figures.
fn check(s: &Value, kills: u64, took: Duration) -> bool {
    let c = &s["counters"];
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
    let respawns: u64 = procs(s).iter().map(|p| n(p, "respawns")).sum();
    println!("\n{:<16}{:>12}\n{:-<28}", "figure", "value", "");
    for (name, v) in [
        ("seconds", took.as_secs()),
        ("kills", kills),
        ("respawns", respawns),
        ("raised", n(c, "raised")),
        ("routed", n(c, "routed")),
        ("unrouted", n(c, "unrouted")),
        ("delivered", n(c, "delivered")),
        ("handled", n(c, "handled")),
        ("redelivered", n(c, "redelivered")),
        ("dead-lettered", n(c, "dead_lettered")),
        ("dropped", n(c, "dropped")),
        ("pending at exit", n(c, "pending_at_exit")),
    ] {
        println!("{name:<16}{v:>12}");
    }
    let mut ok = true;
    let mut expect = |what: String, good: bool| {
        println!("{} {what}", if good { "ok  " } else { "FAIL" });
        ok &= good;
    };
    expect(
        "raised = routed + unrouted".into(),
        n(c, "raised") == n(c, "routed") + n(c, "unrouted"),
    );
    expect(
        "delivered = handled + dead-lettered + pending".into(),
        n(c, "delivered") == n(c, "handled") + n(c, "dead_lettered") + n(c, "pending_at_exit"),
    );
    expect("nothing dropped".into(), n(c, "dropped") == 0);
    expect(
        "nothing pending at exit".into(),
        n(c, "pending_at_exit") == 0,
    );
    expect(
        "children were killed and respawned".into(),
        kills > 0 && respawns > 0,
    );
    for p in procs(s) {
        let t = &p["tally"];
        let name = format!(
            "{}{}",
            p["proc"]["role"].as_str().unwrap_or("?"),
            p["proc"]["id"]
        );
        expect(
            format!("{name}: delivered = handled + dead-lettered + pending + moved"),
            n(t, "delivered")
                == n(t, "handled")
                    + n(t, "dead_lettered")
                    + n(t, "pending_at_exit")
                    + n(t, "moved"),
        );
    }
    println!(
        "\n{:>4} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "sig", "raised", "delivered", "handled", "runs", "redeliv", "dead"
    );
    for sig in s["signals"].as_array().into_iter().flatten() {
        let num = n(sig, "num");
        let runs: u64 = procs(s)
            .iter()
            .map(|p| p["handled_by_num"][num.to_string()].as_u64().unwrap_or(0))
            .sum();
        println!(
            "{:>4} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            num,
            n(sig, "raised"),
            n(sig, "delivered"),
            n(sig, "handled"),
            runs,
            n(sig, "redelivered"),
            n(sig, "dead_lettered")
        );
        expect(
            format!("signal {num}: delivered = handled + dead-lettered + pending"),
            n(sig, "delivered")
                == n(sig, "handled") + n(sig, "dead_lettered") + n(sig, "pending_at_exit"),
        );
        expect(
            format!("signal {num}: every handled delivery ran (runs >= handled)"),
            runs >= n(sig, "handled"),
        );
    }
    ok
}

fn procs(s: &Value) -> Vec<Value> {
    s["processes"].as_array().cloned().unwrap_or_default()
}

/// Pids whose parent is `ppid`, from /proc.
fn children_of(ppid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|st| {
                    // "pid (comm) state ppid ...": comm may hold spaces.
                    let after = st.rsplit_once(')')?.1;
                    after.split_whitespace().nth(1)?.parse::<i32>().ok()
                })
                == Some(ppid)
        })
        .collect()
}

/// xorshift64: enough randomness to pick victims and pauses.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0.max(1);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}
