//! Starts scenario processes and reads what they report.
//!
//! A scenario prints `FACT key=value` lines as it goes and `SUMMARY <json>`
//! at the end. Every wait here has a deadline; nothing sleeps.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long any scenario may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(90);

/// A scenario process that is still running.
pub struct Running {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    /// Lines of `seen` already returned by `wait_fact`.
    taken: Vec<usize>,
    started: Instant,
    args: Vec<String>,
}

impl Drop for Running {
    /// A test that fails midway must not leave its group running: the
    /// master is told to stop (it ends its children), then killed.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A finished scenario.
pub struct Run {
    pub status: ExitStatus,
    pub lines: Vec<String>,
    pub summary: Value,
}

pub fn start(args: &[&str]) -> Running {
    launch(args, false)
}

/// Starts the scenario as the leader of a new process group, as a shell
/// does for a foreground job.
pub fn start_in_own_group(args: &[&str]) -> Running {
    launch(args, true)
}

fn launch(args: &[&str], own_group: bool) -> Running {
    launch_exe(env!("CARGO_BIN_EXE_flare-scenario"), args, own_group)
}

/// Starts another scenario binary (`env!("CARGO_BIN_EXE_flare-<area>")`).
pub fn start_exe(exe: &str, args: &[&str]) -> Running {
    launch_exe(exe, args, false)
}

fn launch_exe(exe: &str, args: &[&str], own_group: bool) -> Running {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if own_group {
        cmd.process_group(0);
    }
    let mut child = cmd.spawn().expect("start the scenario binary");
    let stdout = child.stdout.take().expect("piped stdout");
    Running {
        child,
        lines: lines_of(stdout),
        seen: Vec::new(),
        taken: Vec::new(),
        started: Instant::now(),
        args: args.iter().map(|s| s.to_string()).collect(),
    }
}

impl Running {
    /// The scenario's pid: the master's.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn next_line(&mut self) -> Option<String> {
        let left = DEADLINE.saturating_sub(self.started.elapsed());
        match self.lines.recv_timeout(left) {
            Ok(line) => {
                self.seen.push(line.clone());
                Some(line)
            }
            Err(RecvTimeoutError::Disconnected) => None,
            Err(RecvTimeoutError::Timeout) => {
                let _ = self.child.kill();
                panic!(
                    "scenario {:?} still running after {DEADLINE:?}; output so far:\n{}",
                    self.args,
                    self.seen.join("\n")
                );
            }
        }
    }

    /// Waits for `FACT key=...` and returns the value. Facts come from
    /// processes running side by side, in any order: one that came while
    /// the test waited for another is found among the lines seen.
    pub fn wait_fact(&mut self, key: &str) -> String {
        let prefix = format!("FACT {key}=");
        let earlier = (0..self.seen.len())
            .find(|i| !self.taken.contains(i) && self.seen[*i].starts_with(&prefix));
        if let Some(i) = earlier {
            self.taken.push(i);
            return self.seen[i][prefix.len()..].to_string();
        }
        loop {
            match self.next_line() {
                Some(line) => {
                    if let Some(v) = line.strip_prefix(&prefix) {
                        self.taken.push(self.seen.len() - 1);
                        return v.to_string();
                    }
                }
                None => panic!(
                    "scenario {:?} ended without FACT {key}; output:\n{}",
                    self.args,
                    self.seen.join("\n")
                ),
            }
        }
    }

    pub fn finish(mut self) -> Run {
        while self.next_line().is_some() {}
        let status = self.child.wait().expect("wait for scenario");
        let summary = self
            .seen
            .iter()
            .find_map(|l| l.strip_prefix("SUMMARY "))
            .map(|j| serde_json::from_str(j).expect("summary is JSON"))
            .unwrap_or(Value::Null);
        assert!(
            status.success() && !summary.is_null(),
            "scenario {:?} failed ({status}); output:\n{}",
            self.args,
            self.seen.join("\n")
        );
        Run {
            status,
            lines: std::mem::take(&mut self.seen),
            summary,
        }
    }
}

/// Runs a scenario to its end.
pub fn run(args: &[&str]) -> Run {
    start(args).finish()
}

impl Run {
    /// Every value of `FACT key=...`, in order.
    pub fn facts(&self, key: &str) -> Vec<String> {
        let prefix = format!("FACT {key}=");
        self.lines
            .iter()
            .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
            .collect()
    }

    pub fn fact(&self, key: &str) -> String {
        let all = self.facts(key);
        assert_eq!(all.len(), 1, "FACT {key}: {all:?}");
        all[0].clone()
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.summary["counters"][name].as_u64().expect(name)
    }

    fn process(&self, role: &str, id: u64) -> &Value {
        self.summary["processes"]
            .as_array()
            .expect("processes")
            .iter()
            .find(|p| p["proc"]["role"] == role && p["proc"]["id"] == id)
            .unwrap_or_else(|| panic!("no {role}{id} in the summary"))
    }

    /// Times `role``id` handled signal `num`.
    pub fn handled(&self, role: &str, id: u64, num: u8) -> u64 {
        self.process(role, id)["handled_by_num"][num.to_string()]
            .as_u64()
            .unwrap_or(0)
    }

    pub fn field(&self, role: &str, id: u64, name: &str) -> u64 {
        self.process(role, id)[name].as_u64().expect(name)
    }

    /// Handled counts of `num` for every process, as `(name, count)`.
    pub fn spread(&self, num: u8) -> Vec<(String, u64)> {
        self.summary["processes"]
            .as_array()
            .expect("processes")
            .iter()
            .map(|p| {
                let name = format!(
                    "{}{}",
                    p["proc"]["role"].as_str().unwrap_or("?"),
                    p["proc"]["id"]
                );
                let n = p["handled_by_num"][num.to_string()].as_u64().unwrap_or(0);
                (name, n)
            })
            .collect()
    }
}

/// The lines a child writes to `stdout`, as they come, read on a thread of
/// the test (the child's pipe never fills while the test waits).
pub fn lines_of(stdout: ChildStdout) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Polls the stats endpoint at `addr` every 20 ms until `ok` holds; fails
/// the test with `what` after `deadline`.
pub fn until_stats(
    addr: &str,
    what: &str,
    deadline: Duration,
    ok: impl Fn(&flare::stats::StatsDoc) -> bool,
) -> flare::stats::StatsDoc {
    let end = Instant::now() + deadline;
    loop {
        let doc = flare::stats::fetch(addr, Duration::from_secs(10)).expect("stats");
        if ok(&doc) {
            return doc;
        }
        assert!(Instant::now() < end, "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
