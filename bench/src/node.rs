//! `flare-bench flare-node SCENARIO ...`: the flare side of a scenario, run
//! by the harness as a separate (single-threaded) process that builds a
//! master. The Python twin of every function here is in
//! `bench/uwsgi/flarebench.py`.
//!
//! Protocol with the harness, on stdout:
//! - `READY worker N`: worker N started (resources, remote);
//! - `LISTENING ADDR`: the remote listener's address (remote);
//! - `RESULT`: `OUT/result.json` is written (by the sending mule or, after
//!   `run()`, by the master);
//! - `SUMMARY {json}`: `Master::run()` returned this `flare::Summary`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use flare::{Master, Signal, Summary};
use serde_json::{Value, json};

use crate::board::{self, Board, Field, now_ns};

/// Mule 1 raises it for worker 1 (ping-pong, one-way).
pub const PING: Signal = Signal::new(1);
/// Worker 1's handler raises it for mule 1.
pub const PONG: Signal = Signal::new(2);
/// The burst (`workers`) and pool (`worker`) signal.
pub const FLOOD: Signal = Signal::new(3);
/// The fan-out signal (`workers`).
pub const FAN: Signal = Signal::new(4);
/// The remote signal (`worker`).
pub const REMOTE: Signal = Signal::new(5);
/// uWSGI only: a remote signal for mule 1 that makes it report its counts.
pub const REPORT: Signal = Signal::new(98);

/// What a node runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NodeScenario {
    /// Round trips mule 1 -> worker 1 -> mule 1.
    PingPong,
    /// Like ping-pong, but the handler in worker 1 records send-to-start.
    OneWay,
    /// Mule 1 raises N signals for `workers`.
    Burst,
    /// Mule 1 raises N signals for `worker` (the pool).
    Pool,
    /// Mule 1 raises one `workers` signal per round and waits for all.
    FanOut,
    /// The fan-out's hops with plain pipes and no runtime (`floor.rs`).
    FanOutFloor,
    /// Mule 1 raises one `workers` signal per millisecond; runs until
    /// SIGTERM (the harness measures the group's CPU time meanwhile).
    Trickle,
    /// Remote signals for `worker`, until SIGTERM.
    Remote,
    /// Workers idle until killed.
    Resources,
    /// Ping-pong with worker 1 an attached process (not forked by flare).
    PingPongAttached,
    /// Burst to `workers`, every worker an attached process.
    BurstAttached,
}

/// Arguments of `flare-bench attach-worker`.
#[derive(Args, Debug)]
pub struct AttachArgs {
    /// What its handlers do: `ping` (PING raises PONG) or `flood` (FLOOD
    /// counts on the board).
    pub kind: String,
    /// The node's attach socket.
    #[arg(long)]
    pub sock: String,
    /// The node's board ([`Board::path`]).
    #[arg(long)]
    pub board: String,
}

/// Arguments of `flare-bench flare-node`.
#[derive(Args, Debug)]
pub struct NodeArgs {
    /// The scenario.
    #[arg(value_enum)]
    pub scenario: NodeScenario,
    /// Rounds or signals.
    #[arg(long, default_value_t = 0)]
    pub n: u64,
    /// Rounds run before measuring.
    #[arg(long, default_value_t = 0)]
    pub warmup: u64,
    /// Workers in the group.
    #[arg(long, default_value_t = 1)]
    pub workers: u32,
    /// Directory for `result.json`.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    /// Where the remote scenario listens.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub remote: String,
    /// Pool prefetch (the library's default when not given); for
    /// experiments by hand, the harness never sets it.
    #[arg(long)]
    pub prefetch: Option<usize>,
    /// Busy-poll window in microseconds (the library's default when not
    /// given; `Options::busy_poll`).
    #[arg(long)]
    pub busy_poll_us: Option<u64>,
}

/// A builder with the node's tunables applied.
fn builder(a: &NodeArgs) -> flare::MasterBuilder {
    let mut b = Master::builder();
    if let Some(p) = a.prefetch {
        b = b.prefetch(p);
    }
    if let Some(us) = a.busy_poll_us {
        b = b.busy_poll(Duration::from_micros(us));
    }
    b
}

/// `k` workers that mark themselves ready on the board and serve signals,
/// and one mule (the sender, whose entry the caller sets). In the attached
/// scenarios the workers are `flare-bench attach-worker` processes the
/// node starts now (it has one thread: nothing forks behind a lock), which
/// join through the attach socket and register their own handlers.
fn workers_and_sender(a: &NodeArgs, board: Board, k: u32) -> flare::Result<flare::MasterBuilder> {
    let kind = match a.scenario {
        NodeScenario::PingPongAttached => "ping",
        NodeScenario::BurstAttached => "flood",
        _ => {
            return Ok(builder(a).workers(k).mules(1).worker_entry(move |me| {
                mark_ready(board, me.id);
                flare::serve_forever()
            }));
        }
    };
    let sock = a.out.join("attach.sock").display().to_string();
    let path = board
        .path()
        .ok_or_else(|| flare::Error::Config("the board has no path".into()))?;
    let exe = std::env::current_exe().map_err(|e| flare::Error::io("finding flare-bench", e))?;
    for _ in 0..k {
        std::process::Command::new(&exe)
            .args(["attach-worker", kind, "--sock", &sock, "--board", &path])
            .spawn()
            .map_err(|e| flare::Error::io("starting an attached worker", e))?;
    }
    Ok(builder(a)
        .workers(0)
        .attach(sock)
        .attach_workers(k)
        .mules(1))
}

/// `flare-bench attach-worker`: waits (with a deadline) for the node's
/// attach socket, joins, registers its handler, marks itself ready, and
/// serves until the node ends it.
pub fn attach_worker(a: &AttachArgs) -> i32 {
    let board = match Board::open(&a.board) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("attach-worker: {e}");
            return 2;
        }
    };
    let ping = a.kind == "ping";
    let deadline = Instant::now() + Duration::from_secs(30);
    let me = loop {
        let joined = flare::attach_with(&a.sock, |_| {
            if ping {
                PING.register_handler("worker1", |_| PONG.send().expect("raise PONG"))?;
            } else {
                FLOOD.register_handler("workers", move |_| board.count(my_id(), now_ns()))?;
            }
            Ok(())
        });
        match joined {
            Ok(me) => break me,
            // The node builds its master after starting us.
            Err(flare::Error::Attach { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => {
                eprintln!("attach-worker: {e}");
                return 1;
            }
        }
    };
    mark_ready(board, me.id);
    loop {
        std::thread::park();
    }
}

/// Runs a node; returns the exit code.
pub fn main(a: NodeArgs) -> i32 {
    let result = match a.scenario {
        NodeScenario::FanOutFloor => return crate::floor::main(&a),
        NodeScenario::PingPong => latency(&a, false),
        NodeScenario::OneWay => latency(&a, true),
        NodeScenario::Burst => flood(&a, "workers"),
        NodeScenario::Pool => flood(&a, "worker"),
        NodeScenario::FanOut => fan_out(&a),
        NodeScenario::Trickle => trickle(&a),
        NodeScenario::Remote => remote(&a),
        NodeScenario::Resources => resources(&a),
        NodeScenario::PingPongAttached => latency(&a, false),
        NodeScenario::BurstAttached => flood(&a, "workers"),
    };
    match result {
        Ok(summary) => {
            let json = serde_json::to_string(&summary).unwrap_or_else(|e| format!("{e}"));
            println!("SUMMARY {json}");
            let _ = std::io::stdout().flush();
            0
        }
        Err(e) => {
            eprintln!("flare node failed: {e}");
            1
        }
    }
}

/// Writes `OUT/result.json` atomically and says so on stdout.
fn publish(out: &Path, value: &Value) {
    let tmp = out.join("result.json.tmp");
    let text = serde_json::to_vec(value).expect("JSON");
    std::fs::write(&tmp, text).expect("write result");
    std::fs::rename(&tmp, out.join("result.json")).expect("rename result");
    println!("RESULT");
    let _ = std::io::stdout().flush();
}

/// Reports a failure as the result, stops the group and parks: a mule
/// that panicked would be forked again and start the scenario over.
fn fail(out: &Path, why: &str) -> ! {
    publish(out, &json!({ "error": why }));
    let _ = flare::stop();
    flare::serve_forever()
}

/// Marks the start of a sending mule; a second start means the first one
/// died (the master forks it again), which spoils the measurement.
fn first_start(board: Board, out: &Path) {
    let starts = board.get(board::STARTS) + 1;
    board.set(board::STARTS, starts);
    if starts > 1 {
        fail(
            out,
            "the sending mule was forked again: it died during the run",
        );
    }
}

/// Waits (polling the board, with a deadline) until workers 1..=k started.
fn wait_ready(board: Board, k: u32, out: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(1..=k).all(|id| board.slot(id, Field::Ready) == 1) {
        if Instant::now() > deadline {
            fail(out, "workers did not start within 30 s");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn mark_ready(board: Board, id: u32) {
    board.set_slot(id, Field::Ready, 1);
}

fn map_board() -> flare::Result<Board> {
    Board::map().map_err(|e| flare::Error::Config(format!("cannot map the board: {e}")))
}

fn my_id() -> u32 {
    flare::whoami().map_or(0, |w| w.id)
}

/// Ping-pong and one-way latency: mule 1 raises PING for worker 1, whose
/// handler raises PONG for mule 1, which waits for it.
fn latency(a: &NodeArgs, one_way: bool) -> flare::Result<Summary> {
    let board = map_board()?;
    let (n, warmup, out) = (a.n, a.warmup, a.out.clone());
    let total = warmup + n;
    if one_way && total as usize > board::MAX_SAMPLES {
        return Err(flare::Error::Config(format!(
            "at most {} one-way rounds",
            board::MAX_SAMPLES
        )));
    }
    let master = workers_and_sender(a, board, 1)?
        .mule_entry(move |_| {
            first_start(board, &out);
            wait_ready(board, 1, &out);
            let mut rtt = Vec::with_capacity(n as usize);
            for i in 0..total {
                let t0 = now_ns();
                if one_way {
                    board.set(board::ROUND, i);
                    board.set(board::T0, t0);
                }
                if let Err(e) = PING.send() {
                    fail(&out, &format!("send: {e}"));
                }
                if let Err(e) = PONG.wait() {
                    fail(&out, &format!("wait: {e}"));
                }
                if i >= warmup {
                    rtt.push(now_ns() - t0);
                }
            }
            if one_way {
                let fwd: Vec<u64> = (warmup..total).map(|i| board.sample(i as usize)).collect();
                publish(&out, &json!({ "samples_ns": fwd, "rtt_ns": rtt }));
            } else {
                publish(&out, &json!({ "samples_ns": rtt }));
            }
            let _ = flare::stop();
            flare::serve_forever()
        })
        .build()?;
    PING.register_handler("worker1", move |_| {
        if one_way {
            let t1 = now_ns();
            let i = board.get(board::ROUND) as usize;
            board.set_sample(i, t1.saturating_sub(board.get(board::T0)));
        }
        PONG.send().expect("raise PONG");
    })?;
    PONG.register_handler("mule1", |_| {})?;
    master.run()
}

/// Burst (`workers`) and pool (`worker`): mule 1 raises N signals as fast
/// as it can; each handler counts and stamps its start.
fn flood(a: &NodeArgs, target: &'static str) -> flare::Result<Summary> {
    let board = map_board()?;
    let (n, k, out) = (a.n, a.workers, a.out.clone());
    let mule_out = out.clone();
    let master = workers_and_sender(a, board, k)?
        .drain_timeout(Duration::from_secs(60))
        .mule_entry(move |_| {
            let out = &mule_out;
            first_start(board, out);
            wait_ready(board, k, out);
            board.set(board::T0, now_ns());
            for _ in 0..n {
                if let Err(e) = FLOOD.send() {
                    fail(out, &format!("send: {e}"));
                }
            }
            board.set(board::SENDER_DONE, now_ns());
            let _ = flare::stop();
            flare::serve_forever()
        })
        .build()?;
    FLOOD.register_handler(target, move |_| board.count(my_id(), now_ns()))?;
    let summary = master.run()?;
    let handled: u64 = summary
        .processes
        .iter()
        .filter_map(|p| p.handled_by_num.get(&FLOOD.num()))
        .sum();
    publish(
        &out,
        &json!({
            "sent": n,
            "t0": board.get(board::T0),
            "sender_done": board.get(board::SENDER_DONE),
            "counts": (1..=k).map(|id| board.slot(id, Field::Count)).collect::<Vec<_>>(),
            "last": (1..=k).map(|id| board.slot(id, Field::Last)).collect::<Vec<_>>(),
            "summary_handled": handled,
            "dropped": summary.counters.dropped,
            "pending_at_exit": summary.counters.pending_at_exit,
        }),
    );
    Ok(summary)
}

/// Fan-out: per round, mule 1 raises one `workers` signal and waits until
/// every worker's handler has stamped the round.
fn fan_out(a: &NodeArgs) -> flare::Result<Summary> {
    let board = map_board()?;
    let (n, warmup, k, out) = (a.n, a.warmup, a.workers, a.out.clone());
    if k as usize > board::MAX_ID {
        return Err(flare::Error::Config(format!(
            "at most {} workers",
            board::MAX_ID
        )));
    }
    let master = workers_and_sender(a, board, k)?
        .mule_entry(move |_| {
            first_start(board, &out);
            wait_ready(board, k, &out);
            let mut samples = Vec::with_capacity(n as usize);
            for r in 1..=warmup + n {
                board.set(board::ROUND, r);
                let t0 = now_ns();
                if let Err(e) = FAN.send() {
                    fail(&out, &format!("send: {e}"));
                }
                let deadline = Instant::now() + Duration::from_secs(10);
                while !(1..=k).all(|id| board.slot(id, Field::Seen) == r) {
                    if Instant::now() > deadline {
                        fail(&out, &format!("round {r} not handled by all within 10 s"));
                    }
                    std::thread::sleep(Duration::from_micros(100));
                }
                let last = (1..=k)
                    .map(|id| board.slot(id, Field::Last))
                    .max()
                    .unwrap_or(t0);
                if r > warmup {
                    samples.push(last.saturating_sub(t0));
                }
            }
            publish(&out, &json!({ "samples_ns": samples, "workers": k }));
            let _ = flare::stop();
            flare::serve_forever()
        })
        .build()?;
    FAN.register_handler("workers", move |_| {
        let t = now_ns();
        let id = my_id();
        board.set_slot(id, Field::Last, t);
        board.set_slot(id, Field::Seen, board.get(board::ROUND));
    })?;
    master.run()
}

/// Trickle: once all workers are ready, mule 1 says `START`, raises `n`
/// signals for `workers` on a 1 ms schedule, waits until every handler ran
/// and publishes the counts; then idles, so the group is still whole when
/// the harness reads its CPU time.
fn trickle(a: &NodeArgs) -> flare::Result<Summary> {
    let board = map_board()?;
    let (n, k, out) = (a.n, a.workers, a.out.clone());
    let master = workers_and_sender(a, board, k)?
        .mule_entry(move |_| {
            first_start(board, &out);
            wait_ready(board, k, &out);
            println!("START");
            let _ = std::io::stdout().flush();
            let t0 = now_ns();
            for i in 0..n {
                if let Err(e) = FLOOD.send() {
                    fail(&out, &format!("send: {e}"));
                }
                // The schedule, not a synchronisation: one per millisecond.
                let next = t0 + (i + 1) * 1_000_000;
                let now = now_ns();
                if next > now {
                    std::thread::sleep(Duration::from_nanos(next - now));
                }
            }
            let counts = || (1..=k).map(|id| board.slot(id, Field::Count));
            let deadline = Instant::now() + Duration::from_secs(30);
            while counts().sum::<u64>() < n * u64::from(k) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            publish(
                &out,
                &json!({ "sent": n, "counts": counts().collect::<Vec<_>>() }),
            );
            flare::serve_forever()
        })
        .build()?;
    FLOOD.register_handler("workers", move |_| board.count(my_id(), now_ns()))?;
    master.run()
}

/// Remote: the master listens; every accepted signal goes to the first
/// available worker, whose handler counts it. Runs until SIGTERM.
fn remote(a: &NodeArgs) -> flare::Result<Summary> {
    let board = map_board()?;
    let k = a.workers;
    let master = builder(a)
        .workers(k)
        .remote(a.remote.clone())
        .worker_entry(|me| {
            println!("READY worker {}", me.id);
            flare::serve_forever()
        })
        .build()?;
    let addr = master
        .remote_addr()
        .ok_or_else(|| flare::Error::Config("the master does not listen".into()))?;
    println!("LISTENING {addr}");
    REMOTE.register_handler("worker", move |_| board.count(my_id(), now_ns()))?;
    let summary = master.run()?;
    publish(
        &a.out,
        &json!({
            "counts": (1..=k).map(|id| board.slot(id, Field::Count)).collect::<Vec<_>>(),
        }),
    );
    Ok(summary)
}

/// Resources: workers that only serve signals, until the harness kills
/// the group. Every endpoint is on (stats, control, remote signals), so
/// the idle figure includes what they cost when nobody uses them.
fn resources(a: &NodeArgs) -> flare::Result<Summary> {
    let master = builder(a)
        .workers(a.workers)
        .stats(a.out.join("stats.sock").display().to_string())
        .control(a.out.join("control.sock").display().to_string())
        .remote(a.out.join("remote.sock").display().to_string())
        .worker_entry(|me| {
            println!("READY worker {}", me.id);
            flare::serve_forever()
        })
        .build()?;
    master.run()
}
