//! The board: a small area of shared memory that a flare node maps before
//! `Master::build()`, so that every child inherits it through `fork()`;
//! it is a memory file, so an attached worker (started by the node, not
//! forked by flare) maps it too, through `/proc/NODE/fd/N` ([`Board::path`]).
//! Senders publish their send timestamps there and handlers their counts
//! and handler-start times; the master reads it after `run()`.
//!
//! The Python side (`bench/uwsgi/flarebench.py`) keeps the same layout in
//! an inherited `mmap.mmap(-1, ...)`, so both sides measure the same way.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::sys::mman::{MapFlags, ProtFlags, mmap};
use nix::time::{ClockId, clock_gettime};

/// Word: the sender's timestamp of the current round (CLOCK_MONOTONIC ns).
pub const T0: usize = 0;
/// Word: the current round number.
pub const ROUND: usize = 1;
/// Word: when the sender finished raising (ns).
pub const SENDER_DONE: usize = 2;
/// Word: how many times the sending mule started (1 unless it died).
pub const STARTS: usize = 3;
/// First word of the per-process slots (index = worker id, 1..=MAX_ID).
const SLOTS: usize = 16;
/// Words per slot: ready flag, handled count, last handler start, last round seen.
const SLOT_WORDS: usize = 4;
/// Largest worker id with a slot.
pub const MAX_ID: usize = 63;
/// First word of the samples area (one-way latencies, by round).
pub const SAMPLES: usize = 512;
/// Samples the board holds.
pub const MAX_SAMPLES: usize = 1 << 18;
/// Words in the whole board.
const WORDS: usize = SAMPLES + MAX_SAMPLES;

/// The four fields of a process slot.
#[derive(Clone, Copy)]
pub enum Field {
    /// Set to 1 when the process has started.
    Ready = 0,
    /// Handlers run (burst, pool, remote).
    Count = 1,
    /// CLOCK_MONOTONIC ns at the start of the last handler.
    Last = 2,
    /// The round of the last handler run (fan-out).
    Seen = 3,
}

/// A handle on the shared words; `Copy`, so handlers capture it freely.
#[derive(Clone, Copy)]
pub struct Board {
    words: &'static [AtomicU64],
    /// Where another process opens the same memory.
    fd: Option<&'static OwnedFd>,
}

impl Board {
    /// Maps a zeroed board shared with every process forked afterwards.
    pub fn map() -> std::io::Result<Board> {
        let fd = nix::sys::memfd::memfd_create(
            c"flare-bench-board",
            nix::sys::memfd::MFdFlags::empty(),
        )?;
        nix::unistd::ftruncate(&fd, (WORDS * std::mem::size_of::<AtomicU64>()) as i64)?;
        let fd: &'static OwnedFd = Box::leak(Box::new(fd));
        Ok(Board {
            words: shared_words(fd, WORDS)?,
            fd: Some(fd),
        })
    }

    /// The board's path for another process ([`Board::open`]).
    pub fn path(self) -> Option<String> {
        self.fd
            .map(|fd| format!("/proc/{}/fd/{}", std::process::id(), fd.as_raw_fd()))
    }

    /// Maps the board of another process from its [`Board::path`].
    pub fn open(path: &str) -> std::io::Result<Board> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        let len = file.metadata()?.len() as usize;
        if len < WORDS * std::mem::size_of::<AtomicU64>() {
            return Err(std::io::Error::other(format!("{path} is not a board")));
        }
        Ok(Board {
            words: shared_words(&OwnedFd::from(file), WORDS)?,
            fd: None,
        })
    }

    /// Reads a word.
    pub fn get(self, word: usize) -> u64 {
        self.words[word].load(Ordering::Acquire)
    }

    /// Writes a word.
    pub fn set(self, word: usize, value: u64) {
        self.words[word].store(value, Ordering::Release);
    }

    fn slot_word(id: u32, field: Field) -> usize {
        let id = id as usize;
        assert!((1..=MAX_ID).contains(&id), "worker id {id} has no slot");
        SLOTS + id * SLOT_WORDS + field as usize
    }

    /// Reads a field of worker `id`'s slot.
    pub fn slot(self, id: u32, field: Field) -> u64 {
        self.get(Self::slot_word(id, field))
    }

    /// Writes a field of worker `id`'s slot.
    pub fn set_slot(self, id: u32, field: Field, value: u64) {
        self.set(Self::slot_word(id, field), value);
    }

    /// Adds one to worker `id`'s handled count and stamps its last run.
    pub fn count(self, id: u32, at: u64) {
        self.words[Self::slot_word(id, Field::Count)].fetch_add(1, Ordering::Relaxed);
        self.set_slot(id, Field::Last, at);
    }

    /// Writes sample `i`.
    pub fn set_sample(self, i: usize, value: u64) {
        if i < MAX_SAMPLES {
            self.set(SAMPLES + i, value);
        }
    }

    /// Reads sample `i`.
    pub fn sample(self, i: usize) -> u64 {
        if i < MAX_SAMPLES {
            self.get(SAMPLES + i)
        } else {
            0
        }
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the same clock in every process (and
/// Python's `time.monotonic_ns()`), so timestamps compare across processes.
pub fn now_ns() -> u64 {
    let t = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// Maps `words` 64-bit atomics of the memory file `fd` (at least that
/// long), shared with every process that maps it, and every process this
/// one forks afterwards. Never unmapped.
#[allow(unsafe_code)]
fn shared_words(fd: &OwnedFd, words: usize) -> std::io::Result<&'static [AtomicU64]> {
    let bytes = NonZeroUsize::new(words * std::mem::size_of::<AtomicU64>())
        .ok_or_else(|| std::io::Error::other("empty shared area"))?;
    // SAFETY: mmap with a null hint either fails or returns a fresh,
    // page-aligned (so 8-byte aligned), readable and writable mapping of
    // `bytes` bytes of the file (the callers checked or set its length),
    // aliasing nothing else in this process. The file holds zeroes or
    // words written through these atomics; AtomicU64 has the size and
    // alignment of u64 and every bit pattern is a valid value, so the
    // region is a valid [AtomicU64; words]. It is never unmapped, so the
    // 'static lifetime holds; other processes reach it only through atomic
    // operations on the same words.
    unsafe {
        let ptr = mmap(
            None,
            bytes,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED,
            fd.as_fd(),
            0,
        )?;
        Ok(std::slice::from_raw_parts(
            ptr.as_ptr().cast::<AtomicU64>(),
            words,
        ))
    }
}
