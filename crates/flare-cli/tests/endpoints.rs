//! `flare stats` and `flare ctl` say what went wrong when the endpoint
//! cannot be used: permission denied, nothing answered, garbage answered.
//! The endpoints here are Unix sockets the test owns.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;

use common::flare;

/// A fresh directory anyone can enter, for one socket.
fn socket_path(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "flare-endpoints-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    dir.join(name)
}

/// Runs `flare ARGS...` (through `wrap` when given): exit code and stderr.
fn run(wrap: &[&str], args: &[&str]) -> (i32, String) {
    let mut cmd = match wrap.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(env!("CARGO_BIN_EXE_flare"));
            c
        }
        None => flare(),
    };
    let out = cmd.args(args).output().expect("run flare");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A socket that, for each of `answers`, takes one connection, reads what
/// the client sends (a line, or nothing), writes the answer and closes.
fn answering(answers: &'static [&'static [u8]]) -> (String, JoinHandle<()>) {
    let path = socket_path("endpoint.sock");
    let l = UnixListener::bind(&path).expect("bind");
    let t = std::thread::spawn(move || {
        for answer in answers {
            let (mut s, _) = l.accept().expect("accept");
            s.set_read_timeout(Some(std::time::Duration::from_millis(200)))
                .expect("timeout");
            let mut got = [0u8; 256];
            // A control client sends its command first; a stats client
            // sends nothing (the read times out).
            let _ = s.read(&mut got);
            s.write_all(answer).expect("answer");
        }
    });
    (path.display().to_string(), t)
}

/// The wrapper that runs a command as an unprivileged user, when the test
/// runs as root (root is never denied a socket); nothing otherwise.
fn unprivileged() -> Vec<&'static str> {
    if nix::unistd::geteuid().is_root() {
        vec![
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ]
    } else {
        Vec::new()
    }
}

#[test]
fn permission_denied_is_said_for_stats_and_ctl() {
    let path = socket_path("denied.sock");
    let _l = UnixListener::bind(&path).expect("bind");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).expect("chmod");
    let addr = path.display().to_string();
    let wrap = unprivileged();
    for args in [vec!["stats", &addr], vec!["ctl", &addr, "help"]] {
        let (code, err) = run(&wrap, &args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(
            err.to_lowercase().contains("permission denied"),
            "{args:?}: {err}"
        );
        let which = if args[0] == "stats" {
            "stats"
        } else {
            "control"
        };
        assert!(
            err.contains(&format!("the {which} endpoint at {addr}")),
            "{args:?}: {err}"
        );
        assert!(
            !err.contains("remote node") && !err.contains("master channel"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn no_answer_and_garbage_are_said_for_stats() {
    let (addr, t) = answering(&[b"", b"garbage\n", b"{\"version\": 7}"]);
    let (code, err) = run(&[], &["stats", &addr]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("sent nothing"), "{err}");
    let (code, err) = run(&[], &["stats", &addr]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("not JSON") && err.contains("\"garbage\\n\""),
        "{err}"
    );
    let (code, err) = run(&[], &["stats", &addr]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("JSON that is not a flare stats document"),
        "{err}"
    );
    assert!(!err.contains("master channel"), "{err}");
    t.join().expect("server");
}

#[test]
fn no_answer_and_garbage_are_said_for_ctl() {
    let (addr, t) = answering(&[b"", b"bonjour\n"]);
    let (code, err) = run(&[], &["ctl", &addr, "help"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("sent nothing"), "{err}");
    assert!(!err.contains("master channel"), "{err}");
    let (code, err) = run(&[], &["ctl", &addr, "help"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("answered neither `ok ...` nor `error: ...`: \"bonjour\""),
        "{err}"
    );
    t.join().expect("server");
}

#[test]
fn flare_top_says_permission_denied_and_keeps_trying() {
    let path = socket_path("top.sock");
    let _l = UnixListener::bind(&path).expect("bind");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).expect("chmod");
    let addr = path.display().to_string();
    let command = [
        unprivileged(),
        vec![
            env!("CARGO_BIN_EXE_flare"),
            "top",
            &addr,
            "--interval",
            "200",
        ],
    ]
    .concat()
    .join(" ");
    let top = common::Tmux::start("top-denied", 200, 20, &command);
    let screen = top.wait_screen("the permission error", |s| {
        s.contains(&format!("cannot talk to the stats endpoint at {addr}"))
            && s.to_lowercase().contains("permission denied")
    });
    assert!(screen.contains("retrying every 200 ms"), "{screen}");
    top.keys("q");
    assert_eq!(top.exit_code(), 0);
}
