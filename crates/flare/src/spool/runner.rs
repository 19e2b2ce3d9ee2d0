//! A spooler's loop: which job next, claim, run, finish.
//!
//! New jobs come from the directory's shared inotify queue (see `wake`):
//! each event reaches one spooler. Jobs are kept in name order (the names
//! sort by priority, then age). A spooler alone on its directory reads
//! every event each time round, so a new job of a higher priority overtakes
//! the waiting ones; one of several reads about one event when it has
//! nothing else to run, leaving the rest to the other spoolers.
//!
//! A job another spooler holds, or one whose handler said retry, leaves
//! the queue and comes back at the next full scan of the directory, every
//! spooler frequency; a full scan also happens when the spooler starts
//! (so a respawned spooler takes up what a dead one held) and when the
//! kernel's inotify queue overflowed (the spooler that saw it, then every
//! spooler of the directory).

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use super::dir::{self, Claim};
use super::wake::Waker;
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
    /// Which configured directory (its scan generation).
    idx: usize,
    /// The only spooler of its directory.
    alone: bool,
    waker: Waker,
    /// Jobs to try, in the order they run.
    ready: BTreeSet<String>,
    /// Jobs not to start before a time (Unix seconds).
    later: BTreeSet<(u64, String)>,
    last_scan: Instant,
    /// The directory's scan generation at this spooler's last scan.
    generation: u64,
    /// The spooler frequency, read again each time the spooler goes idle
    /// (any process of the group may change it).
    frequency: Duration,
}

/// Serves `dir` (configured directory `idx`, woken through `waker`) with
/// `handler` until the process ends; returns only when the directory
/// cannot be read.
pub(super) fn serve(
    me: ProcId,
    dir: &Path,
    idx: usize,
    alone: bool,
    waker: Waker,
    handler: SpoolHandler,
) -> Result<Infallible> {
    let mut r = Runner {
        me,
        dir,
        idx,
        alone,
        waker,
        ready: BTreeSet::new(),
        later: BTreeSet::new(),
        last_scan: Instant::now(),
        generation: super::scan_generation(idx),
        frequency: super::frequency(),
    };
    r.scan()?;
    tracing::info!(
        "{me}: serving spool directory {} ({} jobs waiting)",
        dir.display(),
        r.ready.len() + r.later.len()
    );
    loop {
        if r.alone || r.ready.is_empty() {
            r.events()?;
        }
        if r.last_scan.elapsed() >= r.frequency {
            r.scan()?;
        }
        r.promote();
        match r.ready.pop_first() {
            Some(name) => r.run(&name, &handler),
            None => {
                if super::scan_generation(r.idx) != r.generation {
                    r.scan()?;
                    continue;
                }
                r.wait()?;
            }
        }
    }
}

impl Runner<'_> {
    /// Reads the whole directory into the queues.
    fn scan(&mut self) -> Result<()> {
        self.generation = super::scan_generation(self.idx);
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

    /// Takes what the directory's queue has for this spooler (without
    /// blocking).
    fn events(&mut self) -> Result<()> {
        let taken = self.waker.take(self.alone)?;
        for n in taken.names {
            self.add(n);
        }
        if taken.overflow {
            tracing::warn!(
                "{}: the inotify queue of {} overflowed; scanning it (every spooler of it will)",
                self.me,
                self.dir.display()
            );
            super::bump_scan_generation(self.idx);
            self.scan()?;
        }
        Ok(())
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
        self.waker.wait(until)
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
