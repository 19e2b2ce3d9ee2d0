//! Mule and farm message scenarios, one per process:
//! `flare-mailbox NAME [ARGS]`. Children report what they saw as
//! `FACT key=value` lines; the test (tests/tests/mailbox.rs) stops the
//! master with SIGTERM once it has seen what it waits for.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use flare::{Error, GetMsg, Inbox, Master, Mule, Signal};
use flare_tests::{fact, finish, init_log};

/// Mule 1 of `full`: set by signal 1's handler.
static RELEASED: (Mutex<bool>, Condvar) = (Mutex::new(false), Condvar::new());
/// Mule 2 of `full`: in its signal-returning `mule_get_msg`, returned, and
/// how many times signal 2's handler ran.
static IN_CALL: AtomicBool = AtomicBool::new(false);
static DONE: AtomicBool = AtomicBool::new(false);
static HANDLED2: AtomicU64 = AtomicU64::new(0);

fn main() {
    init_log();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n = |i: usize, default: u32| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let result = match args.first().map(String::as_str).unwrap_or("") {
        "route" => route(n(1, 300)),
        "full" => full(),
        other => {
            eprintln!("unknown scenario `{other}`; scenarios: route [N], full");
            std::process::exit(2);
        }
    };
    finish(result);
}

/// Reads messages for good, reporting each as `got=TEXT@MULE`.
fn read_forever(me: flare::ProcessInfo) -> ! {
    loop {
        let opts = GetMsg {
            signals: false,
            ..GetMsg::default()
        };
        match flare::mule_get_msg(opts) {
            Ok(Inbox::Message(m)) => {
                fact("got", format!("{}@{}", String::from_utf8_lossy(&m), me.id))
            }
            Ok(other) => fact("unexpected", format!("{other:?}")),
            Err(e) => {
                fact("receive_error", e);
                std::process::exit(1);
            }
        }
    }
}

/// One worker sends N messages each to mule 1, to any mule (id 0) and to
/// the farm of mules 2 and 3, with the blocking sends (the mailboxes hold
/// few, so the worker waits for the mules many times over); then the
/// errors: too large, an unknown mule and farm, a receive in a worker.
fn route(n: u32) -> flare::Result<flare::Summary> {
    let master = Master::builder()
        .workers(1)
        .mules(3)
        .farm("pair", [2, 3])
        .mule_msg_size(1000)
        .worker_entry(move |_| {
            for i in 0..n {
                flare::mule_msg(format!("m1:{i}").as_bytes(), 1).expect("to mule 1");
                flare::mule_msg(format!("any:{i}").as_bytes(), 0).expect("to any mule");
                flare::farm_msg("pair", format!("farm:{i}").as_bytes()).expect("to the farm");
            }
            fact("sent", 3 * n);
            fact(
                "too_large",
                flare::mule_msg(&[0u8; 1001], 1).expect_err("1001 bytes"),
            );
            fact(
                "fits",
                flare::farm_msg("pair", &[b'x'; 1000])
                    .map_or_else(|e| e.to_string(), |()| "ok".into()),
            );
            fact("no_mule", flare::mule_msg(b"x", 4).expect_err("mule 4"));
            fact(
                "no_farm",
                flare::farm_msg("nope", b"x").expect_err("farm nope"),
            );
            fact(
                "worker_receive",
                flare::mule_get_msg(GetMsg::default()).expect_err("not a mule"),
            );
            flare::serve_forever();
        })
        .mule_entry(|me| read_forever(me))
        .build()?;
    master.run()
}

/// Whether thread `tid` of this process sleeps in the kernel (state S).
fn sleeping(tid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('S'))
        })
        .unwrap_or(false)
}

/// Mule 1 reads nothing until signal 1; the worker fills its mailbox with
/// `try_mule_msg` until it reports full, starts a blocking `mule_msg` in a
/// thread, waits until that thread sleeps in the kernel, then raises
/// signal 1. Mule 2 waits in `mule_get_msg(signals)` and returns when a
/// signal handler ran (uWSGI returns None then), and times out.
fn full() -> flare::Result<flare::Summary> {
    let master = Master::builder()
        .workers(1)
        .mules(2)
        .worker_entry(|_| {
            let mut queued = 0u32;
            loop {
                match flare::try_mule_msg(format!("early:{queued}").as_bytes(), 1) {
                    Ok(()) => queued += 1,
                    Err(Error::MailboxFull { to }) => {
                        fact("full", format!("{to} after {queued}"));
                        break;
                    }
                    Err(e) => panic!("try_mule_msg: {e}"),
                }
            }
            let (tx, rx) = std::sync::mpsc::channel();
            let blocked = std::thread::spawn(move || {
                tx.send(nix::unistd::gettid().as_raw()).expect("tid");
                flare::mule_msg(b"late", 1).expect("blocking send");
                fact("late_sent", "ok");
            });
            let tid = rx.recv().expect("tid");
            let deadline = Instant::now() + Duration::from_secs(30);
            while !sleeping(tid) {
                assert!(Instant::now() < deadline, "the sender never waited");
                std::thread::yield_now();
            }
            fact("sender", "waiting");
            Signal::new(1).send().expect("release mule 1");
            blocked.join().expect("sender thread");
            flare::serve_forever();
        })
        .mule_entry(|me| {
            if me.id == 1 {
                let (lock, cv) = &RELEASED;
                let mut released = lock.lock().expect("lock");
                while !*released {
                    released = cv.wait(released).expect("wait");
                }
                drop(released);
                fact("reading", "start");
                read_forever(me);
            }
            let t = flare::mule_get_msg(GetMsg {
                timeout: Some(Duration::from_millis(20)),
                ..GetMsg::default()
            });
            fact("mule2_timeout", format!("{t:?}"));
            // A second thread raises signal 2 (for this mule) whenever the
            // main thread sleeps in mule_get_msg, until it has returned.
            let main = nix::unistd::gettid().as_raw();
            std::thread::spawn(move || {
                while !DONE.load(SeqCst) {
                    if IN_CALL.load(SeqCst) && sleeping(main) {
                        let before = HANDLED2.load(SeqCst);
                        Signal::new(2).send().expect("signal 2");
                        while HANDLED2.load(SeqCst) == before {
                            std::thread::yield_now();
                        }
                    }
                    std::thread::yield_now();
                }
            });
            IN_CALL.store(true, SeqCst);
            let got = flare::mule_get_msg(GetMsg::default());
            DONE.store(true, SeqCst);
            fact("mule2_inbox", format!("{got:?}"));
            flare::serve_forever();
        })
        .build()?;
    Signal::new(1).register_handler(Mule(1), |_| {
        let (lock, cv) = &RELEASED;
        *lock.lock().expect("lock") = true;
        cv.notify_all();
    })?;
    Signal::new(2).register_handler(Mule(2), |_| {
        HANDLED2.fetch_add(1, SeqCst);
    })?;
    master.run()
}
