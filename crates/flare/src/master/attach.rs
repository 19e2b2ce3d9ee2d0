//! The attach socket: where a process flare did not fork (a gunicorn or
//! uvicorn worker, a Node process) joins the group as a worker.
//!
//! This module takes connections and reads hellos under the same bounds as
//! every endpoint: a Unix socket only (created 0600), the peer's uid
//! checked with `SO_PEERCRED`, connections capped in total and per peer,
//! and a hello that must be whole 5 s after connecting however slowly it
//! trickles in. A garbled hello gets a refusal that says what was expected,
//! then the socket is closed. The engine gives a finished hello its slot
//! and turns the socket into a channel (or passes the channel pipes).

use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::time::{Duration, Instant};

use mio::{Registry, Token};

use super::listener::{Bounded, Conns, EdgeCounts, Gate, Limits, Listener, Peer, Stream};
use crate::error::{Error, Result};
use crate::proto::attach::{Answer, Hello, Progress, encode_answer, parse_hello};
use crate::proto::{FRAME_LEN, MAX_PAYLOAD};
use crate::ratelog::RateLog;
use crate::remote::RemoteAddr;

/// Hellos being read at once, in all and per uid.
const MAX_PENDING: usize = 64;
const MAX_PENDING_PER_PEER: usize = 16;
/// A hello must be whole this long after connecting.
pub(super) const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection whose hello is not in yet.
pub(super) struct Pending {
    stream: Stream,
    peer: Peer,
    /// For logs: `pid 123 (uid 0)`.
    pub(super) name: String,
    /// The peer's pid (`SO_PEERCRED`), 0 when unknown.
    pub(super) pid: u32,
    since: Instant,
    buf: Vec<u8>,
    readable: bool,
}

impl Bounded for Pending {
    fn stream(&mut self) -> &mut Stream {
        &mut self.stream
    }
    fn fd(&self) -> RawFd {
        self.stream.raw_fd()
    }
    fn peer(&self) -> &Peer {
        &self.peer
    }
    fn eviction_key(&self) -> (bool, Instant) {
        (true, self.since)
    }
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        Some(self.since + limits.request_timeout)
    }
}

impl Pending {
    /// Writes `answer` now (a fresh socket has room for it) and gives the
    /// socket back.
    pub(super) fn answer(self, answer: &Answer) -> io::Result<OwnedFd> {
        let fd = self.into_fd()?;
        write_now(&fd, &encode_answer(answer))?;
        Ok(fd)
    }

    /// The socket, for the engine to pass descriptors on.
    pub(super) fn into_fd(self) -> io::Result<OwnedFd> {
        match self.stream {
            Stream::Unix(s) => Ok(OwnedFd::from(s)),
            Stream::Tcp(_) => Err(io::Error::other("the attach socket is a Unix socket")),
        }
    }
}

/// Writes all of `bytes` to a non-blocking socket that has room, or fails.
fn write_now(fd: &OwnedFd, bytes: &[u8]) -> io::Result<()> {
    let mut at = 0;
    while at < bytes.len() {
        match nix::unistd::write(fd, &bytes[at..]) {
            Ok(n) => at += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Outcomes counted since they were last taken.
#[derive(Debug, Default)]
pub(super) struct AttachCounts {
    /// Hellos refused (malformed, wrong version, no free slot).
    pub(super) refused: u64,
    /// Connections closed by the limits or refused by uid.
    pub(super) edge: EdgeCounts,
}

/// The attach endpoint.
pub(super) struct Attach {
    listener: Listener,
    addr: String,
    gate: Gate,
    conns: Conns<Pending>,
    limits: Limits,
    counts: AttachCounts,
    log: RateLog,
    keys: Vec<usize>,
}

impl Attach {
    /// Listens on `addr`: a socket path, or `@name` for an abstract socket.
    pub(super) fn bind(addr: &str, allow_uids: &[u32], token_base: usize) -> Result<Attach> {
        match addr.parse::<RemoteAddr>()? {
            RemoteAddr::Unix(_) | RemoteAddr::Abstract(_) => {}
            RemoteAddr::Tcp { .. } => {
                return Err(Error::Config(format!(
                    "the attach socket `{addr}` must be a Unix socket (a path, or @name): \
                     processes joining pass descriptors and are checked by uid"
                )));
            }
        }
        let listener = Listener::bind(addr, 0o600, "attached processes")?;
        Ok(Attach {
            addr: listener.local_addr(addr),
            listener,
            gate: Gate::new(allow_uids),
            conns: Conns::new(token_base),
            limits: Limits {
                max_connections: MAX_PENDING,
                max_per_peer: MAX_PENDING_PER_PEER,
                request_timeout: HELLO_TIMEOUT,
                idle_timeout: HELLO_TIMEOUT,
                max_output: MAX_PAYLOAD,
            },
            counts: AttachCounts::default(),
            log: RateLog::new(10, Duration::from_secs(1)),
            keys: Vec::new(),
        })
    }

    /// The address, as given (with the path of a Unix socket).
    pub(super) fn addr(&self) -> &str {
        &self.addr
    }

    pub(super) fn register(&mut self, registry: &Registry, token: Token) -> Result<()> {
        self.listener.register(registry, token)
    }

    pub(super) fn fds(&self) -> Vec<RawFd> {
        let mut fds = self.conns.fds();
        fds.push(self.listener.raw_fd());
        fds
    }

    /// Accepts every waiting connection.
    pub(super) fn accept(&mut self, registry: &Registry, now: Instant) {
        loop {
            let (stream, name, peer) = match self.listener.accept() {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    if let Some(held) = self.log.allow(now) {
                        tracing::warn!(
                            "attach socket: accept failed: {e}{}",
                            super::listener::suppressed(held)
                        );
                    }
                    return;
                }
            };
            if !self.gate.admits(&peer) {
                self.counts.edge.refused += 1;
                if let Some(held) = self.log.allow(now) {
                    tracing::warn!(
                        "attach socket: {name} refused: only uids {} may attach{}",
                        self.gate.describe(),
                        super::listener::suppressed(held)
                    );
                }
                continue;
            }
            for _ in self.conns.make_room(registry, &peer, &self.limits) {
                self.counts.edge.evicted += 1;
            }
            let pid = peer_pid(&stream);
            let pending = Pending {
                stream,
                peer,
                name,
                pid,
                since: now,
                buf: Vec::new(),
                readable: true,
            };
            let _ = self.conns.insert(registry, pending, &self.limits);
        }
    }

    /// A readiness event for a connection.
    pub(super) fn ready(&mut self, token: Token) {
        if let Some(p) = self
            .conns
            .index_of(token)
            .and_then(|i| self.conns.get_mut(i))
        {
            p.readable = true;
        }
    }

    /// Whether a connection has unread input.
    pub(super) fn any_input(&self) -> bool {
        self.conns.iter().any(|(_, p)| p.readable)
    }

    /// Reads what arrived; returns the connections whose hello is whole
    /// (out of the endpoint: the engine owns them now), with the bytes that
    /// followed the hello (frames a client sent without waiting for the
    /// answer). Broken hellos are refused and closed here.
    pub(super) fn hellos(
        &mut self,
        registry: &Registry,
        now: Instant,
    ) -> Vec<(Pending, Hello, Vec<u8>)> {
        let mut done = Vec::new();
        let mut keys = std::mem::take(&mut self.keys);
        self.conns.keys_into(&mut keys);
        for &i in &keys {
            let Some(p) = self.conns.get_mut(i) else {
                continue;
            };
            if !p.readable {
                continue;
            }
            match read_some(p) {
                Ok(true) => {}
                Ok(false) => {
                    // Closed before a whole hello: nothing to answer.
                    self.conns.remove(registry, i);
                    continue;
                }
                Err(e) => {
                    tracing::debug!("attach socket: {}: {e}", p.name);
                    self.conns.remove(registry, i);
                    continue;
                }
            }
            match parse_hello(&p.buf) {
                Ok(Progress::Partial) => {}
                Ok(Progress::Done(hello, used)) => {
                    if let Some(mut p) = self.conns.remove(registry, i) {
                        let rest = p.buf.split_off(used);
                        done.push((p, hello, rest));
                    }
                }
                Err(why) => {
                    if let Some(p) = self.conns.remove(registry, i) {
                        self.refuse(p, &why, now);
                    }
                }
            }
        }
        self.keys = keys;
        done
    }

    /// Answers `p` with a refusal and closes it.
    pub(super) fn refuse(&mut self, p: Pending, why: &str, now: Instant) {
        self.counts.refused += 1;
        if let Some(held) = self.log.allow(now) {
            tracing::warn!(
                "attach socket: {} refused: {why}{}",
                p.name,
                super::listener::suppressed(held)
            );
        }
        let _ = p.answer(&Answer::Refused(why.to_owned()));
    }

    /// Closes the connections whose hello is late.
    pub(super) fn sweep(&mut self, registry: &Registry, now: Instant) {
        for p in self.conns.expire(registry, now, &self.limits) {
            self.counts.edge.timed_out += 1;
            let why = format!(
                "no whole hello within {} s of connecting",
                HELLO_TIMEOUT.as_secs()
            );
            self.refuse(p, &why, now);
        }
    }

    /// When [`Attach::sweep`] has work, at the earliest.
    pub(super) fn next_sweep(&self) -> Option<Instant> {
        self.conns.due()
    }

    /// The counts since the last call.
    pub(super) fn take_counts(&mut self) -> AttachCounts {
        std::mem::take(&mut self.counts)
    }
}

/// Reads what is there (up to a whole hello's worth); false at EOF.
fn read_some(p: &mut Pending) -> io::Result<bool> {
    let mut chunk = [0u8; 4096];
    loop {
        let room = (FRAME_LEN + MAX_PAYLOAD + 1).saturating_sub(p.buf.len());
        if room == 0 {
            // More than any hello: parse_hello says why.
            p.readable = false;
            return Ok(true);
        }
        let want = room.min(chunk.len());
        match p.stream.read(&mut chunk[..want]) {
            Ok(0) => return Ok(false),
            Ok(n) => p.buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                p.readable = false;
                return Ok(true);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The pid of a Unix-socket peer, 0 when unknown.
fn peer_pid(stream: &Stream) -> u32 {
    match stream {
        Stream::Unix(s) => {
            nix::sys::socket::getsockopt(s, nix::sys::socket::sockopt::PeerCredentials)
                .map_or(0, |c| c.pid() as u32)
        }
        Stream::Tcp(_) => 0,
    }
}

impl std::fmt::Debug for Attach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attach")
            .field("addr", &self.addr)
            .field("fd", &self.listener.raw_fd())
            .finish()
    }
}
