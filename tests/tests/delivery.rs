//! Delivery guarantees with real processes: nothing lost under crashes,
//! poison signals dead-lettered, handler timeouts, big bursts.

mod common;

use common::{run, start};

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("flare-dlv-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn signal_field(r: &common::Run, num: u64, field: &str) -> u64 {
    r.summary["signals"]
        .as_array()
        .expect("signals")
        .iter()
        .find(|s| s["num"] == num)
        .map_or(0, |s| s[field].as_u64().expect(field))
}

fn tally(r: &common::Run, role: &str, id: u64, field: &str) -> u64 {
    r.summary["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["proc"]["role"] == role && p["proc"]["id"] == id)
        .map(|p| p["tally"][field].as_u64().expect(field))
        .unwrap()
}

#[test]
fn sigkill_with_10000_queued_for_worker2_loses_none() {
    let dir = temp_dir("kill");
    let mut s = start(&["kill-queued", dir.to_str().unwrap()]);
    let victim: i32 = s.wait_fact("victim").parse().unwrap();
    assert_eq!(s.wait_fact("sent"), "10000");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let r = s.finish();
    assert_eq!(r.field("worker", 2, "respawns"), 1);
    assert_eq!(
        r.handled("worker", 2, 1),
        10_000,
        "every one ran in worker 2"
    );
    assert_eq!(r.handled("worker", 1, 1), 0);
    assert_eq!(tally(&r, "worker", 2, "handled"), 10_000);
    assert!(r.counter("redelivered") >= 1);
    assert_eq!(r.counter("dropped"), 0);
    assert_eq!(r.counter("dead_lettered"), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_handler_that_always_aborts_is_dead_lettered_and_others_flow() {
    let r = run(&["abort-handler"]);
    // max_attempts 3: three deliveries, three crashes, then given up.
    assert_eq!(signal_field(&r, 1, "dead_lettered"), 1);
    assert_eq!(
        r.field("worker", 1, "respawns"),
        3,
        "it stopped crash-looping"
    );
    assert_eq!(tally(&r, "worker", 1, "dead_lettered"), 1);
    // Signal 2 went to both workers all along: none of it was given up,
    // even the deliveries queued behind the poison one.
    let sent: u64 = r.fact("sent_2").parse().unwrap();
    assert_eq!(signal_field(&r, 2, "dead_lettered"), 0);
    assert_eq!(signal_field(&r, 2, "handled"), 2 * sent);
    assert_eq!(r.handled("worker", 2, 2), sent);
    assert_eq!(r.counter("pending_at_exit"), 0);
}

#[test]
fn a_handler_past_its_harakiri_is_killed_and_the_pool_carries_on() {
    let dir = temp_dir("harakiri");
    let r = run(&["harakiri", dir.to_str().unwrap()]);
    let sleeper: u64 = r.fact("sleeper").parse().unwrap();
    assert_eq!(r.counter("timeouts"), 1);
    assert_eq!(r.field("worker", sleeper, "timeouts"), 1);
    assert_eq!(r.field("worker", sleeper, "respawns"), 1);
    // All 101 handled, the interrupted one again elsewhere or after respawn.
    assert_eq!(signal_field(&r, 1, "handled"), 101);
    let runs: u64 = (1..=4).map(|w| r.handled("worker", w, 1)).sum();
    assert_eq!(
        runs, 101,
        "the interrupted run never completed; its retry did"
    );
    assert_eq!(r.counter("dead_lettered"), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_burst_of_1000000_to_workers_runs_4000000_handlers_and_drops_none() {
    let r = run(&["burst", "1000000"]);
    for w in 1..=4 {
        assert_eq!(r.handled("worker", w, 1), 1_000_000, "worker {w}");
    }
    assert_eq!(r.counter("handled"), 4_000_000);
    assert_eq!(r.counter("dropped"), 0);
    eprintln!(
        "1,000,000 x 4 workers: master peak RSS {} KiB",
        r.summary["master_max_rss_kib"]
    );
}
