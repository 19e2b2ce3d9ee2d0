//! `flare demo`, run as a user runs it.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc::channel;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(60);

#[test]
fn the_demo_shows_a_delivery_for_every_target_kind_and_exits_zero() {
    let out = Command::new(env!("CARGO_BIN_EXE_flare"))
        .args(["demo", "--step-ms", "60"])
        .output()
        .expect("run flare demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exit {:?}\n{stdout}", out.status);
    let ran = |target: &str, by: &[&str]| {
        let hit = stdout.lines().any(|l| {
            l.contains(" ran signal ")
                && l.contains(&format!("target {target} "))
                && by.iter().any(|p| l.trim_start().starts_with(p))
        });
        assert!(hit, "no run for target {target} in {by:?}:\n{stdout}");
    };
    let workers = ["worker1", "worker2", "worker3", "worker4"];
    let mules = ["mule1", "mule2"];
    ran("workers", &workers);
    ran("worker", &workers);
    ran("worker3", &["worker3"]);
    ran("active-workers", &workers);
    ran("mules", &mules);
    ran("mule", &mules);
    ran("mule2", &["mule2"]);
    ran("farm_reports", &mules);
    ran("farm1", &mules);
    ran("spooler", &["spooler1"]);
    // Registered by worker 2 at run time for `workers`: runs only there.
    let runtime: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("ran signal 20"))
        .collect();
    assert_eq!(runtime.len(), 1, "{stdout}");
    assert!(runtime[0].trim_start().starts_with("worker2"), "{stdout}");
    assert!(
        stdout.contains("signal 99 (unregistered) was recorded by worker"),
        "{stdout}"
    );
    assert!(stdout.contains("pending at exit 0"), "{stdout}");
    for p in workers.iter().chain(&mules).chain(&["spooler1"]) {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(p) && l.split_whitespace().count() == 7),
            "summary row for {p}:\n{stdout}"
        );
    }
}

#[test]
fn ctrl_c_stops_the_demo_at_once_and_gracefully() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flare"))
        .args(["demo", "--step-ms", "300"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start flare demo");
    let pid = child.id() as i32;
    let (tx, rx) = channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    // Wait for the third step, then press Ctrl-C (SIGINT to the group).
    loop {
        let line = rx.recv_timeout(DEADLINE).expect("demo output");
        let third = line.starts_with("[ 3]");
        seen.push(line);
        if third {
            break;
        }
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(-pid),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    while let Ok(line) = rx.recv_timeout(DEADLINE) {
        seen.push(line);
    }
    let status = child.wait().expect("wait");
    let text = seen.join("\n");
    assert!(status.success(), "{status}\n{text}");
    assert!(text.contains("summary:"), "{text}");
    assert!(
        !text.contains("[12]"),
        "stopped before the script ended:\n{text}"
    );
}
