//! Signal sources in a real group: timers, rb timers, cron, file monitors,
//! run-time add/remove, errors, and `unique`.

mod common;

use common::run;
use serde_json::Value;

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("flare-src-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn source(r: &common::Run, id: u64) -> &Value {
    r.summary["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no source {id}: {}", r.summary["sources"]))
}

#[test]
fn a_50ms_timer_fires_18_to_22_times_a_second_in_its_target() {
    let r = run(&["timer"]);
    let times: Vec<u64> = r
        .fact("times")
        .split(',')
        .map(|t| t.parse().unwrap())
        .collect();
    let first = times[0];
    let in_one_second = times.iter().filter(|&&t| t - first < 1_000_000_000).count();
    assert!(
        (18..=22).contains(&in_one_second),
        "{in_one_second} runs in the first second: {times:?}"
    );
    assert_eq!(r.handled("worker", 1, 1), 30);
    assert_eq!(r.handled("worker", 2, 1), 0, "only its target ran it");
}

#[test]
fn an_rb_timer_with_repeat_3_runs_exactly_3_times() {
    let r = run(&["rb-timer"]);
    assert_eq!(r.fact("runs"), "3");
    assert_eq!(r.handled("mule", 1, 2), 3);
    let sources = r.summary["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 1, "gone after its last: {sources:?}");
    assert_eq!(sources[0]["sig"], 3, "only the plain timer is left");
}

#[test]
fn file_monitors_fire_for_new_files_deep_writes_and_coalesce_bursts() {
    let dir = temp_dir("filemon");
    let r = run(&["file-monitor", dir.to_str().unwrap()]);
    assert_eq!(
        r.fact("appeared"),
        "true",
        "a file that did not exist at first"
    );
    // One write is several inotify events (create, modify, close): a
    // leading signal, and a trailing one when they came in two reads.
    let late = r.facts("late_by");
    assert!(
        (1..=2).contains(&late.len()) && late.iter().all(|o| o == "file-monitor#1"),
        "{late:?}"
    );
    assert_eq!(
        r.fact("deep_write"),
        "true",
        "recursive watch on an existing tree"
    );
    assert_eq!(r.handled("mule", 1, 3), late.len() as u64);
    let burst = r.handled("mule", 1, 5);
    // 1000 writes in a row: a leading signal and at most one per 100 ms
    // while they last (a loaded machine makes them last longer), plus the
    // trailing one.
    let burst_ms: u64 = r.fact("burst_ms").parse().unwrap();
    assert!(
        (1..=burst_ms / 100 + 3).contains(&burst) && burst < 500,
        "{burst} signals for a burst of 1000 writes in {burst_ms} ms"
    );
    assert_eq!(source(&r, 3)["fired"], burst);
    assert_eq!(r.fact("after_burst"), "true", "the later timer came back");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_sources_give_clear_errors_and_sources_can_be_removed() {
    let dir = temp_dir("rules");
    let r = run(&["source-rules", dir.to_str().unwrap()]);
    for who in ["master", "child"] {
        let e = r.fact(&format!("{who}_missing"));
        assert!(
            e.contains("neither it nor its parent directory"),
            "{who}: {e}"
        );
    }
    let e = r.fact("master_bad_cron");
    assert!(
        e.contains("cron spec `61 * * * *`") && e.contains("minute 0-59"),
        "{e}"
    );
    let e = r.fact("child_bad_cron");
    assert!(e.contains("hour 24 is out of range"), "{e}");
    assert!(r.fact("master_zero").contains("above zero"));
    let e = r.fact("child_duplicate");
    assert!(e.contains("signal 7 already has this source"), "{e}");
    assert_eq!(
        r.fact("after_removal"),
        "0",
        "no firing after remove_source"
    );
    assert!(r.fact("removed_twice").starts_with("no signal source #"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unique_sources_do_not_pile_up_behind_a_slow_handler() {
    let r = run(&["unique"]);
    let unique: u64 = r.fact("unique_id").parse().unwrap();
    let plain: u64 = r.fact("plain_id").parse().unwrap();
    let u = source(&r, unique);
    let p = source(&r, plain);
    let u_fired = u["fired"].as_u64().unwrap();
    let p_fired = p["fired"].as_u64().unwrap();
    let u_handled = r.handled("worker", 1, 9);
    let p_handled = r.handled("worker", 2, 11);
    assert!(
        u_fired - u_handled <= 1,
        "unique: fired {u_fired}, handled {u_handled}"
    );
    assert!(u["held"].as_u64().unwrap() > 20, "unique held: {u}");
    assert!(
        p_fired - p_handled >= 40,
        "plain: fired {p_fired}, handled {p_handled}"
    );
}

#[test]
fn an_every_minute_cron_fires_in_the_minute_it_is_added() {
    let r = run(&["cron"]);
    assert_eq!(r.facts("cron_origin")[0], "cron#1");
    assert!(r.handled("worker", 1, 12) >= 1);
}

#[test]
fn scheduling_helpers_pick_a_number_register_and_add_the_source() {
    let r = run(&["scheduling"]);
    let cron: u8 = r.fact("cron_signal").parse().unwrap();
    let timer: u8 = r.fact("timer_signal").parse().unwrap();
    assert_eq!(cron, 0, "the first free number, reserved in the master");
    assert_eq!(timer, 1, "the next one, reserved by worker 2 at run time");
    assert!(r.handled("worker", 2, timer) >= 3);
    assert_eq!(
        r.handled("worker", 1, timer),
        0,
        "registered in worker 2 only"
    );
    assert_eq!(r.handled("mule", 1, cron), 1);
}
