//! The runtime inside a child process: who it is, its two channels to the
//! master, the dispatcher thread that runs handlers, `send()` and `wait()`.
//!
//! Each channel is two pipes (see `sys::duplex`). Channel A is the dispatcher's: deliveries come in, acks go out, and so do
//! whatever the handlers raise or request (the master always reads A, so a
//! handler is never held up by the back-pressure that protects the master).
//! Channel B serves every other thread: raises and requests out, replies in;
//! the master may stop reading it for a while when a destination's queue is
//! long, which is what makes `send()` wait instead of dropping.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{
    AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::Release, Ordering::SeqCst,
    fence,
};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crate::busy::{BusyPoll, Episode, Idle};
use crate::error::{Error, Result};
use crate::handlers;
use crate::origin::{Origin, Received};
use crate::proto::{Decoder, FRAME_LEN, Frame, Msg, Notice, Reply, Request, encode_with_payload};
use crate::shm::{Shm, bump, monotonic_ns};
use crate::sys::{self, Duplex};
use crate::topology::{ProcId, Role, Slot, Topology};

/// Who this process is (uWSGI `worker_id()`, `mule_id()`, `getpid()`).
///
/// ```no_run
/// if let Ok(me) = flare::whoami() {
///     println!("{} {} has pid {}", me.role, me.id, me.pid);
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    /// The role.
    pub role: Role,
    /// The id within the role (from 1; 0 for the master).
    pub id: u32,
    /// The operating-system pid.
    pub pid: u32,
}

impl ProcessInfo {
    /// Role and id together.
    pub fn proc_id(&self) -> ProcId {
        ProcId::new(self.role, self.id)
    }
}

/// The function a child runs after fork; when it returns or panics the
/// child exits and the master forks it again.
pub type Entry = Box<dyn Fn(ProcessInfo) + 'static>;

/// What the master hands a freshly forked child.
pub(crate) struct ChildSetup<'a> {
    /// What it needs to be a member.
    pub(crate) member: Install,
    /// Master descriptors the child must not keep.
    pub(crate) inherited: Vec<RawFd>,
    pub(crate) entry: Option<&'a Entry>,
    /// The child fork hook, run first thing.
    pub(crate) hook: Option<fn()>,
    pub(crate) master_pid: u32,
}

/// The child's process-wide state.
pub(crate) struct ChildCtx {
    pub(crate) info: ProcessInfo,
    pub(crate) slot: Slot,
    pub(crate) topo: Arc<Topology>,
    pub(crate) shm: Shm,
    /// Deliveries and replies to the dispatcher's requests (non-blocking).
    a_rx: OwnedFd,
    /// Acks, and the dispatcher's raises and requests (blocking).
    a_tx: File,
    chan_b: Mutex<ChanB>,
    next_request: AtomicU64,
    waits: WaitHub,
    /// Joined through the attach socket: when the master goes away the
    /// dispatcher stops, but the process (its server's) goes on.
    attached: bool,
    /// The master's pid.
    pub(crate) master_pid: u32,
}

/// Channel B, used by every thread but the dispatcher, one at a time.
struct ChanB {
    /// Raises and requests (non-blocking, so `try_send()` can refuse).
    tx: OwnedFd,
    /// Replies (blocking).
    rx: File,
}

static CHILD: OnceLock<ChildCtx> = OnceLock::new();

/// The child context, when this process is a flare child.
pub(crate) fn context() -> Option<&'static ChildCtx> {
    CHILD.get()
}

/// Exit status of a child that ended normally (its entry returned, or the
/// master went away).
pub(crate) const EXIT_OK: i32 = 0;
/// Exit status of a child whose setup failed (a system call after fork).
pub(crate) const EXIT_SETUP_FAILED: i32 = 70;
/// Exit status of a child that could not start its dispatcher thread.
pub(crate) const EXIT_NO_DISPATCHER: i32 = 71;
/// Exit status of a child whose setup panicked (the child fork hook, say):
/// the panic is stopped at the child's main, so it never unwinds into the
/// master's frames copied into the child.
pub(crate) const EXIT_SETUP_PANICKED: i32 = 72;
/// Exit status of a child whose entry function panicked (Rust's own code
/// for a panicking `main`).
pub(crate) const EXIT_ENTRY_PANICKED: i32 = 101;

/// What an exit status of a child means, for the master's log line.
pub(crate) fn exit_meaning(code: i32) -> Option<&'static str> {
    match code {
        EXIT_SETUP_FAILED => Some("its setup after fork failed"),
        EXIT_NO_DISPATCHER => Some("it could not start its dispatcher thread"),
        EXIT_SETUP_PANICKED => Some("its setup after fork panicked"),
        EXIT_ENTRY_PANICKED => Some("its entry function panicked"),
        _ => None,
    }
}

/// Set in a process forked from a child (a handler's `fork()`, Python's
/// `os.fork()`): it has the child's memory but is not the child. (A
/// `Command` that runs a program replaces that memory anyway.)
static FORKED_OFF: AtomicBool = AtomicBool::new(false);

/// The child's `pthread_atfork` child handler: runs in every process
/// forked from the child (async-signal-safe: a syscall and a store).
extern "C" fn mark_forked_off() {
    if let Some(ctx) = CHILD.get() {
        if nix::unistd::getpid().as_raw() as u32 != ctx.info.pid {
            FORKED_OFF.store(true, Relaxed);
        }
    }
}

/// Runs a freshly forked child to its end. Never returns into the master's
/// code, not even by unwinding: everything the child runs (the child fork
/// hook included) runs under `catch_unwind`, and the child always leaves
/// through `_exit`, so the master's values in this copy of its memory are
/// never dropped and nothing the master registered with `atexit` runs.
pub(crate) fn child_main(setup: ChildSetup<'_>) -> ! {
    let me = setup.member.me;
    match catch_unwind(AssertUnwindSafe(move || run_child(setup))) {
        Ok(code) => sys::leave(code),
        Err(_) => {
            tracing::error!(
                "{me}: panicked while starting (in the child fork hook or flare's setup); \
                 exiting with status {EXIT_SETUP_PANICKED}"
            );
            sys::leave(EXIT_SETUP_PANICKED)
        }
    }
}

/// The child's life; returns its exit status.
fn run_child(setup: ChildSetup<'_>) -> i32 {
    if let Some(hook) = setup.hook {
        hook();
    }
    sys::close_inherited(&setup.inherited);
    if let Err(e) = sys::reset_child_signals() {
        tracing::error!("{}: {}", setup.member.me, e.report());
        return EXIT_SETUP_FAILED;
    }
    if nix::unistd::getppid().as_raw() as u32 != setup.master_pid {
        // The master died before the parent-death signal was armed.
        return EXIT_OK;
    }
    let entry = setup.entry;
    let me = setup.member.me;
    let info = match install(setup.member) {
        Ok(info) => info,
        Err(e) => {
            tracing::error!("{me}: {}", e.report());
            return if CHILD.get().is_some() {
                // The context is in place: only the thread failed.
                EXIT_NO_DISPATCHER
            } else {
                EXIT_SETUP_FAILED
            };
        }
    };
    match entry {
        Some(entry) => match catch_unwind(AssertUnwindSafe(|| entry(info))) {
            Ok(()) => {
                tracing::info!("{}: entry function returned; exiting", info.proc_id());
                EXIT_OK
            }
            Err(_) => {
                tracing::error!("{}: entry function panicked; exiting", info.proc_id());
                EXIT_ENTRY_PANICKED
            }
        },
        // No entry function: serve signals until the master ends us (a
        // spooler with a spool directory is given an entry that runs it).
        None => loop {
            std::thread::park();
        },
    }
}

/// What a process needs to become a member: forked, or attached.
pub(crate) struct Install {
    pub(crate) me: ProcId,
    /// Its slot in the master's tables and in shared memory.
    pub(crate) slot: Slot,
    pub(crate) topo: Arc<Topology>,
    pub(crate) shm: Shm,
    pub(crate) chan_a: Duplex,
    pub(crate) chan_b: Duplex,
    /// [`crate::Options::busy_poll`].
    pub(crate) busy_poll: Duration,
    /// Joined through the attach socket (not forked by the master).
    pub(crate) attached: bool,
    /// The master's pid.
    pub(crate) master_pid: u32,
}

/// Makes this process a member: its context, and the dispatcher thread
/// that runs its handlers.
///
/// # Errors
///
/// [`Error::Io`] when the dispatcher thread cannot start; [`Error::Config`]
/// when this process is a member already.
pub(crate) fn install(i: Install) -> Result<ProcessInfo> {
    let info = ProcessInfo {
        role: i.me.role,
        id: i.me.id,
        pid: std::process::id(),
    };
    sys::set_nonblocking(&i.chan_a.rx)?;
    sys::set_nonblocking(&i.chan_b.tx)?;
    sys::at_fork_in_child(mark_forked_off)?;
    let ctx = ChildCtx {
        info,
        slot: i.slot,
        topo: i.topo,
        shm: i.shm,
        a_rx: i.chan_a.rx,
        a_tx: File::from(i.chan_a.tx),
        chan_b: Mutex::new(ChanB {
            tx: i.chan_b.tx,
            rx: File::from(i.chan_b.rx),
        }),
        next_request: AtomicU64::new(1),
        waits: WaitHub {
            spin: i.busy_poll,
            ..WaitHub::default()
        },
        attached: i.attached,
        master_pid: i.master_pid,
    };
    if CHILD.set(ctx).is_err() {
        return Err(Error::Config(match CHILD.get() {
            Some(c) => format!("this process is already {} of a group", c.info.proc_id()),
            None => "this process is already a member of a group".into(),
        }));
    }
    let Some(ctx) = CHILD.get() else {
        return Err(Error::Config("the member context was not kept".into()));
    };
    std::thread::Builder::new()
        .name("flare-dispatch".into())
        .spawn(move || dispatcher(ctx))
        .map_err(|e| Error::io("starting the dispatcher thread", e))?;
    Ok(info)
}

/// Counts the handler running now in this process as having raised an
/// exception: for language bindings whose handlers report failure instead
/// of panicking (the Python package calls it when a handler raises). It
/// shows as `exceptions` in the summary and in the stats document. A Rust
/// handler that fails panics instead (counted as `panics`). Does nothing
/// outside a flare child.
pub fn note_handler_exception() {
    if let Some(ctx) = context().and_then(|c| c.own().ok()) {
        ctx.shm.slot(ctx.slot).exceptions.fetch_add(1, Relaxed);
    }
}

/// A delivery waiting for the dispatcher.
#[derive(Clone, Copy, Debug)]
struct Delivery {
    rx: Received,
    seq: u64,
    /// From a pool: the master wants the credit back.
    pooled: bool,
}

/// The dispatcher thread's reading state. Kept in a thread-local so a
/// handler that makes a request (on channel A) can read its reply while
/// queueing the deliveries that arrive meanwhile.
struct Dispatch {
    busy: BusyPoll,
    decoder: Decoder,
    queue: VecDeque<Delivery>,
    replies: Vec<(u64, Reply)>,
    buf: Vec<u8>,
}

thread_local! {
    static DISPATCH: RefCell<Option<Dispatch>> = const { RefCell::new(None) };
}

fn on_dispatcher() -> bool {
    DISPATCH.with(|d| d.borrow().is_some())
}

/// Handlers run at most this long without an ack going out while pool
/// credit is owed, so it comes back soon after a slow handler...
const ACK_EVERY_NS: u64 = 1_000_000;
/// ...and at most this many deliveries go unacknowledged in a fast stream.
const ACK_BATCH: u64 = 256;

fn dispatcher(ctx: &'static ChildCtx) {
    DISPATCH.with(|d| {
        *d.borrow_mut() = Some(Dispatch {
            busy: BusyPoll::new(ctx.waits.spin),
            decoder: Decoder::default(),
            queue: VecDeque::new(),
            replies: Vec::new(),
            buf: vec![0; 64 * 1024],
        })
    });
    let mut last_seq = 0u64;
    let mut acked = 0u64;
    // A pooled delivery was handled and not acked yet: its credit is owed.
    let mut owed = false;
    // One clock read per delivery: a handler's end is the next one's start.
    let mut now_ns = monotonic_ns();
    let mut last_ack_ns = now_ns;
    loop {
        let next = DISPATCH.with(|d| d.borrow_mut().as_mut().and_then(|d| d.queue.pop_front()));
        let result = match next {
            Some(delivery) => {
                now_ns = ctx.handle(delivery, now_ns);
                last_seq = delivery.seq;
                owed |= delivery.pooled;
                if owed && (last_seq - acked >= ACK_BATCH || now_ns - last_ack_ns >= ACK_EVERY_NS) {
                    owed = false;
                    last_ack_ns = now_ns;
                    ctx.ack(last_seq, &mut acked)
                } else {
                    Ok(())
                }
            }
            None => {
                // Queue empty: ack when credit is owed or the master waits
                // for us; otherwise `done_seq` says it all.
                fence(SeqCst);
                let wanted = ctx.shm.slot(ctx.slot).acks_wanted.load(Relaxed) != 0;
                let acking = if owed || wanted {
                    owed = false;
                    ctx.ack(last_seq, &mut acked)
                } else {
                    Ok(())
                };
                acking.and_then(|()| {
                    ctx.read_more()?;
                    now_ns = monotonic_ns();
                    last_ack_ns = now_ns;
                    Ok(())
                })
            }
        };
        if let Err(e) = result {
            if ctx.attached {
                tracing::warn!(
                    "{}: the flare master went away ({}); signals stop here, the process goes on",
                    ctx.info.proc_id(),
                    e.report()
                );
                return;
            }
            master_gone(ctx, &e);
        }
    }
}

/// Where the master's notices go (the fleet bridge sets it); what
/// arrives before it is set waits here.
type NoticeSink = Box<dyn Fn(Notice) + Send + Sync>;
static NOTICE_SINK: OnceLock<NoticeSink> = OnceLock::new();
static EARLY_NOTICES: Mutex<Vec<Notice>> = Mutex::new(Vec::new());

/// Sets where this child's notices from the master go (once), and hands
/// it what came before.
#[cfg_attr(not(feature = "fleet"), allow(dead_code))]
pub(crate) fn set_notice_sink(f: impl Fn(Notice) + Send + Sync + 'static) {
    let mut early = EARLY_NOTICES.lock().unwrap_or_else(PoisonError::into_inner);
    if NOTICE_SINK.set(Box::new(f)).is_ok() {
        if let Some(sink) = NOTICE_SINK.get() {
            for n in early.drain(..) {
                sink(n);
            }
        }
    }
}

fn notice(n: Notice) {
    match NOTICE_SINK.get() {
        Some(sink) => sink(n),
        None => {
            let mut early = EARLY_NOTICES.lock().unwrap_or_else(PoisonError::into_inner);
            // Set meanwhile: the drain has run, hand it over directly.
            match NOTICE_SINK.get() {
                Some(sink) => sink(n),
                None if early.len() < 1024 => early.push(n),
                None => tracing::warn!("notice from the master dropped: nobody takes them"),
            }
        }
    }
}

/// Ends the process when the master has gone away: there is nobody left to
/// route signals, and the master's successor will fork a fresh group.
fn master_gone(ctx: &ChildCtx, e: &Error) -> ! {
    tracing::debug!("{}: {}; exiting", ctx.info.proc_id(), e.report());
    sys::leave(EXIT_OK)
}

impl ChildCtx {
    /// `Ok` in the child itself; in a process forked from it (which has
    /// the child's memory, its identity and its channels, but is not the
    /// group's member) an error that says so, so that it neither claims
    /// the child's identity nor writes into the child's channels.
    ///
    /// The child's `fork()` handler compares the new process's pid with
    /// the one recorded at the child's start and sets a flag, so this
    /// check is one load on the `send()` path rather than a `getpid()`.
    pub(crate) fn own(&self) -> Result<&Self> {
        if FORKED_OFF.load(Relaxed) {
            return Err(Error::ForkedFromMember {
                pid: std::process::id(),
                member: self.info.proc_id().to_string(),
                member_pid: self.info.pid,
            });
        }
        Ok(self)
    }

    /// Runs the handler of one delivery that starts at `started` (ns);
    /// returns the time it ended.
    fn handle(&self, d: Delivery, started: u64) -> u64 {
        let st = self.shm.slot(self.slot);
        let num = d.rx.num;
        // Start time and sequence first, then the signal (release): a master
        // that sees the signal also sees this start and sequence or later
        // ones, so it never times a handler from an older start.
        st.handler_started_ns.store(started, Relaxed);
        st.current_seq.store(d.seq, Relaxed);
        st.current.store(num as u32 + 1, Release);
        if let Some(h) = handlers::get(num) {
            if catch_unwind(AssertUnwindSafe(|| h(d.rx))).is_err() {
                st.panics.fetch_add(1, Relaxed);
                tracing::error!(
                    "{}: handler of signal {num} panicked (raised by {})",
                    self.info.proc_id(),
                    d.rx.origin
                );
            }
        }
        // Done before idle: a master reading after a crash sees this
        // delivery as handled rather than as started.
        st.done_seq.store(d.seq, Release);
        st.current.store(0, Release);
        let ended = monotonic_ns();
        bump(&st.busy_ns, ended.saturating_sub(started));
        bump(&st.handled_by_num[num as usize], 1);
        bump(&st.handled, 1);
        st.last_received.store(num as u32 + 1, Relaxed);
        self.waits.record(d.rx);
        // A mule waiting in mule_get_msg(signals) returns, as in uWSGI.
        crate::handler_done::signal_handled();
        ended
    }

    fn ack(&self, seq: u64, acked: &mut u64) -> Result<()> {
        if seq != *acked {
            write_all(&self.a_tx, &Frame::Ack { seq }.encode())?;
            *acked = seq;
        }
        Ok(())
    }

    /// Reads what channel A has (waiting for it), queueing deliveries and
    /// replies.
    fn read_more(&self) -> Result<()> {
        DISPATCH.with(|cell| {
            let mut guard = cell.borrow_mut();
            let Some(d) = guard.as_mut() else {
                return Err(Error::Protocol("not the dispatcher thread".into()));
            };
            let mut idle = Episode::default();
            let mut waited = false;
            let n = loop {
                match nix::unistd::read(self.a_rx.as_fd(), &mut d.buf) {
                    Ok(0) => return Err(Error::MasterGone),
                    Ok(n) => break n,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(nix::errno::Errno::EAGAIN) => {
                        waited = true;
                        match d.busy.idle(&mut idle) {
                            Idle::Look => std::thread::yield_now(),
                            Idle::Sleep => sys::wait_fd(&self.a_rx, false)?,
                        }
                    }
                    Err(e) => return Err(Error::io("reading from the master", e)),
                }
            };
            if waited {
                d.busy.found(&mut idle);
            }
            let Dispatch {
                busy: _,
                decoder,
                queue,
                replies,
                buf,
            } = d;
            let me = self.info.proc_id();
            decoder.feed(&buf[..n], &mut |m| {
                match m {
                    Msg::Frame(Frame::Deliver {
                        num,
                        attempt,
                        origin,
                        seq,
                        pooled,
                    }) => queue.push_back(Delivery {
                        rx: Received {
                            num,
                            origin,
                            attempt,
                        },
                        seq,
                        pooled,
                    }),
                    Msg::Payload {
                        frame: Frame::Reply { id, .. },
                        body,
                    } => match serde_json::from_slice(body) {
                        Ok(r) => replies.push((id, r)),
                        Err(e) => tracing::error!("{me}: unreadable reply from the master: {e}"),
                    },
                    Msg::Payload {
                        frame: Frame::Notice { .. },
                        body,
                    } => match serde_json::from_slice(body) {
                        Ok(n) => notice(n),
                        Err(e) => tracing::error!("{me}: unreadable notice from the master: {e}"),
                    },
                    other => tracing::error!("{me}: unexpected message from the master: {other:?}"),
                }
                true
            })?;
            Ok(())
        })
    }

    /// Raises `num` through the master. `wait_for_room` chooses between
    /// `send()` (waits while the channel is full) and `try_send()`;
    /// `Ok(false)`: not sent, the channel is full.
    pub(crate) fn raise(&self, num: u8, wait_for_room: bool) -> Result<bool> {
        self.own()?;
        let frame = Frame::Raise { num }.encode();
        if on_dispatcher() {
            // Channel A is always read by the master: never refused.
            write_all(&self.a_tx, &frame)?;
        } else {
            let b = self.chan_b.lock().unwrap_or_else(PoisonError::into_inner);
            // A frame is far below PIPE_BUF: a write puts all of it in the
            // pipe or nothing.
            if !write_nonblocking(&b.tx, &frame)? {
                if !wait_for_room {
                    return Ok(false);
                }
                write_waiting(&b.tx, &frame)?;
            }
        }
        self.shm.slot(self.slot).raised.fetch_add(1, Relaxed);
        Ok(true)
    }

    /// One request/reply round trip with the master.
    pub(crate) fn request(&self, req: &Request) -> Result<Reply> {
        self.own()?;
        let id = self.next_request.fetch_add(1, Relaxed);
        let mut buf = Vec::new();
        encode_with_payload(false, id, req, &mut buf)?;
        if on_dispatcher() {
            write_all(&self.a_tx, &buf)?;
            loop {
                let reply = DISPATCH.with(|cell| {
                    let mut g = cell.borrow_mut();
                    let replies = &mut g.as_mut()?.replies;
                    let at = replies.iter().position(|(rid, _)| *rid == id)?;
                    Some(replies.swap_remove(at).1)
                });
                if let Some(r) = reply {
                    return Ok(r);
                }
                self.read_more()?;
            }
        }
        let b = self.chan_b.lock().unwrap_or_else(PoisonError::into_inner);
        write_waiting(&b.tx, &buf)?;
        let mut head = [0u8; FRAME_LEN];
        read_exact(&b.rx, &mut head)?;
        match Frame::decode(&head)? {
            Frame::Reply { id: rid, len } if rid == id => {
                let mut body = vec![0; len as usize];
                read_exact(&b.rx, &mut body)?;
                serde_json::from_slice(&body).map_err(|e| Error::Protocol(e.to_string()))
            }
            other => Err(Error::Protocol(format!(
                "expected the reply to request {id}, got {other:?}"
            ))),
        }
    }

    /// Blocks until `num` (or any signal, for `None`) is received after the
    /// call, or the timeout passes.
    pub(crate) fn wait(
        &self,
        num: Option<u8>,
        timeout: Option<Duration>,
    ) -> Result<Option<Received>> {
        self.own()?;
        if on_dispatcher() {
            return Err(Error::Wait(
                "wait() called inside a signal handler: the handler would block the very \
                 deliveries it waits for; wait from another thread or the entry function"
                    .into(),
            ));
        }
        Ok(self.waits.wait(num, timeout))
    }

    /// The last signal this process received.
    pub(crate) fn last_received(&self) -> Option<Received> {
        unpack(self.waits.last_any.load(SeqCst))
    }
}

fn channel_error(e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::UnexpectedEof => Error::MasterGone,
        _ => Error::io("writing to the master", e),
    }
}

fn write_all(mut f: &File, buf: &[u8]) -> Result<()> {
    f.write_all(buf).map_err(channel_error)
}

fn read_exact(mut f: &File, buf: &mut [u8]) -> Result<()> {
    f.read_exact(buf).map_err(channel_error)
}

/// One write of a whole frame to a non-blocking pipe; false when the pipe
/// is full.
fn write_nonblocking(fd: &OwnedFd, frame: &[u8]) -> Result<bool> {
    loop {
        match nix::unistd::write(fd, frame) {
            Ok(n) if n == frame.len() => return Ok(true),
            Ok(n) => return write_waiting(fd, &frame[n..]).map(|()| true),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EAGAIN) => return Ok(false),
            Err(e) => return Err(channel_error(e.into())),
        }
    }
}

/// Writes all of `buf` to a non-blocking pipe, waiting for room as needed.
fn write_waiting(fd: &OwnedFd, mut buf: &[u8]) -> Result<()> {
    while !buf.is_empty() {
        match nix::unistd::write(fd, buf) {
            Ok(n) => buf = &buf[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::EAGAIN) => sys::wait_fd(fd, true)?,
            Err(e) => return Err(channel_error(e.into())),
        }
    }
    Ok(())
}

/// Where `wait()` callers sleep. Counters are atomics so the dispatcher pays
/// a lock only when somebody waits.
struct WaitHub {
    counts: [AtomicU64; 256],
    total: AtomicU64,
    last: [AtomicU64; 256],
    last_any: AtomicU64,
    waiters: AtomicUsize,
    lock: Mutex<()>,
    cv: Condvar,
    /// How long a waiter looks before it sleeps ([`crate::Options::busy_poll`]).
    spin: Duration,
}

impl Default for WaitHub {
    fn default() -> Self {
        WaitHub {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            total: AtomicU64::new(0),
            last: std::array::from_fn(|_| AtomicU64::new(0)),
            last_any: AtomicU64::new(0),
            waiters: AtomicUsize::new(0),
            lock: Mutex::new(()),
            cv: Condvar::new(),
            spin: Duration::ZERO,
        }
    }
}

impl WaitHub {
    /// Records a handled delivery. Called by the dispatcher only (one
    /// writer: the counters are bumped with a load and a store).
    fn record(&self, rx: Received) {
        let packed = pack(rx);
        let n = rx.num as usize;
        self.last[n].store(packed, Relaxed);
        self.last_any.store(packed, Relaxed);
        // Release: a waiter that sees the new count sees `last` too.
        self.counts[n].store(self.counts[n].load(Relaxed) + 1, Release);
        self.total.store(self.total.load(Relaxed) + 1, Release);
        // Counts before `waiters`, as a waiter does the opposite: one of us
        // sees the other.
        fence(SeqCst);
        if self.waiters.load(Relaxed) > 0 {
            drop(self.lock.lock().unwrap_or_else(PoisonError::into_inner));
            self.cv.notify_all();
        }
    }

    /// Waits until `num` (any signal for `None`) was received since the
    /// calling thread's previous wait for it returned (since the process
    /// started, for its first wait). So `send(); wait()` cannot miss a
    /// reply that lands before `wait()` is called, and arrivals between two
    /// waits wake the next one at once (coalesced into one wake-up; every
    /// handler still runs).
    fn wait(&self, num: Option<u8>, timeout: Option<Duration>) -> Option<Received> {
        let key = num.map_or(256, usize::from);
        let (counter, last) = match num {
            Some(n) => (&self.counts[n as usize], &self.last[n as usize]),
            None => (&self.total, &self.last_any),
        };
        let seen = CURSORS.with(|c| c.borrow().get(&key).copied().unwrap_or(0));
        let deadline = timeout.map(|t| Instant::now() + t);
        // Look for a while before sleeping (busy polling), while it pays
        // for this thread.
        let mut busy = WAIT_POLL
            .with(|b| b.get())
            .unwrap_or(BusyPoll::new(self.spin));
        let mut idle = Episode::default();
        let mut arrived = None;
        loop {
            let now_count = counter.load(SeqCst);
            if now_count > seen {
                arrived = Some(now_count);
                break;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) || busy.idle(&mut idle) == Idle::Sleep
            {
                break;
            }
            std::thread::yield_now();
        }
        if arrived.is_none() {
            self.waiters.fetch_add(1, SeqCst);
            let mut guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
            loop {
                let now_count = counter.load(SeqCst);
                if now_count > seen {
                    arrived = Some(now_count);
                    break;
                }
                match deadline {
                    None => {
                        guard = self.cv.wait(guard).unwrap_or_else(PoisonError::into_inner);
                    }
                    Some(d) => {
                        let now = Instant::now();
                        if now >= d {
                            break;
                        }
                        guard = self
                            .cv
                            .wait_timeout(guard, d - now)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0;
                    }
                }
            }
            drop(guard);
            self.waiters.fetch_sub(1, SeqCst);
        }
        let got = arrived.and_then(|count| {
            // Found while looking, or woken after a sleep that may have
            // been short: either tells `busy` whether looking pays.
            busy.found(&mut idle);
            CURSORS.with(|c| c.borrow_mut().insert(key, count));
            unpack(last.load(SeqCst))
        });
        WAIT_POLL.with(|b| b.set(Some(busy)));
        got
    }
}

thread_local! {
    /// Per thread: its busy-poll state in `wait()`.
    static WAIT_POLL: std::cell::Cell<Option<BusyPoll>> = const { std::cell::Cell::new(None) };
    /// Per thread: how many of each signal (key 256: of any) had arrived
    /// when its last wait returned.
    static CURSORS: RefCell<std::collections::HashMap<usize, u64>> =
        RefCell::new(std::collections::HashMap::new());
}

const VALID: u64 = 1 << 63;

fn pack(rx: Received) -> u64 {
    VALID | rx.num as u64 | (rx.attempt as u64) << 8 | (rx.origin.encode() as u64) << 16
}

fn unpack(w: u64) -> Option<Received> {
    (w & VALID != 0).then(|| Received {
        num: w as u8,
        attempt: (w >> 8) as u8,
        origin: Origin::decode((w >> 16) as u32),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_packs_losslessly() {
        let rx = Received {
            num: 201,
            attempt: 3,
            origin: Origin::Process(ProcId::new(Role::Spooler, 9)),
        };
        assert_eq!(unpack(pack(rx)), Some(rx));
        assert_eq!(unpack(0), None);
    }

    fn rx(num: u8) -> Received {
        Received {
            num,
            origin: Origin::Remote,
            attempt: 1,
        }
    }

    #[test]
    fn waiters_wake_on_their_signal_only() {
        let hub = Arc::new(WaitHub::default());
        let h = hub.clone();
        let t = std::thread::spawn(move || h.wait(Some(7), Some(Duration::from_secs(20))));
        while hub.waiters.load(SeqCst) == 0 {
            std::thread::yield_now();
        }
        hub.record(rx(8));
        hub.record(rx(7));
        assert_eq!(t.join().unwrap(), Some(rx(7)));
        assert_eq!(hub.wait(Some(9), Some(Duration::from_millis(1))), None);
    }

    #[test]
    fn a_busy_polling_waiter_sees_arrivals_while_looking_and_after_sleeping() {
        let hub = Arc::new(WaitHub {
            spin: Duration::from_millis(2),
            ..WaitHub::default()
        });
        let rounds = 200u64;
        let h = hub.clone();
        let (took, taken) = std::sync::mpsc::channel();
        // One waiter (its cursor is per thread), one wait per round.
        let waiter = std::thread::spawn(move || {
            for _ in 0..rounds {
                let got = h.wait(Some(4), Some(Duration::from_secs(20)));
                took.send(got).unwrap();
            }
        });
        for round in 0..rounds {
            // Odd rounds: record once the waiter sleeps (past its busy-poll
            // window); even rounds: at once, most often while it looks.
            if round % 2 == 1 {
                while hub.waiters.load(SeqCst) == 0 {
                    std::thread::yield_now();
                }
            }
            hub.record(rx(4));
            let got = taken.recv_timeout(Duration::from_secs(20));
            assert_eq!(got, Ok(Some(rx(4))), "round {round}");
        }
        waiter.join().unwrap();
    }

    #[test]
    fn a_signal_that_arrived_before_the_wait_is_not_missed() {
        let hub = WaitHub::default();
        hub.record(rx(3)); // the reply lands before wait() is called
        let short = Some(Duration::from_millis(1));
        assert_eq!(hub.wait(Some(3), short), Some(rx(3)));
        // Consumed: the next wait needs a new arrival...
        assert_eq!(hub.wait(Some(3), short), None);
        // ...and arrivals in between coalesce into one wake-up.
        hub.record(rx(3));
        hub.record(rx(3));
        assert_eq!(hub.wait(Some(3), short), Some(rx(3)));
        assert_eq!(hub.wait(Some(3), short), None);
        // wait_any keeps its own cursor.
        assert_eq!(hub.wait(None, short), Some(rx(3)));
        assert_eq!(hub.wait(None, short), None);
    }
}
