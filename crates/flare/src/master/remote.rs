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

use super::listener::{
    Bounded, Conns, EdgeCounts, Gate, Limits, Listener, Peer, Stream, out_of_fds, suppressed,
};
use crate::counters::Counters;
use crate::error::{Error, Result};
use crate::proto::uwsgi::{Read, RequestReader, signal_reply};
use crate::ratelog::RateLog;

/// Settings of the remote-signal listener: [`RemoteOptions::new`], then
/// set the fields to change (more may come).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RemoteOptions {
    /// Where to listen: `host:port`, `:port`, a socket path, or `@name`
    /// (see [`RemoteAddr`](crate::RemoteAddr)).
    pub addr: String,
    /// Signal numbers remote nodes may raise; `None` allows all. A number
    /// off the list is answered "rejected".
    pub allow: Option<BTreeSet<u8>>,
    /// Connections served at once. A newcomer past the limit closes the
    /// connection that has waited longest without finishing a request (the
    /// oldest idle or the slowest), so a flood cannot lock others out.
    /// Default 1,024.
    pub max_connections: usize,
    /// Likewise for the connections of one peer (an IP address; on a Unix
    /// socket, a uid). Default 64.
    pub max_per_peer: usize,
    /// A request must be complete this long after its first byte (bytes
    /// trickling in do not extend it), and a connection with no request
    /// under way is closed after this long. Default 5 s.
    pub read_timeout: Duration,
    /// A connection whose requests are rejected this many times in a row
    /// (numbers off the allow-list, or reaching nobody) is closed.
    /// Default 8.
    pub max_rejected: u32,
    /// Replies queued for a client past which its requests are no longer
    /// read until it reads them (a client that sends but never reads).
    /// Default 64 KiB.
    pub max_output: usize,
    /// Users who may connect to a Unix socket besides root and the
    /// master's own user (checked with `SO_PEERCRED`, abstract sockets
    /// too). Default none.
    pub allow_uids: Vec<u32>,
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
            max_per_peer: 64,
            read_timeout: Duration::from_secs(5),
            max_rejected: 8,
            max_output: 64 * 1024,
            allow_uids: Vec::new(),
            unix_mode: 0o600,
        }
    }

    /// Checks the limits.
    pub(super) fn validate(&self) -> Result<()> {
        if self.max_connections == 0
            || self.max_per_peer == 0
            || self.read_timeout.is_zero()
            || self.max_rejected == 0
            || self.max_output == 0
        {
            return Err(Error::Config(
                "remote signals need max_connections, max_per_peer, read_timeout, max_rejected \
                 and max_output above zero"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The allow-list as a table indexed by signal number.
    fn allowed(&self) -> [bool; 256] {
        std::array::from_fn(|n| self.allow.as_ref().is_none_or(|a| a.contains(&(n as u8))))
    }

    fn limits(&self) -> Limits {
        Limits {
            max_connections: self.max_connections,
            max_per_peer: self.max_per_peer,
            request_timeout: self.read_timeout,
            idle_timeout: self.read_timeout,
            max_output: self.max_output,
        }
    }
}

/// Bytes read from one connection at a time: with the bound on queued
/// replies, what one client can make the master hold.
const READ_CHUNK: usize = 16 * 1024;
/// Reads of one connection per loop turn, so one busy client cannot
/// starve the others.
const READS_PER_TURN: usize = 8;
/// Connections accepted per loop turn, so a flood of connections cannot
/// starve those already accepted.
const ACCEPTS_PER_TURN: usize = 64;

/// One client connection.
pub(super) struct Conn {
    stream: Stream,
    reader: RequestReader,
    out: Vec<u8>,
    out_at: usize,
    readable: bool,
    writable: bool,
    /// Not read while a queue its requests filled is above high water.
    pub(super) paused: bool,
    /// The last whole request (or the accept).
    last_active: Instant,
    /// When the first byte of the unfinished request came.
    first_byte: Option<Instant>,
    /// Requests rejected since the last accepted one.
    rejected: u32,
    /// At least one request was answered.
    served: bool,
    name: String,
    peer: Peer,
}

impl Bounded for Conn {
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
        let answered = self.served && self.first_byte.is_none() && self.unsent() == 0;
        (!answered, self.first_byte.unwrap_or(self.last_active))
    }

    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        if self.paused {
            return None; // waiting for the master, not for the client
        }
        Some(match self.first_byte {
            Some(t) => t + limits.request_timeout,
            None => self.last_active + limits.idle_timeout,
        })
    }
}

/// What reading a connection once gave.
enum Input {
    /// This many new bytes (0: only what the reader already held).
    Bytes(usize),
    /// Nothing to read now.
    Empty,
    /// The client closed its end.
    Closed,
}

impl Conn {
    fn unsent(&self) -> usize {
        self.out.len() - self.out_at
    }

    /// Whether to read this connection now.
    fn has_input(&self, max_output: usize) -> bool {
        !self.paused && self.unsent() < max_output && (self.readable || self.reader.has_request())
    }

    /// Reads once into `buf` unless whole requests are already waiting.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<Input> {
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

    /// Writes queued replies until done or `WouldBlock`.
    fn flush(&mut self) -> io::Result<()> {
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

/// Connection outcomes of the remote listener, since last taken.
#[derive(Debug, Default)]
pub(super) struct RemoteCounts {
    pub(super) edge: EdgeCounts,
    /// Closed for a malformed or short packet.
    pub(super) malformed: u64,
    /// Closed after too many rejected requests in a row.
    pub(super) closed_rejected: u64,
}

impl RemoteCounts {
    /// Adds these to the master's counters.
    pub(super) fn add_to(self, c: &mut Counters) {
        c.remote_evicted += self.edge.evicted;
        c.remote_timed_out += self.edge.timed_out;
        c.remote_refused += self.edge.refused;
        c.remote_malformed += self.malformed;
        c.remote_closed_rejected += self.closed_rejected;
    }
}

/// What one raised request became: (answered "delivered", stop reading
/// the sender for back-pressure).
pub(super) type Raised = (bool, bool);

/// The listener and its connections.
pub(super) struct Remote {
    pub(super) opts: RemoteOptions,
    /// Which numbers remote nodes may raise.
    allowed: [bool; 256],
    limits: Limits,
    gate: Gate,
    listener: Option<Listener>,
    /// The master's poll, for this endpoint's connections.
    registry: Option<Registry>,
    conns: Conns<Conn>,
    /// The last accept stopped at [`ACCEPTS_PER_TURN`]: more may wait.
    accept_pending: bool,
    counts: RemoteCounts,
    log: RateLog,
    keys: Vec<usize>,
    /// Where connections are read into.
    buf: Vec<u8>,
}

impl Remote {
    /// Binds the listener (a Unix socket with `unix_mode`, replacing a
    /// stale socket file but never a live one).
    pub(super) fn bind(opts: RemoteOptions, token_base: usize) -> Result<Remote> {
        opts.validate()?;
        let listener = Listener::bind(&opts.addr, opts.unix_mode, "remote signals")?;
        tracing::info!(
            "listening for remote signals on {}",
            listener.local_addr(&opts.addr)
        );
        Ok(Remote {
            allowed: opts.allowed(),
            limits: opts.limits(),
            gate: Gate::new(&opts.allow_uids),
            opts,
            listener: Some(listener),
            registry: None,
            conns: Conns::new(token_base),
            accept_pending: false,
            counts: RemoteCounts::default(),
            log: RateLog::new(10, Duration::from_secs(1)),
            keys: Vec::new(),
            buf: vec![0; READ_CHUNK],
        })
    }

    /// The address actually bound (with the port chosen when `:0` was asked).
    pub(super) fn local_addr(&self) -> Option<String> {
        self.listener
            .as_ref()
            .map(|l| l.local_addr(&self.opts.addr))
    }

    pub(super) fn register(&mut self, registry: &Registry, token: Token) -> Result<()> {
        self.registry = Some(
            registry
                .try_clone()
                .map_err(|e| Error::io("watching remote connections", e))?,
        );
        match &mut self.listener {
            Some(l) => l.register(registry, token),
            None => Ok(()),
        }
    }

    /// Descriptors a new child must close.
    pub(super) fn fds(&self) -> Vec<RawFd> {
        let mut fds = self.conns.fds();
        fds.extend(self.listener.as_ref().map(Listener::raw_fd));
        fds.extend(self.registry.as_ref().map(|r| {
            use std::os::fd::AsRawFd;
            r.as_raw_fd()
        }));
        fds
    }

    /// What was counted since the last call.
    pub(super) fn take_counts(&mut self) -> RemoteCounts {
        std::mem::take(&mut self.counts)
    }

    fn warn(&mut self, now: Instant, what: std::fmt::Arguments<'_>) {
        if let Some(held) = self.log.allow(now) {
            tracing::warn!("remote signals: {what}{}", suppressed(held));
        }
    }

    /// Accepts waiting connections (at most [`ACCEPTS_PER_TURN`]; the rest
    /// on the next turn), making room where a limit is reached, and serves
    /// each at once: a request that came with the connection is answered
    /// before any later newcomer can take its room.
    pub(super) fn accept(
        &mut self,
        now: Instant,
        raise: &mut dyn FnMut(u8, usize, bool) -> Raised,
    ) {
        self.accept_pending = false;
        let Some(reg) = self.registry.take() else {
            return;
        };
        self.accept_with(&reg, now, raise);
        self.registry = Some(reg);
    }

    fn accept_with(
        &mut self,
        reg: &Registry,
        now: Instant,
        raise: &mut dyn FnMut(u8, usize, bool) -> Raised,
    ) {
        let mut buf = std::mem::take(&mut self.buf);
        let mut accepted = 0;
        while accepted < ACCEPTS_PER_TURN {
            let Some(l) = &self.listener else { break };
            let (stream, name, peer) = match l.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.buf = buf;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if out_of_fds(&e) => {
                    // Close the longest waiting to free a descriptor.
                    if let Some(i) = self.conns.victim(None) {
                        if self.conns.remove(reg, i).is_some() {
                            self.counts.edge.evicted += 1;
                            continue;
                        }
                    }
                    tracing::warn!("remote signals: accept failed: {e}");
                    self.buf = buf;
                    return;
                }
                Err(e) => {
                    tracing::warn!("remote signals: accept failed: {e}");
                    self.buf = buf;
                    return;
                }
            };
            accepted += 1;
            if !self.gate.admits(&peer) {
                self.counts.edge.refused += 1;
                if let Some(held) = self.log.allow(now) {
                    tracing::warn!(
                        "remote signals: refused {name}: only uids {} may connect \
                         (allow more with allow_uids, --allow-uid){}",
                        self.gate.describe(),
                        suppressed(held)
                    );
                }
                continue; // dropping the stream closes it
            }
            let evicted = self.conns.make_room(reg, &peer, &self.limits);
            if !evicted.is_empty() {
                self.counts.edge.evicted += evicted.len() as u64;
                if let Some(held) = self.log.allow(now) {
                    tracing::warn!(
                        "remote signals: closed {} to make room for {name} (limits: {} \
                         connections, {} per peer){}",
                        evicted[0].name,
                        self.limits.max_connections,
                        self.limits.max_per_peer,
                        suppressed(held)
                    );
                }
            }
            let conn = Conn {
                stream,
                reader: RequestReader::default(),
                out: Vec::new(),
                out_at: 0,
                readable: true,
                writable: true,
                paused: false,
                last_active: now,
                first_byte: None,
                rejected: 0,
                served: false,
                name,
                peer,
            };
            if let Some(idx) = self.conns.insert(reg, conn, &self.limits) {
                self.serve_or_close(reg, idx, &mut buf, now, raise);
            }
        }
        self.buf = buf;
        self.accept_pending = true;
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

    /// Whether there is work without waiting for an event.
    pub(super) fn any_input(&self) -> bool {
        self.accept_pending
            || self
                .conns
                .iter()
                .any(|(_, c)| c.has_input(self.limits.max_output))
    }

    /// Accepts what waits, reads every connection with input, has
    /// `raise(num, conn, allowed)` raise each request, queues the replies,
    /// writes them, and closes what misbehaves or took too long.
    pub(super) fn serve(&mut self, now: Instant, raise: &mut dyn FnMut(u8, usize, bool) -> Raised) {
        let Some(reg) = self.registry.take() else {
            return;
        };
        if self.accept_pending {
            self.accept_pending = false;
            self.accept_with(&reg, now, raise);
        }
        let mut keys = std::mem::take(&mut self.keys);
        let mut buf = std::mem::take(&mut self.buf);
        self.conns.keys_into(&mut keys);
        for &idx in &keys {
            self.serve_or_close(&reg, idx, &mut buf, now, raise);
        }
        self.keys = keys;
        self.buf = buf;
        for c in self.conns.expire(&reg, now, &self.limits) {
            self.counts.edge.timed_out += 1;
            let what = if c.first_byte.is_some() {
                "a request not finished"
            } else {
                "no request"
            };
            self.warn(
                now,
                format_args!(
                    "{}: closed after {what} within {} ms",
                    c.name,
                    self.limits.request_timeout.as_millis()
                ),
            );
        }
        self.registry = Some(reg);
    }

    /// Serves one connection and closes it if it misbehaved.
    fn serve_or_close(
        &mut self,
        reg: &Registry,
        idx: usize,
        buf: &mut [u8],
        now: Instant,
        raise: &mut dyn FnMut(u8, usize, bool) -> Raised,
    ) {
        let Some(why) = self.serve_one(idx, buf, now, raise) else {
            return;
        };
        if let Some(c) = self.conns.get_mut(idx) {
            let _ = c.flush();
        }
        if let Some(c) = self.conns.remove(reg, idx) {
            if let Some(why) = why {
                self.warn(now, format_args!("{}: {why}; connection closed", c.name));
            }
        }
    }

    /// Serves one connection; `Some(why)` to close it (`why` logged when
    /// given).
    fn serve_one(
        &mut self,
        idx: usize,
        buf: &mut [u8],
        now: Instant,
        raise: &mut dyn FnMut(u8, usize, bool) -> Raised,
    ) -> Option<Option<String>> {
        let max_output = self.limits.max_output;
        let max_rejected = self.opts.max_rejected;
        let allowed = &self.allowed;
        let c = self.conns.get_mut(idx)?;
        for _ in 0..READS_PER_TURN {
            if !c.has_input(max_output) {
                break;
            }
            let n = match c.read(buf) {
                Ok(Input::Bytes(n)) => n,
                Ok(Input::Empty) => break,
                Ok(Input::Closed) => {
                    return Some(c.reader.finish().map(|m| {
                        self.counts.malformed += 1;
                        m.to_string()
                    }));
                }
                Err(e) => {
                    tracing::debug!("remote signals: {}: {e}", c.name);
                    return Some(None);
                }
            };
            let mut reader = std::mem::take(&mut c.reader);
            let mut requests = 0u64;
            let mut too_many_rejected = false;
            let read = reader.feed(&buf[..n], &mut |num| {
                requests += 1;
                let (accepted, throttle) = raise(num, idx, allowed[num as usize]);
                c.out.extend_from_slice(&signal_reply(accepted));
                if accepted {
                    c.rejected = 0;
                } else {
                    c.rejected += 1;
                    too_many_rejected = c.rejected >= max_rejected;
                }
                c.paused |= throttle;
                !c.paused && !too_many_rejected && c.unsent() < max_output
            });
            c.reader = reader;
            if requests > 0 {
                c.last_active = now;
                c.served = true;
            }
            if let Read::Malformed(m) = read {
                self.counts.malformed += 1;
                return Some(Some(m.to_string()));
            }
            if too_many_rejected {
                self.counts.closed_rejected += 1;
                return Some(Some(format!("{max_rejected} requests rejected in a row")));
            }
            // The deadline runs from the first byte of the request under
            // way; later bytes of it do not move it.
            c.first_byte = if !c.reader.partial() {
                None
            } else if requests > 0 || c.first_byte.is_none() {
                Some(now)
            } else {
                c.first_byte
            };
        }
        if let Err(e) = c.flush() {
            tracing::debug!("remote signals: {}: {e}", c.name);
            return Some(None);
        }
        if let Some(t) = c.deadline(&self.limits) {
            self.conns.note(t);
        }
        None
    }

    /// Stops listening and closes every connection, after one last try to
    /// write the replies already queued.
    pub(super) fn shut(&mut self, registry: &Registry) {
        self.conns.clear(registry, |c| {
            let _ = c.flush();
        });
        self.accept_pending = false;
        if let Some(mut l) = self.listener.take() {
            l.deregister(registry); // dropping unlinks a Unix socket path
        }
    }

    /// When the next connection may be due to be closed.
    pub(super) fn next_sweep(&self) -> Option<Instant> {
        self.conns.due()
    }
}
