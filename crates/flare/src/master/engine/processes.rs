//! The children's lives carried out: fork, reap, respawn with backoff,
//! kill on a broken protocol, a harakiri or a stall (the rules are in
//! [`super::supervisor`]), and requeue what a dead child held.

use std::cmp::Reverse;
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::super::conn::Conn;
use super::super::harakiri::overdue;
use super::deliveries::LastWords;
use super::supervisor::{After, Verdict, backoff, verdict};
use super::token::{Channel, Endpoint};
use super::{DELIVERY_PIPE, Engine, Phase, WATCH_TICK};
use crate::child::{ChildSetup, Install, child_main};
use crate::error::{Error, Result};
use crate::sys::{self, Forked};
use crate::topology::{ProcState, Slot};

impl Engine {
    /// Derives a child's state from its flags, for the router and for
    /// shared memory: the one place that decides it.
    pub(super) fn refresh_state(&mut self, s: Slot) {
        let state = self.procs[s].life.state(self.phase != Phase::Running);
        self.d.set_state(s, state);
        self.shm.slot(s).set_state(state);
    }

    /// Descriptors a new child must close.
    pub(super) fn master_fds(&self) -> Vec<RawFd> {
        let mut fds = vec![self.poll.as_raw_fd(), self.sigfd.as_raw_fd()];
        for p in &self.procs {
            fds.extend(p.a.iter().chain(&p.b).flat_map(Conn::raw_fds));
        }
        if let Some(r) = &self.remote {
            fds.extend(r.fds());
        }
        if let Some(a) = &self.admin {
            fds.extend(a.fds());
        }
        if let Some(a) = &self.attach {
            fds.extend(a.fds());
        }
        fds.extend(self.shm.fd().map(AsRawFd::as_raw_fd));
        fds.extend(self.sources.fd());
        fds
    }

    pub(super) fn spawn(&mut self, slot: Slot) -> Result<()> {
        // Deliveries get a large pipe (fewer, larger writes in a burst);
        // the other directions keep the default 64 KiB, which is also what
        // a flooding sender may have in flight before send() waits.
        let (a_master, a_child) = sys::duplex(DELIVERY_PIPE)?;
        let (b_master, b_child) = sys::duplex(0)?;
        let mut inherited = self.master_fds();
        for d in [&a_master, &b_master] {
            inherited.extend([d.rx.as_raw_fd(), d.tx.as_raw_fd()]);
        }
        let id = self.procs[slot].id;
        // What is buffered now would be written twice: by us and the child.
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        let hooks = self.entries.fork_hooks;
        if let Some(h) = hooks {
            (h.before)();
        }
        // A new process starts without its predecessor's time limit.
        self.shm.slot(slot).user_harakiri_ns.store(0, Relaxed);
        let forked = sys::fork();
        if let (Some(h), false) = (hooks, matches!(forked, Ok(Forked::Child))) {
            (h.parent)();
        }
        match forked? {
            Forked::Child => child_main(ChildSetup {
                member: Install {
                    me: id,
                    slot,
                    topo: self.topo.clone(),
                    shm: self.shm,
                    chan_a: a_child,
                    chan_b: b_child,
                    busy_poll: self.opts.busy_poll,
                    attached: false,
                    master_pid: self.master_pid,
                },
                inherited,
                entry: self.entries.for_role(id.role),
                // Runs inside child_main, where a panic stops.
                hook: hooks.map(|h| h.child),
                master_pid: self.master_pid,
            }),
            Forked::Parent(pid) => {
                drop((a_child, b_child));
                let mut a = Conn::new(a_master).map_err(|e| Error::io("channel setup", e))?;
                let mut b = Conn::new(b_master).map_err(|e| Error::io("channel setup", e))?;
                let reg = self.poll.registry();
                a.register(reg, Endpoint::Child(slot, Channel::Dispatcher).token())
                    .and_then(|()| b.register(reg, Endpoint::Child(slot, Channel::Threads).token()))
                    .map_err(|e| Error::io("watching a child channel", e))?;
                let p = &mut self.procs[slot];
                p.a = Some(a);
                p.b = Some(b);
                p.pid = Some(pid);
                p.last_pid = pid.as_raw() as u32;
                p.spawned_at = Instant::now();
                p.b_paused = false;
                p.life.spawned();
                p.spawned_unix = super::super::sources::unix_now() as u64;
                self.shm.slot(slot).pid.store(pid.as_raw() as u32, Relaxed);
                self.refresh_state(slot);
                self.d.mark_dirty(slot);
                tracing::debug!("{id} started (pid {pid})");
                Ok(())
            }
        }
    }

    pub(super) fn drop_conns(&mut self, slot: Slot) {
        let p = &mut self.procs[slot];
        for mut c in [p.a.take(), p.b.take()].into_iter().flatten() {
            c.deregister(self.poll.registry());
        }
    }

    pub(super) fn kill_doomed(&mut self) {
        // An attached process is not killed: its channel is closed.
        for s in self.topo.attach_slots() {
            if self.procs[s].life.doomed() && self.procs[s].attached.is_some() {
                self.detach(s, "it broke the channel protocol");
            }
        }
        for p in &mut self.procs {
            if p.life.doomed() {
                if let Some(pid) = p.pid {
                    let _ = kill(pid, Signal::SIGKILL);
                }
                p.life.kill();
                // Reading stops with the channel; reaping does the rest.
                for mut c in [p.a.take(), p.b.take()].into_iter().flatten() {
                    c.deregister(self.poll.registry());
                }
            }
        }
    }

    pub(super) fn on_signals(&mut self) {
        loop {
            match self.sigfd.read_signal() {
                Ok(Some(info)) => match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGCHLD) => self.reap(),
                    Ok(s @ (Signal::SIGTERM | Signal::SIGINT)) => {
                        self.begin_shutdown(&format!("{s}"));
                    }
                    Ok(Signal::SIGHUP) => {
                        let r = self.start_reload();
                        tracing::info!("SIGHUP: {}", r.unwrap_or_else(|e| e));
                    }
                    Ok(s) => tracing::info!("master: {s} ignored"),
                    Err(_) => {}
                },
                Ok(None) => return,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!("master: reading signals failed: {e}");
                    return;
                }
            }
        }
    }

    pub(super) fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => {
                    let how = match crate::child::exit_meaning(code) {
                        Some(why) => format!("exited with status {code} ({why})"),
                        None => format!("exited with status {code}"),
                    };
                    self.on_exit(pid, &how);
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    self.on_exit(pid, &format!("killed by {sig}"));
                }
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!("master: waitpid failed: {e}");
                    return;
                }
            }
        }
    }

    pub(super) fn on_exit(&mut self, pid: Pid, how: &str) {
        let Some(slot) = self.procs.iter().position(|p| p.pid == Some(pid)) else {
            // Not a child's death: a process a child left behind (the
            // master is a subreaper) that ended.
            tracing::debug!("process {pid}, left behind by a child, {how}");
            return;
        };
        self.drop_conns(slot);
        self.procs[slot].pid = None;
        self.fleet_bridge_gone(slot);
        let now = Instant::now();
        let p = &mut self.procs[slot];
        let after = p.life.exited();
        let lived = now.duration_since(p.spawned_at);
        let id = p.id;
        self.vacate_member(slot);
        if self.phase != Phase::Running {
            tracing::debug!("{id} (pid {pid}) {how}");
            self.refresh_state(slot);
            return;
        }
        if after == After::Cheap {
            tracing::info!("{id} (pid {pid}) {how}: cheaped, not respawned");
            self.refresh_state(slot);
            return;
        }
        let p = &mut self.procs[slot];
        if after == After::Reload {
            tracing::info!("{id} (pid {pid}) {how}: reloading it now");
            self.shm.slot(slot).respawns.fetch_add(1, Relaxed);
            self.refresh_state(slot);
            self.respawns.push(Reverse((now, slot)));
            return;
        }
        p.quick_deaths = if lived < self.opts.min_lifetime {
            p.quick_deaths + 1
        } else {
            0
        };
        let delay = backoff(p.quick_deaths, self.opts.max_backoff);
        tracing::warn!(
            "{id} (pid {pid}) {how} after {:.1}s; respawning in {}ms",
            lived.as_secs_f64(),
            delay.as_millis()
        );
        self.shm.slot(slot).respawns.fetch_add(1, Relaxed);
        self.refresh_state(slot);
        self.respawns.push(Reverse((now + delay, slot)));
    }

    /// A slot's process is gone (dead, or an attached one left): what it
    /// held goes again (`requeue`), and its registrations and sources go
    /// with it.
    pub(super) fn vacate_member(&mut self, slot: Slot) {
        self.shm.slot(slot).pid.store(0, Relaxed);
        if matches!(self.phase, Phase::Running | Phase::Draining { .. }) {
            self.requeue(slot);
        }
        for num in self.d.table.release_child(slot) {
            self.mirror(num);
        }
        self.sources.release(slot);
    }

    /// After a death: what its shared-memory slot says it finished and was
    /// running decides what goes again (`Deliveries::requeue`).
    pub(super) fn requeue(&mut self, slot: Slot) {
        let st = self.shm.slot(slot);
        let running = st.current.swap(0, std::sync::atomic::Ordering::AcqRel) != 0;
        let running_seq = st.current_seq.load(Relaxed);
        let done = st.done_seq.load(std::sync::atomic::Ordering::Acquire);
        self.d.requeue(
            slot,
            LastWords {
                running: running.then_some(running_seq),
                done,
            },
        );
    }

    /// Every [`WATCH_TICK`]: kills children whose current handler has run
    /// past their role's harakiri limit, and children that made no
    /// progress for their role's stall limit while work waited for them.
    pub(super) fn watch(&mut self) {
        let now = Instant::now();
        if now < self.last_watch + WATCH_TICK {
            return;
        }
        self.last_watch = now;
        let now_ns = crate::shm::monotonic_ns();
        for s in 0..self.procs.len() {
            let stalled = self.observe_progress(s, now);
            let p = &mut self.procs[s];
            let Some(pid) = p.pid else { continue };
            if p.life.killed() {
                continue;
            }
            let role = p.id.role;
            let overdue = overdue(self.shm.slot(s), self.opts.harakiri.for_role(role), now_ns);
            let Some(found) = verdict(overdue, stalled, self.opts.stall.for_role(role)) else {
                self.stack_dumps.reset(s);
                continue;
            };
            if let Verdict::Harakiri(why) = found {
                // With a stack dump signal, that goes first and the kill a
                // grace period later.
                if !self.stack_dumps.kill_now(s, pid, now) {
                    tracing::warn!(
                        "{} (pid {pid}): {why}: asked for its stack before the kill",
                        p.id
                    );
                    continue;
                }
                self.stack_dumps.reset(s);
            }
            // SIGKILL: it also ends a process stopped with SIGSTOP.
            let _ = kill(pid, Signal::SIGKILL);
            p.life.kill();
            match found {
                Verdict::Harakiri(why) => {
                    p.timeouts += 1;
                    self.d.counters.timeouts += 1;
                    tracing::error!(
                        "{} (pid {pid}): {why}: killed (harakiri); it will be respawned and what \
                         it was handling given again",
                        p.id
                    );
                }
                Verdict::Stalled { stalled, limit } => {
                    p.stalls += 1;
                    self.d.counters.stalls += 1;
                    tracing::error!(
                        "{} (pid {pid}): no progress for {} ms with {} deliveries waiting, past \
                         the {} ms stall limit: killed; its queue goes to its successor",
                        p.id,
                        stalled.as_millis(),
                        self.d.load(s),
                        limit.as_millis()
                    );
                }
            }
        }
    }

    /// How long slot `s` has made no progress while work waits for it
    /// (`None` when nothing waits, it is not running, or it moved since
    /// the last look). Work waits when it holds deliveries other than the
    /// one whose handler runs now; progress is its done count moving.
    pub(super) fn observe_progress(&mut self, s: Slot, now: Instant) -> Option<Duration> {
        let st = self.shm.slot(s);
        let done = st.done_seq.load(std::sync::atomic::Ordering::Acquire);
        let running = st.current.load(Relaxed) != 0;
        let state = self.d.state(s);
        let p = &mut self.procs[s];
        let waiting = self.d.load(s).saturating_sub(usize::from(running));
        if p.pid.is_none() || state != ProcState::Running || waiting == 0 || done != p.progress.0 {
            p.progress = (done, now);
            return None;
        }
        Some(now.duration_since(p.progress.1))
    }

    pub(super) fn fire_respawns(&mut self) {
        let now = Instant::now();
        while let Some(&Reverse((t, slot))) = self.respawns.peek() {
            if t > now {
                break;
            }
            self.respawns.pop();
            let life = self.procs[slot].life;
            if self.phase != Phase::Running || life.alive() || life.cheaped() {
                continue;
            }
            if let Err(e) = self.spawn(slot) {
                let delay = self.opts.max_backoff;
                tracing::error!(
                    "{}: respawn failed: {e}; trying again in {}ms",
                    self.procs[slot].id,
                    delay.as_millis()
                );
                self.respawns.push(Reverse((now + delay, slot)));
            }
        }
    }
}
