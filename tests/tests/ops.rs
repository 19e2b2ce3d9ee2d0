//! Operations: systemd's notify protocol against a fake service manager,
//! and `/metrics` scraped over HTTP and read by Prometheus' own parser.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The fake systemd: a datagram socket the scenario's master writes to.
struct Manager {
    sock: UnixDatagram,
    got: Vec<String>,
}

impl Manager {
    fn bind(path: &std::path::Path) -> Manager {
        let sock = UnixDatagram::bind(path).expect("bind the notify socket");
        sock.set_read_timeout(Some(Duration::from_secs(1)))
            .expect("timeout");
        Manager {
            sock,
            got: Vec::new(),
        }
    }

    /// Waits (with a deadline) for a message containing `state`, keeping
    /// every message seen on the way; returns the matching message.
    fn wait_for(&mut self, state: &str) -> String {
        let deadline = Instant::now() + common::DEADLINE;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            match self.sock.recv(&mut buf) {
                Ok(n) => {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    self.got.push(msg.clone());
                    if msg.lines().any(|l| l == state) {
                        return msg;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("recv: {e}"),
            }
        }
        panic!(
            "no {state} within {:?}; got {:?}",
            common::DEADLINE,
            self.got
        );
    }

    /// Messages other than watchdog pings, in order.
    fn states(&self) -> Vec<String> {
        self.got
            .iter()
            .flat_map(|m| m.lines().map(str::to_owned).collect::<Vec<_>>())
            .filter(|l| l != "WATCHDOG=1")
            .collect()
    }
}

/// Children of a process, from /proc.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[test]
fn systemd_hears_ready_reload_watchdog_and_stopping_in_order() {
    let dir = std::env::temp_dir().join(format!("flare-ops-notify-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("notify.sock");
    let mut systemd = Manager::bind(&path);
    // 200 ms: the master feeds it every 100 ms.
    let mut group = common::start_exe(
        env!("CARGO_BIN_EXE_flare-ops"),
        &["notify", path.to_str().expect("utf-8 path"), "200000"],
    );
    let master: u32 = group.wait_fact("master").parse().expect("pid");

    let ready = systemd.wait_for("READY=1");
    assert!(ready.contains("STATUS=3 processes up"), "{ready}");
    // Every child of the first generation was forked before READY.
    assert_eq!(children(master).len(), 3, "children at READY");

    kill(Pid::from_raw(master as i32), Signal::SIGHUP).expect("SIGHUP");
    let reloading = systemd.wait_for("RELOADING=1");
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading:?}"))
        .parse()
        .expect("a number");
    assert!(usec > 0);
    let again = systemd.wait_for("READY=1");
    assert!(again.contains("STATUS=reload done"), "{again}");

    // Fed at least twice by now or soon (every 100 ms).
    while systemd
        .got
        .iter()
        .filter(|m| m.trim() == "WATCHDOG=1")
        .count()
        < 2
    {
        systemd.wait_for("WATCHDOG=1");
    }

    kill(Pid::from_raw(master as i32), Signal::SIGTERM).expect("SIGTERM");
    systemd.wait_for("STOPPING=1");
    let run = group.finish();
    assert!(run.status.success(), "{:?}", run.status);

    let states: Vec<String> = systemd
        .states()
        .into_iter()
        .filter(|l| !l.starts_with("STATUS=") && !l.starts_with("MONOTONIC_USEC="))
        .collect();
    assert_eq!(
        states,
        ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"],
        "all messages: {:?}",
        systemd.got
    );
    let pings = systemd
        .got
        .iter()
        .filter(|m| m.trim() == "WATCHDOG=1")
        .count();
    assert!(pings >= 2, "{pings} watchdog pings");
    println!("systemd heard: {:?}", systemd.got);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The venv with Prometheus' Python client (its text parser), made on
/// first use; `.ci/run` prepares it up front.
fn prometheus_python() -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let venv = root.join("target/ops-venv");
    let py = venv.join("bin/python");
    let has = |py: &std::path::Path| {
        std::process::Command::new(py)
            .args(["-c", "import prometheus_client.parser"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has(&py) {
        let ok = std::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
            && std::process::Command::new(venv.join("bin/pip"))
                .args([
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "prometheus_client>=0.20,<1",
                ])
                .status()
                .is_ok_and(|s| s.success());
        assert!(
            ok,
            "could not prepare target/ops-venv with prometheus_client"
        );
    }
    py
}

/// Scrapes `url` with urllib and parses it with prometheus_client: the
/// content type, each family's type and every sample, keyed
/// `name{label=value,...}` with the labels sorted.
const SCRAPE: &str = r#"
import json, sys, urllib.request
from prometheus_client.parser import text_string_to_metric_families
with urllib.request.urlopen(sys.argv[1], timeout=60) as r:
    ctype = r.headers["Content-Type"]
    text = r.read().decode()
out = {"content_type": ctype, "families": {}, "samples": {}, "text": text}
for fam in text_string_to_metric_families(text):
    out["families"][fam.name] = fam.type
    for s in fam.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        out["samples"][f"{s.name}{{{labels}}}"] = s.value
print(json.dumps(out))
"#;

/// A raw exchange with the metrics endpoint: what it answers before it
/// closes.
fn http(addr: &str, request: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to metrics");
    s.set_read_timeout(Some(common::DEADLINE)).expect("timeout");
    s.write_all(request).expect("send");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read to the close");
    answer
}

#[test]
fn metrics_scraped_over_http_match_the_stats_document() {
    let py = prometheus_python();
    let mut group = common::start_exe(env!("CARGO_BIN_EXE_flare-ops"), &["metrics"]);
    let metrics = group.wait_fact("metrics");
    let stats = group.wait_fact("stats");
    group.wait_fact("raised");
    // Every raise handled: 5 x signal 7 to both workers, 2 x signal 9.
    let deadline = Instant::now() + common::DEADLINE;
    let doc = loop {
        let doc = flare::stats::fetch(&stats, Duration::from_secs(30)).expect("stats");
        if doc.flare.counters.handled == 12 {
            break doc;
        }
        assert!(
            Instant::now() < deadline,
            "not all handled: {:?}",
            doc.flare.counters
        );
        std::thread::sleep(Duration::from_millis(20));
    };

    let out = std::process::Command::new(&py)
        .args(["-c", SCRAPE, &format!("http://{metrics}/metrics")])
        .output()
        .expect("run the scraper");
    assert!(
        out.status.success(),
        "scrape failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).expect("scraper JSON");
    let sample = |key: &str| {
        got["samples"][key]
            .as_f64()
            .unwrap_or_else(|| panic!("no sample {key} in:\n{}", got["text"]))
    };
    assert!(
        got["content_type"]
            .as_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{}",
        got["content_type"]
    );
    assert_eq!(got["families"]["uwsgi_worker_signals"], "counter");
    assert_eq!(got["families"]["uwsgi_workers"], "gauge");
    assert_eq!(sample("uwsgi_up{}"), 1.0);
    assert_eq!(sample("uwsgi_workers{}"), doc.workers.len() as f64);
    for w in &doc.workers {
        let id = w.id;
        assert_eq!(
            sample(&format!("uwsgi_worker_signals_total{{worker_id={id}}}")),
            w.signals as f64
        );
        assert_eq!(w.signals, 5, "worker {id}");
        assert_eq!(
            sample(&format!(
                "uwsgi_worker_respawn_count_total{{worker_id={id}}}"
            )),
            w.respawn_count as f64
        );
        assert_eq!(
            sample(&format!(
                "uwsgi_worker_harakiri_count_total{{worker_id={id}}}"
            )),
            w.harakiri_count as f64
        );
        assert_eq!(
            sample(&format!("uwsgi_worker_accepting{{worker_id={id}}}")),
            1.0
        );
    }
    let c = &doc.flare.counters;
    for (name, v) in [
        ("flare_signals_raised_total{}", c.raised),
        ("flare_signals_routed_total{}", c.routed),
        ("flare_signals_unrouted_total{}", c.unrouted),
        ("flare_deliveries_total{}", c.delivered),
        ("flare_deliveries_handled_total{}", c.handled),
        ("flare_deliveries_dead_lettered_total{}", c.dead_lettered),
        ("flare_signal_raised_total{num=7}", 5),
        ("flare_signal_handled_total{num=7}", 10),
        ("flare_signal_handled_total{num=9}", 2),
        ("flare_process_handled_total{id=1,role=mule}", 2),
        (
            "flare_process_handled_by_signal_total{id=1,num=9,role=mule}",
            2,
        ),
        (
            "flare_process_handled_by_signal_total{id=2,num=7,role=worker}",
            5,
        ),
        ("flare_processes{role=worker,state=running}", 2),
        ("flare_table_registered{}", 2),
    ] {
        assert_eq!(sample(name), v as f64, "{name}");
    }
    assert_eq!(c.raised, 7);

    // Not the metrics path, not HTTP, a trickle: answered or closed, never
    // left open.
    let not_found = http(&metrics, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(not_found.starts_with("HTTP/1.1 404 "), "{not_found}");
    assert!(not_found.contains("Connection: close\r\n"), "{not_found}");
    let garbage = http(&metrics, b"\x16\x03\x01\x02\x00\x01\x00\r\n\r\n");
    assert!(garbage.starts_with("HTTP/1.1 400 "), "{garbage}");
    // Half a request: closed at the request deadline with no answer.
    let trickle = http(&metrics, b"GET /metr");
    assert_eq!(trickle, "", "a half request got an answer");

    let text = got["text"].as_str().unwrap();
    println!("scrape:\n{text}");
    kill(Pid::from_raw(group.pid() as i32), Signal::SIGTERM).expect("SIGTERM");
    let run = group.finish();
    assert!(run.status.success(), "{:?}", run.status);
}

#[test]
fn json_logs_are_one_object_per_line_with_the_signal_fields() {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_flare-ops"))
        .arg("deadletter")
        .env("FLARE_LOG_FORMAT", "json")
        .env("FLARE_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start flare-ops");
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let master = child.id();
    let deadline = Instant::now() + common::DEADLINE;
    let mut lines = Vec::new();
    let parse = |line: &str| -> serde_json::Value {
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    };
    // Until the dead-letter line.
    let dead = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no dead-letter line; got:\n{}", lines.join("\n")));
        let v = parse(&line);
        lines.push(line);
        if v["outcome"] == "dead_lettered" {
            break v;
        }
    };
    assert_eq!(dead["num"], 5, "{dead}");
    assert_eq!(dead["target"], "worker", "{dead}");
    assert_eq!(dead["proc"], "worker1", "{dead}");
    assert_eq!(dead["origin"], "master", "{dead}");
    assert_eq!(dead["level"], "ERROR", "{dead}");
    assert_eq!(dead["process"], "master", "{dead}");
    assert_eq!(dead["pid"], master, "{dead}");
    assert!(
        dead["message"]
            .as_str()
            .is_some_and(|m| m.contains("dead-lettered")),
        "{dead}"
    );
    kill(Pid::from_raw(master as i32), Signal::SIGTERM).expect("SIGTERM");
    // Every line to the end is JSON too.
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        parse(&line);
        lines.push(line);
    }
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status:?}");
    for l in &lines {
        let v = parse(l);
        for key in ["timestamp", "level", "module", "pid", "process", "message"] {
            assert!(v.get(key).is_some(), "no {key} in {l}");
        }
    }
    println!("{}", lines.join("\n"));
}
