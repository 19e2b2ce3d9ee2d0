//! A spooler's loop: which job next, claim, run, finish.
//!
//! Jobs come from two queues: job files (one per job) and the journal's
//! segments (see `journal`). Job files with a priority run first, then the
//! journal's jobs, then the other job files.
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
use super::journal::{self, Finish};
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
    /// The journal's segments in the directory.
    journal: journal::Reader,
    /// Jobs run since the queue was last read.
    since_events: u32,
}

/// A spooler alone on its directory reads the queue at least this often
/// (in jobs) while it has jobs to run, so that a new job file with a
/// priority overtakes the waiting ones.
const EVENTS_EVERY: u32 = 32;

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
        journal: journal::Reader::new(dir, alone),
        since_events: 0,
    };
    r.scan()?;
    tracing::info!(
        "{me}: serving spool directory {} ({} jobs waiting)",
        dir.display(),
        r.ready.len() + r.later.len()
    );
    loop {
        if r.alone && r.since_events >= EVENTS_EVERY {
            r.events()?;
        }
        if r.last_scan.elapsed() >= r.frequency {
            r.scan()?;
        }
        r.promote();
        if r.run_next(&handler) {
            r.since_events += 1;
            continue;
        }
        // Nothing to run: the queue, the scan generation, then sleep.
        if r.events()? {
            continue;
        }
        if super::scan_generation(r.idx) != r.generation {
            r.scan()?;
            continue;
        }
        r.journal.collect();
        r.wait()?;
    }
}

impl Runner<'_> {
    /// Reads the whole directory into the queues.
    fn scan(&mut self) -> Result<()> {
        self.generation = super::scan_generation(self.idx);
        let names = dir::list_all(self.dir).map_err(|e| Error::Spool {
            path: self.dir.to_path_buf(),
            what: format!("cannot be listed: {e}"),
        })?;
        self.journal.scan(&names);
        for name in names {
            if dir::is_job(&name) {
                self.add(name);
            }
        }
        dir::remove_stale(self.dir);
        self.journal.collect();
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
    /// blocking); whether it brought anything.
    fn events(&mut self) -> Result<bool> {
        self.since_events = 0;
        let taken = self.waker.take(self.alone)?;
        let any = !taken.names.is_empty() || !taken.segments.is_empty() || taken.overflow;
        for n in taken.names {
            self.add(n);
        }
        for s in taken.segments {
            self.journal.learn(&s);
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
        Ok(any)
    }

    /// Moves jobs whose time came to the ready queue.
    fn promote(&mut self) {
        self.journal.promote(journal::now_ms());
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
        if let Some(at) = self.journal.next_due_ms() {
            let ms = at.saturating_sub(journal::now_ms());
            until = until.min(Duration::from_millis(ms));
        }
        self.waker.wait(until)
    }

    /// Runs the next job, if there is one: a job file with a priority,
    /// else a journal job, else another job file.
    fn run_next(&mut self, handler: &SpoolHandler) -> bool {
        if self.ready.first().is_some_and(|n| dir::prioritised(n)) {
            if let Some(name) = self.ready.pop_first() {
                self.run(&name, handler);
                return true;
            }
        }
        if let Some(c) = self.journal.next(journal::now_ms()) {
            self.run_record(c, handler);
            return true;
        }
        match self.ready.pop_first() {
            Some(name) => {
                self.run(&name, handler);
                true
            }
            None => false,
        }
    }

    /// Runs one journal job (claimed).
    fn run_record(&mut self, c: journal::Claimed, handler: &SpoolHandler) {
        let name = c.name.display();
        let (args, body) = match format::decode(&c.payload) {
            Ok(job) => job,
            Err(why) => {
                let keep = self.dir.join(format!(
                    "{}{}",
                    dir::INVALID_PREFIX,
                    c.name
                        .file_name()
                        .map(|n| n.to_string_lossy())
                        .unwrap_or_default()
                ));
                match std::fs::write(&keep, &c.payload) {
                    Ok(()) => tracing::error!(
                        "{}: job {name} is not a spool job ({why}); a copy is set aside as {}",
                        self.me,
                        keep.display()
                    ),
                    Err(e) => tracing::error!(
                        "{}: job {name} is not a spool job ({why}); no copy could be kept: {e}",
                        self.me
                    ),
                }
                self.journal.finish(c, Finish::SetAside);
                return;
            }
        };
        let at = at_of(&args);
        if at > unix_now() {
            self.journal
                .finish(c, Finish::Later(at.saturating_mul(1000)));
            return;
        }
        let task = Task {
            name: c.name.clone(),
            dir: self.dir.to_path_buf(),
            args,
            body,
        };
        match self.call(handler, &task) {
            SpoolOutcome::Ok | SpoolOutcome::Ignore => self.journal.finish(c, Finish::Done),
            SpoolOutcome::Retry => {
                let at = journal::now_ms().saturating_add(self.frequency.as_millis() as u64);
                tracing::debug!("{}: job {name} will be retried", self.me);
                self.journal.finish(c, Finish::Later(at));
            }
        }
    }

    /// Runs the handler on a task; a panic is a retry.
    fn call(&self, handler: &SpoolHandler, task: &Task) -> SpoolOutcome {
        catch_unwind(AssertUnwindSafe(|| handler(task))).unwrap_or_else(|_| {
            tracing::error!(
                "{}: the spool handler panicked on {}; retried later",
                self.me,
                task.name.display()
            );
            SpoolOutcome::Retry
        })
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
        let at = at_of(&args);
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
        let outcome = self.call(handler, &task);
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

/// A job's `at` (whole Unix seconds; 0 for none).
fn at_of(args: &super::format::Vars) -> u64 {
    args.get(b"at".as_slice())
        .and_then(|a| std::str::from_utf8(a).ok())
        .and_then(|a| a.trim().parse::<f64>().ok())
        .map_or(0, |a| a.ceil().max(0.0) as u64)
}
