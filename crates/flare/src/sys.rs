//! The system calls that need `unsafe` or care around `fork()`, fenced in
//! one small module.

use std::os::fd::{AsFd, OwnedFd, RawFd};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, sigprocmask};
use nix::unistd::Pid;

use crate::error::{Error, Result};

/// Which side of a fork this is.
pub(crate) enum Forked {
    /// The new process.
    Child,
    /// The caller, with the child's pid.
    Parent(Pid),
}

/// Forks the calling process, after checking that it has one thread.
///
/// Forking a process that has other threads can leave the child with a
/// lock (of the allocator, of stdio, of the caller's own code) that a
/// thread the child does not have was holding: the check runs before every
/// fork, because code the master calls while it runs (a fork hook, say)
/// could start a thread after the first.
pub(crate) fn fork() -> Result<Forked> {
    ensure_single_threaded()?;
    // SAFETY: the process has one thread (checked just above, and nothing
    // between the check and the fork starts one), so the child gets a
    // consistent copy of every lock and of the allocator.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => Ok(Forked::Child),
        Ok(nix::unistd::ForkResult::Parent { child }) => Ok(Forked::Parent(child)),
        Err(e) => Err(Error::io("fork", e)),
    }
}

/// Closes descriptors that belong to the master in a freshly forked child.
/// Their owning values stay in the child's copy of the master's memory and
/// are never dropped there: the child never returns into that code.
pub(crate) fn close_inherited(fds: &[RawFd]) {
    for &fd in fds {
        // SAFETY: each fd is open (inherited from the master) and nothing in
        // the child uses it or will drop its owner; closing it only ends the
        // child's reference to the master's socket.
        unsafe {
            nix::libc::close(fd);
        }
    }
}

/// Puts a forked child's signal state back to normal: SIGINT ignored (Ctrl-C
/// reaches the whole process group; the master decides what happens),
/// SIGTERM, SIGCHLD and SIGHUP at their defaults, nothing blocked. Then asks
/// for SIGKILL when the master dies.
pub(crate) fn reset_child_signals() -> Result<()> {
    // SAFETY: installing SIG_IGN / SIG_DFL runs no Rust code in signal
    // context; the master installed no handlers of its own (it reads
    // signals through a signalfd).
    unsafe {
        nix::sys::signal::signal(Signal::SIGINT, SigHandler::SigIgn)
            .map_err(|e| Error::io("ignoring SIGINT", e))?;
        for s in [Signal::SIGTERM, Signal::SIGCHLD, Signal::SIGHUP] {
            nix::sys::signal::signal(s, SigHandler::SigDfl)
                .map_err(|e| Error::io("resetting a signal", e))?;
        }
    }
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .map_err(|e| Error::io("unblocking signals", e))?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|e| Error::io("setting the parent-death signal", e))?;
    Ok(())
}

/// One side's ends of a two-way channel made of two pipes.
#[derive(Debug)]
pub(crate) struct Duplex {
    /// What the other side writes arrives here.
    pub(crate) rx: OwnedFd,
    /// What is written here arrives at the other side.
    pub(crate) tx: OwnedFd,
}

/// A two-way channel between the master and a child, as two pipes: the
/// master's ends and the child's. The pipe towards the child is asked for
/// `down_bytes` of buffer.
pub(crate) fn duplex(down_bytes: usize) -> Result<(Duplex, Duplex)> {
    let (down_rx, down_tx) = pipe()?;
    let (up_rx, up_tx) = pipe()?;
    grow_pipe(&down_tx, down_bytes);
    Ok((
        Duplex {
            rx: up_rx,
            tx: down_tx,
        },
        Duplex {
            rx: down_rx,
            tx: up_tx,
        },
    ))
}

/// A pipe, both ends close-on-exec: `(read end, write end)`.
pub(crate) fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::io("creating a pipe", e))
}

/// Asks for a pipe buffer of `bytes` (best effort: the kernel rounds it up
/// to pages and refuses sizes above `/proc/sys/fs/pipe-max-size` or past
/// the user's pipe-page allowance; the pipe then keeps its default 64 KiB).
pub(crate) fn grow_pipe(fd: &OwnedFd, bytes: usize) {
    let bytes = i32::try_from(bytes).unwrap_or(i32::MAX);
    let _ = fcntl(fd, FcntlArg::F_SETPIPE_SZ(bytes));
}

/// Puts a descriptor in non-blocking mode.
pub(crate) fn set_nonblocking(fd: &OwnedFd) -> Result<()> {
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(|e| Error::io("F_GETFL", e))?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(|e| Error::io("F_SETFL", e))?;
    Ok(())
}

/// Blocks until `fd` is readable (`POLLIN`) or writable (`POLLOUT`), or
/// its other end is gone; retries on `EINTR`.
pub(crate) fn wait_fd(fd: &OwnedFd, writable: bool) -> Result<()> {
    let events = if writable {
        PollFlags::POLLOUT
    } else {
        PollFlags::POLLIN
    };
    loop {
        let mut fds = [PollFd::new(fd.as_fd(), events)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::io("waiting for the master", e)),
        }
    }
}

/// Ignores `SIGPIPE` in this process (and so in the children it forks):
/// a write to a pipe whose reader has died must fail with `EPIPE`, which
/// the channel code handles, instead of killing the writer. Rust programs
/// and CPython ignore it already.
pub(crate) fn ignore_sigpipe() -> Result<()> {
    // SAFETY: SIG_IGN runs no code in signal context.
    unsafe { nix::sys::signal::signal(Signal::SIGPIPE, SigHandler::SigIgn) }
        .map(drop)
        .map_err(|e| Error::io("ignoring SIGPIPE", e))
}

/// Number of threads in this process, from /proc.
pub(crate) fn thread_count() -> Option<usize> {
    std::fs::read_dir("/proc/self/task").ok().map(|d| d.count())
}

/// `Ok` when this process has a single thread (or /proc cannot say); the
/// one rule the master checks before it forks.
pub(crate) fn ensure_single_threaded() -> Result<()> {
    match thread_count() {
        Some(n) if n > 1 => Err(Error::Config(format!(
            "the master must be single-threaded to fork, but this process has {n} threads; \
             build and run the master before starting any thread, and start none in fork \
             hooks or other code the master runs"
        ))),
        _ => Ok(()),
    }
}

/// Makes this process a child subreaper (or no longer one): what its
/// children fork and then leave behind (a handler's `Command`, a daemon
/// that double-forks) is re-parented to it rather than to init, so the
/// master can reap it and end it at shutdown.
pub(crate) fn become_subreaper(on: bool) -> Result<()> {
    nix::sys::prctl::set_child_subreaper(on).map_err(|e| Error::io("becoming a child subreaper", e))
}

/// A child of this process, from /proc.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OwnChild {
    pub(crate) pid: Pid,
    /// Dead and waiting to be reaped.
    pub(crate) zombie: bool,
}

/// The processes whose parent is this one, from /proc (`/proc/PID/stat`:
/// the state and parent after the command name). For the master's
/// shutdown: it finds the descendants re-parented to it, which it never
/// forked itself.
pub(crate) fn own_children() -> Vec<OwnChild> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let name = e.ok()?.file_name();
        let pid: i32 = name.to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        let mut rest = stat[stat.rfind(')')? + 1..].split_whitespace();
        let state = rest.next()?;
        let ppid: u32 = rest.next()?.parse().ok()?;
        (ppid == me).then(|| OwnChild {
            pid: Pid::from_raw(pid),
            zombie: state == "Z",
        })
    })
    .collect()
}

/// Runs `handler` in every process forked from this one from now on
/// (`pthread_atfork`'s child handler; it must be async-signal-safe).
pub(crate) fn at_fork_in_child(handler: extern "C" fn()) -> Result<()> {
    // SAFETY: registering a handler has no preconditions; the handler is a
    // plain function that stays valid for the life of the process.
    let rc = unsafe { nix::libc::pthread_atfork(None, None, Some(handler)) };
    if rc == 0 {
        Ok(())
    } else {
        Err(Error::io(
            "registering a fork handler",
            std::io::Error::from_raw_os_error(rc),
        ))
    }
}

/// Ends a child process: flushes Rust's standard streams and leaves with
/// `_exit`, so that nothing the master registered with `atexit` (and no
/// destructor of the master's copied state) runs in the child.
pub(crate) fn leave(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: `_exit` ends the process at once; it touches no Rust state.
    unsafe { nix::libc::_exit(code) }
}

/// Writes `bytes` to the Unix socket `sock` with `fds` attached to the
/// first byte (`SCM_RIGHTS`). The socket must have room for all of it (a
/// fresh connection does); a short write is an error.
pub(crate) fn send_with_fds(sock: &OwnedFd, bytes: &[u8], fds: &[RawFd]) -> Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, UnixAddr, sendmsg};
    let iov = [std::io::IoSlice::new(bytes)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let sent = loop {
        match sendmsg::<UnixAddr>(
            std::os::fd::AsRawFd::as_raw_fd(sock),
            &iov,
            &cmsg,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other.map_err(|e| Error::io("passing descriptors", e))?,
        }
    };
    if sent != bytes.len() {
        return Err(Error::Protocol(format!(
            "passing descriptors: {sent} of {} bytes written",
            bytes.len()
        )));
    }
    Ok(())
}

/// Reads from the Unix socket `sock` into `buf`, taking any descriptors
/// that come with the bytes (close-on-exec); `(bytes read, descriptors)`.
pub(crate) fn recv_with_fds(sock: &OwnedFd, buf: &mut [u8]) -> Result<(usize, Vec<OwnedFd>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, UnixAddr, recvmsg};
    let mut space = nix::cmsg_space!([RawFd; 8]);
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let msg = loop {
        match recvmsg::<UnixAddr>(
            std::os::fd::AsRawFd::as_raw_fd(sock),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other.map_err(|e| Error::io("reading from the attach socket", e))?,
        }
    };
    let mut fds = Vec::new();
    for c in msg
        .cmsgs()
        .map_err(|e| Error::io("reading passed descriptors", e))?
    {
        if let ControlMessageOwned::ScmRights(raw) = c {
            for fd in raw {
                // SAFETY: the kernel has just installed `fd` in this
                // process for this message (SCM_RIGHTS); nothing else owns
                // it, so taking ownership here closes it exactly once.
                fds.push(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
            }
        }
    }
    if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
        return Err(Error::Protocol(
            "more descriptors were passed than expected".into(),
        ));
    }
    Ok((msg.bytes, fds))
}
