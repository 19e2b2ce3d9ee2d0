//! "This process handled a signal": a count the dispatcher bumps after each
//! handler, and a pipe it writes while some thread waits for that
//! (`mule_get_msg` with `signals`, which returns after a handler ran, as
//! in uWSGI). Kept apart from both sides so that neither imports the other.

use std::os::fd::OwnedFd;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};

use nix::fcntl::OFlag;

use crate::error::{Error, Result};

/// Signals handled in this process (bumped by the dispatcher).
pub(crate) static HANDLED: AtomicU64 = AtomicU64::new(0);
/// Threads in a `signals` wait: only then does a handler write the pipe.
pub(crate) static WAITING: AtomicUsize = AtomicUsize::new(0);
/// A pipe written after each handler once a `signals` wait has started.
static WAKE: OnceLock<(OwnedFd, OwnedFd)> = OnceLock::new();

/// Called by the dispatcher after each handler: wakes `mule_get_msg`
/// callers that return on signals. One atomic add when nobody waits so.
pub(crate) fn signal_handled() {
    HANDLED.fetch_add(1, SeqCst);
    if WAITING.load(SeqCst) == 0 {
        return;
    }
    if let Some((_, w)) = WAKE.get() {
        // A full pipe already wakes the waiter.
        let _ = nix::unistd::write(w, &[1]);
    }
}

pub(crate) fn wake_pipe() -> Result<&'static (OwnedFd, OwnedFd)> {
    if let Some(p) = WAKE.get() {
        return Ok(p);
    }
    let p = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)
        .map_err(|e| Error::io("creating the mailbox wake-up pipe", e))?;
    // Another thread may have set it first; then ours is dropped.
    let _ = WAKE.set(p);
    WAKE.get()
        .ok_or(Error::Mailbox("mailbox wake-up pipe missing".into()))
}
