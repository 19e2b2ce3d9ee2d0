//! The Node.js example client (examples/node/flare-attach.js, written from
//! docs/attach.md alone) joins a running group through its attach socket:
//! it receives `workers` signals and raises one that the forked worker
//! handles. Needs `node` (Node.js 18 or newer) on PATH.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::start_exe;

/// The attach scenario of tests/attach.rs: worker1 forked (it handles 20,
/// `worker1`), attach slots worker2 and worker3, control and stats
/// sockets in DIR.
const BIN: &str = env!("CARGO_BIN_EXE_flare-attach");
const T: Duration = Duration::from_secs(30);

fn temp_dir(name: &str) -> String {
    let d = std::env::temp_dir().join(format!("flare-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d.to_str().unwrap().to_owned()
}

/// Waits for a line of the client's starting with `prefix`.
fn wait_line(lines: &Receiver<String>, seen: &mut Vec<String>, prefix: &str) -> String {
    let end = Instant::now() + T;
    loop {
        match lines.recv_timeout(end.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                seen.push(line.clone());
                if line.starts_with(prefix) {
                    return line;
                }
            }
            Err(e) => panic!(
                "no `{prefix}` line from the Node client ({e}); it said:\n{}",
                seen.join("\n")
            ),
        }
    }
}

#[test]
fn the_node_client_receives_workers_signals_and_raises_one() {
    let dir = temp_dir("attach-node");
    let control = |line: &str| {
        flare::stats::control(&format!("{dir}/control.sock"), line, T).expect("control")
    };
    let mut m = start_exe(BIN, &["master", &dir, "3000"]);
    let sock = m.wait_fact("attach");

    let client = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/node/flare-attach.js");
    let mut node = Command::new("node")
        .arg(&client)
        .args([
            sock.as_str(),
            "--register",
            "17:workers",
            "--register",
            "19:worker",
        ])
        // The 200 ms timer of signal 19 the Rust clients of attach.rs add.
        .args(["--timer", "19:0.2", "--raise", "20"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("this test needs `node` (Node.js 18 or newer) on PATH");
    let lines = common::lines_of(node.stdout.take().unwrap());
    let mut seen = Vec::new();

    // The first attach slot, after the forked worker.
    let attached = wait_line(&lines, &mut seen, "ATTACHED ");
    assert!(attached.starts_with("ATTACHED worker2 "), "{attached}");
    wait_line(&lines, &mut seen, "REGISTERED 17 workers");
    let source = wait_line(&lines, &mut seen, "SOURCE ");
    wait_line(&lines, &mut seen, "READY");
    // Its timer fires, and the pool signal comes to it (the only runner).
    wait_line(&lines, &mut seen, "RAN 19 ");
    let doc = common::until_stats(&format!("{dir}/stats.sock"), "a source", T, |_| true);
    let timers: Vec<_> = doc.flare.sources.iter().filter(|s| s.sig == 19).collect();
    assert_eq!(timers.len(), 1, "{timers:?}");
    assert_eq!(source, format!("SOURCE {}", timers[0].id), "{timers:?}");
    // Its raise of 20 ran in the forked worker, from worker2.
    assert_eq!(m.wait_fact("w20"), "worker1:worker2");

    // `workers` signals reach it, each acked (or the next would not be
    // counted handled below).
    for round in 1..=3 {
        control("raise 17");
        let ran = wait_line(&lines, &mut seen, "RAN 17 ");
        assert!(ran.starts_with("RAN 17 origin="), "round {round}: {ran}");
    }
    // Raised again on request, handled again by worker1.
    writeln!(node.stdin.as_mut().unwrap(), "raise 20").unwrap();
    assert_eq!(m.wait_fact("w20"), "worker1:worker2");

    // Its acks are what the master counts for its slot.
    common::until_stats(
        &format!("{dir}/stats.sock"),
        "the client's handled signals counted (3 x 17, 19)",
        T,
        |d| d.workers[1].requests >= 4,
    );

    // Leaving: stdin closed, the client closes the socket, its slot frees.
    drop(node.stdin.take());
    wait_line(&lines, &mut seen, "CLOSED");
    assert!(node.wait().unwrap().success());
    common::until_stats(&format!("{dir}/stats.sock"), "the slot is free", T, |d| {
        d.flare.counters.detached == 1
    });

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(m.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let run = m.finish();
    assert_eq!(run.handled("worker", 1, 20), 2, "{:?}", run.spread(20));
    assert_eq!(run.counter("dropped"), 0);
    assert_eq!(run.counter("unrouted"), 0);
    let _ = std::fs::remove_dir_all(&dir);
}
