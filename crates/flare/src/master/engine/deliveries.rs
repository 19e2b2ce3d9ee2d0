//! The master's delivery state, with no I/O: the signal table, what the
//! router knows of each process, the pools, each slot's outbox and
//! in-flight list with its sequence numbers, the senders waiting on full
//! queues, and every counter.
//!
//! The event loop feeds it (a raise, an ack, a child's done count, a death)
//! and takes from it what to write to whom ([`Deliveries::queues_mut`] for
//! the slots in [`Deliveries::take_dirty`]), which senders to read again
//! ([`Deliveries::wake_senders`]) and which source deliveries left the
//! system ([`Deliveries::take_settled`]). It never polls, forks or reads
//! the clock: the time is passed in. So every delivery rule (requeue after
//! a death, attempts and dead-lettering, pool moves, credit, back-pressure,
//! the accounting identities) is unit-tested here without a process.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::super::Options;
use super::super::conn::DeliveryQueue;
use crate::counters::{Counters, SignalSummary, Tally};
use crate::origin::Origin;
use crate::proto::{Frame, RawFrame};
use crate::ratelog::RateLog;
use crate::router::{self, Decision, ProcView, Unrouted};
use crate::table::{Route, Table};
use crate::target::{Resolved, Target};
use crate::topology::{ProcState, Slot, Topology};

/// Who raised a signal, when the master can make them wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Sender {
    /// A child's other-threads channel.
    Child(Slot),
    /// A remote connection.
    Remote(usize),
}

/// What became of one raised signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Outcome {
    /// Routed, and no delivery of it dropped.
    pub(super) accepted: bool,
    /// A queue it went to is above high water: stop reading the sender.
    pub(super) throttle: bool,
    /// Deliveries queued for it (0 when unrouted or dropped).
    pub(super) queued: u64,
}

impl Outcome {
    /// A raise that was refused before routing (not on an allow-list).
    pub(super) const REFUSED: Outcome = Outcome {
        accepted: false,
        throttle: false,
        queued: 0,
    };
}

/// What a dead child's shared-memory slot said about its progress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct LastWords {
    /// The sequence number whose handler was running, if one was.
    pub(super) running: Option<u64>,
    /// Every delivery up to this sequence number was handled.
    pub(super) done: u64,
}

/// A signal waiting for a pool member.
#[derive(Clone, Copy, Debug)]
struct Pooled {
    origin: Origin,
    attempt: u8,
    /// Given back after the member that had it died: already counted as
    /// delivered.
    again: bool,
}

/// One outcome of one delivery, counted by [`Deliveries::count`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DeliveryEvent {
    Delivered,
    /// A pool delivery given to another member: delivered for that
    /// process, not a new delivery in the totals.
    Reassigned,
    /// A pool delivery taken from a dead member (that member's tally only).
    Moved,
    Handled,
    Dropped,
    Redelivered,
    DeadLettered,
}

/// Raises and deliveries of one signal number.
#[derive(Clone, Copy, Debug, Default)]
struct NumberTally {
    raised: u64,
    unrouted: u64,
    tally: Tally,
}

/// One delivery to one slot, kept as a value until it is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Delivery {
    num: u8,
    attempt: u8,
    origin: Origin,
    /// The slot's sequence number: acks and `done_seq` count in these.
    seq: u64,
    /// Given by a pool (the member acks it so credit comes back).
    pooled: bool,
}

impl Delivery {
    fn encode(&self) -> RawFrame {
        Frame::Deliver {
            num: self.num,
            attempt: self.attempt,
            origin: self.origin,
            seq: self.seq,
            pooled: self.pooled,
        }
        .encode()
    }
}

/// One slot's queues: the delivery channel writes from it
/// ([`DeliveryQueue`]).
#[derive(Default)]
pub(super) struct SlotQueue {
    /// Not (fully) written yet, oldest first.
    outbox: VecDeque<Delivery>,
    /// Bytes of the front of `outbox` already written.
    partial: usize,
    /// Written, not yet acknowledged, oldest first.
    inflight: VecDeque<Delivery>,
    next_seq: u64,
    /// Senders paused because this slot's outbox passed high water.
    waiters: Vec<Sender>,
    /// Deliveries to this slot and what became of them.
    tally: Tally,
}

impl SlotQueue {
    fn load(&self) -> usize {
        self.outbox.len() + self.inflight.len()
    }
}

impl DeliveryQueue for SlotQueue {
    fn unwritten(&self) -> usize {
        self.outbox.len()
    }

    fn partial(&self) -> usize {
        self.partial
    }

    fn set_partial(&mut self, bytes: usize) {
        self.partial = bytes;
    }

    fn encode_front(&self, max: usize, out: &mut Vec<RawFrame>) {
        out.clear();
        out.extend(self.outbox.iter().take(max).map(Delivery::encode));
    }

    fn written(&mut self, n: usize) {
        self.inflight.extend(self.outbox.drain(..n));
    }
}

/// Records `sender` as waiting on a queue; true when it must now wait.
fn wait_on(waiters: &mut Vec<Sender>, sender: Option<Sender>) -> bool {
    let Some(s) = sender else { return false };
    if !waiters.contains(&s) {
        waiters.push(s);
    }
    true
}

/// Whether the senders waiting on a queue of `queued` deliveries are to be
/// read again: some wait, and the queue is down to the low-water mark.
fn wakes(waiters: &[Sender], queued: usize, low: usize) -> bool {
    !waiters.is_empty() && queued <= low
}

/// The delivery state (see the module docs).
pub(super) struct Deliveries {
    /// The signal table: routes, owners, runners.
    pub(super) table: Table,
    topo: Arc<Topology>,
    opts: Options,
    slots: Vec<SlotQueue>,
    /// State and load of each slot, as the router sees them.
    views: Vec<ProcView>,
    /// Pooled signals by number, waiting for a member with credit.
    pools: Vec<VecDeque<Pooled>>,
    pool_cursor: Vec<Slot>,
    pool_waiters: Vec<Vec<Sender>>,
    /// Every outcome counter; the loop adds its own (timeouts, remote).
    pub(super) counters: Counters,
    by_num: Vec<NumberTally>,
    /// Targets of a `workers`-like signal, reused.
    targets: Vec<Slot>,
    /// Pool members able to run a signal, reused.
    candidates: Vec<Slot>,
    /// Credit came back (or a member appeared): pools may move.
    credit_freed: bool,
    dirty: Vec<Slot>,
    is_dirty: Vec<bool>,
    /// Sources whose deliveries left the system since the last look.
    settled: Vec<u32>,
    unrouted_log: RateLog,
    dropped_log: RateLog,
}

impl Deliveries {
    pub(super) fn new(table: Table, topo: Arc<Topology>, opts: Options) -> Deliveries {
        let n = topo.slots();
        Deliveries {
            table,
            opts,
            slots: (0..n)
                .map(|_| SlotQueue {
                    next_seq: 1,
                    ..SlotQueue::default()
                })
                .collect(),
            views: vec![
                ProcView {
                    state: ProcState::Respawning,
                    load: 0,
                };
                n
            ],
            pools: vec![VecDeque::new(); 256],
            pool_cursor: vec![usize::MAX; 256],
            pool_waiters: vec![Vec::new(); 256],
            counters: Counters::default(),
            by_num: vec![NumberTally::default(); 256],
            targets: Vec::new(),
            candidates: Vec::new(),
            credit_freed: false,
            dirty: Vec::new(),
            is_dirty: vec![false; n],
            settled: Vec::new(),
            unrouted_log: RateLog::new(10, Duration::from_secs(1)),
            dropped_log: RateLog::new(10, Duration::from_secs(1)),
            topo,
        }
    }

    // ---- what the loop reads -------------------------------------------

    /// Deliveries queued or unacknowledged for slot `s`.
    pub(super) fn load(&self, s: Slot) -> usize {
        self.views[s].load
    }

    /// Deliveries written to slot `s` and not acknowledged.
    pub(super) fn inflight(&self, s: Slot) -> usize {
        self.slots[s].inflight.len()
    }

    /// The router's view of slot `s`'s state.
    pub(super) fn state(&self, s: Slot) -> ProcState {
        self.views[s].state
    }

    /// Sets slot `s`'s state; a running member may take pool work.
    pub(super) fn set_state(&mut self, s: Slot, state: ProcState) {
        self.views[s].state = state;
        self.credit_freed = true;
    }

    /// Whether senders wait on slot `s`'s queue.
    pub(super) fn has_waiters(&self, s: Slot) -> bool {
        !self.slots[s].waiters.is_empty()
    }

    /// Deliveries queued anywhere: in outboxes, in flight, in pools.
    pub(super) fn queued(&self) -> usize {
        self.views.iter().map(|v| v.load).sum::<usize>()
            + self.pools.iter().map(VecDeque::len).sum::<usize>()
    }

    /// Whether every pooled delivery still waiting is stranded: no member
    /// of its pool that runs the signal is running (during a drain nobody
    /// new comes, so they cannot block it; they count as pending at exit).
    pub(super) fn pools_drained(&mut self) -> bool {
        (0..=255u8).all(|num| self.pools[num as usize].is_empty() || self.stranded(num))
    }

    /// Whether nobody can take pool `num`'s deliveries now: no member runs
    /// the signal, or none of those is running.
    fn stranded(&mut self, num: u8) -> bool {
        router::pool_candidates(self.table.route(num), &self.topo, &mut self.candidates);
        !self
            .candidates
            .iter()
            .any(|&s| self.views[s].state == ProcState::Running)
    }

    /// Dead-letters the pooled deliveries that nobody can ever take: every
    /// member of their pool that ran the signal has left (empty attach
    /// slots past their hold, cheaped or stopped members). Returns how
    /// many, per signal number, for the caller's log line.
    pub(super) fn dead_letter_stranded(&mut self) -> Vec<(u8, usize)> {
        let mut gone = Vec::new();
        for num in 0..=255u8 {
            let n = num as usize;
            if self.pools[n].is_empty() {
                continue;
            }
            router::pool_candidates(self.table.route(num), &self.topo, &mut self.candidates);
            let can_come_back = self.candidates.iter().any(|&s| {
                !matches!(
                    self.views[s].state,
                    ProcState::Vacant | ProcState::Cheaped | ProcState::Stopped
                )
            });
            if can_come_back {
                continue;
            }
            let items: Vec<Pooled> = self.pools[n].drain(..).collect();
            for item in &items {
                self.count(DeliveryEvent::DeadLettered, num, None);
                self.settle(item.origin);
            }
            gone.push((num, items.len()));
        }
        gone
    }

    /// Slot `s`'s tally.
    pub(super) fn tally(&self, s: Slot) -> Tally {
        self.slots[s].tally
    }

    /// The sequence number of the oldest unacknowledged delivery to `s`.
    pub(super) fn oldest_inflight(&self, s: Slot) -> Option<u64> {
        self.slots[s].inflight.front().map(|d| d.seq)
    }

    /// Slot `s`'s queue, for writing: what a write takes from the outbox
    /// moves to in flight (the load is the same).
    pub(super) fn queue_mut(&mut self, s: Slot) -> &mut SlotQueue {
        &mut self.slots[s]
    }

    /// Marks slot `s` as having something to write.
    pub(super) fn mark_dirty(&mut self, s: Slot) {
        if !self.is_dirty[s] {
            self.is_dirty[s] = true;
            self.dirty.push(s);
        }
    }

    /// The slots with something to write since the last call.
    pub(super) fn take_dirty(&mut self, into: &mut Vec<Slot>) {
        into.clear();
        std::mem::swap(into, &mut self.dirty);
        for &s in into.iter() {
            self.is_dirty[s] = false;
        }
    }

    /// Source ids of deliveries that left the system (handled, dropped,
    /// given up) since the last call, one per delivery.
    pub(super) fn take_settled(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.settled)
    }

    /// Per-number summaries of every number raised or delivered.
    pub(super) fn signal_summaries(&self) -> Vec<SignalSummary> {
        self.by_num
            .iter()
            .enumerate()
            .filter(|(_, b)| b.raised > 0 || b.tally.delivered > 0)
            .map(|(n, b)| SignalSummary {
                num: n as u8,
                raised: b.raised,
                unrouted: b.unrouted,
                tally: b.tally,
            })
            .collect()
    }

    // ---- raising ---------------------------------------------------------

    /// Routes one raised signal. `sender`, when it can be made to wait, is
    /// recorded on any queue the signal pushed past high water.
    pub(super) fn raise(
        &mut self,
        num: u8,
        origin: Origin,
        sender: Option<Sender>,
        now: Instant,
    ) -> Outcome {
        self.raise_via(num, origin, sender, now, None)
    }

    /// Routes a signal to a target named by the raiser instead of the
    /// registered one (a fleet arrival: `fleet:worker2` with 17). The
    /// processes reached are that target's members able to run `num`. A
    /// pool target must be the registered one (pools are kept per number);
    /// an unregistered number goes only to `worker`, the pool uWSGI gives
    /// it. `Err` says why it cannot go there.
    pub(super) fn raise_to(
        &mut self,
        num: u8,
        target: &Target,
        origin: Origin,
        now: Instant,
    ) -> Result<Outcome, String> {
        let resolved = target.resolve(&self.topo).map_err(|e| e.to_string())?;
        let over = match self.table.route(num) {
            Some(r) if r.resolved == resolved => None,
            None if resolved == Resolved::WorkerPool => None,
            None => {
                return Err(format!(
                    "signal {num} is not registered here (an unregistered signal goes to `worker`)"
                ));
            }
            Some(r) if resolved.is_pool() => {
                return Err(format!(
                    "signal {num} is registered here for `{}`; a pool target (`{target}`) must \
                     be the registered one",
                    r.target
                ));
            }
            Some(r) => Some(Route {
                target: target.clone(),
                resolved,
                owner: r.owner,
                runners: r.runners.clone(),
            }),
        };
        Ok(self.raise_via(num, origin, None, now, over.as_ref()))
    }

    fn raise_via(
        &mut self,
        num: u8,
        origin: Origin,
        sender: Option<Sender>,
        now: Instant,
        over: Option<&Route>,
    ) -> Outcome {
        self.counters.raised += 1;
        self.by_num[num as usize].raised += 1;
        let dropped_before = self.counters.dropped;
        let mut throttle = false;
        let mut queued = 0;
        let route = match over {
            Some(r) => Some(r),
            None => self.table.route(num),
        };
        let decision = router::decide(route, &self.topo, &self.views, &mut self.targets);
        match decision {
            Decision::Each => {
                self.counters.routed += 1;
                for i in 0..self.targets.len() {
                    let s = self.targets[i];
                    queued += u64::from(self.enqueue(s, num, origin, 1, false, true, now));
                    if self.slots[s].outbox.len() > self.opts.high_water {
                        throttle |= wait_on(&mut self.slots[s].waiters, sender);
                    }
                }
            }
            Decision::Pool => {
                self.counters.routed += 1;
                let n = num as usize;
                if self.pools[n].len() >= self.opts.outbox_limit {
                    self.drop_one(num, None, "its pool's queue is full", now);
                } else {
                    self.pools[n].push_back(Pooled {
                        origin,
                        attempt: 1,
                        again: false,
                    });
                    queued = 1;
                    self.dispatch_pool(num, now);
                    if self.pools[n].len() > self.opts.high_water {
                        throttle |= wait_on(&mut self.pool_waiters[n], sender);
                    }
                }
            }
            Decision::Unrouted(why) => {
                self.counters.unrouted += 1;
                self.by_num[num as usize].unrouted += 1;
                if let Some(held) = self.unrouted_log.allow(now) {
                    let why = match why {
                        Unrouted::NoProcess => "no process of its target can run it now".into(),
                        Unrouted::Cheaped(s) => format!("{} is cheaped", self.topo.proc_at(s)),
                    };
                    let target = self.target_of(num, "worker");
                    tracing::warn!(
                        num,
                        target = %target,
                        origin = %origin,
                        outcome = "unrouted",
                        "signal {num} (target {target}, raised by {origin}) unrouted: {why}{}",
                        super::suppressed(held)
                    );
                }
                return Outcome {
                    accepted: false,
                    throttle,
                    queued: 0,
                };
            }
        }
        Outcome {
            accepted: self.counters.dropped == dropped_before,
            throttle,
            queued,
        }
    }

    fn target_of(&self, num: u8, unregistered: &str) -> String {
        self.table
            .route(num)
            .map_or(unregistered.into(), |r| r.target.to_string())
    }

    /// Queues one delivery; false when the slot's queue is full and it was
    /// dropped. `fresh` is false for a pool delivery given again, which
    /// was counted as delivered the first time.
    #[allow(clippy::too_many_arguments)]
    fn enqueue(
        &mut self,
        s: Slot,
        num: u8,
        origin: Origin,
        attempt: u8,
        pooled: bool,
        fresh: bool,
        now: Instant,
    ) -> bool {
        let q = &mut self.slots[s];
        if q.outbox.len() >= self.opts.outbox_limit {
            let why = format!(
                "the queue of {} is full ({})",
                self.topo.proc_at(s),
                self.opts.outbox_limit
            );
            self.drop_one(num, Some(s), &why, now);
            return false;
        }
        let seq = q.next_seq;
        q.next_seq += 1;
        q.outbox.push_back(Delivery {
            num,
            attempt,
            origin,
            seq,
            pooled,
        });
        self.views[s].load += 1;
        let what = if fresh {
            DeliveryEvent::Delivered
        } else {
            DeliveryEvent::Reassigned
        };
        self.count(what, num, Some(s));
        self.mark_dirty(s);
        true
    }

    /// A delivery raised by a source left the system (handled, dropped or
    /// given up).
    fn settle(&mut self, origin: Origin) {
        if let Some(id) = origin.source() {
            self.settled.push(id.get());
        }
    }

    /// Counts one delivery outcome everywhere it is counted: the totals,
    /// the signal number's, and the process's.
    fn count(&mut self, what: DeliveryEvent, num: u8, slot: Option<Slot>) {
        use DeliveryEvent as E;
        fn bump(what: DeliveryEvent, t: &mut Tally) {
            match what {
                E::Delivered | E::Reassigned => t.delivered += 1,
                E::Moved => t.moved += 1,
                E::Handled => t.handled += 1,
                E::Dropped => t.dropped += 1,
                E::Redelivered => t.redelivered += 1,
                E::DeadLettered => t.dead_lettered += 1,
            }
        }
        if let Some(s) = slot {
            bump(what, &mut self.slots[s].tally);
        }
        let c = &mut self.counters;
        match what {
            // The same delivery, changing hands.
            E::Reassigned | E::Moved => return,
            E::Delivered => c.delivered += 1,
            E::Handled => c.handled += 1,
            E::Dropped => c.dropped += 1,
            E::Redelivered => c.redelivered += 1,
            E::DeadLettered => c.dead_lettered += 1,
        }
        bump(what, &mut self.by_num[num as usize].tally);
    }

    fn drop_one(&mut self, num: u8, slot: Option<Slot>, why: &str, now: Instant) {
        self.count(DeliveryEvent::Dropped, num, slot);
        if let Some(held) = self.dropped_log.allow(now) {
            tracing::warn!(
                num,
                outcome = "dropped",
                "signal {num} dropped: {why}{}",
                super::suppressed(held)
            );
        }
    }

    // ---- pools -----------------------------------------------------------

    /// Gives queued pool signals of `num` to members with free credit.
    fn dispatch_pool(&mut self, num: u8, now: Instant) {
        let n = num as usize;
        if self.pools[n].is_empty() {
            return;
        }
        router::pool_candidates(self.table.route(num), &self.topo, &mut self.candidates);
        while let Some(&item) = self.pools[n].front() {
            let picked = router::pick(
                &self.candidates,
                &self.views,
                self.opts.prefetch,
                &mut self.pool_cursor[n],
            );
            let Some(s) = picked else { break };
            self.pools[n].pop_front();
            if !self.enqueue(s, num, item.origin, item.attempt, true, !item.again, now) {
                self.settle(item.origin);
            }
        }
    }

    /// When credit came back or a member appeared since the last call:
    /// gives every pool's queued signals to members with credit.
    pub(super) fn dispatch_pools(&mut self, now: Instant) {
        if std::mem::take(&mut self.credit_freed) {
            for num in 0..=255u8 {
                self.dispatch_pool(num, now);
            }
        }
    }

    /// Notes that a pool may have a new member (a registration).
    pub(super) fn member_added(&mut self) {
        self.credit_freed = true;
    }

    // ---- acknowledgements ------------------------------------------------

    /// Slot `s` handled every delivery up to `seq`.
    pub(super) fn ack(&mut self, s: Slot, seq: u64) {
        let mut done = 0;
        while let Some(&d) = self.slots[s].inflight.front() {
            if d.seq > seq {
                break;
            }
            self.slots[s].inflight.pop_front();
            self.settle(d.origin);
            self.count(DeliveryEvent::Handled, d.num, Some(s));
            done += 1;
        }
        if done > 0 {
            self.views[s].load -= done;
            self.credit_freed = true;
        }
    }

    /// Whether the engine has work it can do now, without an event: a
    /// paused sender whose queue is under the low-water mark, or credit
    /// that came back for the pools. Writing a queue out and settling what
    /// children handled (seen in shared memory, with no ack on the
    /// channel) both happen after the turn's wake-up and dispatch; the
    /// loop must not sleep on them, or a sender waits for an event that
    /// never comes.
    pub(super) fn wants_turn(&self) -> bool {
        let low = self.opts.low_water;
        self.credit_freed
            || self
                .slots
                .iter()
                .any(|q| wakes(&q.waiters, q.outbox.len(), low))
            || self
                .pools
                .iter()
                .zip(&self.pool_waiters)
                .any(|(q, w)| wakes(w, q.len(), low))
    }

    /// Senders to read again: their queue is under the low-water mark.
    pub(super) fn wake_senders(&mut self, woken: &mut Vec<Sender>) {
        let low = self.opts.low_water;
        for q in &mut self.slots {
            if wakes(&q.waiters, q.outbox.len(), low) {
                woken.append(&mut q.waiters);
            }
        }
        for (q, w) in self.pools.iter().zip(&mut self.pool_waiters) {
            if wakes(w, q.len(), low) {
                woken.append(w);
            }
        }
    }

    // ---- deaths ----------------------------------------------------------

    /// After a death, what slot `s` had been given but not acknowledged: a
    /// delivery its handler finished is counted as handled (`last.done`);
    /// the one whose handler was running goes again with one more attempt,
    /// and is dead-lettered past `max_attempts`; the ones it never started
    /// go again as they were. They go to the slot's next process, or (pool
    /// signals) back to the front of their pool.
    pub(super) fn requeue(&mut self, s: Slot, last: LastWords) {
        let q = &mut self.slots[s];
        q.partial = 0;
        let inflight = std::mem::take(&mut q.inflight);
        let queued = std::mem::take(&mut q.outbox);
        let mut keep = VecDeque::with_capacity(inflight.len() + queued.len());
        let mut to_pools: Vec<(u8, Pooled)> = Vec::new();
        let sent = inflight.len();
        for (i, d) in inflight.into_iter().chain(queued).enumerate() {
            if i < sent && d.seq <= last.done {
                // Handled, only not acknowledged yet.
                self.count(DeliveryEvent::Handled, d.num, Some(s));
                self.settle(d.origin);
                continue;
            }
            let started = i < sent && last.running == Some(d.seq);
            let attempt = if started {
                d.attempt.saturating_add(1)
            } else {
                d.attempt
            };
            if attempt > self.opts.max_attempts {
                self.count(DeliveryEvent::DeadLettered, d.num, Some(s));
                self.settle(d.origin);
                let target = self.target_of(d.num, "worker (unregistered)");
                let last = self.topo.proc_at(s);
                tracing::error!(
                    num = d.num,
                    target = %target,
                    origin = %d.origin,
                    proc = %last,
                    outcome = "dead_lettered",
                    "signal {} (target {target}, raised by {}) dead-lettered after {} attempts; \
                     last given to {last}",
                    d.num,
                    d.origin,
                    attempt - 1,
                );
                continue;
            }
            if i < sent {
                self.count(DeliveryEvent::Redelivered, d.num, Some(s));
            }
            if d.pooled {
                self.count(DeliveryEvent::Moved, d.num, Some(s));
                to_pools.push((
                    d.num,
                    Pooled {
                        origin: d.origin,
                        attempt,
                        again: true,
                    },
                ));
            } else {
                keep.push_back(Delivery { attempt, ..d });
            }
        }
        for (num, item) in to_pools.into_iter().rev() {
            self.pools[num as usize].push_front(item);
        }
        let q = &mut self.slots[s];
        q.outbox = keep;
        self.views[s].load = q.load();
        // Its pool signals went back to the pools: others may take them.
        self.credit_freed = true;
    }

    /// Dead-letters everything queued for slot `s` (an attach slot whose
    /// hold ran out with nobody back in it); returns how many. Each is
    /// counted; the caller logs one line for all.
    pub(super) fn dead_letter_slot(&mut self, s: Slot) -> usize {
        let q = &mut self.slots[s];
        q.partial = 0;
        let gone: Vec<Delivery> = q.inflight.drain(..).chain(q.outbox.drain(..)).collect();
        self.views[s].load = self.slots[s].load();
        for d in &gone {
            self.count(DeliveryEvent::DeadLettered, d.num, Some(s));
            self.settle(d.origin);
        }
        gone.len()
    }

    // ---- the end ---------------------------------------------------------

    /// Counts what is still queued as pending at exit; returns the totals,
    /// the per-number summaries and each slot's tally.
    pub(super) fn close_books(&mut self) -> (Counters, Vec<SignalSummary>, Vec<Tally>) {
        for s in 0..self.slots.len() {
            let q = &self.slots[s];
            let nums: Vec<u8> = q.inflight.iter().chain(&q.outbox).map(|d| d.num).collect();
            self.slots[s].tally.pending_at_exit = nums.len() as u64;
            for n in nums {
                self.by_num[n as usize].tally.pending_at_exit += 1;
            }
        }
        for (n, q) in self.pools.iter().enumerate() {
            self.by_num[n].tally.pending_at_exit += q.len() as u64;
        }
        let mut counters = self.counters.clone();
        counters.pending_at_exit = self.by_num.iter().map(|b| b.tally.pending_at_exit).sum();
        let tallies = self.slots.iter().map(|q| q.tally).collect();
        (counters, self.signal_summaries(), tallies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::Owner;
    use crate::target::Target;

    /// Slots 0 and 1 are workers 1 and 2, slot 2 is mule 1.
    /// Signal 1: `workers`; 2: `worker` (a pool); 3: `worker1`; 4: `mule1`.
    fn deliveries(opts: Options) -> Deliveries {
        let topo = Arc::new(Topology {
            workers: 2,
            attached: 0,
            mules: 1,
            spoolers: 0,
            farms: Vec::new(),
            bridges: 0,
        });
        let mut table = Table::new(topo.clone());
        for (num, target) in [(1, "workers"), (2, "worker"), (3, "worker1"), (4, "mule1")] {
            let t: Target = target.parse().expect("target");
            table.register(num, &t, Owner::Master).expect("register");
        }
        let mut d = Deliveries::new(table, topo, opts);
        for s in 0..3 {
            d.set_state(s, ProcState::Running);
        }
        d
    }

    fn now() -> Instant {
        Instant::now()
    }

    /// What a write of everything queued for `s` does.
    fn write(d: &mut Deliveries, s: Slot) {
        let q = d.queue_mut(s);
        let n = q.unwritten();
        q.written(n);
    }

    fn frames(d: &Deliveries, s: Slot) -> Vec<(u8, u8, u64)> {
        let q = &d.slots[s];
        q.inflight
            .iter()
            .chain(&q.outbox)
            .map(|d| (d.num, d.attempt, d.seq))
            .collect()
    }

    #[test]
    fn deliveries_are_encoded_only_when_written_and_decode_back() {
        let mut d = deliveries(Options::default());
        let origin = Origin::Timer(crate::SourceId(3));
        d.raise(3, origin, None, now());
        d.raise(3, origin, None, now());
        let mut out = Vec::new();
        d.queue_mut(0).encode_front(8, &mut out);
        let got: Vec<Frame> = out
            .iter()
            .map(|f| Frame::decode(f).expect("frame"))
            .collect();
        let want = |seq| Frame::Deliver {
            num: 3,
            attempt: 1,
            origin,
            seq,
            pooled: false,
        };
        assert_eq!(got, [want(1), want(2)]);
    }

    /// Pool entries already counted as delivered (given back by the dead).
    fn pooled_again(d: &Deliveries) -> u64 {
        d.pools.iter().flatten().filter(|p| p.again).count() as u64
    }

    /// The accounting identities, for the totals and for every slot.
    fn check_books(d: &Deliveries) {
        let c = &d.counters;
        assert_eq!(
            c.raised,
            c.routed + c.unrouted,
            "raised = routed + unrouted"
        );
        let pending = d.slots.iter().map(|q| q.load() as u64).sum::<u64>() + pooled_again(d);
        assert_eq!(
            c.delivered,
            c.handled + c.dead_lettered + pending,
            "delivered = handled + dead-lettered + pending: {c:?}"
        );
        for (s, q) in d.slots.iter().enumerate() {
            let t = q.tally;
            assert_eq!(q.load(), d.views[s].load, "one load per slot");
            assert_eq!(
                t.delivered,
                t.handled + t.dead_lettered + q.load() as u64 + t.moved,
                "slot {s}: {t:?}"
            );
        }
        let by_num: u64 = d.by_num.iter().map(|b| b.raised).sum();
        assert_eq!(by_num, c.raised);
    }

    #[test]
    fn requeue_counts_finished_retries_running_and_keeps_unstarted() {
        let mut d = deliveries(Options::default());
        for _ in 0..3 {
            d.raise(3, Origin::Control, None, now());
        }
        write(&mut d, 0);
        d.raise(3, Origin::Control, None, now());
        assert_eq!(d.load(0), 4);
        d.set_state(0, ProcState::Respawning);
        // Seq 1 done, seq 2 running, seq 3 written but not started, seq 4
        // never written.
        d.requeue(
            0,
            LastWords {
                running: Some(2),
                done: 1,
            },
        );
        assert_eq!(frames(&d, 0), [(3, 2, 2), (3, 1, 3), (3, 1, 4)]);
        assert_eq!(d.counters.handled, 1);
        assert_eq!(d.counters.redelivered, 2, "the written ones");
        assert_eq!(d.inflight(0), 0);
        assert_eq!(d.load(0), 3);
        check_books(&d);
    }

    #[test]
    fn a_delivery_that_keeps_killing_its_process_is_dead_lettered() {
        let mut d = deliveries(Options {
            max_attempts: 2,
            ..Options::default()
        });
        d.raise(3, Origin::Control, None, now());
        d.raise(3, Origin::Control, None, now());
        for attempt in 2..=3u8 {
            write(&mut d, 0);
            d.requeue(
                0,
                LastWords {
                    running: Some(1),
                    done: 0,
                },
            );
            if attempt <= 2 {
                assert_eq!(frames(&d, 0)[0], (3, attempt, 1));
            }
            check_books(&d);
        }
        assert_eq!(d.counters.dead_lettered, 1);
        assert_eq!(frames(&d, 0), [(3, 1, 2)], "the other one goes on");
        check_books(&d);
    }

    #[test]
    fn a_dead_members_pool_signals_move_to_another_member() {
        let mut d = deliveries(Options {
            prefetch: 1,
            ..Options::default()
        });
        d.raise(2, Origin::Control, None, now());
        let first = (0..2).find(|&s| d.load(s) == 1).expect("given to a worker");
        let other = 1 - first;
        write(&mut d, first);
        d.set_state(first, ProcState::Respawning);
        d.requeue(first, LastWords::default());
        assert_eq!(d.load(first), 0);
        assert_eq!(d.slots[first].tally.moved, 1);
        d.dispatch_pools(now());
        assert_eq!(
            frames(&d, other),
            [(2, 1, 1)],
            "same attempt: never started"
        );
        assert_eq!(d.counters.delivered, 1, "one delivery, changing hands");
        assert_eq!(d.slots[other].tally.delivered, 1);
        check_books(&d);
    }

    #[test]
    fn pool_members_get_work_only_with_credit() {
        let mut d = deliveries(Options {
            prefetch: 2,
            ..Options::default()
        });
        for _ in 0..5 {
            assert!(d.raise(2, Origin::Control, None, now()).accepted);
        }
        assert_eq!((d.load(0), d.load(1)), (2, 2));
        assert_eq!(d.pools[2].len(), 1, "waits for credit");
        write(&mut d, 0);
        d.dispatch_pools(now());
        assert_eq!(d.pools[2].len(), 1, "no credit back yet");
        d.ack(0, 1);
        d.dispatch_pools(now());
        assert!(d.pools[2].is_empty());
        assert_eq!(d.load(0), 2);
        check_books(&d);
    }

    #[test]
    fn a_sender_waits_past_high_water_and_is_woken_under_low_water() {
        let mut d = deliveries(Options {
            high_water: 2,
            low_water: 1,
            ..Options::default()
        });
        let sender = Some(Sender::Child(2));
        assert!(!d.raise(3, Origin::Control, sender, now()).throttle);
        assert!(!d.raise(3, Origin::Control, sender, now()).throttle);
        assert!(d.raise(3, Origin::Control, sender, now()).throttle);
        assert!(d.has_waiters(0));
        let mut woken = Vec::new();
        d.wake_senders(&mut woken);
        assert!(woken.is_empty(), "still above low water");
        d.dispatch_pools(now());
        assert!(!d.wants_turn(), "nothing to do before the queue is written");
        write(&mut d, 0);
        // Written out after the turn's wake-up: the loop must not sleep.
        assert!(d.wants_turn());
        d.wake_senders(&mut woken);
        assert_eq!(woken, [Sender::Child(2)]);
        assert!(!d.has_waiters(0));
        check_books(&d);
    }

    #[test]
    fn past_the_outbox_limit_deliveries_are_dropped_and_not_accepted() {
        let mut d = deliveries(Options {
            outbox_limit: 2,
            ..Options::default()
        });
        assert!(d.raise(1, Origin::Control, None, now()).accepted);
        assert!(d.raise(1, Origin::Control, None, now()).accepted);
        let out = d.raise(1, Origin::Control, None, now());
        assert!(!out.accepted);
        assert_eq!(d.counters.dropped, 2, "one per worker");
        assert_eq!(d.counters.delivered, 4);
        check_books(&d);
    }

    #[test]
    fn a_target_named_by_the_raiser_narrows_the_registered_one() {
        let mut d = deliveries(Options::default());
        let t = |s: &str| s.parse::<Target>().unwrap();
        // 1 is registered for `workers`: `worker2` reaches worker 2 only.
        let out = d.raise_to(1, &t("worker2"), Origin::Remote, now()).unwrap();
        assert!(out.accepted && out.queued == 1);
        assert_eq!(frames(&d, 1).len(), 1);
        assert!(frames(&d, 0).is_empty());
        // The registered target itself: the usual path.
        assert_eq!(
            d.raise_to(1, &t("workers"), Origin::Remote, now())
                .unwrap()
                .queued,
            2
        );
        // Registered in the master: every child inherited the handler, so
        // a mule target reaches the mule.
        let out = d.raise_to(1, &t("mule1"), Origin::Remote, now()).unwrap();
        assert!(out.accepted);
        assert_eq!(frames(&d, 2).len(), 1);
        // Pools must be the registered one; unregistered numbers only `worker`.
        let e = d
            .raise_to(1, &t("worker"), Origin::Remote, now())
            .unwrap_err();
        assert!(e.contains("registered here for `workers`"), "{e}");
        assert!(d.raise_to(9, &t("workers"), Origin::Remote, now()).is_err());
        assert!(
            d.raise_to(9, &t("worker"), Origin::Remote, now())
                .unwrap()
                .accepted
        );
        assert!(
            d.raise_to(2, &t("worker"), Origin::Remote, now())
                .unwrap()
                .accepted
        );
        let e = d
            .raise_to(1, &t("worker7"), Origin::Remote, now())
            .unwrap_err();
        assert!(e.contains("worker7"), "{e}");
    }

    #[test]
    fn cheaped_and_unregistered_targets() {
        let mut d = deliveries(Options::default());
        d.set_state(0, ProcState::Cheaped);
        assert!(!d.raise(3, Origin::Control, None, now()).accepted);
        assert_eq!(d.counters.unrouted, 1);
        // Unregistered: the first available worker.
        assert!(d.raise(200, Origin::Control, None, now()).accepted);
        assert_eq!(frames(&d, 1), [(200, 1, 1)]);
        check_books(&d);
    }

    #[test]
    fn acks_settle_source_deliveries() {
        let mut d = deliveries(Options::default());
        let origin = Origin::Timer(crate::SourceId(7));
        d.raise(3, origin, None, now());
        write(&mut d, 0);
        d.ack(0, 1);
        assert_eq!(d.take_settled(), [7]);
        check_books(&d);
    }

    mod model {
        use super::*;
        use proptest::prelude::*;

        #[derive(Clone, Debug)]
        enum Op {
            Raise(u8),
            Write(Slot),
            Ack(Slot, u8),
            Die { slot: Slot, done: u8, running: bool },
            Respawn(Slot),
            Dispatch,
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                4 => prop::sample::select(vec![1u8, 2, 3, 4, 9]).prop_map(Op::Raise),
                2 => (0usize..3).prop_map(Op::Write),
                2 => (0usize..3, 0u8..4).prop_map(|(s, k)| Op::Ack(s, k)),
                1 => (0usize..3, 0u8..4, any::<bool>())
                    .prop_map(|(slot, done, running)| Op::Die { slot, done, running }),
                1 => (0usize..3).prop_map(Op::Respawn),
                1 => Just(Op::Dispatch),
            ]
        }

        proptest! {
            #[test]
            fn the_books_balance_after_every_step(ops in prop::collection::vec(op(), 1..200)) {
                let mut d = deliveries(Options {
                    prefetch: 2,
                    max_attempts: 3,
                    outbox_limit: 6,
                    high_water: 4,
                    low_water: 2,
                    ..Options::default()
                });
                // The model: what was raised, and each slot's written,
                // unacknowledged sequence numbers.
                let mut raised = 0u64;
                for op in ops {
                    match op {
                        Op::Raise(num) => {
                            raised += 1;
                            d.raise(num, Origin::Control, Some(Sender::Remote(0)), now());
                        }
                        Op::Write(s) => {
                            if d.state(s) == ProcState::Running {
                                write(&mut d, s);
                            }
                        }
                        Op::Ack(s, k) => {
                            // The first k written deliveries were handled.
                            if let (Some(oldest), true) = (d.oldest_inflight(s), k > 0) {
                                let n = d.inflight(s) as u64;
                                d.ack(s, oldest + u64::from(k).min(n) - 1);
                            }
                        }
                        Op::Die { slot, done, running } => {
                            // The first `done` written ones were handled,
                            // the next one's handler ran if `running`.
                            let last = match d.oldest_inflight(slot) {
                                Some(o) => LastWords {
                                    done: o + u64::from(done) - 1,
                                    running: running.then_some(o + u64::from(done)),
                                },
                                None => LastWords::default(),
                            };
                            d.set_state(slot, ProcState::Respawning);
                            d.requeue(slot, last);
                        }
                        Op::Respawn(s) => d.set_state(s, ProcState::Running),
                        Op::Dispatch => d.dispatch_pools(now()),
                    }
                    prop_assert_eq!(d.counters.raised, raised);
                    check_books(&d);
                    let mut woken = Vec::new();
                    d.wake_senders(&mut woken);
                }
            }
        }
    }
}
