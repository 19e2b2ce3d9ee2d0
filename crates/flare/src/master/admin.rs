//! The stats and control endpoints.
//!
//! Stats: each connection gets the stats document (JSON) and is closed, as
//! uWSGI's stats server does. Control: a Unix socket (0600) taking one
//! command per line and answering each with one line. The engine builds the
//! documents and carries out the commands; this module moves the bytes and
//! enforces the limits, each endpoint with its own (a flood of control
//! connections does not take the stats endpoint's room).

use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use mio::{Registry, Token};

use super::listener::{
    Bounded, Conns, EdgeCounts, Gate, Limits, Listener, Peer, Stream, out_of_fds, suppressed,
};
use crate::error::{Error, Result};
use crate::ratelog::RateLog;
use crate::remote::RemoteAddr;

/// Limits of the stats and control endpoints (each endpoint has its own
/// connections under them).
#[derive(Clone, Debug)]
pub struct AdminOptions {
    /// Connections per endpoint at once. A newcomer past the limit closes
    /// the connection that has waited longest (the oldest idle or the
    /// slowest). Default 64.
    pub max_connections: usize,
    /// Likewise for the connections of one peer (an IP address for TCP
    /// stats; a uid on a Unix socket). Default 16.
    pub max_per_peer: usize,
    /// A control line must be complete this long after its first byte,
    /// and a stats client must have taken its document this long after
    /// connecting. Default 5 s.
    pub request_timeout: Duration,
    /// A control connection with nothing under way is closed after this
    /// long. Default 60 s.
    pub idle_timeout: Duration,
    /// Answers queued for a control client past which its commands are no
    /// longer read until it reads them. Default 64 KiB.
    pub max_output: usize,
    /// Users who may connect to a Unix-socket endpoint besides root and the
    /// master's own user (checked with `SO_PEERCRED`, abstract sockets
    /// too). Default none.
    pub allow_uids: Vec<u32>,
}

impl Default for AdminOptions {
    fn default() -> Self {
        AdminOptions {
            max_connections: 64,
            max_per_peer: 16,
            request_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            max_output: 64 * 1024,
            allow_uids: Vec::new(),
        }
    }
}

impl AdminOptions {
    /// Checks the limits.
    pub(super) fn validate(&self) -> Result<()> {
        if self.max_connections == 0
            || self.max_per_peer == 0
            || self.request_timeout.is_zero()
            || self.idle_timeout.is_zero()
            || self.max_output == 0
        {
            return Err(Error::Config(
                "stats and control need max_connections, max_per_peer, request_timeout, \
                 idle_timeout and max_output above zero"
                    .into(),
            ));
        }
        Ok(())
    }

    fn limits(&self) -> Limits {
        Limits {
            max_connections: self.max_connections,
            max_per_peer: self.max_per_peer,
            request_timeout: self.request_timeout,
            idle_timeout: self.idle_timeout,
            max_output: self.max_output,
        }
    }
}

/// Longest control line accepted.
const MAX_LINE: usize = 4096;
/// Connections accepted per endpoint and loop turn.
const ACCEPTS_PER_TURN: usize = 64;
/// Token offset of the control connections from the stats ones.
const CONTROL_TOKENS: usize = 1 << 22;

/// Which endpoint a connection came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Stats,
    Control,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Stats => "stats",
            Kind::Control => "control",
        })
    }
}

/// One stats or control connection.
pub(super) struct Conn {
    stream: Stream,
    kind: Kind,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    out_at: usize,
    readable: bool,
    writable: bool,
    /// Close once everything queued is written.
    closing: bool,
    opened: Instant,
    /// The last byte read or written.
    last_active: Instant,
    /// When the first byte of the line under way came.
    first_byte: Option<Instant>,
    /// At least one command was answered.
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
        match self.kind {
            Kind::Stats => (true, self.opened),
            Kind::Control => {
                let answered = self.served && self.first_byte.is_none() && self.unsent() == 0;
                (!answered, self.first_byte.unwrap_or(self.last_active))
            }
        }
    }

    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        Some(match (self.kind, self.first_byte) {
            (Kind::Stats, _) => self.opened + limits.request_timeout,
            (Kind::Control, Some(t)) => t + limits.request_timeout,
            (Kind::Control, None) => self.last_active + limits.idle_timeout,
        })
    }
}

impl Conn {
    fn unsent(&self) -> usize {
        self.out.len() - self.out_at
    }

    /// Queues bytes to send.
    fn send(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// The next complete line, reading as needed; `Ok(None)` when there is
    /// none yet or the answers queued are past `max_output` (nothing more
    /// is read until the client reads). An error is a line to send before
    /// closing. Sets `closing` at end of stream.
    fn next_line(
        &mut self,
        now: Instant,
        max_output: usize,
    ) -> std::result::Result<Option<String>, String> {
        let mut buf = [0u8; 4096];
        loop {
            if self.unsent() >= max_output {
                return Ok(None);
            }
            if let Some(end) = self.inbuf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.inbuf.drain(..=end).collect();
                self.first_byte = (!self.inbuf.is_empty()).then_some(now);
                return match String::from_utf8(line) {
                    Ok(l) => Ok(Some(l.trim_end_matches(['\n', '\r']).to_owned())),
                    Err(_) => Err("a line is not UTF-8".into()),
                };
            }
            if self.inbuf.len() > MAX_LINE {
                return Err(format!("a line is longer than {MAX_LINE} bytes"));
            }
            if !self.readable || self.closing {
                return Ok(None);
            }
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    self.closing = true;
                    self.readable = false;
                }
                Ok(n) => {
                    if self.inbuf.is_empty() {
                        self.first_byte = Some(now);
                    }
                    self.inbuf.extend_from_slice(&buf[..n]);
                    self.last_active = now;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.readable = false,
                Err(_) => {
                    self.closing = true;
                    self.readable = false;
                }
            }
        }
    }

    /// Writes what it can; true when the connection is done (flushed and
    /// closing, or broken).
    fn flush(&mut self, now: Instant) -> bool {
        while self.writable && self.out_at < self.out.len() {
            match self.stream.write(&self.out[self.out_at..]) {
                Ok(0) => return true,
                Ok(n) => {
                    self.out_at += n;
                    self.last_active = now;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                Err(_) => return true,
            }
        }
        if self.out_at == self.out.len() {
            self.out.clear();
            self.out_at = 0;
            return self.closing;
        }
        false
    }
}

/// One endpoint: its listener and connections.
struct Endpoint {
    kind: Kind,
    listener: Listener,
    addr: String,
    conns: Conns<Conn>,
    accept_pending: bool,
}

/// A connection of either endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ConnId(Kind, usize);

/// The two endpoints and their connections.
pub(super) struct Admin {
    stats: Option<Endpoint>,
    control: Option<Endpoint>,
    limits: Limits,
    gate: Gate,
    registry: Option<Registry>,
    counts: EdgeCounts,
    log: RateLog,
    keys: Vec<usize>,
}

impl Admin {
    /// Binds the endpoints asked for: stats on TCP or Unix, control on a
    /// Unix socket only (commands change the group: not for the network).
    pub(super) fn bind(
        stats: Option<&str>,
        control: Option<&str>,
        opts: &AdminOptions,
        token_base: usize,
    ) -> Result<Admin> {
        opts.validate()?;
        let endpoint = |kind, listener, addr: &str, base| Endpoint {
            kind,
            listener,
            addr: addr.to_owned(),
            conns: Conns::new(base),
            accept_pending: false,
        };
        let stats = stats
            .map(|a| {
                Listener::bind(a, 0o600, "stats").map(|l| endpoint(Kind::Stats, l, a, token_base))
            })
            .transpose()?;
        let control = match control {
            Some(a) => {
                if matches!(a.parse::<RemoteAddr>()?, RemoteAddr::Tcp { .. }) {
                    return Err(Error::Config(format!(
                        "the control endpoint `{a}` must be a Unix socket path or @name, not TCP: \
                         its commands change the group"
                    )));
                }
                let l = Listener::bind(a, 0o600, "control")?;
                Some(endpoint(Kind::Control, l, a, token_base + CONTROL_TOKENS))
            }
            None => None,
        };
        for e in stats.iter() {
            tracing::info!("stats on {}", e.listener.local_addr(&e.addr));
        }
        for e in control.iter() {
            tracing::info!("control on {}", e.addr);
        }
        Ok(Admin {
            stats,
            control,
            limits: opts.limits(),
            gate: Gate::new(&opts.allow_uids),
            registry: None,
            counts: EdgeCounts::default(),
            log: RateLog::new(10, Duration::from_secs(1)),
            keys: Vec::new(),
        })
    }

    /// Where stats and control listen (with the actual port for TCP).
    pub(super) fn addrs(&self) -> (Option<String>, Option<String>) {
        (
            self.stats.as_ref().map(|e| e.listener.local_addr(&e.addr)),
            self.control
                .as_ref()
                .map(|e| e.listener.local_addr(&e.addr)),
        )
    }

    fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.stats.iter().chain(self.control.iter())
    }

    fn endpoint_mut(&mut self, kind: Kind) -> Option<&mut Endpoint> {
        match kind {
            Kind::Stats => self.stats.as_mut(),
            Kind::Control => self.control.as_mut(),
        }
    }

    pub(super) fn register(
        &mut self,
        registry: &Registry,
        stats: Token,
        control: Token,
    ) -> Result<()> {
        self.registry = Some(
            registry
                .try_clone()
                .map_err(|e| Error::io("watching stats and control connections", e))?,
        );
        if let Some(e) = &mut self.stats {
            e.listener.register(registry, stats)?;
        }
        if let Some(e) = &mut self.control {
            e.listener.register(registry, control)?;
        }
        Ok(())
    }

    pub(super) fn fds(&self) -> Vec<RawFd> {
        let mut fds = Vec::new();
        for e in self.endpoints() {
            fds.extend(e.conns.fds());
            fds.push(e.listener.raw_fd());
        }
        fds.extend(self.registry.as_ref().map(|r| {
            use std::os::fd::AsRawFd;
            r.as_raw_fd()
        }));
        fds
    }

    /// What was counted since the last call.
    pub(super) fn take_counts(&mut self) -> EdgeCounts {
        std::mem::take(&mut self.counts)
    }

    /// Accepts waiting connections of one endpoint (at most
    /// [`ACCEPTS_PER_TURN`]; the rest on the next turn), making room where
    /// a limit is reached. A stats connection gets `doc()` and is closed
    /// once it is written.
    pub(super) fn accept(&mut self, kind: Kind, now: Instant, doc: &mut dyn FnMut() -> Vec<u8>) {
        let Some(reg) = self.registry.take() else {
            return;
        };
        let limits = self.limits;
        let Some(e) = (match kind {
            Kind::Stats => self.stats.as_mut(),
            Kind::Control => self.control.as_mut(),
        }) else {
            self.registry = Some(reg);
            return;
        };
        e.accept_pending = true;
        for _ in 0..ACCEPTS_PER_TURN {
            let (stream, name, peer) = match e.listener.accept() {
                Ok(x) => x,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    e.accept_pending = false;
                    break;
                }
                Err(err) => {
                    let freed = out_of_fds(&err)
                        && e.conns
                            .victim(None)
                            .and_then(|i| e.conns.remove(&reg, i))
                            .is_some();
                    if freed {
                        self.counts.evicted += 1;
                        continue;
                    }
                    tracing::warn!("{kind} endpoint: accept failed: {err}");
                    e.accept_pending = false;
                    break;
                }
            };
            if !self.gate.admits(&peer) {
                self.counts.refused += 1;
                if let Some(held) = self.log.allow(now) {
                    tracing::warn!(
                        "{kind} endpoint: refused {name}: only uids {} may connect \
                         (allow more with allow_uids, --allow-uid){}",
                        self.gate.describe(),
                        suppressed(held)
                    );
                }
                continue;
            }
            let evicted = e.conns.make_room(&reg, &peer, &limits);
            if !evicted.is_empty() {
                self.counts.evicted += evicted.len() as u64;
                if let Some(held) = self.log.allow(now) {
                    tracing::warn!(
                        "{kind} endpoint: closed {} to make room for {name} (limits: {} \
                         connections, {} per peer){}",
                        evicted[0].name,
                        limits.max_connections,
                        limits.max_per_peer,
                        suppressed(held)
                    );
                }
            }
            let mut conn = Conn {
                stream,
                kind,
                inbuf: Vec::new(),
                out: Vec::new(),
                out_at: 0,
                readable: true,
                writable: true,
                closing: false,
                opened: now,
                last_active: now,
                first_byte: None,
                served: false,
                name,
                peer,
            };
            if kind == Kind::Stats {
                conn.send(&doc());
                conn.closing = true;
            }
            e.conns.insert(&reg, conn, &limits);
        }
        self.registry = Some(reg);
    }

    /// The connection behind a token, if it is one of ours.
    pub(super) fn index_of(&self, token: Token) -> Option<ConnId> {
        self.endpoints()
            .find_map(|e| e.conns.index_of(token).map(|i| ConnId(e.kind, i)))
    }

    /// Marks readiness from an event.
    pub(super) fn ready(&mut self, id: ConnId, readable: bool, writable: bool) {
        if let Some(c) = self.endpoint_mut(id.0).and_then(|e| e.conns.get_mut(id.1)) {
            c.readable |= readable;
            c.writable |= writable;
        }
    }

    /// Whether there is work without waiting for an event.
    pub(super) fn any_input(&self) -> bool {
        self.endpoints().any(|e| e.accept_pending)
    }

    /// Accepts what waits, reads control lines and has `answer` carry
    /// them out, writes what is queued, and closes finished connections
    /// and those past their deadline.
    pub(super) fn serve(
        &mut self,
        now: Instant,
        doc: &mut dyn FnMut() -> Vec<u8>,
        answer: &mut dyn FnMut(&str) -> String,
    ) {
        for kind in [Kind::Stats, Kind::Control] {
            if self.endpoint_mut(kind).is_some_and(|e| e.accept_pending) {
                self.accept(kind, now, doc);
            }
        }
        let Some(reg) = self.registry.take() else {
            return;
        };
        let limits = self.limits;
        let mut keys = std::mem::take(&mut self.keys);
        for e in self.stats.iter_mut().chain(self.control.iter_mut()) {
            e.conns.keys_into(&mut keys);
            for &idx in &keys {
                let Some(c) = e.conns.get_mut(idx) else {
                    continue;
                };
                if c.kind == Kind::Control {
                    loop {
                        match c.next_line(now, limits.max_output) {
                            Ok(Some(line)) => {
                                c.served = true;
                                let a = answer(&line);
                                c.send(a.as_bytes());
                                c.send(b"\n");
                            }
                            Ok(None) => break,
                            Err(why) => {
                                c.send(format!("error: {why}\n").as_bytes());
                                c.closing = true;
                                c.readable = false;
                                c.inbuf.clear();
                                break;
                            }
                        }
                    }
                }
                let done = c.flush(now);
                let deadline = c.deadline(&limits);
                if done {
                    e.conns.remove(&reg, idx);
                } else if let Some(t) = deadline {
                    e.conns.note(t);
                }
            }
            for c in e.conns.expire(&reg, now, &limits) {
                self.counts.timed_out += 1;
                if let Some(held) = self.log.allow(now) {
                    tracing::warn!(
                        "{} endpoint: {}: closed, {}{}",
                        e.kind,
                        c.name,
                        match (c.kind, c.first_byte) {
                            (Kind::Stats, _) => "the stats document was not read in time",
                            (Kind::Control, Some(_)) => "a command not finished in time",
                            (Kind::Control, None) => "idle",
                        },
                        suppressed(held)
                    );
                }
            }
        }
        self.keys = keys;
        self.registry = Some(reg);
    }

    /// When the next connection may be due to be closed.
    pub(super) fn next_sweep(&self) -> Option<Instant> {
        self.endpoints().filter_map(|e| e.conns.due()).min()
    }

    /// Stops listening and closes everything.
    pub(super) fn shut(&mut self, registry: &Registry) {
        let now = Instant::now();
        for mut e in self.stats.take().into_iter().chain(self.control.take()) {
            e.conns.clear(registry, |c| {
                let _ = c.flush(now);
            });
            e.listener.deregister(registry);
        }
    }

    /// Sockets, for the stats document.
    pub(super) fn sockets(&self) -> Vec<(String, &'static str)> {
        self.endpoints()
            .map(|e| {
                let proto = match e.kind {
                    Kind::Stats => "stats",
                    Kind::Control => "control",
                };
                (e.listener.local_addr(&e.addr), proto)
            })
            .collect()
    }
}
