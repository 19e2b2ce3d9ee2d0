//! The fork and exit boundaries: what runs in a child stays in the child,
//! a failed run leaves nothing behind, and nothing a child forks outlives
//! the group or speaks for it. Each test runs a flare-boundaries scenario
//! in its own process.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(90);

/// A finished scenario: its exit status and its `FACT k=v` lines.
struct Run {
    ok: bool,
    pid: u32,
    lines: Vec<String>,
}

impl Run {
    fn facts(&self, key: &str) -> Vec<String> {
        let prefix = format!("FACT {key}=");
        self.lines
            .iter()
            .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
            .collect()
    }

    fn fact(&self, key: &str) -> String {
        let all = self.facts(key);
        assert_eq!(
            all.len(),
            1,
            "FACT {key}: {all:?}\n{}",
            self.lines.join("\n")
        );
        all[0].clone()
    }

    fn summary(&self) -> serde_json::Value {
        self.lines
            .iter()
            .find_map(|l| l.strip_prefix("SUMMARY "))
            .map(|j| serde_json::from_str(j).expect("summary is JSON"))
            .unwrap_or(serde_json::Value::Null)
    }
}

/// Runs `flare-boundaries ARGS` to its end (killed at the deadline).
fn run(args: &[&str]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flare-boundaries"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start flare-boundaries");
    let pid = child.id();
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut lines = Vec::new();
    loop {
        match rx.recv_timeout(DEADLINE.saturating_sub(started.elapsed())) {
            Ok(line) => lines.push(line),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "scenario {args:?} still running after {DEADLINE:?}:\n{}",
                    lines.join("\n")
                );
            }
        }
    }
    let status = child.wait().expect("wait for the scenario");
    Run {
        ok: status.success(),
        pid,
        lines,
    }
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("flare-boundaries-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn a_panicking_child_fork_hook_stays_in_the_child() {
    let dir = temp_dir("hook-panic");
    let r = run(&["hook-panic", dir.to_str().unwrap()]);
    assert!(r.ok, "scenario failed:\n{}", r.lines.join("\n"));
    // The respawned worker finds the master's socket where it was: the
    // first child's panic did not drop the master's listeners in it.
    assert_eq!(r.fact("control_socket_exists"), "true");
    // Only the master returned from run().
    assert_eq!(r.fact("run_returned_in"), r.pid.to_string());
    assert_eq!(r.fact("forks"), "2", "one panicked child, one respawn");
    let s = r.summary();
    let w = &s["processes"][0];
    assert_eq!(w["respawns"], 1, "{w}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_thread_started_while_running_stops_the_next_fork_and_the_run_ends_its_children() {
    let r = run(&["thread-in-hook"]);
    assert!(r.ok, "scenario failed:\n{}", r.lines.join("\n"));
    let err = r.fact("run_error");
    assert!(
        err.contains("single-threaded") && err.contains("2 threads"),
        "{err}"
    );
    assert_eq!(r.fact("forks"), "2", "the second fork was attempted");
    assert!(r.facts("worker_up").len() <= 1, "{:?}", r.lines);
    // The worker forked before the failure is ended and reaped.
    assert_eq!(r.fact("children_left"), "0");
    assert_eq!(r.fact("sigchld_blocked"), "false");
    assert_eq!(r.fact("sigterm_blocked"), "false");
}

#[test]
fn children_leave_with_exit_and_run_none_of_the_masters_atexit_handlers() {
    let dir = temp_dir("atexit");
    let r = run(&["atexit", dir.to_str().unwrap()]);
    assert!(r.ok, "scenario failed:\n{}", r.lines.join("\n"));
    assert_eq!(
        r.facts("worker_pid").len(),
        2,
        "the worker's first life returned and it was respawned"
    );
    let written = std::fs::read_to_string(dir.join("atexit")).unwrap_or_default();
    let pids: Vec<&str> = written.lines().collect();
    assert_eq!(
        pids,
        vec![r.fact("master_pid").as_str()],
        "workers: {:?}",
        r.facts("worker_pid")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn what_a_handler_forks_does_not_speak_for_the_worker_nor_outlive_the_group() {
    let r = run(&["grandchild"]);
    assert!(r.ok, "scenario failed:\n{}", r.lines.join("\n"));
    let worker = r.fact("worker_pid");
    assert!(r.facts("grandchild_whoami").is_empty(), "{:?}", r.lines);
    let who = r.fact("grandchild_whoami_error");
    assert!(
        who.contains("forked from worker1") && who.contains(&format!("pid {worker}")),
        "{who}"
    );
    assert!(r.facts("grandchild_send").is_empty(), "{:?}", r.lines);
    assert!(
        r.fact("grandchild_send_error")
            .contains("not a member of the group")
    );
    r.fact("grandchild_done");
    // The sleepers' deaths (reaped by the master) were not taken for the
    // worker's: it was never respawned.
    assert_eq!(r.summary()["processes"][0]["respawns"], 0);
    let sleepers = r.facts("sleeper_pid");
    assert_eq!(sleepers.len(), 2, "{:?}", r.lines);
    // A SIGKILLed stray may still be on its way out when the master has
    // exited (its exit and its reaping, by init once the master is gone,
    // are asynchronous): each must be gone or a zombie within a deadline.
    let running = |pid: &String| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                stat.rsplit_once(") ")
                    .map(|(_, rest)| rest.starts_with('Z'))
            })
            .is_some_and(|zombie| !zombie)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while sleepers.iter().any(running) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let alive: Vec<&String> = sleepers.iter().filter(|pid| running(pid)).collect();
    for pid in &alive {
        // Do not leave them behind either way.
        let _ = Command::new("kill").args(["-9", pid.as_str()]).status();
    }
    assert!(
        alive.is_empty(),
        "sleepers {alive:?} survived the group's shutdown"
    );
}
