//! What the group leaves behind: processes forked by children, and the
//! children themselves when `run()` fails.
//!
//! The master is a child subreaper, so a process that a handler forks (a
//! `Command`, a daemon that double-forks) and that outlives its parent is
//! re-parented to the master rather than to init. The master reaps such
//! "strays" quietly while it runs and ends them at shutdown like children:
//! SIGTERM, then SIGKILL once the kill timeout has passed. Processes that
//! were already the master's children before `run()` are not the group's
//! and are left alone.
//!
//! [`EndOnFailure`] is the guard `Master::run` holds: if `run()` fails or
//! panics after forking, it ends every process of the group and puts the
//! signal mask back as it was.

use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

use crate::sys;

/// The signals the master blocks (it reads them through a signalfd).
const MASTER_SIGNALS: [Signal; 4] = [
    Signal::SIGCHLD,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
];

/// Processes re-parented to the master, and what it has sent them.
#[derive(Debug, Default)]
pub(crate) struct Strays {
    /// The master's children from before `run()`: not the group's.
    foreign: Vec<Pid>,
    /// Strays already sent SIGTERM, and SIGKILL.
    termed: Vec<Pid>,
    killed: Vec<Pid>,
}

impl Strays {
    /// Notes the children this process has before the group starts.
    pub(crate) fn new() -> Strays {
        Strays {
            foreign: sys::own_children().into_iter().map(|c| c.pid).collect(),
            ..Strays::default()
        }
    }

    /// The master's children that are the group's but not in a slot
    /// (`is_slot` says which are), the dead ones included.
    fn find(&self, is_slot: impl Fn(Pid) -> bool) -> Vec<sys::OwnChild> {
        sys::own_children()
            .into_iter()
            .filter(|c| !self.foreign.contains(&c.pid) && !is_slot(c.pid))
            .collect()
    }

    /// Sends `sig` (SIGTERM or SIGKILL) to every stray not yet sent it;
    /// returns whether any stray is left.
    pub(crate) fn end(&mut self, sig: Signal, is_slot: impl Fn(Pid) -> bool) -> bool {
        // The dead ones are the reaper's (SIGCHLD).
        let left: Vec<Pid> = self
            .find(is_slot)
            .into_iter()
            .filter(|c| !c.zombie)
            .map(|c| c.pid)
            .collect();
        let sent = if sig == Signal::SIGKILL {
            &mut self.killed
        } else {
            &mut self.termed
        };
        let new: Vec<Pid> = left.iter().copied().filter(|p| !sent.contains(p)).collect();
        if !new.is_empty() {
            tracing::info!(
                "ending {} process(es) left behind by children ({sig}): {}",
                new.len(),
                new.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        for p in new {
            let _ = kill(p, sig);
            sent.push(p);
        }
        !left.is_empty()
    }
}

/// While armed, ends the group and restores the signal mask on drop: for
/// a `run()` that fails (a fork or the event loop failing) or panics after
/// some children were forked.
pub(crate) struct EndOnFailure {
    armed: bool,
    mask: Option<SigSet>,
    kill_timeout: Duration,
    strays: Strays,
}

impl EndOnFailure {
    /// Arms the guard and makes this process a child subreaper (until the
    /// guard goes); call before the master blocks signals or forks.
    pub(crate) fn arm(kill_timeout: Duration) -> crate::Result<EndOnFailure> {
        sys::become_subreaper(true)?;
        Ok(EndOnFailure {
            armed: true,
            mask: SigSet::thread_get_mask().ok(),
            kill_timeout,
            strays: Strays::new(),
        })
    }

    /// `run()` finished normally: nothing to do.
    pub(crate) fn disarm(mut self) {
        self.armed = false;
    }

    /// Sends `sig` to every process of the group, then waits (reaping) up
    /// to `limit` for them to be gone; true when none is left.
    fn end(&mut self, sig: Signal, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let mut alive = false;
            for c in self.strays.find(|_| false) {
                if c.zombie {
                    let _ = waitpid(c.pid, Some(WaitPidFlag::WNOHANG));
                } else {
                    alive = true;
                    let _ = kill(c.pid, sig);
                }
            }
            if !alive {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            // A failing master has no event loop left to wait on.
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for EndOnFailure {
    fn drop(&mut self) {
        let _ = sys::become_subreaper(false);
        if !self.armed {
            return;
        }
        tracing::error!("master: run() failed; ending the processes it started");
        if !self.end(Signal::SIGTERM, self.kill_timeout) {
            tracing::warn!("processes still alive after SIGTERM: sending SIGKILL");
            self.end(Signal::SIGKILL, self.kill_timeout);
        }
        // Master signals that came meanwhile are pending: take them, so
        // they do not act (a SIGTERM would end this process) on unblocking.
        let mut blocked = SigSet::empty();
        for s in MASTER_SIGNALS {
            blocked.add(s);
        }
        if let Ok(fd) =
            SignalFd::with_flags(&blocked, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        {
            while let Ok(Some(_)) = fd.read_signal() {}
        }
        if let Some(mask) = self.mask {
            let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&mask), None);
        }
    }
}
