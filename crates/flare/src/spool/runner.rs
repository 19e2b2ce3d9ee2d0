//! A spooler's loop: which job next, claim, run, finish; inotify on the
//! directory wakes it for a new job at once.
//!
//! Jobs are kept in name order (the names sort by priority, then age).
//! A job another spooler holds, or one whose handler said retry, leaves
//! the queue and comes back at the next full scan of the directory, every
//! spooler frequency; a full scan also happens when the spooler starts
//! (so a respawned spooler takes up what a dead one held) and when the
//! kernel's inotify queue overflowed.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::os::fd::AsFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use inotify::{EventMask, Inotify, WatchMask};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::dir::{self, Claim};
use super::{SpoolHandler, SpoolOutcome, Task, format};
use crate::error::{Error, Result};
use crate::topology::ProcId;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

struct Runner<'a> {
    me: ProcId,
    dir: &'a Path,
    inotify: Inotify,
    buf: Vec<u8>,
    /// Jobs to try, in the order they run.
    ready: BTreeSet<String>,
    /// Jobs not to start before a time (Unix seconds).
    later: BTreeSet<(u64, String)>,
    last_scan: Instant,
    /// The spooler frequency, read again each time the spooler goes idle
    /// (any process of the group may change it).
    frequency: Duration,
}

/// Serves `dir` with `handler` until the process ends; returns only when
/// the directory cannot be watched or read.
pub(super) fn serve(me: ProcId, dir: &Path, handler: SpoolHandler) -> Result<Infallible> {
    let inotify = Inotify::init().map_err(|e| Error::io("creating the spooler's inotify", e))?;
    inotify
        .watches()
        .add(dir, WatchMask::MOVED_TO | WatchMask::CLOSE_WRITE)
        .map_err(|e| Error::Spool {
            path: dir.to_path_buf(),
            what: format!("cannot be watched: {e}"),
        })?;
    let mut r = Runner {
        me,
        dir,
        inotify,
        buf: vec![0; 64 * 1024],
        ready: BTreeSet::new(),
        later: BTreeSet::new(),
        last_scan: Instant::now(),
        frequency: super::frequency(),
    };
    r.scan()?;
    tracing::info!(
        "{me}: serving spool directory {} ({} jobs waiting)",
        dir.display(),
        r.ready.len() + r.later.len()
    );
    loop {
        r.events()?;
        if r.last_scan.elapsed() >= r.frequency {
            r.scan()?;
        }
        r.promote();
        match r.ready.pop_first() {
            Some(name) => r.run(&name, &handler),
            None => r.wait()?,
        }
    }
}

impl Runner<'_> {
    /// Reads the whole directory into the queues.
    fn scan(&mut self) -> Result<()> {
        let names = dir::list(self.dir).map_err(|e| Error::Spool {
            path: self.dir.to_path_buf(),
            what: format!("cannot be listed: {e}"),
        })?;
        for name in names {
            self.add(name);
        }
        dir::remove_stale(self.dir);
        self.last_scan = Instant::now();
        Ok(())
    }

    fn add(&mut self, name: String) {
        let at = dir::at_in_name(&name);
        if at > unix_now() {
            self.later.insert((at, name));
        } else {
            self.ready.insert(name);
        }
    }

    /// Takes what inotify has (without blocking).
    fn events(&mut self) -> Result<()> {
        loop {
            let events = match self.inotify.read_events(&mut self.buf) {
                Ok(events) => events,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("reading the spooler's inotify", e)),
            };
            let mut names = Vec::new();
            let mut overflow = false;
            for ev in events {
                if ev.mask.contains(EventMask::Q_OVERFLOW) {
                    overflow = true;
                }
                if let Some(name) = ev.name.and_then(|n| n.to_str()) {
                    if dir::is_job(name) {
                        names.push(name.to_owned());
                    }
                }
            }
            for n in names {
                self.add(n);
            }
            if overflow {
                self.scan()?;
            }
        }
    }

    /// Moves jobs whose time came to the ready queue.
    fn promote(&mut self) {
        let now = unix_now();
        while let Some((at, _)) = self.later.first() {
            if *at > now {
                break;
            }
            if let Some((_, name)) = self.later.pop_first() {
                self.ready.insert(name);
            }
        }
    }

    /// Sleeps until a new job, a job's time, or the next scan.
    fn wait(&mut self) -> Result<()> {
        self.frequency = super::frequency();
        let mut until = self.frequency.saturating_sub(self.last_scan.elapsed());
        if let Some((at, _)) = self.later.first() {
            let secs = at.saturating_sub(unix_now());
            until = until.min(Duration::from_secs(secs));
        }
        let ms = until.as_millis().clamp(1, i32::MAX as u128) as i32;
        let mut fds = [PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN)];
        match poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
            Err(e) => Err(Error::io("waiting for spool jobs", e)),
        }
    }

    /// Claims and runs one job.
    fn run(&mut self, name: &str, handler: &SpoolHandler) {
        let held = match dir::claim(self.dir, name) {
            Ok(Claim::Got(held)) => held,
            Ok(Claim::Busy | Claim::Gone) => return,
            Err(e) => {
                tracing::warn!("{}: cannot open job {name}: {e}", self.me);
                return;
            }
        };
        let (args, body) = match format::decode(&held.data) {
            Ok(job) => job,
            Err(why) => {
                match held.set_aside() {
                    Ok(to) => tracing::error!(
                        "{}: job {name} is not a spool file ({why}); set aside as {}",
                        self.me,
                        to.display()
                    ),
                    Err(e) => tracing::error!(
                        "{}: job {name} is not a spool file ({why}) and cannot be set aside: {e}",
                        self.me
                    ),
                }
                return;
            }
        };
        // Jobs written by others (uWSGI) carry `at` only inside.
        let at = args
            .get(b"at".as_slice())
            .and_then(|a| std::str::from_utf8(a).ok())
            .and_then(|a| a.trim().parse::<f64>().ok())
            .map_or(0, |a| a.ceil().max(0.0) as u64);
        if at > unix_now() {
            self.later.insert((at, name.to_owned()));
            return;
        }
        let task = Task {
            name: held.path.clone(),
            dir: self.dir.to_path_buf(),
            args,
            body,
        };
        let started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| handler(&task))).unwrap_or_else(|_| {
            tracing::error!(
                "{}: the spool handler panicked on {name}; retried later",
                self.me
            );
            SpoolOutcome::Retry
        });
        match outcome {
            SpoolOutcome::Ok | SpoolOutcome::Ignore => {
                if let Err(e) = held.finish() {
                    tracing::error!("{}: cannot remove finished job {name}: {e}", self.me);
                }
                tracing::debug!(
                    "{}: done with job {name} ({outcome:?}) after {:?}",
                    self.me,
                    started.elapsed()
                );
            }
            SpoolOutcome::Retry => {
                tracing::debug!("{}: job {name} will be retried", self.me);
            }
        }
    }
}
