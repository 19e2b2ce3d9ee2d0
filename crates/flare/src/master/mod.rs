//! The master: configuration, registration before `run()`, and `run()`.
//!
//! `Master::builder()` describes the process group; `build()` maps the
//! shared memory and makes this process the master, so handlers registered
//! from then on (before `run()`) are inherited by every child. `run()` forks
//! the children and runs the single-threaded event loop in [`engine`] until
//! a graceful shutdown.

mod admin;
mod attach;
mod conn;
mod engine;
mod harakiri;
mod listener;
mod monitor;
mod notify;
mod remote;
mod sources;
mod strays;
mod summary;

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

pub use admin::AdminOptions;
pub use remote::RemoteOptions;
pub use summary::{ProcessSummary, Summary};

use crate::child::{Entry, ProcessInfo};
use crate::error::{Error, Result};
use crate::shm::Shm;
use crate::source_spec::{Source, SourceId};
use crate::sys;
use crate::table::{Owner, Table};
use crate::topology::{FarmSpec, Role, Topology};

/// Tunables of the master. The defaults suit most groups.
///
/// More fields may come: start from the defaults and set what you need
/// (`let mut o = Options::default(); o.prefetch = 8;`), or use the
/// builder's methods.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Options {
    /// Deliveries one child may have queued in the master before more are
    /// dropped (and counted). Default 1,048,576. Raises from outside a
    /// handler stop at `high_water` (the sender waits), so only raises made
    /// inside handlers can reach this bound; `high_water` plus the number
    /// of processes must not exceed it.
    pub outbox_limit: usize,
    /// A child's queue length past which the master stops reading the
    /// channel of a process whose `send()` fills it, so that `send()` waits
    /// instead of the queue growing. Default 65,536.
    pub high_water: usize,
    /// Queue length under which paused senders are read again. Default 16,384.
    pub low_water: usize,
    /// Deliveries a pool member may hold unacknowledged before the pool
    /// skips it ("first available"). Default 4.
    pub prefetch: usize,
    /// Deliveries of one signal before it is dead-lettered, when the
    /// processes it was given to keep dying. Default 5.
    pub max_attempts: u8,
    /// How long a graceful shutdown waits for queued signals to be handled.
    /// Default 5 s.
    pub drain_timeout: Duration,
    /// How long children get after SIGTERM before SIGKILL. Default 5 s.
    pub kill_timeout: Duration,
    /// A child that dies sooner than this after its fork counts as a quick
    /// death: the next respawn waits (exponential backoff). Default 1 s.
    pub min_lifetime: Duration,
    /// Longest wait before a respawn. Default 10 s.
    pub max_backoff: Duration,
    /// Handler time limits per role (uWSGI's harakiri): a child whose
    /// current handler has run longer is killed and respawned, and what it
    /// was handling is given again. None by default.
    pub harakiri: Harakiri,
    /// Stall limits per role: a child that makes no progress for this long
    /// while deliveries wait for it (stopped with SIGSTOP, deadlocked, or
    /// in one handler longer than this while more work queues behind it)
    /// is killed with SIGKILL and respawned; its queue goes to its
    /// successor, nothing is lost, and the stall is counted (`stalls`).
    /// This bounds how long a sender held back by its full queue waits.
    /// Default 30 s for every role; `None` turns it off for a role.
    pub stall: RoleLimits,
    /// How long a process that just had work keeps looking for more
    /// before it sleeps (busy polling, yielding the CPU between looks):
    /// the master after each turn of its loop, a child's dispatcher after
    /// its last handler, a thread in `wait()`. A signal that arrives
    /// within the window is picked up without a wake-up from sleep, which
    /// on a virtual machine costs tens of microseconds per hop. An idle
    /// group still sleeps: the window only follows activity. The price is
    /// CPU time: up to this long per burst of activity, per process
    /// involved. Default 50 µs (Linux's suggested `net.core.busy_poll`);
    /// `Duration::ZERO` turns it off.
    pub busy_poll: Duration,
    /// A signal number sent to a child past its time limit, this long
    /// before the SIGKILL, so that it can write where it is stuck (Python:
    /// `faulthandler.register`). None by default (straight to SIGKILL).
    pub harakiri_stack_dump: Option<(i32, Duration)>,
    /// How long deliveries addressed to an attach slot whose process left
    /// wait for the next process in that slot; then they are
    /// dead-lettered (counted and logged) and the slot is vacant. Pool
    /// deliveries the process held go to another member at once. Default
    /// 30 s.
    pub attach_hold: Duration,
}

/// A time limit per role (handler time, stall time); `None` means no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoleLimits {
    /// For workers (uWSGI `--harakiri`).
    pub worker: Option<Duration>,
    /// For mules (uWSGI `--mule-harakiri`).
    pub mule: Option<Duration>,
    /// For spoolers (uWSGI `--spooler-harakiri`).
    pub spooler: Option<Duration>,
}

/// Handler time limits per role (uWSGI's harakiri).
pub type Harakiri = RoleLimits;

impl RoleLimits {
    /// The same limit for every role.
    pub fn all(limit: Option<Duration>) -> Self {
        RoleLimits {
            worker: limit,
            mule: limit,
            spooler: limit,
        }
    }

    /// The limit for a role.
    pub fn for_role(&self, role: Role) -> Option<Duration> {
        match role {
            Role::Worker => self.worker,
            Role::Mule => self.mule,
            Role::Spooler => self.spooler,
            Role::Master | Role::Bridge => None,
        }
    }

    /// Sets the limit for a role.
    pub fn set(&mut self, role: Role, limit: Option<Duration>) {
        match role {
            Role::Worker => self.worker = limit,
            Role::Mule => self.mule = limit,
            Role::Spooler => self.spooler = limit,
            Role::Master | Role::Bridge => {}
        }
    }

    pub(crate) fn any(&self) -> bool {
        self.worker.or(self.mule).or(self.spooler).is_some()
    }
}

/// Default [`Options::stall`] limit.
pub const DEFAULT_STALL_LIMIT: Duration = Duration::from_secs(30);

impl Default for Options {
    fn default() -> Self {
        Options {
            outbox_limit: 1 << 20,
            high_water: 1 << 16,
            low_water: 1 << 14,
            prefetch: 4,
            max_attempts: 5,
            drain_timeout: Duration::from_secs(5),
            kill_timeout: Duration::from_secs(5),
            min_lifetime: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            harakiri: Harakiri::default(),
            stall: RoleLimits::all(Some(DEFAULT_STALL_LIMIT)),
            busy_poll: Duration::from_micros(50),
            harakiri_stack_dump: None,
            attach_hold: Duration::from_secs(30),
        }
    }
}

/// Attach slots once [`MasterBuilder::attach`] is set, unless
/// [`MasterBuilder::attach_workers`] says otherwise.
pub const DEFAULT_ATTACH_SLOTS: u32 = 8;

/// Functions the master calls around every `fork()`, for runtimes that
/// must prepare for it (an embedded CPython calls `PyOS_BeforeFork`,
/// `PyOS_AfterFork_Parent` and `PyOS_AfterFork_Child` here).
#[derive(Clone, Copy, Debug)]
pub struct ForkHooks {
    /// In the master, just before `fork()`.
    pub before: fn(),
    /// In the master, just after `fork()` (also when the fork failed).
    /// It must not start a thread: the next fork would be refused.
    pub parent: fn(),
    /// In the child, first thing after `fork()`. It runs inside the
    /// child's own main: if it panics, the child exits (status 72) and is
    /// respawned; the panic never unwinds into the master's code.
    pub child: fn(),
}

/// Entry functions by role.
#[derive(Default)]
pub(crate) struct Entries {
    pub(crate) worker: Option<Entry>,
    pub(crate) mule: Option<Entry>,
    pub(crate) spooler: Option<Entry>,
    /// The fleet bridge's life (set by [`MasterBuilder::fleet`]).
    pub(crate) bridge: Option<Entry>,
    /// The fleet's and this node's names, for the stats document.
    pub(crate) fleet_names: Option<(String, String)>,
    pub(crate) fork_hooks: Option<ForkHooks>,
}

impl fmt::Debug for Entries {
    /// Which entry functions and hooks are set (functions do not print).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entries")
            .field("worker", &self.worker.is_some())
            .field("mule", &self.mule.is_some())
            .field("spooler", &self.spooler.is_some())
            .field("bridge", &self.bridge.is_some())
            .field("fork_hooks", &self.fork_hooks)
            .finish()
    }
}

impl Entries {
    pub(crate) fn for_role(&self, role: Role) -> Option<&Entry> {
        match role {
            Role::Worker => self.worker.as_ref(),
            Role::Mule => self.mule.as_ref(),
            Role::Spooler => self.spooler.as_ref(),
            Role::Bridge => self.bridge.as_ref(),
            Role::Master => None,
        }
    }
}

/// Describes a process group; [`MasterBuilder::build`] makes the master.
///
/// ```no_run
/// use flare::{Master, Signal};
///
/// let master = Master::builder()
///     .workers(4)
///     .mules(2)
///     .farm("reports", [1, 2])
///     .spoolers(1)
///     .worker_entry(|me| {
///         Signal::new(1).send().unwrap();
///         flare::serve_forever();
///     })
///     .build()?;
/// Signal::new(1).register_handler("workers", |rx| println!("got {}", rx.num))?;
/// let summary = master.run()?;
/// println!("{}", summary.table());
/// # Ok::<(), flare::Error>(())
/// ```
#[must_use]
pub struct MasterBuilder {
    topo: Topology,
    entries: Entries,
    opts: Options,
    remote: Option<RemoteOptions>,
    stats: Option<String>,
    control: Option<String>,
    metrics: Option<String>,
    /// Largest mule message, bytes (see [`MasterBuilder::mule_msg_size`]).
    mule_msg_size: usize,
    admin: AdminOptions,
    allow_uids: Vec<u32>,
    spool: crate::spool::Setup,
    spool_handler: Option<crate::SpoolHandler>,
    locks: u32,
    fleet: Option<crate::fleet::FleetOptions>,
    attach: Option<String>,
}

impl fmt::Debug for MasterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterBuilder")
            .field("topo", &self.topo)
            .field("entries", &self.entries)
            .field("opts", &self.opts)
            .field("remote", &self.remote)
            .field("stats", &self.stats)
            .field("control", &self.control)
            .field("mule_msg_size", &self.mule_msg_size)
            .field("admin", &self.admin)
            .field("allow_uids", &self.allow_uids)
            .field("spool", &self.spool)
            .field(
                "spool_handler",
                &self.spool_handler.as_ref().map(|_| "<fn>"),
            )
            .field("locks", &self.locks)
            .field("fleet", &self.fleet)
            .field("attach", &self.attach)
            .finish()
    }
}

impl MasterBuilder {
    /// Number of workers (uWSGI `--workers`). Default 1.
    pub fn workers(mut self, n: u32) -> Self {
        self.topo.workers = n;
        self
    }

    /// Listens on `path` for processes flare did not fork (gunicorn,
    /// uvicorn or granian workers, a Node process) that join the group as
    /// workers: a Unix socket path, or `@name` for an abstract socket,
    /// created 0600; only root, the master's user and
    /// [`MasterBuilder::allow_uids`] may attach. Each joining process takes
    /// a free attach slot ([`MasterBuilder::attach_workers`], default 8);
    /// from then on it is `workerN` like a forked worker. In the process,
    /// call [`crate::attach()`].
    ///
    /// ```no_run
    /// let master = flare::Master::builder()
    ///     .workers(0) // the web server forks the workers
    ///     .mules(1)
    ///     .attach("/run/app/flare.sock")
    ///     .attach_workers(4)
    ///     .build()?;
    /// # Ok::<(), flare::Error>(())
    /// ```
    pub fn attach(mut self, path: impl Into<String>) -> Self {
        self.attach = Some(path.into());
        if self.topo.attached == 0 {
            self.topo.attached = DEFAULT_ATTACH_SLOTS;
        }
        self
    }

    /// Attach slots: how many attached processes may be in the group at
    /// once (numbered after the forked workers: with 2 workers and 4 attach
    /// slots, attached processes are worker3 to worker6). A slot freed by
    /// a process that left is taken by the next one that joins. Default 8
    /// once [`MasterBuilder::attach`] is set.
    pub fn attach_workers(mut self, n: u32) -> Self {
        self.topo.attached = n;
        self
    }

    /// Number of mules (uWSGI `--mule`, repeated). Default 0.
    pub fn mules(mut self, n: u32) -> Self {
        self.topo.mules = n;
        self
    }

    /// Declares a farm of mules (uWSGI `--farm NAME:1,2`). Farms are numbered
    /// 1.. in declaration order (`farm1`); a mule may be in several farms.
    pub fn farm(mut self, name: impl Into<String>, mules: impl IntoIterator<Item = u32>) -> Self {
        self.topo.farms.push(FarmSpec {
            name: name.into(),
            mules: mules.into_iter().collect(),
        });
        self
    }

    /// Number of spoolers (uWSGI `--spooler`). Default 0.
    pub fn spoolers(mut self, n: u32) -> Self {
        self.topo.spoolers = n;
        self
    }

    /// Adds a spool directory (uWSGI `--spooler DIR`, repeatable): it must
    /// exist and be writable. Each directory gets
    /// [`MasterBuilder::spooler_processes`] spoolers, which run its jobs
    /// with the [`MasterBuilder::spooler_handler`]; `flare::spool()` writes
    /// to the first directory unless the job names another. The number of
    /// spoolers follows from these two (leave [`MasterBuilder::spoolers`]
    /// out).
    pub fn spooler_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.spool.dirs.push(dir.into());
        self
    }

    /// Spooler processes per spool directory (uWSGI `--spooler-processes`).
    /// Default 1.
    pub fn spooler_processes(mut self, n: u32) -> Self {
        self.spool.processes = Some(n);
        self
    }

    /// The function spoolers run for each job (uWSGI's `uwsgi.spooler`);
    /// see [`crate::set_spooler_handler`].
    pub fn spooler_handler(
        mut self,
        f: impl Fn(&crate::Task) -> crate::SpoolOutcome + Send + Sync + 'static,
    ) -> Self {
        self.spool_handler = Some(Arc::new(f));
        self
    }

    /// How often spoolers look again at jobs to retry (uWSGI
    /// `--spooler-frequency`). Default 30 s. New jobs never wait for it.
    pub fn spooler_frequency(mut self, every: Duration) -> Self {
        self.spool.frequency = Some(every);
        self
    }

    /// Whether `spool()` fsyncs before it returns (default: yes): the
    /// journal segment, or a job file and its directory. Without, a job
    /// still survives the death of any process (it is whole or absent, and
    /// the page cache outlives every process), but not a crash of the
    /// machine or a power cut; `spool()` is then many times faster on a
    /// real disk. uWSGI does not fsync.
    pub fn spooler_fsync(mut self, on: bool) -> Self {
        self.spool.no_fsync = !on;
        self
    }

    /// Whether plain jobs (no `at`, no `priority`, at most 64 KiB) are
    /// appended to the spool directory's journal (default: yes) instead of
    /// getting a file each. The journal runs many times as many jobs per
    /// second; job files are what uWSGI reads, for a directory that uWSGI
    /// spoolers share. Jobs of either kind run either way.
    pub fn spooler_journal(mut self, on: bool) -> Self {
        self.spool.no_journal = !on;
        self
    }

    /// User locks besides lock 0 (uWSGI `--locks N`): lock numbers are then
    /// 0 to N. Default 0: lock 0 only.
    pub fn locks(mut self, n: u32) -> Self {
        self.locks = n;
        self
    }

    /// The function each worker runs after fork. Without one, a worker
    /// serves signals until shutdown.
    pub fn worker_entry(mut self, f: impl Fn(ProcessInfo) + 'static) -> Self {
        self.entries.worker = Some(Box::new(f));
        self
    }

    /// The function each mule runs after fork (uWSGI `--mule=script`).
    /// Without one, a mule serves signals until shutdown.
    pub fn mule_entry(mut self, f: impl Fn(ProcessInfo) + 'static) -> Self {
        self.entries.mule = Some(Box::new(f));
        self
    }

    /// The function each spooler runs after fork. Without one, a spooler
    /// serves signals until shutdown.
    pub fn spooler_entry(mut self, f: impl Fn(ProcessInfo) + 'static) -> Self {
        self.entries.spooler = Some(Box::new(f));
        self
    }

    /// Functions to call around every `fork()` (see [`ForkHooks`]).
    pub fn fork_hooks(mut self, hooks: ForkHooks) -> Self {
        self.entries.fork_hooks = Some(hooks);
        self
    }

    /// Replaces every tunable at once.
    pub fn options(mut self, opts: Options) -> Self {
        self.opts = opts;
        self
    }

    /// See [`Options::outbox_limit`].
    pub fn outbox_limit(mut self, n: usize) -> Self {
        self.opts.outbox_limit = n;
        self
    }

    /// Limits how long one handler may run in processes of `role` (uWSGI's
    /// harakiri): past it, the child is killed and respawned, the timeout
    /// counted, and the delivery given again (up to `max_attempts`).
    pub fn harakiri(mut self, role: Role, limit: Duration) -> Self {
        self.opts.harakiri.set(role, Some(limit));
        self
    }

    /// Sets how long a process of `role` may make no progress while
    /// deliveries wait for it before it is killed (SIGKILL) and respawned
    /// with its queue ([`Options::stall`]); `None` turns the check off.
    pub fn stall_limit(mut self, role: Role, limit: Option<Duration>) -> Self {
        self.opts.stall.set(role, limit);
        self
    }

    /// See [`Options::harakiri_stack_dump`]: `signal` (a number such as
    /// `libc::SIGURG`) goes to a child past its time limit, `grace` before
    /// the SIGKILL.
    pub fn harakiri_stack_dump(mut self, signal: i32, grace: Duration) -> Self {
        self.opts.harakiri_stack_dump = Some((signal, grace));
        self
    }

    /// See [`Options::max_attempts`].
    pub fn max_attempts(mut self, n: u8) -> Self {
        self.opts.max_attempts = n;
        self
    }

    /// Sets [`Options::high_water`] and [`Options::low_water`].
    pub fn water_marks(mut self, low: usize, high: usize) -> Self {
        self.opts.low_water = low;
        self.opts.high_water = high;
        self
    }

    /// See [`Options::prefetch`].
    pub fn prefetch(mut self, n: usize) -> Self {
        self.opts.prefetch = n;
        self
    }

    /// See [`Options::busy_poll`].
    pub fn busy_poll(mut self, window: Duration) -> Self {
        self.opts.busy_poll = window;
        self
    }

    /// See [`Options::drain_timeout`].
    pub fn drain_timeout(mut self, d: Duration) -> Self {
        self.opts.drain_timeout = d;
        self
    }

    /// See [`Options::kill_timeout`].
    pub fn kill_timeout(mut self, d: Duration) -> Self {
        self.opts.kill_timeout = d;
        self
    }

    /// Listens for remote signals (uwsgi protocol, as a uWSGI node does) at
    /// `addr`: `host:port`, `:port`, a Unix socket path (created 0600) or
    /// `@name`. Off unless called. See [`RemoteOptions`] for the limits.
    pub fn remote(mut self, addr: impl Into<String>) -> Self {
        self.remote = Some(RemoteOptions::new(addr));
        self
    }

    /// Listens for remote signals with every setting given.
    pub fn remote_options(mut self, opts: RemoteOptions) -> Self {
        self.remote = Some(opts);
        self
    }

    /// Only these signal numbers may be raised remotely; others are
    /// answered "rejected". Needs [`MasterBuilder::remote`] first.
    pub fn remote_allow(mut self, nums: impl IntoIterator<Item = u8>) -> Self {
        if let Some(r) = self.remote.as_mut() {
            r.allow = Some(nums.into_iter().collect());
        }
        self
    }

    /// Serves the stats document (JSON, a superset of uWSGI's stats server
    /// format: uwsgitop reads it) at `addr`: `host:port`, `:port`, a Unix
    /// socket path (created 0600) or `@name`. Off unless called.
    pub fn stats(mut self, addr: impl Into<String>) -> Self {
        self.stats = Some(addr.into());
        self
    }

    /// Takes control commands (raise, pause/resume, cheap/uncheap, reload)
    /// on the Unix socket at `addr` (a path, created 0600, or `@name`).
    /// Off unless called.
    pub fn control(mut self, addr: impl Into<String>) -> Self {
        self.control = Some(addr.into());
        self
    }

    /// Serves Prometheus metrics at `GET /metrics` on `addr` (`host:port`,
    /// `:port`, a Unix socket path, created 0600, or `@name`): the stats
    /// document's figures, with uWSGI exporter names where they mean the
    /// same (docs/stats.md lists every metric). Bounded like the stats
    /// endpoint ([`AdminOptions`]). Off unless called.
    pub fn metrics(mut self, addr: impl Into<String>) -> Self {
        self.metrics = Some(addr.into());
        self
    }

    /// The largest mule or farm message, in bytes (uWSGI
    /// `--mule-msg-size`); default [`crate::DEFAULT_MULE_MSG_SIZE`] (64 KiB).
    /// A larger message is refused at the sender.
    pub fn mule_msg_size(mut self, bytes: usize) -> Self {
        self.mule_msg_size = bytes;
        self
    }

    /// Limits of the stats and control endpoints (connections, deadlines,
    /// unsent output, who may connect). See [`AdminOptions`].
    pub fn admin_options(mut self, opts: AdminOptions) -> Self {
        self.admin = opts;
        self
    }

    /// Lets these users connect to every Unix-socket endpoint (remote
    /// signals, stats, control), besides root and the master's own user,
    /// who always may. Peers are identified with `SO_PEERCRED`, so this
    /// holds for abstract (`@name`) sockets, which have no file mode.
    pub fn allow_uids(mut self, uids: impl IntoIterator<Item = u32>) -> Self {
        self.allow_uids.extend(uids);
        self
    }

    /// Joins the fleet `fleet_name` on the NATS server(s) at `url` as the
    /// node `node_name` (see [`crate::fleet`] and docs/fleet.md): the group
    /// gets a bridge process holding the NATS connection, fleet signals
    /// (`fleet:T`, `node:NAME:T`, `any-node:T`) reach it, and
    /// [`Source::fleet_unique`] sources run once per fleet. Needs the
    /// `fleet` feature (build() says so otherwise).
    pub fn fleet(
        self,
        url: impl Into<String>,
        fleet_name: impl Into<String>,
        node_name: impl Into<String>,
    ) -> Self {
        self.fleet_options(crate::fleet::FleetOptions::new(url, fleet_name, node_name))
    }

    /// Joins a fleet with every option given (credentials, TLS, this
    /// node's allow-list, the reply timeout).
    pub fn fleet_options(mut self, opts: crate::fleet::FleetOptions) -> Self {
        self.fleet = Some(opts);
        self.topo.bridges = 1;
        self
    }

    /// Checks the configuration, maps shared memory and makes this process
    /// the master: from now on `Signal::register_handler` registers in the
    /// master (inherited by every child) until [`Master::run`].
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for settings that cannot work together, or an
    /// endpoint address that cannot be listened on (the message says which),
    /// or when this process is already a master or a child;
    /// [`Error::Io`] when the shared memory cannot be mapped.
    pub fn build(mut self) -> Result<Master> {
        if crate::child::context().is_none() && !is_master() {
            if self.spool.frequency.is_some_and(|f| f.is_zero()) {
                return Err(Error::Config(
                    "the spooler frequency must be above zero".into(),
                ));
            }
            crate::spool::configure(std::mem::take(&mut self.spool), &mut self.topo.spoolers)?;
            // A spooler with no entry of its own runs its spool directory.
            if self.entries.spooler.is_none() && !crate::spool::spooler_dirs().is_empty() {
                self.entries.spooler = Some(Box::new(|_| crate::spool::serve_spooler_forever()));
            }
            if let Some(h) = self.spool_handler.take() {
                crate::spool::set_spooler_handler(move |t| h(t));
            }
            crate::lock::configure(self.locks)?;
        }
        if let Some(f) = self.fleet.take() {
            f.validate()?;
            self.entries.fleet_names = Some((f.fleet.clone(), f.node.clone()));
            self.entries.bridge = Some(bridge_entry(f)?);
        }
        if self.attach.is_none() && self.topo.attached > 0 {
            return Err(Error::Config(
                "attach slots need an attach socket: set MasterBuilder::attach(path)".into(),
            ));
        }
        // Attach slots are workers, after the forked ones.
        let forked = self.topo.workers;
        self.topo.workers = forked
            .checked_add(self.topo.attached)
            .ok_or_else(|| Error::Config("too many workers".into()))?;
        let topo_checked = self.topo.validate();
        if topo_checked.is_err() {
            self.topo.workers = forked;
        }
        topo_checked?;
        let o = &self.opts;
        if o.prefetch == 0 || o.outbox_limit == 0 || o.max_attempts == 0 {
            return Err(Error::Config(
                "prefetch, outbox_limit and max_attempts must be at least 1".into(),
            ));
        }
        if o.low_water > o.high_water || o.high_water > o.outbox_limit {
            return Err(Error::Config(format!(
                "queue bounds must satisfy low_water ({}) <= high_water ({}) <= outbox_limit ({})",
                o.low_water, o.high_water, o.outbox_limit
            )));
        }
        let senders = self.topo.slots();
        if o.high_water + senders > o.outbox_limit {
            return Err(Error::Config(format!(
                "high_water ({}) plus the number of processes ({senders}) must not exceed \
                 outbox_limit ({}): send() waits at high_water so that it never drops",
                o.high_water, o.outbox_limit
            )));
        }
        if crate::child::context().is_some() {
            return Err(Error::Config(
                "a flare child cannot build a master of its own".into(),
            ));
        }
        let mut remote_opts = self.remote;
        if let Some(r) = remote_opts.as_mut() {
            r.validate()?;
            r.allow_uids.extend(&self.allow_uids);
        }
        let mut admin_opts = self.admin;
        admin_opts.allow_uids.extend(&self.allow_uids);
        admin_opts.validate()?;
        let topo = Arc::new(self.topo);
        let shm = Shm::create(topo.slots())?;
        let mut state = STATE.lock().unwrap_or_else(PoisonError::into_inner);
        if !matches!(*state, Phase::None) {
            return Err(Error::Config(
                "this process already built a master; one master per process".into(),
            ));
        }
        let any_admin = self.stats.is_some() || self.control.is_some() || self.metrics.is_some();
        if remote_opts.is_some() || any_admin {
            // Each connection an endpoint holds is a descriptor.
            listener::raise_fd_limit();
        }
        // Bound now, so a taken address fails build(), not run().
        let remote = remote_opts
            .map(|r| remote::Remote::bind(r, engine::REMOTE_BASE))
            .transpose()?;
        let admin = if any_admin {
            Some(admin::Admin::bind(
                self.stats.as_deref(),
                self.control.as_deref(),
                self.metrics.as_deref(),
                &admin_opts,
                engine::ADMIN_BASE,
            )?)
        } else {
            None
        };
        let attach = self
            .attach
            .as_deref()
            .map(|a| attach::Attach::bind(a, &self.allow_uids, engine::ATTACH_BASE))
            .transpose()?;
        if attach.is_some() {
            listener::raise_fd_limit();
        }
        // Before any fork: every child inherits the mule mailboxes.
        crate::mailbox::create(&topo, self.mule_msg_size)?;
        *state = Phase::Setup(Box::new(Setup {
            table: Table::new(topo.clone()),
            shm,
            raised: Vec::new(),
            sources: sources::Sources::default(),
        }));
        Ok(Master {
            topo,
            entries: self.entries,
            opts: self.opts,
            shm,
            remote,
            admin,
            attach,
        })
    }
}

/// The fleet bridge's entry.
#[cfg(feature = "fleet")]
fn bridge_entry(f: crate::fleet::FleetOptions) -> Result<Entry> {
    Ok(Box::new(move |_| crate::fleet::run_bridge(f.clone())))
}

#[cfg(not(feature = "fleet"))]
fn bridge_entry(_: crate::fleet::FleetOptions) -> Result<Entry> {
    Err(Error::Config(
        "fleet configured, but flare was built without its `fleet` feature \
         (flare-signals = { features = [\"fleet\"] }; the flare command has it)"
            .into(),
    ))
}

/// The master of a process group (uWSGI's master process).
///
/// Built by [`Master::builder`]; [`Master::run`] forks the children and
/// supervises them until SIGTERM/SIGINT or a child calls [`crate::stop`].
pub struct Master {
    topo: Arc<Topology>,
    entries: Entries,
    opts: Options,
    shm: Shm,
    remote: Option<remote::Remote>,
    admin: Option<admin::Admin>,
    attach: Option<attach::Attach>,
}

impl fmt::Debug for Master {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Master")
            .field("topology", &self.topo)
            .field("entries", &self.entries)
            .field("options", &self.opts)
            .field("remote", &self.remote_addr())
            .field("stats", &self.stats_addr())
            .field("control", &self.control_addr())
            .finish_non_exhaustive()
    }
}

impl Master {
    /// A builder with one worker and nothing else.
    pub fn builder() -> MasterBuilder {
        MasterBuilder {
            topo: Topology {
                workers: 1,
                attached: 0,
                mules: 0,
                spoolers: 0,
                farms: Vec::new(),
                bridges: 0,
            },
            entries: Entries::default(),
            opts: Options::default(),
            remote: None,
            stats: None,
            control: None,
            metrics: None,
            mule_msg_size: crate::mailbox::DEFAULT_MULE_MSG_SIZE,
            admin: AdminOptions::default(),
            allow_uids: Vec::new(),
            spool: crate::spool::Setup::default(),
            spool_handler: None,
            locks: 0,
            fleet: None,
            attach: None,
        }
    }

    /// The process group this master runs.
    pub fn topology(&self) -> &Topology {
        &self.topo
    }

    /// Where the stats endpoint listens (with the actual port for `:0`).
    pub fn stats_addr(&self) -> Option<String> {
        self.admin.as_ref().and_then(|a| a.addrs().0)
    }

    /// Where the metrics endpoint listens (with the actual port for `:0`).
    pub fn metrics_addr(&self) -> Option<String> {
        self.admin.as_ref().and_then(admin::Admin::metrics_addr)
    }

    /// Where the control endpoint listens.
    pub fn control_addr(&self) -> Option<String> {
        self.admin.as_ref().and_then(|a| a.addrs().1)
    }

    /// Where the attach socket listens; `None` without one.
    pub fn attach_addr(&self) -> Option<String> {
        self.attach.as_ref().map(|a| a.addr().to_owned())
    }

    /// Where the master listens for remote signals, with the actual port
    /// when port 0 was asked for; `None` when it does not listen.
    pub fn remote_addr(&self) -> Option<String> {
        self.remote.as_ref().and_then(remote::Remote::local_addr)
    }

    /// Forks every child and supervises the group until a graceful
    /// shutdown; returns what happened. In the children this never returns.
    ///
    /// The master must be single-threaded: forking a process that has other
    /// threads can leave a child with locks nobody will release. `run()`
    /// refuses to start if this process has more than one thread, and fails
    /// (ending the children it forked) if a thread appears later, say one
    /// started by a fork hook: the check is made before every fork.
    ///
    /// While it runs, this process is a child subreaper: processes that
    /// children fork and leave behind are re-parented to it, reaped, and
    /// ended at shutdown like the children. If `run()` fails or panics
    /// after forking, every process it started is ended (SIGTERM, then
    /// SIGKILL after the kill timeout) and the signal mask is put back.
    ///
    /// `SIGPIPE` is ignored from here on, in the master and the children
    /// (the channels are pipes; a write to a dead peer must fail, not kill).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when this process has more than one thread or
    /// `run()` was called before; [`Error::Io`] when a system call the master
    /// needs (fork, epoll, signal handling, the channels) fails.
    pub fn run(self) -> Result<Summary> {
        sys::ensure_single_threaded()?;
        sys::ignore_sigpipe()?;
        let setup = {
            let mut state = STATE.lock().unwrap_or_else(PoisonError::into_inner);
            match std::mem::replace(&mut *state, Phase::Running) {
                Phase::Setup(s) => *s,
                other => {
                    *state = other;
                    return Err(Error::Config("run() called twice".into()));
                }
            }
        };
        // From here on a failure or a panic ends what was started.
        let guard = strays::EndOnFailure::arm(self.opts.kill_timeout)?;
        let summary = engine::Engine::new(
            self.topo,
            self.entries,
            self.opts,
            self.shm,
            setup,
            engine::Endpoints {
                remote: self.remote,
                admin: self.admin,
                attach: self.attach,
            },
        )?
        .run()?;
        guard.disarm();
        Ok(summary)
    }
}

/// Master state before `run()`: what the signal API reaches in the master.
pub(crate) struct Setup {
    pub(crate) table: Table,
    pub(crate) shm: Shm,
    /// Signals the master raised before `run()`, raised when it starts.
    pub(crate) raised: Vec<u8>,
    /// Sources added before `run()`.
    pub(crate) sources: sources::Sources,
}

impl Setup {
    /// Registers in the master and mirrors the entry for the children.
    pub(crate) fn register(&mut self, num: u8, target: &crate::Target) -> Result<()> {
        self.table.register(num, target, Owner::Master)?;
        self.mirror(num);
        Ok(())
    }

    /// Adds a source owned by the master.
    pub(crate) fn add_source(&mut self, sig: u8, source: Source) -> Result<SourceId> {
        self.sources.add(sig, source, Owner::Master)
    }

    /// Removes a source.
    pub(crate) fn remove_source(&mut self, id: SourceId) -> Result<()> {
        self.sources.remove(id, crate::table::Owner::Master)
    }

    /// Reserves the first free number for the master.
    pub(crate) fn reserve(&mut self) -> Result<u8> {
        let num = self.table.reserve(Owner::Master)?;
        self.mirror(num);
        Ok(num)
    }

    fn mirror(&self, num: u8) {
        self.shm.table()[num as usize].store(
            self.table.mirror_word(num),
            std::sync::atomic::Ordering::Release,
        );
    }
}

enum Phase {
    None,
    Setup(Box<Setup>),
    Running,
}

static STATE: Mutex<Phase> = Mutex::new(Phase::None);

/// Runs `f` on the master's setup state, if this process is a master that
/// has not started `run()` yet.
pub(crate) fn with_setup<R>(f: impl FnOnce(&mut Setup) -> R) -> Result<R> {
    let mut state = STATE.lock().unwrap_or_else(PoisonError::into_inner);
    match &mut *state {
        Phase::Setup(s) => Ok(f(s)),
        Phase::Running => Err(Error::NoRuntime(
            "the master is running: register handlers and raise signals in the master before \
             run(), or from a child",
        )),
        Phase::None => Err(Error::NoRuntime(
            "not a flare process: build a master with Master::builder() first",
        )),
    }
}

/// Whether this process is a master (built, running or not).
pub(crate) fn is_master() -> bool {
    !matches!(
        *STATE.lock().unwrap_or_else(PoisonError::into_inner),
        Phase::None
    )
}
