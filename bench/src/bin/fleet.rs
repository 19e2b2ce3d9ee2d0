//! Fleet benchmark: fan-out latency across 3 nodes next to the same
//! fan-out inside one node, and fleet signals per second through one
//! bridge. `bash bench/fleet.sh [ROUNDS]` (docs/benchmarks.md).
//!
//! `flare-fleet-bench run NATS_SERVER ROUNDS`: starts nats-server on a
//! free port and three nodes (`node NAME URL ROUNDS`, this binary again;
//! 2 workers each), then reads what the nodes print:
//!
//! - worker 1 of node a, once all 3 nodes are live, runs ROUNDS rounds of
//!   `fleet::send("fleet:workers", 17)` (printing `SENT0 round ns` just
//!   before each send), then ROUNDS rounds of a local `workers` signal 18
//!   (`SENT1`), 20 ms apart, then 4 threads x ROUNDS sends of
//!   `fleet:workers` as fast as they go (`RATE n secs`);
//! - every handler prints `H<k> node worker ns` at its start (k: 0 fleet,
//!   1 local); the i-th handler of a number in a worker is round i.
//!
//! Latency of a round: the last handler start of that round minus its
//! send time (all processes on this machine: one clock).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use flare::{Master, Signal};

const FLEET: &str = "bench";

fn ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn out(line: String) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{line}");
    let _ = o.flush();
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("node") if args.len() == 4 => node(&args[1], &args[2], args[3].parse().unwrap_or(200)),
        Some("run") if args.len() == 3 => run(&args[1], args[2].parse().unwrap_or(200)),
        _ => {
            eprintln!("usage: flare-fleet-bench run NATS_SERVER ROUNDS");
            2
        }
    };
    std::process::exit(code);
}

fn node(name: &str, url: &str, rounds: u64) -> i32 {
    let n = name.to_owned();
    let mut o = flare::fleet::FleetOptions::new(url, FLEET, name);
    o.reply_timeout = Duration::from_secs(5);
    let sender = name == "a";
    let url2 = url.to_owned();
    let master = Master::builder()
        .workers(2)
        .fleet_options(o)
        .worker_entry(move |me| {
            if sender && me.id == 1 {
                drive(&url2, rounds);
            }
            flare::serve_forever();
        })
        .build();
    let master = match master {
        Ok(m) => m,
        Err(e) => {
            eprintln!("node {n}: {e}");
            return 1;
        }
    };
    for (num, k) in [(17u8, 0), (18, 1)] {
        let who = n.clone();
        let r = Signal::new(num).register_handler("workers", move |_| {
            let id = flare::whoami().map_or(0, |p| p.id);
            out(format!("H{k} {who} {id} {}", ns()));
        });
        if let Err(e) = r {
            eprintln!("node {n}: {e}");
            return 1;
        }
    }
    match master.run() {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("node {n}: {e}");
            1
        }
    }
}

/// Worker 1 of node a: the rounds.
fn drive(url: &str, rounds: u64) {
    // Wait until the 3 nodes are live (read from outside the group).
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let live = flare::fleet::Client::connect(url, FLEET)
            .and_then(|c| c.nodes())
            .unwrap_or_default();
        if live.len() == 3 {
            break;
        }
        if Instant::now() > end {
            out("ERROR never 3 live nodes".into());
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for i in 0..rounds {
        out(format!("SENT0 {i} {}", ns()));
        if let Err(e) = flare::fleet::send("fleet:workers", 17) {
            out(format!("ERROR {e}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for i in 0..rounds {
        out(format!("SENT1 {i} {}", ns()));
        let _ = Signal::new(18).send();
        std::thread::sleep(Duration::from_millis(20));
    }
    // Throughput: 4 threads through this node's bridge.
    let done = AtomicU64::new(0);
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..rounds {
                    if flare::fleet::send("fleet:workers", 19).is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    out(format!(
        "RATE {} {}",
        done.load(Ordering::Relaxed),
        t0.elapsed().as_secs_f64()
    ));
}

struct Kill(Vec<Child>);

impl Drop for Kill {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.wait();
        }
    }
}

fn pct(v: &mut [u64], p: f64) -> f64 {
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or(0) as f64 / 1000.0
}

fn run(server: &str, rounds: u64) -> i32 {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(4222);
    let store = std::env::temp_dir().join(format!("flare-fleet-bench-{}", std::process::id()));
    let mut procs = Kill(Vec::new());
    match Command::new(server)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(&store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => procs.0.push(c),
        Err(e) => {
            eprintln!("cannot start {server}: {e}");
            return 1;
        }
    }
    let end = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > end {
            eprintln!("nats-server never listened");
            return 1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let url = format!("nats://127.0.0.1:{port}");
    let exe = std::env::current_exe().unwrap_or_default();
    let (tx, rx) = channel::<String>();
    for name in ["a", "b", "c"] {
        let mut c = match Command::new(&exe)
            .args(["node", name, &url, &rounds.to_string()])
            .stdout(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("cannot start node {name}: {e}");
                return 1;
            }
        };
        let Some(stdout) = c.stdout.take() else {
            return 1;
        };
        procs.0.push(c);
        let tx = tx.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
    }
    let mut sent: [HashMap<u64, u64>; 2] = [HashMap::new(), HashMap::new()];
    // (kind, node, worker) -> handlers seen; (kind, round) -> last start.
    let mut seen: HashMap<(usize, String, String), u64> = HashMap::new();
    let mut last: [HashMap<u64, (u64, u32)>; 2] = [HashMap::new(), HashMap::new()];
    let mut rate = None;
    let deadline = Instant::now() + Duration::from_secs(60 + rounds / 5);
    while rate.is_none() && Instant::now() < deadline {
        let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        let f: Vec<&str> = l.split_whitespace().collect();
        match f.as_slice() {
            [k @ ("SENT0" | "SENT1"), i, t] => {
                let k = usize::from(*k == "SENT1");
                sent[k].insert(i.parse().unwrap_or(0), t.parse().unwrap_or(0));
            }
            [h @ ("H0" | "H1"), node, w, t] => {
                let k = usize::from(*h == "H1");
                let c = seen
                    .entry((k, node.to_string(), w.to_string()))
                    .or_default();
                let round = *c;
                *c += 1;
                let e = last[k].entry(round).or_default();
                e.0 = e.0.max(t.parse().unwrap_or(0));
                e.1 += 1;
            }
            ["RATE", n, secs] => {
                let n: f64 = n.parse().unwrap_or(0.0);
                let s: f64 = secs.parse().unwrap_or(1.0);
                rate = Some((n, n / s));
            }
            ["ERROR", ..] => eprintln!("{l}"),
            _ => {}
        }
    }
    let lat = |k: usize, want: u32| -> Vec<u64> {
        (0..rounds)
            .filter_map(|i| {
                let t0 = sent[k].get(&i)?;
                let (t, n) = last[k].get(&i)?;
                (*n >= want).then(|| t.saturating_sub(*t0))
            })
            .collect()
    };
    let mut fleet = lat(0, 6);
    let mut local = lat(1, 2);
    println!(
        "fleet fan-out, fleet:workers from node a to 6 workers on 3 nodes: p50 {:.0} us, p99 {:.0} us ({} of {rounds} rounds complete)",
        pct(&mut fleet, 0.5),
        pct(&mut fleet, 0.99),
        fleet.len()
    );
    println!(
        "local fan-out, workers inside node a (2 workers): p50 {:.0} us, p99 {:.0} us ({} of {rounds} rounds)",
        pct(&mut local, 0.5),
        pct(&mut local, 0.99),
        local.len()
    );
    match rate {
        Some((n, r)) => println!(
            "fleet signals through one bridge: {n:.0} fleet:workers sends from 4 threads, {r:.0}/s (each answered by 3 nodes)"
        ),
        None => println!("fleet throughput: not measured (timed out)"),
    }
    drop(procs);
    let _ = std::fs::remove_dir_all(&store);
    i32::from(fleet.len() as u64 != rounds || local.len() as u64 != rounds || rate.is_none())
}
