//! Process plumbing for the harness: a node (a flare master or a uWSGI
//! master) started in its own process group, its output read line by line,
//! and the `/proc` readings of the resources scenario.
//!
//! Every node is killed with its whole process group when its guard is
//! dropped, on success and on failure alike.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sys::signal::{Signal as OsSignal, kill, killpg};
use nix::unistd::{Pid, pipe2};

/// Lines of a node's output kept for error messages.
const TAIL: usize = 40;

/// uWSGI's log lines about lost signals, counted as they stream by.
#[derive(Default)]
pub struct DropLines {
    /// `*** SIGNAL QUEUE IS FULL ...`: one per signal that a full socket
    /// refused (at the raising process or in the master).
    pub queue_full: AtomicU64,
    /// `could not deliver signal N to ...`: the master's share of them.
    pub not_delivered: AtomicU64,
}

/// A running node: killed with its process group when dropped.
pub struct Node {
    label: String,
    child: Child,
    lines: Receiver<String>,
    tail: Arc<Mutex<VecDeque<String>>>,
    drops: Arc<DropLines>,
    exited: Option<ExitStatus>,
}

impl Node {
    /// Starts `cmd` in a new process group with stdout and stderr on one
    /// pipe, read by a thread that forwards each line (uWSGI's drop lines
    /// are only counted).
    pub fn spawn(mut cmd: Command, label: &str) -> Result<Node, String> {
        let (read_end, write_end) =
            pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("{label}: pipe: {e}"))?;
        let write_2 = write_end
            .try_clone()
            .map_err(|e| format!("{label}: dup: {e}"))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(write_end))
            .stderr(Stdio::from(write_2))
            .process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| format!("{label}: cannot start {:?}: {e}", cmd.get_program()))?;
        // The parent's copies of the write end go with `cmd`, so the reader
        // sees end-of-file once the whole group is gone.
        drop(cmd);
        let (tx, rx) = channel();
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let drops = Arc::new(DropLines::default());
        let (t, d) = (tail.clone(), drops.clone());
        std::thread::Builder::new()
            .name(format!("read {label}"))
            .spawn(move || {
                let mut r = BufReader::with_capacity(1 << 16, File::from(read_end));
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match r.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
                    if line.contains("SIGNAL QUEUE IS FULL") {
                        d.queue_full.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    if line.contains("could not deliver signal") {
                        d.not_delivered.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    {
                        let mut t = t.lock().unwrap_or_else(|p| p.into_inner());
                        if t.len() == TAIL {
                            t.pop_front();
                        }
                        t.push_back(line.clone());
                    }
                    let _ = tx.send(line);
                }
            })
            .map_err(|e| format!("{label}: reader thread: {e}"))?;
        Ok(Node {
            label: label.to_owned(),
            child,
            lines: rx,
            tail,
            drops,
            exited: None,
        })
    }

    /// The pid of the process started (the master).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The drop lines counted so far (every line before the last one
    /// returned by [`Node::expect`] is counted).
    pub fn drops(&self) -> (u64, u64) {
        (
            self.drops.queue_full.load(Ordering::Relaxed),
            self.drops.not_delivered.load(Ordering::Relaxed),
        )
    }

    /// Waits for a line for which `want` is true, until `deadline`.
    pub fn expect(
        &mut self,
        what: &str,
        deadline: Instant,
        want: impl Fn(&str) -> bool,
    ) -> Result<String, String> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if want(&line) => return Ok(line),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    return Err(self.failure(&format!("no {what} before the deadline")));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    // The whole group closed its output: the master is gone
                    // or about to be.
                    let soon = Instant::now() + Duration::from_secs(5);
                    let status = self.wait_exit(deadline.min(soon)).ok();
                    return Err(self.failure(&format!(
                        "ended ({}) before {what}",
                        status.map_or("still running".into(), |s| s.to_string())
                    )));
                }
            }
        }
    }

    /// Waits for `count` lines starting with `prefix`.
    pub fn expect_n(
        &mut self,
        prefix: &str,
        count: usize,
        deadline: Instant,
    ) -> Result<(), String> {
        for _ in 0..count {
            self.expect(&format!("`{prefix}` line"), deadline, |l| {
                l.starts_with(prefix)
            })?;
        }
        Ok(())
    }

    /// Sends SIGTERM to the master only (a graceful shutdown).
    pub fn terminate(&self) -> Result<(), String> {
        kill(Pid::from_raw(self.pid() as i32), OsSignal::SIGTERM)
            .map_err(|e| format!("{}: SIGTERM: {e}", self.label))
    }

    /// Waits for the master to exit, until `deadline`.
    pub fn wait_exit(&mut self, deadline: Instant) -> Result<ExitStatus, String> {
        loop {
            if let Some(s) = self.exited {
                return Ok(s);
            }
            match self.child.try_wait() {
                Ok(Some(s)) => {
                    self.exited = Some(s);
                    return Ok(s);
                }
                Ok(None) if Instant::now() < deadline => {
                    // Lines keep flowing meanwhile; a short poll of the
                    // exit status, bounded by the deadline.
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(None) => return Err(self.failure("did not exit before the deadline")),
                Err(e) => return Err(format!("{}: wait: {e}", self.label)),
            }
        }
    }

    /// An error message with the last lines the node printed.
    pub fn failure(&self, what: &str) -> String {
        let tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        let mut s = format!("{}: {what}", self.label);
        if !tail.is_empty() {
            s.push_str("; its last lines:");
            for l in tail.iter() {
                s.push_str("\n    ");
                s.push_str(l);
            }
        }
        s
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // The whole group: the master and every child it forked.
        let _ = killpg(Pid::from_raw(self.child.id() as i32), OsSignal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// Asks for SIGKILL when the harness (the parent) dies, so that a node
/// never outlives an interrupted run; the node's own children die with it
/// (flare's always, uWSGI's with `--no-orphans`).
pub fn die_with_parent() -> Result<(), String> {
    let parent = nix::unistd::getppid();
    nix::sys::prctl::set_pdeathsig(OsSignal::SIGKILL).map_err(|e| format!("prctl: {e}"))?;
    if nix::unistd::getppid() != parent || parent.as_raw() == 1 {
        return Err("the harness is gone".into());
    }
    Ok(())
}

/// Replaces this process with `command` (the parent-death signal stays).
pub fn exec(command: &[std::ffi::OsString]) -> Result<(), String> {
    let (program, args) = command.split_first().ok_or("nothing to run")?;
    let e = Command::new(program).args(args).exec();
    Err(format!("cannot run {}: {e}", program.to_string_lossy()))
}

/// A fresh directory for one node's files, removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    /// Creates `flare-bench-<pid>-<n>` in the system temporary directory.
    pub fn new(tag: &str) -> Result<TempDir, String> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("flare-bench-{}-{n}-{tag}", std::process::id()));
        std::fs::create_dir_all(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Memory of one process, from `/proc/PID/smaps_rollup`, in KiB.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mem {
    /// Resident set size.
    pub rss: u64,
    /// Proportional set size (shared pages split between their users).
    pub pss: u64,
    /// Unique set size: pages only this process maps (private clean + dirty).
    pub uss: u64,
}

/// Reads the memory figures of `pid`.
pub fn mem(pid: u32) -> Result<Mem, String> {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let mut m = Mem::default();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(key), Some(val)) = (it.next(), it.next()) else {
            continue;
        };
        let val: u64 = val.parse().unwrap_or(0);
        match key {
            "Rss:" => m.rss = val,
            "Pss:" => m.pss = val,
            "Private_Clean:" | "Private_Dirty:" => m.uss += val,
            _ => {}
        }
    }
    Ok(m)
}

/// CPU time used by every thread of `pid` so far, in nanoseconds:
/// `/proc/PID/task/*/schedstat` (nanosecond resolution), or where the
/// kernel has none, `utime + stime` of `/proc/PID/stat` (10 ms ticks).
pub fn cpu_ns(pid: u32) -> Result<u64, String> {
    let mut total = 0;
    for tid in tasks(pid)? {
        let path = format!("/proc/{pid}/task/{tid}/schedstat");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                total += text
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
            Err(_) => return cpu_ticks_ns(pid),
        }
    }
    Ok(total)
}

/// `utime + stime` of the whole process, in nanoseconds (USER_HZ is 100).
fn cpu_ticks_ns(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    // The command name may hold spaces; the fields after it do not.
    let after = text.rsplit_once(')').map_or("", |(_, rest)| rest);
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of the line are the 12th and 13th after the name.
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Ok((ticks(11) + ticks(12)) * 10_000_000)
}

/// Context switches (voluntary and not) of every thread of `pid`: how
/// often it woke up.
pub fn switches(pid: u32) -> Result<u64, String> {
    let mut total = 0;
    for tid in tasks(pid)? {
        let path = format!("/proc/{pid}/task/{tid}/status");
        if let Ok(text) = std::fs::read_to_string(&path) {
            for line in text.lines() {
                if line.starts_with("voluntary_ctxt_switches:")
                    || line.starts_with("nonvoluntary_ctxt_switches:")
                {
                    total += line
                        .split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0);
                }
            }
        }
    }
    Ok(total)
}

/// The direct children of `pid`: `/proc/PID/task/*/children`, or where
/// the kernel has none, every process whose parent is `pid`.
pub fn children(pid: u32) -> Result<Vec<u32>, String> {
    let mut out = Vec::new();
    for tid in tasks(pid)? {
        let path = format!("/proc/{pid}/task/{tid}/children");
        match std::fs::read_to_string(&path) {
            Ok(text) => out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            ),
            Err(_) => return children_by_scan(pid),
        }
    }
    Ok(out)
}

fn children_by_scan(pid: u32) -> Result<Vec<u32>, String> {
    let dir = std::fs::read_dir("/proc").map_err(|e| format!("/proc: {e}"))?;
    let mut out = Vec::new();
    for e in dir.flatten() {
        let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let after = text.rsplit_once(')').map_or("", |(_, rest)| rest);
        // The parent pid is the second field after the name.
        if after.split_whitespace().nth(1) == Some(pid.to_string().as_str()) {
            out.push(child);
        }
    }
    Ok(out)
}

fn tasks(pid: u32) -> Result<Vec<u32>, String> {
    let path = format!("/proc/{pid}/task");
    let dir = std::fs::read_dir(&path).map_err(|e| format!("{path}: {e}"))?;
    Ok(dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_readings_and_their_fallbacks_agree() {
        let mut child = Command::new("sleep").arg("10").spawn().expect("sleep");
        let me = std::process::id();
        assert!(children(me).unwrap().contains(&child.id()));
        assert!(children_by_scan(me).unwrap().contains(&child.id()));
        let _ = child.kill();
        let _ = child.wait();
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(30) {
            std::hint::black_box(0);
        }
        assert!(cpu_ns(me).unwrap() > 0);
        assert!(cpu_ticks_ns(me).unwrap() > 0);
        let m = mem(me).unwrap();
        assert!(m.rss > 0 && m.pss > 0 && m.uss > 0, "{m:?}");
        assert!(switches(me).unwrap() > 0);
    }
}
