//! Shared memory between the master and its children: the read-only mirror
//! of the signal table and one status slot per child.
//!
//! The region is a memory file mapped once, before the first fork: every
//! child inherits the mapping, and an attached process (one flare did not
//! fork) maps the same file, passed to it on the attach socket. It holds atomics only, each with one writer (the master for
//! the table, pid and state; the child for its own counters), so no process
//! can ever hold a lock another one needs. It lives as long as the process.

use std::collections::BTreeMap;
use std::mem::size_of;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use nix::sys::mman::{MapFlags, ProtFlags, mmap};

use crate::error::{Error, Result};
use crate::topology::ProcState;

/// The status of one child, written by the child (counters) and the master
/// (pid, state, respawns).
#[repr(C, align(64))]
pub(crate) struct SlotStatus {
    /// Pid of the current process in the slot, 0 when none.
    pub(crate) pid: AtomicU32,
    /// [`ProcState::code`].
    pub(crate) state: AtomicU32,
    /// Signal whose handler runs now, plus one; 0 when idle.
    pub(crate) current: AtomicU32,
    /// Last signal received, plus one; 0 before the first.
    pub(crate) last_received: AtomicU32,
    /// `CLOCK_MONOTONIC` nanoseconds when the current handler started.
    pub(crate) handler_started_ns: AtomicU64,
    /// Sequence number of the delivery whose handler runs now (valid while
    /// `current` is not 0).
    pub(crate) current_seq: AtomicU64,
    /// Sequence number of the last delivery whose handler returned: on a
    /// crash, everything up to it is known to be handled, acked or not.
    pub(crate) done_seq: AtomicU64,
    /// Set by the master when it wants an ack for every delivery as soon
    /// as the child's queue is empty (it is waiting for the child to
    /// finish: a shutdown, a reload, a cheap). Otherwise the master reads
    /// `done_seq` and only pooled deliveries are acked (their credit).
    pub(crate) acks_wanted: AtomicU32,
    /// `CLOCK_MONOTONIC` nanoseconds past which the master kills the
    /// process (its own `set_user_harakiri`); 0: none. Written by the
    /// child; cleared by the master before each fork.
    pub(crate) user_harakiri_ns: AtomicU64,
    /// Times the slot was forked again after a death.
    pub(crate) respawns: AtomicU64,
    /// Signals raised by processes in this slot.
    pub(crate) raised: AtomicU64,
    /// Deliveries handled (handler ran, or recorded when no handler).
    pub(crate) handled: AtomicU64,
    /// Handlers that panicked.
    pub(crate) panics: AtomicU64,
    /// Handlers that raised an exception (language bindings report it).
    pub(crate) exceptions: AtomicU64,
    /// Nanoseconds spent in handlers.
    pub(crate) busy_ns: AtomicU64,
    /// Deliveries handled, per signal number.
    pub(crate) handled_by_num: [AtomicU64; 256],
}

#[repr(C, align(64))]
struct Header {
    slots: u64,
    table: [AtomicU64; 256],
    /// Set once any process used `set_user_harakiri`: the master checks
    /// deadlines from then on.
    user_harakiri_used: AtomicU32,
}

/// A handle on the shared region; cheap to copy.
#[derive(Clone, Copy)]
pub(crate) struct Shm {
    header: &'static Header,
    slots: &'static [SlotStatus],
    /// The memory file (kept open for the life of the process: the master
    /// hands it to attached processes); `None` where it was not kept.
    fd: Option<&'static OwnedFd>,
}

/// Bytes before the first slot.
fn slots_at() -> usize {
    size_of::<Header>().next_multiple_of(64)
}

/// Maps `len` bytes of the memory file `fd`, shared.
fn map(fd: &OwnedFd, len: NonZeroUsize) -> Result<std::ptr::NonNull<u8>> {
    // SAFETY: no address hint, so the new mapping aliases no existing
    // memory; the file is at least `len` bytes long (the caller sized or
    // measured it); the arguments are valid for mmap.
    let base = unsafe {
        mmap(
            None,
            len,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED,
            fd.as_fd(),
            0,
        )
    }
    .map_err(|e| Error::io("mapping shared memory", e))?;
    Ok(base.cast::<u8>())
}

/// The header and slots of a mapped region of `slots` slots.
///
/// # Safety
///
/// `base` must be a live mapping of at least `slots_at() + slots *
/// size_of::<SlotStatus>()` bytes that is never unmapped, holding zeroes or
/// values written through these same types.
unsafe fn view(
    base: std::ptr::NonNull<u8>,
    slots: usize,
) -> (&'static Header, &'static [SlotStatus]) {
    // SAFETY: per this function's contract the memory is mapped, large
    // enough, lives for ever, and holds valid bit patterns (integers and
    // atomics only, for which all-zero is valid).
    unsafe {
        let header = base.cast::<Header>().as_ptr();
        let first = base.add(slots_at()).cast::<SlotStatus>().as_ptr();
        (
            &*header,
            std::slice::from_raw_parts(first as *const SlotStatus, slots),
        )
    }
}

impl Shm {
    /// Maps a zeroed region for `slots` children.
    pub(crate) fn create(slots: usize) -> Result<Shm> {
        let len = slots_at() + slots * size_of::<SlotStatus>();
        let len = NonZeroUsize::new(len).ok_or_else(|| Error::Config("empty region".into()))?;
        let fd =
            nix::sys::memfd::memfd_create(c"flare-status", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
                .map_err(|e| Error::io("creating shared memory", e))?;
        nix::unistd::ftruncate(&fd, len.get() as i64)
            .map_err(|e| Error::io("sizing shared memory", e))?;
        let base = map(&fd, len)?;
        // SAFETY: a fresh mapping of `len` bytes of a new, zero-filled
        // file, never unmapped. `slots` is written before any sharing.
        let (header, slot_list) = unsafe {
            (*base.cast::<Header>().as_ptr()).slots = slots as u64;
            view(base, slots)
        };
        Ok(Shm {
            header,
            slots: slot_list,
            fd: Some(Box::leak(Box::new(fd))),
        })
    }

    /// Maps the region of a running group from its memory file (an
    /// attached process, which got `fd` from the master).
    pub(crate) fn open(fd: &OwnedFd) -> Result<Shm> {
        let bad = |why: &str| Error::Protocol(format!("the group's shared memory {why}"));
        let size = nix::sys::stat::fstat(fd.as_fd())
            .map_err(|e| Error::io("reading the shared memory's size", e))?
            .st_size as usize;
        let len = NonZeroUsize::new(size)
            .filter(|l| l.get() >= slots_at())
            .ok_or_else(|| bad("is too small"))?;
        let base = map(fd, len)?;
        // SAFETY: the header fits (checked above); it was written by the
        // master before it handed the file out.
        let slots = unsafe { (*base.cast::<Header>().as_ptr()).slots } as usize;
        if slots_at() + slots * size_of::<SlotStatus>() > size {
            return Err(bad("is shorter than its slot count says"));
        }
        // SAFETY: the whole region is mapped (checked just above) and is
        // never unmapped; the master keeps it to these types.
        let (header, slot_list) = unsafe { view(base, slots) };
        Ok(Shm {
            header,
            slots: slot_list,
            fd: None,
        })
    }

    /// The memory file, for the master to hand to attached processes.
    pub(crate) fn fd(&self) -> Option<&'static OwnedFd> {
        self.fd
    }

    /// Number of child slots.
    pub(crate) fn slot_count(&self) -> usize {
        self.header.slots as usize
    }

    /// The table mirror: one word per signal number (see `table::MirrorEntry`).
    pub(crate) fn table(&self) -> &'static [AtomicU64; 256] {
        &self.header.table
    }

    /// Whether any process of the group has set a user harakiri.
    pub(crate) fn user_harakiri_used(&self) -> &'static AtomicU32 {
        &self.header.user_harakiri_used
    }

    /// The status of one child.
    pub(crate) fn slot(&self, slot: usize) -> &'static SlotStatus {
        &self.slots[slot]
    }
}

impl SlotStatus {
    pub(crate) fn set_state(&self, s: ProcState) {
        self.state.store(s.code(), Relaxed);
    }

    pub(crate) fn state(&self) -> ProcState {
        ProcState::from_code(self.state.load(Relaxed))
    }

    /// Deliveries handled, by signal number (numbers never handled left out).
    pub(crate) fn handled_by_num(&self) -> BTreeMap<u8, u64> {
        self.handled_by_num
            .iter()
            .enumerate()
            .filter_map(|(n, c)| {
                let c = c.load(Relaxed);
                (c > 0).then_some((n as u8, c))
            })
            .collect()
    }
}

/// Adds to a counter that only the calling thread writes (a child's
/// dispatcher, for its slot's handled counters): a load and a store, no
/// locked instruction. Readers still see whole values.
pub(crate) fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
}

/// `CLOCK_MONOTONIC` in nanoseconds: comparable across processes.
pub(crate) fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_is_zeroed_and_sized() {
        let shm = Shm::create(5).unwrap();
        assert_eq!(shm.slot_count(), 5);
        assert!(shm.table().iter().all(|w| w.load(Relaxed) == 0));
        let s = shm.slot(4);
        assert_eq!(s.handled.load(Relaxed), 0);
        s.handled_by_num[255].fetch_add(2, Relaxed);
        assert_eq!(shm.slot(4).handled_by_num[255].load(Relaxed), 2);
        assert!(monotonic_ns() > 0);
    }

    #[test]
    fn a_second_mapping_of_the_file_sees_the_same_memory() {
        let shm = Shm::create(3).unwrap();
        let other = Shm::open(shm.fd().unwrap()).unwrap();
        assert_eq!(other.slot_count(), 3);
        shm.slot(2).handled.store(41, Relaxed);
        assert_eq!(other.slot(2).handled.load(Relaxed), 41);
    }
}
