//! The stats and control endpoints.
//!
//! Stats: each connection gets the stats document (JSON) and is closed, as
//! uWSGI's stats server does. Control: a Unix socket (0600) taking one
//! command per line and answering each with one line. The engine builds the
//! documents and carries out the commands; this module moves the bytes and
//! enforces the limits.

use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use mio::{Registry, Token};

use super::listener::{HasStream, Listener, Slab, Stream};
use crate::error::{Error, Result};
use crate::remote::RemoteAddr;

/// Longest control line accepted.
const MAX_LINE: usize = 4096;
/// A connection with nothing to do for this long is closed.
const IDLE: Duration = Duration::from_secs(60);
/// Connections served at once, per endpoint kind together.
const MAX_CONNECTIONS: usize = 64;

/// Which endpoint a connection came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Stats,
    Control,
}

/// One stats or control connection.
pub(super) struct Conn {
    stream: Stream,
    pub(super) kind: Kind,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    out_at: usize,
    readable: bool,
    writable: bool,
    /// Close once everything queued is written.
    closing: bool,
    last_active: Instant,
}

impl HasStream for Conn {
    fn stream(&mut self) -> &mut Stream {
        &mut self.stream
    }

    fn fd(&self) -> RawFd {
        self.stream.raw_fd()
    }
}

impl Conn {
    /// Queues bytes to send.
    pub(super) fn send(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// Queues bytes, then closes.
    pub(super) fn send_and_close(&mut self, bytes: &[u8]) {
        self.send(bytes);
        self.closing = true;
    }

    /// Reads what is there; returns the complete lines, or an error line to
    /// send before closing. Sets `closing` at end of stream.
    pub(super) fn read_lines(&mut self) -> std::result::Result<Vec<String>, String> {
        let mut buf = [0u8; 4096];
        while self.readable {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    self.closing = true;
                    self.readable = false;
                }
                Ok(n) => {
                    self.inbuf.extend_from_slice(&buf[..n]);
                    self.last_active = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.readable = false,
                Err(_) => {
                    self.closing = true;
                    self.readable = false;
                }
            }
            if self.inbuf.len() > MAX_LINE && !self.inbuf[..MAX_LINE].contains(&b'\n') {
                return Err(format!("a line is longer than {MAX_LINE} bytes"));
            }
        }
        let mut lines = Vec::new();
        while let Some(end) = self.inbuf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.inbuf.drain(..=end).collect();
            match String::from_utf8(line) {
                Ok(l) => lines.push(l.trim_end_matches(['\n', '\r']).to_owned()),
                Err(_) => return Err("a line is not UTF-8".into()),
            }
        }
        Ok(lines)
    }

    /// Writes what it can; true when the connection is done (flushed and
    /// closing, or broken).
    pub(super) fn flush(&mut self) -> bool {
        while self.writable && self.out_at < self.out.len() {
            match self.stream.write(&self.out[self.out_at..]) {
                Ok(0) => return true,
                Ok(n) => {
                    self.out_at += n;
                    self.last_active = Instant::now();
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

/// The two endpoints and their connections.
pub(super) struct Admin {
    stats: Option<(Listener, String)>,
    control: Option<(Listener, String)>,
    conns: Slab<Conn>,
}

impl Admin {
    /// Binds the endpoints asked for: stats on TCP or Unix, control on a
    /// Unix socket only (commands change the group: not for the network).
    pub(super) fn bind(
        stats: Option<&str>,
        control: Option<&str>,
        token_base: usize,
    ) -> Result<Admin> {
        let stats = stats
            .map(|a| Listener::bind(a, 0o600, "stats").map(|l| (l, a.to_owned())))
            .transpose()?;
        let control = match control {
            Some(a) => {
                if matches!(a.parse::<RemoteAddr>()?, RemoteAddr::Tcp { .. }) {
                    return Err(Error::Config(format!(
                        "the control endpoint `{a}` must be a Unix socket path or @name, not TCP: \
                         its commands change the group"
                    )));
                }
                Some((Listener::bind(a, 0o600, "control")?, a.to_owned()))
            }
            None => None,
        };
        for (l, a) in stats.iter() {
            tracing::info!("stats on {}", l.local_addr(a));
        }
        for (_, a) in control.iter() {
            tracing::info!("control on {a}");
        }
        Ok(Admin {
            stats,
            control,
            conns: Slab::new(token_base),
        })
    }

    /// Where stats and control listen (with the actual port for TCP).
    pub(super) fn addrs(&self) -> (Option<String>, Option<String>) {
        (
            self.stats.as_ref().map(|(l, a)| l.local_addr(a)),
            self.control.as_ref().map(|(l, a)| l.local_addr(a)),
        )
    }

    pub(super) fn register(
        &mut self,
        registry: &Registry,
        stats: Token,
        control: Token,
    ) -> Result<()> {
        if let Some((l, _)) = &mut self.stats {
            l.register(registry, stats)?;
        }
        if let Some((l, _)) = &mut self.control {
            l.register(registry, control)?;
        }
        Ok(())
    }

    pub(super) fn fds(&self) -> Vec<RawFd> {
        let mut fds = self.conns.fds();
        fds.extend(
            self.stats
                .iter()
                .chain(self.control.iter())
                .map(|(l, _)| l.raw_fd()),
        );
        fds
    }

    /// Accepts waiting connections of one endpoint; returns their indexes.
    pub(super) fn accept(&mut self, registry: &Registry, kind: Kind) -> Vec<usize> {
        let mut new = Vec::new();
        loop {
            let listener = match kind {
                Kind::Stats => self.stats.as_ref(),
                Kind::Control => self.control.as_ref(),
            };
            let Some((l, _)) = listener else { break };
            let stream = match l.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::warn!("{kind:?} endpoint: accept failed: {e}");
                    break;
                }
            };
            if self.conns.live() >= MAX_CONNECTIONS {
                tracing::warn!(
                    "{kind:?} endpoint: {MAX_CONNECTIONS} connections open; closing a new one"
                );
                continue;
            }
            let conn = Conn {
                stream,
                kind,
                inbuf: Vec::new(),
                out: Vec::new(),
                out_at: 0,
                readable: true,
                writable: true,
                closing: false,
                last_active: Instant::now(),
            };
            new.extend(self.conns.insert(registry, conn));
        }
        new
    }

    pub(super) fn index_of(&self, token: Token) -> Option<usize> {
        self.conns.index_of(token)
    }

    pub(super) fn ready(&mut self, idx: usize, readable: bool, writable: bool) {
        if let Some(c) = self.conns.get_mut(idx) {
            c.readable |= readable;
            c.writable |= writable;
        }
    }

    pub(super) fn conn_mut(&mut self, idx: usize) -> Option<&mut Conn> {
        self.conns.get_mut(idx)
    }

    /// Indexes of connections that may have work.
    pub(super) fn busy(&self) -> Vec<usize> {
        self.conns
            .iter()
            .filter(|(_, c)| c.readable || c.writable || c.closing)
            .map(|(i, _)| i)
            .collect()
    }

    pub(super) fn close(&mut self, registry: &Registry, idx: usize) {
        self.conns.remove(registry, idx);
    }

    /// Closes connections idle past the limit.
    pub(super) fn sweep(&mut self, registry: &Registry, now: Instant) {
        let idle: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| now.duration_since(c.last_active) >= IDLE)
            .map(|(i, _)| i)
            .collect();
        for i in idle {
            self.conns.remove(registry, i);
        }
    }

    /// When the next connection goes idle past the limit: the loop sleeps
    /// until then, and not at all for this when there is none.
    pub(super) fn next_sweep(&self) -> Option<std::time::Instant> {
        self.conns.iter().map(|(_, c)| c.last_active + IDLE).min()
    }

    /// Stops listening and closes everything.
    pub(super) fn shut(&mut self, registry: &Registry) {
        for i in 0..self.conns.slots() {
            if let Some(c) = self.conns.get_mut(i) {
                let _ = c.flush();
            }
            self.conns.remove(registry, i);
        }
        for (mut l, _) in self.stats.take().into_iter().chain(self.control.take()) {
            l.deregister(registry);
        }
    }

    /// Sockets, for the stats document.
    pub(super) fn sockets(&self) -> Vec<(String, &'static str)> {
        let mut v = Vec::new();
        if let Some((l, a)) = &self.stats {
            v.push((l.local_addr(a), "stats"));
        }
        if let Some((l, a)) = &self.control {
            v.push((l.local_addr(a), "control"));
        }
        v
    }
}
