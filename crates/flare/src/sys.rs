//! The system calls that need `unsafe` or care around `fork()`, fenced in
//! one small module.

use std::os::fd::{OwnedFd, RawFd};

use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
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

/// A connected pair of Unix stream sockets, close-on-exec.
pub(crate) fn stream_pair() -> Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| Error::io("creating a socket pair", e))
}

/// Number of threads in this process, from /proc.
pub(crate) fn thread_count() -> Option<usize> {
    std::fs::read_dir("/proc/self/task").ok().map(|d| d.count())
}
