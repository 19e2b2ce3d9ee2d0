//! `flare top` and uwsgitop, in a real terminal (tmux), against a running
//! demo master.

mod common;

use common::{Tmux, demo_with_stats, free_port, uwsgitop};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_flare")
}

#[test]
fn flare_top_shows_a_row_for_every_process_and_quits_on_q() {
    let addr = format!("127.0.0.1:{}", free_port());
    let demo = demo_with_stats(&addr);
    let top = Tmux::start(
        "top",
        140,
        30,
        &format!("{} top {addr} --interval 200", bin()),
    );
    let names = [
        "worker1", "worker2", "worker3", "worker4", "mule1", "mule2", "spooler1",
    ];
    let row_ok = |screen: &str, name: &str| {
        screen.lines().any(|l| {
            let mut f = l.split_whitespace();
            f.next() == Some(name)
                && f.next()
                    .is_some_and(|pid| pid.parse::<u32>().is_ok_and(|p| p > 0))
        })
    };
    let screen = top.wait_screen("a row with a pid for every process", |s| {
        names.iter().all(|n| row_ok(s, n))
    });
    assert!(screen.contains("signals/s"), "{screen}");
    // Sorting by rate changes the footer.
    top.keys("r");
    top.wait_screen("sorted by rate", |s| s.contains("(now: rate)"));
    // The master goes away: a clear message, and top stays up.
    let (status, _) = demo.interrupt();
    assert!(status.success());
    top.wait_screen("the master is gone", |s| {
        s.contains(&format!("cannot talk to the stats endpoint at {addr}"))
            && s.contains("Connection refused")
    });
    top.keys("q");
    assert_eq!(top.exit_code(), 0);
}

#[test]
fn uwsgitop_unchanged_shows_the_workers_of_a_flare_master() {
    let uwsgitop = uwsgitop();
    let addr = format!("127.0.0.1:{}", free_port());
    let demo = demo_with_stats(&addr);
    let doc = flare::stats::fetch(&addr, std::time::Duration::from_secs(5)).unwrap();
    let pids: Vec<String> = doc.workers.iter().map(|w| w.pid.to_string()).collect();
    assert_eq!(pids.len(), 4);
    let top = Tmux::start(
        "uwsgitop",
        160,
        30,
        &format!("{} {addr}", uwsgitop.display()),
    );
    let screen = top.wait_screen("uwsgitop's worker rows", |s| {
        s.contains("WID")
            && pids
                .iter()
                .all(|pid| s.lines().any(|l| l.split_whitespace().nth(2) == Some(pid)))
    });
    assert!(
        screen.contains("flare 0.1.0"),
        "the version header: {screen}"
    );
    top.keys("q");
    assert_eq!(top.exit_code(), 0);
    drop(demo);
}
