//! The one error type of the library.
//!
//! Every variant says what was wrong and, where there is a choice, what is
//! valid. The uwsgiconf exception each one replaces is named in its doc.

use std::io;

use serde::{Deserialize, Serialize};

/// A specialised `Result` for flare operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in flare.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A signal number given as text is not an integer in 0-255.
    #[error("invalid signal number `{text}`: signal numbers are integers from 0 to 255")]
    BadNumber {
        /// The text that was given.
        text: String,
    },

    /// A registration, reservation or source was refused: by the table
    /// or sources of this process's master, or by the master over the
    /// channel (the same value on both sides).
    #[error(transparent)]
    Registration(#[from] RegistrationError),

    /// `try_send()` did not send (the channel was full, or there is no
    /// master to take the signal).
    #[error(transparent)]
    NotSent(#[from] TrySendError),

    /// A remote node answered that it did not deliver the signal
    /// (uwsgiconf: `ValueError`).
    #[error("remote node {addr} rejected signal {num}")]
    Rejected {
        /// The remote address.
        addr: String,
        /// The signal number.
        num: u8,
    },

    /// A remote node could not be reached or did not answer in time
    /// (uwsgiconf: `OSError`).
    #[error("unable to deliver signal to remote node")]
    Unreachable(#[source] io::Error),

    /// A stats or control endpoint could not be reached, or the exchange
    /// with it failed (refused, permission denied, timed out).
    #[error("cannot talk to the {endpoint} endpoint at {addr}")]
    Endpoint {
        /// `stats` or `control`.
        endpoint: &'static str,
        /// The address given.
        addr: String,
        /// What went wrong.
        #[source]
        source: io::Error,
    },

    /// A stats or control endpoint answered with something that is not an
    /// answer (nothing at all, or not the expected document).
    #[error("the {endpoint} endpoint at {addr} {problem}")]
    BadAnswer {
        /// `stats` or `control`.
        endpoint: &'static str,
        /// The address given.
        addr: String,
        /// What was wrong with the answer.
        problem: String,
    },

    /// Waiting for a signal failed (uwsgiconf: `SystemError`).
    #[error("cannot wait for a signal: {0}")]
    Wait(String),

    /// The call needs a flare process (a master built with
    /// `Master::builder()`, or one of its children) and this is not one.
    #[error("{0}")]
    NoRuntime(&'static str),

    /// The calling process was forked from a member of the group (by a
    /// handler or an entry function) and is not a member itself: it has
    /// the member's memory but must not claim its identity or write into
    /// its channels.
    #[error(
        "process {pid} was forked from {member} (pid {member_pid}) and is not a member of the \
         group: it has no identity or channel of its own; raise signals from {member} itself, \
         or with send_remote() to the master's remote address"
    )]
    ForkedFromMember {
        /// This process's pid.
        pid: u32,
        /// The member it was forked from.
        member: String,
        /// That member's pid.
        member_pid: u32,
    },

    /// The master closed the channel: it exited or was killed.
    #[error("the master is gone (its channel closed)")]
    MasterGone,

    /// The control endpoint refused a command; the text says why.
    #[error("control command refused: {0}")]
    Control(String),

    /// The process group was configured with values that cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The channel to the master carried something this side cannot read.
    #[error("protocol error on the master channel: {0}")]
    Protocol(String),

    // ---- mule and farm messages ----
    /// A mule or farm message larger than the mailboxes take.
    #[error(
        "message of {len} bytes not sent to {to}: mule messages are at most {max} bytes \
         (raise it with MasterBuilder::mule_msg_size, uWSGI's --mule-msg-size)"
    )]
    MessageTooLarge {
        /// The mailbox: `mule2`, `farm reports`, `any mule`.
        to: String,
        /// The message's length.
        len: usize,
        /// The largest message it takes.
        max: usize,
    },

    /// `try_mule_msg()` / `try_farm_msg()` found the mailbox full.
    #[error(
        "message not sent: the mailbox of {to} is full (mule_msg() would wait for a mule to read)"
    )]
    MailboxFull {
        /// The mailbox: `mule2`, `farm reports`, `any mule`.
        to: String,
    },

    /// A mule message for a mule or farm that does not exist, or a receive
    /// outside a mule.
    #[error("{0}")]
    Mailbox(String),

    /// A spool directory that cannot be used: missing, not a directory,
    /// not writable, full, or a job that could not be written there.
    #[error("spool directory {}: {what}", .path.display())]
    Spool {
        /// The directory.
        path: std::path::PathBuf,
        /// What is wrong, and what to do.
        what: String,
    },

    /// A spool job that cannot be spooled as given.
    #[error("invalid spool job: {0}")]
    InvalidJob(String),

    /// A lock number outside the group's locks.
    #[error("invalid lock number {num}: this group has locks 0 to {max} (more with --locks N)")]
    BadLock {
        /// The number given.
        num: u32,
        /// The highest valid number.
        max: u32,
    },

    /// A process could not join a group through its attach socket.
    #[error("cannot attach to the flare master at {addr}: {reason}")]
    Attach {
        /// The attach socket.
        addr: String,
        /// What went wrong, and what to do.
        reason: String,
    },

    /// A system call failed.
    #[error("{context}")]
    Io {
        /// What flare was doing.
        context: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// The message with its causes, each after a colon (`Display` gives
    /// the message alone and [`source`](std::error::Error::source) the
    /// cause): what to print where one line of text goes.
    pub fn report(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            text.push_str(": ");
            text.push_str(&c.to_string());
            cause = c.source();
        }
        text
    }

    /// Wraps an I/O error with what was being done when it happened.
    pub fn io(context: &'static str, source: impl Into<io::Error>) -> Self {
        Error::Io {
            context,
            source: source.into(),
        }
    }
}

/// Why the table or the sources refused a request: the registration
/// rules, the free numbers, the sources' checks. Serialisable, so the
/// master sends the very value back to a child that asked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RegistrationError {
    /// A signal target is not one this master can route to.
    #[error("invalid signal target `{text}`: {reason}; valid targets: {valid}")]
    InvalidTarget {
        /// The target text that was given.
        text: String,
        /// What is wrong with it.
        reason: String,
        /// The targets that are valid here.
        valid: String,
    },

    /// The target can never include a process able to run the handler
    /// (a handler registered in a child runs only in that child).
    #[error(
        "signal {num}: target `{target}` can never reach {process}, the only process able to run \
         a handler registered there; register it in the master before run(), or use a target \
         that includes {process}"
    )]
    Unrunnable {
        /// The signal number.
        num: u8,
        /// The requested target.
        target: String,
        /// The process that made the registration.
        process: String,
    },

    /// The master registered a number it had already registered (uWSGI
    /// refuses this too: two modules picking the same number is a bug).
    #[error(
        "signal {num} is already registered in the master (target `{target}`); pick another number or use Signal::auto()"
    )]
    AlreadyRegistered {
        /// The signal number.
        num: u8,
        /// The target of the existing registration.
        target: String,
    },

    /// The number is registered with another target, or reserved by
    /// another process.
    #[error("signal {num} is {}; cannot register it with target `{requested}`", held(.existing, .owner))]
    Conflict {
        /// The signal number.
        num: u8,
        /// The target of the existing registration; `None` when the number
        /// is only reserved (by `Signal::auto()`).
        existing: Option<String>,
        /// Who made the existing registration or reservation.
        owner: String,
        /// The target that was asked for.
        requested: String,
    },

    /// All 256 signal numbers are registered or reserved
    /// (uwsgiconf: `UwsgiconfException('No uWSGI signals available.')`).
    #[error("no signal number available: all 256 are registered or reserved")]
    NoSignalAvailable,

    /// A timer, cron entry or file monitor that cannot work.
    #[error("invalid signal source: {0}")]
    InvalidSource(String),

    /// The same source was already added for the same signal (uWSGI would
    /// silently double it: unbit/uwsgi#782).
    #[error("signal {sig} already has this source ({what}) as source #{id}")]
    DuplicateSource {
        /// The signal number.
        sig: u8,
        /// The source, described.
        what: String,
        /// The id of the existing source.
        id: u32,
    },

    /// No source has this id (never added, or already removed).
    #[error("no signal source #{0}")]
    NoSuchSource(u32),

    /// The master failed to carry out a child's request for a reason of
    /// its own (the text says which).
    #[error("the master could not carry out the request: {0}")]
    Master(String),
}

impl RegistrationError {
    /// What a child is told when its request failed: the refusal itself, or
    /// the master's error as text.
    pub(crate) fn for_child(e: Error) -> Self {
        match e {
            Error::Registration(r) => r,
            other => RegistrationError::Master(other.report()),
        }
    }
}

/// Why [`Signal::try_send`](crate::Signal::try_send) did not send
/// (as tokio's `TrySendError`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrySendError {
    /// The channel to the master is full; `send()` would wait.
    #[error("signal {0} not sent: the channel to the master is full (send() would wait)")]
    Full(u8),
    /// No master takes signals from here: it is gone (its channel closed),
    /// it is running in this very process, or this is not a flare process.
    #[error(
        "signal {0} not sent: no master takes it (the master is gone, or this process is not \
         one of its children)"
    )]
    Closed(u8),
}

/// How a taken number is held, for [`Error::Conflict`].
fn held(existing: &Option<String>, owner: &str) -> String {
    match existing {
        Some(target) => format!("already registered by {owner} with target `{target}`"),
        None => format!("reserved by {owner}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_is_printed_once_and_report_adds_it() {
        let e = Error::io(
            "binding the stats socket",
            io::Error::from(io::ErrorKind::PermissionDenied),
        );
        assert_eq!(e.to_string(), "binding the stats socket");
        assert!(std::error::Error::source(&e).is_some());
        assert_eq!(e.report(), "binding the stats socket: permission denied");
        let e = Error::Unreachable(io::Error::from(io::ErrorKind::TimedOut));
        assert_eq!(
            e.report(),
            "unable to deliver signal to remote node: timed out"
        );
    }

    #[test]
    fn a_refusal_crosses_the_channel_unchanged() {
        let sent = RegistrationError::Conflict {
            num: 9,
            existing: Some("workers".into()),
            owner: "worker1".into(),
            requested: "mule".into(),
        };
        let wire = serde_json::to_vec(&sent).unwrap();
        let got: RegistrationError = serde_json::from_slice(&wire).unwrap();
        assert_eq!(got, sent);
        let e = Error::from(got);
        assert_eq!(e.to_string(), sent.to_string());
        assert!(
            e.to_string()
                .contains("already registered by worker1 with target `workers`")
        );
        let other = RegistrationError::for_child(Error::io(
            "creating the inotify descriptor",
            io::Error::from(io::ErrorKind::OutOfMemory),
        ));
        assert_eq!(
            other,
            RegistrationError::Master("creating the inotify descriptor: out of memory".into())
        );
    }
}
