//! The spooler and the locks, with real processes: each scenario runs in
//! its own process (`flare-spool`), never forked from this harness.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

const DEADLINE: Duration = Duration::from_secs(120);

struct Scenario {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Drop for Scenario {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn start(prefix: &[&str], args: &[&str]) -> Scenario {
    let bin = env!("CARGO_BIN_EXE_flare-spool");
    let mut cmd = match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    let mut child = cmd
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start flare-spool");
    let out = child.stdout.take().expect("stdout");
    let rx = common::lines_of(out);
    Scenario {
        child,
        lines: rx,
        seen: Vec::new(),
    }
}

impl Scenario {
    /// Waits for `FACT key=...` and returns its value.
    fn wait_fact(&mut self, key: &str) -> String {
        let prefix = format!("FACT {key}=");
        if let Some(l) = self.seen.iter().find(|l| l.starts_with(&prefix)) {
            return l[prefix.len()..].to_owned();
        }
        let end = Instant::now() + DEADLINE;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no FACT {key} in time; saw {:?}", self.seen));
            self.seen.push(line.clone());
            if let Some(v) = line.strip_prefix(&prefix) {
                return v.to_owned();
            }
        }
    }

    /// Waits for a second `FACT key=...`.
    fn wait_fact_again(&mut self, key: &str) -> String {
        let prefix = format!("FACT {key}=");
        let end = Instant::now() + DEADLINE;
        while self.seen.iter().filter(|l| l.starts_with(&prefix)).count() < 2 {
            let left = end.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no second FACT {key} in time; saw {:?}", self.seen));
            self.seen.push(line);
        }
        let l = self.seen.iter().rfind(|l| l.starts_with(&prefix)).unwrap();
        l[prefix.len()..].to_owned()
    }

    /// Reads to the end; returns the facts and the summary.
    fn finish(mut self) -> (Vec<String>, Value) {
        let end = Instant::now() + DEADLINE;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                Err(_) => panic!("scenario did not end in time; saw {:?}", self.seen),
            }
        }
        let status = self.child.wait().expect("wait");
        assert!(
            status.success(),
            "scenario failed: {status}; saw {:?}",
            self.seen
        );
        let summary = self
            .seen
            .iter()
            .find_map(|l| l.strip_prefix("SUMMARY "))
            .map(|s| serde_json::from_str(s).expect("summary json"))
            .unwrap_or_else(|| panic!("no SUMMARY; saw {:?}", self.seen));
        (std::mem::take(&mut self.seen), summary)
    }
}

fn fresh_dir(base: &Path, tag: &str) -> PathBuf {
    let d = base.join(format!("flare-spool-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create test dir");
    d
}

fn target_tmp() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tmp")
}

#[test]
fn jobs_spooled_by_workers_run_once_each_in_the_spoolers() {
    let base = fresh_dir(&target_tmp(), "basic");
    let spool = base.join("spool");
    std::fs::create_dir(&spool).unwrap();
    let log = base.join("ran.log");
    let s = start(
        &[],
        &[
            "basic",
            spool.to_str().unwrap(),
            log.to_str().unwrap(),
            "300",
        ],
    );
    let (_, sum) = s.finish();
    assert_eq!(sum["distinct"], 300, "{sum}");
    assert_eq!(sum["runs"], 300, "each job once: {sum}");
    assert_eq!(sum["max_runs"], 1, "{sum}");
    assert_eq!(sum["left"]["jobs"], 0, "{sum}");
    assert_eq!(sum["left"]["tmp"], 0, "{sum}");
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn a_new_job_wakes_an_idle_spooler_without_a_scan_period() {
    let base = fresh_dir(&target_tmp(), "prompt");
    // The scan period is an hour: the second job, spooled after the
    // spooler's start-up scan, can only be seen through inotify.
    let mut s = start(&[], &["prompt", base.to_str().unwrap()]);
    s.wait_fact("second_spooled");
    assert_eq!(s.wait_fact("second_ran"), "1");
    let us: u64 = s.wait_fact("spool_to_start_us").parse().unwrap();
    eprintln!("spool() to start: {us} us");
    let (_, sum) = s.finish();
    assert_eq!(sum["left"]["jobs"], 0, "{sum}");
    std::fs::remove_dir_all(&base).unwrap();
}

/// 10,000 jobs; spoolers SIGKILL themselves mid-job now and then; the
/// master is SIGKILLed once all are spooled and half have run; a restart on the same
/// directory finishes: every accepted job ran, nothing is left.
#[test]
fn no_job_is_lost_to_kill_9_of_spoolers_and_master() {
    // Process kills do not depend on fsync reaching the disk (the page
    // cache outlives any process): tmpfs keeps this run short.
    let shm = Path::new("/dev/shm");
    let root = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        target_tmp()
    };
    let base = fresh_dir(&root, "durable");
    let spool = base.join("spool");
    std::fs::create_dir(&spool).unwrap();
    let (log, spooled) = (base.join("ran.log"), base.join("spooled.log"));
    let a = |p: &Path| p.to_str().unwrap().to_owned();
    let n = "10000";
    let mut run = start(&[], &["durable-run", &a(&spool), &a(&log), &a(&spooled), n]);
    run.wait_fact("spooled_by");
    run.wait_fact_again("spooled_by");
    run.wait_fact("milestone");
    let master = nix::unistd::Pid::from_raw(run.child.id() as i32);
    nix::sys::signal::kill(master, nix::sys::signal::Signal::SIGKILL).unwrap();
    let status = run.child.wait().unwrap();
    assert!(!status.success(), "the master was killed: {status}");
    let ran_before = std::fs::read_to_string(&log).unwrap().lines().count();
    let finish = start(&[], &["durable-finish", &a(&spool), &a(&log), &a(&spooled)]);
    let (facts, sum) = finish.finish();
    eprintln!("durability: ran {ran_before} before the master's kill; {facts:?}; {sum}");
    println!("SUMMARY {sum}");
    let accepted = sum["accepted"].as_u64().unwrap();
    assert_eq!(
        accepted, 10_000,
        "every job was spooled before the kill: {sum}"
    );
    assert_eq!(sum["lost"], 0, "{sum}");
    assert!(sum["distinct_ran"].as_u64().unwrap() >= accepted, "{sum}");
    assert_eq!(sum["left"]["jobs"], 0, "{sum}");
    assert_eq!(sum["left"]["invalid"], 0, "{sum}");
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn a_read_only_spool_dir_is_a_clear_error_at_start_and_at_spool() {
    // Tests run as root, which ignores file modes: the scenario runs as
    // nobody through setpriv.
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ];
    let usable = Command::new("setpriv")
        .args(&nobody[1..])
        .arg("true")
        .status()
        .is_ok_and(|s| s.success());
    if !usable {
        eprintln!("SKIPPED: setpriv cannot switch to uid 65534 here");
        return;
    }
    // World-traversable parent, a spool dir owned by nobody.
    let base = fresh_dir(Path::new("/tmp"), "readonly");
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
    let spool = base.join("spool");
    std::fs::create_dir(&spool).unwrap();
    std::os::unix::fs::chown(&spool, Some(65534), Some(65534)).unwrap();
    let bin_ok = Command::new("setpriv")
        .args(&nobody[1..])
        .arg(env!("CARGO_BIN_EXE_flare-spool"))
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.code() == Some(2));
    if !bin_ok {
        eprintln!("SKIPPED: uid 65534 cannot run the scenario binary (target dir not readable)");
        return;
    }
    let dir = spool.to_str().unwrap();

    std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o500)).unwrap();
    let (_, sum) = start(&nobody, &["readonly", dir]).finish();
    let e = sum["startup"].as_str().unwrap_or_default();
    assert!(e.contains(dir) && e.contains("not writable"), "{sum}");

    std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o700)).unwrap();
    let (_, sum) = start(&nobody, &["readonly", dir]).finish();
    let e = sum["spool_error"].as_str().unwrap_or_default();
    assert!(
        e.contains(dir) && e.contains("cannot create a job file") && e.contains("may not write"),
        "{sum}"
    );
    assert_eq!(sum["spool_after_chmod_back"], true, "{sum}");
    std::fs::remove_dir_all(&base).unwrap();
}

/// A process flare did not fork (as a gunicorn worker) attaches and
/// spools: plain jobs go to its own journal segment, a prioritised one to a
/// job file, and the group's spooler runs each once.
#[test]
fn an_attached_process_spools_into_the_groups_spoolers() {
    let base = fresh_dir(&target_tmp(), "attached");
    let mut master = start(&[], &["attached", base.to_str().unwrap(), "200"]);
    let sock = master.wait_fact("attach");
    let (_, client) = start(&[], &["attached-client", &sock, "200"]).finish();
    assert_eq!(client["spooled"], 201, "{client}");
    assert_eq!(
        client["journal"], 200,
        "plain jobs in the journal: {client}"
    );
    assert_eq!(client["file"], true, "{client}");
    let (_, sum) = master.finish();
    assert_eq!(sum["distinct"], 201, "{sum}");
    assert_eq!(sum["runs"], 201, "each once: {sum}");
    assert_eq!(sum["journal_runs"], 200, "{sum}");
    assert_eq!(sum["file_runs"], 1, "{sum}");
    assert_eq!(sum["left"]["jobs"], 0, "{sum}");
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn a_lock_holder_killed_with_sigkill_releases_its_lock() {
    let base = fresh_dir(&target_tmp(), "locks");
    let mut s = start(&[], &["locks", base.to_str().unwrap()]);
    let holder: i32 = s.wait_fact("holder_pid").parse().unwrap();
    assert_eq!(s.wait_fact("is_locked_0"), "false");
    assert_eq!(s.wait_fact("is_locked_1"), "true");
    s.wait_fact("waiting");
    let bad = s.wait_fact("bad_lock");
    assert!(bad.contains("locks 0 to 2"), "{bad}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(holder),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert_eq!(s.wait_fact("holder_gone"), "true");
    assert_eq!(s.wait_fact("unlock_unheld"), "true");
    s.finish();
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn priority_at_and_spooler_pick_the_order_the_time_and_the_directory() {
    let base = fresh_dir(&target_tmp(), "options");
    let (d1, d2) = (base.join("one"), base.join("two"));
    std::fs::create_dir(&d1).unwrap();
    std::fs::create_dir(&d2).unwrap();
    let (facts, sum) = start(
        &[],
        &["options", d1.to_str().unwrap(), d2.to_str().unwrap()],
    )
    .finish();
    let jobs: Vec<&str> = facts
        .iter()
        .filter_map(|l| l.strip_prefix("FACT job="))
        .collect();
    let d1s = format!("dir={}", d1.display());
    let d2s = format!("dir={}", d2.display());
    // Spooler 1 serves the first directory: p1, p5, then the job without
    // a priority; the `at` job two seconds later, not before its time.
    let one: Vec<&str> = jobs.iter().copied().filter(|j| j.contains(&d1s)).collect();
    assert_eq!(one.len(), 4, "{jobs:?}");
    assert!(one.iter().all(|j| j.contains("spooler=1")), "{jobs:?}");
    let order: Vec<&str> = one.iter().map(|j| j.split(' ').next().unwrap()).collect();
    assert_eq!(
        order,
        ["ran=p1", "ran=p5", "ran=none", "ran=at"],
        "{jobs:?}"
    );
    assert!(one[3].contains("not_before_at=true"), "{jobs:?}");
    // `spooler` = the second directory: spooler 2 runs it.
    let two: Vec<&str> = jobs.iter().copied().filter(|j| j.contains(&d2s)).collect();
    assert_eq!(two, [format!("ran=dir2 spooler=2 {d2s}")], "{jobs:?}");
    assert_eq!(sum["waiting_in_dir1"], 4, "{sum}");
    // spool_many put each job in its own directory; spooler_get_task read
    // the held-back job without running it; before run() every spooler
    // pid is 0 (one spooler per directory).
    assert_eq!(
        sum["batch_in_dir2"],
        serde_json::json!([false, false, true]),
        "{sum}"
    );
    assert_eq!(
        sum["get_task"],
        serde_json::json!({"what": "at", "has_at": true, "dir": true, "missing": true}),
        "{sum}"
    );
    assert_eq!(sum["pids_in_master"], serde_json::json!([0, 0]), "{sum}");
    let e = sum["unknown_spooler"].as_str().unwrap_or_default();
    assert!(
        e.contains("/nonexistent/spool") && e.contains(d2.to_str().unwrap()),
        "{sum}"
    );
    let e = sum["before_build"].as_str().unwrap_or_default();
    assert!(e.contains("no spooler is configured"), "{sum}");
    assert_eq!(sum["left1"]["jobs"], 0, "{sum}");
    assert_eq!(sum["left2"]["jobs"], 0, "{sum}");
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn a_full_spool_dir_is_a_clear_error_at_spool_and_loses_no_accepted_job() {
    let base = fresh_dir(Path::new("/tmp"), "full");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&base)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIPPED: cannot mount a small tmpfs here (needs root with CAP_SYS_ADMIN)");
        return;
    }
    let spool = base.join("spool");
    std::fs::create_dir(&spool).unwrap();
    let (_, sum) = start(&[], &["full", spool.to_str().unwrap()]).finish();
    let _ = Command::new("umount").arg(&base).status();
    let _ = std::fs::remove_dir_all(&base);
    let e = sum["error"].as_str().unwrap_or_default();
    assert!(
        e.contains(spool.to_str().unwrap()) && e.contains("full"),
        "{sum}"
    );
    let accepted = sum["accepted"].as_u64().unwrap();
    assert!(accepted > 0, "{sum}");
    assert_eq!(sum["jobs"], accepted, "{sum}");
    assert_eq!(sum["whole"], accepted, "{sum}");
    assert_eq!(
        sum["left"]["tmp"], 0,
        "no half-written temporary left: {sum}"
    );
}
