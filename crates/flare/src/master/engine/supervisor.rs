//! Supervision rules, with no I/O: one life state per slot and the
//! decisions taken on it (what a child's state is for the router, what
//! follows its exit, when a stopping child gets SIGTERM or SIGKILL, when a
//! handler or a stall has gone on too long, how long a respawn waits).
//!
//! The loop carries the decisions out (fork, kill, waitpid); the rules are
//! unit-tested here without a process.

use std::time::{Duration, Instant};

use super::super::harakiri::Overdue;
use crate::topology::ProcState;

/// Why a child is being stopped on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stop {
    /// Cheaped: it handles its whole queue, stops, and is not respawned.
    Cheap,
    /// Reloaded: it handles what was written to it, stops, and is forked
    /// again at once; its queue waits for the successor.
    Reload,
}

/// What follows a child's exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum After {
    /// Respawned, after the backoff for quick deaths.
    Respawn,
    /// Cheaped: not respawned.
    Cheap,
    /// Reloaded: forked again at once.
    Reload,
}

impl From<Stop> for After {
    fn from(s: Stop) -> After {
        match s {
            Stop::Cheap => After::Cheap,
            Stop::Reload => After::Reload,
        }
    }
}

/// Where a slot is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// No process: not forked yet, or dead and waiting for its respawn.
    Dead,
    /// Running.
    Running,
    /// Asked to stop (cheap or reload): SIGTERM once it has handled what
    /// it must (or after the drain timeout), SIGKILL `kill_timeout` after.
    Stopping {
        why: Stop,
        asked: Instant,
        term_sent: Option<Instant>,
    },
    /// Broke the channel protocol: killed at the end of this loop turn.
    Doomed { after: After },
    /// Sent SIGKILL (harakiri, stall, broken protocol); the reaper does
    /// the rest.
    Killed { after: After },
    /// Cheaped and gone: not respawned until uncheaped.
    Cheaped,
    /// An attach slot nobody holds (none joined yet, or the last process
    /// left longer ago than the hold time).
    Vacant,
}

/// One slot's life: its stage and whether the control endpoint paused it.
/// The pause is a setting of the slot: it holds across respawns and
/// reloads until resumed, and cheaping clears it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Life {
    stage: Stage,
    paused: bool,
}

/// A step of a stop in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StopStep {
    /// Send SIGTERM: it has handled what it must (or took too long).
    Term,
    /// Send SIGKILL: it did not stop after SIGTERM.
    Kill,
}

/// What uncheaping did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Uncheap {
    /// It was not cheaped.
    NotCheaped,
    /// It had not stopped yet: it keeps running.
    Kept,
    /// It had stopped: fork it now.
    Start,
}

/// Why the watch kills a child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Past its time limit: a handler past the role's harakiri, or its own
    /// `set_user_harakiri` deadline.
    Harakiri(Overdue),
    /// No progress past the stall limit while work waited.
    Stalled { stalled: Duration, limit: Duration },
}

impl Default for Life {
    fn default() -> Self {
        Life {
            stage: Stage::Dead,
            paused: false,
        }
    }
}

impl Life {
    /// Whether a process runs in the slot (killed ones until reaped).
    pub(super) fn alive(&self) -> bool {
        !matches!(self.stage, Stage::Dead | Stage::Cheaped | Stage::Vacant)
    }

    /// An attach slot before anyone joins it.
    pub(super) fn vacant() -> Life {
        Life {
            stage: Stage::Vacant,
            paused: false,
        }
    }

    /// The attach slot's hold ran out with nobody back in it.
    pub(super) fn vacate(&mut self) {
        if self.stage == Stage::Dead {
            self.stage = Stage::Vacant;
        }
    }

    /// Whether it is an attach slot nobody holds.
    pub(super) fn is_vacant(&self) -> bool {
        self.stage == Stage::Vacant
    }

    fn after(&self) -> After {
        match self.stage {
            Stage::Stopping { why, .. } => why.into(),
            Stage::Doomed { after } | Stage::Killed { after } => after,
            Stage::Cheaped => After::Cheap,
            Stage::Dead | Stage::Running | Stage::Vacant => After::Respawn,
        }
    }

    /// Cheaped, or on its way to it.
    pub(super) fn cheaped(&self) -> bool {
        self.after() == After::Cheap
    }

    /// Being reloaded (not yet forked again).
    pub(super) fn reloading(&self) -> bool {
        self.alive() && self.after() == After::Reload
    }

    /// Running and not asked to stop nor killed.
    pub(super) fn running(&self) -> bool {
        self.stage == Stage::Running
    }

    /// Asked to stop: it acks at once so the master sees it finish.
    pub(super) fn stopping(&self) -> bool {
        matches!(self.stage, Stage::Stopping { .. })
    }

    /// Broke the channel protocol; not killed yet.
    pub(super) fn doomed(&self) -> bool {
        matches!(self.stage, Stage::Doomed { .. })
    }

    /// Sent SIGKILL (or about to be): not watched or killed again.
    pub(super) fn killed(&self) -> bool {
        matches!(self.stage, Stage::Doomed { .. } | Stage::Killed { .. })
    }

    /// Whether deliveries are written to it: not paused, not reloading
    /// (a reloading child's queue waits for its successor).
    pub(super) fn takes_deliveries(&self) -> bool {
        !(self.paused || self.reloading())
    }

    /// The one place a slot's state for the router, shared memory and
    /// stats is decided.
    pub(super) fn state(&self, shutting_down: bool) -> ProcState {
        if !self.alive() && shutting_down {
            ProcState::Stopped
        } else if self.cheaped() {
            ProcState::Cheaped
        } else if self.is_vacant() {
            ProcState::Vacant
        } else if !self.alive() {
            ProcState::Respawning
        } else if self.paused || self.reloading() {
            ProcState::Paused
        } else {
            ProcState::Running
        }
    }

    /// Forked.
    pub(super) fn spawned(&mut self) {
        self.stage = Stage::Running;
    }

    /// Reaped: what follows. The slot is dead, or cheaped.
    pub(super) fn exited(&mut self) -> After {
        let after = self.after();
        self.stage = if after == After::Cheap {
            Stage::Cheaped
        } else {
            Stage::Dead
        };
        after
    }

    /// Marks it for a kill at the end of the loop turn (broken protocol).
    pub(super) fn doom(&mut self) {
        if self.alive() && !self.killed() {
            self.stage = Stage::Doomed {
                after: self.after(),
            };
        }
    }

    /// Records that it is being sent SIGKILL; false if it already was (or
    /// is not alive), so it is killed and counted once.
    pub(super) fn kill(&mut self) -> bool {
        if !self.alive() || matches!(self.stage, Stage::Killed { .. }) {
            return false;
        }
        self.stage = Stage::Killed {
            after: self.after(),
        };
        true
    }

    /// Pauses or resumes; the previous setting, or an error for a cheaped
    /// slot.
    pub(super) fn pause(&mut self, pause: bool) -> Result<bool, &'static str> {
        if self.cheaped() {
            return Err("cheaped");
        }
        Ok(std::mem::replace(&mut self.paused, pause))
    }

    /// Cheaps it: a running child stops once its queue is handled; a dead
    /// one is not respawned. Not while it is being reloaded.
    pub(super) fn cheap(&mut self, now: Instant) -> Result<(), &'static str> {
        if self.reloading() {
            return Err("reloading");
        }
        self.paused = false;
        self.stage = match self.stage {
            Stage::Running => Stage::Stopping {
                why: Stop::Cheap,
                asked: now,
                term_sent: None,
            },
            Stage::Dead | Stage::Cheaped => Stage::Cheaped,
            Stage::Vacant => Stage::Vacant,
            Stage::Doomed { .. } => Stage::Doomed {
                after: After::Cheap,
            },
            Stage::Killed { .. } => Stage::Killed {
                after: After::Cheap,
            },
            s @ Stage::Stopping { .. } => s,
        };
        Ok(())
    }

    /// Takes a cheap back.
    pub(super) fn uncheap(&mut self) -> Uncheap {
        if !self.cheaped() {
            return Uncheap::NotCheaped;
        }
        match self.stage {
            Stage::Cheaped => {
                self.stage = Stage::Dead;
                Uncheap::Start
            }
            Stage::Doomed { .. } => {
                self.stage = Stage::Doomed {
                    after: After::Respawn,
                };
                Uncheap::Kept
            }
            Stage::Killed { .. } => {
                self.stage = Stage::Killed {
                    after: After::Respawn,
                };
                Uncheap::Kept
            }
            _ => {
                self.stage = Stage::Running;
                Uncheap::Kept
            }
        }
    }

    /// Starts its reload; false when it is not running (dead, cheaped,
    /// stopping or killed: nothing to reload).
    pub(super) fn reload(&mut self, now: Instant) -> bool {
        if self.stage != Stage::Running {
            return false;
        }
        self.stage = Stage::Stopping {
            why: Stop::Reload,
            asked: now,
            term_sent: None,
        };
        true
    }

    /// Moves a stop along: `idle` says it has handled what it must (its
    /// whole queue for a cheap, what was written to it for a reload).
    pub(super) fn stop_step(
        &mut self,
        now: Instant,
        idle: impl FnOnce(Stop) -> bool,
        drain_timeout: Duration,
        kill_timeout: Duration,
    ) -> Option<StopStep> {
        let Stage::Stopping {
            why,
            asked,
            term_sent,
        } = &mut self.stage
        else {
            return None;
        };
        match *term_sent {
            None if idle(*why) || now.duration_since(*asked) >= drain_timeout => {
                *term_sent = Some(now);
                Some(StopStep::Term)
            }
            Some(t) if now.duration_since(t) >= kill_timeout => {
                *term_sent = Some(now);
                Some(StopStep::Kill)
            }
            _ => None,
        }
    }

    /// When [`Life::stop_step`] must look again without an event.
    pub(super) fn stop_deadline(
        &self,
        drain_timeout: Duration,
        kill_timeout: Duration,
    ) -> Option<Instant> {
        match self.stage {
            Stage::Stopping {
                term_sent: Some(t), ..
            } => Some(t + kill_timeout),
            Stage::Stopping { asked, .. } => Some(asked + drain_timeout),
            _ => None,
        }
    }
}

/// Whether the watch kills a child: it is `overdue` (harakiri), or it has
/// made no progress for `stalled` (when work waits) against the stall
/// limit. A harakiri comes first.
pub(super) fn verdict(
    overdue: Option<Overdue>,
    stalled: Option<Duration>,
    stall: Option<Duration>,
) -> Option<Verdict> {
    if let Some(o) = overdue {
        return Some(Verdict::Harakiri(o));
    }
    match (stalled, stall) {
        (Some(stalled), Some(limit)) if stalled >= limit => {
            Some(Verdict::Stalled { stalled, limit })
        }
        _ => None,
    }
}

/// Wait before respawning after `quick` consecutive quick deaths: none for
/// a child that lived long enough, then 100 ms doubling up to `max`.
pub(super) fn backoff(quick: u32, max: Duration) -> Duration {
    if quick == 0 {
        return Duration::ZERO;
    }
    let ms = 100u64.saturating_mul(1u64 << (quick - 1).min(30));
    Duration::from_millis(ms).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DRAIN: Duration = Duration::from_secs(5);
    const KILL: Duration = Duration::from_secs(2);

    fn running() -> Life {
        let mut l = Life::default();
        l.spawned();
        l
    }

    #[test]
    fn backoff_doubles_and_is_bounded() {
        let max = Duration::from_secs(10);
        let got: Vec<u128> = (0..10).map(|q| backoff(q, max).as_millis()).collect();
        assert_eq!(got, [0, 100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000]);
        assert_eq!(backoff(u32::MAX, max), max);
    }

    #[test]
    fn states_for_the_router() {
        let mut l = Life::default();
        assert_eq!(l.state(false), ProcState::Respawning);
        assert_eq!(l.state(true), ProcState::Stopped);
        l.spawned();
        assert_eq!(l.state(false), ProcState::Running);
        assert_eq!(l.pause(true), Ok(false));
        assert_eq!(l.state(false), ProcState::Paused);
        assert!(!l.takes_deliveries());
        // The pause holds across a death.
        l.exited();
        l.spawned();
        assert_eq!(l.state(false), ProcState::Paused);
    }

    #[test]
    fn a_cheap_drains_then_terms_then_kills_and_is_not_respawned() {
        let t0 = Instant::now();
        let mut l = running();
        l.pause(true).unwrap();
        l.cheap(t0).unwrap();
        assert_eq!(l.state(false), ProcState::Cheaped);
        assert!(
            l.takes_deliveries(),
            "a cheap clears the pause: its queue drains"
        );
        assert_eq!(l.pause(true), Err("cheaped"));
        assert_eq!(l.stop_step(t0, |_| false, DRAIN, KILL), None, "still busy");
        assert_eq!(l.stop_deadline(DRAIN, KILL), Some(t0 + DRAIN));
        assert_eq!(
            l.stop_step(t0, |why| why == Stop::Cheap, DRAIN, KILL),
            Some(StopStep::Term)
        );
        assert_eq!(
            l.stop_step(t0 + KILL, |_| true, DRAIN, KILL),
            Some(StopStep::Kill)
        );
        assert_eq!(l.exited(), After::Cheap);
        assert!(!l.alive());
        assert_eq!(l.uncheap(), Uncheap::Start);
        assert_eq!(l.state(false), ProcState::Respawning);
    }

    #[test]
    fn a_slow_stop_is_termed_at_the_drain_timeout() {
        let t0 = Instant::now();
        let mut l = running();
        assert!(l.reload(t0));
        assert!(l.reloading() && !l.takes_deliveries());
        assert_eq!(l.state(false), ProcState::Paused);
        assert_eq!(
            l.stop_step(t0 + DRAIN, |_| false, DRAIN, KILL),
            Some(StopStep::Term)
        );
        assert_eq!(l.cheap(t0), Err("reloading"));
        assert_eq!(l.exited(), After::Reload);
        assert!(!l.reload(t0), "nothing to reload while dead");
    }

    #[test]
    fn uncheap_before_it_stopped_keeps_it() {
        let mut l = running();
        l.cheap(Instant::now()).unwrap();
        assert_eq!(l.uncheap(), Uncheap::Kept);
        assert!(l.running());
        assert_eq!(l.uncheap(), Uncheap::NotCheaped);
    }

    #[test]
    fn a_kill_is_counted_once_and_keeps_what_follows() {
        let mut l = running();
        l.reload(Instant::now());
        assert!(l.kill());
        assert!(!l.kill(), "not twice");
        assert!(l.killed() && l.reloading());
        assert_eq!(l.exited(), After::Reload);
        let mut l = running();
        l.doom();
        assert!(l.doomed());
        assert!(l.kill());
        assert!(!l.doomed());
        assert_eq!(l.exited(), After::Respawn);
        assert!(!Life::default().kill(), "nothing to kill");
    }

    #[test]
    fn verdicts() {
        let s = Duration::from_secs;
        let late = Overdue::User { by: s(1) };
        assert_eq!(
            verdict(Some(late), Some(s(99)), Some(s(1))),
            Some(Verdict::Harakiri(late)),
            "harakiri first"
        );
        assert_eq!(verdict(None, None, Some(s(30))), None, "nothing waits");
        assert_eq!(
            verdict(None, Some(s(30)), Some(s(30))),
            Some(Verdict::Stalled {
                stalled: s(30),
                limit: s(30)
            })
        );
        assert_eq!(verdict(None, Some(s(29)), Some(s(30))), None);
        assert_eq!(verdict(None, Some(s(99)), None), None, "stall check off");
    }
}
