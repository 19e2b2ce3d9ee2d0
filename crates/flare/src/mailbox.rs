//! Mule and farm messages (uWSGI `mule_msg`, `mule_get_msg`, `farm_msg`,
//! `farm_get_msg`): bounded mailboxes that never drop a message.
//!
//! Before the first fork the master creates one Unix datagram socket pair
//! per mule, one per farm and one shared by all mules ("any mule", uWSGI's
//! shared mule queue); every child inherits them. A sender writes a whole
//! message to the mailbox's sending end; a mule reads whole messages from
//! the receiving ends of its own mailbox, the shared one and (optionally)
//! its farms' (a farm's message reaches exactly one of its mules, whichever
//! reads first). The master also keeps both ends, so messages for a mule
//! that is being respawned wait for the new process.
//!
//! Bounds: a message larger than the configured size
//! ([`crate::MasterBuilder::mule_msg_size`], 64 KiB by default) is refused
//! at the sender ([`Error::MessageTooLarge`]). A mailbox holds what its
//! send buffer takes (4 × the message size, within `net.core.wmem_max`,
//! kernel overhead per message included); past that, [`mule_msg`] and [`farm_msg`]
//! wait until a mule reads, and [`try_mule_msg`] / [`try_farm_msg`] return
//! [`Error::MailboxFull`]. uWSGI drops the message and logs "MULE MSG QUEUE
//! IS FULL". Messages for a mule are read only by code in that mule that
//! calls [`mule_get_msg`]; a mule that never does leaves them waiting.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::OnceLock;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockType, recv, send, setsockopt, socketpair, sockopt,
};

use crate::error::{Error, Result};
use crate::handler_done::{HANDLED, WAITING, wake_pipe};
use crate::topology::{Role, Topology};

/// The largest mule message by default, in bytes (uWSGI's
/// `--mule-msg-size` default).
pub const DEFAULT_MULE_MSG_SIZE: usize = 64 * 1024;

/// One mailbox: whatever is sent on `tx` is read on `rx`.
struct Mailbox {
    /// What the mailbox is for, in messages: `mule2`, `farm reports`.
    name: String,
    /// Blocking: a send waits when the mailbox is full (`MSG_DONTWAIT`
    /// for the try variants).
    tx: OwnedFd,
    /// Non-blocking: several processes may read it (the shared mailbox, a
    /// farm's), so a reader polls, then reads and may find it taken.
    rx: OwnedFd,
}

impl Mailbox {
    fn new(name: String, max: usize) -> Result<Mailbox> {
        let (tx, rx) = socketpair(
            AddressFamily::Unix,
            SockType::Datagram,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| Error::io("creating a mule mailbox", e))?;
        // Room for a few messages of the largest size (the kernel caps it
        // at net.core.wmem_max; a message it still cannot take is reported
        // as too large, see `send_to`).
        let _ = setsockopt(&tx, sockopt::SndBuf, &max.saturating_mul(4));
        crate::sys::set_nonblocking(&rx)?;
        Ok(Mailbox { name, tx, rx })
    }
}

/// Every mailbox of the group, created in the master before the first fork.
struct Mailboxes {
    max: usize,
    any: Mailbox,
    mules: Vec<Mailbox>,
    /// By farm index, with the farm's name and mule ids.
    farms: Vec<(String, Vec<u32>, Mailbox)>,
}

static MAILBOXES: OnceLock<Mailboxes> = OnceLock::new();

/// Creates the group's mailboxes (in the master, in `build()`). Nothing to
/// do without mules. `max` is the largest message, in bytes.
pub(crate) fn create(topo: &Topology, max: usize) -> Result<()> {
    if topo.mules == 0 {
        return Ok(());
    }
    if max == 0 {
        return Err(Error::Config(
            "mule_msg_size must be at least 1 byte".into(),
        ));
    }
    let boxes = Mailboxes {
        max,
        any: Mailbox::new("any mule".into(), max)?,
        mules: (1..=topo.mules)
            .map(|m| Mailbox::new(format!("mule{m}"), max))
            .collect::<Result<_>>()?,
        farms: topo
            .farms
            .iter()
            .map(|f| {
                Mailbox::new(format!("farm {}", f.name), max)
                    .map(|b| (f.name.clone(), f.mules.clone(), b))
            })
            .collect::<Result<_>>()?,
    };
    MAILBOXES
        .set(boxes)
        .map_err(|_| Error::Config("mule mailboxes already exist in this process".into()))
}

fn mailboxes() -> Result<&'static Mailboxes> {
    MAILBOXES.get().ok_or(Error::Mailbox(
        "no mule mailboxes: mule messages need a flare group with at least one mule".into(),
    ))
}

impl Mailboxes {
    fn valid(&self) -> String {
        let farms: Vec<&str> = self.farms.iter().map(|(n, _, _)| n.as_str()).collect();
        format!(
            "valid: a mule id 0..={} (0: any mule){}",
            self.mules.len(),
            if farms.is_empty() {
                String::new()
            } else {
                format!(" or a farm name ({})", farms.join(", "))
            }
        )
    }

    fn mule(&self, id: u32) -> Result<&Mailbox> {
        if id == 0 {
            return Ok(&self.any);
        }
        self.mules
            .get(id as usize - 1)
            .ok_or_else(|| Error::Mailbox(format!("no mule {id}; {}", self.valid())))
    }

    fn farm(&self, name: &str) -> Result<&Mailbox> {
        self.farms
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, b)| b)
            .ok_or_else(|| Error::Mailbox(format!("no farm `{name}`; {}", self.valid())))
    }
}

/// Whether a send may wait for room.
fn may_wait(asked: bool) -> bool {
    // The master never waits on a mailbox: before run() no mule reads yet,
    // and while running it serves everyone.
    asked && crate::child::context().is_some()
}

fn send_to(b: &Mailbox, max: usize, msg: &[u8], wait: bool) -> Result<()> {
    if msg.len() > max {
        return Err(Error::MessageTooLarge {
            to: b.name.clone(),
            len: msg.len(),
            max,
        });
    }
    let flags = if wait {
        MsgFlags::empty()
    } else {
        MsgFlags::MSG_DONTWAIT
    };
    loop {
        return match send(b.tx.as_raw_fd(), msg, flags) {
            Ok(_) => Ok(()),
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => Err(Error::MailboxFull { to: b.name.clone() }),
            Err(Errno::EMSGSIZE | Errno::ENOBUFS) => Err(Error::MessageTooLarge {
                to: b.name.clone(),
                len: msg.len(),
                max: kernel_max(&b.tx).min(max),
            }),
            Err(e) => Err(Error::io("sending a mule message", e)),
        };
    }
}

/// What the kernel takes in one datagram on this socket.
fn kernel_max(fd: &OwnedFd) -> usize {
    nix::sys::socket::getsockopt(fd, sockopt::SndBuf)
        .map(|b| b.saturating_sub(64))
        .unwrap_or(0)
}

/// Sends `msg` to mule `mule` (0: whichever mule reads first; uWSGI
/// `uwsgi.mule_msg(msg, id)`). Waits while the mailbox is full (in a
/// child; the master never waits and gets [`Error::MailboxFull`]).
///
/// # Errors
///
/// [`Error::MessageTooLarge`] for a message above the configured size,
/// [`Error::Mailbox`] for a mule or farm that does not exist or outside a
/// flare group, [`Error::Io`] when the mailbox cannot be written.
/// In the master, a full mailbox is [`Error::MailboxFull`].
pub fn mule_msg(msg: &[u8], mule: u32) -> Result<()> {
    let m = mailboxes()?;
    send_to(m.mule(mule)?, m.max, msg, may_wait(true))
}

/// [`mule_msg`] that returns [`Error::MailboxFull`] instead of waiting.
///
/// # Errors
///
/// [`Error::MailboxFull`] when the mailbox is full; otherwise as
/// [`mule_msg`].
pub fn try_mule_msg(msg: &[u8], mule: u32) -> Result<()> {
    let m = mailboxes()?;
    send_to(m.mule(mule)?, m.max, msg, false)
}

/// Sends `msg` to one mule of farm `farm` (uWSGI `uwsgi.farm_msg(farm,
/// msg)` and `mule_msg(msg, farm)`). Waits while the mailbox is full.
///
/// # Errors
///
/// [`Error::MessageTooLarge`] for a message above the configured size,
/// [`Error::Mailbox`] for a mule or farm that does not exist or outside a
/// flare group, [`Error::Io`] when the mailbox cannot be written.
/// In the master, a full mailbox is [`Error::MailboxFull`].
pub fn farm_msg(farm: &str, msg: &[u8]) -> Result<()> {
    let m = mailboxes()?;
    send_to(m.farm(farm)?, m.max, msg, may_wait(true))
}

/// [`farm_msg`] that returns [`Error::MailboxFull`] instead of waiting.
///
/// # Errors
///
/// [`Error::MailboxFull`] when the mailbox is full; otherwise as
/// [`farm_msg`].
pub fn try_farm_msg(farm: &str, msg: &[u8]) -> Result<()> {
    let m = mailboxes()?;
    send_to(m.farm(farm)?, m.max, msg, false)
}

/// What [`mule_get_msg`] waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GetMsg {
    /// Return [`Inbox::Signal`] when this process handles a signal while
    /// waiting (uWSGI `signals=True`: `mule_get_msg` returns `None` after
    /// a signal handler ran). Default true.
    pub signals: bool,
    /// Also read the mailboxes of this mule's farms. Default true.
    pub farms: bool,
    /// Give up after this long ([`Inbox::Timeout`]); `None` waits for good.
    pub timeout: Option<Duration>,
}

impl Default for GetMsg {
    fn default() -> Self {
        GetMsg {
            signals: true,
            farms: true,
            timeout: None,
        }
    }
}

/// What [`mule_get_msg`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inbox {
    /// A whole message.
    Message(Vec<u8>),
    /// This process handled a signal while waiting (with `signals`).
    Signal,
    /// The timeout passed.
    Timeout,
}

fn drain(fd: &OwnedFd) {
    let mut buf = [0u8; 64];
    while matches!(nix::unistd::read(fd, &mut buf), Ok(n) if n > 0) {}
}

/// This mule's id, or a clear error outside a mule.
fn my_mule() -> Result<u32> {
    match crate::child::context().map(|c| c.info) {
        Some(me) if me.role == Role::Mule => Ok(me.id),
        Some(me) => Err(Error::Mailbox(format!(
            "mule messages are received only in a mule; this is {}",
            me.proc_id()
        ))),
        None => Err(Error::Mailbox(
            "mule messages are received only in a mule; this is not a flare child".into(),
        )),
    }
}

/// Waits for the next message for this mule (uWSGI
/// `uwsgi.mule_get_msg(signals, farms, buffer_size, timeout)`): from its
/// own mailbox, the shared "any mule" one and, with `farms`, its farms'.
/// Messages are never cut short. Only in a mule.
///
/// # Errors
///
/// [`Error::Mailbox`] outside a mule, [`Error::Io`] when a mailbox
/// cannot be read.
pub fn mule_get_msg(opts: GetMsg) -> Result<Inbox> {
    let id = my_mule()?;
    let m = mailboxes()?;
    let mut boxes: Vec<&Mailbox> = vec![m.mule(id)?, &m.any];
    if opts.farms {
        boxes.extend(
            m.farms
                .iter()
                .filter(|(_, ids, _)| ids.contains(&id))
                .map(|(_, _, b)| b),
        );
    }
    receive(m.max, &boxes, opts.signals, opts.timeout)
}

/// The next message for one of this mule's farms (uWSGI
/// `uwsgi.farm_get_msg()`); `None` when `timeout` passed. Only in a mule.
///
/// # Errors
///
/// [`Error::Mailbox`] outside a mule or in a mule that is in no farm,
/// [`Error::Io`] when a mailbox cannot be read.
pub fn farm_get_msg(timeout: Option<Duration>) -> Result<Option<Vec<u8>>> {
    let id = my_mule()?;
    let m = mailboxes()?;
    let boxes: Vec<&Mailbox> = m
        .farms
        .iter()
        .filter(|(_, ids, _)| ids.contains(&id))
        .map(|(_, _, b)| b)
        .collect();
    if boxes.is_empty() {
        return Err(Error::Mailbox(format!("mule{id} is in no farm")));
    }
    match receive(m.max, &boxes, false, timeout)? {
        Inbox::Message(msg) => Ok(Some(msg)),
        Inbox::Signal | Inbox::Timeout => Ok(None),
    }
}

/// A message already waiting for this mule (its own, shared or farms'
/// mailboxes), without waiting.
///
/// # Errors
///
/// As [`mule_get_msg`].
pub fn try_mule_get_msg() -> Result<Option<Vec<u8>>> {
    let opts = GetMsg {
        signals: false,
        farms: true,
        timeout: Some(Duration::ZERO),
    };
    match mule_get_msg(opts)? {
        Inbox::Message(msg) => Ok(Some(msg)),
        Inbox::Signal | Inbox::Timeout => Ok(None),
    }
}

thread_local! {
    /// Where messages are read, reused (one message at most `max` bytes).
    static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One message from `b` if one waits.
fn recv_one(b: &Mailbox, max: usize) -> Result<Option<Vec<u8>>> {
    BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        if buf.len() < max {
            buf.resize(max, 0);
        }
        match recv(b.rx.as_raw_fd(), &mut buf[..max], MsgFlags::MSG_DONTWAIT) {
            Ok(n) => Ok(Some(buf[..n].to_vec())),
            Err(Errno::EAGAIN | Errno::EINTR) => Ok(None),
            Err(e) => Err(Error::io("reading a mule message", e)),
        }
    })
}

fn receive(
    max: usize,
    boxes: &[&Mailbox],
    signals: bool,
    timeout: Option<Duration>,
) -> Result<Inbox> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let wake = if signals { Some(wake_pipe()?) } else { None };
    // Counted before the first look, so a handler that ends from here on
    // either changes HANDLED before we read it or writes the pipe.
    let _waiting = wake.map(|_| Waiting::enter());
    let seen = HANDLED.load(SeqCst);
    loop {
        // Whatever is waiting first, then sleep.
        for b in boxes {
            if let Some(msg) = recv_one(b, max)? {
                return Ok(Inbox::Message(msg));
            }
        }
        if signals && HANDLED.load(SeqCst) != seen {
            return Ok(Inbox::Signal);
        }
        let left = match deadline {
            None => PollTimeout::NONE,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(Inbox::Timeout);
                }
                // Rounded up so a short wait does not spin at zero.
                PollTimeout::try_from(left + Duration::from_micros(999)).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds: Vec<PollFd<'_>> = boxes
            .iter()
            .map(|b| PollFd::new(b.rx.as_fd(), PollFlags::POLLIN))
            .collect();
        if let Some((r, _)) = wake {
            fds.push(PollFd::new(r.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, left) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(Error::io("waiting for a mule message", e)),
        }
        let woken = fds
            .last()
            .and_then(PollFd::revents)
            .is_some_and(|r| r.contains(PollFlags::POLLIN));
        if let (Some((r, _)), true) = (wake, woken) {
            drain(r);
        }
    }
}

/// A thread in a `signals` wait, for as long as this lives.
struct Waiting;

impl Waiting {
    fn enter() -> Waiting {
        WAITING.fetch_add(1, SeqCst);
        Waiting
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        WAITING.fetch_sub(1, SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mailbox_refuses_too_large_and_reports_full() {
        let b = Mailbox::new("mule1".into(), 1024).unwrap();
        let e = send_to(&b, 1024, &[0u8; 1025], false).unwrap_err();
        assert!(
            matches!(
                e,
                Error::MessageTooLarge {
                    len: 1025,
                    max: 1024,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("1025") && e.to_string().contains("1024"));
        let mut sent = 0;
        loop {
            match send_to(&b, 1024, &[7u8; 100], false) {
                Ok(()) => sent += 1,
                Err(Error::MailboxFull { to }) => {
                    assert_eq!(to, "mule1");
                    break;
                }
                Err(e) => panic!("{e}"),
            }
            assert!(sent < 100_000, "never full");
        }
        assert!(sent > 0);
        let mut got = 0;
        let mut buf = [0u8; 1024];
        while let Ok(n) = recv(b.rx.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
            assert_eq!(n, 100);
            got += 1;
        }
        assert_eq!(got, sent, "every message sent is read, none dropped");
    }
}
