//! Log lines at a bounded rate: a flood of unroutable or dropped signals
//! must not turn into a flood of log lines.

use std::time::{Duration, Instant};

/// Lets through at most `burst` events per `window`; counts the rest and
/// reports how many were held back with the next line let through.
#[derive(Debug)]
pub(crate) struct RateLog {
    window: Duration,
    burst: u32,
    started: Option<Instant>,
    shown: u32,
    held: u64,
}

impl RateLog {
    pub(crate) const fn new(burst: u32, window: Duration) -> Self {
        RateLog {
            window,
            burst,
            started: None,
            shown: 0,
            held: 0,
        }
    }

    /// Whether to log this event now; `Some(n)` means yes, and `n` earlier
    /// events were held back since the last line.
    pub(crate) fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.started {
            Some(t) if now.duration_since(t) < self.window => {}
            _ => {
                self.started = Some(now);
                self.shown = 0;
            }
        }
        if self.shown < self.burst {
            self.shown += 1;
            Some(std::mem::take(&mut self.held))
        } else {
            self.held += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_holds_then_reports() {
        let mut r = RateLog::new(2, Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(r.allow(t0), Some(0));
        assert_eq!(r.allow(t0), Some(0));
        assert_eq!(r.allow(t0), None);
        assert_eq!(r.allow(t0 + Duration::from_millis(999)), None);
        assert_eq!(r.allow(t0 + Duration::from_secs(1)), Some(2));
    }
}
