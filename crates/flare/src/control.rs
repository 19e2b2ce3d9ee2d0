//! The control endpoint's commands: one per line, answered by one line
//! starting with `ok` or `error`. Parsing only; the master carries them
//! out. Pure: no I/O.

use std::fmt;

use crate::signal_num;
use crate::topology::{ProcId, Role};

/// A command of the control endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Command {
    /// `raise N`: raise signal N, routed like any other.
    Raise(u8),
    /// `pause workerN`: skip it in pools and `active-workers`; keep what is
    /// sent to it by name until it resumes.
    Pause(ProcId),
    /// `resume workerN`.
    Resume(ProcId),
    /// `cheap workerN`: let it finish what it has, stop it, do not respawn.
    Cheap(ProcId),
    /// `uncheap workerN`: start it again.
    Uncheap(ProcId),
    /// `reload`: restart every child, one at a time, each after it has
    /// handled what it holds.
    Reload,
    /// `stats`: the stats document, on one line.
    Stats,
    /// `help`: the commands.
    Help,
}

/// The commands, for `help` and error messages.
pub(crate) const USAGE: &str = "raise N | pause workerN | resume workerN | cheap workerN | \
                                uncheap workerN | reload | stats | help";

impl Command {
    /// Parses one line; the error says what is wrong and what is valid.
    pub(crate) fn parse(line: &str) -> Result<Command, String> {
        let mut words = line.split_whitespace();
        let (Some(verb), arg, None) = (words.next(), words.next(), words.next()) else {
            return Err(format!(
                "expected one command, got `{}`; commands: {USAGE}",
                line.trim()
            ));
        };
        let worker = |verb: &str| -> Result<ProcId, String> {
            let Some(text) = arg else {
                return Err(format!("`{verb}` needs a worker, like `{verb} worker2`"));
            };
            let id = text
                .strip_prefix("worker")
                .and_then(|n| n.parse::<u32>().ok())
                .filter(|&n| n >= 1);
            match id {
                Some(id) => Ok(ProcId::new(Role::Worker, id)),
                None => Err(format!(
                    "`{text}` is not a worker: `{verb}` takes workerN (N >= 1)"
                )),
            }
        };
        let bare = |c: Command| match arg {
            None => Ok(c),
            Some(a) => Err(format!("`{verb}` takes no argument, got `{a}`")),
        };
        match verb {
            "raise" => {
                let text = arg.ok_or("`raise` needs a signal number, like `raise 17`")?;
                signal_num::parse(text)
                    .map(Command::Raise)
                    .map_err(|e| e.to_string())
            }
            "pause" => worker(verb).map(Command::Pause),
            "resume" => worker(verb).map(Command::Resume),
            "cheap" => worker(verb).map(Command::Cheap),
            "uncheap" => worker(verb).map(Command::Uncheap),
            "reload" => bare(Command::Reload),
            "stats" => bare(Command::Stats),
            "help" => bare(Command::Help),
            other => Err(format!("unknown command `{other}`; commands: {USAGE}")),
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Raise(n) => write!(f, "raise {n}"),
            Command::Pause(p) => write!(f, "pause {p}"),
            Command::Resume(p) => write!(f, "resume {p}"),
            Command::Cheap(p) => write!(f, "cheap {p}"),
            Command::Uncheap(p) => write!(f, "uncheap {p}"),
            Command::Reload => f.write_str("reload"),
            Command::Stats => f.write_str("stats"),
            Command::Help => f.write_str("help"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_parses_and_prints_back() {
        for line in [
            "raise 17",
            "pause worker2",
            "resume worker2",
            "cheap worker3",
            "uncheap worker3",
            "reload",
            "stats",
            "help",
        ] {
            let c = Command::parse(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(c.to_string(), line);
        }
        assert_eq!(Command::parse("  raise   0 ").unwrap(), Command::Raise(0));
    }

    #[test]
    fn bad_commands_say_what_is_wrong_and_what_is_valid() {
        let cases = [
            ("", "expected one command"),
            ("fly away", "unknown command `fly`"),
            ("raise", "needs a signal number"),
            ("raise 256", "0 to 255"),
            ("raise -1", "0 to 255"),
            ("pause", "needs a worker"),
            ("pause mule1", "`mule1` is not a worker"),
            ("cheap worker0", "not a worker"),
            ("reload now", "takes no argument"),
            ("raise 1 2", "expected one command"),
        ];
        for (line, want) in cases {
            let e = Command::parse(line).unwrap_err();
            assert!(e.contains(want), "{line:?}: {e}");
        }
        assert!(Command::parse("bogus").unwrap_err().contains(USAGE));
    }
}
