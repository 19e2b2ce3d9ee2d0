//! When to busy-poll: the one rule the master loop, a child's dispatcher
//! and `wait()` share ([`crate::Options::busy_poll`]).
//!
//! Looking for work before sleeping pays when work comes within the
//! window (a conversation, a stream) and wastes the window when it does
//! not (a signal every few milliseconds). So a process looks while looking
//! pays: after [`GIVE_UP_AFTER`] windows in a row that found nothing it
//! sleeps at once, and it looks again as soon as a sleep turns out short,
//! that is, work came soon enough that looking would have found it.

use std::time::{Duration, Instant};

/// Windows in a row that found nothing, after which a process stops
/// looking until a short sleep says looking would pay again.
pub(crate) const GIVE_UP_AFTER: u32 = 3;

/// One process's (or thread's) busy-poll state.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BusyPoll {
    window: Duration,
    misses: u32,
}

impl BusyPoll {
    /// A state for this window (zero: never look).
    pub(crate) fn new(window: Duration) -> BusyPoll {
        BusyPoll { window, misses: 0 }
    }

    /// Whether to look before sleeping this time.
    pub(crate) fn look(&self) -> bool {
        !self.window.is_zero() && self.misses < GIVE_UP_AFTER
    }

    /// Work came while looking.
    pub(crate) fn hit(&mut self) {
        self.misses = 0;
    }

    /// The window passed with nothing.
    pub(crate) fn miss(&mut self) {
        self.misses = self.misses.saturating_add(1);
    }

    /// Work woke the process after it slept this long (the wake-up
    /// itself included). A sleep within twice the window means looking
    /// would have found the work: look again.
    pub(crate) fn woke_after(&mut self, slept: Duration) {
        if slept < self.window * 2 {
            self.misses = 0;
        }
    }
}

/// What to do when there is no work yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Idle {
    /// Yield the CPU, then look again.
    Look,
    /// Sleep until work comes.
    Sleep,
}

/// One stretch without work, from the first look that found nothing to
/// the work that ends it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Episode {
    started: bool,
    /// Looking until then.
    until: Option<Instant>,
    /// Went to sleep then.
    slept_at: Option<Instant>,
}

impl BusyPoll {
    /// There is no work (yet) in this episode: look or sleep?
    pub(crate) fn idle(&mut self, ep: &mut Episode) -> Idle {
        if ep.slept_at.is_some() {
            return Idle::Sleep;
        }
        let now = Instant::now();
        if !ep.started {
            ep.started = true;
            ep.until = self.look().then(|| now + self.window);
        }
        if let Some(until) = ep.until {
            if now < until {
                return Idle::Look;
            }
            self.miss();
            ep.until = None;
        }
        ep.slept_at = Some(now);
        Idle::Sleep
    }

    /// Work ended the episode (a fresh one starts with the next idle).
    pub(crate) fn found(&mut self, ep: &mut Episode) {
        if ep.until.is_some() {
            self.hit();
        } else if let Some(t) = ep.slept_at {
            self.woke_after(t.elapsed());
        }
        *ep = Episode::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_micros(50);

    #[test]
    fn looks_while_looking_pays() {
        let mut b = BusyPoll::new(W);
        for _ in 0..100 {
            assert!(b.look());
            b.hit();
        }
        // A miss or two does not stop it.
        b.miss();
        b.miss();
        assert!(b.look());
        b.hit();
        assert!(b.look());
    }

    #[test]
    fn stops_after_misses_and_comes_back_after_a_short_sleep() {
        let mut b = BusyPoll::new(W);
        for _ in 0..GIVE_UP_AFTER {
            assert!(b.look());
            b.miss();
        }
        assert!(!b.look(), "gave up");
        // Long sleeps (a signal every millisecond) keep it asleep...
        b.woke_after(Duration::from_millis(1));
        assert!(!b.look());
        // ...a short one brings looking back.
        b.woke_after(Duration::from_micros(30));
        assert!(b.look());
    }

    #[test]
    fn an_episode_looks_for_the_window_then_sleeps() {
        let mut b = BusyPoll::new(Duration::from_millis(20));
        let mut ep = Episode::default();
        assert_eq!(b.idle(&mut ep), Idle::Look);
        assert_eq!(b.idle(&mut ep), Idle::Look);
        b.found(&mut ep);
        assert!(b.look(), "a hit keeps it looking");
        // An episode whose window runs out ends in sleep, and stays asleep.
        let mut b = BusyPoll::new(Duration::from_nanos(1));
        let mut ep = Episode::default();
        let mut first = b.idle(&mut ep);
        while first == Idle::Look {
            first = b.idle(&mut ep);
        }
        assert_eq!(b.idle(&mut ep), Idle::Sleep);
        assert_eq!(b.misses, 1);
    }

    #[test]
    fn a_zero_window_never_looks() {
        let mut b = BusyPoll::new(Duration::ZERO);
        assert!(!b.look());
        assert_eq!(b.idle(&mut Episode::default()), Idle::Sleep);
        b.woke_after(Duration::ZERO);
        b.hit();
        assert!(!b.look());
    }
}
