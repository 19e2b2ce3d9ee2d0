//! The stats and control endpoints of a running master.

mod common;

use std::time::Duration;

use flare::stats::{ProcStats, StatsDoc, control, fetch};

const T: Duration = Duration::from_secs(10);

fn worker(doc: &StatsDoc, id: u32) -> &ProcStats {
    doc.workers.iter().find(|w| w.id == id).expect("worker")
}

fn handled(doc: &StatsDoc, id: u32, num: u8) -> u64 {
    worker(doc, id)
        .handled_by_num
        .get(&num)
        .copied()
        .unwrap_or(0)
}

/// Polls the stats until `ok` holds (deadline 30 s).
fn until(addr: &str, what: &str, ok: impl Fn(&StatsDoc) -> bool) -> StatsDoc {
    common::until_stats(addr, what, Duration::from_secs(30), ok)
}

#[test]
fn stats_and_control_drive_and_describe_a_running_master() {
    let dir = std::env::temp_dir().join(format!("flare-admin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ctl = dir.join("control.sock");
    let ctl = ctl.to_str().unwrap();
    let mut s = common::start(&["admin", ctl]);
    let stats = s.wait_fact("stats");
    s.wait_fact("ready");
    let cmd = |c: &str| control(ctl, c, T);

    // The document: uWSGI's keys, and ours.
    let doc = fetch(&stats, T).unwrap();
    assert!(doc.version.starts_with("flare "));
    assert_eq!(doc.pid, s.pid());
    assert_eq!(doc.workers.len(), 4);
    assert_eq!(doc.mules.len(), 1);
    assert!(doc.workers.iter().all(|w| w.pid > 0 && w.accepting == 1));
    let protos: Vec<&str> = doc.sockets.iter().map(|s| s.proto.as_str()).collect();
    assert_eq!(protos, ["stats", "control"]);
    let table: Vec<(u8, &str)> = doc
        .flare
        .table
        .iter()
        .map(|r| (r.num, r.target.as_str()))
        .collect();
    assert_eq!(
        table,
        [
            (1, "active-workers"),
            (2, "workers"),
            (3, "worker"),
            (4, "active-workers")
        ]
    );
    assert_eq!(doc.flare.sources.len(), 1);
    assert!(doc.flare.sources[0].what.contains("50ms"));
    let mode = std::fs::metadata(ctl)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777);
    assert_eq!(mode.unwrap(), 0o600);

    // Counters match what we raise through control.
    for _ in 0..5 {
        assert_eq!(cmd("raise 2").unwrap(), "raised signal 2");
    }
    let doc = until(&stats, "5 x signal 2 in every worker", |d| {
        (1..=4).all(|w| handled(d, w, 2) == 5)
    });
    let sig2 = doc
        .flare
        .signals
        .iter()
        .find(|s| s.num == 2)
        .expect("signal 2");
    assert_eq!((sig2.raised, sig2.tally.delivered), (5, 20));
    assert_eq!(
        doc.flare.counters.raised,
        doc.flare.counters.routed + doc.flare.counters.unrouted
    );

    // Pause worker 2: active-workers (and the timer) skip it; others not.
    assert_eq!(cmd("pause worker2").unwrap(), "worker2 paused");
    let before = fetch(&stats, T).unwrap();
    assert_eq!(worker(&before, 2).status, "pause");
    for _ in 0..10 {
        cmd("raise 1").unwrap();
    }
    let after = until(&stats, "10 x signal 1 in worker 1", |d| {
        handled(d, 1, 1) == handled(&before, 1, 1) + 10
    });
    let after = until(&stats, "timer firings for the others", |d| {
        handled(d, 3, 4) >= handled(&after, 3, 4) + 5
    });
    assert_eq!(
        handled(&after, 2, 1),
        handled(&before, 2, 1),
        "paused: no active-workers"
    );
    assert_eq!(
        handled(&after, 2, 4),
        handled(&before, 2, 4),
        "paused: the timer skipped it too"
    );
    // Resume: it gets them again.
    assert_eq!(cmd("resume worker2").unwrap(), "worker2 resumed");
    cmd("raise 1").unwrap();
    until(&stats, "worker 2 runs signal 1 again", |d| {
        handled(d, 2, 1) == handled(&after, 2, 1) + 1
    });

    // Cheap worker 3: stopped, not respawned; skipped by `workers`.
    let w3 = worker(&fetch(&stats, T).unwrap(), 3).clone();
    assert!(cmd("cheap worker3").unwrap().starts_with("worker3 cheaped"));
    let doc = until(&stats, "worker 3 stopped", |d| worker(d, 3).pid == 0);
    assert_eq!(worker(&doc, 3).state, "cheaped");
    assert_eq!(
        worker(&doc, 3).respawn_count,
        w3.respawn_count,
        "not respawned"
    );
    let two = handled(&doc, 3, 2);
    cmd("raise 2").unwrap();
    until(&stats, "worker 1 runs it", |d| handled(d, 1, 2) == 6);
    // Uncheap: it comes back and gets signals again.
    assert!(
        cmd("uncheap worker3")
            .unwrap()
            .starts_with("worker3 uncheaped")
    );
    let doc = until(&stats, "worker 3 back", |d| {
        worker(d, 3).pid > 0 && worker(d, 3).state == "running"
    });
    assert_ne!(worker(&doc, 3).pid, w3.pid);
    assert_eq!(handled(&doc, 3, 2), two, "nothing piled up while cheaped");
    cmd("raise 2").unwrap();
    until(&stats, "worker 3 runs signal 2 again", |d| {
        handled(d, 3, 2) == two + 1
    });

    // Bad commands: an error line, and the endpoint keeps working.
    for bad in ["fly", "pause mule1", "pause worker9", "raise 300", "cheap"] {
        let e = cmd(bad).unwrap_err().to_string();
        assert!(e.starts_with("control command refused"), "{bad}: {e}");
    }
    assert!(cmd("help").unwrap().contains("reload"));

    // Reload: every child restarted, one at a time.
    let pids: Vec<u32> = fetch(&stats, T)
        .unwrap()
        .workers
        .iter()
        .map(|w| w.pid)
        .collect();
    assert!(cmd("reload").unwrap().starts_with("reloading 5 processes"));
    until(&stats, "every worker restarted", |d| {
        d.workers
            .iter()
            .zip(&pids)
            .all(|(w, old)| w.pid > 0 && w.pid != *old)
    });

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(s.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let r = s.finish();
    assert_eq!(r.counter("dropped"), 0);
    assert!(
        !std::path::Path::new(ctl).exists(),
        "the control socket is removed at exit"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
