//! Scenarios at the fork and exit boundaries, one per process:
//! `flare-boundaries NAME [ARGS]`. Like flare-scenario, it prints
//! `FACT key=value` lines and `SUMMARY <json>` at the end.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::Duration;

use flare::{ForkHooks, Master, Signal};
use flare_tests::{finish, init_log};
use nix::sys::signal::{SigSet, Signal as Sig};

fn fact(key: &str, value: impl std::fmt::Display) {
    println!("FACT {key}={value}");
    let _ = std::io::stdout().flush();
}

fn main() {
    init_log();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| PathBuf::from(args.get(i).map(String::as_str).unwrap_or("."));
    let result = match args.first().map(String::as_str).unwrap_or("") {
        "hook-panic" => hook_panic(&arg(1)),
        "thread-in-hook" => thread_in_hook(),
        "atexit" => atexit(&arg(1)),
        "grandchild" => grandchild(),
        other => {
            eprintln!(
                "unknown scenario `{other}`; scenarios: hook-panic DIR, thread-in-hook, \
                 atexit DIR, grandchild"
            );
            std::process::exit(2);
        }
    };
    finish(result);
}

type Outcome = Result<serde_json::Value, flare::Error>;

fn summary_json(s: &flare::Summary) -> serde_json::Value {
    serde_json::to_value(s).unwrap_or_default()
}

static FORKS: AtomicU32 = AtomicU32::new(0);

fn count_fork() {
    FORKS.fetch_add(1, SeqCst);
}

fn nothing() {}

fn panic_in_first_child() {
    // Only the first child: its respawn must come up normally.
    if FORKS.load(SeqCst) == 1 {
        panic!("a child fork hook panics");
    }
}

/// The child fork hook panics in the first child. The panic must stop in
/// the child (it exits, is respawned), never unwind into the master's
/// frames copied into it: that would drop the master's listeners there
/// (unlinking the live master's control socket) and return from `run()`.
fn hook_panic(dir: &Path) -> Outcome {
    let control = dir.join("control.sock");
    let path = control.clone();
    let master = Master::builder()
        .workers(1)
        .control(control.to_string_lossy().into_owned())
        .fork_hooks(ForkHooks {
            before: count_fork,
            parent: nothing,
            child: panic_in_first_child,
        })
        .worker_entry(move |me| {
            fact("worker_up", me.pid);
            fact("control_socket_exists", path.exists());
            let _ = flare::stop();
            flare::serve_forever();
        })
        .build()?;
    let summary = master.run();
    // Only the master may get here.
    fact("run_returned_in", std::process::id());
    let summary = summary?;
    fact("forks", FORKS.load(SeqCst));
    Ok(summary_json(&summary))
}

fn start_a_thread_once() {
    if FORKS.load(SeqCst) == 1 {
        std::thread::spawn(|| {
            loop {
                std::thread::park();
            }
        });
    }
}

/// The master's parent fork hook starts a thread after the first fork:
/// the next fork must be refused (the check is made before every fork),
/// and the failed `run()` must end the child it forked and give the
/// signal mask back.
fn thread_in_hook() -> Outcome {
    let master = Master::builder()
        .workers(3)
        .kill_timeout(Duration::from_secs(10))
        .fork_hooks(ForkHooks {
            before: count_fork,
            parent: start_a_thread_once,
            child: nothing,
        })
        .worker_entry(|me| {
            fact("worker_up", me.pid);
            if me.id == 3 {
                // Today's behaviour: every fork goes through; end the run.
                let _ = flare::stop();
            }
            flare::serve_forever();
        })
        .build()?;
    match master.run() {
        Ok(s) => {
            fact("run", "ok");
            Ok(summary_json(&s))
        }
        Err(e) => {
            fact("run_error", e);
            fact("forks", FORKS.load(SeqCst));
            fact("children_left", own_children().len());
            let mask = SigSet::thread_get_mask().map_err(|e| flare::Error::io("mask", e))?;
            fact("sigchld_blocked", mask.contains(Sig::SIGCHLD));
            fact("sigterm_blocked", mask.contains(Sig::SIGTERM));
            Ok(serde_json::json!({}))
        }
    }
}

/// Pids whose parent is this process (zombies included), from /proc.
fn own_children() -> Vec<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| {
                let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                let rest = &stat[stat.rfind(')')? + 1..];
                let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
                (ppid == me).then_some(pid)
            })
            .collect()
        })
        .unwrap_or_default()
}

static ATEXIT_FILE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

extern "C" fn at_exit() {
    let Some(path) = ATEXIT_FILE.get() else {
        return;
    };
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{}", std::process::id());
    }
}

/// The master registers an `atexit` handler that appends its pid to a
/// file. Children inherit the registration with the master's memory, but
/// must leave with `_exit`: only the master's pid may be written, though a
/// worker's entry returns (it exits and is respawned) before the stop.
fn atexit(dir: &Path) -> Outcome {
    let _ = ATEXIT_FILE.set(dir.join("atexit"));
    // SAFETY: registering a plain function with atexit(3).
    let rc = unsafe { nix::libc::atexit(at_exit) };
    assert_eq!(rc, 0, "atexit");
    let first_life = dir.join("first-life-done");
    let master = Master::builder()
        .workers(1)
        .worker_entry(move |me| {
            fact("worker_pid", me.pid);
            if !first_life.exists() {
                let _ = std::fs::write(&first_life, b"");
                // Return: the child exits, and is respawned.
                return;
            }
            let _ = flare::stop();
            flare::serve_forever();
        })
        .build()?;
    let summary = master.run()?;
    fact("master_pid", std::process::id());
    Ok(summary_json(&summary))
}

/// A handler in worker 1 forks: two `sleep 1000` through
/// `std::process::Command` (one ignores SIGTERM: it needs the SIGKILL after
/// the kill timeout), and a raw fork whose process asks `whoami()` and
/// tries `send()`. None may act as the worker; the sleepers must be gone
/// once the group has shut down.
fn grandchild() -> Outcome {
    let master = Master::builder()
        .workers(1)
        .kill_timeout(Duration::from_secs(1))
        .worker_entry(|me| {
            fact("worker_pid", me.pid);
            if let Err(e) = Signal::new(1).send() {
                fact("worker_send_error", e);
            }
            flare::serve_forever();
        })
        .build()?;
    Signal::new(1).register_handler("worker1", |_| {
        for script in ["exec sleep 1000", "trap '' TERM; exec sleep 1000"] {
            // Not on the scenario's stdout: a survivor would hold it open.
            let sleeper = std::process::Command::new("sh")
                .args(["-c", script])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn();
            match sleeper {
                Ok(child) => fact("sleeper_pid", child.id()),
                Err(e) => fact("sleeper_error", e),
            }
        }
        // SAFETY: the forked process only formats, writes and _exits.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                match flare::whoami() {
                    Ok(me) => fact("grandchild_whoami", format!("{}{}", me.role, me.id)),
                    Err(e) => fact("grandchild_whoami_error", e),
                }
                match Signal::new(2).send() {
                    Ok(()) => fact("grandchild_send", "sent"),
                    Err(e) => fact("grandchild_send_error", e),
                }
                // SAFETY: ends the forked process at once.
                unsafe { nix::libc::_exit(0) }
            }
            Ok(nix::unistd::ForkResult::Parent { child }) => {
                let _ = nix::sys::wait::waitpid(child, None);
                fact("grandchild_done", child);
            }
            Err(e) => fact("fork_error", e),
        }
        let _ = flare::stop();
    })?;
    let summary = master.run()?;
    Ok(summary_json(&summary))
}
