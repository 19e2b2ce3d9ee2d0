//! Listening sockets of the master (remote signals, stats, control) and the
//! connections they accept: TCP or Unix (created with a given mode), all
//! non-blocking, kept in a slab whose indexes become poll tokens.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

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
        Ok(match &parsed {
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
        })
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

    /// Accepts one connection: the stream and a name for logs.
    pub(super) fn accept(&self) -> io::Result<(Stream, String)> {
        match self {
            Listener::Tcp(l) => l.accept().map(|(s, a)| {
                let _ = s.set_nodelay(true);
                (Stream::Tcp(s), a.to_string())
            }),
            Listener::Unix(l, _) => l.accept().map(|(s, _)| (Stream::Unix(s), "unix".into())),
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

/// A connection type kept in a [`Slab`].
pub(super) trait HasStream {
    fn stream(&mut self) -> &mut Stream;
    fn fd(&self) -> RawFd;
}

/// Connections by index, reusing freed indexes; index + `token_base` is the
/// connection's poll token.
pub(super) struct Slab<T> {
    items: Vec<Option<T>>,
    free: Vec<usize>,
    live: usize,
    token_base: usize,
}

impl<T: HasStream> Slab<T> {
    pub(super) fn new(token_base: usize) -> Self {
        Slab {
            items: Vec::new(),
            free: Vec::new(),
            live: 0,
            token_base,
        }
    }

    /// Registers a new connection for reading and writing; `None` if the
    /// poll refused it.
    pub(super) fn insert(&mut self, registry: &Registry, mut conn: T) -> Option<usize> {
        let idx = self.free.pop().unwrap_or_else(|| {
            self.items.push(None);
            self.items.len() - 1
        });
        let token = Token(self.token_base + idx);
        if let Err(e) = registry.register(
            conn.stream().source(),
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::warn!("cannot watch a connection: {e}");
            self.free.push(idx);
            return None;
        }
        self.items[idx] = Some(conn);
        self.live += 1;
        Some(idx)
    }

    pub(super) fn remove(&mut self, registry: &Registry, idx: usize) -> Option<T> {
        let mut c = self.items.get_mut(idx).and_then(Option::take)?;
        let _ = registry.deregister(c.stream().source());
        self.free.push(idx);
        self.live -= 1;
        Some(c)
    }

    /// The connection behind a poll token, if it is one of these.
    pub(super) fn index_of(&self, token: Token) -> Option<usize> {
        token
            .0
            .checked_sub(self.token_base)
            .filter(|&i| i < self.items.len())
    }

    pub(super) fn get_mut(&mut self, idx: usize) -> Option<&mut T> {
        self.items.get_mut(idx).and_then(Option::as_mut)
    }

    /// Number of index slots (some may be empty).
    pub(super) fn slots(&self) -> usize {
        self.items.len()
    }

    pub(super) fn live(&self) -> usize {
        self.live
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (usize, &T)> {
        self.items
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.as_ref().map(|c| (i, c)))
    }

    pub(super) fn fds(&self) -> Vec<RawFd> {
        self.items.iter().flatten().map(HasStream::fd).collect()
    }
}
