//! The master's remote-signal listener: the uwsgi protocol (modifier1 110)
//! over TCP or a Unix socket, wire-compatible with uWSGI's nodes and its
//! `uwsgi --signal` client.
//!
//! Non-blocking like everything in the master: many connections, many
//! requests per connection, replies queued per connection. What a request
//! raises is routed by the engine; this module only moves bytes, enforces
//! the limits, and closes what misbehaves.

use std::collections::BTreeSet;
use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use mio::{Registry, Token};

use super::listener::{HasStream, Listener, Slab, Stream};
use crate::error::Result;
use crate::proto::uwsgi::RequestReader;

/// Settings of the remote-signal listener: [`RemoteOptions::new`], then
/// set the fields to change (more may come).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RemoteOptions {
    /// Where to listen: `host:port`, `:port`, a socket path, or `@name`
    /// (see [`RemoteAddr`]).
    pub addr: String,
    /// Signal numbers remote nodes may raise; `None` allows all. A number
    /// off the list is answered "rejected".
    pub allow: Option<BTreeSet<u8>>,
    /// Connections served at once; more are accepted and closed at once.
    /// Default 1,024.
    pub max_connections: usize,
    /// A connection that sends no whole request for this long is closed.
    /// Default 5 s.
    pub read_timeout: Duration,
    /// Permissions of a Unix socket file. Default 0o600.
    pub unix_mode: u32,
}

impl RemoteOptions {
    /// Listen at `addr` with the default limits and no allow-list.
    pub fn new(addr: impl Into<String>) -> Self {
        RemoteOptions {
            addr: addr.into(),
            allow: None,
            max_connections: 1024,
            read_timeout: Duration::from_secs(5),
            unix_mode: 0o600,
        }
    }

    /// The allow-list as a table indexed by signal number.
    fn allowed(&self) -> [bool; 256] {
        std::array::from_fn(|n| self.allow.as_ref().is_none_or(|a| a.contains(&(n as u8))))
    }
}

/// Replies a connection may have queued before the master stops reading
/// its requests (a client that sends but never reads).
const MAX_PENDING_OUT: usize = 64 * 1024;

/// One client connection.
pub(super) struct Conn {
    stream: Stream,
    pub(super) reader: RequestReader,
    out: Vec<u8>,
    out_at: usize,
    pub(super) readable: bool,
    writable: bool,
    /// Not read while a queue its requests filled is above high water.
    pub(super) paused: bool,
    pub(super) last_active: Instant,
    pub(super) peer: String,
}

impl HasStream for Conn {
    fn stream(&mut self) -> &mut Stream {
        &mut self.stream
    }

    fn fd(&self) -> RawFd {
        self.stream.raw_fd()
    }
}

/// What reading a connection once gave.
pub(super) enum Input {
    /// This many new bytes (0: only what the reader already held).
    Bytes(usize),
    /// Nothing to read now.
    Empty,
    /// The client closed its end.
    Closed,
}

impl Conn {
    /// Whether the engine should look at this connection now.
    pub(super) fn has_input(&self) -> bool {
        !self.paused
            && self.out.len() - self.out_at < MAX_PENDING_OUT
            && (self.readable || self.reader.has_request())
    }

    /// Reads once into `buf` unless whole requests are already waiting.
    pub(super) fn read(&mut self, buf: &mut [u8]) -> io::Result<Input> {
        if self.reader.has_request() {
            return Ok(Input::Bytes(0));
        }
        loop {
            match self.stream.read(buf) {
                Ok(0) => return Ok(Input::Closed),
                Ok(n) => return Ok(Input::Bytes(n)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.readable = false;
                    return Ok(Input::Empty);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Queues a reply.
    pub(super) fn reply(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// Writes queued replies until done or `WouldBlock`.
    pub(super) fn flush(&mut self) -> io::Result<()> {
        while self.writable && self.out_at < self.out.len() {
            match self.stream.write(&self.out[self.out_at..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_at += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                Err(e) => return Err(e),
            }
        }
        if self.out_at == self.out.len() {
            self.out.clear();
            self.out_at = 0;
        }
        Ok(())
    }
}

/// The listener and its connections.
pub(super) struct Remote {
    pub(super) opts: RemoteOptions,
    /// Which numbers remote nodes may raise.
    pub(super) allowed: [bool; 256],
    listener: Option<Listener>,
    conns: Slab<Conn>,
    last_sweep: Instant,
}

impl Remote {
    /// Binds the listener (a Unix socket with `unix_mode`, replacing a
    /// stale socket file but never a live one).
    pub(super) fn bind(opts: RemoteOptions, token_base: usize) -> Result<Remote> {
        let listener = Listener::bind(&opts.addr, opts.unix_mode, "remote signals")?;
        tracing::info!(
            "listening for remote signals on {}",
            listener.local_addr(&opts.addr)
        );
        Ok(Remote {
            allowed: opts.allowed(),
            opts,
            listener: Some(listener),
            conns: Slab::new(token_base),
            last_sweep: Instant::now(),
        })
    }

    /// The address actually bound (with the port chosen when `:0` was asked).
    pub(super) fn local_addr(&self) -> Option<String> {
        self.listener
            .as_ref()
            .map(|l| l.local_addr(&self.opts.addr))
    }

    pub(super) fn register(&mut self, registry: &Registry, token: Token) -> Result<()> {
        match &mut self.listener {
            Some(l) => l.register(registry, token),
            None => Ok(()),
        }
    }

    /// Descriptors a new child must close.
    pub(super) fn fds(&self) -> Vec<RawFd> {
        let mut fds = self.conns.fds();
        fds.extend(self.listener.as_ref().map(Listener::raw_fd));
        fds
    }

    /// Accepts every waiting connection. Returns how many were refused
    /// because the limit was reached.
    pub(super) fn accept(&mut self, registry: &Registry) -> u64 {
        let mut refused = 0;
        loop {
            let Some(l) = &self.listener else {
                return refused;
            };
            let (stream, peer) = match l.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return refused,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and the like: try again on the next event.
                    tracing::warn!("remote signals: accept failed: {e}");
                    return refused;
                }
            };
            if self.conns.live() >= self.opts.max_connections {
                refused += 1;
                continue; // dropping the stream closes it
            }
            self.conns.insert(
                registry,
                Conn {
                    stream,
                    reader: RequestReader::default(),
                    out: Vec::new(),
                    out_at: 0,
                    readable: true,
                    writable: true,
                    paused: false,
                    last_active: Instant::now(),
                    peer,
                },
            );
        }
    }

    /// The connection behind a token, if it is one of ours.
    pub(super) fn index_of(&self, token: Token) -> Option<usize> {
        self.conns.index_of(token)
    }

    pub(super) fn conn_mut(&mut self, idx: usize) -> Option<&mut Conn> {
        self.conns.get_mut(idx)
    }

    /// Marks readiness from an event.
    pub(super) fn ready(&mut self, idx: usize, readable: bool, writable: bool) {
        if let Some(c) = self.conns.get_mut(idx) {
            c.readable |= readable;
            c.writable |= writable;
        }
    }

    /// Number of connection slots (some may be empty).
    pub(super) fn slots(&self) -> usize {
        self.conns.slots()
    }

    pub(super) fn any_input(&self) -> bool {
        self.conns.iter().any(|(_, c)| c.has_input())
    }

    pub(super) fn close(&mut self, registry: &Registry, idx: usize) {
        self.conns.remove(registry, idx);
    }

    /// Closes connections idle past the read timeout (checked at most
    /// every 100 ms). Returns the peers closed.
    pub(super) fn sweep(&mut self, registry: &Registry, now: Instant) -> Vec<String> {
        if now.duration_since(self.last_sweep) < Duration::from_millis(100) {
            return Vec::new();
        }
        self.last_sweep = now;
        let limit = self.opts.read_timeout;
        let idle: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.paused && now.duration_since(c.last_active) >= limit)
            .map(|(i, _)| i)
            .collect();
        idle.into_iter()
            .filter_map(|i| self.conns.remove(registry, i).map(|c| c.peer))
            .collect()
    }

    /// When the next sweep is due, while connections are open.
    pub(super) fn next_sweep(&self) -> Option<Instant> {
        (self.conns.live() > 0).then(|| self.last_sweep + Duration::from_millis(100))
    }

    /// Stops listening and closes every connection, after one last try to
    /// write the replies already queued.
    pub(super) fn shut(&mut self, registry: &Registry) {
        for i in 0..self.conns.slots() {
            if let Some(c) = self.conns.get_mut(i) {
                let _ = c.flush();
            }
            self.conns.remove(registry, i);
        }
        if let Some(mut l) = self.listener.take() {
            l.deregister(registry); // dropping unlinks a Unix socket path
        }
    }
}
