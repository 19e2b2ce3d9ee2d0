//! A journal segment mapped into a spooler's memory, so that finishing a
//! record (rewriting its header) is a store, not a system call. The
//! spooler's only `unsafe`, fenced here.
//!
//! The mapping is shared and writable; it is only written, never read
//! (readers use `pread`, which cannot fault), and only where the caller
//! has read whole records: segments grow and are never cut below a whole
//! record, so the written pages always exist. Stores land in the page
//! cache, like a `write`: they outlive the process and are seen by every
//! reader at once.

use std::fs::File;
use std::io;
use std::num::NonZeroUsize;
use std::ptr::NonNull;

use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};

/// A writable shared mapping of the first `len` bytes of a file.
pub(crate) struct Mapped {
    base: NonNull<u8>,
    len: usize,
}

impl Mapped {
    /// Maps `len` bytes of `file` (which may be shorter for now).
    pub(crate) fn new(file: &File, len: usize) -> io::Result<Mapped> {
        let size = NonZeroUsize::new(len).ok_or_else(|| io::Error::other("empty mapping"))?;
        // SAFETY: a fresh mapping chosen by the kernel (no address given),
        // of a file this process opened for reading and writing; nothing
        // else in this process refers to the range. It is only ever
        // written through `write` below, within the file's size.
        let base = unsafe {
            mmap(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                file,
                0,
            )
        }?;
        Ok(Mapped {
            base: base.cast(),
            len,
        })
    }

    /// Writes `bytes` at offset `at`; `false` (nothing written) when that
    /// is past the mapping or past `known_len`, the size the caller has
    /// seen the file reach.
    pub(crate) fn write(&self, at: u64, bytes: &[u8], known_len: u64) -> bool {
        let Ok(at) = usize::try_from(at) else {
            return false;
        };
        let end = at.saturating_add(bytes.len());
        if end > self.len || end as u64 > known_len {
            return false;
        }
        // SAFETY: `at..end` is inside the mapping (checked above) and
        // inside the file as the caller read it; segment files only grow
        // (their writer cuts back only bytes no reader took as a record),
        // so the pages are backed and the store cannot fault. Other
        // processes read these bytes only with `pread`, and a torn view
        // of a header is settled by the record lock and a second read
        // (see `journal::claim`).
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.base.as_ptr().add(at), bytes.len());
        }
        true
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: the range was mapped by `new`, and no reference into it
        // outlives `self` (only `write` touches it, through raw pointers).
        let _ = unsafe { munmap(self.base.cast(), self.len) };
    }
}
