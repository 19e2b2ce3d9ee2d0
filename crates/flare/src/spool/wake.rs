//! How a new job reaches one idle spooler, and only one.
//!
//! The master creates one inotify instance per spool directory when the
//! group is built (watching `MOVED_TO` and `CLOSE_WRITE` for job files,
//! `MODIFY` for journal segments, which grow by appends), and every
//! spooler of that directory inherits it. The event queue is the kernel's,
//! shared: an event read by one spooler is gone for the others, so each new
//! job file is announced to exactly one spooler. Spoolers wait on the queue
//! through their own epoll instance registered with `EPOLLEXCLUSIVE`, so a
//! new event wakes one idle spooler instead of all of them. The queue lives
//! as long as the master: events for jobs spooled while no spooler reads
//! (before they start, while one is respawned) wait in it.
//!
//! When the queue overflowed (`IN_Q_OVERFLOW`: more than the system's
//! `fs.inotify.max_queued_events` unread), events were lost: the spooler
//! that reads the overflow rescans the directory and moves the directory's
//! scan generation on, so every spooler of the directory rescans too.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use inotify::{EventMask, Inotify, WatchMask};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use super::{dir, journal};
use crate::error::{Error, Result};

/// The read size that brings one event with a flare job name (the 16-byte
/// header and a name of up to 95 bytes, NUL-padded to a multiple of 16),
/// never two: the rest stay for the other spoolers. A longer name (a job
/// file written by someone else) makes the read fail with `EINVAL`, and
/// it is read again with the whole buffer.
const ONE_EVENT: usize = 16 + 96;

/// The master's end: one directory's inotify instance.
#[derive(Debug)]
pub(super) struct Shared(OwnedFd);

impl Shared {
    /// Watches `dir` for jobs renamed into place or written in place, and
    /// for journal segments that grew.
    pub(super) fn new(dir: &Path) -> Result<Shared> {
        let inotify =
            Inotify::init().map_err(|e| Error::io("creating a spool directory's inotify", e))?;
        inotify
            .watches()
            .add(
                dir,
                WatchMask::MOVED_TO | WatchMask::CLOSE_WRITE | WatchMask::MODIFY,
            )
            .map_err(|e| Error::Spool {
                path: dir.to_path_buf(),
                what: format!("cannot be watched: {e}"),
            })?;
        Ok(Shared(OwnedFd::from(inotify)))
    }
}

/// What one read of the queue brought.
pub(super) struct Taken {
    /// Job names (in the order they came).
    pub(super) names: Vec<String>,
    /// Journal segments that grew.
    pub(super) segments: Vec<String>,
    /// Events were lost: the directory must be scanned.
    pub(super) overflow: bool,
}

/// A spooler's end: its handle on the shared queue and its own epoll.
pub(super) struct Waker {
    inotify: Inotify,
    epoll: Epoll,
    buf: Vec<u8>,
}

impl Waker {
    /// Opens this spooler's end of `shared` (in the spooler, after fork).
    pub(super) fn open(shared: &Shared) -> Result<Waker> {
        let fd = shared
            .0
            .try_clone()
            .map_err(|e| Error::io("duplicating the spool directory's inotify", e))?;
        let inotify = Inotify::from(fd);
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .map_err(|e| Error::io("creating the spooler's epoll", e))?;
        epoll
            .add(
                inotify.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE, 0),
            )
            .map_err(|e| Error::io("watching the spool directory's inotify", e))?;
        Ok(Waker {
            inotify,
            epoll,
            buf: vec![0; 64 * 1024],
        })
    }

    /// Takes what the queue has without blocking: everything when `all`
    /// (a directory with one spooler), else one read of about one event,
    /// so that the other events stay for the other spoolers.
    pub(super) fn take(&mut self, all: bool) -> Result<Taken> {
        let mut taken = Taken {
            names: Vec::new(),
            segments: Vec::new(),
            overflow: false,
        };
        let full = self.buf.len();
        let mut len = if all { full } else { ONE_EVENT };
        loop {
            let events = match self.inotify.read_events(&mut self.buf[..len]) {
                Ok(events) => events,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(taken),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Too small for the next event: a long name.
                Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) && len < full => {
                    len = full;
                    continue;
                }
                Err(e) => return Err(Error::io("reading the spool directory's inotify", e)),
            };
            for ev in events {
                if ev.mask.contains(EventMask::Q_OVERFLOW) {
                    taken.overflow = true;
                }
                if let Some(name) = ev.name.and_then(|n| n.to_str()) {
                    if journal::is_segment(name) {
                        taken.segments.push(name.to_owned());
                    } else if dir::is_job(name) && !ev.mask.contains(EventMask::MODIFY) {
                        // A job file counts once whole: renamed in, or
                        // closed after writing (not while being written).
                        taken.names.push(name.to_owned());
                    }
                }
            }
            if !all {
                return Ok(taken);
            }
        }
    }

    /// Sleeps until the queue has an event for this spooler, or `until`.
    pub(super) fn wait(&self, until: Duration) -> Result<()> {
        let ms = until.as_millis().clamp(1, i32::MAX as u128) as i32;
        let mut events = [EpollEvent::empty()];
        match self.epoll.wait(
            &mut events,
            EpollTimeout::try_from(ms).unwrap_or(EpollTimeout::MAX),
        ) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
            Err(e) => Err(Error::io("waiting for spool jobs", e)),
        }
    }
}
