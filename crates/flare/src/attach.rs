//! Joining a running group from a process flare did not fork: a gunicorn,
//! uvicorn or granian worker, or any program that links flare.
//!
//! [`attach()`] connects to the master's attach socket
//! ([`MasterBuilder::attach`](crate::MasterBuilder::attach)), takes a free
//! attach slot and becomes `workerN`: from then on [`Signal`](crate::Signal)
//! handlers, `send()`, sources and locks work as in a forked worker, and
//! handlers run on a dispatcher thread of this process. The master passes
//! the channel pipes and the group's shared memory on the socket, so an
//! attached process costs the master no more than a forked one.
//!
//! What differs from a forked worker: flare never signals or kills an
//! attached process (no harakiri, no stall kill, no SIGTERM at shutdown:
//! it belongs to the server that started it); when the master goes away
//! the dispatcher stops and the process goes on, with `send()` failing.
//! Mule mailboxes (`mule_msg`) are not passed to attached processes.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use crate::child::{Install, ProcessInfo, install};
use crate::error::{Error, Result};
use crate::proto::attach::{Answer, SETUP_FDS, encode_hello, parse_answer};
use crate::proto::{Reply, Request};
use crate::shm::Shm;
use crate::sys::{self, Duplex};
use crate::topology::{ProcId, Role};

/// How long the master has to answer the hello.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Joins the group whose master listens on `addr` (a socket path, or
/// `@name` for an abstract socket) as one of its attach slots; returns who
/// this process is now (`worker3`). Call it once per process, after any
/// fork that should not inherit the membership (a process forked from an
/// attached one is not a member: its `send()` fails with
/// [`Error::ForkedFromMember`]).
///
/// ```no_run
/// use flare::Signal;
///
/// let me = flare::attach("/run/app/flare.sock")?;
/// println!("attached as {}", me.proc_id());
/// Signal::new(17).register_handler("workers", |rx| println!("got {}", rx.num))?;
/// Signal::new(18).send()?;
/// # Ok::<(), flare::Error>(())
/// ```
///
/// # Errors
///
/// [`Error::Attach`] when nothing listens at `addr`, the master refuses
/// (every attach slot taken, a uid it does not admit, a protocol version it
/// does not speak: the message is the master's) or answers something else;
/// [`Error::Config`] when this process is already a member of a group.
pub fn attach(addr: impl AsRef<str>) -> Result<ProcessInfo> {
    attach_with(addr, |_| Ok(()))
}

/// [`attach()`], running `on_ready` (which registers this process's handlers
/// and sources) before the master starts delivering: signals already
/// waiting for the slot, and the first ones of a `workers` fan-out, then
/// find their handlers in place.
///
/// ```no_run
/// use flare::Signal;
///
/// flare::attach_with("/run/app/flare.sock", |me| {
///     Signal::new(17).register_handler("workers", move |_| println!("{} got 17", me.proc_id()))?;
///     Ok(())
/// })?;
/// # Ok::<(), flare::Error>(())
/// ```
///
/// # Errors
///
/// As [`attach()`], and whatever `on_ready` returns (the process stays
/// attached, without deliveries, and should exit).
pub fn attach_with(
    addr: impl AsRef<str>,
    on_ready: impl FnOnce(ProcessInfo) -> Result<()>,
) -> Result<ProcessInfo> {
    let addr = addr.as_ref();
    let fail = |reason: String| Error::Attach {
        addr: addr.to_owned(),
        reason,
    };
    if let Some(c) = crate::child::context() {
        return Err(Error::Config(format!(
            "this process is already {} of a group",
            c.info.proc_id()
        )));
    }
    let sock = connect(addr).map_err(|e| fail(e.to_string()))?;
    let sock = OwnedFd::from(sock);
    write_all(&sock, &encode_hello(true)).map_err(|e| fail(format!("sending the hello: {e}")))?;
    let (answer, fds) = read_answer(&sock).map_err(&fail)?;
    let attached = match answer {
        Answer::Attached(a) => a,
        Answer::Refused(why) => return Err(fail(format!("refused: {why}"))),
    };
    let setup = attached
        .setup
        .ok_or_else(|| fail("the master passed no channel (an older master?)".into()))?;
    let want = SETUP_FDS + usize::from(setup.locks > 0) + usize::from(setup.spool.is_some());
    if fds.len() != want {
        return Err(fail(format!(
            "the master passed {} descriptors; {want} were expected",
            fds.len()
        )));
    }
    let mut fds = fds.into_iter();
    let mut next = || {
        fds.next()
            .ok_or_else(|| fail("a descriptor is missing".into()))
    };
    let (a_rx, a_tx, b_rx, b_tx, shm_fd) = (next()?, next()?, next()?, next()?, next()?);
    let shm = Shm::open(&shm_fd)?;
    drop(shm_fd);
    if setup.slot >= shm.slot_count() {
        return Err(fail(format!(
            "slot {} is outside the group's {} slots",
            setup.slot,
            shm.slot_count()
        )));
    }
    if setup.locks > 0 {
        crate::lock::adopt(File::from(next()?), setup.locks)?;
    }
    if let Some(share) = setup.spool.clone() {
        crate::spool::adopt(share, File::from(next()?))?;
    }
    let info = install(Install {
        me: ProcId::new(Role::Worker, attached.worker),
        slot: setup.slot,
        topo: Arc::new(setup.topology),
        shm,
        chan_a: Duplex { rx: a_rx, tx: a_tx },
        chan_b: Duplex { rx: b_rx, tx: b_tx },
        busy_poll: Duration::from_nanos(setup.busy_poll_ns),
        attached: true,
        master_pid: attached.master_pid,
    })?;
    on_ready(info)?;
    let ctx = crate::child::context().ok_or(Error::NoRuntime("the member context is gone"))?;
    match ctx.request(&Request::Ready)? {
        Reply::Err(e) => Err(Error::Registration(e)),
        _ => Ok(info),
    }
}

/// Connects to a socket path or an `@name` abstract socket.
fn connect(addr: &str) -> std::io::Result<std::os::unix::net::UnixStream> {
    use std::os::unix::net::{SocketAddr, UnixStream};
    match addr.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            UnixStream::connect_addr(&SocketAddr::from_abstract_name(name)?)
        }
        None => UnixStream::connect(addr),
    }
}

fn write_all(sock: &OwnedFd, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        match nix::unistd::write(sock, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Reads the master's answer and the descriptors that come with it.
fn read_answer(sock: &OwnedFd) -> std::result::Result<(Answer, Vec<OwnedFd>), String> {
    let tv = nix::sys::time::TimeVal::new(ANSWER_TIMEOUT.as_secs() as i64, 0);
    nix::sys::socket::setsockopt(sock, nix::sys::socket::sockopt::ReceiveTimeout, &tv)
        .map_err(|e| format!("setting a timeout: {e}"))?;
    let mut buf = Vec::new();
    let mut fds = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if let Some((answer, _)) = parse_answer(&buf)? {
            return Ok((answer, fds));
        }
        let (n, more) = sys::recv_with_fds(sock, &mut chunk).map_err(|e| match &e {
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::WouldBlock => {
                format!(
                    "no answer within {} s (is this a flare attach socket?)",
                    ANSWER_TIMEOUT.as_secs()
                )
            }
            _ => e.report(),
        })?;
        fds.extend(more);
        if n == 0 {
            return Err("the master closed the socket without an answer".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
