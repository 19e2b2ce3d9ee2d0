//! The core runtime, checked with real processes: each test starts one
//! scenario process (tests/src/bin/flare-scenario.rs) that forks a group.

mod common;

use std::collections::BTreeSet;

use common::{Run, run, start};

const WORKERS: [&str; 4] = ["worker1", "worker2", "worker3", "worker4"];
const MULES: [&str; 2] = ["mule1", "mule2"];

/// Exactly these processes handled `num`, this many times each.
fn exactly(r: &Run, num: u8, want: &[(&str, u64)]) {
    for (name, got) in r.spread(num) {
        let expected = want.iter().find(|(n, _)| *n == name).map_or(0, |w| w.1);
        assert_eq!(got, expected, "signal {num} in {name}: {:?}", r.spread(num));
    }
}

/// Members of `pool` handled `num` `total` times between them; nobody else
/// handled it at all.
fn pooled(r: &Run, num: u8, pool: &[&str], total: u64) {
    let spread = r.spread(num);
    let sum: u64 = spread
        .iter()
        .filter(|(n, _)| pool.contains(&n.as_str()))
        .map(|(_, c)| c)
        .sum();
    assert_eq!(sum, total, "signal {num} across {pool:?}: {spread:?}");
    for (name, got) in &spread {
        if !pool.contains(&name.as_str()) {
            assert_eq!(*got, 0, "signal {num} leaked to {name}: {spread:?}");
        }
    }
}

#[test]
fn each_target_reaches_exactly_the_right_processes() {
    let k = 40;
    let r = run(&["targets", &k.to_string()]);
    let each = |names: &[&'static str]| names.iter().map(|n| (*n, k)).collect::<Vec<_>>();
    exactly(&r, 1, &each(&WORKERS)); // workers
    pooled(&r, 2, &WORKERS, k); // worker
    exactly(&r, 3, &[("worker3", k)]); // worker3
    exactly(&r, 4, &each(&WORKERS)); // active-workers
    exactly(&r, 5, &each(&MULES)); // mules
    pooled(&r, 6, &MULES, k); // mule
    exactly(&r, 7, &[("mule2", k)]); // Mule(2)
    exactly(&r, 8, &[("spooler1", k)]); // spooler
    pooled(&r, 9, &MULES, k); // farm1 = reports (mules 1, 2)
    exactly(&r, 10, &[("mule2", k)]); // farm_solo (mule 2 only)
    pooled(&r, 11, &WORKERS, k); // worker0
    pooled(&r, 12, &MULES, k); // mule0
    pooled(&r, 42, &WORKERS, k); // unregistered: first available worker
    assert_eq!(r.counter("raised"), 13 * k);
    assert_eq!(r.counter("unrouted"), 0);
    assert_eq!(r.counter("dropped"), 0);
    assert_eq!(r.counter("delivered"), r.counter("handled"));
    assert_eq!(
        r.counter("delivered"),
        k * (4 + 1 + 1 + 4 + 2 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1)
    );
}

#[test]
fn a_handler_registered_in_a_worker_runs_only_there() {
    let k = 50;
    let r = run(&["runtime-registration", &k.to_string()]);
    // Target `workers`, raised 2k times by worker 1 and mule 1: only
    // worker 1 holds the handler, so only worker 1 runs it.
    exactly(&r, 20, &[("worker1", 2 * k)]);
    assert_eq!(r.fact("w1_registered"), "true");
    let conflict = r.fact("w2_conflict");
    assert!(
        conflict.contains("registered by worker1") && conflict.contains("`workers`"),
        "{conflict}"
    );
    assert_eq!(r.fact("w1_unrunnable"), "unrunnable");
    assert_eq!(r.fact("w1_invalid"), "invalid-target");
    let master = r.fact("w1_conflict_master");
    assert!(master.contains("by the master"), "{master}");
    assert_eq!(r.fact("w1_callback"), "20 true");
    // Inherited from the master plus its own; refused ones left no trace.
    assert_eq!(
        r.fact("w1_registry"),
        "20:workers,30:mule1,31:workers,32:mule1"
    );
    assert_eq!(r.fact("w2_registry"), "30:mule1,31:workers,32:mule1");
}

#[test]
fn master_handlers_survive_sigkill_and_respawn() {
    let dir = std::env::temp_dir().join(format!("flare-respawn-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let k = 20;
    let mut s = start(&["respawn", dir.to_str().unwrap(), &k.to_string()]);
    let victim: i32 = s.wait_fact("victim_pid").parse().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("SIGKILL worker 2");
    let r = s.finish();
    let respawned: i32 = r.fact("respawned_pid").parse().unwrap();
    assert_ne!(respawned, victim);
    assert_eq!(r.field("worker", 2, "respawns"), 1);
    exactly(&r, 1, &[("worker2", k)]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn wait_returns_after_the_handler_and_last_received_agrees() {
    let r = run(&["wait"]);
    assert_eq!(r.fact("last_before"), "None");
    assert_eq!(r.fact("waited"), "5");
    assert_eq!(r.fact("handler_ran_before_wait_returned"), "true");
    assert_eq!(r.fact("waited_origin"), "mule1");
    assert_eq!(r.fact("last_after"), "5");
}

#[test]
fn available_numbers_run_out_after_256() {
    let r = run(&["available"]);
    assert_eq!(r.fact("first"), "0");
    assert_eq!(r.fact("second"), "1");
    assert_eq!(r.fact("taken"), "256");
    let after = r.fact("after");
    assert!(after.contains("all 256"), "{after}");
}

#[test]
fn auto_from_four_workers_never_hands_out_a_number_twice() {
    let r = run(&["auto-race"]);
    let lists = r.facts("auto");
    assert_eq!(lists.len(), 4);
    let mut all = BTreeSet::new();
    for list in &lists {
        let nums: Vec<u8> = list.split(',').map(|n| n.parse().unwrap()).collect();
        assert_eq!(nums.len(), 60);
        for n in nums {
            assert!(all.insert(n), "{n} handed out twice: {lists:?}");
            assert_ne!(n, 255, "255 is registered in the master");
        }
    }
    assert_eq!(all.len(), 240);
}

#[test]
fn a_burst_of_100000_to_workers_runs_400000_handlers() {
    let r = run(&["burst", "100000"]);
    exactly(&r, 1, &WORKERS.map(|w| (w, 100_000)));
    assert_eq!(r.counter("raised"), 100_000);
    assert_eq!(r.counter("delivered"), 400_000);
    assert_eq!(r.counter("handled"), 400_000);
    assert_eq!(r.counter("dropped"), 0);
}

/// Sends a Unix signal to a process (or, negative, a process group).
fn unix_signal(pid: i32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).expect("kill");
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("flare-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn sigterm_drains_queued_signals_then_exits_zero() {
    let mut s = start(&["drain", "20000"]);
    assert_eq!(s.wait_fact("sent"), "20000");
    unix_signal(s.pid() as i32, nix::sys::signal::Signal::SIGTERM);
    let r = s.finish();
    exactly(&r, 1, &[("worker1", 20_000), ("worker2", 20_000)]);
    assert_eq!(r.counter("pending_at_exit"), 0);
    assert_eq!(r.field("worker", 1, "respawns"), 0);
}

#[test]
fn ctrl_c_to_the_whole_process_group_is_a_graceful_shutdown() {
    // As in a terminal: SIGINT reaches the master and every child at once.
    let mut s = common::start_in_own_group(&["drain", "20000"]);
    assert_eq!(s.wait_fact("sent"), "20000");
    unix_signal(-(s.pid() as i32), nix::sys::signal::Signal::SIGINT);
    let r = s.finish();
    exactly(&r, 1, &[("worker1", 20_000), ("worker2", 20_000)]);
    assert_eq!(
        r.field("worker", 2, "respawns"),
        0,
        "children ignore SIGINT"
    );
}

#[test]
fn a_child_is_respawned_after_return_panic_and_exit_with_growing_backoff() {
    let dir = temp_dir("lifecycle");
    let r = run(&["lifecycle", dir.to_str().unwrap()]);
    assert_eq!(r.fact("incarnation"), "3");
    assert_eq!(r.field("worker", 1, "respawns"), 3);
    let t: Vec<u128> = (0..4)
        .map(|i| r.fact(&format!("t{i}")).parse().unwrap())
        .collect();
    // Quick deaths back off 100 ms, 200 ms, 400 ms (lower bounds only).
    assert!(t[1] - t[0] >= 100, "{t:?}");
    assert!(t[2] - t[1] >= 200, "{t:?}");
    assert!(t[3] - t[2] >= 400, "{t:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn try_send_reports_a_full_queue_and_nothing_is_dropped() {
    let mut s = start(&["queue-full"]);
    let sent: u64 = s.wait_fact("queue_full_after").parse().unwrap();
    assert!(sent > 0);
    unix_signal(s.pid() as i32, nix::sys::signal::Signal::SIGTERM);
    let r = s.finish();
    assert_eq!(
        r.counter("dropped"),
        0,
        "the sender was paused, not dropped"
    );
    assert!(r.counter("raised") <= sent);
    assert!(r.counter("pending_at_exit") > 0);
}

#[test]
fn send_waits_instead_of_dropping_with_tiny_queues() {
    let r = run(&["tight-burst", "100000"]);
    exactly(&r, 1, &WORKERS.map(|w| (w, 100_000)));
    assert_eq!(r.counter("dropped"), 0);
}

#[test]
fn a_member_busy_in_a_long_handler_does_not_hold_up_the_pool() {
    let dir = temp_dir("busy");
    let n = 200u64;
    let r = run(&["busy-pool", dir.to_str().unwrap(), &n.to_string()]);
    let busy: u64 = r.fact("busy").parse().unwrap();
    assert_eq!(
        r.handled("worker", busy, 2),
        0,
        "stuck in its first handler"
    );
    let others: u64 = (1..=4)
        .filter(|&w| w != busy)
        .map(|w| r.handled("worker", w, 2))
        .sum();
    // The busy worker holds at most its prefetch credit (4); the rest of
    // the n + 1 signals went to the others.
    assert!(others >= n + 1 - 4, "others handled {others}");
    assert_eq!(others + r.counter("pending_at_exit"), n + 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn past_the_queue_bound_signals_are_dropped_and_counted() {
    let n = 100_000u64;
    let r = run(&["drops", &n.to_string()]);
    assert_eq!(r.counter("raised"), n + 1);
    assert!(r.counter("dropped") > 0);
    assert_eq!(r.counter("delivered") + r.counter("dropped"), n + 1);
    assert_eq!(r.counter("handled"), r.counter("delivered"));
    assert_eq!(r.handled("worker", 2, 1) + 1, r.counter("delivered"));
}

#[test]
fn ping_pong_runs_with_and_without_busy_polling() {
    for busy_us in ["0", "50", "2000"] {
        let n = 1_000u64;
        let r = run(&["ping-pong", &n.to_string(), busy_us]);
        assert!(r.facts("lost_round").is_empty(), "busy_poll {busy_us} µs");
        assert_eq!(r.fact("rounds"), n.to_string(), "busy_poll {busy_us} µs");
        assert_eq!(r.handled("worker", 1, 10), n);
        assert_eq!(r.handled("mule", 1, 11), n);
        assert_eq!(r.counter("pending_at_exit"), 0);
        assert_eq!(r.counter("dropped"), 0);
    }
}
