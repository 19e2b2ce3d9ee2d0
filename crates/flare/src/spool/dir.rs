//! One spool directory on disk: writing a job durably, listing, claiming
//! (an exclusive `flock` on the job file, which the kernel releases when
//! the holder dies), finishing (unlink while still holding the claim).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result};

/// Job files carry this prefix; names starting with a dot are ignored
/// (the temporary directory and set-aside files).
pub(crate) const JOB_PREFIX: &str = "job_";
/// Jobs are written here first, inside the spool directory (so the rename
/// stays on one file system) but out of sight of the spoolers' inotify
/// watch, which then sees each job once, when it is renamed into place.
const TMP_DIR: &str = ".tmp";
/// What a file set aside (never run, kept for a person) is named with.
pub(crate) const INVALID_PREFIX: &str = ".invalid_";
/// Priority written in the name of a job that has none: after every
/// prioritised job.
const NO_PRIORITY: u64 = 9_999_999_999;
/// A temporary file older than this was left by a writer that died
/// before its `spool()` returned: it was never a job, and is removed.
const STALE_TMP: Duration = Duration::from_secs(600);

/// Checks that `path` is a directory this process can write jobs into.
pub(crate) fn check(path: &Path) -> Result<()> {
    let meta = fs::metadata(path).map_err(|e| {
        let what = if e.kind() == io::ErrorKind::NotFound {
            "does not exist (create it first, as uWSGI requires)".to_string()
        } else {
            format!("cannot be read: {e}")
        };
        Error::Spool {
            path: path.to_path_buf(),
            what,
        }
    })?;
    if !meta.is_dir() {
        return Err(Error::Spool {
            path: path.to_path_buf(),
            what: "is not a directory".into(),
        });
    }
    let access = nix::unistd::access(
        path,
        nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
    );
    if let Err(e) = access {
        return Err(Error::Spool {
            path: path.to_path_buf(),
            what: format!("is not writable by this process: {e}"),
        });
    }
    Ok(())
}

/// The file name of a new job: priority first (so names sort in the order
/// jobs should run), then creation time, writer and a counter (unique),
/// then the earliest start (Unix seconds, 0 for none).
pub(crate) fn job_name(priority: Option<u32>, at: u64, seq: u64) -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{JOB_PREFIX}{:010}_{:020}_{}_{seq}_{at}",
        priority.map_or(NO_PRIORITY, u64::from),
        now.as_nanos(),
        std::process::id(),
    )
}

/// The earliest start written in a job's name (0 when none or not ours).
pub(crate) fn at_in_name(name: &str) -> u64 {
    if !name.starts_with(JOB_PREFIX) {
        return 0;
    }
    name.rsplit('_')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(0)
}

/// Whether a job file's name carries a priority (flare's names only):
/// such jobs run before the journal's, which have none.
pub(crate) fn prioritised(name: &str) -> bool {
    name.starts_with(JOB_PREFIX) && !name[JOB_PREFIX.len()..].starts_with(&NO_PRIORITY.to_string())
}

/// Whether a directory entry is a job to run.
pub(crate) fn is_job(name: &str) -> bool {
    !name.starts_with('.')
}

pub(crate) fn spool_err(dir: &Path, what: &str, e: io::Error) -> Error {
    let hint = match e.raw_os_error() {
        Some(nix::libc::EROFS) => " (the file system is read-only)",
        Some(nix::libc::EACCES) | Some(nix::libc::EPERM) => {
            " (this process may not write in the directory)"
        }
        Some(nix::libc::ENOSPC) | Some(nix::libc::EDQUOT) => " (the disk or quota is full)",
        Some(nix::libc::ENOENT) => " (the directory is gone)",
        _ => "",
    };
    Error::Spool {
        path: dir.to_path_buf(),
        what: format!("{what}: {e}{hint}"),
    }
}

/// Writes a job: to a temporary name, renamed to `name`, so no process
/// ever sees a partial job. With `sync`, the file is fsynced before the
/// rename; the directory's fsync, which makes the new name durable, is
/// the caller's (see [`GroupSync`]), so that several jobs can share one.
pub(crate) fn write(dir: &Path, name: &str, data: &[u8], sync: bool) -> Result<PathBuf> {
    let tmp = tmp_path(dir, name);
    let done = dir.join(name);
    let written = (|| {
        let mut f = create_tmp(dir, &tmp, false)
            .map_err(|e| spool_err(dir, "cannot create a job file", e))?;
        f.write_all(data)
            .and_then(|()| if sync { f.sync_data() } else { Ok(()) })
            .map_err(|e| spool_err(dir, "cannot write a job file", e))?;
        // Closed before the rename: closed after it, the file would make
        // a second inotify event (CLOSE_WRITE) in the spool directory.
        drop(f);
        fs::rename(&tmp, &done).map_err(|e| spool_err(dir, "cannot rename a job file", e))
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(done)
}

/// Where a file named `name` is written before it is renamed into `dir`.
pub(crate) fn tmp_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(TMP_DIR).join(name)
}

/// Creates the temporary file `tmp` (the temporary directory too, when
/// missing), 0600; `append` for a journal segment.
pub(crate) fn create_tmp(dir: &Path, tmp: &Path, append: bool) -> io::Result<File> {
    let create = || {
        let mut o = OpenOptions::new();
        if append {
            o.read(true).append(true);
        } else {
            o.write(true);
        }
        o.create_new(true).mode(0o600).open(tmp)
    };
    match create() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => match fs::create_dir(dir.join(TMP_DIR)) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
            _ => create(),
        },
        other => other,
    }
}

/// Group commit of an fsync among the threads of a process: a thread that
/// wrote (a rename into a directory, an append to a journal) takes a
/// ticket; one fsync covers every write made before it started, so a
/// thread whose write is covered by an fsync another thread ran (or is
/// running) waits for it instead of running its own.
#[derive(Debug, Default)]
pub(crate) struct GroupSync {
    state: Mutex<SyncState>,
    done: Condvar,
}

#[derive(Debug, Default)]
struct SyncState {
    /// Writes counted so far (the last ticket given).
    written: u64,
    /// Every write up to this ticket is durable.
    synced: u64,
    /// A thread is running the fsync now.
    running: bool,
}

impl GroupSync {
    /// A ticket for a write just made.
    pub(crate) fn ticket(&self) -> u64 {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.written += 1;
        st.written
    }

    /// Returns once the write of `ticket` is durable: covered by a run of
    /// `fsync` that started after it, this thread's or another's.
    pub(crate) fn sync(&self, ticket: u64, fsync: impl FnOnce() -> Result<()>) -> Result<()> {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if st.synced >= ticket {
                return Ok(());
            }
            if !st.running {
                st.running = true;
                let upto = st.written;
                drop(st);
                let r = fsync();
                st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                st.running = false;
                if r.is_ok() {
                    st.synced = st.synced.max(upto);
                }
                self.done.notify_all();
                // A failure is this thread's to report; the waiting ones
                // try again themselves.
                return r;
            }
            st = self.done.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// Makes the names in `dir` durable (fsync of the directory).
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| spool_err(dir, "cannot sync the directory", e))
}

/// Every name in a directory (jobs, segments, dot files), unsorted.
pub(crate) fn list_all(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        if let Ok(name) = entry?.file_name().into_string() {
            names.push(name);
        }
    }
    Ok(names)
}

/// Removes temporary files left by writers that died mid-write.
pub(crate) fn remove_stale(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir.join(TMP_DIR)) else {
        return;
    };
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_TMP);
        if old {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// The result of trying to claim a job.
pub(crate) enum Claim {
    /// This process holds the job until the claim is dropped or finished.
    Got(Claimed),
    /// Another spooler holds it now.
    Busy,
    /// It is gone (done by another spooler, or removed by hand).
    Gone,
}

/// A job this process holds: nobody else runs it until this is dropped.
pub(crate) struct Claimed {
    _lock: Flock<File>,
    pub(crate) path: PathBuf,
    pub(crate) data: Vec<u8>,
}

/// Claims the job `name`: an exclusive non-blocking `flock`, then a check
/// that the file is still linked (a spooler that finished it unlinked it
/// while holding the lock), then its contents.
pub(crate) fn claim(dir: &Path, name: &str) -> io::Result<Claim> {
    let path = dir.join(name);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Claim::Gone),
        Err(e) => return Err(e),
    };
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((_, Errno::EWOULDBLOCK)) => return Ok(Claim::Busy),
        Err((_, e)) => return Err(e.into()),
    };
    let meta = lock.metadata()?;
    if meta.nlink() == 0 {
        return Ok(Claim::Gone);
    }
    // Sized from the fstat just made (a plain read_to_end on a File asks
    // the kernel for the size and position again: two system calls per
    // job); then whatever is past that size, normally nothing (one read
    // that returns 0).
    let mut data = vec![0; usize::try_from(meta.len()).unwrap_or(0)];
    let mut got = 0;
    while got < data.len() {
        match lock.read(&mut data[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    data.truncate(got);
    (&*lock).take(u64::MAX).read_to_end(&mut data)?;
    Ok(Claim::Got(Claimed {
        _lock: lock,
        path,
        data,
    }))
}

impl Claimed {
    /// Removes the job (its handler is done with it), then lets it go.
    pub(crate) fn finish(self) -> io::Result<()> {
        match fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Sets a job that cannot be read aside (renamed with a leading dot,
    /// so it is kept for a person to look at and never run).
    pub(crate) fn set_aside(self) -> io::Result<PathBuf> {
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let to = self.path.with_file_name(format!("{INVALID_PREFIX}{name}"));
        fs::rename(&self.path, &to)?;
        Ok(to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        super::super::test_dir(tag)
    }

    #[test]
    fn names_sort_by_priority_then_age_and_carry_at() {
        let a = job_name(Some(1), 0, 1);
        let b = job_name(None, 1234, 2);
        let c = job_name(Some(0), 0, 3);
        let mut v = vec![b.clone(), a.clone(), c.clone()];
        v.sort();
        assert_eq!(v, [c, a, b.clone()]);
        assert_eq!(at_in_name(&b), 1234);
        assert_eq!(at_in_name("uwsgi_spoolfile_on_x_1_2"), 0);
    }

    #[test]
    fn a_claimed_job_is_busy_for_others_and_gone_once_finished() {
        let d = tmpdir("claim");
        let path = write(&d, "job_x", b"data", true).unwrap();
        let sync = GroupSync::default();
        sync.sync(sync.ticket(), || sync_dir(&d)).unwrap();
        assert!(path.exists());
        assert!(list_all(&d).unwrap().contains(&"job_x".to_string()));
        let Claim::Got(held) = claim(&d, "job_x").unwrap() else {
            panic!("not claimed")
        };
        assert_eq!(held.data, b"data");
        // A second open file description: another spooler.
        assert!(matches!(claim(&d, "job_x").unwrap(), Claim::Busy));
        // One that opened the file before it was finished sees it gone.
        let early = File::open(d.join("job_x")).unwrap();
        held.finish().unwrap();
        let lock = Flock::lock(early, FlockArg::LockExclusiveNonblock)
            .ok()
            .unwrap();
        assert_eq!(lock.metadata().unwrap().nlink(), 0);
        assert!(matches!(claim(&d, "job_x").unwrap(), Claim::Gone));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn one_directory_fsync_covers_the_renames_made_before_it() {
        let d = tmpdir("sync");
        let sync = GroupSync::default();
        let (a, b) = (sync.ticket(), sync.ticket());
        sync.sync(b, || sync_dir(&d)).unwrap();
        // Covered by the fsync made for b: no second one.
        assert_eq!(sync.state.lock().unwrap().synced, 2);
        sync.sync(a, || sync_dir(&d)).unwrap();
        let c = sync.ticket();
        assert!(sync.state.lock().unwrap().synced < c);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| sync.sync(sync.ticket(), || sync_dir(&d)).unwrap());
            }
        });
        assert_eq!(sync.state.lock().unwrap().synced, 11);
        let gone = d.join("gone");
        let e = sync.sync(sync.ticket(), || sync_dir(&gone)).unwrap_err();
        assert!(e.to_string().contains("cannot sync the directory"), "{e}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn missing_and_non_directories_are_named() {
        let d = tmpdir("check");
        let e = check(&d.join("nope")).unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
        fs::write(d.join("f"), b"").unwrap();
        let e = check(&d.join("f")).unwrap_err().to_string();
        assert!(e.contains("not a directory"), "{e}");
        check(&d).unwrap();
        fs::remove_dir_all(&d).unwrap();
    }
}
