//! Harakiri decisions: whether a child has run past its limit (its role's
//! handler limit, or the deadline it set itself with `set_user_harakiri`),
//! and the stack dump signal sent a grace period before the kill.

use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::shm::SlotStatus;
use crate::topology::Slot;

/// Why a child is past its time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Overdue {
    /// The handler of `num` has run `ran`, past the role's `limit`.
    Handler {
        num: u8,
        ran: Duration,
        limit: Duration,
    },
    /// The deadline the process set with `set_user_harakiri` passed `by` ago.
    User { by: Duration },
}

impl std::fmt::Display for Overdue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Overdue::Handler { num, ran, limit } => write!(
                f,
                "handler of signal {num} has run {} ms, past the {} ms limit",
                ran.as_millis(),
                limit.as_millis()
            ),
            Overdue::User { by } => write!(
                f,
                "its own time limit (set_user_harakiri) passed {} ms ago",
                by.as_millis()
            ),
        }
    }
}

/// Whether the child in this slot is past its time at `now_ns`.
pub(crate) fn overdue(
    st: &SlotStatus,
    role_limit: Option<Duration>,
    now_ns: u64,
) -> Option<Overdue> {
    let user = st.user_harakiri_ns.load(Relaxed);
    if user != 0 && now_ns > user {
        return Some(Overdue::User {
            by: Duration::from_nanos(now_ns - user),
        });
    }
    let limit = role_limit?;
    // The signal first (acquire), then its start time: see child.rs.
    let current = st.current.load(Acquire);
    if current == 0 {
        return None;
    }
    let ran = Duration::from_nanos(now_ns.saturating_sub(st.handler_started_ns.load(Relaxed)));
    (ran > limit).then_some(Overdue::Handler {
        num: (current - 1) as u8,
        ran,
        limit,
    })
}

/// The stack dump signal sent before a harakiri kill, per slot.
pub(crate) struct StackDumps {
    /// The signal and how long the child gets to write its stack.
    dump: Option<(Signal, Duration)>,
    sent: Vec<Option<Instant>>,
}

impl StackDumps {
    pub(crate) fn new(dump: Option<(i32, Duration)>, slots: usize) -> Self {
        StackDumps {
            dump: dump.and_then(|(n, g)| Signal::try_from(n).ok().map(|s| (s, g))),
            sent: vec![None; slots],
        }
    }

    /// Whether to kill the overdue child now: with a dump signal, the
    /// first call sends it and the kill comes once the grace has passed.
    pub(crate) fn kill_now(&mut self, slot: Slot, pid: Pid, now: Instant) -> bool {
        let Some((sig, grace)) = self.dump else {
            return true;
        };
        match self.sent[slot] {
            None => {
                let _ = kill(pid, sig);
                self.sent[slot] = Some(now);
                false
            }
            Some(t) => now >= t + grace,
        }
    }

    /// The child is not (or no longer) overdue, or was killed.
    pub(crate) fn reset(&mut self, slot: Slot) {
        self.sent[slot] = None;
    }
}
