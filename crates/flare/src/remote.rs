//! Remote signals: node addresses and the client that raises a signal on
//! another node (uWSGI `uwsgi --signal ADDR,NUM`, `uwsgi.signal(num, addr)`).

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::proto::uwsgi;

/// How long the client waits to connect, and then for the reply, by
/// default (uWSGI's `socket-timeout` default is 4 s too).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(4);

/// Where a node listens for remote signals.
///
/// | text | address |
/// |---|---|
/// | `host:port`, `127.0.0.1:3031`, `[::1]:3031` | TCP |
/// | `:3031` | TCP on every interface (to listen), localhost (to connect) |
/// | `/run/app.sock`, `app.sock` (no `:`) | Unix socket path |
/// | `@name` | Linux abstract Unix socket |
///
/// ```
/// use flare::RemoteAddr;
/// let a: RemoteAddr = "127.0.0.1:3031".parse().unwrap();
/// assert_eq!(a.to_string(), "127.0.0.1:3031");
/// assert!(matches!("/tmp/x.sock".parse::<RemoteAddr>().unwrap(), RemoteAddr::Unix(_)));
/// assert!("host:http".parse::<RemoteAddr>().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RemoteAddr {
    /// `host:port`; an empty host means every interface (listen) or
    /// localhost (connect).
    Tcp {
        /// Host name or IP address, possibly empty.
        host: String,
        /// TCP port.
        port: u16,
    },
    /// A Unix socket path.
    Unix(PathBuf),
    /// A Linux abstract Unix socket name (written `@name`).
    Abstract(String),
}

impl FromStr for RemoteAddr {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::Config(format!(
                "invalid address `{text}`: {why}; use host:port, :port, a socket path or @name"
            ))
        };
        if text.is_empty() {
            return Err(bad("it is empty"));
        }
        if let Some(name) = text.strip_prefix('@') {
            if name.is_empty() {
                return Err(bad("the abstract socket name is empty"));
            }
            return Ok(RemoteAddr::Abstract(name.to_owned()));
        }
        let Some((host, port)) = text.rsplit_once(':').filter(|_| !text.contains('/')) else {
            return Ok(RemoteAddr::Unix(PathBuf::from(text)));
        };
        // Port 0 lets the system choose when listening.
        let port = port
            .parse::<u16>()
            .map_err(|_| bad("the port is not a number from 0 to 65535"))?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        Ok(RemoteAddr::Tcp {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for RemoteAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoteAddr::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            RemoteAddr::Tcp { host, port } => write!(f, "{host}:{port}"),
            RemoteAddr::Unix(p) => write!(f, "{}", p.display()),
            RemoteAddr::Abstract(name) => write!(f, "@{name}"),
        }
    }
}

impl RemoteAddr {
    /// The host to connect to: an empty host is localhost.
    pub(crate) fn connect_host(host: &str) -> &str {
        if host.is_empty() { "127.0.0.1" } else { host }
    }

    /// The host to listen on: an empty host is every interface.
    pub(crate) fn listen_host(host: &str) -> &str {
        if host.is_empty() { "0.0.0.0" } else { host }
    }
}

/// A connected client stream of either family.
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    /// Connects with `timeout` for the connection and for every read and
    /// write after it.
    pub(crate) fn connect(addr: &RemoteAddr, timeout: Duration) -> io::Result<Stream> {
        let s = match addr {
            RemoteAddr::Tcp { host, port } => {
                let host = RemoteAddr::connect_host(host);
                let mut last = io::Error::new(io::ErrorKind::NotFound, "no address found");
                let mut found = None;
                for a in (host, *port).to_socket_addrs()? {
                    match TcpStream::connect_timeout(&a, timeout) {
                        Ok(s) => {
                            found = Some(s);
                            break;
                        }
                        Err(e) => last = e,
                    }
                }
                let s = found.ok_or(last)?;
                s.set_nodelay(true)?;
                Stream::Tcp(s)
            }
            RemoteAddr::Unix(path) => Stream::Unix(UnixStream::connect(path)?),
            RemoteAddr::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let a = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
                Stream::Unix(UnixStream::connect_addr(&a)?)
            }
        };
        match &s {
            Stream::Tcp(t) => {
                t.set_read_timeout(Some(timeout))?;
                t.set_write_timeout(Some(timeout))?;
            }
            Stream::Unix(u) => {
                u.set_read_timeout(Some(timeout))?;
                u.set_write_timeout(Some(timeout))?;
            }
        }
        Ok(s)
    }

    /// Reads until the peer closes.
    pub(crate) fn read_to_end(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read_to_end(buf),
            Stream::Unix(s) => s.read_to_end(buf),
        }
    }

    /// Writes `request`, then reads one line.
    pub(crate) fn ask_line(&mut self, request: &[u8]) -> io::Result<String> {
        fn ask<S: Read + Write>(s: &mut S, request: &[u8]) -> io::Result<String> {
            s.write_all(request)?;
            let mut line = Vec::new();
            let mut byte = [0u8; 1];
            loop {
                match s.read(&mut byte)? {
                    0 => break,
                    _ if byte[0] == b'\n' => break,
                    _ => line.push(byte[0]),
                }
            }
            String::from_utf8(line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
        }
        match self {
            Stream::Tcp(s) => ask(s, request),
            Stream::Unix(s) => ask(s, request),
        }
    }

    fn exchange(&mut self, request: &[u8], reply: &mut [u8]) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => {
                s.write_all(request)?;
                s.read_exact(reply)
            }
            Stream::Unix(s) => {
                s.write_all(request)?;
                s.read_exact(reply)
            }
        }
    }
}

/// Raises `num` on the node at `addr` and waits for its answer: `Ok` when
/// the node delivered it, [`Error::Rejected`] when it refused,
/// [`Error::Unreachable`] when it could not be reached or did not answer
/// within `timeout` (for connecting, and again for the reply).
///
/// # Errors
///
/// [`Error::Rejected`] when the node refused the signal,
/// [`Error::Unreachable`] when it could not be reached or did not answer in
/// time, [`Error::Config`] when `addr` is not an address.
pub fn send_remote(addr: &str, num: u8, timeout: Duration) -> Result<()> {
    let parsed: RemoteAddr = addr.parse()?;
    let mut stream = Stream::connect(&parsed, timeout).map_err(Error::Unreachable)?;
    let mut reply = [0u8; uwsgi::HEADER_LEN];
    stream
        .exchange(&uwsgi::signal_request(num), &mut reply)
        .map_err(|e| {
            Error::Unreachable(match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer within {} ms", timeout.as_millis()),
                ),
                io::ErrorKind::UnexpectedEof => io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the node closed the connection without answering",
                ),
                _ => e,
            })
        })?;
    match uwsgi::parse_reply(reply) {
        Ok(true) => Ok(()),
        Ok(false) => Err(Error::Rejected {
            addr: addr.to_owned(),
            num,
        }),
        Err(m) => Err(Error::Unreachable(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the node answered with a packet that is not a signal reply: {m}"),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_print_back() {
        let tcp = |h: &str, p| RemoteAddr::Tcp {
            host: h.into(),
            port: p,
        };
        let cases = [
            ("127.0.0.1:3031", tcp("127.0.0.1", 3031), "127.0.0.1:3031"),
            ("localhost:1", tcp("localhost", 1), "localhost:1"),
            (":3031", tcp("", 3031), ":3031"),
            ("[::1]:9", tcp("::1", 9), "[::1]:9"),
            (
                "/run/x.sock",
                RemoteAddr::Unix("/run/x.sock".into()),
                "/run/x.sock",
            ),
            ("x.sock", RemoteAddr::Unix("x.sock".into()), "x.sock"),
            ("./a:b", RemoteAddr::Unix("./a:b".into()), "./a:b"),
            ("@flare", RemoteAddr::Abstract("flare".into()), "@flare"),
        ];
        for (text, want, printed) in cases {
            let got: RemoteAddr = text.parse().unwrap();
            assert_eq!(got, want, "{text}");
            assert_eq!(got.to_string(), printed);
        }
        assert_eq!("h:0".parse::<RemoteAddr>().unwrap(), tcp("h", 0));
        for bad in ["", "@", "host:", "host:-1", "host:65536", "host:x"] {
            let e = bad.parse::<RemoteAddr>().unwrap_err().to_string();
            assert!(e.contains(&format!("`{bad}`")), "{e}");
        }
    }

    #[test]
    fn nobody_listening_is_unreachable() {
        let dir = std::env::temp_dir().join(format!("flare-nobody-{}.sock", std::process::id()));
        let e = send_remote(dir.to_str().unwrap(), 1, Duration::from_millis(200)).unwrap_err();
        assert!(matches!(e, Error::Unreachable(_)), "{e}");
    }
}
