//! Remote signals over the uwsgi protocol, against a real master process.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use common::{Run, Running, start};
use flare::{Error, send_remote, uwsgi};

const T: Duration = Duration::from_secs(10);

fn start_remote(addr: &str, max: usize, timeout_ms: u64, allow: Option<&str>) -> (Running, String) {
    let max = max.to_string();
    let timeout = timeout_ms.to_string();
    let mut args = vec!["remote", addr, &max, &timeout];
    args.extend(allow);
    let mut s = start(&args);
    let listening = s.wait_fact("listening");
    s.wait_fact("ready");
    (s, listening)
}

fn stop(s: Running) -> Run {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(s.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    s.finish()
}

fn handled_17(r: &Run) -> u64 {
    (1..=4).map(|w| r.handled("worker", w, 17)).sum()
}

/// Reads until the server closes the connection; false if it answers or
/// stays open past the deadline.
fn closed_by_server(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(T)).unwrap();
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    }
}

#[test]
fn remote_signals_are_routed_like_local_ones() {
    let (s, addr) = start_remote("127.0.0.1:0", 64, 5000, None);
    for _ in 0..10 {
        send_remote(&addr, 17, T).expect("17 delivered");
    }
    for _ in 0..3 {
        send_remote(&addr, 18, T).expect("18 delivered");
    }
    let r = stop(s);
    assert_eq!(handled_17(&r), 10, "17 goes to one worker each time");
    for w in 1..=4 {
        assert_eq!(r.handled("worker", w, 18), 3, "18 goes to every worker");
    }
    assert_eq!(r.counter("remote_accepted"), 13);
    assert_eq!(r.counter("remote_rejected"), 0);
}

#[test]
fn the_allow_list_rejects_other_numbers() {
    let (s, addr) = start_remote("127.0.0.1:0", 64, 5000, Some("17"));
    let e = send_remote(&addr, 18, T).unwrap_err();
    assert!(matches!(e, Error::Rejected { num: 18, .. }), "{e}");
    send_remote(&addr, 17, T).expect("17 is allowed");
    let r = stop(s);
    assert_eq!(r.counter("remote_rejected"), 1);
    assert_eq!(r.counter("remote_accepted"), 1);
    assert_eq!(handled_17(&r), 1);
    assert_eq!(r.handled("worker", 1, 18), 0);
}

#[test]
fn a_unix_socket_is_created_0600_and_removed_at_exit() {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::temp_dir().join(format!("flare-remote-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let (s, addr) = start_remote(path.to_str().unwrap(), 64, 5000, None);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "mode {mode:o}");
    send_remote(&addr, 17, T).expect("delivered over the Unix socket");
    let r = stop(s);
    assert_eq!(handled_17(&r), 1);
    assert!(!path.exists(), "the socket file is removed at exit");
}

#[test]
fn malformed_packets_close_their_connection_and_are_counted() {
    let (s, addr) = start_remote("127.0.0.1:0", 64, 5000, None);
    let bad: [&[u8]; 3] = [
        &[0, 0, 0, 17],                           // wrong modifier1
        &[110, 4, 0, 17, b'a', b'b', b'c', b'd'], // datasize != 0
        b"GET / HTTP/1.0\r\n\r\n",                // not uwsgi at all
    ];
    for bytes in bad {
        let mut c = TcpStream::connect(&addr).unwrap();
        c.write_all(bytes).unwrap();
        assert!(
            closed_by_server(&mut c),
            "{bytes:?} left the connection open"
        );
    }
    // A short header, then the client closes.
    let mut c = TcpStream::connect(&addr).unwrap();
    c.write_all(&[110, 0]).unwrap();
    drop(c);
    // A valid request after a valid one on the same connection still works.
    let mut c = TcpStream::connect(&addr).unwrap();
    let mut reply = [0u8; 8];
    c.write_all(&[uwsgi::signal_request(17), uwsgi::signal_request(17)].concat())
        .unwrap();
    c.read_exact(&mut reply).unwrap();
    assert_eq!(reply, [255, 0, 0, 1, 255, 0, 0, 1]);
    drop(c);
    send_remote(&addr, 17, T).expect("others are unaffected");
    let r = stop(s);
    assert_eq!(r.counter("remote_malformed"), 4);
    assert_eq!(handled_17(&r), 3);
}

#[test]
fn past_the_connection_limit_a_newcomer_closes_the_oldest_idle_connection() {
    let (s, addr) = start_remote("127.0.0.1:0", 4, 20_000, None);
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut c = TcpStream::connect(&addr).unwrap();
        let mut reply = [0u8; 4];
        c.write_all(&uwsgi::signal_request(17)).unwrap();
        c.read_exact(&mut reply).unwrap(); // accepted and served
        held.push(c);
    }
    // The fifth is served: the first, idle longest, makes room.
    send_remote(&addr, 17, T).expect("the newcomer is served");
    assert!(
        closed_by_server(&mut held[0]),
        "the oldest idle connection was kept"
    );
    let mut reply = [0u8; 4];
    held[3].write_all(&uwsgi::signal_request(17)).unwrap();
    held[3]
        .read_exact(&mut reply)
        .expect("the newest is still served");
    let r = stop(s);
    assert!(r.counter("remote_evicted") >= 1);
    assert_eq!(r.counter("remote_refused"), 0);
}

#[test]
fn fifty_clients_flood_one_master_and_every_accepted_signal_runs_once() {
    let (s, addr) = start_remote("127.0.0.1:0", 1024, 500, None);
    let accepted = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for i in 0..50 {
        let addr = addr.clone();
        let accepted = accepted.clone();
        threads.push(std::thread::spawn(move || {
            if i % 2 == 0 {
                // One connection per signal.
                for _ in 0..1000 {
                    match send_remote(&addr, 17, T) {
                        Ok(()) => {
                            accepted.fetch_add(1, SeqCst);
                        }
                        Err(Error::Rejected { .. }) => {}
                        Err(e) => panic!("client {i}: {e}"),
                    }
                }
            } else {
                // 1000 requests pipelined on one connection.
                let mut c = TcpStream::connect(&addr).unwrap();
                c.set_read_timeout(Some(T)).unwrap();
                let requests: Vec<u8> = (0..1000).flat_map(|_| uwsgi::signal_request(17)).collect();
                c.write_all(&requests).unwrap();
                let mut replies = vec![0u8; 4000];
                c.read_exact(&mut replies).unwrap();
                for r in replies.chunks_exact(4) {
                    if uwsgi::parse_reply([r[0], r[1], r[2], r[3]]).expect("a reply") {
                        accepted.fetch_add(1, SeqCst);
                    }
                }
            }
        }));
    }
    // Meanwhile: a client that sends garbage and one that stays silent.
    let garbage = {
        let addr = addr.clone();
        std::thread::spawn(move || {
            let mut c = TcpStream::connect(&addr).unwrap();
            c.write_all(b"\x00\x01garbage garbage garbage").unwrap();
            closed_by_server(&mut c)
        })
    };
    let silent = {
        let addr = addr.clone();
        std::thread::spawn(move || {
            let mut c = TcpStream::connect(&addr).unwrap();
            closed_by_server(&mut c)
        })
    };
    for t in threads {
        t.join().expect("client thread");
    }
    assert!(garbage.join().unwrap(), "the garbage client was not closed");
    assert!(silent.join().unwrap(), "the silent client was not closed");
    send_remote(&addr, 17, T).expect("a fresh client is answered");
    let accepted = accepted.load(SeqCst) + 1;
    let r = stop(s);
    assert_eq!(accepted, 50_001, "nothing was rejected");
    assert_eq!(r.counter("remote_accepted"), accepted);
    assert_eq!(
        handled_17(&r),
        accepted,
        "every accepted signal ran exactly once"
    );
    assert_eq!(r.counter("dropped"), 0);
    assert!(r.counter("remote_malformed") >= 1);
    // The silent client idled out, or was the oldest idle when a
    // newcomer needed room.
    assert!(r.counter("remote_timed_out") + r.counter("remote_evicted") >= 1);
}
