//! What a signal source is: its id, its kind and the spec a user builds
//! ([`Source`]), with the checks that need no file system. Adding one to
//! the master is in `source`. Pure: no I/O.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cron::CronSpec;
use crate::error::{Error, RegistrationError, Result};

/// Identifies a source, to remove it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SourceId(pub(crate) u32);

impl SourceId {
    /// The number, as shown in logs and origins (`timer#3`).
    pub fn get(self) -> u32 {
        self.0
    }
}

impl From<u32> for SourceId {
    /// A source id from its number (as [`SourceId::get`] gave it).
    fn from(id: u32) -> Self {
        SourceId(id)
    }
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What a source watches or counts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SourceKind {
    /// Every `period`; `repeat` firings in all (`None`: forever).
    Timer {
        /// Time between firings.
        period: Duration,
        /// Firings before the timer stops (an rb timer); `None` for ever.
        repeat: Option<u64>,
    },
    /// Once in each matching local minute; the spec as written.
    Cron(String),
    /// Changes to a file or directory.
    FileMonitor {
        /// The path watched.
        path: PathBuf,
        /// Also watch every directory below it.
        recursive: bool,
    },
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceKind::Timer {
                period,
                repeat: None,
            } => write!(f, "timer every {}", ms(*period)),
            SourceKind::Timer {
                period,
                repeat: Some(n),
            } => write!(f, "rb timer every {} x{n}", ms(*period)),
            SourceKind::Cron(spec) => write!(f, "cron `{spec}`"),
            SourceKind::FileMonitor { path, recursive } => write!(
                f,
                "file monitor {}{}",
                path.display(),
                if *recursive { " (recursive)" } else { "" }
            ),
        }
    }
}

fn ms(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// A source to add: built with one of the constructors, then
/// [`Source::raise`] for a signal.
///
/// ```no_run
/// use std::time::Duration;
/// use flare::Source;
///
/// // Every 30 s, but never while the previous one is still queued or running.
/// let id = Source::timer(Duration::from_secs(30)).unique().raise(4)?;
/// Source::cron("0 3 * * *")?.raise(5)?;          // 03:00 every day
/// Source::file_monitor("/etc/app.toml").raise(6)?; // when the file changes
/// flare::remove_source(id)?;
/// # Ok::<(), flare::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub(crate) kind: SourceKind,
    pub(crate) unique: bool,
    /// Once per fleet (see [`Source::fleet_unique`]); absent in what older
    /// clients send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) fleet: Option<crate::fleet_spec::FleetUnique>,
}

impl Source {
    /// Every `period`, for ever.
    pub fn timer(period: Duration) -> Source {
        Source {
            kind: SourceKind::Timer {
                period,
                repeat: None,
            },
            unique: false,
            fleet: None,
        }
    }

    /// Every `period`, `repeat` times in all (`None`: for ever).
    pub fn rb_timer(period: Duration, repeat: Option<u64>) -> Source {
        Source {
            kind: SourceKind::Timer { period, repeat },
            unique: false,
            fleet: None,
        }
    }

    /// In each local minute that matches `spec`: crontab text, `uwsgi M H
    /// D MO W`, or a [`CronSpec`].
    ///
    /// # Errors
    ///
    /// [`RegistrationError::InvalidSource`] when the spec does not parse.
    pub fn cron(spec: impl IntoCron) -> Result<Source> {
        Ok(Source {
            kind: SourceKind::Cron(spec.into_cron()?.to_string()),
            unique: false,
            fleet: None,
        })
    }

    /// When the file or directory at `path` changes (written, created,
    /// removed, renamed, attributes). A path that does not exist yet is
    /// watched from its parent directory and fires when it appears.
    pub fn file_monitor(path: impl AsRef<Path>) -> Source {
        Source {
            kind: SourceKind::FileMonitor {
                path: path.as_ref().to_path_buf(),
                recursive: false,
            },
            unique: false,
            fleet: None,
        }
    }

    /// For a file monitor on a directory: watch every directory below it
    /// too, including ones created later.
    #[must_use]
    pub fn recursive(mut self) -> Source {
        if let SourceKind::FileMonitor { recursive, .. } = &mut self.kind {
            *recursive = true;
        }
        self
    }

    /// Do not raise the signal again while the one this source raised last
    /// is still queued or its handler still runs: a slow handler or a
    /// restart cannot pile signals up (uWSGI issues #2123, #2699).
    #[must_use]
    pub fn unique(mut self) -> Source {
        self.unique = true;
        self
    }

    /// Once per fleet: every node of the group's fleet schedules this
    /// timer or cron entry, and exactly one node runs each firing (the
    /// first to claim it in the fleet's key-value bucket). A timer's
    /// firings fall on multiples of its period since the Unix epoch, so
    /// that every node agrees on them. When NATS is unreachable at a
    /// firing it is skipped (counted, logged); see
    /// [`Source::fleet_unique_or_local`]. Needs a master in a fleet
    /// ([`crate::MasterBuilder::fleet`]); file monitors cannot be.
    #[must_use]
    pub fn fleet_unique(mut self) -> Source {
        self.fleet = Some(crate::fleet_spec::FleetUnique::default());
        self
    }

    /// Like [`Source::fleet_unique`], but a firing NATS cannot be asked
    /// about runs on this node (counted, logged): never missed, maybe run
    /// by several nodes while NATS is away.
    #[must_use]
    pub fn fleet_unique_or_local(mut self) -> Source {
        self.fleet = Some(crate::fleet_spec::FleetUnique {
            on_unreachable: crate::fleet_spec::Unreachable::RunLocally,
        });
        self
    }

    /// Whether this source runs once per fleet.
    pub fn is_fleet_unique(&self) -> bool {
        self.fleet.is_some()
    }

    /// Checks what can be checked without the file system.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.fleet.is_some() && matches!(self.kind, SourceKind::FileMonitor { .. }) {
            return Err(Error::from(RegistrationError::InvalidSource(
                "a file monitor cannot be fleet-unique: each node watches its own files; only \
                 timers and cron entries can"
                    .into(),
            )));
        }
        match &self.kind {
            SourceKind::Timer { period, repeat } => {
                if period.is_zero() {
                    return Err(Error::from(RegistrationError::InvalidSource(
                        "a timer period must be above zero".into(),
                    )));
                }
                if *repeat == Some(0) {
                    return Err(Error::from(RegistrationError::InvalidSource(
                        "an rb timer must repeat at least once (None repeats for ever)".into(),
                    )));
                }
                Ok(())
            }
            SourceKind::Cron(spec) => spec.parse::<CronSpec>().map(|_| ()),
            SourceKind::FileMonitor { path, .. } => {
                if path.as_os_str().is_empty() {
                    Err(Error::from(RegistrationError::InvalidSource(
                        "a file monitor needs a path".into(),
                    )))
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// Anything [`Source::cron`] and [`add_cron`](crate::add_cron) accept: crontab text, uWSGI's
/// five integers `[minute, hour, day, month, weekday]`, or a [`CronSpec`].
pub trait IntoCron {
    /// Parses or converts.
    ///
    /// # Errors
    ///
    /// [`RegistrationError::InvalidSource`] when the spec does not parse.
    fn into_cron(self) -> Result<CronSpec>;
}

impl IntoCron for CronSpec {
    fn into_cron(self) -> Result<CronSpec> {
        Ok(self)
    }
}

impl IntoCron for &str {
    fn into_cron(self) -> Result<CronSpec> {
        self.parse()
    }
}

impl IntoCron for String {
    fn into_cron(self) -> Result<CronSpec> {
        self.parse()
    }
}

impl IntoCron for [i32; 5] {
    fn into_cron(self) -> Result<CronSpec> {
        let [m, h, d, mo, w] = self;
        CronSpec::uwsgi(m, h, d, mo, w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_sources_are_refused_before_anything_is_sent() {
        let e = Source::timer(Duration::ZERO).validate().unwrap_err();
        assert!(e.to_string().contains("above zero"), "{e}");
        let e = Source::rb_timer(Duration::from_secs(1), Some(0))
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("at least once"), "{e}");
        assert!(Source::cron("nope").is_err());
        assert!(Source::cron([0, 25, -1, -1, -1]).is_err());
        assert!(Source::file_monitor("").validate().is_err());
        assert!(
            Source::file_monitor("/tmp/x")
                .fleet_unique()
                .validate()
                .unwrap_err()
                .to_string()
                .contains("cannot be fleet-unique")
        );
        // What older clients send still reads.
        let old: Source =
            serde_json::from_str(r#"{"kind":{"Cron":"* * * * *"},"unique":false}"#).unwrap();
        assert!(!old.is_fleet_unique());
        assert!(
            Source::cron([-1, -1, -1, -1, -1])
                .unwrap()
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn kinds_describe_themselves() {
        let t = Source::timer(Duration::from_millis(50));
        assert_eq!(t.kind.to_string(), "timer every 50ms");
        let r = Source::rb_timer(Duration::from_secs(2), Some(3));
        assert_eq!(r.kind.to_string(), "rb timer every 2s x3");
        let f = Source::file_monitor("/tmp/x").recursive();
        assert_eq!(f.kind.to_string(), "file monitor /tmp/x (recursive)");
        assert!(Source::timer(Duration::from_secs(1)).unique().unique);
    }
}
