//! What became of signals: the counters and tallies that the run's
//! summary and the stats document both report. Plain data.

use serde::{Deserialize, Serialize};

/// What became of deliveries: of one signal number, or to one process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Deliveries queued (a `workers` signal makes one per worker).
    pub delivered: u64,
    /// Deliveries acknowledged as handled.
    pub handled: u64,
    /// Deliveries dropped because a queue was at its bound.
    pub dropped: u64,
    /// Deliveries given again after the process that had them died.
    pub redelivered: u64,
    /// Deliveries given up after too many attempts.
    pub dead_lettered: u64,
    /// Deliveries still queued or unacknowledged when the master exited.
    pub pending_at_exit: u64,
    /// For one process: pool deliveries given to another member after
    /// this process died (so, per process, delivered = handled +
    /// dead-lettered + pending at exit + moved).
    pub moved: u64,
}

/// What became of one signal number.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalSummary {
    /// The number.
    pub num: u8,
    /// Times it was raised.
    pub raised: u64,
    /// Raises that reached nobody.
    pub unrouted: u64,
    /// Its deliveries.
    #[serde(flatten)]
    pub tally: Tally,
}

/// The master's counters of every outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Signals raised (by children, the master, and every other source).
    pub raised: u64,
    /// Raised signals that reached at least one process or pool.
    pub routed: u64,
    /// Signals no process could get (counted once per raise).
    pub unrouted: u64,
    /// Deliveries queued to processes (a `workers` signal makes one per worker).
    pub delivered: u64,
    /// Deliveries acknowledged as handled.
    pub handled: u64,
    /// Deliveries dropped because a queue was at its bound.
    pub dropped: u64,
    /// Deliveries given again after the process that had them died.
    pub redelivered: u64,
    /// Deliveries given up after too many attempts.
    pub dead_lettered: u64,
    /// Deliveries still queued or unacknowledged when the master exited.
    pub pending_at_exit: u64,
    /// Children killed because a handler ran past its time limit.
    pub timeouts: u64,
    /// Remote signal requests answered "delivered".
    pub remote_accepted: u64,
    /// Remote signal requests answered "rejected" (not allowed, unrouted,
    /// or dropped).
    pub remote_rejected: u64,
    /// Remote connections closed for a malformed or short packet.
    pub remote_malformed: u64,
    /// Remote connections closed for sending no whole request in time.
    pub remote_timed_out: u64,
    /// Remote connections closed at once: the connection limit was reached.
    pub remote_refused: u64,
}

/// A source, as reported in summaries and stats.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceSummary {
    /// Its id.
    pub id: u32,
    /// The signal it raises.
    pub sig: u8,
    /// What it is (`timer every 50ms`, `cron `* * * * *``, ...).
    pub what: String,
    /// Times it raised its signal.
    pub fired: u64,
    /// Firings skipped because it is unique and its last signal was still
    /// queued or running.
    pub held: u64,
    /// When it fires next, in milliseconds from now (timers and crons).
    pub next_in_ms: Option<u64>,
}
