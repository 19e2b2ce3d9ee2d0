//! An idle group costs the master no CPU with every endpoint on (stats,
//! control, remote signals), also while a reload or a cheap waits for a
//! busy worker; and a stuck member (SIGSTOP) neither stalls its senders
//! for ever nor hides: stats shows its queue and for how long it has made
//! no progress, and it is killed, respawned and its queue handled.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flare::stats::{StatsDoc, control, fetch};
use nix::sys::signal::{Signal as Sig, kill};
use nix::unistd::Pid;

const T: Duration = Duration::from_secs(10);
/// How long each idle window lasts: what is measured, not a wait.
const WINDOW: Duration = Duration::from_secs(2);

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("flare-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// User plus system CPU time of `pid`, from /proc/PID/stat.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // Fields 14 and 15 (utime, stime) counted from the state, field 3.
    let ticks = f[11] + f[12];
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// The share of one core the master used over [`WINDOW`], in percent.
fn cpu_share(pid: u32) -> f64 {
    let c0 = cpu_time(pid);
    let t0 = Instant::now();
    std::thread::sleep(WINDOW);
    let used = cpu_time(pid) - c0;
    used.as_secs_f64() * 100.0 / t0.elapsed().as_secs_f64()
}

/// Polls the stats until `ok` holds (deadline 60 s).
fn until(addr: &str, what: &str, ok: impl Fn(&StatsDoc) -> bool) -> StatsDoc {
    common::until_stats(addr, what, Duration::from_secs(60), ok)
}

fn release(dir: &Path) {
    std::fs::write(dir.join("go"), b"").unwrap();
}

#[test]
fn an_idle_master_with_every_endpoint_on_uses_no_cpu_also_during_reload_and_cheap() {
    let dir = temp_dir("idle");
    let mut s = common::start_exe(
        env!("CARGO_BIN_EXE_flare-idle"),
        &["idle", dir.to_str().unwrap()],
    );
    let stats = s.wait_fact("stats");
    let ctl = s.wait_fact("control");
    let pid = s.pid();
    let cmd = |c: &str| control(&ctl, c, T).unwrap_or_else(|e| panic!("{c}: {e}"));
    // An attached process (frames on the socket) idles in the group too.
    let mut attached = std::os::unix::net::UnixStream::connect(dir.join("attach.sock")).unwrap();
    attached.set_read_timeout(Some(T)).unwrap();
    let hello = br#"{"version":1}"#;
    let ready = br#""Ready""#;
    let mut msg = vec![4, 0, 0, 0];
    msg.extend((hello.len() as u32).to_le_bytes());
    msg.extend(0u64.to_le_bytes());
    msg.extend(hello);
    msg.extend([4, 0, 0, 0]);
    msg.extend((ready.len() as u32).to_le_bytes());
    msg.extend(1u64.to_le_bytes());
    msg.extend(ready);
    std::io::Write::write_all(&mut attached, &msg).unwrap();
    let doc = until(&stats, "every child running, one attached", |d| {
        d.workers[..3]
            .iter()
            .chain(&d.mules)
            .all(|p| p.pid != 0 && p.state == "running")
            && d.workers[3].status == "vacant"
    });
    assert_eq!(
        doc.sockets.len(),
        4,
        "stats, control, remote and attach: {:?}",
        doc.sockets
    );

    // Idle.
    let idle = cpu_share(pid);
    // The group answers afterwards.
    until(&stats, "stats after the idle window", |d| d.pid == pid);

    // A reload waiting for worker 1's handler.
    cmd("raise 10");
    let held = s.wait_fact("holding");
    let before = until(&stats, "worker 1 in signal 10", |d| {
        d.workers[0].current_signal == Some(10)
    });
    // The forked ones (an attached process is not flare's to restart).
    let old: Vec<u32> = before.workers[..2]
        .iter()
        .chain(&before.mules)
        .map(|p| p.pid)
        .collect();
    assert_eq!(held, old[0].to_string());
    assert!(cmd("reload").starts_with("reloading 3 processes"));
    let reload = cpu_share(pid);
    let during = fetch(&stats, T).unwrap();
    assert_eq!(
        during.workers[0].pid, old[0],
        "the reload waited for the handler"
    );
    release(&dir);
    // The positive event ending the window: every child was replaced.
    until(&stats, "every child reloaded", |d| {
        d.workers[..2]
            .iter()
            .chain(&d.mules)
            .zip(&old)
            .all(|(p, &o)| p.pid != 0 && p.pid != o && p.state == "running")
    });

    // A cheap waiting for worker 1's handler.
    cmd("raise 10");
    s.wait_fact("holding");
    until(&stats, "worker 1 in signal 10 again", |d| {
        d.workers[0].current_signal == Some(10)
    });
    cmd("cheap worker1");
    let cheap = cpu_share(pid);
    let during = fetch(&stats, T).unwrap();
    assert!(
        during.workers[0].pid != 0,
        "the cheap waited for the handler"
    );
    release(&dir);
    until(&stats, "worker 1 cheaped and gone", |d| {
        d.workers[0].pid == 0 && d.workers[0].state == "cheaped"
    });

    println!("master CPU: idle {idle:.2} %, reload {reload:.2} %, cheap {cheap:.2} %");
    for (what, share) in [("idle", idle), ("reload", reload), ("cheap", cheap)] {
        assert!(
            share < 5.0,
            "the master used {share:.1} % of a core while {what}"
        );
    }
    kill(Pid::from_raw(pid as i32), Sig::SIGTERM).unwrap();
    let run = s.finish();
    assert_eq!(run.counter("handled"), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_stopped_worker_is_shown_stuck_then_killed_and_its_queue_handled() {
    const N: u64 = 40_000;
    let dir = temp_dir("stall");
    let mut s = common::start_exe(
        env!("CARGO_BIN_EXE_flare-idle"),
        &["stall", dir.to_str().unwrap(), "3000", &N.to_string()],
    );
    let stats = s.wait_fact("stats");
    s.wait_fact("worker1");
    let w2: i32 = s.wait_fact("worker2").parse().unwrap();
    kill(Pid::from_raw(w2), Sig::SIGSTOP).unwrap();
    release(&dir);
    s.wait_fact("sending");
    // Stats shows it stuck: work queued, no progress for a while.
    // (Worker 1 keeping up is checked at the end: it was never killed. Its
    // own stalled_ms can be a few ms on a loaded machine.)
    until(&stats, "worker 2 shown stuck", |d| {
        d.workers[1].pid == w2 as u32
            && d.workers[1].signal_queue > 16
            && d.workers[1].stalled_ms > 0
    });
    // Worker 2 is replaced by a fresh process: the positive event.
    let w2_new: i32 = s.wait_fact("worker2").parse().unwrap();
    assert_ne!(w2_new, w2);
    let sent_ms: u64 = s.wait_fact("sent_ms").parse().unwrap();
    let run = s.finish();
    assert_eq!(run.counter("stalls"), 1);
    assert_eq!(run.counter("handled"), 2 * N, "nothing lost");
    assert_eq!(run.counter("delivered"), 2 * N);
    for c in ["dropped", "dead_lettered", "pending_at_exit", "timeouts"] {
        assert_eq!(run.counter(c), 0, "{c}");
    }
    assert_eq!(run.handled("worker", 1, 1), N);
    assert_eq!(run.handled("worker", 2, 1), N);
    assert_eq!(run.field("worker", 2, "respawns"), 1);
    assert_eq!(run.field("worker", 1, "respawns"), 0);
    // The sender waited about the stall limit, not for ever.
    assert!(sent_ms < 30_000, "the sender waited {sent_ms} ms");
    let _ = std::fs::remove_dir_all(&dir);
}
