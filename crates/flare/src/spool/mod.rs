//! The spooler: durable jobs in files, run by spooler processes
//! (uWSGI's `--spooler DIR`, `uwsgi.spool()`).
//!
//! A job is a map of byte-string keys to byte-string values plus an
//! optional body, earliest start (`at`) and priority. [`spool`] writes it
//! into a spool directory durably (temporary name, fdatasync, rename, fsync
//! of the directory; [`spool_many`] one directory fsync for a batch). Each
//! spooler process serves one directory: the directory's spoolers share
//! one inotify queue, so a new job wakes one idle spooler at once; it
//! claims the job with an exclusive `flock` on its file (released by the
//! kernel if the spooler dies); runs the handler; removes the file only
//! when the handler says [`SpoolOutcome::Ok`] or [`SpoolOutcome::Ignore`].
//! Jobs run at least once: a spooler killed mid-job leaves the file, and
//! the job runs again.
//!
//! ```no_run
//! use flare::{Job, Master, SpoolOutcome};
//!
//! let master = Master::builder()
//!     .workers(2)
//!     .spooler_dir("/var/spool/app")
//!     .spooler_processes(2)
//!     .spooler_handler(|task| {
//!         println!("job {:?}", task.args.get(b"to".as_slice()));
//!         SpoolOutcome::Ok
//!     })
//!     .worker_entry(|_| {
//!         flare::spool(Job::new().arg("to", "a@example.com")).expect("spooled");
//!         flare::serve_forever();
//!     })
//!     .build()?;
//! master.run()?;
//! # Ok::<(), flare::Error>(())
//! ```

mod dir;
mod format;
mod journal;
mod mapped;
mod runner;
mod wake;

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};
use crate::proto::attach::SpoolShare;
use crate::topology::Role;

/// What a spool handler decides about a job (uWSGI's return codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpoolOutcome {
    /// Done: the job file is removed (uWSGI `SPOOL_OK`, -2).
    Ok,
    /// Run it again later, at the next scan of the directory (every
    /// spooler frequency, 30 s by default; uWSGI `SPOOL_RETRY`, -1).
    Retry,
    /// Not for this spooler: the job file is removed without running
    /// anything more (uWSGI `SPOOL_IGNORE`, 0; uWSGI leaves the file for
    /// another language's handler, flare has one handler per spooler).
    Ignore,
}

impl SpoolOutcome {
    /// The outcome for uWSGI's integer codes: -2 OK, 0 IGNORE, anything
    /// else RETRY (as uWSGI reads them).
    pub fn from_code(code: i64) -> SpoolOutcome {
        match code {
            -2 => SpoolOutcome::Ok,
            0 => SpoolOutcome::Ignore,
            _ => SpoolOutcome::Retry,
        }
    }

    /// uWSGI's integer code for this outcome.
    pub fn code(self) -> i64 {
        match self {
            SpoolOutcome::Ok => -2,
            SpoolOutcome::Retry => -1,
            SpoolOutcome::Ignore => 0,
        }
    }
}

/// A job to spool: keys and values, and the job's options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Job {
    /// The job's keys and values (uWSGI: the dict given to `spool()`).
    pub args: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Data of any size, handed to the handler as is (uWSGI's `body`).
    pub body: Vec<u8>,
    /// Not run before this time (uWSGI's `at`, whole Unix seconds:
    /// rounded up).
    pub at: Option<SystemTime>,
    /// Lower numbers run first; jobs without a priority after every
    /// prioritised one (uWSGI's `priority`).
    pub priority: Option<u32>,
    /// Which configured spool directory (uWSGI's `spooler`, its path);
    /// the first one when `None`.
    pub spooler: Option<PathBuf>,
}

impl Job {
    /// An empty job.
    pub fn new() -> Job {
        Job::default()
    }

    /// Adds a key and its value.
    pub fn arg(mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Job {
        self.args.insert(key.into(), value.into());
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Job {
        self.body = body.into();
        self
    }

    /// Sets the earliest start.
    pub fn at(mut self, at: SystemTime) -> Job {
        self.at = Some(at);
        self
    }

    /// Sets the priority.
    pub fn priority(mut self, priority: u32) -> Job {
        self.priority = Some(priority);
        self
    }

    /// Picks a spool directory by its path (as configured).
    pub fn spooler(mut self, dir: impl Into<PathBuf>) -> Job {
        self.spooler = Some(dir.into());
        self
    }
}

/// A job as a spooler runs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    /// The job file (uWSGI's `spooler_task_name`).
    pub name: PathBuf,
    /// The spool directory.
    pub dir: PathBuf,
    /// The job's keys and values, `at` and `priority` among them when set.
    pub args: BTreeMap<Vec<u8>, Vec<u8>>,
    /// The body (empty when none was given).
    pub body: Vec<u8>,
}

/// A spool handler: runs a job, says what to do with its file.
pub type SpoolHandler = Arc<dyn Fn(&Task) -> SpoolOutcome + Send + Sync + 'static>;

/// The spooler frequency when nobody set one: uWSGI's default.
pub(crate) const DEFAULT_FREQUENCY: Duration = Duration::from_secs(30);

/// Spool configuration collected by the builder.
#[derive(Debug, Default)]
pub(crate) struct Setup {
    pub(crate) dirs: Vec<PathBuf>,
    pub(crate) processes: Option<u32>,
    pub(crate) frequency: Option<Duration>,
    pub(crate) no_fsync: bool,
    pub(crate) no_journal: bool,
}

/// The configuration every process of the group inherits.
struct Config {
    dirs: Vec<PathBuf>,
    per_dir: u32,
    /// Whether `spool()` fsyncs (the default).
    fsync: bool,
    /// Whether plain jobs go to the journal (the default).
    journal: bool,
    /// Shared by every process (inherited across fork): the spooler
    /// frequency in milliseconds at offset 0, so a change reaches every
    /// spooler; then each directory's scan generation (see `wake`).
    control: File,
    /// Each directory's inotify queue, shared by its spoolers.
    watches: Vec<wake::Shared>,
    /// Each directory's fsync, shared by this process's threads.
    syncs: Vec<dir::GroupSync>,
    /// Each directory's journal segment of this process.
    journals: Vec<journal::Journal>,
}

/// Where directory `idx`'s scan generation is in the control file.
fn generation_at(idx: usize) -> u64 {
    8 + 8 * idx as u64
}

static CONFIG: OnceLock<Config> = OnceLock::new();
static HANDLER: Mutex<Option<SpoolHandler>> = Mutex::new(None);
static SEQ: AtomicU64 = AtomicU64::new(0);

/// Checks the spool directories and fixes the number of spooler
/// processes; called by `MasterBuilder::build()`, in the master.
pub(crate) fn configure(setup: Setup, spoolers: &mut u32) -> Result<()> {
    if setup.dirs.is_empty() {
        if setup.processes.is_some() {
            return Err(Error::Config(
                "spooler_processes needs at least one spooler_dir".into(),
            ));
        }
        return Ok(());
    }
    let per_dir = setup.processes.unwrap_or(1);
    if per_dir == 0 {
        return Err(Error::Config("spooler_processes must be at least 1".into()));
    }
    for d in &setup.dirs {
        dir::check(d)?;
    }
    let total = per_dir
        .checked_mul(setup.dirs.len() as u32)
        .ok_or_else(|| Error::Config("too many spooler processes".into()))?;
    if *spoolers != 0 && *spoolers != total {
        return Err(Error::Config(format!(
            "spoolers({}) conflicts with {} spool directories x {per_dir} processes = {total}; \
             leave spoolers() out when giving spool directories",
            *spoolers,
            setup.dirs.len()
        )));
    }
    *spoolers = total;
    let control =
        nix::sys::memfd::memfd_create(c"flare-spooler", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .map(File::from)
            .map_err(|e| Error::io("creating the spooler's shared settings", e))?;
    let freq = setup.frequency.unwrap_or(DEFAULT_FREQUENCY);
    let mut settings = (freq.as_millis() as u64).to_le_bytes().to_vec();
    settings.resize(generation_at(setup.dirs.len()) as usize, 0);
    control
        .write_all_at(&settings, 0)
        .map_err(|e| Error::io("writing the spooler's shared settings", e))?;
    let watches = setup
        .dirs
        .iter()
        .map(|d| wake::Shared::new(d))
        .collect::<Result<Vec<_>>>()?;
    CONFIG
        .set(Config {
            dirs: setup.dirs,
            per_dir,
            fsync: !setup.no_fsync,
            journal: !setup.no_journal,
            control,
            syncs: watches.iter().map(|_| dir::GroupSync::default()).collect(),
            journals: watches
                .iter()
                .map(|_| journal::Journal::default())
                .collect(),
            watches,
        })
        .map_err(|_| Error::Config("this process already configured spoolers".into()))
}

/// What an attached process needs to spool, and the shared settings'
/// file to pass it; `None` when the group has no spool directory.
pub(crate) fn share() -> Option<(SpoolShare, &'static File)> {
    let c = CONFIG.get()?;
    Some((
        SpoolShare {
            dirs: c.dirs.clone(),
            per_dir: c.per_dir,
            fsync: c.fsync,
            journal: c.journal,
        },
        &c.control,
    ))
}

/// Takes on the group's spool settings in an attached process (passed by
/// the master on the attach socket): it can then spool, list and read
/// jobs and set the frequency, as a forked worker does.
pub(crate) fn adopt(share: SpoolShare, control: File) -> Result<()> {
    let n = share.dirs.len();
    CONFIG
        .set(Config {
            dirs: share.dirs,
            per_dir: share.per_dir,
            fsync: share.fsync,
            journal: share.journal,
            control,
            // Attached processes are workers: they never serve a directory.
            watches: Vec::new(),
            syncs: (0..n).map(|_| dir::GroupSync::default()).collect(),
            journals: (0..n).map(|_| journal::Journal::default()).collect(),
        })
        .map_err(|_| Error::Config("this process already has spool settings".into()))
}

fn config() -> Result<&'static Config> {
    CONFIG.get().ok_or(Error::NoRuntime(
        "no spooler is configured: give the master a spool directory (spooler_dir, python -m \
         flare --spooler DIR)",
    ))
}

/// Sets the handler spoolers run for each job. Set in the master before
/// `run()` (every spooler inherits it), or in a spooler before
/// [`crate::serve_forever`]. Replaces the previous one.
pub fn set_spooler_handler(f: impl Fn(&Task) -> SpoolOutcome + Send + Sync + 'static) {
    *HANDLER.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(f));
}

/// Spools a job (uWSGI `uwsgi.spool()`): writes it durably into its spool
/// directory and returns the job's name. From any process of the group,
/// the master included.
///
/// A plain job (no `at`, no `priority`, at most 64 KiB encoded) is
/// appended to this process's journal segment in the directory, in one
/// write; its name is `<dir>/.journal_<created>_<pid>#<offset>`. Any other
/// job (and every job with [`crate::MasterBuilder::spooler_journal`]`(false)`)
/// gets a file of its own, in uWSGI's format: written to a temporary name,
/// renamed into place; its name is the file's path.
///
/// Durably: with fsync on (the default) the journal segment is
/// fdatasynced, or the job file fdatasynced and its directory fsynced,
/// before this returns; threads of one process spooling at once share the
/// fsync. Without fsync ([`crate::MasterBuilder::spooler_fsync`]`(false)`),
/// the job survives the death of any process (it is in the page cache)
/// but not a crash of the machine.
///
/// # Errors
///
/// [`Error::InvalidJob`] for a job that cannot be written as given (an
/// unknown `spooler` directory among them), [`Error::Spool`] when the
/// directory cannot take it (missing, not writable, full),
/// [`Error::NoRuntime`] when no spool directory is configured.
pub fn spool(job: Job) -> Result<PathBuf> {
    let mut paths = spool_many(std::iter::once(job))?;
    paths
        .pop()
        .ok_or(Error::NoRuntime("spool_many returned no path"))
}

/// Spools several jobs at once (a flare addition; uWSGI has none): plain
/// jobs are appended to the journal in one write per directory, the
/// others written as by [`spool`]; each directory is fsynced once for the
/// whole batch. Returns the jobs' names in the order of the jobs. Jobs
/// that start before this returns are possible; the batch is durable when
/// it returns.
///
/// # Errors
///
/// As [`spool`]. A job that cannot be encoded fails the batch before
/// anything is written; when writing fails part way, the jobs written
/// before stay spooled (the error names the directory and the reason).
pub fn spool_many(jobs: impl IntoIterator<Item = Job>) -> Result<Vec<PathBuf>> {
    let cfg = config()?;
    let mut encoded = Vec::new();
    for job in jobs {
        let idx = match &job.spooler {
            None => 0,
            Some(want) => find_dir(cfg, want)?,
        };
        let e = encode(job)?;
        let to_journal = cfg.journal
            && e.priority.is_none()
            && e.at.is_none()
            && e.data.len() <= journal::MAX_JOB;
        encoded.push((idx, e, to_journal));
    }
    let mut paths: Vec<Option<PathBuf>> = vec![None; encoded.len()];
    for (idx, dir) in cfg.dirs.iter().enumerate() {
        let which: Vec<usize> = (0..encoded.len())
            .filter(|&k| encoded[k].0 == idx && encoded[k].2)
            .collect();
        if which.is_empty() {
            continue;
        }
        let payloads: Vec<&[u8]> = which
            .iter()
            .map(|&k| encoded[k].1.data.as_slice())
            .collect();
        let names = cfg.journals[idx].append(dir, &payloads, cfg.fsync, &cfg.syncs[idx])?;
        for (k, name) in which.into_iter().zip(names) {
            paths[k] = Some(name);
        }
    }
    let mut tickets: Vec<Option<u64>> = vec![None; cfg.dirs.len()];
    let mut failed = None;
    for (k, (idx, e, to_journal)) in encoded.iter().enumerate() {
        if *to_journal {
            continue;
        }
        let name = dir::job_name(e.priority, e.at.unwrap_or(0), SEQ.fetch_add(1, Relaxed));
        match dir::write(&cfg.dirs[*idx], &name, &e.data, cfg.fsync) {
            Ok(path) => paths[k] = Some(path),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
        if cfg.fsync {
            tickets[*idx] = Some(cfg.syncs[*idx].ticket());
        }
    }
    // The jobs in place are made durable even when a later one failed.
    for (idx, ticket) in tickets.iter().enumerate() {
        if let Some(t) = ticket {
            cfg.syncs[idx].sync(*t, || dir::sync_dir(&cfg.dirs[idx]))?;
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(paths.into_iter().flatten().collect()),
    }
}

/// A job encoded, with what decides where it goes.
struct Encoded {
    data: Vec<u8>,
    priority: Option<u32>,
    /// Whole Unix seconds.
    at: Option<u64>,
}

/// A job's contents in the job-file format.
fn encode(job: Job) -> Result<Encoded> {
    let mut args = job.args;
    let at = job.at.map(|t| {
        let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        d.as_secs() + u64::from(d.subsec_nanos() > 0)
    });
    if let Some(at) = at {
        args.insert(b"at".to_vec(), at.to_string().into_bytes());
    }
    if let Some(p) = job.priority {
        args.insert(b"priority".to_vec(), p.to_string().into_bytes());
    }
    Ok(Encoded {
        data: format::encode(&args, &job.body)?,
        priority: job.priority,
        at,
    })
}

/// Which configured directory `want` is (its index).
fn find_dir(cfg: &Config, want: &Path) -> Result<usize> {
    let canon = want.canonicalize().ok();
    cfg.dirs
        .iter()
        .position(|d| d.as_path() == want || (canon.is_some() && d.canonicalize().ok() == canon))
        .ok_or_else(|| {
            Error::InvalidJob(format!(
                "spooler `{}` is not one of this group's spool directories: {}",
                want.display(),
                cfg.dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

/// The jobs waiting in a spool directory (the first when `None`), in the
/// order they run (uWSGI `uwsgi.spooler_jobs()`): job files with a
/// priority, then the journal's jobs, then the other job files. A job
/// running now is listed until it is done.
///
/// # Errors
///
/// [`Error::InvalidJob`] for a directory that is not one of the group's,
/// [`Error::Spool`] when the directory cannot be read,
/// [`Error::NoRuntime`] when no spool directory is configured.
pub fn spooler_jobs(spooler: Option<&Path>) -> Result<Vec<PathBuf>> {
    let cfg = config()?;
    let dir = match spooler {
        None => &cfg.dirs[0],
        Some(want) => &cfg.dirs[find_dir(cfg, want)?],
    };
    let all = dir::list_all(dir).map_err(|e| Error::Spool {
        path: dir.clone(),
        what: format!("cannot be listed: {e}"),
    })?;
    let mut files: Vec<&String> = all.iter().filter(|n| dir::is_job(n)).collect();
    files.sort();
    let (first, rest): (Vec<&String>, Vec<&String>) =
        files.into_iter().partition(|n| dir::prioritised(n));
    let mut out: Vec<PathBuf> = first.into_iter().map(|n| dir.join(n)).collect();
    out.extend(journal::waiting(dir, &all));
    out.extend(rest.into_iter().map(|n| dir.join(n)));
    Ok(out)
}

/// The pids of the group's spooler processes, in spooler order (uWSGI
/// `uwsgi.spooler_pids()`): spooler 1 first; 0 for a spooler that has no
/// process now (not started yet, or between a death and its respawn). From
/// any process of the group; in the master before `run()`, every pid is 0.
/// Empty when the group has no spoolers.
pub fn spooler_pids() -> Vec<u32> {
    if crate::child::context().is_some() {
        return crate::status::processes()
            .into_iter()
            .filter(|p| p.proc.role == Role::Spooler)
            .map(|p| p.pid)
            .collect();
    }
    CONFIG
        .get()
        .map(|c| vec![0; c.dirs.len() * c.per_dir as usize])
        .unwrap_or_default()
}

/// Reads a job without claiming it (uWSGI
/// `uwsgi.spooler_get_task(path)`): its keys and values and body, as a
/// spooler would hand them to its handler. A job file's path, or a journal
/// job's name as [`spool`] returned it; in a spool directory of this group
/// or not; the job may be running elsewhere meanwhile.
///
/// # Errors
///
/// `Ok(None)` when there is no such job (a journal job that is done
/// included). [`Error::Spool`] when it cannot
/// be read or is not a spool file (the reason is in the error).
pub fn spooler_get_task(path: impl AsRef<Path>) -> Result<Option<Task>> {
    let path = path.as_ref();
    let read = match journal::split(path) {
        Some((seg, off)) => journal::read_job(&seg, off),
        None => std::fs::read(path).map(Some),
    };
    let data = match read {
        Ok(Some(d)) => d,
        Ok(None) => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::Spool {
                path: path.to_path_buf(),
                what: format!("cannot be read: {e}"),
            });
        }
    };
    let (args, body) = format::decode(&data).map_err(|why| Error::Spool {
        path: path.to_path_buf(),
        what: format!("is not a spool file: {why}"),
    })?;
    Ok(Some(Task {
        name: path.to_path_buf(),
        dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        args,
        body,
    }))
}

/// The spool directories of this group, in the order they were given.
pub fn spooler_dirs() -> Vec<PathBuf> {
    CONFIG.get().map(|c| c.dirs.clone()).unwrap_or_default()
}

/// Sets how often spoolers look again at jobs they could not run: jobs
/// whose handler said retry, and jobs held by a spooler that died (uWSGI
/// `set_spooler_frequency`; new jobs never wait for it). For the whole
/// group, from any of its processes. Default 30 s.
///
/// # Errors
///
/// [`Error::Config`] for a zero duration, [`Error::NoRuntime`] when no
/// spool directory is configured.
pub fn set_spooler_frequency(every: Duration) -> Result<()> {
    if every.is_zero() {
        return Err(Error::Config(
            "the spooler frequency must be above zero".into(),
        ));
    }
    config()?
        .control
        .write_all_at(&(every.as_millis().max(1) as u64).to_le_bytes(), 0)
        .map_err(|e| Error::io("setting the spooler frequency", e))
}

/// The spooler frequency now in force.
pub(crate) fn frequency() -> Duration {
    let mut b = [0u8; 8];
    match CONFIG.get().map(|c| c.control.read_exact_at(&mut b, 0)) {
        Some(Ok(())) => Duration::from_millis(u64::from_le_bytes(b).max(1)),
        _ => DEFAULT_FREQUENCY,
    }
}

/// Directory `idx`'s scan generation: moved on when a spooler found that
/// events were lost, so every spooler of it scans again.
pub(crate) fn scan_generation(idx: usize) -> u64 {
    let mut b = [0u8; 8];
    match CONFIG
        .get()
        .map(|c| c.control.read_exact_at(&mut b, generation_at(idx)))
    {
        Some(Ok(())) => u64::from_le_bytes(b),
        _ => 0,
    }
}

/// Moves directory `idx`'s scan generation on. Two spoolers doing it at
/// once may move it by one instead of two: either way it changed, which
/// is all a spooler checks.
pub(crate) fn bump_scan_generation(idx: usize) {
    if let Some(c) = CONFIG.get() {
        let next = scan_generation(idx).wrapping_add(1);
        if let Err(e) = c
            .control
            .write_all_at(&next.to_le_bytes(), generation_at(idx))
        {
            tracing::warn!("cannot move the spool scan generation on: {e}");
        }
    }
}

/// A spooler's default entry: runs its spool directory, then serves
/// signals until the master ends the process.
pub(crate) fn serve_spooler_forever() -> ! {
    serve_if_spooler();
    loop {
        std::thread::park();
    }
}

pub(crate) fn serve_if_spooler() {
    let Some(me) = crate::child::context()
        .and_then(|c| c.own().ok())
        .map(|c| c.info)
    else {
        return;
    };
    if me.role != Role::Spooler {
        return;
    }
    let Some(cfg) = CONFIG.get() else { return };
    let idx = ((me.id.saturating_sub(1)) / cfg.per_dir) as usize;
    let (Some(dir), Some(watch)) = (cfg.dirs.get(idx), cfg.watches.get(idx)) else {
        return;
    };
    let handler = HANDLER
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let Some(handler) = handler else {
        tracing::error!(
            "{}: no spool handler set (spooler_handler, or uwsgi.spooler in Python); the jobs in \
             {} wait",
            me.proc_id(),
            dir.display()
        );
        return;
    };
    let served = wake::Waker::open(watch)
        .and_then(|waker| runner::serve(me.proc_id(), dir, idx, cfg.per_dir == 1, waker, handler));
    let Err(e) = served;
    tracing::error!("{}: {e}; exiting (the master forks it again)", me.proc_id());
    std::process::exit(70);
}

/// A fresh, empty directory for a unit test of the spool modules.
#[cfg(test)]
pub(crate) fn test_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("flare-spool-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create a test directory");
    d
}
