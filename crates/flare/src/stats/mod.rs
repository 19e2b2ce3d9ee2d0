//! The stats document the master serves on its stats endpoint.
//!
//! It is a superset of uWSGI's stats server format, so tools written for
//! uWSGI (uwsgitop, exporters) read it: the top-level keys and the
//! `workers[]` entries carry uWSGI's names and units, `mules[]` and
//! `spoolers[]` use the same entry type, and everything flare adds is in the
//! entries' extra fields and under `flare`. Schema: docs/stats.md.
//! [`fetch`] and [`control`] are the client side of the stats and control
//! endpoints.
//!
//! ```no_run
//! use std::io::Read;
//! let mut s = std::os::unix::net::UnixStream::connect("/run/app-stats.sock")?;
//! let mut json = String::new();
//! s.read_to_string(&mut json)?;
//! let doc: flare::stats::StatsDoc = serde_json::from_str(&json)?;
//! for w in &doc.workers {
//!     println!("worker {} handled {}", w.id, w.signals);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod client;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::counters::{Counters, SignalSummary, SourceSummary, Tally};

pub use client::{control, fetch};

/// The whole document.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsDoc {
    /// `flare <version>` (uWSGI puts its version here).
    pub version: String,
    /// Always 0: flare has no request socket (uWSGI key).
    pub listen_queue: u64,
    /// Always 0 (uWSGI key).
    pub listen_queue_errors: u64,
    /// Signals queued in the master for all processes (uWSGI key).
    pub signal_queue: u64,
    /// Always 0 (uWSGI key).
    pub load: u64,
    /// The master's pid.
    pub pid: u32,
    /// The master's user id.
    pub uid: u32,
    /// The master's group id.
    pub gid: u32,
    /// The master's working directory.
    pub cwd: String,
    /// Always empty (uWSGI key).
    pub locks: Vec<serde_json::Value>,
    /// The master's listening sockets (remote signals, stats, control).
    pub sockets: Vec<SocketStats>,
    /// The workers, in id order (uWSGI key; same fields as uWSGI's).
    pub workers: Vec<ProcStats>,
    /// The mules, in id order.
    pub mules: Vec<ProcStats>,
    /// The spoolers, in id order.
    pub spoolers: Vec<ProcStats>,
    /// What flare adds.
    pub flare: FlareStats,
}

/// A listening socket (uWSGI's `sockets[]`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketStats {
    /// The address.
    pub name: String,
    /// What it serves: `uwsgi` (remote signals), `stats`, `control`.
    pub proto: String,
    /// Always 0.
    pub queue: u64,
    /// Always 0.
    pub max_queue: u64,
    /// Always 0.
    pub shared: u64,
    /// Always 0.
    pub can_offload: u64,
}

/// One process: uWSGI's worker entry, plus flare's fields.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcStats {
    /// Id within the role, from 1.
    pub id: u32,
    /// Pid, 0 when not running.
    pub pid: u32,
    /// 1 when it takes signals (running), else 0.
    pub accepting: u32,
    /// Signals handled (uWSGI counts requests here; a flare process's
    /// requests are its signals, so tools show signal rates).
    pub requests: u64,
    /// Signals handled since the previous stats document.
    pub delta_requests: u64,
    /// Handlers that panicked.
    pub exceptions: u64,
    /// Handler timeouts.
    pub harakiri_count: u64,
    /// Signals handled.
    pub signals: u64,
    /// Signals queued for it in the master.
    pub signal_queue: u64,
    /// `idle`, `busy`, `sig<N>` (running the handler of signal N),
    /// `pause`, `cheap`, or flare's `respawning` / `stopped`.
    pub status: String,
    /// Resident memory, bytes.
    pub rss: u64,
    /// Virtual memory, bytes.
    pub vsz: u64,
    /// Always 0.
    pub uss: u64,
    /// Always 0.
    pub pss: u64,
    /// Time spent in handlers, microseconds.
    pub running_time: u64,
    /// When it was last forked, Unix seconds.
    pub last_spawn: u64,
    /// Times it was forked again after dying.
    pub respawn_count: u64,
    /// Always 0.
    pub tx: u64,
    /// Average handler run time, microseconds.
    pub avg_rt: u64,
    /// Always empty.
    pub apps: Vec<serde_json::Value>,
    /// One entry: the dispatcher (uWSGI's cores).
    pub cores: Vec<CoreStats>,
    /// `worker`, `mule`, `spooler`.
    pub role: String,
    /// `running`, `paused`, `cheaped`, `respawning`, `stopped`.
    pub state: String,
    /// The signal whose handler runs now.
    pub current_signal: Option<u8>,
    /// For how long it has run, milliseconds.
    pub current_ms: Option<u64>,
    /// The last signal received.
    pub last_signal: Option<u8>,
    /// Signals this process raised.
    pub raised: u64,
    /// Handler runs by signal number.
    pub handled_by_num: BTreeMap<u8, u64>,
    /// The master's side of its deliveries.
    pub tally: Tally,
    /// For how long it has made no progress while deliveries wait for it,
    /// milliseconds (0 when nothing waits or it is moving). Its queue
    /// depth is `signal_queue`.
    #[serde(default)]
    pub stalled_ms: u64,
    /// Times it was killed for a stall (no progress past its stall limit).
    #[serde(default)]
    pub stalls: u64,
}

/// A core (uWSGI's per-thread request slots); flare has one, the
/// dispatcher.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoreStats {
    /// 0.
    pub id: u32,
    /// Signals handled.
    pub requests: u64,
    /// Always 0.
    pub static_requests: u64,
    /// Always 0.
    pub routed_requests: u64,
    /// Always 0.
    pub offloaded_requests: u64,
    /// Always 0.
    pub write_errors: u64,
    /// Always 0.
    pub read_errors: u64,
    /// 1 while a handler runs.
    pub in_request: u32,
    /// Always empty.
    pub vars: Vec<String>,
}

/// Everything flare adds to uWSGI's document.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FlareStats {
    /// When the master started, Unix seconds.
    pub started_at: u64,
    /// How long it has run, milliseconds.
    pub uptime_ms: u64,
    /// Totals of every outcome.
    pub counters: Counters,
    /// Every signal number raised, with what became of it.
    pub signals: Vec<SignalSummary>,
    /// The signal table: every registered or reserved number.
    pub table: Vec<RouteStats>,
    /// Timers, cron entries and file monitors.
    pub sources: Vec<SourceSummary>,
    /// The fleet's figures, when the group is in a fleet (docs/fleet.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<crate::fleet::FleetStats>,
}

/// One number of the signal table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteStats {
    /// The number.
    pub num: u8,
    /// Its target, as registered; empty when only reserved.
    pub target: String,
    /// Who registered (or reserved) it: `master` or a process.
    pub owner: String,
    /// Who can run it: `["all"]` for master registrations.
    pub runners: Vec<String>,
    /// Reserved by `Signal::auto()`, not registered yet.
    pub reserved: bool,
}
