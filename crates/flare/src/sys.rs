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

/// Forks the calling process.
///
/// Callers must be single-threaded (the master checks this in `run()`), so
/// that no lock or allocator state is held by a thread that the child will
/// not have.
pub(crate) fn fork() -> Result<Forked> {
    // SAFETY: the master is single-threaded (checked before the first fork
    // and never changed: it starts no threads), so the child gets a
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
