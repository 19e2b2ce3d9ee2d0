//! Time limits set from code, with real processes (scenarios in
//! tests/src/bin/flare-limits.rs).

mod common;

#[test]
fn a_user_harakiri_sends_the_stack_signal_then_kills_and_a_cleared_one_does_not() {
    let dir = std::env::temp_dir().join(format!("flare-limits-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut s = common::start_exe(
        env!("CARGO_BIN_EXE_flare-limits"),
        &["user", dir.to_str().unwrap()],
    );
    assert_eq!(s.wait_fact("in_master"), "true");
    assert_eq!(s.wait_fact("hanging"), "yes");
    assert_eq!(s.wait_fact("dump"), "received");
    assert_eq!(s.wait_fact("respawned"), "yes");
    let r = s.finish();
    let pos = |p: &str| r.lines.iter().position(|l| l.starts_with(p)).unwrap();
    // The stack dump signal came before the kill (which the respawn follows).
    assert!(pos("FACT hanging=") < pos("FACT dump=") && pos("FACT dump=") < pos("FACT respawned="));
    assert_eq!(r.counter("timeouts"), 1, "{}", r.summary);
    let _ = std::fs::remove_dir_all(&dir);
}
