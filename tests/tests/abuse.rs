//! The master's endpoints under abuse: hostile connection floods do not
//! lock remote signals out, clients that never read cannot grow the
//! master's memory, and other users cannot use the Unix sockets.
//!
//! The group runs in its own process (`flare-abuse group`); the attackers
//! are threads here.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use flare::{send_remote, uwsgi};
use serde_json::Value;

mod common;

const T: Duration = Duration::from_secs(10);
const DEADLINE: Duration = Duration::from_secs(120);

/// The group under test.
struct Group {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Group {
    fn start(remote: &str, stats: &str, control: &str, uid: Option<u32>) -> Group {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_flare-abuse"));
        cmd.args(["group", remote, stats, control]);
        if let Some(u) = uid {
            cmd.arg(u.to_string());
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start flare-abuse");
        let out = child.stdout.take().expect("stdout");
        let rx = common::lines_of(out);
        let mut g = Group {
            child,
            lines: rx,
            seen: Vec::new(),
        };
        g.fact("ready");
        g
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn fact(&mut self, key: &str) -> String {
        let prefix = format!("FACT {key}=");
        if let Some(v) = self.seen.iter().find_map(|l| l.strip_prefix(&prefix)) {
            return v.to_owned();
        }
        loop {
            let line = self
                .lines
                .recv_timeout(DEADLINE)
                .unwrap_or_else(|e| panic!("no FACT {key} ({e}): {:?}", self.seen));
            self.seen.push(line.clone());
            if let Some(v) = line.strip_prefix(&prefix) {
                return v.to_owned();
            }
        }
    }

    /// SIGTERM, then the summary.
    fn stop(mut self) -> Value {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        let summary = loop {
            match self.lines.recv_timeout(DEADLINE) {
                Ok(l) => {
                    if let Some(j) = l.strip_prefix("SUMMARY ") {
                        break serde_json::from_str::<Value>(j).expect("summary is JSON");
                    }
                }
                Err(e) => panic!("no summary ({e})"),
            }
        };
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "the group failed: {status}");
        summary
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn counter(summary: &Value, name: &str) -> u64 {
    summary["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name}"))
}

/// Counters of the running group, from its stats endpoint.
fn live_counters(stats: &str) -> Value {
    let doc = flare::stats::fetch(stats, T).expect("stats answered");
    serde_json::to_value(&doc.flare.counters).expect("counters")
}

/// Raises the soft limit on open files to the hard limit (root may lift
/// the hard limit to 8,192 too): the attack needs a few thousand
/// descriptors.
fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    let want = hard.max(8192);
    if setrlimit(Resource::RLIMIT_NOFILE, want, want).is_ok() {
        return want;
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
    assert!(
        hard >= 3000,
        "the attack needs about 2,500 descriptors; RLIMIT_NOFILE's hard limit is {hard}"
    );
    hard
}

fn abstract_name(what: &str) -> String {
    format!("@flare-abuse-{}-{what}", std::process::id())
}

/// A TCP connection to `to` from the loopback address `from`.
fn connect_from(from: Ipv4Addr, to: SocketAddr) -> Option<TcpStream> {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, setsockopt, socket, sockopt,
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .ok()?;
    let limit = nix::sys::time::TimeVal::new(1, 0);
    setsockopt(&fd, sockopt::SendTimeout, &limit).ok()?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(std::net::SocketAddrV4::new(from, 0)),
    )
    .ok()?;
    let SocketAddr::V4(to) = to else { return None };
    connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(to)).ok()?;
    let s = TcpStream::from(fd);
    s.set_nonblocking(true).ok()?;
    Some(s)
}

/// What one hostile connection does.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Hostile {
    /// One byte of a request every other second: slower than the deadline.
    Slowloris,
    /// Says nothing.
    Silent,
    /// Numbers off the allow-list, sixteen at a time.
    Rejected,
    /// Not the uwsgi protocol at all.
    Garbage,
}

/// Keeps `n` hostile connections from `from` to `to` open (reconnecting
/// what the server closes) until `stop`.
fn attack(
    from: [Ipv4Addr; 2],
    to: SocketAddr,
    n: usize,
    stop: Arc<AtomicBool>,
    connects: Arc<AtomicU64>,
) {
    let mode = |i: usize| match i % 10 {
        0..=3 => Hostile::Slowloris,
        4..=6 => Hostile::Silent,
        7 | 8 => Hostile::Rejected,
        _ => Hostile::Garbage,
    };
    let request = uwsgi::signal_request(17);
    let rejected: Vec<u8> = (0..16).flat_map(|_| uwsgi::signal_request(99)).collect();
    // (stream, bytes of `request` sent, when the last byte went)
    let mut conns: Vec<Option<(TcpStream, usize, Instant)>> = (0..n).map(|_| None).collect();
    let mut sink = [0u8; 4096];
    while !stop.load(SeqCst) {
        for (i, slot) in conns.iter_mut().enumerate() {
            if stop.load(SeqCst) {
                break;
            }
            let closed = match slot {
                None => true,
                Some((s, _, _)) => match s.read(&mut sink) {
                    Ok(0) => true,
                    Ok(_) => false,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => false,
                    Err(_) => true,
                },
            };
            if closed {
                *slot = connect_from(from[i % 2], to).map(|s| {
                    connects.fetch_add(1, SeqCst);
                    (s, 0, Instant::now() - Duration::from_secs(10))
                });
            }
            let Some((s, sent, last)) = slot else {
                continue;
            };
            let ok = match mode(i) {
                Hostile::Slowloris if last.elapsed() >= Duration::from_secs(2) => {
                    *last = Instant::now();
                    let r = s.write(&request[*sent % 4..*sent % 4 + 1]);
                    *sent += 1;
                    r.is_ok()
                }
                Hostile::Rejected => s.write(&rejected).is_ok(),
                Hostile::Garbage if *sent == 0 => {
                    *sent = 1;
                    s.write(b"GET / HTTP/1.0\r\n\r\n").is_ok()
                }
                _ => true,
            };
            if !ok {
                *slot = None;
            }
        }
        std::thread::sleep(Duration::from_millis(200)); // the attack's pace
    }
}

/// Point 2: 2,000 hostile connections (slowloris, rejected-number floods,
/// garbage, silence) cannot lock out a legitimate sender.
#[test]
fn remote_signals_get_through_two_thousand_hostile_connections() {
    raise_fd_limit();
    let (stats, control) = (abstract_name("stats-2"), abstract_name("control-2"));
    let mut g = Group::start("127.0.0.1:0", &stats, &control, None);
    let addr = g.fact("remote");
    let to: SocketAddr = addr.parse().expect("a TCP address");
    let stop = Arc::new(AtomicBool::new(false));
    let connects = Arc::new(AtomicU64::new(0));
    // Fifteen attacking addresses, and the legitimate client's own: past
    // the limit per peer (64) and, together, past the total (1,024).
    let mut attackers = Vec::new();
    for t in 0..8u8 {
        let mut from = [
            Ipv4Addr::new(127, 0, 0, 2 + 2 * t),
            Ipv4Addr::new(127, 0, 0, 3 + 2 * t),
        ];
        if t == 7 {
            from[1] = Ipv4Addr::LOCALHOST;
        }
        let (stop, connects) = (stop.clone(), connects.clone());
        attackers.push(std::thread::spawn(move || {
            attack(from, to, 250, stop, connects)
        }));
    }
    let started = Instant::now();
    while connects.load(SeqCst) < 2000 {
        assert!(started.elapsed() < DEADLINE, "the attack never got going");
        std::thread::sleep(Duration::from_millis(20)); // polling a counter
    }
    // Legitimate senders, until the master has seen each kind of attack
    // and dealt with it (counters), and at least 200 of them.
    let mut times = Vec::new();
    loop {
        let t0 = Instant::now();
        send_remote(&addr, 17, T).unwrap_or_else(|e| {
            panic!(
                "legitimate signal {} failed under attack: {e}",
                times.len() + 1
            )
        });
        times.push(t0.elapsed());
        if times.len() >= 200 && times.len() % 20 == 0 {
            let c = live_counters(&stats);
            let seen = |k: &str| c[k].as_u64().unwrap_or(0) > 0;
            if [
                "remote_evicted",
                "remote_closed_rejected",
                "remote_malformed",
            ]
            .iter()
            .all(|k| seen(k))
            {
                break;
            }
            assert!(started.elapsed() < DEADLINE, "counters never moved: {c}");
        }
        std::thread::sleep(Duration::from_millis(10)); // the sender's pace
    }
    stop.store(true, SeqCst);
    for a in attackers {
        a.join().expect("attacker");
    }
    times.sort();
    let p99 = times[times.len() * 99 / 100];
    println!(
        "FIGURE legitimate remote signals under attack: {} sent, p50 {:?}, p99 {:?}, max {:?}; \
         {} hostile connects",
        times.len(),
        times[times.len() / 2],
        p99,
        times[times.len() - 1],
        connects.load(SeqCst)
    );
    let summary = g.stop();
    assert!(
        p99 < Duration::from_millis(100),
        "p99 {p99:?} is over 100 ms"
    );
    assert!(counter(&summary, "remote_accepted") >= times.len() as u64);
    assert!(counter(&summary, "remote_evicted") > 0);
    assert_eq!(counter(&summary, "dropped"), 0);
}

/// The master's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

fn control_stream(addr: &str) -> Option<UnixStream> {
    use std::os::linux::net::SocketAddrExt;
    let name = addr.strip_prefix('@').expect("an abstract name");
    let a = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()?;
    UnixStream::connect_addr(&a).ok()
}

/// Point 3: 20 s of commands pipelined on the control socket, requests on
/// the remote socket and stats connections, none of whose answers is
/// read, leave the master's memory where it was; meanwhile stats, control
/// and remote signals keep working.
#[test]
fn clients_that_never_read_do_not_grow_the_master() {
    raise_fd_limit();
    let (stats, control) = (abstract_name("stats-3"), abstract_name("control-3"));
    let mut g = Group::start("127.0.0.1:0", &stats, &control, None);
    let remote = g.fact("remote");
    let pid = g.pid();
    // Warm up every endpoint once, then take the baseline.
    send_remote(&remote, 17, T).expect("remote");
    live_counters(&stats);
    flare::stats::control(&control, "help", T).expect("control");
    let base = rss_kib(pid);

    // A crowd of silent control connections, past the endpoint's limit.
    let silent: Vec<UnixStream> = (0..100).filter_map(|_| control_stream(&control)).collect();
    assert!(!silent.is_empty());
    let stop = Arc::new(AtomicBool::new(false));
    let mut floods = Vec::new();
    for _ in 0..4 {
        let (stop, control) = (stop.clone(), control.clone());
        floods.push(std::thread::spawn(move || {
            let lines = "stats\n".repeat(600);
            while !stop.load(SeqCst) {
                let Some(mut s) = control_stream(&control) else {
                    continue;
                };
                s.set_write_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                while !stop.load(SeqCst) {
                    match s.write(lines.as_bytes()) {
                        Ok(_) => {}
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(_) => break, // closed by the master: again
                    }
                }
            }
        }));
    }
    {
        let (stop, remote) = (stop.clone(), remote.clone());
        floods.push(std::thread::spawn(move || {
            let requests: Vec<u8> = (0..4096).flat_map(|_| uwsgi::signal_request(17)).collect();
            while !stop.load(SeqCst) {
                let Ok(mut s) = TcpStream::connect(&remote) else {
                    continue;
                };
                s.set_write_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                while !stop.load(SeqCst) {
                    match s.write(&requests) {
                        Ok(_) => {}
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(_) => break,
                    }
                }
            }
        }));
    }
    {
        let (stop, stats) = (stop.clone(), stats.clone());
        floods.push(std::thread::spawn(move || {
            let mut held = std::collections::VecDeque::new();
            while !stop.load(SeqCst) {
                if let Some(s) = control_stream(&stats) {
                    held.push_back(s);
                }
                if held.len() > 200 {
                    held.pop_front();
                }
                std::thread::sleep(Duration::from_millis(5)); // the flood's pace
            }
        }));
    }
    let started = Instant::now();
    let mut peak = base;
    let mut checks = 0;
    while started.elapsed() < Duration::from_secs(20) {
        live_counters(&stats);
        send_remote(&remote, 18, T).expect("a remote signal during the flood");
        let answer = flare::stats::control(&control, "raise 18", T).expect("control answers");
        assert!(answer.contains("raised signal 18"), "{answer}");
        checks += 1;
        let rss = rss_kib(pid);
        peak = peak.max(rss);
        assert!(
            peak <= base + 8 * 1024,
            "the master grew from {base} KiB to {rss} KiB after {:?}",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(250)); // the sampling period
    }
    stop.store(true, SeqCst);
    for f in floods {
        f.join().expect("flood");
    }
    drop(silent);
    println!(
        "FIGURE master RSS under 20 s of unread pipelined commands: {base} KiB before, \
         peak {peak} KiB (+{} KiB); {checks} rounds of stats, control and remote all answered",
        peak - base
    );
    let summary = g.stop();
    assert!(
        counter(&summary, "admin_evicted") > 0,
        "silent control connections made room"
    );
    assert!(checks >= 10);
}

/// A control command trickled in a byte at a time does not get longer
/// than the request deadline (5 s from its first byte), however steadily
/// the bytes come; a whole command is answered.
#[test]
fn a_trickled_control_command_is_cut_at_its_deadline() {
    let (stats, control) = (abstract_name("stats-t"), abstract_name("control-t"));
    let g = Group::start("127.0.0.1:0", &stats, &control, None);
    let mut s = control_stream(&control).expect("control");
    s.set_read_timeout(Some(T)).unwrap();
    let started = Instant::now();
    let mut cut = false;
    // "help" padded with spaces: 9 bytes, one every 800 ms, 7.2 s in all.
    for b in b"help    \n" {
        if s.write_all(&[*b]).is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(800)); // the trickle's pace
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    let took = started.elapsed();
    println!("FIGURE trickled control command: cut {cut}, answer {answer:?} after {took:?}");
    assert!(
        !answer.contains("commands"),
        "a command trickled over {took:?} was answered: {answer:?}"
    );
    // A whole command is answered on a new connection.
    let help = flare::stats::control(&control, "help", T).expect("control");
    assert!(help.contains("commands"), "{help}");
    let summary = g.stop();
    assert!(counter(&summary, "admin_timed_out") >= 1);
}

/// Runs a flare-abuse client as uid/gid 65534; `None` when setpriv is
/// missing.
fn as_nobody(kind: &str, addr: &str, arg: &str) -> Option<String> {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_flare-abuse"))
        .args(["client", kind, addr, arg])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.starts_with("RESULT "),
        "the client did not run: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(text.trim_end().to_owned())
}

/// Point 4: another user cannot use the Unix sockets, abstract ones
/// included (they have no file mode), unless the uid is allowed.
#[test]
fn other_users_are_refused_on_unix_endpoints_unless_allowed() {
    if Command::new("setpriv").arg("--version").output().is_err() {
        println!("skipped: setpriv (util-linux) is not installed, so no second uid can be tried");
        return;
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test switches to uid 65534 and must run as root"
    );
    let (remote, stats, control) = (
        abstract_name("remote-4"),
        abstract_name("stats-4"),
        abstract_name("control-4"),
    );
    let g = Group::start(&remote, &stats, &control, None);
    let pause = as_nobody("control", &control, "pause worker1").expect("setpriv");
    let raise = as_nobody("control", &control, "raise 17").expect("setpriv");
    let doc = as_nobody("stats", &stats, "").expect("setpriv");
    let signal = as_nobody("remote", &remote, "17").expect("setpriv");
    println!("FIGURE uid 65534: {pause} | {raise} | {doc} | {signal}");
    for r in [&pause, &raise, &doc, &signal] {
        assert!(r.starts_with("RESULT error"), "uid 65534 got through: {r}");
    }
    // The owner (root here) is served, and the refused pause never ran.
    let resume = flare::stats::control(&control, "resume worker1", T).expect("root is served");
    assert!(resume.contains("was not paused"), "{resume}");
    send_remote(&remote, 17, T).expect("root may raise");
    let summary = g.stop();
    assert_eq!(counter(&summary, "admin_refused"), 3);
    assert_eq!(counter(&summary, "remote_refused"), 1);

    // Allowed by configuration: the same user is served.
    let g = Group::start(
        &abstract_name("remote-4b"),
        &abstract_name("stats-4b"),
        &abstract_name("control-4b"),
        Some(65534),
    );
    let help = as_nobody("control", &abstract_name("control-4b"), "help").expect("setpriv");
    assert!(help.starts_with("RESULT ok"), "{help}");
    let signal = as_nobody("remote", &abstract_name("remote-4b"), "17").expect("setpriv");
    assert!(signal.starts_with("RESULT ok"), "{signal}");
    let summary = g.stop();
    assert_eq!(counter(&summary, "admin_refused"), 0);

    // A path socket is still created 0600.
    let dir = std::env::temp_dir().join(format!("flare-abuse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("control.sock");
    let g = Group::start(
        "127.0.0.1:0",
        &abstract_name("stats-4c"),
        path.to_str().unwrap(),
        None,
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "control socket mode {mode:o}");
    g.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
