//! The master's remote-signal listener: the uwsgi protocol (modifier1 110)
//! over TCP or a Unix socket, wire-compatible with uWSGI's nodes and its
//! `uwsgi --signal` client.
//!
//! Non-blocking like everything in the master: many connections, many
//! requests per connection, replies queued per connection. What a request
//! raises is routed by the engine; this module only moves bytes, enforces
//! the limits, and closes what misbehaves.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

use crate::error::{Error, Result};
use crate::proto::uwsgi::RequestReader;
use crate::remote::RemoteAddr;

/// Settings of the remote-signal listener.
#[derive(Clone, Debug)]
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

enum Listener {
    Tcp(TcpListener),
    /// The path is removed when the listener closes.
    Unix(UnixListener, Option<PathBuf>),
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
        }
    }

    fn raw_fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
}

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
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    live: usize,
    last_sweep: Instant,
    token_base: usize,
}

impl Remote {
    /// Binds the listener (a Unix socket with `unix_mode`, replacing a
    /// stale socket file but never a live one).
    pub(super) fn bind(opts: RemoteOptions, token_base: usize) -> Result<Remote> {
        let addr: RemoteAddr = opts.addr.parse()?;
        let listener = match &addr {
            RemoteAddr::Tcp { host, port } => {
                let host = RemoteAddr::listen_host(host);
                let sa = std::net::ToSocketAddrs::to_socket_addrs(&(host, *port))
                    .map_err(|e| Error::io("resolving the remote-signal address", e))?
                    .next()
                    .ok_or_else(|| Error::Config(format!("`{}` resolves to nothing", opts.addr)))?;
                Listener::Tcp(TcpListener::bind(sa).map_err(|e| bind_error(&opts.addr, e))?)
            }
            RemoteAddr::Unix(path) => {
                clear_stale_socket(path, &opts.addr)?;
                let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(
                    !opts.unix_mode & 0o777,
                ));
                let bound = UnixListener::bind(path);
                nix::sys::stat::umask(old);
                Listener::Unix(
                    bound.map_err(|e| bind_error(&opts.addr, e))?,
                    Some(path.clone()),
                )
            }
            RemoteAddr::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let a = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                    .map_err(|e| bind_error(&opts.addr, e))?;
                Listener::Unix(
                    UnixListener::bind_addr(&a).map_err(|e| bind_error(&opts.addr, e))?,
                    None,
                )
            }
        };
        tracing::info!("listening for remote signals on {addr}");
        Ok(Remote {
            allowed: opts.allowed(),
            opts,
            listener: Some(listener),
            conns: Vec::new(),
            free: Vec::new(),
            live: 0,
            last_sweep: Instant::now(),
            token_base,
        })
    }

    /// The address actually bound (with the port chosen when `:0` was asked).
    pub(super) fn local_addr(&self) -> Option<String> {
        match &self.listener {
            Some(Listener::Tcp(l)) => l.local_addr().ok().map(|a| a.to_string()),
            Some(Listener::Unix(_, _)) => Some(self.opts.addr.clone()),
            None => None,
        }
    }

    pub(super) fn register(&mut self, registry: &Registry, token: Token) -> Result<()> {
        let r = match &mut self.listener {
            Some(Listener::Tcp(l)) => registry.register(l, token, Interest::READABLE),
            Some(Listener::Unix(l, _)) => registry.register(l, token, Interest::READABLE),
            None => Ok(()),
        };
        r.map_err(|e| Error::io("watching the remote-signal listener", e))
    }

    /// Descriptors a new child must close.
    pub(super) fn fds(&self) -> Vec<RawFd> {
        let mut fds: Vec<RawFd> = self
            .conns
            .iter()
            .flatten()
            .map(|c| c.stream.raw_fd())
            .collect();
        match &self.listener {
            Some(Listener::Tcp(l)) => fds.push(l.as_raw_fd()),
            Some(Listener::Unix(l, _)) => fds.push(l.as_raw_fd()),
            None => {}
        }
        fds
    }

    /// Accepts every waiting connection. Returns how many were refused
    /// because the limit was reached.
    pub(super) fn accept(&mut self, registry: &Registry) -> u64 {
        let mut refused = 0;
        loop {
            let accepted = match &self.listener {
                Some(Listener::Tcp(l)) => l.accept().map(|(s, a)| {
                    let _ = s.set_nodelay(true);
                    (Stream::Tcp(s), a.to_string())
                }),
                Some(Listener::Unix(l, _)) => {
                    l.accept().map(|(s, _)| (Stream::Unix(s), "unix".into()))
                }
                None => return refused,
            };
            let (mut stream, peer) = match accepted {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return refused,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and the like: try again on the next event.
                    tracing::warn!("remote signals: accept failed: {e}");
                    return refused;
                }
            };
            if self.live >= self.opts.max_connections {
                refused += 1;
                continue; // dropping the stream closes it
            }
            let idx = self.free.pop().unwrap_or_else(|| {
                self.conns.push(None);
                self.conns.len() - 1
            });
            let token = Token(self.token_base + idx);
            if let Err(e) = registry.register(
                stream.source(),
                token,
                Interest::READABLE | Interest::WRITABLE,
            ) {
                tracing::warn!("remote signals: cannot watch a connection: {e}");
                self.free.push(idx);
                continue;
            }
            self.conns[idx] = Some(Conn {
                stream,
                reader: RequestReader::default(),
                out: Vec::new(),
                out_at: 0,
                readable: true,
                writable: true,
                paused: false,
                last_active: Instant::now(),
                peer,
            });
            self.live += 1;
        }
    }

    /// The connection behind a token, if it is one of ours.
    pub(super) fn index_of(&self, token: Token) -> Option<usize> {
        token
            .0
            .checked_sub(self.token_base)
            .filter(|&i| i < self.conns.len())
    }

    pub(super) fn conn_mut(&mut self, idx: usize) -> Option<&mut Conn> {
        self.conns.get_mut(idx).and_then(Option::as_mut)
    }

    /// Marks readiness from an event.
    pub(super) fn ready(&mut self, idx: usize, readable: bool, writable: bool) {
        if let Some(c) = self.conn_mut(idx) {
            c.readable |= readable;
            c.writable |= writable;
        }
    }

    /// Number of connection slots (some may be empty).
    pub(super) fn slots(&self) -> usize {
        self.conns.len()
    }

    pub(super) fn has_conns(&self) -> bool {
        self.live > 0
    }

    pub(super) fn any_input(&self) -> bool {
        self.conns.iter().flatten().any(Conn::has_input)
    }

    pub(super) fn close(&mut self, registry: &Registry, idx: usize) {
        if let Some(mut c) = self.conns.get_mut(idx).and_then(Option::take) {
            let _ = registry.deregister(c.stream.source());
            self.free.push(idx);
            self.live -= 1;
        }
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
            .enumerate()
            .filter_map(|(i, c)| {
                let c = c.as_ref()?;
                (!c.paused && now.duration_since(c.last_active) >= limit).then_some(i)
            })
            .collect();
        idle.into_iter()
            .map(|i| {
                let peer = self.conns[i]
                    .as_ref()
                    .map_or(String::new(), |c| c.peer.clone());
                self.close(registry, i);
                peer
            })
            .collect()
    }

    /// When the next sweep is due, while connections are open.
    pub(super) fn next_sweep(&self) -> Option<Instant> {
        self.has_conns()
            .then(|| self.last_sweep + Duration::from_millis(100))
    }

    /// Stops listening and closes every connection, after one last try to
    /// write the replies already queued.
    pub(super) fn shut(&mut self, registry: &Registry) {
        for i in 0..self.conns.len() {
            if let Some(c) = self.conn_mut(i) {
                let _ = c.flush();
            }
            self.close(registry, i);
        }
        self.listener = None; // Drop unlinks a Unix socket path.
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, Some(path)) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn bind_error(addr: &str, e: io::Error) -> Error {
    Error::Config(format!("cannot listen for remote signals on `{addr}`: {e}"))
}

/// Removes a socket file left by a dead process; refuses to touch a live
/// socket or anything that is not a socket.
fn clear_stale_socket(path: &std::path::Path, addr: &str) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(Error::Config(format!(
            "cannot listen for remote signals on `{addr}`: the path exists and is not a socket"
        )));
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(Error::Config(format!(
            "cannot listen for remote signals on `{addr}`: another process is listening there"
        )));
    }
    std::fs::remove_file(path).map_err(|e| Error::io("removing a stale socket file", e))
}
