//! Multi-process scenarios, one per process: `flare-scenario NAME [ARGS]`.
//!
//! Each scenario builds a master, registers handlers, runs a scripted group
//! and prints `SUMMARY <json>` at the end. Children report what they saw as
//! `FACT key=value` lines. The tests in `tests/tests/` start this binary,
//! so the master is never forked from the (multi-threaded) test harness.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use flare::{Error, Master, Mule, RegistrationError, Signal, Source, Target, TrySendError};
use flare_tests::{fact, init_log};

fn main() {
    init_log();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let name = args.first().map(String::as_str).unwrap_or("");
    let result = match name {
        "targets" => targets(count_arg(&args, 40)),
        "runtime-registration" => runtime_registration(count_arg(&args, 50)),
        "respawn" => respawn(PathBuf::from(&args[1]), count_arg_at(&args, 2, 20)),
        "wait" => wait(),
        "available" => available(),
        "auto-race" => auto_race(),
        "burst" => burst(count_arg(&args, 100_000), false),
        "tight-burst" => burst(count_arg(&args, 100_000), true),
        "drain" => drain(count_arg(&args, 20_000)),
        "lifecycle" => lifecycle(PathBuf::from(&args[1])),
        "queue-full" => queue_full(),
        "busy-pool" => busy_pool(PathBuf::from(&args[1]), count_arg_at(&args, 2, 200)),
        "drops" => drops(count_arg(&args, 100_000)),
        "remote" => remote(&args[1..]),
        "timer" => timer(),
        "rb-timer" => rb_timer(),
        "file-monitor" => file_monitor(PathBuf::from(&args[1])),
        "source-rules" => source_rules(PathBuf::from(&args[1])),
        "unique" => unique(),
        "cron" => cron(),
        "scheduling" => scheduling(),
        "kill-queued" => kill_queued(PathBuf::from(&args[1])),
        "abort-handler" => abort_handler(),
        "harakiri" => harakiri(PathBuf::from(&args[1])),
        "chaos" => chaos(count_arg(&args, 20)),
        "admin" => admin(&args[1]),
        "ping-pong" => ping_pong(count_arg(&args, 2_000), count_arg_at(&args, 2, 50)),
        other => {
            eprintln!(
                "unknown scenario `{other}`; scenarios: targets, runtime-registration, \
                 respawn DIR, wait, available, auto-race, burst [N], tight-burst [N], \
                 drain [N], lifecycle DIR, queue-full, busy-pool DIR [N], drops [N], \
                 remote ADDR MAX_CONNECTIONS TIMEOUT_MS [ALLOWED,...], timer, rb-timer, \
                 file-monitor DIR, source-rules DIR, unique, cron, scheduling, kill-queued DIR, \
                 abort-handler, harakiri DIR, chaos SECONDS, admin CONTROL_PATH, \
                 ping-pong [N] [BUSY_POLL_US]"
            );
            std::process::exit(2);
        }
    };
    match result {
        Ok(summary) => {
            println!(
                "SUMMARY {}",
                serde_json::to_string(&summary).expect("serialize")
            );
        }
        Err(e) => {
            eprintln!("scenario failed: {e}");
            std::process::exit(1);
        }
    }
}

fn count_arg(args: &[String], default: u64) -> u64 {
    count_arg_at(args, 1, default)
}

fn count_arg_at(args: &[String], i: usize, default: u64) -> u64 {
    args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// One signal per target kind, raised `k` times by mule 1; then stop.
/// Unregistered signal 42 goes to the first available worker.
fn targets(k: u64) -> flare::Result<flare::Summary> {
    let master = Master::builder()
        .workers(4)
        .mules(2)
        .farm("reports", [1, 2])
        .farm("solo", [2])
        .spoolers(1)
        .mule_entry(move |me| {
            if me.id == 1 {
                for _ in 0..k {
                    for num in 1..=12 {
                        Signal::new(num).send().expect("send");
                    }
                    Signal::new(42).send().expect("send");
                }
                flare::stop().expect("stop");
            }
            flare::serve_forever();
        })
        .build()?;
    let table: [(u8, Target); 12] = [
        (1, "workers".parse()?),
        (2, "worker".parse()?),
        (3, "worker3".parse()?),
        (4, "active-workers".parse()?),
        (5, "mules".parse()?),
        (6, "mule".parse()?),
        (7, Mule(2).into()),
        (8, "spooler".parse()?),
        (9, "farm1".parse()?),
        (10, flare::Farm::named("solo").into()),
        (11, "worker0".parse()?),
        (12, "mule0".parse()?),
    ];
    for (num, target) in table {
        Signal::new(num).register_handler(target, |_| {})?;
    }
    master.run()
}

static SEEN_20: AtomicU64 = AtomicU64::new(0);

/// Registrations made by children at run time, and their errors.
fn runtime_registration(k: u64) -> flare::Result<flare::Summary> {
    let master = Master::builder()
        .workers(4)
        .mules(1)
        .worker_entry(move |me| {
            let sig = Signal::new(20);
            match me.id {
                1 => {
                    sig.register_handler("workers", |_| {
                        SEEN_20.fetch_add(1, SeqCst);
                    })
                    .expect("worker1 registers 20");
                    fact("w1_registered", sig.registered());
                    // Re-registering replaces this process's handler; the
                    // callback runs once the registration is in place.
                    sig.register_handler_then(
                        "workers",
                        |_| {
                            SEEN_20.fetch_add(1, SeqCst);
                        },
                        |s| fact("w1_callback", format!("{} {}", s.num(), s.registered())),
                    )
                    .expect("worker1 replaces 20");
                    let e = Signal::new(21).register_handler("mules", |_| {});
                    fact("w1_unrunnable", err_kind(e));
                    let e = Signal::new(21).register_handler("worker99", |_| {});
                    fact("w1_invalid", err_kind(e));
                    let e = Signal::new(31).register_handler("worker", |_| {});
                    fact("w1_conflict_master", err_text(e));
                    fact("w1_registry", registry());
                    for _ in 0..k {
                        sig.send().expect("send");
                    }
                    // Hand over to mule 1: it raises 20 too, then stops us.
                    Signal::new(30).send().expect("send");
                }
                2 => {
                    // Waits until worker 1's registration is visible.
                    while !sig.registered() {
                        std::thread::yield_now();
                    }
                    let e = sig.register_handler("worker", |_| {});
                    fact("w2_conflict", err_text(e));
                    fact("w2_registry", registry());
                    Signal::new(32).send().expect("send");
                }
                _ => {}
            }
            flare::serve_forever();
        })
        .build()?;
    // Master registrations: 30 to mule 1 (worker 1 is done: raise 20 too),
    // 32 to mule 1 (worker 2 is done), 31 to every worker. Mule 1 stops the
    // group when both are done.
    static DONE: AtomicU64 = AtomicU64::new(0);
    let step = move |rx: flare::Received| {
        if rx.num == 30 {
            for _ in 0..k {
                Signal::new(20).send().expect("send");
            }
        }
        if DONE.fetch_add(1, SeqCst) + 1 == 2 {
            flare::stop().expect("stop");
        }
    };
    Signal::new(30).register_handler("mule1", step)?;
    Signal::new(32).register_handler("mule1", step)?;
    Signal::new(31).register_handler("workers", |_| {})?;
    master.run()
}

/// This process's registrations as `num:target` pairs.
fn registry() -> String {
    let list: Vec<String> = flare::registry_signals()
        .iter()
        .map(|d| format!("{}:{}", d.num, d.target))
        .collect();
    list.join(",")
}

fn err_kind(r: flare::Result<()>) -> &'static str {
    match r {
        Ok(()) => "ok",
        Err(Error::Registration(RegistrationError::Unrunnable { .. })) => "unrunnable",
        Err(Error::Registration(RegistrationError::InvalidTarget { .. })) => "invalid-target",
        Err(Error::Registration(RegistrationError::Conflict { .. })) => "conflict",
        Err(_) => "other",
    }
}

fn err_text(r: flare::Result<()>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(e) => e.to_string(),
    }
}

/// Worker 2 announces itself and waits to be SIGKILLed by the test; its
/// respawned successor raises signal 1 (master-registered for `worker2`).
fn respawn(dir: PathBuf, k: u64) -> flare::Result<flare::Summary> {
    let marker = dir.join("worker2-started");
    let master = Master::builder()
        .workers(2)
        .worker_entry(move |me| {
            if me.id == 2 {
                if std::fs::create_dir(&marker).is_ok() {
                    fact("victim_pid", me.pid);
                } else {
                    fact("respawned_pid", me.pid);
                    for _ in 0..k {
                        Signal::new(1).send().expect("send");
                    }
                    flare::stop().expect("stop");
                }
            }
            flare::serve_forever();
        })
        .build()?;
    Signal::new(1).register_handler("worker2", |_| {})?;
    master.run()
}

static HANDLED_5: AtomicBool = AtomicBool::new(false);
static GOT_6: AtomicBool = AtomicBool::new(false);

/// wait() returns after the handler ran; get_last_received() agrees.
fn wait() -> flare::Result<flare::Summary> {
    let master = Master::builder()
        .workers(1)
        .mules(1)
        .worker_entry(|_| {
            fact("last_before", format!("{:?}", flare::get_last_received()));
            let rx = Signal::new(5).wait().expect("wait");
            fact("waited", rx.num);
            fact("handler_ran_before_wait_returned", HANDLED_5.load(SeqCst));
            fact("waited_origin", rx.origin);
            fact(
                "last_after",
                flare::get_last_received().map_or(-1, |s| s.num() as i32),
            );
            Signal::new(6).send().expect("send");
            flare::serve_forever();
        })
        .mule_entry(|_| {
            // Keep raising 5 until worker 1 confirms, so the test does not
            // depend on when its wait() started.
            while !GOT_6.load(SeqCst) {
                Signal::new(5).send().expect("send");
                let _ = flare::wait_any_timeout(Duration::from_millis(20));
            }
            flare::stop().expect("stop");
            flare::serve_forever();
        })
        .build()?;
    Signal::new(5).register_handler("worker1", |_| HANDLED_5.store(true, SeqCst))?;
    Signal::new(6).register_handler("mule1", |_| GOT_6.store(true, SeqCst))?;
    master.run()
}

/// Mule 1 raises 10 for worker 1, whose handler raises 11 for mule 1,
/// which waits for it: `n` rounds with the given busy-poll window. Every
/// 16th round the mule idles past the window first, so both the looking
/// and the sleeping paths of the master, the dispatchers and `wait()` run.
fn ping_pong(n: u64, busy_poll_us: u64) -> flare::Result<flare::Summary> {
    let master = Master::builder()
        .workers(1)
        .mules(1)
        .busy_poll(Duration::from_micros(busy_poll_us))
        .worker_entry(|_| flare::serve_forever())
        .mule_entry(move |_| {
            let idle = Duration::from_micros(busy_poll_us * 4 + 1_000);
            let mut done = 0;
            for round in 0..n {
                if round % 16 == 0 {
                    // Idle time, not synchronisation: signal 12 never comes.
                    let _ = Signal::new(12).wait_timeout(idle);
                }
                Signal::new(10).send().expect("send");
                match Signal::new(11).wait_timeout(Duration::from_secs(10)) {
                    Ok(Some(_)) => done += 1,
                    other => {
                        fact("lost_round", format!("{round}: {other:?}"));
                        break;
                    }
                }
            }
            fact("rounds", done);
            flare::stop().expect("stop");
            flare::serve_forever();
        })
        .build()?;
    Signal::new(10).register_handler("worker1", |_| {
        Signal::new(11).send().expect("send");
    })?;
    Signal::new(11).register_handler("mule1", |_| {})?;
    Signal::new(12).register_handler("mule1", |_| {})?;
    master.run()
}

/// get_available_num: 0, then 1, then NoSignalAvailable after 256.
fn available() -> flare::Result<flare::Summary> {
    let master = Master::builder()
        .workers(1)
        .worker_entry(|_| {
            fact("first", flare::get_available_num().expect("available"));
            Signal::new(0)
                .register_handler("worker", |_| {})
                .expect("register 0");
            fact("second", flare::get_available_num().expect("available"));
            let mut got = 1;
            loop {
                match Signal::auto() {
                    Ok(_) => got += 1,
                    Err(Error::Registration(RegistrationError::NoSignalAvailable)) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            fact("taken", got);
            fact("after", err_text(flare::get_available_num().map(|_| ())));
            flare::stop().expect("stop");
            flare::serve_forever();
        })
        .build()?;
    master.run()
}

/// Four workers take 60 numbers each with Signal::auto() at the same time.
fn auto_race() -> flare::Result<flare::Summary> {
    static DONE: AtomicU64 = AtomicU64::new(0);
    let master = Master::builder()
        .workers(4)
        .mules(1)
        .worker_entry(|_| {
            let nums: BTreeSet<u8> = (0..60)
                .map(|_| Signal::auto().expect("auto").num())
                .collect();
            let list: Vec<String> = nums.iter().map(u8::to_string).collect();
            fact("auto", list.join(","));
            Signal::new(255).send().expect("send");
            flare::serve_forever();
        })
        .build()?;
    Signal::new(255).register_handler("mule1", |_| {
        if DONE.fetch_add(1, SeqCst) + 1 == 4 {
            flare::stop().expect("stop");
        }
    })?;
    master.run()
}

/// Worker 1 raises `n` signals for `workers` as fast as it can; `tight`
/// makes the queues tiny so the sender is paused over and over.
fn burst(n: u64, tight: bool) -> flare::Result<flare::Summary> {
    let mut builder = Master::builder();
    if tight {
        builder = builder.water_marks(16, 64).outbox_limit(128);
    }
    let master = builder
        .workers(4)
        .worker_entry(move |me| {
            if me.id == 1 {
                for _ in 0..n {
                    Signal::new(1).send().expect("send");
                }
                flare::stop().expect("stop");
            }
            flare::serve_forever();
        })
        .build()?;
    Signal::new(1).register_handler("workers", |_| {})?;
    master.run()
}

/// Worker 1 queues `n` signals for `workers`, reports, and waits: the test
/// then stops the master with SIGTERM or SIGINT, which must drain them.
fn drain(n: u64) -> flare::Result<flare::Summary> {
    let master = Master::builder()
        .workers(2)
        .worker_entry(move |me| {
            if me.id == 1 {
                for _ in 0..n {
                    Signal::new(1).send().expect("send");
                }
                fact("sent", n);
            }
            flare::serve_forever();
        })
        .build()?;
    Signal::new(1).register_handler("workers", |_| {})?;
    master.run()
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// Worker 1's entry returns, then panics, then exits(3); the fourth
/// incarnation stops the group. Each reports when it started.
fn lifecycle(dir: PathBuf) -> flare::Result<flare::Summary> {
    let master = Master::builder()
        .workers(1)
        .worker_entry(move |_| {
            let n = (0..).find(|i| std::fs::create_dir(dir.join(format!("{i}"))).is_ok());
            let n = n.expect("some incarnation number is free");
            fact(&format!("t{n}"), now_ms());
            match n {
                0 => {}
                1 => panic!("incarnation 1 panics on purpose"),
                2 => std::process::exit(3),
                _ => {
                    fact("incarnation", n);
                    flare::stop().expect("stop");
                    flare::serve_forever();
                }
            }
        })
        .build()?;
    master.run()
}

/// Worker 2 blocks in its first handler; worker 1 try_sends to it until the
/// master stops reading worker 1 and its channel fills. The test then
/// stops the master.
fn queue_full() -> flare::Result<flare::Summary> {
    let master = Master::builder()
        .workers(2)
        .water_marks(16, 64)
        .outbox_limit(1024)
        .drain_timeout(Duration::from_millis(500))
        .worker_entry(|me| {
            if me.id == 1 {
                let mut sent = 0u64;
                loop {
                    match Signal::new(1).try_send() {
                        Ok(()) => sent += 1,
                        Err(TrySendError::Full(1)) => break,
                        Err(e) => panic!("{e}"),
                    }
                }
                fact("queue_full_after", sent);
            }
            flare::serve_forever();
        })
        .build()?;
    Signal::new(1).register_handler("worker2", |_| flare::serve_forever())?;
    master.run()
}

/// The first `worker` signal blocks its worker for good; the pool must
/// carry on without it.
fn busy_pool(dir: PathBuf, n: u64) -> flare::Result<flare::Summary> {
    let master = Master::builder()
        .workers(4)
        .mules(1)
        .drain_timeout(Duration::from_millis(500))
        .mule_entry(move |_| {
            for _ in 0..=n {
                Signal::new(2).send().expect("send");
            }
            flare::stop().expect("stop");
            flare::serve_forever();
        })
        .build()?;
    Signal::new(2).register_handler("worker", move |_| {
        if std::fs::create_dir(dir.join("busy")).is_ok() {
            fact("busy", flare::whoami().map_or(0, |w| w.id));
            flare::serve_forever();
        }
    })?;
    master.run()
}

/// A handler floods worker 2 (blocked on a pipe) past its queue bound:
/// the excess is dropped and counted, nothing else is lost.
fn drops(n: u64) -> flare::Result<flare::Summary> {
    let (r, w) = nix::unistd::pipe().map_err(|e| Error::Io {
        context: "pipe",
        source: e.into(),
    })?;
    let (r, w) = (std::sync::Arc::new(r), std::sync::Arc::new(w));
    let master = Master::builder()
        .workers(2)
        .water_marks(10, 50)
        .outbox_limit(100)
        .worker_entry(|me| {
            if me.id == 1 {
                Signal::new(3).send().expect("send");
            }
            flare::serve_forever();
        })
        .build()?;
    static BLOCKED: AtomicBool = AtomicBool::new(false);
    Signal::new(1).register_handler("worker2", move |_| {
        if !BLOCKED.swap(true, SeqCst) {
            // Blocks until worker 1 has flooded the queue.
            let mut byte = [0u8];
            let _ = nix::unistd::read(&*r, &mut byte);
        }
    })?;
    Signal::new(3).register_handler("worker1", move |_| {
        for _ in 0..n {
            Signal::new(1).send().expect("send");
        }
        nix::unistd::write(&*w, b"x").expect("unblock worker 2");
        flare::stop().expect("stop");
    })?;
    master.run()
}

/// A master listening for remote signals: 17 goes to the first available
/// worker, 18 to every worker. Runs until the test sends SIGTERM.
fn remote(args: &[String]) -> flare::Result<flare::Summary> {
    let mut opts = flare::RemoteOptions::new(args[0].clone());
    opts.max_connections = args[1].parse().expect("MAX_CONNECTIONS");
    opts.read_timeout = Duration::from_millis(args[2].parse().expect("TIMEOUT_MS"));
    if let Some(list) = args.get(3) {
        opts.allow = Some(
            list.split(',')
                .map(|n| n.parse().expect("ALLOWED"))
                .collect(),
        );
    }
    let master = Master::builder()
        .workers(4)
        .remote_options(opts)
        .worker_entry(|me| {
            if me.id == 1 {
                fact("ready", me.pid);
            }
            flare::serve_forever();
        })
        .build()?;
    fact("listening", master.remote_addr().expect("listening"));
    Signal::new(17).register_handler("worker", |_| {})?;
    Signal::new(18).register_handler("workers", |_| {})?;
    master.run()
}

fn mono_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
    })
}

/// A 50 ms timer for worker 1: its handler notes when each run started;
/// after 30 runs it reports them and stops the group.
fn timer() -> flare::Result<flare::Summary> {
    static TIMES: std::sync::Mutex<Vec<u64>> = std::sync::Mutex::new(Vec::new());
    let master = Master::builder().workers(2).build()?;
    Signal::new(1).register_handler("worker1", |_| {
        let mut t = TIMES.lock().expect("times");
        t.push(mono_ns());
        if t.len() == 30 {
            let list: Vec<String> = t.iter().map(u64::to_string).collect();
            fact("times", list.join(","));
            flare::stop().expect("stop");
        }
    })?;
    flare::add_timer_ms(1, 50)?;
    master.run()
}

static RUNS: AtomicU64 = AtomicU64::new(0);
/// Firings of a second timer: positive events that must come after.
static TICKS: AtomicU64 = AtomicU64::new(0);
/// Marker signals handled.
static MARKS: AtomicU64 = AtomicU64::new(0);

/// Waits (deadline 10 s per firing) until `counter` reaches `n`, `num`
/// being the signal whose handler counts it.
fn wait_count(num: u8, counter: &AtomicU64, n: u64) {
    while counter.load(SeqCst) < n {
        Signal::new(num)
            .wait_timeout(Duration::from_secs(10))
            .expect("wait")
            .expect("a firing within 10 s");
    }
}

/// An rb timer firing 3 times for mule 1, beside a plain timer of the same
/// period; once the plain one has fired six more times, a fourth rb firing
/// (due with the plain one's next) would have been handled first: then the
/// mule stops the group.
fn rb_timer() -> flare::Result<flare::Summary> {
    let master = Master::builder()
        .workers(1)
        .mules(1)
        .mule_entry(|_| {
            wait_count(2, &RUNS, 3);
            let ticks = TICKS.load(SeqCst);
            wait_count(3, &TICKS, ticks + 6);
            fact("runs", RUNS.load(SeqCst));
            flare::stop().expect("stop");
            flare::serve_forever();
        })
        .build()?;
    Signal::new(2).register_handler("mule1", |_| {
        RUNS.fetch_add(1, SeqCst);
    })?;
    Signal::new(3).register_handler("mule1", |_| {
        TICKS.fetch_add(1, SeqCst);
    })?;
    Source::rb_timer(Duration::from_millis(50), Some(3)).raise(2)?;
    Source::timer(Duration::from_millis(50)).raise(3)?;
    master.run()
}

/// File monitors: a file that does not exist yet (mule 1), an existing
/// directory tree watched recursively (first available worker), and a burst
/// of writes (mule 1, counted). Worker 1 makes the changes, one step at a
/// time, waiting for signal 10 between steps.
fn file_monitor(dir: PathBuf) -> flare::Result<flare::Summary> {
    std::fs::create_dir_all(dir.join("tree/sub/deeper")).expect("tree");
    let d = dir.clone();
    let master = Master::builder()
        .workers(2)
        .mules(1)
        .worker_entry(move |me| {
            if me.id == 1 {
                let step = |what: &str, f: &dyn Fn()| {
                    f();
                    let got = Signal::new(10).wait_timeout(Duration::from_secs(20));
                    fact(what, got.is_ok_and(|r| r.is_some()));
                };
                step("appeared", &|| {
                    std::fs::write(d.join("late.txt"), b"hello").expect("write");
                });
                step("deep_write", &|| {
                    std::fs::write(d.join("tree/sub/deeper/f"), b"x").expect("write");
                });
                let t = std::time::Instant::now();
                for i in 0..1000 {
                    std::fs::write(d.join("burst.txt"), format!("{i}")).expect("write");
                }
                fact("burst_ms", t.elapsed().as_millis());
                // A one-shot timer three coalescing windows later: by the
                // time its signal (through mule 1) is back, the burst's
                // trailing signal was handled by mule 1 before it.
                Source::rb_timer(Duration::from_millis(300), Some(1))
                    .raise(6)
                    .expect("timer");
                let got = Signal::new(13).wait_timeout(Duration::from_secs(20));
                fact("after_burst", got.is_ok_and(|r| r.is_some()));
                flare::stop().expect("stop");
            }
            flare::serve_forever();
        })
        .build()?;
    Signal::new(3).register_handler("mule1", |rx| {
        fact("late_by", rx.origin);
        Signal::new(10).send().expect("send");
    })?;
    Signal::new(4).register_handler("worker", |_| {
        Signal::new(10).send().expect("send");
    })?;
    Signal::new(5).register_handler("mule1", |_| {})?;
    Signal::new(6).register_handler("mule1", |_| {
        Signal::new(13).send().expect("send");
    })?;
    Signal::new(10).register_handler("worker1", |_| {})?;
    Signal::new(13).register_handler("worker1", |_| {})?;
    flare::add_file_monitor(3, dir.join("late.txt"))?;
    Source::file_monitor(dir.join("tree"))
        .recursive()
        .raise(4)?;
    flare::add_file_monitor(5, dir.join("burst.txt"))?;
    master.run()
}

/// Errors from the master and from a child; duplicates; removal at run time.
fn source_rules(dir: PathBuf) -> flare::Result<flare::Summary> {
    let missing = dir.join("no/such/dir/file");
    let m = missing.clone();
    let master = Master::builder()
        .workers(1)
        .worker_entry(move |_| {
            fact(
                "child_missing",
                err_text(flare::add_file_monitor(1, &m).map(|_| ())),
            );
            fact(
                "child_bad_cron",
                err_text(flare::add_cron(1, [0, 24, -1, -1, -1]).map(|_| ())),
            );
            flare::add_timer(7, 3600).expect("first timer");
            fact(
                "child_duplicate",
                err_text(flare::add_timer(7, 3600).map(|_| ())),
            );
            // A 20 ms timer added at run time, removed after five runs.
            let id = flare::add_timer_ms(8, 20).expect("timer");
            while RUNS.load(SeqCst) < 5 {
                Signal::new(8)
                    .wait_timeout(Duration::from_secs(10))
                    .expect("wait");
            }
            // A second 20 ms timer: its firings are the events that must
            // come after any of the removed one's.
            flare::add_timer_ms(9, 20).expect("second timer");
            flare::remove_source(id).expect("remove");
            // Raised after the removal: handled after every signal 8
            // raised before it.
            Signal::new(14).send().expect("marker");
            wait_count(14, &MARKS, 1);
            let at_removal = RUNS.load(SeqCst);
            let ticks = TICKS.load(SeqCst);
            wait_count(9, &TICKS, ticks + 10);
            fact("after_removal", RUNS.load(SeqCst) - at_removal);
            fact("removed_twice", err_text(flare::remove_source(id)));
            flare::stop().expect("stop");
            flare::serve_forever();
        })
        .build()?;
    Signal::new(8).register_handler("worker1", |_| {
        RUNS.fetch_add(1, SeqCst);
    })?;
    Signal::new(9).register_handler("worker1", |_| {
        TICKS.fetch_add(1, SeqCst);
    })?;
    Signal::new(14).register_handler("worker1", |_| {
        MARKS.fetch_add(1, SeqCst);
    })?;
    fact(
        "master_missing",
        err_text(flare::add_file_monitor(1, &missing).map(|_| ())),
    );
    fact(
        "master_bad_cron",
        err_text(flare::add_cron(1, "61 * * * *").map(|_| ())),
    );
    fact(
        "master_zero",
        err_text(flare::add_timer_ms(1, 0).map(|_| ())),
    );
    master.run()
}

/// Two 10 ms timers into a handler that takes 100 ms: the unique one does
/// not pile signals up, the other does. The unique one's tenth run (about
/// 1 s in) stops the group.
fn unique() -> flare::Result<flare::Summary> {
    let master = Master::builder()
        .workers(2)
        .drain_timeout(Duration::from_millis(200))
        .build()?;
    let slow = |_| std::thread::sleep(Duration::from_millis(100));
    Signal::new(9).register_handler("worker1", move |rx| {
        slow(rx);
        if RUNS.fetch_add(1, SeqCst) + 1 == 10 {
            flare::stop().expect("stop");
        }
    })?;
    Signal::new(11).register_handler("worker2", slow)?;
    let u = Source::timer(Duration::from_millis(10)).unique().raise(9)?;
    let p = Source::timer(Duration::from_millis(10)).raise(11)?;
    fact("unique_id", u.get());
    fact("plain_id", p.get());
    master.run()
}

/// "Every minute" fires in the minute it is added (as in uWSGI).
fn cron() -> flare::Result<flare::Summary> {
    let master = Master::builder().workers(1).build()?;
    Signal::new(12).register_handler("worker1", |rx| {
        fact("cron_origin", rx.origin);
        flare::stop().expect("stop");
    })?;
    flare::add_cron(12, "* * * * *")?;
    master.run()
}

/// The one-call helpers: worker 2 schedules a 20 ms timer for itself at
/// run time; the master schedules an every-minute cron for the mules.
fn scheduling() -> flare::Result<flare::Summary> {
    let master = Master::builder()
        .workers(2)
        .mules(1)
        .worker_entry(|me| {
            if me.id == 2 {
                let s = flare::scheduling::register_timer_ms(20, "worker2", |_| {
                    if RUNS.fetch_add(1, SeqCst) + 1 == 3 {
                        flare::stop().expect("stop");
                    }
                })
                .expect("schedule");
                fact("timer_signal", s.signal.num());
            }
            flare::serve_forever();
        })
        .build()?;
    let s = flare::scheduling::register_cron("* * * * *", "mules", |_| {})?;
    fact("cron_signal", s.signal.num());
    master.run()
}

/// Worker 1 queues 10,000 signals for worker 2, whose first incarnation is
/// stuck in its first handler; the test SIGKILLs it. The respawned worker 2
/// handles all 10,000 and stops the group.
fn kill_queued(dir: PathBuf) -> flare::Result<flare::Summary> {
    const N: u64 = 10_000;
    let master = Master::builder()
        .workers(2)
        .worker_entry(|me| {
            if me.id == 1 {
                for _ in 0..N {
                    Signal::new(1).send().expect("send");
                }
                fact("sent", N);
            }
            flare::serve_forever();
        })
        .build()?;
    Signal::new(1).register_handler("worker2", move |_| {
        if std::fs::create_dir(dir.join("stuck")).is_ok() {
            fact("victim", std::process::id());
            flare::serve_forever();
        }
        if RUNS.fetch_add(1, SeqCst) + 1 == N {
            flare::stop().expect("stop");
        }
    })?;
    master.run()
}

/// Signal 1's handler aborts its process every time: after max_attempts
/// (3) deliveries it is dead-lettered and worker 1 stops dying. Signal 2
/// for every worker keeps flowing all along; mule 1 counts what it sent.
fn abort_handler() -> flare::Result<flare::Summary> {
    let master = Master::builder()
        .workers(2)
        .mules(1)
        .max_attempts(3)
        .mule_entry(|_| {
            Signal::new(1).send().expect("send");
            let deadline = std::time::Instant::now() + Duration::from_millis(2500);
            let mut sent = 0;
            while std::time::Instant::now() < deadline {
                Signal::new(2).send().expect("send");
                sent += 1;
                // Pacing for the observation window, not synchronisation.
                std::thread::sleep(Duration::from_millis(20));
            }
            fact("sent_2", sent);
            flare::stop().expect("stop");
            flare::serve_forever();
        })
        .build()?;
    Signal::new(1).register_handler("worker1", |_| std::process::abort())?;
    Signal::new(2).register_handler("workers", |_| {})?;
    master.run()
}

/// The first `worker` signal sleeps past the 300 ms harakiri: its worker is
/// killed and respawned, the timeout counted, and the signal given to
/// another worker; the pool serves the other 100 meanwhile. The mule stops
/// the group once the retry has run (DIR/retried appears).
fn harakiri(dir: PathBuf) -> flare::Result<flare::Summary> {
    let retried = dir.join("retried");
    let master = Master::builder()
        .workers(4)
        .mules(1)
        .harakiri(flare::Role::Worker, Duration::from_millis(300))
        .mule_entry(move |_| {
            for _ in 0..101 {
                Signal::new(1).send().expect("send");
            }
            // The positive event: the interrupted delivery ran again.
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while !retried.exists() {
                assert!(std::time::Instant::now() < deadline, "no retry in 60 s");
                std::thread::sleep(Duration::from_millis(5));
            }
            flare::stop().expect("stop");
            flare::serve_forever();
        })
        .build()?;
    Signal::new(1).register_handler("worker", move |rx| {
        if rx.attempt > 1 {
            let _ = std::fs::create_dir(dir.join("retried"));
        } else if std::fs::create_dir(dir.join("sleeper")).is_ok() {
            fact("sleeper", flare::whoami().map_or(0, |w| w.id));
            std::thread::sleep(Duration::from_secs(30));
        }
    })?;
    master.run()
}

/// The group the chaos harness (flare-chaos) attacks: every child raises
/// signals on every target kind for `secs` seconds while the harness kills
/// children at random; the harness then stops the master with SIGTERM.
fn chaos(secs: u64) -> flare::Result<flare::Summary> {
    let until = std::time::Instant::now() + Duration::from_secs(secs);
    let mut opts = flare::Options::default();
    // Children die all the time here: keep respawns quick.
    opts.min_lifetime = Duration::from_millis(50);
    opts.max_backoff = Duration::from_millis(500);
    opts.drain_timeout = Duration::from_secs(30);
    let sender = move |me: flare::ProcessInfo| {
        let nums = [1u8, 2, 3, 4, 5, 6, 7, 8, 9, 42];
        let mut i = me.id as usize;
        while std::time::Instant::now() < until {
            for _ in 0..10 {
                Signal::new(nums[i % nums.len()]).send().expect("send");
                i += 1;
            }
            // Pacing: a steady stream rather than one flood.
            std::thread::sleep(Duration::from_millis(1));
        }
        flare::serve_forever();
    };
    let master = Master::builder()
        .workers(4)
        .mules(2)
        .farm("f", [1, 2])
        .spoolers(1)
        .options(opts)
        .worker_entry(sender)
        .mule_entry(sender)
        .spooler_entry(sender)
        .build()?;
    let targets = [
        "workers",
        "worker",
        "worker2",
        "active-workers",
        "mules",
        "mule",
        "mule1",
        "farm_f",
        "spooler",
    ];
    for (i, t) in targets.iter().enumerate() {
        Signal::new(i as u8 + 1).register_handler(*t, |_| {})?;
    }
    fact("ready", std::process::id());
    master.run()
}

/// A master with stats (TCP, port chosen by the system) and control (a Unix
/// socket at `control`): 1 to active-workers, 2 to workers, 3 to the first
/// available worker, and a 50 ms timer raising 4 for active-workers. Runs
/// until the test sends SIGTERM.
fn admin(control: &str) -> flare::Result<flare::Summary> {
    let master = Master::builder()
        .workers(4)
        .mules(1)
        .stats("127.0.0.1:0")
        .control(control)
        .worker_entry(|me| {
            if me.id == 1 {
                fact("ready", me.pid);
            }
            flare::serve_forever();
        })
        .build()?;
    fact("stats", master.stats_addr().expect("stats"));
    Signal::new(1).register_handler("active-workers", |_| {})?;
    Signal::new(2).register_handler("workers", |_| {})?;
    Signal::new(3).register_handler("worker", |_| {})?;
    Signal::new(4).register_handler("active-workers", |_| {})?;
    flare::add_timer_ms(4, 50)?;
    master.run()
}
