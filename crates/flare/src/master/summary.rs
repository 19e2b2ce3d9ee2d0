//! What a master run did: totals and one row per process.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

use serde::{Deserialize, Serialize};

use super::sources::SourceSummary;
use crate::router::ProcState;
use crate::shm::Shm;
use crate::topology::{ProcId, Topology};

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
}

/// One process of the group, as the run ends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProcessSummary {
    /// Role and id.
    pub proc: ProcId,
    /// Last pid that ran in this slot.
    pub pid: u32,
    /// State at the end.
    pub state: ProcState,
    /// Times the process was forked again after dying.
    pub respawns: u64,
    /// Signals the process raised.
    pub raised: u64,
    /// Deliveries the process handled.
    pub handled: u64,
    /// Handlers that panicked.
    pub panics: u64,
    /// Handlers that raised an exception: a Python handler that raised
    /// (reported with [`crate::note_handler_exception`]).
    pub exceptions: u64,
    /// Deliveries handled, by signal number (numbers never handled left out).
    /// Counted by the process after each handler run, so a delivery that was
    /// given again after a crash may count twice.
    pub handled_by_num: BTreeMap<u8, u64>,
    /// The master's side: deliveries to this process and what became of them.
    pub tally: Tally,
    /// Handler timeouts (harakiri kills).
    pub timeouts: u64,
}

/// The outcome of [`crate::Master::run`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Master totals.
    pub counters: Counters,
    /// Every process, in slot order (workers, mules, spoolers).
    pub processes: Vec<ProcessSummary>,
    /// Every source still in place at the end.
    pub sources: Vec<SourceSummary>,
    /// Every signal number raised at least once.
    pub signals: Vec<SignalSummary>,
    /// The master's peak resident memory, in KiB.
    pub master_max_rss_kib: u64,
}

impl Summary {
    pub(crate) fn collect(
        counters: Counters,
        topo: &Topology,
        shm: &Shm,
        last_pids: &[u32],
        sources: Vec<SourceSummary>,
        tallies: &[(Tally, u64)],
        signals: Vec<SignalSummary>,
    ) -> Self {
        let processes = (0..topo.slots())
            .map(|s| {
                let st = shm.slot(s);
                let handled_by_num = st.handled_by_num();
                ProcessSummary {
                    proc: topo.proc_at(s),
                    pid: last_pids.get(s).copied().unwrap_or(0),
                    state: st.state(),
                    respawns: st.respawns.load(Relaxed),
                    raised: st.raised.load(Relaxed),
                    handled: st.handled.load(Relaxed),
                    panics: st.panics.load(Relaxed),
                    exceptions: st.exceptions.load(Relaxed),
                    handled_by_num,
                    tally: tallies.get(s).map_or_else(Tally::default, |t| t.0),
                    timeouts: tallies.get(s).map_or(0, |t| t.1),
                }
            })
            .collect();
        let master_max_rss_kib =
            nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
                .map_or(0, |u| u.max_rss() as u64);
        Summary {
            counters,
            processes,
            sources,
            signals,
            master_max_rss_kib,
        }
    }

    /// The process with this role and id.
    pub fn process(&self, proc: ProcId) -> Option<&ProcessSummary> {
        self.processes.iter().find(|p| p.proc == proc)
    }

    /// A table for people: one row per process, then the master's totals.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<10} {:>8} {:>9} {:>10} {:>10} {:>7} {:>10}",
            "process", "pid", "respawns", "raised", "handled", "panics", "exceptions"
        );
        for p in &self.processes {
            let _ = writeln!(
                s,
                "{:<10} {:>8} {:>9} {:>10} {:>10} {:>7} {:>10}",
                p.proc.to_string(),
                p.pid,
                p.respawns,
                p.raised,
                p.handled,
                p.panics,
                p.exceptions
            );
        }
        let c = &self.counters;
        let _ = writeln!(
            s,
            "master: raised {} | routed {} | unrouted {} | delivered {} | handled {} | \
             dropped {} | redelivered {} | dead-lettered {} | pending at exit {} | \
             timeouts {} | stalls {}",
            c.raised,
            c.routed,
            c.unrouted,
            c.delivered,
            c.handled,
            c.dropped,
            c.redelivered,
            c.dead_lettered,
            c.pending_at_exit,
            c.timeouts,
            c.stalls
        );
        let remote = [
            c.remote_accepted,
            c.remote_rejected,
            c.remote_malformed,
            c.remote_timed_out,
            c.remote_refused,
            c.remote_evicted,
            c.remote_closed_rejected,
        ];
        if remote.iter().any(|&n| n > 0) {
            let _ = writeln!(
                s,
                "remote: accepted {} | rejected {} | malformed {} | timed out {} | refused {} | \
                 evicted {} | closed for rejects {}",
                remote[0], remote[1], remote[2], remote[3], remote[4], remote[5], remote[6]
            );
        }
        let admin = [c.admin_evicted, c.admin_timed_out, c.admin_refused];
        if admin.iter().any(|&n| n > 0) {
            let _ = writeln!(
                s,
                "stats/control connections: evicted {} | timed out {} | refused {}",
                admin[0], admin[1], admin[2]
            );
        }
        s
    }
}
