//! Operations: systemd's notify protocol against a fake service manager,
//! and `/metrics` scraped over HTTP and read by Prometheus' own parser.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The fake systemd: a datagram socket the scenario's master writes to.
struct Manager {
    sock: UnixDatagram,
    got: Vec<String>,
}

impl Manager {
    fn bind(path: &std::path::Path) -> Manager {
        let sock = UnixDatagram::bind(path).expect("bind the notify socket");
        sock.set_read_timeout(Some(Duration::from_secs(1)))
            .expect("timeout");
        Manager {
            sock,
            got: Vec::new(),
        }
    }

    /// Waits (with a deadline) for a message containing `state`, keeping
    /// every message seen on the way; returns the matching message.
    fn wait_for(&mut self, state: &str) -> String {
        let deadline = Instant::now() + common::DEADLINE;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            match self.sock.recv(&mut buf) {
                Ok(n) => {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    self.got.push(msg.clone());
                    if msg.lines().any(|l| l == state) {
                        return msg;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("recv: {e}"),
            }
        }
        panic!(
            "no {state} within {:?}; got {:?}",
            common::DEADLINE,
            self.got
        );
    }

    /// Messages other than watchdog pings, in order.
    fn states(&self) -> Vec<String> {
        self.got
            .iter()
            .flat_map(|m| m.lines().map(str::to_owned).collect::<Vec<_>>())
            .filter(|l| l != "WATCHDOG=1")
            .collect()
    }
}

/// Children of a process, from /proc.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[test]
fn systemd_hears_ready_reload_watchdog_and_stopping_in_order() {
    let dir = std::env::temp_dir().join(format!("flare-ops-notify-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("notify.sock");
    let mut systemd = Manager::bind(&path);
    // 200 ms: the master feeds it every 100 ms.
    let mut group = common::start_exe(
        env!("CARGO_BIN_EXE_flare-ops"),
        &["notify", path.to_str().expect("utf-8 path"), "200000"],
    );
    let master: u32 = group.wait_fact("master").parse().expect("pid");

    let ready = systemd.wait_for("READY=1");
    assert!(ready.contains("STATUS=3 processes up"), "{ready}");
    // Every child of the first generation was forked before READY.
    assert_eq!(children(master).len(), 3, "children at READY");

    kill(Pid::from_raw(master as i32), Signal::SIGHUP).expect("SIGHUP");
    let reloading = systemd.wait_for("RELOADING=1");
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading:?}"))
        .parse()
        .expect("a number");
    assert!(usec > 0);
    let again = systemd.wait_for("READY=1");
    assert!(again.contains("STATUS=reload done"), "{again}");

    // Fed at least twice by now or soon (every 100 ms).
    while systemd
        .got
        .iter()
        .filter(|m| m.trim() == "WATCHDOG=1")
        .count()
        < 2
    {
        systemd.wait_for("WATCHDOG=1");
    }

    kill(Pid::from_raw(master as i32), Signal::SIGTERM).expect("SIGTERM");
    systemd.wait_for("STOPPING=1");
    let run = group.finish();
    assert!(run.status.success(), "{:?}", run.status);

    let states: Vec<String> = systemd
        .states()
        .into_iter()
        .filter(|l| !l.starts_with("STATUS=") && !l.starts_with("MONOTONIC_USEC="))
        .collect();
    assert_eq!(
        states,
        ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"],
        "all messages: {:?}",
        systemd.got
    );
    let pings = systemd
        .got
        .iter()
        .filter(|m| m.trim() == "WATCHDOG=1")
        .count();
    assert!(pings >= 2, "{pings} watchdog pings");
    println!("systemd heard: {:?}", systemd.got);
    let _ = std::fs::remove_dir_all(&dir);
}
