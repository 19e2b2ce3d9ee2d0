//! # flare
//!
//! Pre-forked process groups that talk through numbered signals: the uWSGI
//! signal framework (as `uwsgiconf.runtime.signals` exposes it), rebuilt.
//!
//! A [`Master`] forks workers, mules (grouped in farms) and spoolers. Any
//! child raises a signal 0-255 with [`Signal::send`]; the master looks the
//! number up in its table and routes it by the registered [`Target`]; the
//! handler runs in the right processes, one at a time per process.
//!
//! ```no_run
//! use flare::{Master, Signal};
//!
//! let master = Master::builder()
//!     .workers(4)
//!     .mules(1)
//!     .mule_entry(|_me| {
//!         Signal::new(1).send().expect("send");
//!         flare::serve_forever();
//!     })
//!     .build()?;
//! // Registered in the master before run(): every child inherits it.
//! Signal::new(1).register_handler("workers", |rx| {
//!     let me = flare::whoami().expect("in a child");
//!     println!("{}{} got signal {} from {}", me.role, me.id, rx.num, rx.origin);
//! })?;
//! let summary = master.run()?; // until SIGTERM / SIGINT / flare::stop()
//! print!("{}", summary.table());
//! # Ok::<(), flare::Error>(())
//! ```
//!
//! | uwsgiconf | flare |
//! |---|---|
//! | `Signal(num)` / `Signal()` | [`Signal::new`] / [`Signal::auto`] |
//! | `int(signal)` | [`Signal::num`], `u8::from(signal)` |
//! | `signal.registered` | [`Signal::registered`] |
//! | `signal.register_handler(target=, callback=)` | [`Signal::register_handler`], [`Signal::register_handler_then`] |
//! | `signal.send()` | [`Signal::send`], [`Signal::try_send`] |
//! | `signal.wait()` | [`Signal::wait`], [`wait_any`] |
//! | `SignalDescription` | [`SignalDescription`] |
//! | `registry_signals` | [`registry_signals`] |
//! | `get_available_num()` | [`get_available_num`] |
//! | `get_last_received()` | [`get_last_received`] |
//! | `Mule(id)`, `Farm(name)` | [`Mule`], [`Farm`] |

#![deny(missing_docs)]
#![deny(clippy::missing_errors_doc)]

mod attach;
mod busy;
mod child;
mod control;
mod counters;
mod cron;
mod error;
pub mod fleet;
mod fleet_spec;
mod handler_done;
mod handlers;
mod lock;
#[cfg(feature = "logging")]
pub mod logging;
mod mailbox;
mod master;
pub mod metrics;
mod origin;
mod proto;
mod ratelog;
mod remote;
mod router;
mod schedule;
pub mod scheduling;
mod shm;
mod signal;
mod signal_num;
mod source;
mod source_spec;
mod spool;
pub mod stats;
mod status;
mod sys;
mod table;
mod target;
mod topology;
mod user_harakiri;

pub use attach::{attach, attach_with};
pub use child::{Entry, ProcessInfo, note_handler_exception};
pub use counters::{Counters, SignalSummary, SourceSummary, Tally};
pub use cron::CronSpec;
pub use error::{Error, RegistrationError, Result, TrySendError};
pub use handlers::{Handler, SignalDescription};
pub use lock::{is_locked, lock, lock_count, unlock};
pub use mailbox::{
    DEFAULT_MULE_MSG_SIZE, GetMsg, Inbox, farm_get_msg, farm_msg, mule_get_msg, mule_msg,
    try_farm_msg, try_mule_get_msg, try_mule_msg,
};
pub use master::{
    AdminOptions, DEFAULT_ATTACH_SLOTS, DEFAULT_STALL_LIMIT, ForkHooks, Harakiri, Master,
    MasterBuilder, Options, ProcessSummary, RemoteOptions, RoleLimits, Summary,
};
pub use origin::{Origin, Received};
pub use proto::uwsgi;
pub use remote::{DEFAULT_TIMEOUT, RemoteAddr, send_remote};
pub use signal::{
    Signal, current_signal, get_available_num, get_last_received, last_received, master_pid,
    registry_signals, serve_forever, stop, wait_any, wait_any_timeout, whoami,
};
pub use source::{
    add_cron, add_file_monitor, add_rb_timer, add_timer, add_timer_ms, remove_source,
};
pub use source_spec::{IntoCron, Source, SourceId, SourceKind};
pub use spool::{
    Job, SpoolHandler, SpoolOutcome, Task, set_spooler_frequency, set_spooler_handler, spool,
    spool_many, spooler_dirs, spooler_get_task, spooler_jobs, spooler_pids,
};
pub use status::{ProcessStatus, processes};
pub use target::{Farm, IntoTarget, Mule, Target};
pub use topology::{FarmSpec, MAX_TARGET_LEN, ProcId, ProcState, Role, Topology};
pub use user_harakiri::set_user_harakiri;

/// Entry points for the fuzz targets in `fuzz/`; not part of the API.
#[doc(hidden)]
pub mod fuzzing {
    use crate::proto::{Decoder, Msg};

    /// Decodes `data` fed in pieces cut at `cuts`; returns the messages
    /// (debug-printed) up to the first error, and the error if any.
    pub fn channel_messages(data: &[u8], cuts: &[usize]) -> (Vec<String>, Option<String>) {
        let mut d = Decoder::default();
        let mut got = Vec::new();
        let mut at = 0;
        for &c in cuts.iter().chain([&data.len()]) {
            let c = c.clamp(at, data.len());
            let fed = d.feed(&data[at..c], &mut |m: Msg<'_>| {
                got.push(format!("{m:?}"));
                // A notice's payload is read as the bridge reads it.
                if let Msg::Payload {
                    frame: crate::proto::Frame::Notice { .. },
                    body,
                } = m
                {
                    let n = serde_json::from_slice::<crate::proto::Notice>(body);
                    got.push(format!("{n:?}"));
                }
                true
            });
            if let Err(e) = fed {
                return (got, Some(e.to_string()));
            }
            at = c;
        }
        (got, None)
    }

    /// Reads `data` as the first bytes on the attach socket; the hello's
    /// outcome, debug-printed.
    pub fn attach_hello(data: &[u8]) -> String {
        format!("{:?}", crate::proto::attach::parse_hello(data))
    }
}
