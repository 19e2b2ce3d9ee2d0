//! Graceful shutdown: drain, SIGTERM, SIGKILL after a timeout, and the
//! summary at the end.

use std::time::Instant;

use nix::sys::signal::{Signal, kill};

use super::super::summary::Summary;
use super::token::Channel;
use super::{Engine, Phase};
use crate::counters::Tally;

impl Engine {
    pub(super) fn begin_shutdown(&mut self, why: &str) {
        let now = Instant::now();
        match self.phase {
            Phase::Running => {
                let queued = self.d.queued();
                tracing::info!("shutting down ({why}): draining {queued} queued signals");
                self.notify.stopping(&format!("shutting down ({why})"));
                // Sources stop first: no new work from outside.
                if let Some(r) = self.remote.as_mut() {
                    r.shut(self.poll.registry());
                }
                self.phase = Phase::Draining {
                    deadline: now + self.opts.drain_timeout,
                };
                if let Some(a) = self.admin.as_mut() {
                    a.shut(self.poll.registry());
                }
                // Nobody new joins (the socket file goes with it).
                self.attach = None;
                self.reload_queue.clear();
                self.reload_current = None;
                for s in 0..self.procs.len() {
                    self.refresh_state(s);
                }
            }
            Phase::Draining { .. } => {
                tracing::info!("shutting down ({why}) again: stopping the children now");
                self.terminate(now);
            }
            Phase::Terminating { .. } | Phase::Killing => {
                tracing::info!("shutting down ({why}) again: killing the children");
                self.kill_all(Signal::SIGKILL);
                self.phase = Phase::Killing;
            }
        }
    }

    pub(super) fn terminate(&mut self, now: Instant) {
        self.detach_all("the master is shutting down");
        self.kill_all(Signal::SIGTERM);
        self.phase = Phase::Terminating {
            deadline: now + self.opts.kill_timeout,
        };
    }

    pub(super) fn kill_all(&mut self, sig: Signal) {
        for p in &self.procs {
            if let Some(pid) = p.pid {
                let _ = kill(pid, sig);
            }
        }
        self.end_strays(sig);
    }

    /// Sends `sig` to the processes children left behind that have not
    /// had it yet; true when any is left.
    pub(super) fn end_strays(&mut self, sig: Signal) -> bool {
        let procs = &self.procs;
        self.strays
            .end(sig, |pid| procs.iter().any(|p| p.pid == Some(pid)))
    }

    /// Moves the shutdown along; true when every child is gone.
    pub(super) fn advance_phase(&mut self) -> bool {
        let now = Instant::now();
        let alive = self.procs.iter().any(|p| p.pid.is_some());
        match self.phase {
            Phase::Running => false,
            Phase::Draining { deadline } => {
                // Attached members drain too (they are not signalled).
                let drained = self.procs.iter().enumerate().all(|(s, p)| {
                    (p.pid.is_none() && p.attached.is_none())
                        || (self.d.load(s) == 0
                            && !p.has_input(Channel::Dispatcher)
                            && !p.has_input(Channel::Threads))
                }) && self.d.pools_drained();
                if drained || now >= deadline {
                    if !drained {
                        tracing::warn!("drain timeout: stopping with signals still queued");
                    }
                    self.terminate(now);
                }
                false
            }
            Phase::Terminating { deadline } => {
                // Those re-parented since the SIGTERM (their parent died).
                let strays = self.end_strays(Signal::SIGTERM);
                if (alive || strays) && now >= deadline {
                    tracing::warn!("processes still alive after SIGTERM: sending SIGKILL");
                    self.kill_all(Signal::SIGKILL);
                    self.phase = Phase::Killing;
                }
                !alive && !strays
            }
            Phase::Killing => {
                let strays = self.end_strays(Signal::SIGKILL);
                !alive && !strays
            }
        }
    }

    pub(super) fn finish(mut self) -> Summary {
        self.settle_sources();
        let (counters, signals, tallies) = self.d.close_books();
        let tallies: Vec<(Tally, u64)> = tallies
            .into_iter()
            .zip(&self.procs)
            .map(|(t, p)| (t, p.timeouts))
            .collect();
        // Signals raised while they were blocked stay pending in the
        // signalfd's queue; drop them so they do not fire on unblocking.
        while let Ok(Some(_)) = self.sigfd.read_signal() {}
        let _ = self.old_mask.thread_set_mask();
        let pids: Vec<u32> = self.procs.iter().map(|p| p.last_pid).collect();
        tracing::info!(
            "master {} exiting: {} raised, {} handled",
            self.master_pid,
            counters.raised,
            counters.handled
        );
        Summary::collect(
            counters,
            &self.topo,
            &self.shm,
            &pids,
            self.sources.summaries(),
            &tallies,
            signals,
        )
    }
}
