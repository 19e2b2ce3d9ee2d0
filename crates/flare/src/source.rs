//! Signal sources: timers, rb timers, cron entries and file monitors that
//! the master raises by itself (uWSGI `add_timer`, `add_ms_timer`,
//! `add_rb_timer`, `add_cron`, `add_file_monitor`).
//!
//! Sources can be added in the master before `run()` or by any child at run
//! time (the master adds them and sends errors back), and removed again.
//! A source added by a child goes away when that child dies, like its
//! registrations; its successor adds it again if its code does.

use std::path::Path;
use std::time::Duration;

use crate::child;
use crate::error::{Error, Result};
use crate::master;
use crate::proto::{Reply, Request};
use crate::source_spec::{IntoCron, Source, SourceId};

impl Source {
    /// Adds the source, raising signal `sig`: in the master before
    /// `run()`, or through the master from a child.
    ///
    /// # Errors
    ///
    /// [`RegistrationError::InvalidSource`](crate::RegistrationError::InvalidSource) for a source that cannot work (a
    /// zero period, a path that cannot be watched),
    /// [`RegistrationError::DuplicateSource`](crate::RegistrationError::DuplicateSource) when the same source already
    /// raises `sig`, [`Error::NoRuntime`] outside a flare process or in a
    /// running master, [`Error::MasterGone`] when the master has gone away.
    pub fn raise(self, sig: u8) -> Result<SourceId> {
        self.validate()?;
        match child::context() {
            Some(ctx) => match ctx.request(&Request::AddSource { sig, source: self })? {
                Reply::Source(id) => Ok(SourceId(id)),
                Reply::Err(e) => Err(e.into()),
                other => Err(Error::Protocol(format!("unexpected reply {other:?}"))),
            },
            None => master::with_setup(|s| s.add_source(sig, self))?,
        }
    }
}

/// Raises `sig` every `secs` seconds (uWSGI `add_timer`).
///
/// # Errors
///
/// As [`Source::raise`].
pub fn add_timer(sig: u8, secs: u64) -> Result<SourceId> {
    Source::timer(Duration::from_secs(secs)).raise(sig)
}

/// Raises `sig` every `ms` milliseconds (uWSGI `add_ms_timer`).
///
/// # Errors
///
/// As [`Source::raise`].
pub fn add_timer_ms(sig: u8, ms: u64) -> Result<SourceId> {
    Source::timer(Duration::from_millis(ms)).raise(sig)
}

/// Raises `sig` every `secs` seconds, `repeat` times (`None`: for ever)
/// (uWSGI `add_rb_timer`).
///
/// # Errors
///
/// As [`Source::raise`].
pub fn add_rb_timer(sig: u8, secs: u64, repeat: Option<u64>) -> Result<SourceId> {
    Source::rb_timer(Duration::from_secs(secs), repeat).raise(sig)
}

/// Raises `sig` in every local minute matching `spec` (uWSGI `add_cron`):
/// crontab text like `"*/15 9-17 * * 1-5"`, or uWSGI's integers
/// `[minute, hour, day, month, weekday]` with `-1` for every and `-N` for
/// every N.
///
/// # Errors
///
/// As [`Source::raise`]; a spec that does not parse is
/// [`RegistrationError::InvalidSource`](crate::RegistrationError::InvalidSource).
pub fn add_cron(sig: u8, spec: impl IntoCron) -> Result<SourceId> {
    Source::cron(spec)?.raise(sig)
}

/// Raises `sig` when the file or directory at `path` changes (uWSGI
/// `add_file_monitor`). A path that does not exist yet is watched from its
/// parent and fires when it appears.
///
/// # Errors
///
/// As [`Source::raise`].
pub fn add_file_monitor(sig: u8, path: impl AsRef<Path>) -> Result<SourceId> {
    Source::file_monitor(path).raise(sig)
}

/// Removes a source added before (uWSGI cannot: unbit/uwsgi#1131).
///
/// # Errors
///
/// [`RegistrationError::NoSuchSource`](crate::RegistrationError::NoSuchSource) when no source has this id,
/// [`Error::NoRuntime`] outside a flare process or in a running master,
/// [`Error::MasterGone`] when the master has gone away.
pub fn remove_source(id: SourceId) -> Result<()> {
    match child::context() {
        Some(ctx) => match ctx.request(&Request::RemoveSource { id: id.0 })? {
            Reply::Ok => Ok(()),
            Reply::Err(e) => Err(e.into()),
            other => Err(Error::Protocol(format!("unexpected reply {other:?}"))),
        },
        None => master::with_setup(|s| s.remove_source(id))?,
    }
}
