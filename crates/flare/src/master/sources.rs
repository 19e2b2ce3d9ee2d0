//! The master's signal sources: timers on one heap (thousands cost no more
//! descriptors than one), cron entries checked at each minute boundary,
//! file monitors on one inotify descriptor, and the count of deliveries
//! each source still has queued or running, which `unique` needs.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;

use super::monitor::Monitors;
use crate::counters::SourceSummary;
use crate::cron::CronSpec;
use crate::error::{Error, RegistrationError, Result};
use crate::origin::Origin;
use crate::schedule::{CronCursor, TimerSchedule};
use crate::source_spec::{Source, SourceId, SourceKind};
use crate::table::Owner;
use crate::topology::Slot;

enum State {
    Timer(TimerSchedule),
    Cron(Box<CronSpec>, CronCursor),
    Monitor,
}

struct Entry {
    sig: u8,
    source: Source,
    /// Who added it: the same source added by several members is one
    /// entry, kept while any of them holds it.
    owners: Vec<Owner>,
    state: State,
    fired: u64,
    held: u64,
}

impl Entry {
    fn origin(&self, id: u32) -> Origin {
        let id = SourceId(id);
        match self.state {
            State::Timer(_) => Origin::Timer(id),
            State::Cron(..) => Origin::Cron(id),
            State::Monitor => Origin::FileMonitor(id),
        }
    }
}

/// Every source of the master.
#[derive(Default)]
pub(crate) struct Sources {
    next_id: u32,
    entries: BTreeMap<u32, Entry>,
    timers: BinaryHeap<Reverse<(Instant, u32)>>,
    monitors: Monitors,
    /// Deliveries raised by a source and not yet handled, by source id.
    outstanding: HashMap<u32, u64>,
}

/// Local wall-clock time of a Unix time.
fn local(unix: i64) -> Option<NaiveDateTime> {
    chrono::DateTime::from_timestamp(unix, 0).map(|t| t.with_timezone(&chrono::Local).naive_local())
}

/// The current Unix time in seconds.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Sources {
    /// Adds a source for `sig`. The same source (signal, kind and
    /// period, spec or path) from another owner joins the one there (one
    /// source, kept while any owner holds it: a timer imported by four web
    /// workers fires once per period); from the same owner it is refused.
    pub(crate) fn add(&mut self, sig: u8, mut source: Source, owner: Owner) -> Result<SourceId> {
        source.validate()?;
        if let Some((&id, e)) = self
            .entries
            .iter_mut()
            .find(|(_, e)| e.sig == sig && same_kind(&e.source.kind, &source.kind))
        {
            if e.owners.contains(&owner) || e.source.unique != source.unique {
                return Err(Error::from(RegistrationError::DuplicateSource {
                    sig,
                    what: e.source.kind.to_string(),
                    id,
                }));
            }
            e.owners.push(owner);
            tracing::info!(
                "source #{id} ({} raising signal {sig}) shared: {} owners",
                e.source.kind,
                e.owners.len()
            );
            return Ok(SourceId(id));
        }
        self.next_id += 1;
        let id = self.next_id;
        let now = Instant::now();
        let state = match &mut source.kind {
            SourceKind::Timer { period, repeat } => {
                let t = TimerSchedule::new(now, *period, *repeat);
                self.timers.push(Reverse((t.due(), id)));
                State::Timer(t)
            }
            SourceKind::Cron(text) => {
                State::Cron(Box::new(text.parse()?), CronCursor::new(unix_now()))
            }
            SourceKind::FileMonitor { path, recursive } => {
                *path = self.monitors.add(id, path, *recursive)?;
                State::Monitor
            }
        };
        tracing::info!("source #{id} added: {} raising signal {sig}", source.kind);
        self.entries.insert(
            id,
            Entry {
                sig,
                source,
                owners: vec![owner],
                state,
                fired: 0,
                held: 0,
            },
        );
        Ok(SourceId(id))
    }

    /// Removes `by`'s hold on a source; the source goes with its last
    /// owner.
    pub(crate) fn remove(&mut self, id: SourceId, by: Owner) -> Result<()> {
        let e = self
            .entries
            .get_mut(&id.0)
            .ok_or(RegistrationError::NoSuchSource(id.0))?;
        if e.owners.len() > 1 {
            e.owners.retain(|&o| o != by);
            if !e.owners.is_empty() {
                return Ok(());
            }
        }
        let e = self
            .entries
            .remove(&id.0)
            .ok_or(RegistrationError::NoSuchSource(id.0))?;
        if matches!(e.state, State::Monitor) {
            self.monitors.remove(id.0);
        }
        self.outstanding.remove(&id.0);
        tracing::info!("source #{} removed ({})", id.0, e.source.kind);
        Ok(())
    }

    /// Removes what a dead child added.
    pub(crate) fn release(&mut self, slot: Slot) {
        let me = Owner::Child(slot);
        let ids: Vec<u32> = self
            .entries
            .iter()
            .filter(|(_, e)| e.owners.contains(&me))
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            let _ = self.remove(SourceId(id), me);
        }
    }

    /// Puts timers and crons on the clock of `run()`'s start: a source
    /// added before `run()` counts from there.
    pub(crate) fn start(&mut self, now: Instant) {
        self.timers.clear();
        let unix = unix_now();
        for (&id, e) in &mut self.entries {
            match &mut e.state {
                State::Timer(t) => {
                    if let SourceKind::Timer { period, repeat } = e.source.kind {
                        *t = TimerSchedule::new(now, period, repeat);
                        self.timers.push(Reverse((t.due(), id)));
                    }
                }
                State::Cron(_, c) => *c = CronCursor::new(unix),
                State::Monitor => {}
            }
        }
    }

    /// The raises due at `now`, oldest source first. A unique source whose
    /// last signal is still outstanding is held instead.
    pub(crate) fn due(&mut self, now: Instant, now_unix: i64) -> Vec<(u8, Origin)> {
        let mut out = Vec::new();
        while let Some(&Reverse((t, id))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(e) = self.entries.get_mut(&id) else {
                continue; // removed
            };
            let State::Timer(sched) = &mut e.state else {
                continue;
            };
            if sched.due() != t {
                continue; // a stale heap entry (the timer was restarted)
            }
            let goes_on = sched.fire(now);
            let next = sched.due();
            if goes_on {
                self.timers.push(Reverse((next, id)));
            }
            self.fire(id, 1, &mut out);
            if !goes_on {
                tracing::info!("rb timer #{id} is done");
                self.entries.remove(&id);
                self.outstanding.remove(&id);
            }
        }
        let crons: Vec<(u32, u32)> = self
            .entries
            .iter_mut()
            .filter_map(|(&id, e)| match &mut e.state {
                State::Cron(spec, cursor) if now_unix >= cursor.next_check() => {
                    let d = cursor.check(spec, now_unix, &local);
                    if d.skipped > 0 {
                        tracing::warn!(
                            "cron #{id}: {} minutes skipped (the clock jumped or the master stalled)",
                            d.skipped
                        );
                    }
                    Some((id, d.matches))
                }
                _ => None,
            })
            .collect();
        for (id, n) in crons {
            self.fire(id, n, &mut out);
        }
        for id in self.monitors.expire(now) {
            self.fire(id, 1, &mut out);
        }
        out
    }

    /// Reads the file monitors' events; returns the raises due.
    pub(crate) fn on_file_events(&mut self, now: Instant) -> Vec<(u8, Origin)> {
        let mut out = Vec::new();
        for id in self.monitors.read(now) {
            self.fire(id, 1, &mut out);
        }
        out
    }

    fn fire(&mut self, id: u32, times: u32, out: &mut Vec<(u8, Origin)>) {
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        for _ in 0..times {
            let busy = self.outstanding.get(&id).is_some_and(|&n| n > 0);
            if e.source.unique
                && (busy || out.iter().any(|(_, o)| o.source() == Some(SourceId(id))))
            {
                e.held += 1;
                continue;
            }
            e.fired += 1;
            out.push((e.sig, e.origin(id)));
        }
    }

    /// `n` deliveries of a raise by source `id` were queued.
    pub(crate) fn queued(&mut self, id: u32, n: u64) {
        if n > 0 && self.entries.contains_key(&id) {
            *self.outstanding.entry(id).or_default() += n;
        }
    }

    /// One delivery of source `id` was handled, dropped or given up.
    pub(crate) fn settled(&mut self, id: u32) {
        if let Some(n) = self.outstanding.get_mut(&id) {
            *n = n.saturating_sub(1);
        }
    }

    /// When the next source may fire.
    pub(crate) fn next_deadline(&self, now: Instant, now_unix: i64) -> Option<Instant> {
        let timer = self.timers.peek().map(|Reverse((t, _))| *t);
        let cron = self
            .entries
            .values()
            .filter_map(|e| match &e.state {
                State::Cron(_, c) => Some(c.next_check()),
                _ => None,
            })
            .min()
            .map(|at| now + Duration::from_secs(at.saturating_sub(now_unix).max(0) as u64));
        [timer, cron, self.monitors.next_deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    /// The inotify descriptor, once a file monitor exists.
    pub(crate) fn fd(&self) -> Option<RawFd> {
        self.monitors.fd()
    }

    /// Every source, for summaries and stats.
    pub(crate) fn summaries(&self) -> Vec<SourceSummary> {
        self.entries
            .iter()
            .map(|(&id, e)| SourceSummary {
                id,
                sig: e.sig,
                what: e.source.kind.to_string(),
                fired: e.fired,
                held: e.held,
                next_in_ms: next_in_ms(&e.state),
            })
            .collect()
    }
}

/// When a timer or cron fires next, in milliseconds from now.
fn next_in_ms(state: &State) -> Option<u64> {
    match state {
        State::Timer(t) => Some(
            t.due()
                .saturating_duration_since(Instant::now())
                .as_millis() as u64,
        ),
        State::Cron(spec, _) => {
            let now = chrono::Local::now();
            let next = spec.next_after(&now.naive_local())?;
            Some((next - now.naive_local()).num_milliseconds().max(0) as u64)
        }
        State::Monitor => None,
    }
}

/// Whether two sources are the same (for duplicate detection): same period
/// and repeat, same cron text, same path.
fn same_kind(a: &SourceKind, b: &SourceKind) -> bool {
    match (a, b) {
        (SourceKind::FileMonitor { path: p, .. }, SourceKind::FileMonitor { path: q, .. }) => {
            std::path::absolute(p).ok() == std::path::absolute(q).ok()
        }
        (SourceKind::Cron(x), SourceKind::Cron(y)) => x.split_whitespace().eq(y.split_whitespace()),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_from_one_owner_are_refused_removal_and_release_work() {
        let mut s = Sources::default();
        let t = || Source::timer(Duration::from_secs(5));
        let a = s.add(1, t(), Owner::Child(0)).unwrap();
        let e = s.add(1, t(), Owner::Child(0)).unwrap_err();
        assert!(
            matches!(e, Error::Registration(RegistrationError::DuplicateSource { sig: 1, id, .. }) if id == a.0),
            "{e}"
        );
        assert!(
            s.add(2, t(), Owner::Child(0)).is_ok(),
            "another signal is fine"
        );
        let c = s
            .add(3, Source::cron("* * * * *").unwrap(), Owner::Child(1))
            .unwrap();
        let e = s
            .add(3, Source::cron(" *  * * * * ").unwrap(), Owner::Child(1))
            .unwrap_err();
        assert!(e.to_string().contains("already has this source"), "{e}");
        s.release(0);
        assert_eq!(s.summaries().len(), 1, "worker 1's timers went with it");
        s.remove(c, Owner::Child(1)).unwrap();
        assert!(matches!(
            s.remove(c, Owner::Child(1)),
            Err(Error::Registration(RegistrationError::NoSuchSource(_)))
        ));
        assert!(s.summaries().is_empty());
    }

    #[test]
    fn the_same_source_from_several_members_is_one_kept_by_the_last() {
        let mut s = Sources::default();
        let t = || Source::timer(Duration::from_secs(60));
        let ids: Vec<SourceId> = (0..4)
            .map(|w| s.add(17, t(), Owner::Child(w)).unwrap())
            .collect();
        assert!(ids.iter().all(|&id| id == ids[0]), "one source: {ids:?}");
        assert_eq!(s.summaries().len(), 1);
        assert_eq!(s.timers.len(), 1, "scheduled once");
        // A different period, or a unique one, is another source.
        assert_ne!(
            s.add(17, Source::timer(Duration::from_secs(30)), Owner::Child(0))
                .unwrap(),
            ids[0]
        );
        s.release(0);
        s.release(1);
        s.remove(ids[0], Owner::Child(2)).unwrap();
        assert_eq!(s.summaries().len(), 1, "worker4 still holds the 60 s timer");
        s.release(3);
        assert!(s.summaries().is_empty());
    }

    #[test]
    fn unique_sources_hold_while_outstanding() {
        let mut s = Sources::default();
        let id = s
            .add(
                7,
                Source::timer(Duration::from_millis(10)).unique(),
                Owner::Master,
            )
            .unwrap();
        let t0 = Instant::now();
        s.start(t0);
        let at = |ms| t0 + Duration::from_millis(ms);
        let due = s.due(at(10), unix_now());
        assert_eq!(due, vec![(7, Origin::Timer(id))]);
        s.queued(id.0, 1);
        assert!(
            s.due(at(20), unix_now()).is_empty(),
            "held: still outstanding"
        );
        s.settled(id.0);
        assert_eq!(s.due(at(30), unix_now()).len(), 1);
        let sum = &s.summaries()[0];
        assert_eq!((sum.fired, sum.held), (2, 1));
    }

    #[test]
    fn rb_timers_go_away_after_their_last_firing() {
        let mut s = Sources::default();
        s.add(
            1,
            Source::rb_timer(Duration::from_millis(10), Some(2)),
            Owner::Master,
        )
        .unwrap();
        let t0 = Instant::now();
        s.start(t0);
        assert_eq!(s.due(t0 + Duration::from_millis(10), 0).len(), 1);
        assert_eq!(s.due(t0 + Duration::from_millis(20), 0).len(), 1);
        assert!(s.summaries().is_empty());
        assert!(s.due(t0 + Duration::from_millis(30), 0).is_empty());
    }

    #[test]
    fn thousands_of_timers_are_one_heap_and_no_descriptor() {
        let mut s = Sources::default();
        for i in 0..5000u64 {
            s.add(
                1,
                Source::timer(Duration::from_millis(10 + i)),
                Owner::Master,
            )
            .unwrap();
        }
        assert_eq!(s.fd(), None, "no descriptor per timer (nor at all)");
        let t0 = Instant::now();
        s.start(t0);
        assert_eq!(s.timers.len(), 5000);
        // After 100 ms exactly the first 91 periods (10..=100 ms) are due.
        let due = s.due(t0 + Duration::from_millis(100), 0);
        assert_eq!(due.len(), 91);
        // Next: the 101 ms timer's first firing (the 10 ms one is at 110).
        assert_eq!(
            s.next_deadline(t0, 0),
            Some(t0 + Duration::from_millis(101))
        );
    }

    #[test]
    fn a_missing_parent_is_a_clear_error() {
        let mut s = Sources::default();
        let e = s
            .add(1, Source::file_monitor("/no/such/dir/file"), Owner::Master)
            .unwrap_err()
            .to_string();
        assert!(e.contains("neither it nor its parent directory"), "{e}");
    }
}
