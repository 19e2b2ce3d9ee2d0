//! The running master: one thread, one `epoll` loop.
//!
//! It reads every child channel in batches, asks the router where each
//! raised signal goes, queues deliveries per child and writes them in
//! batches; it forks, reaps and respawns children, and shuts the group down
//! gracefully. All I/O is non-blocking: no child can stall the master.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::Ordering::{Relaxed, Release, SeqCst};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll};
use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

mod control;
mod deliveries;
mod stats;
mod supervisor;
mod token;

use super::admin::{Admin, Kind};
use super::conn::{Conn, Outbox};
use super::remote::{Input, Remote};
use super::sources::{Sources, unix_now};
use super::summary::{Summary, Tally};
use super::{Entries, Options, Setup};
use crate::busy::{BusyPoll, Episode, Idle};
use crate::child::{ChildSetup, child_main};
use crate::error::{Error, Result};
use crate::origin::Origin;
use crate::proto::uwsgi::{Read, signal_reply};
use crate::proto::{Frame, Msg, Reply, Request, WireError, encode_with_payload};
use crate::ratelog::RateLog;
use crate::router::ProcState;
use crate::shm::Shm;
use crate::sys::{self, Forked};
use crate::table::{Owner, Registration};
use crate::target::Target;
use crate::topology::{ProcId, Slot, Topology};
use deliveries::{Deliveries, LastWords, Outcome, Sender};
use supervisor::{After, Life, Verdict, backoff, verdict};
pub(super) use token::{ADMIN_BASE, REMOTE_BASE};
use token::{Channel, Endpoint};

/// Reads of one channel per loop turn, so one busy child cannot starve the
/// others.
const READS_PER_TURN: usize = 8;
const READ_BUF: usize = 64 * 1024;
/// Buffer asked for each child's delivery pipe.
const DELIVERY_PIPE: usize = 256 * 1024;
/// How often the children's shared-memory progress is looked at (handler
/// run times for harakiri, done counts for stalls) while some child holds
/// work; an idle group is never ticked.
const WATCH_TICK: Duration = Duration::from_millis(50);

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

pub(super) struct Engine {
    poll: Poll,
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
    /// When the children's progress was last looked at ([`WATCH_TICK`]).
    last_watch: Instant,
    /// Busy polling: whether to look before sleeping ([`Options::busy_poll`]).
    busy: BusyPoll,
    /// The current stretch without events.
    idle: Episode,
    admin: Option<Admin>,
    /// The stats and control addresses, for the stats document.
    admin_sockets: Vec<(String, &'static str)>,
    /// Children still to restart in the reload under way.
    reload_queue: VecDeque<Slot>,
    /// The child being restarted now.
    reload_current: Option<Slot>,
    started: Instant,
    started_unix: u64,
}

impl Engine {
    pub(super) fn new(
        topo: Arc<Topology>,
        entries: Entries,
        opts: Options,
        shm: Shm,
        setup: Setup,
        remote: Option<Remote>,
        admin: Option<Admin>,
    ) -> Result<Engine> {
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
            )?;
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
                life: Life::default(),
                timeouts: 0,
                stalls: 0,
                progress: (0, now),
                spawned_unix: 0,
                last_requests: 0,
            })
            .collect();
        let busy = BusyPoll::new(opts.busy_poll);
        Ok(Engine {
            poll,
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
            last_watch: now,
            busy,
            idle: Episode::default(),
            admin_sockets: admin.as_ref().map(Admin::sockets).unwrap_or_default(),
            admin,
            reload_queue: VecDeque::new(),
            reload_current: None,
            started: now,
            started_unix: super::sources::unix_now() as u64,
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
            self.spawn(s)?;
        }
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
            self.advance_control();
            if self.phase == Phase::Running {
                self.settle_sources();
                let due = self.sources.due(Instant::now(), unix_now());
                self.raise_sourced(due);
            }
            self.fire_respawns();
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
        if busy || self.remote.as_ref().is_some_and(Remote::any_input) {
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
        if watched && holding {
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
        match self.phase {
            Phase::Draining { deadline } | Phase::Terminating { deadline } => {
                next = Some(next.map_or(deadline, |t| t.min(deadline)));
            }
            Phase::Running | Phase::Killing => {}
        }
        next.map(|t| t.saturating_duration_since(now))
    }

    // ---- reading ---------------------------------------------------------

    fn read_all(&mut self) {
        for slot in 0..self.procs.len() {
            self.read_chan(slot, Channel::Dispatcher);
            self.read_chan(slot, Channel::Threads);
        }
    }

    fn read_chan(&mut self, slot: Slot, chan: Channel) {
        for _ in 0..READS_PER_TURN {
            let p = &mut self.procs[slot];
            if p.life.doomed() || !p.has_input(chan) {
                return;
            }
            let Some(conn) = p.conn_mut(chan) else { return };
            let mut buf = std::mem::take(&mut self.buf);
            // Messages held back while the sender was paused go first.
            let n = if conn.decoder.has_message().unwrap_or(true) {
                0
            } else {
                match conn.read(&mut buf) {
                    Ok(Some(0)) => {
                        // The child closed its end: it is exiting; reaping
                        // does the rest.
                        self.buf = buf;
                        self.drop_conns(slot);
                        return;
                    }
                    Ok(Some(n)) => n,
                    Ok(None) => {
                        self.buf = buf;
                        return;
                    }
                    Err(e) => {
                        self.buf = buf;
                        // A reset is a child dying with unread input: the
                        // reaper reports it.
                        if e.kind() == std::io::ErrorKind::ConnectionReset {
                            tracing::debug!("{}: channel reset", self.procs[slot].id);
                        } else {
                            tracing::warn!("{}: channel read failed: {e}", self.procs[slot].id);
                        }
                        self.drop_conns(slot);
                        return;
                    }
                }
            };
            let mut decoder = std::mem::take(&mut conn.decoder);
            let fed = decoder.feed(&buf[..n], &mut |m| {
                if self.on_msg(slot, chan, m) {
                    self.procs[slot].b_paused = true;
                }
                // A paused sender's next raises wait in the decoder.
                !self.procs[slot].b_paused
            });
            self.buf = buf;
            if let Some(c) = self.procs[slot].conn_mut(chan) {
                c.decoder = decoder;
            }
            if let Err(e) = fed {
                tracing::error!("{}: {e}; killing it", self.procs[slot].id);
                self.procs[slot].life.doom();
                return;
            }
        }
    }

    /// Handles one message from a child; true when its sender must now
    /// wait (back-pressure).
    fn on_msg(&mut self, slot: Slot, chan: Channel, m: Msg<'_>) -> bool {
        let me = self.procs[slot].id;
        match m {
            Msg::Frame(Frame::Raise { num }) => {
                // Channel A (handlers) is never made to wait.
                let sender = (chan == Channel::Threads).then_some(Sender::Child(slot));
                return self.raise(num, Origin::Process(me), sender).throttle;
            }
            Msg::Frame(Frame::Ack { seq }) => self.d.ack(slot, seq),
            Msg::Payload {
                frame: Frame::Request { id, .. },
                body,
            } => {
                let reply = match serde_json::from_slice::<Request>(body) {
                    Ok(req) => self.on_request(slot, req),
                    Err(e) => Reply::Err(WireError::Other(format!("unreadable request: {e}"))),
                };
                if let Some(c) = self.procs[slot].conn_mut(chan) {
                    if let Err(e) = encode_with_payload(true, id, &reply, c.out()) {
                        tracing::error!("{me}: cannot encode a reply: {e}");
                    }
                    self.d.mark_dirty(slot);
                }
            }
            other => {
                tracing::error!("{me}: sent a message only the master may send: {other:?}");
                self.procs[slot].life.doom();
            }
        }
        false
    }

    fn on_request(&mut self, slot: Slot, req: Request) -> Reply {
        let me = self.procs[slot].id;
        match req {
            Request::Register { num, target } => {
                let done = target
                    .parse::<Target>()
                    .and_then(|t| self.d.table.register(num, &t, Owner::Child(slot)));
                match done {
                    Ok(how) => {
                        self.mirror(num);
                        let how = match how {
                            Registration::New => "runs only there",
                            Registration::Joined => "joined as a runner",
                            Registration::Replaced => "handler replaced",
                        };
                        tracing::info!("signal {num} registered by {me} (target {target}): {how}");
                        // A pool may have a new member able to run it.
                        self.d.member_added();
                        Reply::Ok
                    }
                    Err(e) => {
                        tracing::warn!("{me}: registration refused: {e}");
                        Reply::Err(e.into())
                    }
                }
            }
            Request::Reserve => match self.d.table.reserve(Owner::Child(slot)) {
                Ok(num) => {
                    self.mirror(num);
                    Reply::Num(num)
                }
                Err(e) => Reply::Err(e.into()),
            },
            Request::Stop => {
                self.begin_shutdown(&format!("stop requested by {me}"));
                Reply::Ok
            }
            Request::AddSource { sig, source } => {
                match self.sources.add(sig, source, Owner::Child(slot)) {
                    Ok(id) => {
                        self.watch_inotify();
                        Reply::Source(id.get())
                    }
                    Err(e) => {
                        tracing::warn!("{me}: source refused: {e}");
                        Reply::Err(e.into())
                    }
                }
            }
            Request::RemoveSource { id } => match self.sources.remove(crate::SourceId(id)) {
                Ok(()) => Reply::Ok,
                Err(e) => Reply::Err(e.into()),
            },
        }
    }

    fn mirror(&self, num: u8) {
        self.shm.table()[num as usize].store(self.d.table.mirror_word(num), Release);
    }

    // ---- routing ---------------------------------------------------------

    /// Routes one raised signal (see [`Deliveries::raise`]).
    fn raise(&mut self, num: u8, origin: Origin, sender: Option<Sender>) -> Outcome {
        self.d.raise(num, origin, sender, Instant::now())
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
        let Some(r) = self.remote.as_mut() else {
            return;
        };
        let refused = r.accept(self.poll.registry());
        if refused > 0 {
            self.d.counters.remote_refused += refused;
            if let Some(held) = self.remote_log.allow(Instant::now()) {
                tracing::warn!(
                    "remote signals: {refused} connection(s) closed: the limit of {} is reached{}",
                    r.opts.max_connections,
                    suppressed(held)
                );
            }
        }
    }

    /// Reads every remote connection with input, raises what it asks for,
    /// queues the replies and writes them.
    fn serve_remote(&mut self) {
        let Some(mut remote) = self.remote.take() else {
            return;
        };
        let now = Instant::now();
        let allowed = remote.allowed;
        for idx in 0..remote.slots() {
            for _ in 0..READS_PER_TURN {
                let Some(c) = remote.conn_mut(idx) else { break };
                if !c.has_input() {
                    break;
                }
                let mut buf = std::mem::take(&mut self.buf);
                let input = c.read(&mut buf);
                let n = match input {
                    Ok(Input::Bytes(n)) => n,
                    Ok(Input::Empty) => {
                        self.buf = buf;
                        break;
                    }
                    Ok(Input::Closed) => {
                        self.buf = buf;
                        if let Some(m) = c.reader.finish() {
                            let peer = c.peer.clone();
                            self.remote_malformed(&peer, &m.to_string());
                        }
                        let _ = c.flush();
                        remote.close(self.poll.registry(), idx);
                        break;
                    }
                    Err(e) => {
                        self.buf = buf;
                        tracing::debug!("remote signals: {}: {e}", c.peer);
                        remote.close(self.poll.registry(), idx);
                        break;
                    }
                };
                let mut reader = std::mem::take(&mut c.reader);
                let mut requests = 0u64;
                let read = reader.feed(&buf[..n], &mut |num| {
                    requests += 1;
                    let out = self.raise_remote(num, idx, allowed[num as usize]);
                    c.reply(&signal_reply(out.accepted));
                    if out.throttle {
                        c.paused = true;
                    }
                    !c.paused
                });
                c.reader = reader;
                self.buf = buf;
                if requests > 0 {
                    c.last_active = now;
                }
                if let Read::Malformed(m) = read {
                    let peer = c.peer.clone();
                    self.remote_malformed(&peer, &m.to_string());
                    let _ = c.flush();
                    remote.close(self.poll.registry(), idx);
                    break;
                }
            }
            if let Some(c) = remote.conn_mut(idx) {
                if let Err(e) = c.flush() {
                    tracing::debug!("remote signals: {}: {e}", c.peer);
                    remote.close(self.poll.registry(), idx);
                }
            }
        }
        for peer in remote.sweep(self.poll.registry(), now) {
            self.d.counters.remote_timed_out += 1;
            if let Some(held) = self.remote_log.allow(now) {
                tracing::warn!(
                    "remote signals: {peer}: closed after {} ms without a whole request{}",
                    remote.opts.read_timeout.as_millis(),
                    suppressed(held)
                );
            }
        }
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

    fn remote_malformed(&mut self, peer: &str, what: &str) {
        self.d.counters.remote_malformed += 1;
        if let Some(held) = self.remote_log.allow(Instant::now()) {
            tracing::warn!(
                "remote signals: {peer}: {what}; connection closed{}",
                suppressed(held)
            );
        }
    }

    /// Settles what children have handled without acking it: everything
    /// up to each slot's `done_seq` (children ack only pooled deliveries,
    /// and everything while the master waits for them; see
    /// `SlotStatus::acks_wanted`).
    fn settle_done(&mut self) {
        for s in 0..self.procs.len() {
            let p = &self.procs[s];
            // Waiting for this child to get through what it holds (a
            // shutdown, a reload or cheap, paused senders): it acks at once.
            let waiting = u32::from(
                self.phase != Phase::Running || p.life.stopping() || self.d.has_waiters(s),
            );
            let st = self.shm.slot(s);
            if st.acks_wanted.load(Relaxed) != waiting {
                st.acks_wanted.store(waiting, SeqCst);
            }
            let Some(oldest) = self.d.oldest_inflight(s) else {
                continue;
            };
            // SeqCst: pairs with the child's fence before it reads
            // `acks_wanted` (either it acks, or we see its progress here).
            let done = self.shm.slot(s).done_seq.load(SeqCst);
            if oldest <= done {
                self.d.ack(s, done);
            }
        }
    }

    // ---- writing ---------------------------------------------------------

    fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.to_write);
        self.d.take_dirty(&mut dirty);
        for &s in &dirty {
            let p = &mut self.procs[s];
            let deliver = p.life.takes_deliveries();
            let mut failed = None;
            if let Some(a) = p.a.as_mut() {
                let (outbox, inflight) = self.d.queues_mut(s);
                if let Err(e) = a.flush(outbox, inflight, deliver) {
                    failed = Some(e);
                }
            }
            if let Some(b) = p.b.as_mut() {
                if let Err(e) = b.flush(&mut Outbox::default(), &mut VecDeque::new(), false) {
                    failed = Some(e);
                }
            }
            if let Some(e) = failed {
                tracing::debug!("{}: channel write failed: {e}", p.id);
                self.drop_conns(s);
            }
        }
        self.to_write = dirty;
    }

    // ---- processes -------------------------------------------------------

    /// Derives a child's state from its flags, for the router and for
    /// shared memory: the one place that decides it.
    fn refresh_state(&mut self, s: Slot) {
        let state = self.procs[s].life.state(self.phase != Phase::Running);
        self.d.set_state(s, state);
        self.shm.slot(s).set_state(state);
    }

    /// Descriptors a new child must close.
    fn master_fds(&self) -> Vec<RawFd> {
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
        fds.extend(self.sources.fd());
        fds
    }

    fn spawn(&mut self, slot: Slot) -> Result<()> {
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
        let forked = sys::fork();
        if let Some(h) = hooks {
            match forked {
                Ok(Forked::Child) => (h.child)(),
                _ => (h.parent)(),
            }
        }
        match forked? {
            Forked::Child => child_main(ChildSetup {
                me: id,
                slot,
                topo: self.topo.clone(),
                shm: self.shm,
                chan_a: a_child,
                chan_b: b_child,
                inherited,
                entry: self.entries.for_role(id.role),
                master_pid: self.master_pid,
                busy_poll: self.opts.busy_poll,
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
                p.spawned_unix = super::sources::unix_now() as u64;
                self.shm.slot(slot).pid.store(pid.as_raw() as u32, Relaxed);
                self.refresh_state(slot);
                self.d.mark_dirty(slot);
                tracing::debug!("{id} started (pid {pid})");
                Ok(())
            }
        }
    }

    fn drop_conns(&mut self, slot: Slot) {
        let p = &mut self.procs[slot];
        for mut c in [p.a.take(), p.b.take()].into_iter().flatten() {
            c.deregister(self.poll.registry());
        }
    }

    fn kill_doomed(&mut self) {
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

    fn on_signals(&mut self) {
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

    fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => {
                    self.on_exit(pid, &format!("exited with status {code}"));
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

    fn on_exit(&mut self, pid: Pid, how: &str) {
        let Some(slot) = self.procs.iter().position(|p| p.pid == Some(pid)) else {
            return;
        };
        self.drop_conns(slot);
        let now = Instant::now();
        let p = &mut self.procs[slot];
        p.pid = None;
        let after = p.life.exited();
        let lived = now.duration_since(p.spawned_at);
        let id = p.id;
        self.shm.slot(slot).pid.store(0, Relaxed);
        if matches!(self.phase, Phase::Running | Phase::Draining { .. }) {
            self.requeue(slot);
        }
        for num in self.d.table.release_child(slot) {
            self.mirror(num);
        }
        self.sources.release(slot);
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

    /// After a death: what its shared-memory slot says it finished and was
    /// running decides what goes again ([`Deliveries::requeue`]).
    fn requeue(&mut self, slot: Slot) {
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
    fn watch(&mut self) {
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
            let st = self.shm.slot(s);
            // The signal first (acquire), then its start time: see child.rs.
            let current = st.current.load(std::sync::atomic::Ordering::Acquire);
            let ran = (current != 0).then(|| {
                Duration::from_nanos(now_ns.saturating_sub(st.handler_started_ns.load(Relaxed)))
            });
            let role = p.id.role;
            let found = verdict(
                ran,
                self.opts.harakiri.for_role(role),
                stalled,
                self.opts.stall.for_role(role),
            );
            let Some(found) = found else { continue };
            // SIGKILL: it also ends a process stopped with SIGSTOP.
            let _ = kill(pid, Signal::SIGKILL);
            p.life.kill();
            match found {
                Verdict::Harakiri { ran, limit } => {
                    p.timeouts += 1;
                    self.d.counters.timeouts += 1;
                    tracing::error!(
                        "{} (pid {pid}): handler of signal {} has run {} ms, past the {} ms \
                         limit: killed (harakiri); it will be respawned and the signal given \
                         again",
                        p.id,
                        current - 1,
                        ran.as_millis(),
                        limit.as_millis()
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
    fn observe_progress(&mut self, s: Slot, now: Instant) -> Option<Duration> {
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

    fn fire_respawns(&mut self) {
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

    // ---- shutdown --------------------------------------------------------

    fn begin_shutdown(&mut self, why: &str) {
        let now = Instant::now();
        match self.phase {
            Phase::Running => {
                let queued = self.d.queued();
                tracing::info!("shutting down ({why}): draining {queued} queued signals");
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

    fn terminate(&mut self, now: Instant) {
        self.kill_all(Signal::SIGTERM);
        self.phase = Phase::Terminating {
            deadline: now + self.opts.kill_timeout,
        };
    }

    fn kill_all(&mut self, sig: Signal) {
        for p in &self.procs {
            if let Some(pid) = p.pid {
                let _ = kill(pid, sig);
            }
        }
    }

    /// Moves the shutdown along; true when every child is gone.
    fn advance_phase(&mut self) -> bool {
        let now = Instant::now();
        let alive = self.procs.iter().any(|p| p.pid.is_some());
        match self.phase {
            Phase::Running => false,
            Phase::Draining { deadline } => {
                let drained = self.procs.iter().enumerate().all(|(s, p)| {
                    p.pid.is_none()
                        || (self.d.load(s) == 0
                            && !p.has_input(Channel::Dispatcher)
                            && !p.has_input(Channel::Threads))
                }) && self.d.pools_empty();
                if drained || now >= deadline {
                    if !drained {
                        tracing::warn!("drain timeout: stopping with signals still queued");
                    }
                    self.terminate(now);
                }
                false
            }
            Phase::Terminating { deadline } => {
                if alive && now >= deadline {
                    tracing::warn!("children still alive after SIGTERM: sending SIGKILL");
                    self.kill_all(Signal::SIGKILL);
                    self.phase = Phase::Killing;
                }
                !alive
            }
            Phase::Killing => !alive,
        }
    }

    fn finish(mut self) -> Summary {
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
