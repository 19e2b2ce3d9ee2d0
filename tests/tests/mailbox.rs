//! Mule and farm messages between real processes: routing, bounds, a
//! sender that waits on a full mailbox, and `mule_get_msg` returning on a
//! signal (scenarios in tests/src/bin/flare-mailbox.rs).

mod common;

use std::collections::BTreeMap;

use common::{Running, start_exe};

fn start(args: &[&str]) -> Running {
    start_exe(env!("CARGO_BIN_EXE_flare-mailbox"), args)
}

fn stop(s: Running) -> common::Run {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(s.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM to the master");
    s.finish()
}

#[test]
fn messages_reach_their_mule_farm_or_any_mule_once_and_bad_ones_are_refused() {
    let n = 300;
    let mut s = start(&["route", &n.to_string()]);
    // Every message arrives exactly once, where it was addressed.
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for _ in 0..3 * n + 1 {
        let got = s.wait_fact("got");
        let (text, mule) = got.rsplit_once('@').expect("TEXT@MULE");
        let before = seen.insert(text.to_string(), mule.to_string());
        assert!(before.is_none(), "{text} arrived twice");
    }
    for i in 0..n {
        assert_eq!(seen[&format!("m1:{i}")], "1", "m1:{i}");
        assert!(["1", "2", "3"].contains(&seen[&format!("any:{i}")].as_str()));
        assert!(
            ["2", "3"].contains(&seen[&format!("farm:{i}")].as_str()),
            "farm:{i}"
        );
    }
    // The largest allowed message (1000 bytes) arrived whole.
    let big = "x".repeat(1000);
    assert!(["2", "3"].contains(&seen[&big].as_str()));
    assert_eq!(s.wait_fact("sent"), (3 * n).to_string());
    let too_large = s.wait_fact("too_large");
    assert!(
        too_large.contains("1001 bytes") && too_large.contains("at most 1000"),
        "{too_large}"
    );
    assert_eq!(s.wait_fact("fits"), "ok");
    let no_mule = s.wait_fact("no_mule");
    assert!(
        no_mule.contains("no mule 4") && no_mule.contains("0..=3") && no_mule.contains("pair"),
        "{no_mule}"
    );
    assert!(s.wait_fact("no_farm").contains("no farm `nope`"));
    assert!(s.wait_fact("worker_receive").contains("only in a mule"));
    stop(s);
}

#[test]
fn a_full_mailbox_makes_the_sender_wait_and_try_report_full() {
    let mut s = start(&["full"]);
    let full = s.wait_fact("full");
    let queued: u32 = full
        .strip_prefix("mule1 after ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{full}"));
    assert!(queued > 0, "{full}");
    assert_eq!(s.wait_fact("sender"), "waiting");
    s.wait_fact("reading");
    // Everything queued before, then the message whose sender waited: none lost.
    for i in 0..queued {
        assert_eq!(s.wait_fact("got"), format!("early:{i}@1"));
    }
    assert_eq!(s.wait_fact("got"), "late@1");
    assert_eq!(s.wait_fact("late_sent"), "ok");
    // mule_get_msg: a timeout, then a return because a signal was handled.
    assert_eq!(s.wait_fact("mule2_timeout"), "Ok(Timeout)");
    assert_eq!(s.wait_fact("mule2_inbox"), "Ok(Signal)");
    let r = stop(s);
    // The sender finished only after mule 1 started reading.
    let pos = |p: &str| r.lines.iter().position(|l| l.starts_with(p)).unwrap();
    assert!(pos("FACT reading=") < pos("FACT late_sent="));
}
