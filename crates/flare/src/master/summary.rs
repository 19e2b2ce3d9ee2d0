//! What a master run did: totals and one row per process.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

use serde::Serialize;

use crate::counters::{Counters, SignalSummary, SourceSummary, Tally};
use crate::shm::Shm;
use crate::topology::{ProcId, ProcState, Topology};

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
        let attach = [c.attached, c.detached, c.attach_refused, c.attach_timed_out];
        if attach.iter().any(|&n| n > 0) {
            let _ = writeln!(
                s,
                "attached processes: joined {} | left {} | refused {} | timed out {}",
                attach[0], attach[1], attach[2], attach[3]
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
