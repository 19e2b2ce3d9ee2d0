//! Attached processes: real processes joining a running master through its
//! attach socket (the Rust client, and a raw frames-only client written
//! here from the documented protocol), sharing one timer, receiving
//! `workers` signals, leaving with deliveries held for their slot, and bad
//! input on the socket.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::{Running, start_exe, until_stats};

const BIN: &str = env!("CARGO_BIN_EXE_flare-attach");
const T: Duration = Duration::from_secs(30);

fn control(dir: &str, line: &str) -> String {
    flare::stats::control(&format!("{dir}/control.sock"), line, T).expect("control")
}

fn frame(kind: u8, num: u8, word: u32, long: u64) -> [u8; 16] {
    let mut f = [0u8; 16];
    f[0] = kind;
    f[1] = num;
    f[4..8].copy_from_slice(&word.to_le_bytes());
    f[8..16].copy_from_slice(&long.to_le_bytes());
    f
}

/// A request frame with its JSON payload (a hello has id 0).
fn request(id: u64, json: &str) -> Vec<u8> {
    let mut v = frame(4, 0, json.len() as u32, id).to_vec();
    v.extend_from_slice(json.as_bytes());
    v
}

/// Reads one frame and its payload.
fn read_msg(s: &mut UnixStream) -> ([u8; 16], String) {
    let mut head = [0u8; 16];
    s.read_exact(&mut head).expect("a frame");
    let len = if head[0] == 4 || head[0] == 5 {
        u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize
    } else {
        0
    };
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("its payload");
    (head, String::from_utf8(body).expect("JSON is text"))
}

fn connect(sock: &str) -> UnixStream {
    let s = UnixStream::connect(sock).expect("connect to the attach socket");
    s.set_read_timeout(Some(T)).unwrap();
    s
}

fn temp_dir(name: &str) -> String {
    let d = std::env::temp_dir().join(format!("flare-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d.to_str().unwrap().to_owned()
}

fn kill9(r: &Running) {
    let pid = nix::unistd::Pid::from_raw(r.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
}

#[test]
fn attached_processes_join_share_a_timer_and_leave_without_losing_anything() {
    let dir = temp_dir("attach");
    let stats = format!("{dir}/stats.sock");
    let mut m = start_exe(BIN, &["master", &dir, "3000"]);
    let sock = m.wait_fact("attach");

    // A client's handler for 22 runs until its gate file exists.
    let gate = |t: &str| format!("{dir}/gate-{t}");
    std::fs::write(gate("b"), "").unwrap();
    std::fs::write(gate("c"), "").unwrap();
    let go = |t: &str| std::fs::write(format!("{dir}/gate-{t}.go"), "").unwrap();
    go("a");
    go("b");
    let mut a = start_exe(BIN, &["client", &sock, "a", &gate("a")]);
    assert_eq!(a.wait_fact("master_pid"), m.pid().to_string());
    assert_eq!(a.wait_fact("owner17"), "worker2", "it registered 17 first");
    assert_eq!(a.wait_fact("attached"), "worker2", "the first attach slot");
    let mut b = start_exe(BIN, &["client", &sock, "b", &gate("b")]);
    assert_eq!(
        b.wait_fact("owner17"),
        "worker2",
        "it joined a's registration"
    );
    assert_eq!(b.wait_fact("attached"), "worker3");
    // Raised in an attached process, handled by the forked worker.
    assert_eq!(m.wait_fact("w20"), "worker1:worker2");
    assert_eq!(m.wait_fact("w20"), "worker1:worker3");

    // Both added the same 200 ms timer: one source in the master, and its
    // pool signal is handled by the attached members.
    let doc = until_stats(&stats, "the shared timer has fired", T, |d| {
        d.flare.sources.iter().any(|s| s.sig == 19 && s.fired >= 3)
    });
    let timers: Vec<_> = doc.flare.sources.iter().filter(|s| s.sig == 19).collect();
    assert_eq!(timers.len(), 1, "one source for two members: {timers:?}");

    // `workers` reaches every attached member.
    control(&dir, "raise 17");
    assert_eq!(a.wait_fact("got17"), "worker2:a");
    assert_eq!(b.wait_fact("got17"), "worker3:b");

    // A member dies holding deliveries for its slot (stuck in the first,
    // two more queued): they wait for the next process in the slot, which
    // gets them, the interrupted one first with one more attempt.
    for _ in 0..3 {
        control(&dir, "raise 22");
    }
    assert_eq!(a.wait_fact("got22"), "worker2:a:1");
    let mut c = start_exe(BIN, &["client", &sock, "c", &gate("c")]);
    kill9(&a);
    drop(a);
    // It joins at once: well within the 3 s hold.
    go("c");
    for _ in 0..3 {
        assert_eq!(b.wait_fact("got22"), "worker3:b:1");
    }
    assert_eq!(
        c.wait_fact("attached"),
        "worker2",
        "the freed slot is reused"
    );
    let first = c.wait_fact("got22");
    assert_eq!(first, "worker2:c:2", "the interrupted one, again");
    assert_eq!(c.wait_fact("got22"), "worker2:c:1");
    assert_eq!(c.wait_fact("got22"), "worker2:c:1");

    // This time nobody comes back within the hold: the three held
    // deliveries are dead-lettered and counted, not lost silently.
    let before = until_stats(&stats, "a count", T, |_| true)
        .flare
        .counters
        .dead_lettered;
    std::fs::remove_file(gate("c")).unwrap();
    for _ in 0..3 {
        control(&dir, "raise 22");
    }
    assert_eq!(c.wait_fact("got22"), "worker2:c:1");
    kill9(&c);
    drop(c);
    let doc = until_stats(&stats, "held deliveries dead-lettered", T, |d| {
        d.flare.counters.dead_lettered >= before + 3
    });
    assert_eq!(doc.workers[1].status, "vacant", "{:?}", doc.workers[1]);
    assert_eq!(doc.flare.counters.detached, 2);

    // A frames-only client, written from the protocol: hello, register,
    // ready, then deliveries to ack.
    let mut raw = connect(&sock);
    // Pipelined: the hello, a registration and `Ready` in one write.
    let mut hello = request(0, r#"{"version":1,"role":"worker","fds":false}"#);
    hello.extend(request(1, r#"{"Register":{"num":17,"target":"workers"}}"#));
    hello.extend(request(2, r#""Ready""#));
    raw.write_all(&hello).unwrap();
    let (head, answer) = read_msg(&mut raw);
    assert_eq!(head[0], 5, "a reply");
    assert!(
        answer.contains(r#""Attached""#) && answer.contains(r#""worker":2"#),
        "{answer}"
    );
    assert_eq!(read_msg(&mut raw).1, r#""Ok""#);
    assert_eq!(read_msg(&mut raw).1, r#""Ok""#);
    control(&dir, "raise 17");
    assert_eq!(b.wait_fact("got17"), "worker3:b");
    let (d, _) = read_msg(&mut raw);
    assert_eq!((d[0], d[1]), (1, 17), "a deliver frame for 17");
    let seq = u64::from_le_bytes(d[8..16].try_into().unwrap());
    raw.write_all(&frame(2, 0, 0, seq)).unwrap();
    // It raises one: the forked worker handles it.
    raw.write_all(&frame(3, 20, 0, 0)).unwrap();
    assert_eq!(m.wait_fact("w20"), "worker1:worker2");
    until_stats(&stats, "the raw client's ack counted", T, |d| {
        d.workers[1].requests >= 1
    });

    // Every slot taken: a clear refusal.
    let mut full = connect(&sock);
    full.write_all(&request(0, r#"{"version":1}"#)).unwrap();
    let refusal = read_msg(&mut full).1;
    assert!(
        refusal.contains("Refused") && refusal.contains("attach slots are taken"),
        "{refusal}"
    );
    drop(raw);
    until_stats(&stats, "the raw client's slot is free", T, |d| {
        d.flare.counters.detached == 3
    });

    // Garbage, a wrong version, and a flood of requests whose answers are
    // never read: each refused or closed with a reason; the group goes on.
    let mut junk = connect(&sock);
    junk.write_all(&[0xAB; 16]).unwrap();
    let why = read_msg(&mut junk).1;
    assert!(
        why.contains("unknown frame kind") && why.contains("hello"),
        "{why}"
    );
    let mut old = connect(&sock);
    old.write_all(&request(0, r#"{"version":9}"#)).unwrap();
    let why = read_msg(&mut old).1;
    assert!(
        why.contains("version 9") && why.contains("version 1"),
        "{why}"
    );

    let mut deaf = connect(&sock);
    deaf.write_all(&request(0, r#"{"version":1}"#)).unwrap();
    assert!(read_msg(&mut deaf).1.contains("Attached"));
    let started = Instant::now();
    let mut closed = false;
    let flood = request(7, r#""Ready""#).repeat(512);
    while started.elapsed() < T {
        if deaf.write_all(&flood).is_err() {
            closed = true;
            break;
        }
    }
    assert!(closed, "a client that never reads its replies is closed");
    control(&dir, "raise 17");
    assert_eq!(b.wait_fact("got17"), "worker3:b", "the group carries on");

    // The last member that registered pool signal 23 leaves holding three:
    // its registration goes with it, so they are unregistered signals now,
    // which go to the first available worker (the forked one).
    std::fs::remove_file(gate("b")).unwrap();
    for _ in 0..3 {
        control(&dir, "raise 23");
    }
    assert_eq!(b.wait_fact("got23"), "worker3:b:1");
    kill9(&b);
    drop(b);
    until_stats(
        &stats,
        "the pool signals b held handled by worker1",
        T,
        |d| d.workers[0].handled_by_num.get(&23).copied().unwrap_or(0) == 3,
    );

    sigterm(&m);
    let run = m.finish();
    assert!(run.counter("attached") >= 5, "{}", run.summary["counters"]);
    assert!(
        run.counter("attach_refused") >= 3,
        "{}",
        run.summary["counters"]
    );
    assert_eq!(run.counter("dropped"), 0);
    assert_eq!(run.counter("unrouted"), 0);
    assert_eq!(run.counter("pending_at_exit"), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs the `alone` group (no forked worker; the master registered 23 for
/// `worker`, the pool of the two attach slots) with `hold_ms`; a client
/// takes three 23s, is stuck in the first and is killed. Returns the
/// master, still running, its stats address and the directory.
fn alone_with_a_stranded_pool(hold_ms: &str) -> (Running, String, String) {
    let dir = temp_dir(&format!("attach-alone-{hold_ms}"));
    let stats = format!("{dir}/stats.sock");
    let mut m = start_exe(BIN, &["alone", &dir, hold_ms]);
    let sock = m.wait_fact("attach");
    let gate = format!("{dir}/gate-a");
    std::fs::write(format!("{gate}.go"), "").unwrap();
    let mut a = start_exe(BIN, &["client", &sock, "a", &gate]);
    assert_eq!(a.wait_fact("attached"), "worker1");
    for _ in 0..3 {
        control(&dir, "raise 23");
    }
    assert_eq!(a.wait_fact("got23"), "worker1:a:1");
    kill9(&a);
    drop(a);
    until_stats(&stats, "a has left", T, |d| d.flare.counters.detached == 1);
    (m, stats, dir)
}

fn sigterm(m: &Running) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(m.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
}

#[test]
fn pool_signals_nobody_can_take_are_dead_lettered_and_do_not_hold_up_the_shutdown() {
    // Nobody comes back within the hold: they are dead-lettered.
    let (m, stats, dir) = alone_with_a_stranded_pool("300");
    until_stats(&stats, "stranded pool deliveries dead-lettered", T, |d| {
        d.flare.counters.dead_lettered >= 3 && d.workers.iter().all(|w| w.state == "vacant")
    });
    sigterm(&m);
    let run = m.finish();
    assert_eq!(run.counter("pending_at_exit"), 0);
    assert_eq!(run.counter("dropped"), 0);
    let _ = std::fs::remove_dir_all(&dir);

    // A shutdown within the hold: the drain (its timeout is 300 s here,
    // past the test's deadline) does not wait for deliveries nobody can
    // take; they are counted as pending at exit.
    let (m, _stats, dir) = alone_with_a_stranded_pool("60000");
    sigterm(&m);
    let run = m.finish();
    assert!(
        run.counter("pending_at_exit") >= 3,
        "{}",
        run.summary["counters"]
    );
    assert_eq!(run.counter("dropped"), 0);
    let _ = std::fs::remove_dir_all(&dir);
}
