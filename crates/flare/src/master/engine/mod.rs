//! The running master: one thread, one `epoll` loop, and the parts it
//! calls into.
//!
//! - [`deliveries`]: routes, queues, credit, requeue and every counter,
//!   with no I/O (where to change routing and delivery rules);
//! - [`supervisor`]: one life state per slot and the supervision rules
//!   (stop steps, harakiri and stall verdicts, backoff);
//! - [`token`]: what each event is about ([`Endpoint`]);
//! - [`channels`]: reading and writing the child channels;
//! - [`processes`]: fork, reap, respawn, kills, requeue after a death;
//! - [`control`] and [`stats`]: the control commands and the stats
//!   document; [`shutdown`]: drain, terminate, the summary.
//!
//! This file holds the loop itself: wait for events, hand each to its
//! endpoint, then move every part along once per turn. All I/O is
//! non-blocking: no child can stall the master.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;

mod attached;
mod channels;
mod control;
mod deliveries;
mod fleet;
mod processes;
mod shutdown;
mod stats;
mod supervisor;
mod token;

use super::admin::{Admin, Kind};
use super::attach::Attach;
use super::conn::Conn;
use super::remote::Remote;
use super::sources::{Sources, unix_now};
use super::strays::Strays;
use super::summary::Summary;
use super::{Entries, Options, Setup};
use crate::busy::{BusyPoll, Episode, Idle};
use crate::error::{Error, Result};
use crate::origin::Origin;
use crate::ratelog::RateLog;
use crate::shm::Shm;
use crate::topology::{ProcId, Slot, Topology};
use deliveries::{Deliveries, Outcome, Sender};
use supervisor::Life;
pub(super) use token::{ADMIN_BASE, ATTACH_BASE, REMOTE_BASE};
use token::{Channel, Endpoint};

/// Reads of one channel per loop turn, so one busy child cannot starve the
/// others.
pub(super) const READS_PER_TURN: usize = 8;
/// Size of the read buffer shared by every channel and connection.
pub(super) const READ_BUF: usize = 64 * 1024;
/// Buffer asked for each child's delivery pipe.
pub(super) const DELIVERY_PIPE: usize = 256 * 1024;
/// How often the children's shared-memory progress is looked at (handler
/// run times for harakiri, done counts for stalls) while some child holds
/// work; an idle group is never ticked.
pub(super) const WATCH_TICK: Duration = Duration::from_millis(50);

/// One child slot.
struct Proc {
    id: ProcId,
    pid: Option<Pid>,
    last_pid: u32,
    a: Option<Conn>,
    b: Option<Conn>,
    /// Channel B is not read until the queue it flooded drains.
    b_paused: bool,
    spawned_at: Instant,
    quick_deaths: u32,
    /// Its life: running, stopping, killed, dead, cheaped; paused or not.
    life: Life,
    /// Handler timeouts.
    timeouts: u64,
    /// Stalls: killed for making no progress with work waiting.
    stalls: u64,
    /// Its last progress seen: the done count and since when it has not
    /// moved while work waited (see [`Engine::observe_progress`]).
    progress: (u64, Instant),
    /// When it was last forked, Unix seconds.
    spawned_unix: u64,
    /// Handled count at the last stats document (for delta_requests).
    last_requests: u64,
    /// The process that attached to this slot, while it is there.
    attached: Option<attached::Joined>,
    /// When the last attached process left (its deliveries wait for the
    /// next one until the hold runs out).
    left_at: Option<Instant>,
}

impl Proc {
    fn conn_mut(&mut self, chan: Channel) -> Option<&mut Conn> {
        match chan {
            Channel::Dispatcher => self.a.as_mut(),
            Channel::Threads => self.b.as_mut(),
        }
    }

    /// Whether the master should read this channel now: it has unread
    /// bytes or held-back messages, and (for B) the sender is not paused.
    fn has_input(&self, chan: Channel) -> bool {
        let conn = match chan {
            Channel::Dispatcher => self.a.as_ref(),
            Channel::Threads if self.b_paused => None,
            Channel::Threads => self.b.as_ref(),
        };
        conn.is_some_and(|c| c.readable || c.decoder.has_message().unwrap_or(true))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Running,
    /// Stop taking new work from outside; deliver what is queued.
    Draining {
        deadline: Instant,
    },
    /// SIGTERM sent; SIGKILL at the deadline.
    Terminating {
        deadline: Instant,
    },
    /// SIGKILL sent.
    Killing,
}

/// The endpoints bound by `build()`, each optional.
pub(super) struct Endpoints {
    pub(super) remote: Option<Remote>,
    pub(super) admin: Option<Admin>,
    pub(super) attach: Option<Attach>,
}

pub(super) struct Engine {
    poll: Poll,
    /// Processes children left behind, re-parented to the master.
    strays: Strays,
    sigfd: SignalFd,
    topo: Arc<Topology>,
    /// Routes, queues, credit and counters.
    d: Deliveries,
    shm: Shm,
    opts: Options,
    entries: Entries,
    procs: Vec<Proc>,
    /// Respawn times, earliest first.
    respawns: BinaryHeap<Reverse<(Instant, Slot)>>,
    phase: Phase,
    master_pid: u32,
    /// Raised by the master before `run()`, raised once the children run.
    raised_before_run: Vec<u8>,
    buf: Vec<u8>,
    /// Slots to write, reused.
    to_write: Vec<Slot>,
    remote_log: RateLog,
    remote: Option<Remote>,
    sources: Sources,
    inotify_watched: bool,
    /// The caller's signal mask, put back when `run()` returns.
    old_mask: SigSet,
    /// When this loop turn's events came in: the time for everything that
    /// needs no finer clock (rate-limited logs), read once per turn.
    turn_started: Instant,
    /// Stack dump signals sent before harakiri kills.
    stack_dumps: super::harakiri::StackDumps,
    /// When the children's progress was last looked at ([`WATCH_TICK`]).
    last_watch: Instant,
    /// Busy polling: whether to look before sleeping ([`Options::busy_poll`]).
    busy: BusyPoll,
    /// The current stretch without events.
    idle: Episode,
    admin: Option<Admin>,
    /// The stats, control, metrics and attach addresses, for the stats
    /// document.
    admin_sockets: Vec<(String, &'static str)>,
    /// Children still to restart in the reload under way.
    reload_queue: VecDeque<Slot>,
    /// The child being restarted now.
    reload_current: Option<Slot>,
    started: Instant,
    started_unix: u64,
    /// systemd readiness, reload, stop and watchdog messages.
    notify: super::notify::Notifier,
    /// The fleet bridge's slot, the sends it holds, its figures.
    fleet: fleet::FleetState,
    /// The attach socket.
    attach: Option<Attach>,
}

impl Engine {
    pub(super) fn new(
        topo: Arc<Topology>,
        entries: Entries,
        opts: Options,
        shm: Shm,
        setup: Setup,
        endpoints: Endpoints,
    ) -> Result<Engine> {
        let Endpoints {
            remote,
            admin,
            attach,
        } = endpoints;
        let mut mask = SigSet::empty();
        for s in [
            Signal::SIGCHLD,
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGHUP,
        ] {
            mask.add(s);
        }
        let mut old_mask = SigSet::empty();
        nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_BLOCK,
            Some(&mask),
            Some(&mut old_mask),
        )
        .map_err(|e| Error::io("blocking signals in the master", e))?;
        let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| Error::io("creating a signalfd", e))?;
        let poll = Poll::new().map_err(|e| Error::io("creating the event loop", e))?;
        poll.registry()
            .register(
                &mut mio::unix::SourceFd(&sigfd.as_raw_fd()),
                Endpoint::Signals.token(),
                Interest::READABLE,
            )
            .map_err(|e| Error::io("watching signals", e))?;
        let mut remote = remote;
        if let Some(r) = remote.as_mut() {
            r.register(poll.registry(), Endpoint::RemoteListener.token())?;
        }
        let mut admin = admin;
        if let Some(a) = admin.as_mut() {
            a.register(
                poll.registry(),
                Endpoint::StatsListener.token(),
                Endpoint::ControlListener.token(),
                Endpoint::MetricsListener.token(),
            )?;
        }
        let mut attach = attach;
        if let Some(a) = attach.as_mut() {
            a.register(poll.registry(), Endpoint::AttachListener.token())?;
        }
        let n = topo.slots();
        let now = Instant::now();
        let procs = (0..n)
            .map(|s| Proc {
                id: topo.proc_at(s),
                pid: None,
                last_pid: 0,
                a: None,
                b: None,
                b_paused: false,
                spawned_at: now,
                quick_deaths: 0,
                life: if topo.is_attach_slot(s) {
                    Life::vacant()
                } else {
                    Life::default()
                },
                timeouts: 0,
                stalls: 0,
                progress: (0, now),
                spawned_unix: 0,
                last_requests: 0,
                attached: None,
                left_at: None,
            })
            .collect();
        let busy = BusyPoll::new(opts.busy_poll);
        let stack_dump = opts.harakiri_stack_dump;
        let entries_fleet_names = entries.fleet_names.clone();
        Ok(Engine {
            poll,
            strays: Strays::new(),
            sigfd,
            d: Deliveries::new(setup.table, topo.clone(), opts.clone()),
            shm,
            opts,
            entries,
            procs,
            respawns: BinaryHeap::new(),
            phase: Phase::Running,
            master_pid: std::process::id(),
            raised_before_run: setup.raised,
            buf: vec![0; READ_BUF],
            to_write: Vec::new(),
            remote_log: RateLog::new(10, Duration::from_secs(1)),
            remote,
            sources: setup.sources,
            inotify_watched: false,
            old_mask,
            stack_dumps: super::harakiri::StackDumps::new(stack_dump, topo.slots()),
            last_watch: now,
            turn_started: now,
            busy,
            idle: Episode::default(),
            admin_sockets: admin
                .as_ref()
                .map(Admin::sockets)
                .unwrap_or_default()
                .into_iter()
                .chain(attach.as_ref().map(|a| (a.addr().to_owned(), "attach")))
                .collect(),
            admin,
            reload_queue: VecDeque::new(),
            reload_current: None,
            started: now,
            started_unix: super::sources::unix_now() as u64,
            notify: super::notify::Notifier::from_env(now),
            fleet: fleet::FleetState::new(&topo, entries_fleet_names),
            attach,
            topo,
        })
    }

    pub(super) fn run(mut self) -> Result<Summary> {
        let t = &self.topo;
        tracing::info!(
            "master {} starting {}, {} ({}), {}",
            self.master_pid,
            plural(t.workers as usize, "worker"),
            plural(t.mules as usize, "mule"),
            plural(t.farms.len(), "farm"),
            plural(t.spoolers as usize, "spooler"),
        );
        self.sources.start(Instant::now());
        self.watch_inotify();
        for s in 0..self.procs.len() {
            if self.topo.is_attach_slot(s) {
                self.refresh_state(s);
            } else {
                self.spawn(s)?;
            }
        }
        let n = self.procs.len() - self.topo.attached as usize;
        let what = if n == 1 { "process" } else { "processes" };
        if let Some(a) = &self.attach {
            tracing::info!(
                "attach socket on {}: {} slots (worker{} to worker{})",
                a.addr(),
                self.topo.attached,
                self.topo.attach_slots().start + 1,
                self.topo.attach_slots().end
            );
        }
        self.notify.ready(&format!("{n} {what} up"));
        for num in std::mem::take(&mut self.raised_before_run) {
            self.raise(num, Origin::Process(ProcId::MASTER), None);
        }
        let mut events = Events::with_capacity(1024);
        loop {
            // Just before sleeping: what was handled meanwhile may be all a
            // shutdown, reload or cheap waits for.
            self.settle_done();
            self.advance_control();
            if self.advance_phase() {
                break;
            }
            let mut timeout = self.timeout();
            if timeout != Some(Duration::ZERO) && self.busy.idle(&mut self.idle) == Idle::Look {
                // Busy polling: give the CPU to whoever wants it, then look
                // again without sleeping.
                std::thread::yield_now();
                timeout = Some(Duration::ZERO);
            }
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(Error::io("waiting for events", e));
                }
            }
            if !events.is_empty() {
                self.busy.found(&mut self.idle);
            }
            self.turn_started = Instant::now();
            self.notify.tick(self.turn_started);
            self.settle_done();
            for ev in events.iter() {
                let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
                let writable = ev.is_writable() || ev.is_error();
                if let Some(endpoint) = Endpoint::of(ev.token()) {
                    self.on_event(endpoint, readable, writable);
                }
            }
            self.read_all();
            self.serve_remote();
            self.serve_admin();
            self.serve_attach();
            self.advance_control();
            if self.phase == Phase::Running {
                self.settle_sources();
                let due = self.sources.due(Instant::now(), unix_now());
                self.raise_sourced(due);
            }
            self.fire_respawns();
            if self.topo.attached > 0 {
                self.expire_holds(Instant::now());
            }
            self.watch();
            self.d.dispatch_pools(Instant::now());
            self.wake_senders();
            self.settle_sources();
            self.flush_dirty();
            self.kill_doomed();
        }
        Ok(self.finish())
    }

    /// One readiness event: listeners accept, the signalfd and inotify are
    /// read now; connections and channels are marked and served after
    /// every event of the turn is in.
    fn on_event(&mut self, endpoint: Endpoint, readable: bool, writable: bool) {
        match endpoint {
            Endpoint::Signals => self.on_signals(),
            Endpoint::RemoteListener => self.accept_remote(),
            Endpoint::StatsListener => self.accept_admin(Kind::Stats),
            Endpoint::ControlListener => self.accept_admin(Kind::Control),
            Endpoint::MetricsListener => self.accept_admin(Kind::Metrics),
            Endpoint::AttachListener => {
                if let Some(a) = self.attach.as_mut() {
                    a.accept(self.poll.registry(), Instant::now());
                }
            }
            Endpoint::AttachConn(t) => {
                if let Some(a) = self.attach.as_mut() {
                    a.ready(t);
                }
            }
            Endpoint::Inotify => {
                let due = self.sources.on_file_events(Instant::now());
                if self.phase == Phase::Running {
                    self.raise_sourced(due);
                }
            }
            Endpoint::RemoteConn(t) => {
                if let Some(r) = self.remote.as_mut() {
                    if let Some(idx) = r.index_of(t) {
                        r.ready(idx, readable, writable);
                    }
                }
            }
            Endpoint::AdminConn(t) => {
                if let Some(a) = self.admin.as_mut() {
                    if let Some(idx) = a.index_of(t) {
                        a.ready(idx, readable, writable);
                    }
                }
            }
            Endpoint::Child(slot, chan) => {
                if let Some(c) = self.procs.get_mut(slot).and_then(|p| p.conn_mut(chan)) {
                    c.readable |= readable;
                    if writable {
                        c.writable = true;
                        self.d.mark_dirty(slot);
                    }
                }
            }
        }
    }

    /// How long the next poll may sleep.
    fn timeout(&self) -> Option<Duration> {
        let busy = self
            .procs
            .iter()
            .any(|p| p.has_input(Channel::Dispatcher) || p.has_input(Channel::Threads));
        if busy
            || self.d.wants_turn()
            || self.remote.as_ref().is_some_and(Remote::any_input)
            || self.admin.as_ref().is_some_and(Admin::any_input)
            || self.attach.as_ref().is_some_and(Attach::any_input)
        {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let mut next = self.respawns.peek().map(|Reverse((t, _))| *t);
        if let Some(t) = self.remote.as_ref().and_then(Remote::next_sweep) {
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        if self.phase == Phase::Running {
            if let Some(t) = self.sources.next_deadline(now, unix_now()) {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
        let mut at = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        // A handler can only run, and a child only stall, while it holds
        // work: only then is shared memory watched.
        let watched = self.opts.harakiri.any() || self.opts.stall.any();
        let holding =
            (0..self.procs.len()).any(|s| self.procs[s].pid.is_some() && self.d.load(s) > 0);
        // A deadline set with set_user_harakiri runs out with or without
        // work: once a process used one, the watch ticks.
        let user_deadlines = self.shm.user_harakiri_used().load(Relaxed) != 0;
        if (watched && holding) || user_deadlines {
            at(self.last_watch + WATCH_TICK);
        }
        // Cheaping and reloading move on acks (events) and on these
        // deadlines.
        for p in &self.procs {
            if let Some(t) = p
                .life
                .stop_deadline(self.opts.drain_timeout, self.opts.kill_timeout)
            {
                at(t);
            }
        }
        if let Some(t) = self.admin.as_ref().and_then(Admin::next_sweep) {
            at(t);
        }
        if let Some(t) = self.attach.as_ref().and_then(Attach::next_sweep) {
            at(t);
        }
        if let Some(t) = self.next_hold_expiry() {
            at(t);
        }
        if let Some(t) = self.notify.deadline() {
            at(t);
        }
        match self.phase {
            Phase::Draining { deadline } | Phase::Terminating { deadline } => {
                next = Some(next.map_or(deadline, |t| t.min(deadline)));
            }
            Phase::Running | Phase::Killing => {}
        }
        next.map(|t| t.saturating_duration_since(now))
    }

    // ---- routing ---------------------------------------------------------

    /// Routes one raised signal (see [`Deliveries::raise`]).
    fn raise(&mut self, num: u8, origin: Origin, sender: Option<Sender>) -> Outcome {
        self.d.raise(num, origin, sender, self.turn_started)
    }

    /// Tells the sources which of their deliveries left the system.
    fn settle_sources(&mut self) {
        for id in self.d.take_settled() {
            self.sources.settled(id);
        }
    }

    /// Raises what sources asked for, keeping count for `unique`.
    fn raise_sourced(&mut self, due: Vec<(u8, Origin)>) {
        for (sig, origin) in due {
            // Once per fleet: the bridge claims it (see fleet.rs).
            let firing = origin
                .source()
                .and_then(|id| self.sources.fleet_firing(id.get(), crate::fleet::unix_ms()));
            if let Some(f) = firing {
                self.fleet_fire(f, origin);
                continue;
            }
            let out = self.raise(sig, origin, None);
            if let Some(id) = origin.source() {
                self.sources.queued(id.get(), out.queued);
            }
        }
    }

    /// Watches the inotify descriptor once the first file monitor made it.
    fn watch_inotify(&mut self) {
        if self.inotify_watched {
            return;
        }
        if let Some(fd) = self.sources.fd() {
            let r = self.poll.registry().register(
                &mut mio::unix::SourceFd(&fd),
                Endpoint::Inotify.token(),
                Interest::READABLE,
            );
            match r {
                Ok(()) => self.inotify_watched = true,
                Err(e) => tracing::error!("file monitors: cannot watch inotify: {e}"),
            }
        }
    }

    /// Reads paused senders again once their queue is under the low-water
    /// mark (or gone).
    fn wake_senders(&mut self) {
        let mut woken = Vec::new();
        self.d.wake_senders(&mut woken);
        for sender in woken {
            match sender {
                Sender::Child(s) => self.procs[s].b_paused = false,
                Sender::Remote(i) => {
                    if let Some(c) = self.remote.as_mut().and_then(|r| r.conn_mut(i)) {
                        c.paused = false;
                    }
                }
            }
        }
    }

    // ---- remote signals --------------------------------------------------

    fn accept_remote(&mut self) {
        let Some(mut remote) = self.remote.take() else {
            return;
        };
        remote.accept(Instant::now(), &mut |num, idx, allowed| {
            let out = self.raise_remote(num, idx, allowed);
            (out.accepted, out.throttle)
        });
        remote.take_counts().add_to(&mut self.d.counters);
        self.remote = Some(remote);
    }

    /// Serves the remote connections (the endpoint's limits are in
    /// `remote`); what they ask for is raised here.
    fn serve_remote(&mut self) {
        let Some(mut remote) = self.remote.take() else {
            return;
        };
        remote.serve(Instant::now(), &mut |num, idx, allowed| {
            let out = self.raise_remote(num, idx, allowed);
            (out.accepted, out.throttle)
        });
        remote.take_counts().add_to(&mut self.d.counters);
        self.remote = Some(remote);
    }

    /// Raises a signal a remote node asked for (if `allowed` by the
    /// allow-list); the reply says whether it was accepted.
    fn raise_remote(&mut self, num: u8, idx: usize, allowed: bool) -> Outcome {
        let out = if allowed {
            self.raise(num, Origin::Remote, Some(Sender::Remote(idx)))
        } else {
            Outcome::REFUSED
        };
        if out.accepted {
            self.d.counters.remote_accepted += 1;
        } else {
            self.d.counters.remote_rejected += 1;
            if !allowed {
                if let Some(held) = self.remote_log.allow(Instant::now()) {
                    tracing::warn!(
                        "remote signals: signal {num} rejected: not on the allow-list{}",
                        suppressed(held)
                    );
                }
            }
        }
        out
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn suppressed(held: u64) -> String {
    if held == 0 {
        String::new()
    } else {
        format!(" ({held} similar lines suppressed)")
    }
}
