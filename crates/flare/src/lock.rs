//! Locks shared by every process of the group (uWSGI `uwsgi.lock(n)`).
//!
//! The master creates one memory file at `build()`; lock `n` is an
//! open-file-description lock (`F_OFD_SETLKW`) on byte `n` of it. Each
//! process opens the file anew (through `/proc/self/fd`) the first time it
//! takes a lock, so its locks are its own; the kernel drops them when the
//! process dies, so a holder that is killed releases its locks. Within a
//! process, threads take turns on a lock through a mutex and condition
//! variable, so a lock excludes threads of one process too.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, fcntl};
use nix::libc;

use crate::error::{Error, Result};

struct Table {
    /// The master's memory file; only reopened, never locked through.
    base: File,
    /// Locks 0..count.
    count: u32,
}

/// This process's own open file description, and which locks it holds.
struct Local {
    pid: u32,
    file: Arc<File>,
    held: Vec<bool>,
}

static TABLE: OnceLock<Table> = OnceLock::new();
static LOCAL: Mutex<Option<Local>> = Mutex::new(None);
static TURN: Condvar = Condvar::new();

/// Creates the group's locks: lock 0 plus `user` more (uWSGI `--locks`).
/// Called by `MasterBuilder::build()`, in the master.
pub(crate) fn configure(user: u32) -> Result<()> {
    let count = user
        .checked_add(1)
        .ok_or_else(|| Error::Config("too many locks".into()))?;
    let base =
        nix::sys::memfd::memfd_create(c"flare-locks", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .map(File::from)
            .map_err(|e| Error::io("creating the group's locks", e))?;
    TABLE
        .set(Table { base, count })
        .map_err(|_| Error::Config("this process already created locks".into()))
}

/// The locks' memory file and the number of locks, for the master to hand
/// to an attached process; `None` before [`configure`].
pub(crate) fn shared() -> Option<(&'static File, u32)> {
    TABLE.get().map(|t| (&t.base, t.count))
}

/// Takes the group's locks in an attached process: the master's memory
/// file (received on the attach socket) and the number of locks.
pub(crate) fn adopt(base: File, count: u32) -> Result<()> {
    TABLE
        .set(Table { base, count })
        .map_err(|_| Error::Config("this process already has a group's locks".into()))
}

fn table(n: u32) -> Result<&'static Table> {
    let t = TABLE.get().ok_or(Error::NoRuntime(
        "locks need a flare group: build a master with Master::builder() first",
    ))?;
    if n >= t.count {
        return Err(Error::BadLock {
            num: n,
            max: t.count - 1,
        });
    }
    Ok(t)
}

fn range(kind: libc::c_int, n: u32) -> libc::flock {
    libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: libc::off_t::from(n),
        l_len: 1,
        l_pid: 0,
    }
}

/// This process's file, opened on first use (and again after a fork).
fn local<'a>(t: &Table, guard: &'a mut Option<Local>) -> Result<&'a mut Local> {
    let pid = std::process::id();
    if guard.as_ref().is_none_or(|l| l.pid != pid) {
        let path = format!("/proc/self/fd/{}", t.base.as_raw_fd());
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("opening the group's locks", e))?;
        *guard = Some(Local {
            pid,
            file: Arc::new(file),
            held: vec![false; t.count as usize],
        });
    }
    guard
        .as_mut()
        .ok_or(Error::NoRuntime("the group's locks are not open"))
}

/// Takes lock `n`, waiting while another process or thread holds it
/// (uWSGI `uwsgi.lock(n)`). Locks are numbered 0 to the configured count
/// (`MasterBuilder::locks`); lock 0 always exists. A process that dies
/// holding a lock releases it. Not in the master (it forks children, which
/// must not inherit a held lock).
///
/// # Errors
///
/// [`Error::BadLock`] for a number past the configured count,
/// [`Error::NoRuntime`] outside a group's child (and in the master),
/// [`Error::Io`] when the lock file cannot be locked.
pub fn lock(n: u32) -> Result<()> {
    let t = table(n)?;
    if crate::child::context().is_none() {
        return Err(Error::NoRuntime(
            "locks are taken in the group's children, not in the master",
        ));
    }
    let file = {
        let mut guard = LOCAL.lock().unwrap_or_else(PoisonError::into_inner);
        local(t, &mut guard)?;
        let mut guard = TURN
            .wait_while(guard, |l| l.as_ref().is_some_and(|l| l.held[n as usize]))
            .unwrap_or_else(PoisonError::into_inner);
        let l = local(t, &mut guard)?;
        l.held[n as usize] = true;
        l.file.clone()
    };
    let want = range(libc::F_WRLCK, n);
    let taken = loop {
        match fcntl(file.as_ref(), FcntlArg::F_OFD_SETLKW(&want)) {
            Err(Errno::EINTR) => continue,
            other => break other,
        }
    };
    if let Err(e) = taken {
        release_turn(n);
        return Err(Error::io("taking a lock", e));
    }
    Ok(())
}

fn release_turn(n: u32) {
    let mut guard = LOCAL.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(l) = guard.as_mut() {
        l.held[n as usize] = false;
    }
    TURN.notify_all();
}

/// Releases lock `n`, which this process holds (uWSGI `uwsgi.unlock(n)`).
///
/// # Errors
///
/// [`Error::BadLock`] for a number past the configured count,
/// [`Error::NoRuntime`] outside a group's child or when this process does
/// not hold the lock, [`Error::Io`] when the lock cannot be released.
pub fn unlock(n: u32) -> Result<()> {
    table(n)?;
    let file = {
        let guard = LOCAL.lock().unwrap_or_else(PoisonError::into_inner);
        match guard.as_ref() {
            Some(l) if l.pid == std::process::id() && l.held[n as usize] => l.file.clone(),
            _ => {
                return Err(Error::NoRuntime(
                    "unlock(): this process does not hold that lock",
                ));
            }
        }
    };
    fcntl(
        file.as_ref(),
        FcntlArg::F_OFD_SETLK(&range(libc::F_UNLCK, n)),
    )
    .map_err(|e| Error::io("releasing a lock", e))?;
    release_turn(n);
    Ok(())
}

/// Whether lock `n` is held now, by any process of the group (uWSGI
/// `uwsgi.is_locked(n)`).
///
/// # Errors
///
/// [`Error::BadLock`] for a number past the configured count,
/// [`Error::NoRuntime`] outside a group, [`Error::Io`] when the lock
/// file cannot be queried.
pub fn is_locked(n: u32) -> Result<bool> {
    let t = table(n)?;
    let mut guard = LOCAL.lock().unwrap_or_else(PoisonError::into_inner);
    let l = local(t, &mut guard)?;
    if l.held[n as usize] {
        return Ok(true);
    }
    let mut probe = range(libc::F_WRLCK, n);
    fcntl(l.file.as_ref(), FcntlArg::F_OFD_GETLK(&mut probe))
        .map_err(|e| Error::io("looking at a lock", e))?;
    Ok(probe.l_type != libc::F_UNLCK as libc::c_short)
}

/// How many locks the group has (lock numbers are below it).
pub fn lock_count() -> u32 {
    TABLE.get().map_or(0, |t| t.count)
}
