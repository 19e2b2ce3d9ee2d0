//! One-call scheduling, in the spirit of `uwsgiconf.runtime.scheduling`:
//! each helper picks a free signal number (reserved atomically), registers
//! the handler on the target, and adds the source.
//!
//! ```no_run
//! use flare::scheduling;
//!
//! // uwsgiconf: @register_timer(30, target="mule")
//! scheduling::register_timer(30, "mule", |_| println!("every 30 s"))?;
//! // uwsgiconf: @register_cron(hour=-2, minute=0)
//! scheduling::register_cron([0, -2, -1, -1, -1], "workers", |_| println!("even hours"))?;
//! scheduling::register_file_monitor("/etc/app.toml", "workers", |_| println!("reload"))?;
//! # Ok::<(), flare::Error>(())
//! ```

use std::path::Path;
use std::time::Duration;

use crate::error::Result;
use crate::origin::Received;
use crate::signal::Signal;
use crate::source_spec::{IntoCron, Source, SourceId};
use crate::target::IntoTarget;

/// What a scheduling helper set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scheduled {
    /// The signal number it picked and registered.
    pub signal: Signal,
    /// The source raising it (for [`crate::remove_source`]).
    pub source: SourceId,
}

/// Picks a free number, registers `handler` on `target` for it, and adds
/// `source` for it. The general form of the helpers below.
///
/// # Errors
///
/// What [`Signal::auto`], [`Signal::register_handler`] and
/// [`Source::raise`] return, from whichever step fails: no free number,
/// a target that is not valid here, a source that cannot work, no master.
pub fn register<T, F>(source: Source, target: T, handler: F) -> Result<Scheduled>
where
    T: IntoTarget,
    F: Fn(Received) + Send + Sync + 'static,
{
    source.validate()?;
    let signal = Signal::auto()?;
    signal.register_handler(target, handler)?;
    let id = source.raise(signal.num())?;
    Ok(Scheduled { signal, source: id })
}

/// Runs `handler` on `target` every `secs` seconds (uwsgiconf
/// `register_timer`).
///
/// # Errors
///
/// As [`register`]; a zero period is
/// [`RegistrationError::InvalidSource`](crate::RegistrationError::InvalidSource).
pub fn register_timer<T, F>(secs: u64, target: T, handler: F) -> Result<Scheduled>
where
    T: IntoTarget,
    F: Fn(Received) + Send + Sync + 'static,
{
    register(Source::timer(Duration::from_secs(secs)), target, handler)
}

/// Runs `handler` on `target` every `ms` milliseconds.
///
/// # Errors
///
/// As [`register`]; a zero period is
/// [`RegistrationError::InvalidSource`](crate::RegistrationError::InvalidSource).
pub fn register_timer_ms<T, F>(ms: u64, target: T, handler: F) -> Result<Scheduled>
where
    T: IntoTarget,
    F: Fn(Received) + Send + Sync + 'static,
{
    register(Source::timer(Duration::from_millis(ms)), target, handler)
}

/// Runs `handler` on `target` every `secs` seconds, `repeat` times
/// (`None`: for ever) (uwsgiconf `register_timer_rb`).
///
/// # Errors
///
/// As [`register`]; a zero period or `Some(0)` repeats is
/// [`RegistrationError::InvalidSource`](crate::RegistrationError::InvalidSource).
pub fn register_timer_rb<T, F>(
    secs: u64,
    repeat: Option<u64>,
    target: T,
    handler: F,
) -> Result<Scheduled>
where
    T: IntoTarget,
    F: Fn(Received) + Send + Sync + 'static,
{
    register(
        Source::rb_timer(Duration::from_secs(secs), repeat),
        target,
        handler,
    )
}

/// Runs `handler` on `target` in every local minute matching `spec`
/// (uwsgiconf `register_cron`): crontab text or uWSGI's five integers.
///
/// # Errors
///
/// As [`register`]; a spec that does not parse is
/// [`RegistrationError::InvalidSource`](crate::RegistrationError::InvalidSource).
pub fn register_cron<T, F>(spec: impl IntoCron, target: T, handler: F) -> Result<Scheduled>
where
    T: IntoTarget,
    F: Fn(Received) + Send + Sync + 'static,
{
    register(Source::cron(spec)?, target, handler)
}

/// Runs `handler` on `target` when the file or directory at `path` changes
/// (uwsgiconf `register_file_monitor`).
///
/// # Errors
///
/// As [`register`]; a path whose directory cannot be watched is
/// [`RegistrationError::InvalidSource`](crate::RegistrationError::InvalidSource).
pub fn register_file_monitor<T, F>(
    path: impl AsRef<Path>,
    target: T,
    handler: F,
) -> Result<Scheduled>
where
    T: IntoTarget,
    F: Fn(Received) + Send + Sync + 'static,
{
    register(Source::file_monitor(path), target, handler)
}
