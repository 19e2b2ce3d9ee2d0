//! Attached processes in the loop: a finished hello takes a free attach
//! slot and becomes that slot's channel; a process that leaves frees its
//! slot, its pool deliveries go to other members, and what was addressed to
//! the slot waits for the next process there until the hold runs out.
//!
//! An attached process is never signalled or killed by flare (it belongs
//! to the server that started it): no harakiri, no stall kill, no SIGTERM
//! at shutdown; its channel is closed instead.

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use super::super::attach::Pending;
use super::super::conn::Conn;
use super::token::{Channel, Endpoint};
use super::{DELIVERY_PIPE, Engine, Phase};
use crate::error::{Error, Result};
use crate::proto::attach::{Answer, Attached, Hello, Setup, VERSION};
use crate::sys::{self, Duplex};
use crate::topology::Slot;

/// Most reply bytes a frames-only client may leave unread before it is
/// closed (it sends requests and never reads the answers).
const MAX_UNREAD_REPLIES: usize = 256 * 1024;

/// The process in an attach slot.
#[derive(Clone, Copy, Debug)]
pub(super) struct Joined {
    /// Its pid (from `SO_PEERCRED`).
    pub(super) pid: u32,
    /// It speaks frames on the socket itself and acks every delivery (any
    /// language); otherwise it took the channel pipes and the shared
    /// memory, as a forked worker has them.
    pub(super) frames_only: bool,
}

impl Engine {
    /// Takes new connections' hellos and lets the finished ones join.
    pub(super) fn serve_attach(&mut self) {
        let Some(mut a) = self.attach.take() else {
            return;
        };
        let now = Instant::now();
        a.sweep(self.poll.registry(), now);
        for (p, hello, rest) in a.hellos(self.poll.registry(), now) {
            if let Err(why) = self.join(p, &hello, &rest, &mut a, now) {
                tracing::warn!("attach socket: {}", why.report());
            }
        }
        let counts = a.take_counts();
        let c = &mut self.d.counters;
        c.attach_refused += counts.refused + counts.edge.refused;
        c.attach_timed_out += counts.edge.timed_out + counts.edge.evicted;
        self.attach = Some(a);
    }

    /// Gives the process behind `p` a free attach slot.
    fn join(
        &mut self,
        p: Pending,
        hello: &Hello,
        rest: &[u8],
        a: &mut super::super::attach::Attach,
        now: Instant,
    ) -> Result<()> {
        if self.phase != Phase::Running {
            a.refuse(p, "the group is shutting down", now);
            return Ok(());
        }
        if hello.fds && !rest.is_empty() {
            a.refuse(
                p,
                "bytes after a descriptor-taking hello: its channel is the pipes passed in the \
                 answer, not this socket",
                now,
            );
            return Ok(());
        }
        let free = self.topo.attach_slots().find(|&s| {
            let q = &self.procs[s];
            q.attached.is_none() && !q.life.alive()
        });
        let Some(slot) = free else {
            let n = self.topo.attached;
            let why = format!(
                "all {n} attach slots are taken (worker{} to worker{}); raise attach_workers",
                self.topo.attach_slots().start + 1,
                self.topo.attach_slots().end
            );
            a.refuse(p, &why, now);
            return Ok(());
        };
        let id = self.procs[slot].id;
        let (pid, name) = (p.pid, p.name.clone());
        let mut answer = Attached {
            version: VERSION,
            worker: id.id,
            master_pid: self.master_pid,
            setup: None,
        };
        let (conn_a, conn_b) = if hello.fds {
            let (a_master, a_child) = sys::duplex(DELIVERY_PIPE)?;
            let (b_master, b_child) = sys::duplex(0)?;
            let shm_fd = self
                .shm
                .fd()
                .ok_or_else(|| Error::Config("the shared memory has no file".into()))?;
            let mut fds = vec![
                a_child.rx.as_raw_fd(),
                a_child.tx.as_raw_fd(),
                b_child.rx.as_raw_fd(),
                b_child.tx.as_raw_fd(),
                shm_fd.as_raw_fd(),
            ];
            let locks = crate::lock::shared();
            if let Some((file, _)) = locks {
                fds.push(file.as_raw_fd());
            }
            let spool = crate::spool::share();
            if let Some((_, file)) = spool {
                fds.push(file.as_raw_fd());
            }
            answer.setup = Some(Setup {
                slot,
                topology: (*self.topo).clone(),
                busy_poll_ns: self.opts.busy_poll.as_nanos() as u64,
                locks: locks.map_or(0, |(_, n)| n),
                spool: spool.map(|(share, _)| share),
            });
            let bytes = crate::proto::attach::encode_answer(&Answer::Attached(answer));
            let sock = p.into_fd().map_err(|e| Error::io("the attach socket", e))?;
            sys::send_with_fds(&sock, &bytes, &fds)?;
            // Its ends are the process's now; closing ours lets its death
            // show as end-of-file.
            drop((a_child, b_child, sock));
            (
                Conn::new(a_master).map_err(|e| Error::io("channel setup", e))?,
                Some(Conn::new(b_master).map_err(|e| Error::io("channel setup", e))?),
            )
        } else {
            let sock = p
                .answer(&Answer::Attached(answer))
                .map_err(|e| Error::io("answering a hello", e))?;
            let tx = sock
                .try_clone()
                .map_err(|e| Error::io("channel setup", e))?;
            let mut conn =
                Conn::new(Duplex { rx: sock, tx }).map_err(|e| Error::io("channel setup", e))?;
            // Frames it sent without waiting for the answer come first.
            conn.decoder.preload(rest);
            (conn, None)
        };
        let reg = self.poll.registry();
        let mut conn_a = conn_a;
        let mut conn_b = conn_b;
        conn_a
            .register(reg, Endpoint::Child(slot, Channel::Dispatcher).token())
            .map_err(|e| Error::io("watching an attached process", e))?;
        if let Some(b) = conn_b.as_mut() {
            b.register(reg, Endpoint::Child(slot, Channel::Threads).token())
                .map_err(|e| Error::io("watching an attached process", e))?;
        }
        let frames_only = !hello.fds;
        let q = &mut self.procs[slot];
        q.a = Some(conn_a);
        q.b = conn_b;
        q.b_paused = false;
        q.attached = Some(Joined { pid, frames_only });
        q.left_at = None;
        q.last_pid = pid;
        q.spawned_at = now;
        q.spawned_unix = super::super::sources::unix_now() as u64;
        let st = self.shm.slot(slot);
        st.pid.store(pid, Relaxed);
        st.current.store(0, Relaxed);
        st.user_harakiri_ns.store(0, Relaxed);
        self.d.counters.attached += 1;
        let how = if frames_only {
            "frames on the socket"
        } else {
            "channel pipes"
        };
        tracing::info!("{id} attached: {name} ({how})");
        Ok(())
    }

    /// The attached process in `slot` registered its handlers and said
    /// `Ready`: it is a running member from now on (what waited for the
    /// slot goes out, pools may pick it).
    pub(super) fn attached_ready(&mut self, slot: Slot) {
        let p = &mut self.procs[slot];
        if p.attached.is_none() || p.life.alive() {
            return;
        }
        p.life.spawned();
        let id = p.id;
        self.refresh_state(slot);
        self.d.mark_dirty(slot);
        self.d.member_added();
        tracing::debug!("{id} ready: {} deliveries waiting", self.d.load(slot));
    }

    /// The process in attach slot `slot` left (its channel closed): its
    /// pool deliveries go to other members, the rest waits for the next
    /// process in the slot.
    pub(super) fn detach(&mut self, slot: Slot, why: &str) {
        let Some(j) = self.procs[slot].attached.take() else {
            return;
        };
        self.drop_conns(slot);
        let now = Instant::now();
        let p = &mut self.procs[slot];
        let _ = p.life.exited();
        p.left_at = Some(now);
        let id = p.id;
        self.vacate_member(slot);
        self.d.counters.detached += 1;
        if self.phase == Phase::Running {
            self.refresh_state(slot);
            let waiting = self.d.load(slot);
            tracing::info!(
                "{id} (pid {}) left: {why}; {waiting} deliveries for {id} wait up to {} s for \
                 the next process in the slot",
                j.pid,
                self.opts.attach_hold.as_secs()
            );
        } else {
            self.procs[slot].life.vacate();
            self.refresh_state(slot);
        }
    }

    /// Whether slot `slot` holds an attached process that speaks frames
    /// only (the master keeps its done count from its acks).
    pub(super) fn frames_only(&self, slot: Slot) -> bool {
        self.procs[slot].attached.is_some_and(|j| j.frames_only)
    }

    /// A frames-only process acked up to `seq`: its done count and handled
    /// counter, which it cannot write itself.
    pub(super) fn frames_only_ack(&mut self, slot: Slot, seq: u64) {
        let before = self.d.inflight(slot);
        self.d.ack(slot, seq);
        let handled = before - self.d.inflight(slot);
        let st = self.shm.slot(slot);
        st.done_seq.fetch_max(seq, Relaxed);
        st.handled.fetch_add(handled as u64, Relaxed);
    }

    /// Whether a frames-only process leaves its replies unread past the
    /// bound (then it is closed).
    pub(super) fn replies_unread(&self, slot: Slot) -> bool {
        self.frames_only(slot)
            && self.procs[slot]
                .a
                .as_ref()
                .is_some_and(|c| c.unsent() > MAX_UNREAD_REPLIES)
    }

    /// Vacates the attach slots whose hold ran out with nobody back:
    /// what waited for them is dead-lettered.
    pub(super) fn expire_holds(&mut self, now: Instant) {
        for s in self.topo.attach_slots() {
            let p = &self.procs[s];
            let Some(left) = p.left_at else { continue };
            if p.attached.is_some() || now < left + self.opts.attach_hold {
                continue;
            }
            self.procs[s].left_at = None;
            self.procs[s].life.vacate();
            self.refresh_state(s);
            let n = self.d.dead_letter_slot(s);
            let id = self.procs[s].id;
            if n > 0 {
                tracing::error!(
                    "{id}: no process attached within {} s of the last one leaving: {n} \
                     deliveries for {id} dead-lettered",
                    self.opts.attach_hold.as_secs()
                );
            } else {
                tracing::info!("{id}: attach slot vacant");
            }
            // Pool signals only the departed ran wait for nobody now.
            for (num, n) in self.d.dead_letter_stranded() {
                tracing::error!(
                    "signal {num}: {n} pooled deliveries dead-lettered: every process that ran \
                     it has left"
                );
            }
        }
    }

    /// When the next hold runs out.
    pub(super) fn next_hold_expiry(&self) -> Option<Instant> {
        self.topo
            .attach_slots()
            .filter_map(|s| {
                let p = &self.procs[s];
                p.left_at
                    .filter(|_| p.attached.is_none())
                    .map(|t| t + self.opts.attach_hold)
            })
            .min()
    }

    /// At shutdown: attached processes are not flare's to signal; their
    /// channels are closed and their slots emptied.
    pub(super) fn detach_all(&mut self, why: &str) {
        for s in self.topo.attach_slots() {
            if self.procs[s].attached.is_some() {
                self.detach(s, why);
            }
        }
    }
}
