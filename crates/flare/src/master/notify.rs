//! systemd's notify protocol: readiness, status, reload, stop and the
//! watchdog, sent to `$NOTIFY_SOCKET` when it is set (`Type=notify`).
//!
//! The master calls it from its loop: no thread, one datagram per message
//! (the `sd-notify` crate, libc only). The watchdog is fed from the loop's
//! own timer, so a master whose loop is stuck stops feeding it and systemd
//! restarts the service.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// What the master tells the service manager.
pub(super) struct Notifier {
    /// `NOTIFY_SOCKET` is set.
    enabled: bool,
    /// Half of `WATCHDOG_USEC`, when the watchdog is on for this pid.
    watchdog_every: Option<Duration>,
    /// When the watchdog is fed next.
    next_ping: Option<Instant>,
    /// `READY=1` sent for the first generation.
    ready: bool,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` (the
    /// watchdog is on only when `WATCHDOG_PID`, if set, is this process).
    pub(super) fn from_env(now: Instant) -> Notifier {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some();
        let watchdog_every = sd_notify::watchdog_enabled()
            .filter(|_| enabled)
            .map(|d| (d / 2).max(Duration::from_millis(1)));
        if let Some(every) = watchdog_every {
            tracing::info!("systemd watchdog: feeding it every {every:?}");
        }
        Notifier {
            enabled,
            watchdog_every,
            next_ping: watchdog_every.map(|e| now + e),
            ready: false,
        }
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(states) {
            tracing::warn!("cannot notify systemd ({states:?}): {e}");
        }
    }

    /// Every child of the first generation is up: `READY=1`, once.
    pub(super) fn ready(&mut self, status: &str) {
        if std::mem::replace(&mut self.ready, true) {
            return;
        }
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// A reload starts: `RELOADING=1` with the monotonic time (systemd 253
    /// and later require it).
    pub(super) fn reloading(&self, status: &str) {
        let mut states = vec![NotifyState::Reloading, NotifyState::Status(status)];
        if let Ok(now) = NotifyState::monotonic_usec_now() {
            states.push(now);
        }
        self.send(&states);
    }

    /// A reload is done: `READY=1` again.
    pub(super) fn reloaded(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// The master begins its graceful shutdown: `STOPPING=1`.
    pub(super) fn stopping(&self, status: &str) {
        self.send(&[NotifyState::Stopping, NotifyState::Status(status)]);
    }

    /// When the loop must wake next to feed the watchdog.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.next_ping
    }

    /// Feeds the watchdog when it is due. Called once per loop turn.
    pub(super) fn tick(&mut self, now: Instant) {
        let (Some(due), Some(every)) = (self.next_ping, self.watchdog_every) else {
            return;
        };
        if now >= due {
            self.send(&[NotifyState::Watchdog]);
            self.next_ping = Some(now + every);
        }
    }
}
