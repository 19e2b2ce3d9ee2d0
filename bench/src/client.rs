//! The remote-signal client, the same for both nodes: flare's own client
//! (`flare::send_remote`) for one connection per signal, and the uwsgi
//! packet codec (`flare::uwsgi`) for requests pipelined on one connection.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use flare::uwsgi;

/// How long the client waits to connect and for each reply.
const TIMEOUT: Duration = Duration::from_secs(4);

/// What the node answered.
#[derive(Debug, Default)]
pub struct Tally {
    /// Replies "delivered".
    pub accepted: u64,
    /// Replies "rejected".
    pub rejected: u64,
    /// Requests without a reply (connection refused or closed, timeout).
    pub unanswered: u64,
    /// Wall time of the whole run.
    pub elapsed: Duration,
    /// The first thing that went wrong, for the notes.
    pub first_error: Option<String>,
}

/// `n` signals, one TCP connection each, one after the other.
pub fn per_connection(addr: &str, num: u8, n: u64) -> Tally {
    let mut t = Tally::default();
    let start = Instant::now();
    for _ in 0..n {
        match flare::send_remote(addr, num, TIMEOUT) {
            Ok(()) => t.accepted += 1,
            Err(flare::Error::Rejected { .. }) => t.rejected += 1,
            Err(e) => {
                t.unanswered += 1;
                t.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    t.elapsed = start.elapsed();
    t
}

/// `n` signals on one TCP connection, `window` requests written before
/// their replies are read. Stops at the first connection error: the rest
/// count as unanswered.
pub fn pipelined(addr: &str, num: u8, n: u64, window: u64) -> Tally {
    let mut t = Tally::default();
    let start = Instant::now();
    if let Err(e) = pipeline_into(&mut t, addr, num, n, window) {
        t.first_error.get_or_insert(e);
    }
    t.elapsed = start.elapsed();
    t.unanswered = n - t.accepted - t.rejected;
    t
}

fn pipeline_into(t: &mut Tally, addr: &str, num: u8, n: u64, window: u64) -> Result<(), String> {
    let sock = addr.parse().map_err(|e| format!("address {addr}: {e}"))?;
    let mut s =
        TcpStream::connect_timeout(&sock, TIMEOUT).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    let batch: Vec<u8> = uwsgi::signal_request(num).repeat(window as usize);
    let mut sent = 0;
    while sent < n {
        let k = window.min(n - sent);
        s.write_all(&batch[..uwsgi::HEADER_LEN * k as usize])
            .map_err(|e| format!("after {sent} requests, writing: {e}"))?;
        sent += k;
        for _ in 0..k {
            let mut reply = [0u8; uwsgi::HEADER_LEN];
            s.read_exact(&mut reply)
                .map_err(|e| format!("after {} replies, reading: {e}", t.accepted + t.rejected))?;
            match uwsgi::parse_reply(reply) {
                Ok(true) => t.accepted += 1,
                Ok(false) => t.rejected += 1,
                Err(m) => return Err(format!("not a signal reply: {m}")),
            }
        }
    }
    Ok(())
}
