//! The one error type of the library.
//!
//! Every variant says what was wrong and, where there is a choice, what is
//! valid. The uwsgiconf exception each one replaces is named in its doc.

use std::io;

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

    /// `try_send()` found the channel to the master full.
    #[error("signal {num} not sent: the channel to the master is full (send() would wait)")]
    QueueFull {
        /// The signal number.
        num: u8,
    },

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
    #[error("unable to deliver signal to remote node: {0}")]
    Unreachable(#[source] io::Error),

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

    /// A system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What flare was doing.
        context: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Wraps an I/O error with what was being done when it happened.
    pub fn io(context: &'static str, source: impl Into<io::Error>) -> Self {
        Error::Io {
            context,
            source: source.into(),
        }
    }
}

/// How a taken number is held, for [`Error::Conflict`].
fn held(existing: &Option<String>, owner: &str) -> String {
    match existing {
        Some(target) => format!("already registered by {owner} with target `{target}`"),
        None => format!("reserved by {owner}"),
    }
}
