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
    /// Children killed because they made no progress for their stall limit
    /// while deliveries waited for them (stopped, deadlocked).
    #[serde(default)]
    pub stalls: u64,
    /// Remote signal requests answered "delivered".
    pub remote_accepted: u64,
    /// Remote signal requests answered "rejected" (not allowed, unrouted,
    /// or dropped).
    pub remote_rejected: u64,
    /// Remote connections closed for a malformed or short packet.
    pub remote_malformed: u64,
    /// Remote connections closed for a request not finished within the
    /// read timeout of its first byte, or for idling that long.
    pub remote_timed_out: u64,
    /// Remote connections refused: the peer's uid may not use the Unix
    /// socket (`SO_PEERCRED`).
    pub remote_refused: u64,
    /// Remote connections closed to make room for a newcomer (the
    /// connection limit, in total or per peer, was reached).
    #[serde(default)]
    pub remote_evicted: u64,
    /// Remote connections closed after too many rejected requests in a row.
    #[serde(default)]
    pub remote_closed_rejected: u64,
    /// Stats and control connections closed to make room for a newcomer.
    #[serde(default)]
    pub admin_evicted: u64,
    /// Stats and control connections closed for a command not finished in
    /// time, a stats document not read in time, or idling.
    #[serde(default)]
    pub admin_timed_out: u64,
    /// Stats and control connections refused: the peer's uid may not use
    /// the Unix socket (`SO_PEERCRED`).
    #[serde(default)]
    pub admin_refused: u64,
    /// Processes that joined through the attach socket.
    #[serde(default)]
    pub attached: u64,
    /// Attached processes that left (closed their channel or died).
    #[serde(default)]
    pub detached: u64,
    /// Attach connections refused: a malformed hello, a wrong version, no
    /// free slot, or a uid that may not attach.
    #[serde(default)]
    pub attach_refused: u64,
    /// Attach connections closed for a hello not whole in time, or to make
    /// room for a newcomer.
    #[serde(default)]
    pub attach_timed_out: u64,
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
