//! Who raised a signal, and what a handler receives.

use std::fmt;

use serde::Serialize;

use crate::source_spec::SourceId;
use crate::topology::{ProcId, Role};

/// Who raised a signal.
///
/// ```
/// use flare::{Origin, ProcId, Role};
/// let o = Origin::Process(ProcId::new(Role::Mule, 2));
/// assert_eq!(o.to_string(), "mule2");
/// assert_eq!(Origin::Remote.to_string(), "remote");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// A process of the group (the master included).
    Process(ProcId),
    /// A remote node, over the uwsgi protocol.
    Remote,
    /// A timer (rb timers included).
    Timer(SourceId),
    /// A cron entry.
    Cron(SourceId),
    /// A file monitor.
    FileMonitor(SourceId),
    /// The control endpoint.
    Control,
}

impl Origin {
    /// The source that raised it, for timers, crons and file monitors.
    pub fn source(self) -> Option<SourceId> {
        match self {
            Origin::Timer(id) | Origin::Cron(id) | Origin::FileMonitor(id) => Some(id),
            _ => None,
        }
    }

    /// Packs into 32 bits: kind in the top byte, process or source id below.
    pub(crate) fn encode(self) -> u32 {
        let (kind, id): (u32, u32) = match self {
            Origin::Process(p) => (
                match p.role {
                    Role::Master => 0,
                    Role::Worker => 1,
                    Role::Mule => 2,
                    Role::Spooler => 3,
                    Role::Bridge => 9,
                },
                p.id,
            ),
            Origin::Remote => (4, 0),
            Origin::Timer(id) => (5, id.0),
            Origin::Cron(id) => (6, id.0),
            Origin::FileMonitor(id) => (7, id.0),
            Origin::Control => (8, 0),
        };
        kind << 24 | (id & 0x00ff_ffff)
    }

    /// Unpacks [`Origin::encode`]; an unknown kind reads as the master.
    pub(crate) fn decode(word: u32) -> Origin {
        let id = word & 0x00ff_ffff;
        let proc = |role| Origin::Process(ProcId::new(role, id));
        match word >> 24 {
            1 => proc(Role::Worker),
            2 => proc(Role::Mule),
            3 => proc(Role::Spooler),
            4 => Origin::Remote,
            5 => Origin::Timer(SourceId(id)),
            6 => Origin::Cron(SourceId(id)),
            7 => Origin::FileMonitor(SourceId(id)),
            8 => Origin::Control,
            9 => proc(Role::Bridge),
            _ => Origin::Process(ProcId::MASTER),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Process(p) => p.fmt(f),
            Origin::Remote => f.write_str("remote"),
            Origin::Timer(id) => write!(f, "timer{id}"),
            Origin::Cron(id) => write!(f, "cron{id}"),
            Origin::FileMonitor(id) => write!(f, "file-monitor{id}"),
            Origin::Control => f.write_str("control"),
        }
    }
}

/// One signal as its handler (or a waiter) sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Received {
    /// The signal number.
    pub num: u8,
    /// Who raised it.
    pub origin: Origin,
    /// 1 for a first delivery; more when it is delivered again after the
    /// process that had it died.
    pub attempt: u8,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_round_trip() {
        let all = [
            Origin::Process(ProcId::MASTER),
            Origin::Process(ProcId::new(Role::Worker, 1)),
            Origin::Process(ProcId::new(Role::Mule, 77)),
            Origin::Process(ProcId::new(Role::Spooler, 4096)),
            Origin::Remote,
            Origin::Timer(SourceId(3)),
            Origin::Cron(SourceId(0xff_ffff)),
            Origin::FileMonitor(SourceId(1)),
            Origin::Control,
        ];
        for o in all {
            assert_eq!(Origin::decode(o.encode()), o);
        }
        assert_eq!(Origin::Timer(SourceId(3)).to_string(), "timer#3");
    }
}
