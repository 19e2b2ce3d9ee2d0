//! The stats document, built from the master's state and the children's
//! shared-memory slots.

use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::time::Instant;

use super::Engine;
use crate::shm::monotonic_ns;
use crate::stats::{CoreStats, FlareStats, ProcStats, RouteStats, SocketStats, StatsDoc};
use crate::table::{Owner, Runners, Taken};
use crate::topology::{ProcState, Role, Slot};

impl Engine {
    /// The document the stats endpoint serves (docs/stats.md).
    pub(super) fn stats_doc(&mut self) -> StatsDoc {
        let mut doc = StatsDoc {
            version: format!("flare {}", env!("CARGO_PKG_VERSION")),
            pid: self.master_pid,
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            cwd: std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_default(),
            ..StatsDoc::default()
        };
        let now_ns = monotonic_ns();
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .map_or(4096, |p| p as u64);
        for s in 0..self.procs.len() {
            let ps = self.proc_stats(s, now_ns, page);
            match self.procs[s].id.role {
                Role::Worker => doc.workers.push(ps),
                Role::Mule => doc.mules.push(ps),
                _ => doc.spoolers.push(ps),
            }
        }
        doc.signal_queue = self.d.queued() as u64;
        if let Some(r) = &self.remote {
            doc.sockets.push(SocketStats {
                name: r.local_addr().unwrap_or_default(),
                proto: "uwsgi".into(),
                ..SocketStats::default()
            });
        }
        for (name, proto) in &self.admin_sockets {
            doc.sockets.push(SocketStats {
                name: name.clone(),
                proto: (*proto).into(),
                ..SocketStats::default()
            });
        }
        let mut counters = self.d.counters.clone();
        counters.pending_at_exit = 0;
        doc.flare = FlareStats {
            started_at: self.started_unix,
            uptime_ms: Instant::now().duration_since(self.started).as_millis() as u64,
            counters,
            signals: self.d.signal_summaries(),
            table: self.route_stats(),
            sources: self.sources.summaries(),
        };
        doc
    }

    /// Every registered or reserved number of the signal table.
    fn route_stats(&self) -> Vec<RouteStats> {
        let topo = &self.topo;
        self.d
            .table
            .taken()
            .map(|(num, taken)| match taken {
                Taken::Reserved(owner) => RouteStats {
                    num,
                    owner: owner.describe(topo),
                    reserved: true,
                    ..RouteStats::default()
                },
                Taken::Registered(r) => RouteStats {
                    num,
                    target: r.target.to_string(),
                    owner: match r.owner {
                        Owner::Master => "master".into(),
                        Owner::Child(s) => topo.proc_at(s).to_string(),
                    },
                    runners: match &r.runners {
                        Runners::All => vec!["all".into()],
                        Runners::Only(set) => {
                            set.iter().map(|s| topo.proc_at(s).to_string()).collect()
                        }
                    },
                    reserved: false,
                },
            })
            .collect()
    }

    fn proc_stats(&mut self, s: Slot, now_ns: u64, page: u64) -> ProcStats {
        let st = self.shm.slot(s);
        let state = self.d.state(s);
        let current = st.current.load(Acquire);
        let (current_signal, current_ms) = if current != 0 {
            let started = st.handler_started_ns.load(Relaxed);
            (
                Some((current - 1) as u8),
                Some(now_ns.saturating_sub(started) / 1_000_000),
            )
        } else {
            (None, None)
        };
        let status = match state {
            ProcState::Cheaped => "cheap".to_owned(),
            ProcState::Paused => "pause".to_owned(),
            ProcState::Respawning => "respawning".to_owned(),
            ProcState::Vacant => "vacant".to_owned(),
            ProcState::Stopped => "stopped".to_owned(),
            ProcState::Running => match current_signal {
                Some(n) => format!("sig{n}"),
                None => "idle".to_owned(),
            },
        };
        let stalled = self.observe_progress(s, Instant::now());
        let p = &mut self.procs[s];
        // A forked child's pid, or an attached process's.
        let pid = p
            .pid
            .map(|pid| pid.as_raw() as u32)
            .or(p.attached.map(|j| j.pid))
            .filter(|&pid| pid != 0);
        let (rss, vsz) = pid.map_or((0, 0), |pid| memory(pid as i32, page));
        let handled = st.handled.load(Relaxed);
        let busy_us = st.busy_ns.load(Relaxed) / 1000;
        let delta = handled.saturating_sub(p.last_requests);
        p.last_requests = handled;
        let handled_by_num = st.handled_by_num();
        let last = st.last_received.load(Relaxed);
        ProcStats {
            id: p.id.id,
            pid: pid.unwrap_or(0),
            accepting: u32::from(state == ProcState::Running),
            requests: handled,
            delta_requests: delta,
            exceptions: st.panics.load(Relaxed) + st.exceptions.load(Relaxed),
            harakiri_count: p.timeouts,
            signals: handled,
            signal_queue: self.d.load(s) as u64,
            status,
            rss,
            vsz,
            running_time: busy_us,
            last_spawn: p.spawned_unix,
            respawn_count: st.respawns.load(Relaxed),
            avg_rt: busy_us.checked_div(handled).unwrap_or(0),
            cores: vec![CoreStats {
                requests: handled,
                in_request: u32::from(current_signal.is_some()),
                ..CoreStats::default()
            }],
            role: p.id.role.to_string(),
            state: serde_json::to_value(state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            current_signal,
            current_ms,
            last_signal: (last != 0).then(|| (last - 1) as u8),
            raised: st.raised.load(Relaxed),
            handled_by_num,
            tally: self.d.tally(s),
            stalled_ms: stalled.map_or(0, |d| d.as_millis() as u64),
            stalls: p.stalls,
            ..ProcStats::default()
        }
    }
}

/// Resident and virtual memory of a process, in bytes, from /proc.
fn memory(pid: i32, page: u64) -> (u64, u64) {
    let Ok(statm) = std::fs::read_to_string(format!("/proc/{pid}/statm")) else {
        return (0, 0);
    };
    let mut f = statm
        .split_whitespace()
        .map(|v| v.parse::<u64>().unwrap_or(0));
    let vsz = f.next().unwrap_or(0) * page;
    let rss = f.next().unwrap_or(0) * page;
    (rss, vsz)
}
