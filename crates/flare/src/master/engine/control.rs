//! The control endpoint's commands, carried out: raise, pause and resume,
//! cheap and uncheap, and the rolling reload (also on SIGHUP).

use std::time::Instant;

use nix::sys::signal::{Signal, kill};

use super::super::admin::Kind;
use super::supervisor::{Stop, StopStep, Uncheap};
use super::{Engine, Phase};
use crate::control::{Command, USAGE};
use crate::origin::Origin;
use crate::topology::{ProcId, Role, Slot};

impl Engine {
    pub(super) fn accept_admin(&mut self, kind: Kind) {
        let Some(mut admin) = self.admin.take() else {
            return;
        };
        admin.accept(kind, Instant::now(), &mut |k| self.admin_doc(k));
        admin.take_counts().add_admin(&mut self.d.counters);
        self.admin = Some(admin);
    }

    /// Serves the stats and control connections (the endpoint's limits
    /// are in `admin`); the commands are carried out here.
    pub(super) fn serve_admin(&mut self) {
        let Some(mut admin) = self.admin.take() else {
            return;
        };
        {
            // Both callbacks need the engine; they are never called at once.
            let engine = std::cell::RefCell::new(&mut *self);
            admin.serve(
                Instant::now(),
                &mut |k| engine.borrow_mut().admin_doc(k),
                &mut |line| engine.borrow_mut().control(line),
            );
        }
        admin.take_counts().add_admin(&mut self.d.counters);
        self.admin = Some(admin);
    }

    /// The stats document, as sent to a stats client (JSON) or a metrics
    /// scraper (the Prometheus text format).
    fn admin_doc(&mut self, kind: Kind) -> Vec<u8> {
        let doc = self.stats_doc();
        match kind {
            Kind::Metrics => crate::metrics::render(&doc).into_bytes(),
            Kind::Stats | Kind::Control => serde_json::to_vec(&doc).unwrap_or_default(),
        }
    }

    /// Carries out one control line; the answer starts with `ok` or
    /// `error:`.
    pub(super) fn control(&mut self, line: &str) -> String {
        let cmd = match Command::parse(line) {
            Ok(c) => c,
            Err(e) => return format!("error: {e}"),
        };
        let done = match cmd {
            Command::Raise(num) => {
                let out = self.raise(num, Origin::Control, None);
                if out.accepted {
                    Ok(format!("raised signal {num}"))
                } else {
                    Err(format!(
                        "signal {num} reached nobody or was dropped (see the logs and stats)"
                    ))
                }
            }
            Command::Pause(p) => self.pause(p, true),
            Command::Resume(p) => self.pause(p, false),
            Command::Cheap(p) => self.cheap(p),
            Command::Uncheap(p) => self.uncheap(p),
            Command::Reload => self.start_reload(),
            Command::Stats => serde_json::to_string(&self.stats_doc()).map_err(|e| e.to_string()),
            Command::Help => Ok(format!("commands: {USAGE}")),
        };
        match done {
            Ok(msg) => {
                if !matches!(cmd, Command::Stats | Command::Help) {
                    tracing::info!("control: {cmd}: {msg}");
                }
                format!("ok {msg}")
            }
            Err(e) => format!("error: {e}"),
        }
    }

    /// The slot of a worker named in a command.
    fn worker_slot(&self, p: ProcId) -> Result<Slot, String> {
        match (p.role, self.topo.slot_of(p)) {
            (Role::Worker, Some(s)) => Ok(s),
            _ => Err(format!(
                "there is no {p}: this master has workers 1..={}",
                self.topo.workers
            )),
        }
    }

    fn pause(&mut self, p: ProcId, pause: bool) -> Result<String, String> {
        let s = self.worker_slot(p)?;
        let Ok(was) = self.procs[s].life.pause(pause) else {
            return Err(format!("{p} is cheaped; uncheap it first"));
        };
        self.refresh_state(s);
        self.d.mark_dirty(s);
        Ok(match (was, pause) {
            (false, true) => format!("{p} paused"),
            (true, false) => format!("{p} resumed"),
            (_, true) => format!("{p} was already paused"),
            (_, false) => format!("{p} was not paused"),
        })
    }

    fn cheap(&mut self, p: ProcId) -> Result<String, String> {
        let s = self.worker_slot(p)?;
        if self.topo.is_attach_slot(s) {
            return Err(format!(
                "{p} is an attach slot: flare does not stop processes it did not start;                  pause it, or stop it through the server that started it"
            ));
        }
        if self.procs[s].life.cheaped() {
            return Ok(format!("{p} was already cheaped"));
        }
        if self.reload_queue.contains(&s) || self.procs[s].life.cheap(Instant::now()).is_err() {
            return Err(format!(
                "{p} is being reloaded; try again when the reload is done"
            ));
        }
        self.refresh_state(s);
        Ok(format!(
            "{p} cheaped: it handles what it holds, then stops (not respawned)"
        ))
    }

    fn uncheap(&mut self, p: ProcId) -> Result<String, String> {
        let s = self.worker_slot(p)?;
        if self.topo.is_attach_slot(s) {
            return Ok(format!("{p} is an attach slot: it is never cheaped"));
        }
        match self.procs[s].life.uncheap() {
            Uncheap::NotCheaped => Ok(format!("{p} was not cheaped")),
            Uncheap::Kept => {
                // Still finishing before it stopped: keep it.
                self.refresh_state(s);
                Ok(format!("{p} uncheaped (it had not stopped yet)"))
            }
            Uncheap::Start => {
                self.refresh_state(s);
                self.respawns.push(std::cmp::Reverse((Instant::now(), s)));
                Ok(format!("{p} uncheaped: starting it"))
            }
        }
    }

    /// Restarts every running child, one at a time (SIGHUP, `reload`).
    pub(super) fn start_reload(&mut self) -> Result<String, String> {
        if self.phase != Phase::Running {
            return Err("the master is shutting down".into());
        }
        if let Some(s) = self.reload_current {
            return Err(format!(
                "a reload is under way ({} now, {} to go)",
                self.procs[s].id,
                self.reload_queue.len()
            ));
        }
        // Attached processes are not flare's to restart.
        self.reload_queue = (0..self.procs.len())
            .filter(|&s| self.procs[s].life.running() && !self.topo.is_attach_slot(s))
            .collect();
        let n = self.reload_queue.len();
        self.notify
            .reloading(&format!("reloading {n} processes, one at a time"));
        self.next_reload();
        Ok(format!("reloading {n} processes, one at a time"))
    }

    fn next_reload(&mut self) {
        self.reload_current = None;
        while let Some(s) = self.reload_queue.pop_front() {
            // Paused for the router: it gets nothing new, finishes what it
            // has, then is stopped and forked again; signals sent to it by
            // name wait for its successor.
            if !self.procs[s].life.reload(Instant::now()) {
                continue;
            }
            self.reload_current = Some(s);
            self.refresh_state(s);
            return;
        }
        self.notify.reloaded("reload done");
    }

    /// Moves cheaping and reloading along: a child that has handled what it
    /// was given gets SIGTERM; one that does not stop in time, SIGKILL.
    pub(super) fn advance_control(&mut self) {
        let now = Instant::now();
        for s in 0..self.procs.len() {
            let d = &self.d;
            let p = &mut self.procs[s];
            let Some(pid) = p.pid else { continue };
            // Cheaped: drain everything; reloading: what it was given (its
            // queue waits for the successor). A child that takes longer
            // than drain_timeout is stopped anyway.
            let idle = |why| match why {
                Stop::Cheap => d.load(s) == 0,
                Stop::Reload => d.inflight(s) == 0,
            };
            match p
                .life
                .stop_step(now, idle, self.opts.drain_timeout, self.opts.kill_timeout)
            {
                Some(StopStep::Term) => {
                    let _ = kill(pid, Signal::SIGTERM);
                }
                Some(StopStep::Kill) => {
                    tracing::warn!("{} did not stop after SIGTERM: SIGKILL", p.id);
                    let _ = kill(pid, Signal::SIGKILL);
                }
                None => {}
            }
        }
        if let Some(s) = self.reload_current {
            let p = &self.procs[s];
            if !p.life.reloading() && p.life.alive() {
                // Its successor runs: on to the next.
                self.next_reload();
            }
        }
    }
}
