//! Listening sockets of the master (remote signals, stats, control) and the
//! connections they accept: TCP or Unix (created with a given mode), all
//! non-blocking, kept in a slab whose keys become poll tokens.
//!
//! Every endpoint is bounded the same way, by the rules here: who may
//! connect to a Unix socket ([`Gate`], by the peer's uid), how many
//! connections in total and per peer (a newcomer past a limit closes the
//! connection waiting longest: the oldest idle or the slowest), and when a
//! connection is closed for taking too long ([`Bounded::deadline`]).

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::socket::sockopt::PeerCredentials;

use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

use crate::error::{Error, Result};
use crate::remote::RemoteAddr;

/// A bound listening socket.
pub(super) enum Listener {
    Tcp(TcpListener),
    /// The path is removed when the listener is dropped.
    Unix(UnixListener, Option<PathBuf>),
}

impl Listener {
    /// Binds `addr` (see [`RemoteAddr`]); a Unix socket file is created
    /// with `unix_mode` and replaces a stale one, never a live one. `what`
    /// names the endpoint in errors.
    pub(super) fn bind(addr: &str, unix_mode: u32, what: &str) -> Result<Listener> {
        let bind_error =
            |e: io::Error| Error::Config(format!("cannot listen for {what} on `{addr}`: {e}"));
        let parsed: RemoteAddr = addr.parse()?;
        let listener = match &parsed {
            RemoteAddr::Tcp { host, port } => {
                let host = RemoteAddr::listen_host(host);
                let sa = std::net::ToSocketAddrs::to_socket_addrs(&(host, *port))
                    .map_err(bind_error)?
                    .next()
                    .ok_or_else(|| Error::Config(format!("`{addr}` resolves to nothing")))?;
                Listener::Tcp(TcpListener::bind(sa).map_err(bind_error)?)
            }
            RemoteAddr::Unix(path) => {
                clear_stale_socket(path, addr, what)?;
                let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(
                    !unix_mode & 0o777,
                ));
                let bound = UnixListener::bind(path);
                nix::sys::stat::umask(old);
                Listener::Unix(bound.map_err(bind_error)?, Some(path.clone()))
            }
            RemoteAddr::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let a = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                    .map_err(bind_error)?;
                Listener::Unix(UnixListener::bind_addr(&a).map_err(bind_error)?, None)
            }
        };
        // A long accept queue (the system's maximum, `net.core.somaxconn`):
        // under a flood of connections a legitimate one must wait in the
        // queue, not have its SYN dropped and retried a second later.
        let backlog = nix::sys::socket::Backlog::MAXCONN;
        let relisten = match &listener {
            Listener::Tcp(l) => nix::sys::socket::listen(l, backlog),
            Listener::Unix(l, _) => nix::sys::socket::listen(l, backlog),
        };
        relisten.map_err(|e| bind_error(e.into()))?;
        Ok(listener)
    }

    /// The address bound: with the actual port for TCP, else `configured`.
    pub(super) fn local_addr(&self, configured: &str) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map_or_else(|_| configured.to_owned(), |a| a.to_string()),
            Listener::Unix(..) => configured.to_owned(),
        }
    }

    pub(super) fn register(&mut self, registry: &Registry, token: Token) -> Result<()> {
        let r = match self {
            Listener::Tcp(l) => registry.register(l, token, Interest::READABLE),
            Listener::Unix(l, _) => registry.register(l, token, Interest::READABLE),
        };
        r.map_err(|e| Error::io("watching a listening socket", e))
    }

    pub(super) fn deregister(&mut self, registry: &Registry) {
        let _ = match self {
            Listener::Tcp(l) => registry.deregister(l),
            Listener::Unix(l, _) => registry.deregister(l),
        };
    }

    pub(super) fn raw_fd(&self) -> RawFd {
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l, _) => l.as_raw_fd(),
        }
    }

    /// Accepts one connection: the stream, a name for logs, and the peer
    /// (a Unix-socket peer by its uid, read with `SO_PEERCRED`).
    pub(super) fn accept(&self) -> io::Result<(Stream, String, Peer)> {
        match self {
            Listener::Tcp(l) => l.accept().map(|(s, a)| {
                let _ = s.set_nodelay(true);
                (Stream::Tcp(s), a.to_string(), Peer::Ip(a.ip()))
            }),
            Listener::Unix(l, _) => l.accept().map(|(s, _)| {
                let creds = nix::sys::socket::getsockopt(&s, PeerCredentials);
                let (peer, name) = match creds {
                    Ok(c) => (
                        Peer::Uid(c.uid()),
                        format!("pid {} (uid {})", c.pid(), c.uid()),
                    ),
                    Err(_) => (Peer::Unknown, "unix".to_owned()),
                };
                (Stream::Unix(s), name, peer)
            }),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, Some(path)) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Removes a socket file left by a dead process; refuses to touch a live
/// socket or anything that is not a socket.
fn clear_stale_socket(path: &Path, addr: &str, what: &str) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(Error::Config(format!(
            "cannot listen for {what} on `{addr}`: the path exists and is not a socket"
        )));
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(Error::Config(format!(
            "cannot listen for {what} on `{addr}`: another process is listening there"
        )));
    }
    std::fs::remove_file(path).map_err(|e| Error::io("removing a stale socket file", e))
}

/// An accepted connection of either family.
pub(super) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    pub(super) fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
        }
    }

    pub(super) fn raw_fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }

    pub(super) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }

    pub(super) fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
}

/// Who is at the other end of a connection, for the limits per peer: the
/// address of a TCP peer, the uid of a Unix-socket peer (from
/// `SO_PEERCRED`), or nobody known (its credentials could not be read).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum Peer {
    Ip(IpAddr),
    Uid(u32),
    Unknown,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Ip(a) => write!(f, "{a}"),
            Peer::Uid(u) => write!(f, "uid {u}"),
            Peer::Unknown => f.write_str("a peer without credentials"),
        }
    }
}

/// Who may connect to a Unix socket: root, the master's own user, and the
/// uids configured besides. TCP peers are not checked (a TCP endpoint is
/// for the network; bind it to an address only trusted hosts reach).
#[derive(Clone, Debug)]
pub(super) struct Gate {
    me: u32,
    extra: Vec<u32>,
}

impl Gate {
    pub(super) fn new(extra: &[u32]) -> Gate {
        Gate {
            me: nix::unistd::geteuid().as_raw(),
            extra: extra.to_vec(),
        }
    }

    /// Whether `peer` may use the endpoint.
    pub(super) fn admits(&self, peer: &Peer) -> bool {
        match peer {
            Peer::Ip(_) => true,
            Peer::Uid(u) => *u == 0 || *u == self.me || self.extra.contains(u),
            Peer::Unknown => false,
        }
    }

    /// The uids admitted, for log lines.
    pub(super) fn describe(&self) -> String {
        let mut uids = vec![0, self.me];
        uids.extend(&self.extra);
        uids.sort_unstable();
        uids.dedup();
        let list: Vec<String> = uids.iter().map(u32::to_string).collect();
        list.join(", ")
    }
}

/// Limits of one endpoint's connections.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    /// Connections at once; a newcomer past it closes the oldest idle or
    /// slowest connection.
    pub(super) max_connections: usize,
    /// Likewise for the connections of one peer.
    pub(super) max_per_peer: usize,
    /// A request must be complete this long after its first byte.
    pub(super) request_timeout: Duration,
    /// A connection with nothing under way is closed after this long.
    pub(super) idle_timeout: Duration,
    /// Unsent output past which the client's requests are no longer read.
    pub(super) max_output: usize,
}

/// A connection kept in [`Conns`].
pub(super) trait Bounded {
    fn stream(&mut self) -> &mut Stream;
    fn fd(&self) -> RawFd;
    fn peer(&self) -> &Peer;
    /// Which connection goes first when room is needed: the smallest key.
    /// A connection that was answered and has nothing under way (`false`
    /// first: its client has what it came for) before one still waiting
    /// for an answer; among each, the one waiting longest (the oldest idle
    /// or slowest).
    fn eviction_key(&self) -> (bool, Instant);
    /// When it is to be closed for taking too long, if ever.
    fn deadline(&self, limits: &Limits) -> Option<Instant>;
}

/// Connections served with the [`slab`] crate: a connection's slab key plus
/// `token_base` is its poll token. Keeps the count per peer and the time
/// the next deadline may be due.
pub(super) struct Conns<T> {
    slab: slab::Slab<T>,
    per_peer: HashMap<Peer, usize>,
    token_base: usize,
    /// No deadline falls before this (None: no connection).
    due: Option<Instant>,
}

impl<T: Bounded> Conns<T> {
    pub(super) fn new(token_base: usize) -> Self {
        Conns {
            slab: slab::Slab::new(),
            per_peer: HashMap::new(),
            token_base,
            due: None,
        }
    }

    /// Closes what must go so that one more connection from `peer` fits:
    /// the peer's longest-waiting one when the peer is at its limit, the
    /// longest-waiting of all when the endpoint is. Returns what it closed.
    pub(super) fn make_room(
        &mut self,
        registry: &Registry,
        peer: &Peer,
        limits: &Limits,
    ) -> Vec<T> {
        let mut closed = Vec::new();
        while self.per_peer.get(peer).copied().unwrap_or(0) >= limits.max_per_peer.max(1) {
            let Some(i) = self.victim(Some(peer)) else {
                break;
            };
            closed.extend(self.remove(registry, i));
        }
        while self.slab.len() >= limits.max_connections.max(1) {
            let Some(i) = self.victim(None) else { break };
            closed.extend(self.remove(registry, i));
        }
        closed
    }

    /// The connection (of `peer`, if given) waiting longest.
    pub(super) fn victim(&self, peer: Option<&Peer>) -> Option<usize> {
        self.slab
            .iter()
            .filter(|(_, c)| peer.is_none_or(|p| c.peer() == p))
            .min_by_key(|(_, c)| c.eviction_key())
            .map(|(i, _)| i)
    }

    /// Registers a new connection for reading and writing; `None` if the
    /// poll refused it.
    pub(super) fn insert(
        &mut self,
        registry: &Registry,
        mut conn: T,
        limits: &Limits,
    ) -> Option<usize> {
        let entry = self.slab.vacant_entry();
        let idx = entry.key();
        if let Err(e) = registry.register(
            conn.stream().source(),
            Token(self.token_base + idx),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::warn!("cannot watch a connection: {e}");
            return None;
        }
        *self.per_peer.entry(conn.peer().clone()).or_default() += 1;
        let deadline = conn.deadline(limits);
        entry.insert(conn);
        if let Some(t) = deadline {
            self.note(t);
        }
        Some(idx)
    }

    pub(super) fn remove(&mut self, registry: &Registry, idx: usize) -> Option<T> {
        let mut c = self.slab.try_remove(idx)?;
        let _ = registry.deregister(c.stream().source());
        if let Some(n) = self.per_peer.get_mut(c.peer()) {
            *n -= 1;
            if *n == 0 {
                self.per_peer.remove(c.peer());
            }
        }
        if self.slab.is_empty() {
            self.due = None;
        }
        Some(c)
    }

    /// A deadline set after the connection was inserted (a first byte).
    pub(super) fn note(&mut self, t: Instant) {
        self.due = Some(self.due.map_or(t, |d| d.min(t)));
    }

    /// When [`Conns::expire`] has work, at the earliest.
    pub(super) fn due(&self) -> Option<Instant> {
        self.due
    }

    /// Removes and returns the connections past their deadline, when one
    /// may be due.
    pub(super) fn expire(&mut self, registry: &Registry, now: Instant, limits: &Limits) -> Vec<T> {
        if self.due.is_none_or(|d| now < d) {
            return Vec::new();
        }
        let late: Vec<usize> = self
            .slab
            .iter()
            .filter(|(_, c)| c.deadline(limits).is_some_and(|d| d <= now))
            .map(|(i, _)| i)
            .collect();
        let gone = late
            .into_iter()
            .filter_map(|i| self.remove(registry, i))
            .collect();
        self.due = self
            .slab
            .iter()
            .filter_map(|(_, c)| c.deadline(limits))
            .min();
        gone
    }

    /// The connection behind a poll token, if it is one of these.
    pub(super) fn index_of(&self, token: Token) -> Option<usize> {
        token
            .0
            .checked_sub(self.token_base)
            .filter(|&i| self.slab.contains(i))
    }

    pub(super) fn get_mut(&mut self, idx: usize) -> Option<&mut T> {
        self.slab.get_mut(idx)
    }

    /// The keys of every connection, into `keys` (reused between turns).
    pub(super) fn keys_into(&self, keys: &mut Vec<usize>) {
        keys.clear();
        keys.extend(self.slab.iter().map(|(i, _)| i));
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (usize, &T)> {
        self.slab.iter()
    }

    pub(super) fn fds(&self) -> Vec<RawFd> {
        self.slab.iter().map(|(_, c)| c.fd()).collect()
    }

    /// Removes every connection, after `last` had its chance with each.
    pub(super) fn clear(&mut self, registry: &Registry, mut last: impl FnMut(&mut T)) {
        let mut keys = Vec::new();
        self.keys_into(&mut keys);
        for i in keys {
            if let Some(c) = self.slab.get_mut(i) {
                last(c);
            }
            self.remove(registry, i);
        }
    }
}

/// Connection outcomes an endpoint counted since they were last taken.
#[derive(Debug, Default)]
pub(super) struct EdgeCounts {
    /// Closed to make room for a newcomer.
    pub(super) evicted: u64,
    /// Closed for a request not finished in time, or for idling.
    pub(super) timed_out: u64,
    /// Refused: the peer's uid may not connect (or could not be read).
    pub(super) refused: u64,
}

impl EdgeCounts {
    /// Adds these to the master's stats and control counters.
    pub(super) fn add_admin(self, c: &mut crate::counters::Counters) {
        c.admin_evicted += self.evicted;
        c.admin_timed_out += self.timed_out;
        c.admin_refused += self.refused;
    }
}

/// Whether accepting failed for want of descriptors.
pub(super) fn out_of_fds(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(n) if n == nix::libc::EMFILE || n == nix::libc::ENFILE)
}

/// Raises this process's soft limit on open descriptors to the hard
/// limit: each connection an endpoint holds is one descriptor, and the
/// usual soft limit (1,024) is below what the endpoints allow together.
pub(super) fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                Ok(()) => tracing::debug!("open-files limit raised from {soft} to {hard}"),
                Err(e) => tracing::debug!("cannot raise the open-files limit from {soft}: {e}"),
            }
        }
    }
}

/// A suffix for a rate-limited log line: how many like it were held back.
pub(super) fn suppressed(held: u64) -> String {
    if held == 0 {
        String::new()
    } else {
        format!(" ({held} similar lines suppressed)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection whose eviction key and deadline the test sets.
    struct Fake {
        stream: Stream,
        /// Keeps the other end open.
        _other: UnixStream,
        peer: Peer,
        key: (bool, Instant),
        deadline: Option<Instant>,
        id: u32,
    }

    impl Bounded for Fake {
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
            self.key
        }
        fn deadline(&self, _: &Limits) -> Option<Instant> {
            self.deadline
        }
    }

    fn fake(id: u32, peer: u32, answered: bool, age_ms: u64, t0: Instant) -> Fake {
        let (a, b) = UnixStream::pair().unwrap();
        Fake {
            stream: Stream::Unix(a),
            _other: b,
            peer: Peer::Uid(peer),
            key: (!answered, t0 - Duration::from_millis(age_ms)),
            deadline: None,
            id,
        }
    }

    const LIMITS: Limits = Limits {
        max_connections: 4,
        max_per_peer: 2,
        request_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(60),
        max_output: 1024,
    };

    fn ids(v: &[Fake]) -> Vec<u32> {
        v.iter().map(|f| f.id).collect()
    }

    #[test]
    fn room_is_made_from_the_answered_then_the_longest_waiting() {
        let poll = mio::Poll::new().unwrap();
        let reg = poll.registry();
        let t0 = Instant::now();
        let mut conns = Conns::new(100);
        // Peer 1 at its limit: the answered one goes, though younger.
        conns
            .insert(reg, fake(1, 1, false, 500, t0), &LIMITS)
            .unwrap();
        conns
            .insert(reg, fake(2, 1, true, 10, t0), &LIMITS)
            .unwrap();
        assert_eq!(ids(&conns.make_room(reg, &Peer::Uid(1), &LIMITS)), [2]);
        // Another peer: nothing to close yet.
        assert!(conns.make_room(reg, &Peer::Uid(2), &LIMITS).is_empty());
        conns
            .insert(reg, fake(3, 2, false, 300, t0), &LIMITS)
            .unwrap();
        conns
            .insert(reg, fake(4, 3, false, 100, t0), &LIMITS)
            .unwrap();
        conns
            .insert(reg, fake(5, 4, false, 200, t0), &LIMITS)
            .unwrap();
        // The total limit (4): the one waiting longest of all, any peer.
        assert_eq!(ids(&conns.make_room(reg, &Peer::Uid(9), &LIMITS)), [1]);
        let left: Vec<u32> = conns.iter().map(|(_, f)| f.id).collect();
        assert_eq!(left.len(), 3);
        assert!(!left.contains(&1) && !left.contains(&2));
        // Tokens map back to live connections only.
        let (k, _) = conns.iter().next().unwrap();
        assert_eq!(conns.index_of(Token(100 + k)), Some(k));
        assert_eq!(conns.index_of(Token(99)), None);
    }

    #[test]
    fn expiry_closes_what_is_past_its_deadline_and_no_sooner() {
        let poll = mio::Poll::new().unwrap();
        let reg = poll.registry();
        let t0 = Instant::now();
        let mut conns = Conns::new(0);
        let mut late = fake(1, 1, false, 0, t0);
        late.deadline = Some(t0 + Duration::from_secs(1));
        let mut later = fake(2, 1, false, 0, t0);
        later.deadline = Some(t0 + Duration::from_secs(3));
        conns.insert(reg, late, &LIMITS).unwrap();
        conns.insert(reg, later, &LIMITS).unwrap();
        conns
            .insert(reg, fake(3, 2, false, 0, t0), &LIMITS)
            .unwrap(); // never
        assert_eq!(conns.due(), Some(t0 + Duration::from_secs(1)));
        assert!(conns.expire(reg, t0, &LIMITS).is_empty(), "nothing due yet");
        let gone = conns.expire(reg, t0 + Duration::from_secs(2), &LIMITS);
        assert_eq!(ids(&gone), [1]);
        assert_eq!(conns.due(), Some(t0 + Duration::from_secs(3)));
        // A deadline set later (a first byte) moves the next check earlier.
        conns.note(t0 + Duration::from_millis(2500));
        assert_eq!(conns.due(), Some(t0 + Duration::from_millis(2500)));
        let gone = conns.expire(reg, t0 + Duration::from_secs(4), &LIMITS);
        assert_eq!(ids(&gone), [2]);
        assert_eq!(conns.due(), None, "the last has no deadline");
    }

    #[test]
    fn only_root_the_owner_and_allowed_uids_pass_the_gate() {
        let me = nix::unistd::geteuid().as_raw();
        let gate = Gate::new(&[4242]);
        assert!(gate.admits(&Peer::Uid(0)));
        assert!(gate.admits(&Peer::Uid(me)));
        assert!(gate.admits(&Peer::Uid(4242)));
        assert!(!gate.admits(&Peer::Uid(4243)) || me == 4243);
        assert!(!gate.admits(&Peer::Unknown));
        assert!(gate.admits(&Peer::Ip(IpAddr::from([127, 0, 0, 1]))));
        assert!(gate.describe().contains("4242"));
    }
}
