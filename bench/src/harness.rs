//! The harness: runs every scenario on flare and on uWSGI, alternating the
//! two round after round, and collects the figures and the checks.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use serde_json::Value;

use crate::board;
use crate::client;
use crate::node::{NodeScenario, REMOTE, REPORT};
use crate::procs::{self, Node, TempDir};
use crate::report::{Report, Side, Unit, quantile};

/// The scenarios, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Round trips mule 1 -> worker 1 -> mule 1.
    PingPong,
    /// Raise in one process, handler start in another.
    OneWay,
    /// One sender, N signals for `workers` (4 workers).
    Burst,
    /// One signal to all of 2, 8 and 32 workers.
    FanOut,
    /// N signals for `worker` (first available) with 4 workers.
    Pool,
    /// One signal per millisecond for `workers`: the group's CPU time.
    Trickle,
    /// Idle master CPU and memory, per-child memory.
    Resources,
    /// Remote signals through the uwsgi protocol.
    Remote,
    /// Ping-pong and the largest burst with attached workers (processes
    /// flare did not fork), beside the forked rows (flare only).
    Attached,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 9] = [
        Scenario::PingPong,
        Scenario::OneWay,
        Scenario::Burst,
        Scenario::FanOut,
        Scenario::Pool,
        Scenario::Trickle,
        Scenario::Resources,
        Scenario::Remote,
        Scenario::Attached,
    ];
}

/// The sizes of a run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Quick mode: small counts, checks enforced.
    pub quick: bool,
    /// Rounds per side.
    pub rounds: usize,
    /// Ping-pong rounds measured, and rounds run before.
    pub ping_pong: (u64, u64),
    /// One-way rounds measured, and rounds run before.
    pub one_way: (u64, u64),
    /// Burst sizes.
    pub bursts: Vec<u64>,
    /// Workers in the burst and pool groups.
    pub flood_workers: u32,
    /// Fan-out group sizes.
    pub fan_sizes: Vec<u32>,
    /// Fan-out rounds measured, and rounds run before.
    pub fan_rounds: (u64, u64),
    /// Pool signals.
    pub pool: u64,
    /// Trickle signals (one per millisecond).
    pub trickle: u64,
    /// Idle window of the resources scenario.
    pub idle: Duration,
    /// Workers in the resources and remote groups.
    pub workers: u32,
    /// Remote signals with one connection each.
    pub remote_conns: u64,
    /// Remote signals pipelined on one connection.
    pub remote_pipelined: u64,
    /// Requests in flight on the pipelined connection.
    pub window: u64,
    /// How long uWSGI's handled counts must stay still to call a lossy run over.
    pub quiet_ms: u64,
    /// Longest a node may take.
    pub deadline: Duration,
}

impl Plan {
    /// The full run.
    pub fn full(rounds: usize) -> Plan {
        Plan {
            quick: false,
            rounds,
            ping_pong: (20_000, 1_000),
            one_way: (20_000, 1_000),
            bursts: vec![100_000, 1_000_000],
            flood_workers: 4,
            fan_sizes: vec![2, 8, 32],
            fan_rounds: (2_000, 100),
            pool: 100_000,
            trickle: 5_000,
            idle: Duration::from_secs(10),
            workers: 4,
            remote_conns: 5_000,
            remote_pipelined: 100_000,
            window: 64,
            quiet_ms: 500,
            deadline: Duration::from_secs(300),
        }
    }

    /// The quick run: a few seconds, for CI.
    pub fn quick(rounds: usize) -> Plan {
        Plan {
            quick: true,
            rounds,
            ping_pong: (500, 50),
            one_way: (500, 50),
            bursts: vec![2_000, 20_000],
            fan_sizes: vec![2, 8, 32],
            fan_rounds: (40, 5),
            pool: 10_000,
            trickle: 300,
            idle: Duration::from_secs(1),
            remote_conns: 200,
            remote_pipelined: 2_000,
            deadline: Duration::from_secs(60),
            ..Plan::full(rounds)
        }
    }
}

/// A node to start: the scenario and its sizes.
struct Spec {
    scenario: NodeScenario,
    n: u64,
    warmup: u64,
    workers: u32,
    /// A sending mule (mule 1) is part of the group.
    mule: bool,
    /// Where the node listens for remote signals.
    remote: Option<String>,
}

/// What a node reported.
struct Outcome {
    result: Value,
    /// flare: the master's summary.
    summary: Option<Value>,
    /// uWSGI: "SIGNAL QUEUE IS FULL" lines.
    queue_full: u64,
    /// uWSGI: "could not deliver signal" lines (the master's drops).
    not_delivered: u64,
}

/// Runs the scenarios and fills the report.
pub struct Harness {
    plan: Plan,
    exe: PathBuf,
    uwsgi: Option<PathBuf>,
    apps: PathBuf,
    /// A Python with flare's package (`import flare`), for the
    /// Python-handler side; `None` to skip it.
    python: Option<PathBuf>,
    /// flare's busy-poll window, when not the library's default.
    busy_poll_us: Option<u64>,
    /// The figures and checks.
    pub report: Report,
}

impl Harness {
    /// A harness; `uwsgi` is `None` to run flare only.
    pub fn new(
        plan: Plan,
        uwsgi: Option<PathBuf>,
        python: Option<PathBuf>,
        apps: PathBuf,
        busy_poll_us: Option<u64>,
    ) -> Result<Harness, String> {
        let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
        Ok(Harness {
            plan,
            exe,
            uwsgi,
            python,
            apps,
            busy_poll_us,
            report: Report::default(),
        })
    }

    fn sides(&self) -> Vec<Side> {
        let mut sides = vec![Side::Flare];
        if self.python.is_some() {
            sides.push(Side::FlarePy);
        }
        if self.uwsgi.is_some() {
            sides.push(Side::Uwsgi);
        }
        sides
    }

    /// Runs `scenario` for every round, alternating flare and uWSGI.
    pub fn run(&mut self, scenario: Scenario) {
        // Attached workers are flare's alone: no uWSGI or Python side.
        let sides = if scenario == Scenario::Attached {
            vec![Side::Flare]
        } else {
            self.sides()
        };
        for round in 1..=self.plan.rounds {
            for side in sides.clone() {
                let started = Instant::now();
                let outcome = match scenario {
                    Scenario::PingPong => self.latency(side, NodeScenario::PingPong),
                    Scenario::OneWay => self.latency(side, NodeScenario::OneWay),
                    Scenario::Attached => self.attached(side),
                    Scenario::Burst => self.bursts(side),
                    Scenario::FanOut => self.fan_out(side),
                    Scenario::Pool => self.pool(side),
                    Scenario::Resources => self.resources(side),
                    Scenario::Remote => self.remote(side),
                    Scenario::Trickle => self.trickle(side),
                };
                let name = scenario
                    .to_possible_value()
                    .map(|v| v.get_name().to_owned());
                let name = name.unwrap_or_default();
                eprintln!(
                    "[{round}/{}] {name:<10} {:<6} {:>6.1} s{}",
                    self.plan.rounds,
                    side.name(),
                    started.elapsed().as_secs_f64(),
                    if outcome.is_err() { "  FAILED" } else { "" }
                );
                if let Err(e) = outcome {
                    self.report
                        .check(side, &name, false, format!("the run failed: {e}"));
                }
            }
        }
    }

    // ---- starting nodes ----

    fn launch(&self, side: Side, spec: &Spec, dir: &Path) -> Result<Node, String> {
        let name = spec
            .scenario
            .to_possible_value()
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default();
        let label = format!("{} {name} node", side.name());
        let cmd = match side {
            Side::Flare => {
                let mut c = Command::new(&self.exe);
                c.arg("flare-node")
                    .arg(&name)
                    .args(["--n", &spec.n.to_string()])
                    .args(["--warmup", &spec.warmup.to_string()])
                    .args(["--workers", &spec.workers.to_string()])
                    .arg("--out")
                    .arg(dir);
                if let Some(addr) = &spec.remote {
                    c.args(["--remote", addr]);
                }
                if let Some(us) = self.busy_poll_us {
                    c.args(["--busy-poll-us", &us.to_string()]);
                }
                c
            }
            Side::FlarePy => {
                // The very module uWSGI runs, under `python -m flare`: its
                // `import uwsgi` gets flare's compatibility module.
                let python = self.python.as_ref().ok_or("no Python with flare")?;
                let mut c = Command::new(&self.exe);
                c.args(["launch", "--"]).arg(python);
                c.current_dir(dir)
                    .args(["-m", "flare", "--summary"])
                    .args(["--workers", &spec.workers.to_string()])
                    .env("PYTHONPATH", &self.apps)
                    .env("BENCH_SCENARIO", &name)
                    .env("BENCH_N", spec.n.to_string())
                    .env("BENCH_WARMUP", spec.warmup.to_string())
                    .env("BENCH_WORKERS", spec.workers.to_string())
                    .env("BENCH_OUT", dir)
                    .env("BENCH_QUIET_MS", self.plan.quiet_ms.to_string());
                if spec.mule {
                    c.args(["--mules", "1", "--mule-entry", "mule_main"]);
                }
                if let Some(addr) = &spec.remote {
                    c.args(["--remote", addr]);
                }
                if let Some(us) = self.busy_poll_us {
                    c.args(["--busy-poll-us", &us.to_string()]);
                }
                c.arg("flarebench");
                c
            }
            Side::Uwsgi => {
                let uwsgi = self.uwsgi.as_ref().ok_or("uWSGI is not available")?;
                // Through `flare-bench launch`, which makes uWSGI's master
                // die with the harness; --no-orphans does the same for its
                // workers.
                let mut c = Command::new(&self.exe);
                c.args(["launch", "--"]).arg(uwsgi);
                let socket = match &spec.remote {
                    Some(addr) => addr.clone(),
                    None => dir.join("uwsgi.sock").display().to_string(),
                };
                c.current_dir(dir)
                    .args(["--master", "--need-app", "--die-on-term", "--no-orphans"])
                    .args(["--processes", &spec.workers.to_string()])
                    .args(["--socket", &socket])
                    .arg("--pythonpath")
                    .arg(&self.apps)
                    .args(["--module", "flarebench"])
                    .env("BENCH_SCENARIO", &name)
                    .env("BENCH_N", spec.n.to_string())
                    .env("BENCH_WARMUP", spec.warmup.to_string())
                    .env("BENCH_WORKERS", spec.workers.to_string())
                    .env("BENCH_OUT", dir)
                    .env("BENCH_QUIET_MS", self.plan.quiet_ms.to_string());
                if spec.mule {
                    c.arg(format!("--mule={}", self.apps.join("mule.py").display()));
                }
                c
            }
        };
        Node::spawn(cmd, &label)
    }

    /// Starts a node whose sending mule (or master) writes `result.json`;
    /// waits for it, and for flare also for the summary and the exit.
    fn run_to_result(&self, side: Side, spec: &Spec) -> Result<Outcome, String> {
        let dir = TempDir::new(side.tag())?;
        let mut node = self.launch(side, spec, &dir.0)?;
        let deadline = Instant::now() + self.plan.deadline;
        node.expect("RESULT", deadline, |l| l.trim() == "RESULT")?;
        let result = read_result(&node, &dir.0)?;
        let (queue_full, not_delivered) = node.drops();
        let summary = match side {
            // The master's exit, clean, after its summary (the Rust
            // sender stops the group itself; the Python one idles, as
            // under uWSGI, so the harness stops the group: it drains).
            Side::Flare => Some(summary(&mut node, deadline)?),
            Side::FlarePy => {
                node.terminate()?;
                Some(summary(&mut node, deadline)?)
            }
            Side::Uwsgi => None,
        };
        Ok(Outcome {
            result,
            summary,
            queue_full,
            not_delivered,
        })
    }

    // ---- scenarios ----

    /// Ping-pong, one-way, or ping-pong with worker 1 attached.
    fn latency(&mut self, side: Side, kind: NodeScenario) -> Result<(), String> {
        let one_way = kind == NodeScenario::OneWay;
        let (n, warmup) = if one_way {
            self.plan.one_way
        } else {
            self.plan.ping_pong
        };
        if one_way && (n + warmup) as usize > board::MAX_SAMPLES {
            return Err(format!("at most {} one-way rounds", board::MAX_SAMPLES));
        }
        let spec = Spec {
            scenario: kind,
            n,
            warmup,
            workers: 1,
            mule: true,
            remote: None,
        };
        let out = self.run_to_result(side, &spec)?;
        let mut s = samples(&out.result)?;
        // One-way: the round trips of the same rounds give the way back,
        // from the handler's start in worker 1 to wait() returning in mule 1.
        let mut back: Vec<u64> = if one_way {
            u64s(&out.result, "rtt_ns")?
                .iter()
                .zip(&s)
                .map(|(rtt, fwd)| rtt.saturating_sub(*fwd))
                .collect()
        } else {
            Vec::new()
        };
        back.sort_unstable();
        s.sort_unstable();
        let r = &mut self.report;
        let (sc, what) = match kind {
            NodeScenario::OneWay => ("one-way", "send to handler start"),
            NodeScenario::PingPongAttached => ("ping-pong attached", "round trip"),
            _ => ("ping-pong", "round trip"),
        };
        r.check(
            side,
            sc,
            s.len() as u64 == n && s.iter().all(|&v| v > 0),
            format!("{} of {n} rounds completed, each timed", s.len()),
        );
        r.add(
            side,
            sc,
            &format!("{what} p50"),
            Unit::Micros,
            us(quantile(&s, 0.5)),
        );
        r.add(
            side,
            sc,
            &format!("{what} p99"),
            Unit::Micros,
            us(quantile(&s, 0.99)),
        );
        r.add(
            side,
            sc,
            &format!("{what} max"),
            Unit::Micros,
            us(quantile(&s, 1.0)),
        );
        if one_way {
            let what = "handler start to wait() return";
            r.add(
                side,
                sc,
                &format!("{what} p50"),
                Unit::Micros,
                us(quantile(&back, 0.5)),
            );
            r.add(
                side,
                sc,
                &format!("{what} p99"),
                Unit::Micros,
                us(quantile(&back, 0.99)),
            );
        } else {
            r.add(side, sc, "rounds completed", Unit::Count, s.len() as f64);
        }
        Ok(())
    }

    fn bursts(&mut self, side: Side) -> Result<(), String> {
        for n in self.plan.bursts.clone() {
            self.flood(
                side,
                NodeScenario::Burst,
                &format!("burst {}", grouped(n)),
                n,
            )?;
        }
        Ok(())
    }

    /// The attached rows: ping-pong, and the largest burst to `workers`.
    fn attached(&mut self, side: Side) -> Result<(), String> {
        self.latency(side, NodeScenario::PingPongAttached)?;
        let n = self.plan.bursts.iter().max().copied().unwrap_or(1_000_000);
        self.flood(
            side,
            NodeScenario::BurstAttached,
            &format!("burst {} attached", grouped(n)),
            n,
        )
    }

    fn pool(&mut self, side: Side) -> Result<(), String> {
        let n = self.plan.pool;
        self.flood(side, NodeScenario::Pool, &format!("pool {}", grouped(n)), n)
    }

    /// Burst (`workers`) or pool (`worker`): `n` signals from mule 1.
    fn flood(&mut self, side: Side, kind: NodeScenario, sc: &str, n: u64) -> Result<(), String> {
        let k = self.plan.flood_workers;
        let spec = Spec {
            scenario: kind,
            n,
            warmup: 0,
            workers: k,
            mule: true,
            remote: None,
        };
        let out = self.run_to_result(side, &spec)?;
        let res = &out.result;
        let counts = u64s(res, "counts")?;
        let last = u64s(res, "last")?;
        let t0 = u64_at(res, "t0")?;
        let sender_done = u64_at(res, "sender_done")?;
        let per_signal = if matches!(kind, NodeScenario::Burst | NodeScenario::BurstAttached) {
            u64::from(k)
        } else {
            1
        };
        let expected = n * per_signal;
        let handled: u64 = counts.iter().sum();
        let lost = expected.saturating_sub(handled);
        let end = counts
            .iter()
            .zip(&last)
            .filter(|(c, _)| **c > 0)
            .map(|(_, l)| *l)
            .max()
            .unwrap_or(t0);
        let secs = end.saturating_sub(t0) as f64 / 1e9;
        let r = &mut self.report;
        r.add(side, sc, "time to last handler", Unit::Millis, secs * 1e3);
        r.add(
            side,
            sc,
            "handler runs/s",
            Unit::PerSec,
            if secs > 0.0 {
                handled as f64 / secs
            } else {
                0.0
            },
        );
        r.add(
            side,
            sc,
            "sender busy",
            Unit::Millis,
            sender_done.saturating_sub(t0) as f64 / 1e6,
        );
        r.add(side, sc, "handled", Unit::Count, handled as f64);
        r.add(side, sc, "lost", Unit::Count, lost as f64);
        r.check(
            side,
            sc,
            handled <= expected && counts.len() == k as usize,
            format!(
                "{handled} handled of {expected} expected, {} workers reported",
                counts.len()
            ),
        );
        match side {
            Side::Flare | Side::FlarePy => {
                let (dropped, pending, by_summary) = match &out.summary {
                    Some(sum) if side == Side::FlarePy => {
                        let c = &sum["counters"];
                        (
                            u64_at(c, "dropped")?,
                            u64_at(c, "pending_at_exit")?,
                            u64_at(c, "handled")?,
                        )
                    }
                    _ => (
                        u64_at(res, "dropped")?,
                        u64_at(res, "pending_at_exit")?,
                        u64_at(res, "summary_handled")?,
                    ),
                };
                r.add(side, sc, "drops reported", Unit::Count, dropped as f64);
                r.check(
                    side,
                    sc,
                    handled == expected
                        && lost == 0
                        && by_summary == expected
                        && dropped == 0
                        && pending == 0,
                    format!(
                        "handled {handled} == sent {n} x {per_signal}, 0 lost; summary handled \
                         {by_summary}, dropped {dropped}, pending at exit {pending}"
                    ),
                );
            }
            Side::Uwsgi => {
                // Every lost signal is logged once, where a full socket
                // refused it: at the sender (lost for every target) or in
                // the master (lost for one worker).
                let at_master = out.not_delivered;
                let at_sender = out.queue_full.saturating_sub(at_master);
                let explained = at_sender * per_signal + at_master;
                r.add(
                    side,
                    sc,
                    "drops reported",
                    Unit::Count,
                    out.queue_full as f64,
                );
                r.add(
                    side,
                    sc,
                    "lost, not in the log",
                    Unit::Count,
                    lost as f64 - explained as f64,
                );
                r.check(
                    side,
                    sc,
                    lost == explained,
                    format!(
                        "every lost signal is in the log: {lost} lost == {at_sender} refused at \
                         the sender x {per_signal} + {at_master} refused in the master"
                    ),
                );
                if lost > 0 {
                    r.note(
                        "uWSGI's \"drops reported\" are its \"*** SIGNAL QUEUE IS FULL\" log lines, \
                         one per signal a full socket refused: at the sender (lost for every \
                         target) or in the master (\"could not deliver\", lost for one worker)"
                            .into(),
                    );
                }
            }
        }
        if kind == NodeScenario::Pool {
            let mean = handled as f64 / counts.len().max(1) as f64;
            let min = counts.iter().copied().min().unwrap_or(0) as f64;
            let max = counts.iter().copied().max().unwrap_or(0) as f64;
            let var = counts
                .iter()
                .map(|&c| (c as f64 - mean).powi(2))
                .sum::<f64>()
                / counts.len().max(1) as f64;
            r.add(
                side,
                sc,
                "spread: busiest / idlest worker",
                Unit::Ratio,
                if min > 0.0 { max / min } else { f64::INFINITY },
            );
            r.add(
                side,
                sc,
                "spread: stddev / mean",
                Unit::Percent,
                if mean > 0.0 {
                    100.0 * var.sqrt() / mean
                } else {
                    0.0
                },
            );
            if side == Side::Flare {
                r.check(
                    side,
                    sc,
                    counts.iter().sum::<u64>() == n,
                    format!("the spread {counts:?} sums to the {n} signals sent"),
                );
            }
        }
        Ok(())
    }

    fn fan_out(&mut self, side: Side) -> Result<(), String> {
        let (n, warmup) = self.plan.fan_rounds;
        for k in self.plan.fan_sizes.clone() {
            let spec = Spec {
                scenario: NodeScenario::FanOut,
                n,
                warmup,
                workers: k,
                mule: true,
                remote: None,
            };
            let out = self.run_to_result(side, &spec)?;
            let mut s = samples(&out.result)?;
            s.sort_unstable();
            let sc = format!("fan-out {k}");
            let r = &mut self.report;
            r.check(
                side,
                &sc,
                s.len() as u64 == n,
                format!("{} of {n} rounds reached all {k} workers", s.len()),
            );
            r.add(
                side,
                &sc,
                "all handlers ran p50",
                Unit::Micros,
                us(quantile(&s, 0.5)),
            );
            r.add(
                side,
                &sc,
                "all handlers ran p99",
                Unit::Micros,
                us(quantile(&s, 0.99)),
            );
            if side == Side::Flare {
                self.fan_out_floor(k)?;
            }
        }
        Ok(())
    }

    /// The kernel's floor under fan-out K: the same hops with plain pipes
    /// and no runtime (`floor.rs`), run with flare's rounds. Its figures
    /// sit in the flare column, under their own scenario name.
    fn fan_out_floor(&mut self, k: u32) -> Result<(), String> {
        let (n, warmup) = self.plan.fan_rounds;
        let spec = Spec {
            scenario: NodeScenario::FanOutFloor,
            n,
            warmup,
            workers: k,
            mule: false,
            remote: None,
        };
        let dir = TempDir::new("floor")?;
        let mut node = self.launch(Side::Flare, &spec, &dir.0)?;
        let deadline = Instant::now() + self.plan.deadline;
        node.expect("RESULT", deadline, |l| l.trim() == "RESULT")?;
        let result = read_result(&node, &dir.0)?;
        node.expect("SUMMARY line", deadline, |l| l.starts_with("SUMMARY "))?;
        let mut s = samples(&result)?;
        s.sort_unstable();
        let sc = format!("fan-out {k}: kernel floor");
        let r = &mut self.report;
        r.check(
            Side::Flare,
            &sc,
            s.len() as u64 == n,
            format!("{} of {n} rounds reached all {k} readers", s.len()),
        );
        r.add(
            Side::Flare,
            &sc,
            "all readers woke p50",
            Unit::Micros,
            us(quantile(&s, 0.5)),
        );
        r.add(
            Side::Flare,
            &sc,
            "all readers woke p99",
            Unit::Micros,
            us(quantile(&s, 0.99)),
        );
        Ok(())
    }

    /// One signal per millisecond for `workers`: what the whole group
    /// (master, workers, sender) spends in CPU time meanwhile.
    fn trickle(&mut self, side: Side) -> Result<(), String> {
        let n = self.plan.trickle;
        let k = self.plan.flood_workers;
        let spec = Spec {
            scenario: NodeScenario::Trickle,
            n,
            warmup: 0,
            workers: k,
            mule: true,
            remote: None,
        };
        let dir = TempDir::new(side.tag())?;
        let mut node = self.launch(side, &spec, &dir.0)?;
        let deadline = Instant::now() + self.plan.deadline;
        node.expect("START", deadline, |l| l.trim() == "START")?;
        let pid = node.pid();
        let mut pids = procs::children(pid)?;
        pids.push(pid);
        let cpu =
            |pids: &[u32]| -> Result<u64, String> { pids.iter().map(|&p| procs::cpu_ns(p)).sum() };
        let cpu0 = cpu(&pids)?;
        let start = Instant::now();
        node.expect("RESULT", deadline, |l| l.trim() == "RESULT")?;
        let cpu1 = cpu(&pids)?;
        let window = start.elapsed().as_secs_f64();
        let result = read_result(&node, &dir.0)?;
        let handled: u64 = u64s(&result, "counts")?.iter().sum();
        let summary = match side {
            Side::Flare | Side::FlarePy => {
                node.terminate()?;
                Some(summary(&mut node, deadline)?)
            }
            Side::Uwsgi => None,
        };
        drop(node);
        let expected = n * u64::from(k);
        let sc = format!("trickle, 1 signal/ms to {k} workers");
        let cpu_us = cpu1.saturating_sub(cpu0) as f64 / 1e3;
        let r = &mut self.report;
        r.add(
            side,
            &sc,
            "CPU per signal, whole group",
            Unit::Micros,
            cpu_us / n.max(1) as f64,
        );
        r.add(
            side,
            &sc,
            "whole group CPU",
            Unit::Percent,
            cpu_us / 1e4 / window,
        );
        r.add(side, &sc, "handled", Unit::Count, handled as f64);
        r.add(
            side,
            &sc,
            "lost",
            Unit::Count,
            expected.saturating_sub(handled) as f64,
        );
        let ok = match &summary {
            Some(s) => {
                handled == expected
                    && s["counters"]["dropped"].as_u64() == Some(0)
                    && s["counters"]["pending_at_exit"].as_u64() == Some(0)
            }
            None => handled <= expected,
        };
        r.check(side, &sc, ok, format!("{handled} handled of {n} x {k}"));
        Ok(())
    }

    fn resources(&mut self, side: Side) -> Result<(), String> {
        let k = self.plan.workers;
        let spec = Spec {
            scenario: NodeScenario::Resources,
            n: 0,
            warmup: 0,
            workers: k,
            mule: false,
            remote: None,
        };
        let dir = TempDir::new(side.tag())?;
        let mut node = self.launch(side, &spec, &dir.0)?;
        let deadline = Instant::now() + self.plan.deadline;
        node.expect_n("READY worker", k as usize, deadline)?;
        let pid = node.pid();
        let cpu0 = procs::cpu_ns(pid)?;
        let sw0 = procs::switches(pid)?;
        let start = Instant::now();
        // The idle window is what is measured, not a synchronisation.
        std::thread::sleep(self.plan.idle);
        let cpu1 = procs::cpu_ns(pid)?;
        let sw1 = procs::switches(pid)?;
        let window = start.elapsed().as_secs_f64();
        let master = procs::mem(pid)?;
        let kids = procs::children(pid)?;
        let mems = kids
            .iter()
            .map(|&c| procs::mem(c))
            .collect::<Result<Vec<_>, _>>()?;
        drop(node);
        let sc = "resources";
        let mean = |f: fn(&procs::Mem) -> u64| {
            mems.iter().map(f).sum::<u64>() as f64 / mems.len().max(1) as f64 / 1024.0
        };
        let r = &mut self.report;
        r.check(
            side,
            sc,
            kids.len() == k as usize && master.rss > 0,
            format!(
                "{} children of {k} found, master RSS {} KiB",
                kids.len(),
                master.rss
            ),
        );
        let cpu_ms = cpu1.saturating_sub(cpu0) as f64 / 1e6;
        r.add(
            side,
            sc,
            "master RSS",
            Unit::MiB,
            master.rss as f64 / 1024.0,
        );
        r.add(
            side,
            sc,
            "master USS (private)",
            Unit::MiB,
            master.uss as f64 / 1024.0,
        );
        r.add(
            side,
            sc,
            "master CPU while idle",
            Unit::Percent,
            cpu_ms / 10.0 / window,
        );
        r.add(side, sc, "master CPU time while idle", Unit::Millis, cpu_ms);
        r.add(
            side,
            sc,
            "master wake-ups while idle",
            Unit::PerSec,
            sw1.saturating_sub(sw0) as f64 / window,
        );
        r.add(side, sc, "child RSS (mean)", Unit::MiB, mean(|m| m.rss));
        r.add(side, sc, "child PSS (mean)", Unit::MiB, mean(|m| m.pss));
        r.add(side, sc, "child USS (mean)", Unit::MiB, mean(|m| m.uss));
        Ok(())
    }

    fn remote(&mut self, side: Side) -> Result<(), String> {
        let conns = self.plan.remote_conns;
        let piped = self.plan.remote_pipelined;
        let window = self.plan.window;
        self.remote_mode(side, "remote, 1 connection per signal", conns, |a| {
            client::per_connection(a, REMOTE.num(), conns)
        })?;
        self.remote_mode(
            side,
            &format!("remote, pipelined ({window} in flight)"),
            piped,
            |a| client::pipelined(a, REMOTE.num(), piped, window),
        )
    }

    fn remote_mode(
        &mut self,
        side: Side,
        sc: &str,
        n: u64,
        drive: impl FnOnce(&str) -> client::Tally,
    ) -> Result<(), String> {
        let k = self.plan.workers;
        let addr = match side {
            Side::Flare => "127.0.0.1:0".to_owned(),
            Side::Uwsgi | Side::FlarePy => format!("127.0.0.1:{}", free_port()?),
        };
        // flarebench.py reports from its mule when asked (REPORT).
        let python = side != Side::Flare;
        let spec = Spec {
            scenario: NodeScenario::Remote,
            n,
            warmup: 0,
            workers: k,
            mule: python,
            remote: Some(addr.clone()),
        };
        let dir = TempDir::new(side.tag())?;
        let mut node = self.launch(side, &spec, &dir.0)?;
        let deadline = Instant::now() + self.plan.deadline;
        let addr = match side {
            Side::Flare => node
                .expect("LISTENING line", deadline, |l| l.starts_with("LISTENING "))?
                .trim_start_matches("LISTENING ")
                .trim()
                .to_owned(),
            Side::Uwsgi | Side::FlarePy => addr,
        };
        node.expect_n("READY worker", k as usize, deadline)?;
        let tally = drive(&addr);
        // Ask for the handled counts: flare drains on SIGTERM and reports;
        // flarebench.py's mule reports once its counts stay still.
        if python {
            flare::send_remote(&addr, REPORT.num(), Duration::from_secs(4))
                .map_err(|e| format!("asking the mule for its counts: {e}"))?;
        } else {
            node.terminate()?;
        }
        node.expect("RESULT", deadline, |l| l.trim() == "RESULT")?;
        let result = read_result(&node, &dir.0)?;
        let handled: u64 = u64s(&result, "counts")?.iter().sum();
        let summary = match side {
            Side::Flare => Some(summary(&mut node, deadline)?),
            Side::FlarePy => {
                node.terminate()?;
                Some(summary(&mut node, deadline)?)
            }
            Side::Uwsgi => None,
        };
        drop(node);
        let secs = tally.elapsed.as_secs_f64();
        let r = &mut self.report;
        r.add(
            side,
            sc,
            "accepted signals/s",
            Unit::PerSec,
            if secs > 0.0 {
                tally.accepted as f64 / secs
            } else {
                0.0
            },
        );
        r.add(side, sc, "accepted", Unit::Count, tally.accepted as f64);
        r.add(side, sc, "rejected", Unit::Count, tally.rejected as f64);
        r.add(side, sc, "no reply", Unit::Count, tally.unanswered as f64);
        r.add(side, sc, "handled", Unit::Count, handled as f64);
        if let Some(e) = &tally.first_error {
            let why = if side == Side::Uwsgi && n > 1 && tally.accepted + tally.rejected == 1 {
                "uWSGI answers the first request of a connection, then closes it: "
            } else {
                ""
            };
            r.note(format!("{sc}, {}: {why}{e}", side.name()));
        }
        r.check(
            side,
            sc,
            tally.accepted + tally.rejected + tally.unanswered == n,
            format!(
                "{} accepted + {} rejected + {} unanswered == {n} sent",
                tally.accepted, tally.rejected, tally.unanswered
            ),
        );
        if let Some(s) = summary {
            let c = &s["counters"];
            // The Python side's REPORT request is one more accepted signal.
            let by_master = c["remote_accepted"]
                .as_u64()
                .map_or(u64::MAX, |a| a.saturating_sub(u64::from(python)));
            r.check(
                side,
                sc,
                tally.accepted == n && handled == tally.accepted && by_master == tally.accepted,
                format!(
                    "accepted {} of {n}, handled {handled}, master counted {by_master} accepted",
                    tally.accepted
                ),
            );
        }
        Ok(())
    }
}

impl Harness {
    /// Judges the project's targets on the medians of this run.
    pub fn judge_targets(&mut self) {
        let r = &mut self.report;
        let med = |r: &Report, side, sc: &str, m: &str| r.stats(side, sc, m).map(|s| s.median);
        // A target, met or not with its figures; `None`: not measured.
        let judge = |r: &mut Report, what: &str, outcome: Option<(bool, String)>| match outcome {
            Some((met, figures)) => r.target(what, Some(met), figures),
            None => r.target(what, None, "not measured".into()),
        };
        for n in self.plan.bursts.clone() {
            let sc = format!("burst {}", grouped(n));
            let f = med(r, Side::Flare, &sc, "handler runs/s");
            let u = med(r, Side::Uwsgi, &sc, "handler runs/s");
            let lost = r.stats(Side::Flare, &sc, "lost").map(|s| s.max);
            let outcome = match (f, u, lost) {
                (Some(f), Some(u), Some(lost)) if u > 0.0 => Some((
                    f / u >= 20.0 && lost == 0.0,
                    format!(
                        "{:.1}x uWSGI's handler runs/s, flare lost at most {lost}",
                        f / u
                    ),
                )),
                _ => None,
            };
            judge(
                r,
                &format!("{sc}: throughput >= 20x uWSGI with 0 lost"),
                outcome,
            );
        }
        let f = med(r, Side::Flare, "ping-pong", "round trip p50");
        let u = med(r, Side::Uwsgi, "ping-pong", "round trip p50");
        let outcome = match (f, u) {
            (Some(f), Some(u)) if u > 0.0 => Some((
                f / u <= 0.5,
                format!("flare {f:.1} µs, uWSGI {u:.1} µs: {:.2}x", f / u),
            )),
            _ => None,
        };
        judge(r, "ping-pong p50 <= 0.5x uWSGI", outcome);
        let a = med(r, Side::Flare, "ping-pong attached", "round trip p50");
        let outcome = match (a, f) {
            (Some(a), Some(f)) if f > 0.0 => Some((
                a <= 1.5 * f,
                format!("attached {a:.1} µs, forked {f:.1} µs: {:.2}x", a / f),
            )),
            _ => None,
        };
        judge(r, "attached ping-pong p50 <= 1.5x forked", outcome);
        let n = self.plan.bursts.iter().max().copied().unwrap_or(1_000_000);
        let forked = format!("burst {}", grouped(n));
        let attached = format!("{forked} attached");
        let fr = med(r, Side::Flare, &forked, "handler runs/s");
        let ar = med(r, Side::Flare, &attached, "handler runs/s");
        let lost = r.stats(Side::Flare, &attached, "lost").map(|s| s.max);
        let outcome = match (ar, fr, lost) {
            (Some(a), Some(f), Some(lost)) if f > 0.0 => Some((
                a >= 0.5 * f && lost == 0.0,
                format!(
                    "attached {:.0} k/s, forked {:.0} k/s: {:.2}x; lost at most {lost}",
                    a / 1e3,
                    f / 1e3,
                    a / f
                ),
            )),
            _ => None,
        };
        judge(
            r,
            &format!("{attached}: >= 0.5x the forked rate with 0 lost"),
            outcome,
        );
        let big = self.plan.fan_sizes.iter().max().copied().unwrap_or(32);
        let small = self.plan.fan_sizes.iter().min().copied().unwrap_or(2);
        let p99 = "all handlers ran p99";
        let b = med(r, Side::Flare, &format!("fan-out {big}"), p99);
        let s = med(r, Side::Flare, &format!("fan-out {small}"), p99);
        let floor = |r: &Report, k: u32| {
            med(
                r,
                Side::Flare,
                &format!("fan-out {k}: kernel floor"),
                "all readers woke p99",
            )
        };
        let floor_figures = match (floor(r, big), floor(r, small)) {
            (Some(fb), Some(fs)) if fs > 0.0 => format!(
                "; the kernel floor (plain pipes, no runtime): {fb:.1} µs to {big}, {fs:.1} µs \
                 to {small}: {:.2}x",
                fb / fs
            ),
            _ => String::new(),
        };
        let outcome = match (b, s) {
            (Some(b), Some(s)) if s > 0.0 => Some((
                b <= 2.0 * s,
                format!(
                    "flare p99 {b:.1} µs to {big}, {s:.1} µs to {small}: {:.2}x{floor_figures}",
                    b / s
                ),
            )),
            _ => None,
        };
        judge(
            r,
            &format!("fan-out to {big} workers p99 <= 2x fan-out to {small}"),
            outcome,
        );
        let cpu = med(r, Side::Flare, "resources", "master CPU while idle");
        let rss = med(r, Side::Flare, "resources", "master RSS");
        let outcome = match (cpu, rss) {
            (Some(c), Some(m)) => Some((
                c <= 0.1 && m <= 8.0,
                format!("flare master {c:.3} % of a core, RSS {m:.2} MiB"),
            )),
            _ => None,
        };
        judge(r, "idle master CPU ~0 (<= 0.1 %) and RSS <= 8 MiB", outcome);
    }
}

/// Reads `dir/result.json`; a result with an `error` is a failure.
fn read_result(node: &Node, dir: &Path) -> Result<Value, String> {
    let path = dir.join("result.json");
    let text =
        std::fs::read(&path).map_err(|e| node.failure(&format!("{}: {e}", path.display())))?;
    let v: Value =
        serde_json::from_slice(&text).map_err(|e| node.failure(&format!("result.json: {e}")))?;
    if let Some(e) = v.get("error") {
        return Err(node.failure(&format!("reported an error: {e}")));
    }
    Ok(v)
}

/// Waits for a flare master's `SUMMARY` line and its exit.
fn summary(node: &mut Node, deadline: Instant) -> Result<Value, String> {
    let line = node.expect("SUMMARY line", deadline, |l| l.starts_with("SUMMARY "))?;
    let v = serde_json::from_str(line.trim_start_matches("SUMMARY "))
        .map_err(|e| node.failure(&format!("summary: {e}")))?;
    let status = node.wait_exit(deadline)?;
    if !status.success() {
        return Err(node.failure(&format!("master exited with {status}")));
    }
    Ok(v)
}

fn samples(v: &Value) -> Result<Vec<u64>, String> {
    u64s(v, "samples_ns")
}

fn u64s(v: &Value, key: &str) -> Result<Vec<u64>, String> {
    v.get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| format!("result without `{key}`"))?
        .iter()
        .map(|x| {
            x.as_u64()
                .ok_or_else(|| format!("`{key}`: {x} is not a count"))
        })
        .collect()
}

fn u64_at(v: &Value, key: &str) -> Result<u64, String> {
    v.get(key)
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("result without `{key}`"))
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1e3
}

fn grouped(n: u64) -> String {
    crate::report::fmt(n as f64, Unit::Count)
}

/// A TCP port free right now on 127.0.0.1 (for uWSGI, which cannot say
/// which port it got for port 0).
fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("free port: {e}"))
}
