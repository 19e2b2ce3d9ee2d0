//! When sources fire: drift-free periodic timers and cron catch-up.
//!
//! Time comes in as arguments (an `Instant` for timers; Unix seconds and a
//! local-time conversion for cron), so the logic is tested with an injected
//! clock. Pure: no I/O, no clock reads.

use std::time::{Duration, Instant};

use chrono::NaiveDateTime;

use crate::cron::CronSpec;

/// A periodic timer whose k-th firing is due at `start + k * period`, so
/// lateness never accumulates. Missed periods (a busy or stopped loop) are
/// coalesced into one firing.
#[derive(Clone, Debug)]
pub(crate) struct TimerSchedule {
    start: Instant,
    period: Duration,
    /// Index of the next firing (from 1).
    next: u64,
    fired: u64,
    repeat: Option<u64>,
}

impl TimerSchedule {
    pub(crate) fn new(start: Instant, period: Duration, repeat: Option<u64>) -> Self {
        TimerSchedule {
            start,
            period,
            next: 1,
            fired: 0,
            repeat,
        }
    }

    /// When the next firing is due.
    pub(crate) fn due(&self) -> Instant {
        self.start + mul(self.period, self.next)
    }

    /// Records a firing at `now` (at or after `due()`). Returns whether the
    /// timer goes on (an rb timer stops after `repeat` firings).
    pub(crate) fn fire(&mut self, now: Instant) -> bool {
        self.fired += 1;
        if self.repeat.is_some_and(|r| self.fired >= r) {
            return false;
        }
        let elapsed = now.saturating_duration_since(self.start).as_nanos();
        let period = self.period.as_nanos().max(1);
        let done = u64::try_from(elapsed / period).unwrap_or(u64::MAX);
        self.next = done.saturating_add(1).max(self.next + 1);
        true
    }

    /// Firings so far.
    #[cfg(test)]
    pub(crate) fn fired(&self) -> u64 {
        self.fired
    }
}

fn mul(d: Duration, k: u64) -> Duration {
    let ns = d.as_nanos().saturating_mul(k as u128);
    Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
}

/// Missed minutes checked at most, after a stall or a clock jump forward;
/// older ones are skipped (and reported).
pub(crate) const MAX_CATCH_UP: i64 = 5;

/// Which wall-clock minutes a cron source has already considered.
#[derive(Clone, Debug)]
pub(crate) struct CronCursor {
    /// The last Unix minute checked.
    last: i64,
}

/// What checking a cron source found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CronDue {
    /// Matching minutes to raise for, oldest first (each at most once).
    pub(crate) matches: u32,
    /// Minutes skipped without checking (more than [`MAX_CATCH_UP`] behind).
    pub(crate) skipped: i64,
}

impl CronCursor {
    /// A cursor that will check the current minute first (uWSGI fires a
    /// cron in the minute it is added, when that minute matches).
    pub(crate) fn new(now_unix: i64) -> Self {
        CronCursor {
            last: now_unix.div_euclid(60) - 1,
        }
    }

    /// Checks every minute after the last one checked up to the current
    /// one. `local` turns a Unix time into local wall-clock time.
    pub(crate) fn check(
        &mut self,
        spec: &CronSpec,
        now_unix: i64,
        local: &dyn Fn(i64) -> Option<NaiveDateTime>,
    ) -> CronDue {
        let now_min = now_unix.div_euclid(60);
        let mut due = CronDue {
            matches: 0,
            skipped: 0,
        };
        if now_min <= self.last {
            // The clock went back: those minutes were already considered.
            return due;
        }
        let first = (self.last + 1).max(now_min - MAX_CATCH_UP + 1);
        due.skipped = first - (self.last + 1);
        for m in first..=now_min {
            if local(m * 60).is_some_and(|t| spec.matches(&t)) {
                due.matches += 1;
            }
        }
        self.last = now_min;
        due
    }

    /// Unix time at which the next minute starts.
    pub(crate) fn next_check(&self) -> i64 {
        (self.last + 1) * 60
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(t: i64) -> Option<NaiveDateTime> {
        chrono::DateTime::from_timestamp(t, 0).map(|d| d.naive_utc())
    }

    #[test]
    fn the_test_epoch_is_on_the_hour() {
        assert_eq!(1_800_000_000 % 3600, 0);
    }

    #[test]
    fn timers_do_not_drift_over_ten_thousand_periods() {
        let start = Instant::now();
        let period = Duration::from_millis(50);
        let mut t = TimerSchedule::new(start, period, None);
        for k in 1..=10_000u64 {
            let due = t.due();
            assert_eq!(due, start + period * k as u32, "period {k}");
            // Each firing happens a little late; the schedule does not move.
            assert!(t.fire(due + Duration::from_millis(3)));
        }
        assert_eq!(t.fired(), 10_000);
        assert_eq!(t.due(), start + period * 10_001);
    }

    #[test]
    fn a_stalled_loop_fires_once_then_stays_on_the_grid() {
        let start = Instant::now();
        let s = Duration::from_secs(1);
        let mut t = TimerSchedule::new(start, s, None);
        assert!(t.fire(start + s * 5 + Duration::from_millis(500)));
        assert_eq!(t.due(), start + s * 6, "four missed periods coalesced");
        assert_eq!(t.fired(), 1);
    }

    #[test]
    fn rb_timers_stop_after_repeat() {
        let start = Instant::now();
        let s = Duration::from_secs(1);
        let mut t = TimerSchedule::new(start, s, Some(3));
        assert!(t.fire(t.due()));
        assert!(t.fire(t.due()));
        assert!(!t.fire(t.due()), "third firing is the last");
        assert_eq!(t.fired(), 3);
    }

    #[test]
    fn cron_fires_once_per_matching_minute_and_catches_up_exactly_once() {
        let every: CronSpec = "* * * * *".parse().unwrap();
        // 1_800_000_000 is a whole minute (and a whole hour); 10 s into it.
        let t0 = 1_800_000_000 + 10;
        let mut c = CronCursor::new(t0);
        let due = |c: &mut CronCursor, t| c.check(&every, t, &utc);
        assert_eq!(due(&mut c, t0).matches, 1, "the current minute counts");
        assert_eq!(due(&mut c, t0 + 30).matches, 0, "same minute: not again");
        assert_eq!(c.next_check(), t0 - 10 + 60);
        // The loop was busy across two minute boundaries.
        assert_eq!(due(&mut c, t0 + 125).matches, 2, "each missed minute once");
        assert_eq!(due(&mut c, t0 + 125).matches, 0);
        // The clock went back an hour: nothing again.
        assert_eq!(due(&mut c, t0 - 3600).matches, 0);
        assert_eq!(due(&mut c, t0 + 180).matches, 1);
    }

    #[test]
    fn cron_catch_up_is_bounded_after_a_jump() {
        let every: CronSpec = "* * * * *".parse().unwrap();
        let t0 = 1_800_000_000; // a whole minute
        let mut c = CronCursor::new(t0);
        c.check(&every, t0, &utc);
        let d = c.check(&every, t0 + 3600, &utc);
        assert_eq!(d.matches as i64, MAX_CATCH_UP);
        assert_eq!(d.skipped, 60 - MAX_CATCH_UP);
    }

    #[test]
    fn cron_only_matching_minutes_count() {
        let quarter: CronSpec = "*/15 * * * *".parse().unwrap();
        let t0 = 1_800_000_000; // on the hour
        let mut c = CronCursor::new(t0);
        let mut total = 0;
        for m in 0..120 {
            total += c.check(&quarter, t0 + m * 60 + 7, &utc).matches;
        }
        assert_eq!(total, 8, "two hours of */15");
    }
}
