//! The spool journal: small jobs appended to a segment file instead of a
//! file each.
//!
//! A file per job makes the file system create and remove an inode for
//! every job, which bounds a spool directory at a few tens of thousands of
//! jobs per second whatever runs them. A plain job (no `at`, no
//! `priority`, at most [`MAX_JOB`] bytes encoded) is instead appended, in
//! one `write`, to its writer's current segment: `.journal_<creation
//! ns>_<pid>` in the spool directory (a dot name, so job listings and uWSGI
//! pass over it). Each process writes its own segment and starts a new one
//! past [`ROLL_AT`] bytes.
//!
//! A segment is a 16-byte header (`FLRJRNL1` and 8 zero bytes), then
//! records:
//!
//! | bytes | what |
//! |---|---|
//! | 0 | `0xF7` |
//! | 1 | state: 0 waiting, 1 done, 2 later (not before the time below), 3 set aside |
//! | 2..4 | zero |
//! | 4..8 | payload length, u32 little endian |
//! | 8..16 | not before: Unix milliseconds, u64 little endian (0: none) |
//! | 16.. | the payload: the job in the job-file format |
//!
//! Each segment has a second name, `.segments/<name>`: spoolers open it
//! there, so that their own writes (finishing records) make no inotify
//! event in the watched spool directory, where the writer's appends do.
//!
//! Locks are open-file-description locks (`F_OFD_SETLK`), which the kernel
//! drops when their holder dies:
//! - the writer holds byte 0 for as long as it may append; a segment whose
//!   byte 0 is free is sealed;
//! - a spooler holds a record's first byte while it runs the record, so
//!   two spoolers never run one record at once (a spooler alone on its
//!   directory takes no record locks: nobody else runs its jobs).
//!
//! A record is finished by rewriting its header in place (done, or later
//! with a time). A sealed segment whose records are all finished is
//! removed. A spooler killed mid-job leaves the record waiting and
//! unlocked: it runs again (at least once). A reader only ever takes
//! whole records: one announcing more bytes than the file has is not
//! read yet.

use std::collections::{BTreeSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, fcntl};
use nix::libc;

use super::dir::{self, GroupSync};
use super::mapped::Mapped;
use crate::error::Result;

/// Segment files are named `.journal_<creation ns, 20 digits>_<pid>`.
pub(crate) const PREFIX: &str = ".journal_";
const MAGIC: &[u8; 8] = b"FLRJRNL1";
const SEGMENT_HEADER: u64 = 16;
const RECORD_MAGIC: u8 = 0xF7;
const RECORD_HEADER: usize = 16;
/// The largest job (encoded) the journal takes; a larger one gets a file.
pub(crate) const MAX_JOB: usize = 64 * 1024;
/// A writer starts a new segment once its current one is this large.
const ROLL_AT: u64 = 4 << 20;
/// How much a reader asks for at once.
const READ_CHUNK: usize = 256 * 1024;
/// How much of a segment a spooler maps to finish records without a
/// system call (records past it, in a segment a huge batch made larger,
/// are finished with `pwrite`).
const MAP_LEN: usize = ROLL_AT as usize + 2 * MAX_JOB;
/// The subdirectory with each segment's second name (see the module doc).
const LINKS: &str = ".segments";

/// A segment's second name.
fn link_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(LINKS).join(name)
}

/// Removes a segment: its name in the spool directory first (so nobody
/// finds it again), then its second name.
fn remove_segment(dir: &Path, name: &str) -> io::Result<()> {
    match fs::remove_file(dir.join(name)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    match fs::remove_file(link_path(dir, name)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Where a record is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// Not run yet, or its run was cut short (the spooler died).
    Waiting,
    /// Its handler answered OK or IGNORE.
    Done,
    /// Its handler answered RETRY, or its `at` is to come: not before the
    /// header's time.
    Later,
    /// It could not be read as a job; a copy was set aside.
    SetAside,
}

impl State {
    fn byte(self) -> u8 {
        match self {
            State::Waiting => 0,
            State::Done => 1,
            State::Later => 2,
            State::SetAside => 3,
        }
    }

    fn of(b: u8) -> Option<State> {
        Some(match b {
            0 => State::Waiting,
            1 => State::Done,
            2 => State::Later,
            3 => State::SetAside,
            _ => return None,
        })
    }

    /// Whether nothing more will run it.
    fn finished(self) -> bool {
        matches!(self, State::Done | State::SetAside)
    }
}

/// A record's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) state: State,
    pub(crate) len: u32,
    pub(crate) not_before_ms: u64,
}

impl Header {
    /// The header at the start of `buf` (at least 16 bytes), or what is
    /// wrong with it. The one place a header's rules are read. Pure.
    fn decode(buf: &[u8]) -> Result<Header, String> {
        let Some(head) = buf.get(..RECORD_HEADER) else {
            return Err(format!("{} bytes, shorter than a record header", buf.len()));
        };
        if head[0] != RECORD_MAGIC {
            return Err(format!("byte {:#04x} where a record starts", head[0]));
        }
        let state =
            State::of(head[1]).ok_or_else(|| format!("unknown record state {}", head[1]))?;
        let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len as usize > MAX_JOB {
            return Err(format!("a record of {len} bytes (at most {MAX_JOB})"));
        }
        let mut nb = [0u8; 8];
        nb.copy_from_slice(&head[8..16]);
        Ok(Header {
            state,
            len,
            not_before_ms: u64::from_le_bytes(nb),
        })
    }

    fn encode(&self) -> [u8; RECORD_HEADER] {
        let mut h = [0u8; RECORD_HEADER];
        h[0] = RECORD_MAGIC;
        h[1] = self.state.byte();
        h[4..8].copy_from_slice(&self.len.to_le_bytes());
        h[8..16].copy_from_slice(&self.not_before_ms.to_le_bytes());
        h
    }

    /// Whether a spooler may run it at `now_ms`.
    fn runnable(&self, now_ms: u64) -> bool {
        match self.state {
            State::Waiting => true,
            State::Later => self.not_before_ms <= now_ms,
            State::Done | State::SetAside => false,
        }
    }
}

/// What the bytes at a record's position hold.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// A whole record.
    Record(Header),
    /// Not all of it is there yet (or nothing is).
    Incomplete,
    /// Not a record: the segment is damaged from here on.
    Damaged(String),
}

/// Reads the record at the start of `buf`. Pure.
pub(crate) fn parse(buf: &[u8]) -> Parsed {
    let Some(&first) = buf.first() else {
        return Parsed::Incomplete;
    };
    if first != RECORD_MAGIC {
        return Parsed::Damaged(format!("byte {first:#04x} where a record starts"));
    }
    if buf.len() < RECORD_HEADER {
        return Parsed::Incomplete;
    }
    match Header::decode(buf) {
        Err(why) => Parsed::Damaged(why),
        Ok(h) if buf.len() < RECORD_HEADER + h.len as usize => Parsed::Incomplete,
        Ok(h) => Parsed::Record(h),
    }
}

/// Appends the record of one job to `out`. Pure.
pub(crate) fn encode_record(payload: &[u8], out: &mut Vec<u8>) {
    let h = Header {
        state: State::Waiting,
        len: payload.len() as u32,
        not_before_ms: 0,
    };
    out.extend_from_slice(&h.encode());
    out.extend_from_slice(payload);
}

/// The name of the job at `off` in segment `seg`: `<segment>#<offset>`
/// (what `spool()` returns and the handler sees as the task's name).
pub(crate) fn job_path(seg: &Path, off: u64) -> PathBuf {
    let mut s = seg.as_os_str().to_owned();
    s.push(format!("#{off}"));
    PathBuf::from(s)
}

/// The segment and offset a journal job's name stands for; `None` for any
/// other path.
pub(crate) fn split(path: &Path) -> Option<(PathBuf, u64)> {
    let name = path.file_name()?.to_str()?;
    if !name.starts_with(PREFIX) {
        return None;
    }
    let (seg, off) = name.rsplit_once('#')?;
    Some((path.with_file_name(seg), off.parse().ok()?))
}

/// Whether a directory entry is a segment.
pub(crate) fn is_segment(name: &str) -> bool {
    name.starts_with(PREFIX) && !name.contains('#')
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Takes (`F_WRLCK`) or lets go (`F_UNLCK`) of byte `at` of `file`
/// without waiting; `Ok(false)` when another holds it.
fn lock_byte(file: &File, at: u64, kind: libc::c_int) -> io::Result<bool> {
    let want = byte_range(kind, at);
    match fcntl(file, FcntlArg::F_OFD_SETLK(&want)) {
        Ok(_) => Ok(true),
        Err(Errno::EAGAIN | Errno::EACCES) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Whether another open file description holds byte `at` of `file`.
fn byte_held(file: &File, at: u64) -> io::Result<bool> {
    let mut probe = byte_range(libc::F_WRLCK, at);
    fcntl(file, FcntlArg::F_OFD_GETLK(&mut probe))?;
    Ok(probe.l_type != libc::F_UNLCK as libc::c_short)
}

fn byte_range(kind: libc::c_int, at: u64) -> libc::flock {
    libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: at as libc::off_t,
        l_len: 1,
        l_pid: 0,
    }
}

// ---- writing ---------------------------------------------------------------

/// One spool directory's journal in one process: its current segment,
/// shared by the process's threads.
#[derive(Debug, Default)]
pub(crate) struct Journal {
    writer: Mutex<Option<Writer>>,
    sync: GroupSync,
}

#[derive(Debug)]
struct Writer {
    /// The process that created it (a forked child starts its own).
    pid: u32,
    file: Arc<File>,
    path: PathBuf,
    /// Where the next record goes.
    end: u64,
}

impl Journal {
    /// Appends jobs (encoded) to this process's segment in `dir`, in one
    /// write; with `fsync`, returns once they are on the disk (threads
    /// appending at once share the fdatasync). Returns their names.
    pub(crate) fn append(
        &self,
        dir: &Path,
        payloads: &[&[u8]],
        fsync: bool,
        dir_sync: &GroupSync,
    ) -> Result<Vec<PathBuf>> {
        let (names, ticket) = {
            let mut guard = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
            let pid = std::process::id();
            let stale = guard
                .as_ref()
                .is_none_or(|w| w.pid != pid || w.end >= ROLL_AT);
            if stale {
                if let Some(old) = guard.take() {
                    // Records of the old segment another thread has not
                    // synced yet: its fdatasync would go to the new one.
                    if old.pid == pid && fsync {
                        old.file
                            .sync_data()
                            .map_err(|e| dir::spool_err(dir, "cannot write a job file", e))?;
                    }
                }
                *guard = Some(Writer::create(dir, pid, fsync, dir_sync)?);
            }
            let Some(w) = guard.as_mut() else {
                return Err(crate::Error::NoRuntime("the spool journal has no segment"));
            };
            let mut buf = Vec::with_capacity(payloads.iter().map(|p| p.len() + 16).sum());
            let mut offsets = Vec::with_capacity(payloads.len());
            for p in payloads {
                offsets.push(w.end + buf.len() as u64);
                encode_record(p, &mut buf);
            }
            let mut written = 0;
            while written < buf.len() {
                let failed = match (&*w.file).write(&buf[written..]) {
                    Ok(0) => io::Error::from(io::ErrorKind::WriteZero),
                    Ok(n) => {
                        written += n;
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => e,
                };
                let e = w.cut(dir, &offsets, buf.len(), written, failed);
                if w.end == u64::MAX {
                    *guard = None;
                }
                return Err(e);
            }
            w.end += buf.len() as u64;
            let names: Vec<PathBuf> = offsets.iter().map(|&o| job_path(&w.path, o)).collect();
            (names, fsync.then(|| self.sync.ticket()))
        };
        if let Some(t) = ticket {
            self.sync.sync(t, || {
                let file = self
                    .writer
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .as_ref()
                    .map(|w| Arc::clone(&w.file));
                match file {
                    Some(f) => f
                        .sync_data()
                        .map_err(|e| dir::spool_err(dir, "cannot write a job file", e)),
                    None => Ok(()),
                }
            })?;
        }
        Ok(names)
    }
}

impl Writer {
    /// After a failed append of records at `offsets` of which `written`
    /// bytes got in: cuts the file back to the end of the last whole
    /// record (no reader takes a partial one, and whole ones stay: they
    /// may be running already), and returns the error for `e`. When even
    /// the cut fails, `end` becomes `u64::MAX`: the caller drops this
    /// segment and the next job starts a new one (readers stop at the torn
    /// record and say so).
    fn cut(
        &mut self,
        dir: &Path,
        offsets: &[u64],
        total: usize,
        written: usize,
        e: io::Error,
    ) -> crate::Error {
        let reached = self.end + written as u64;
        let mut keep = self.end;
        for i in 0..offsets.len() {
            let end = offsets
                .get(i + 1)
                .copied()
                .unwrap_or(self.end + total as u64);
            if end > reached {
                break;
            }
            keep = end;
        }
        self.end = if self.file.set_len(keep).is_ok() {
            keep
        } else {
            u64::MAX
        };
        dir::spool_err(dir, "cannot write a job file", e)
    }

    /// A new segment: made under `.tmp/` (header written, byte 0 locked,
    /// fdatasynced with fsync on), then renamed into place, so a reader
    /// never sees a segment without its header or its writer's lock.
    fn create(dir: &Path, pid: u32, fsync: bool, dir_sync: &GroupSync) -> Result<Writer> {
        let err = |what: &str, e: io::Error| dir::spool_err(dir, what, e);
        let (file, tmp, name) = loop {
            let ns = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            let name = format!("{PREFIX}{ns:020}_{pid}");
            let tmp = dir::tmp_path(dir, &name);
            match dir::create_tmp(dir, &tmp, true) {
                Ok(f) => break (f, tmp, name),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(err("cannot create a job file", e)),
            }
        };
        let path = dir.join(&name);
        let ready = (|| {
            let mut header = [0u8; SEGMENT_HEADER as usize];
            header[..8].copy_from_slice(MAGIC);
            (&file)
                .write_all(&header)
                .map_err(|e| err("cannot write a job file", e))?;
            if !lock_byte(&file, 0, libc::F_WRLCK).map_err(|e| err("cannot lock a job file", e))? {
                return Err(err(
                    "cannot lock a job file",
                    io::Error::other("a new segment is locked by another process"),
                ));
            }
            if fsync {
                file.sync_data()
                    .map_err(|e| err("cannot write a job file", e))?;
            }
            // The spoolers' name; without it they use the other one.
            let link = link_path(dir, &name);
            let linked = fs::hard_link(&tmp, &link).or_else(|e| {
                if e.kind() != io::ErrorKind::NotFound {
                    return Err(e);
                }
                match fs::create_dir(dir.join(LINKS)) {
                    Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                    _ => {}
                }
                fs::hard_link(&tmp, &link)
            });
            if let Err(e) = linked {
                tracing::debug!("no second name for spool journal {name}: {e}");
            }
            fs::rename(&tmp, &path).map_err(|e| err("cannot rename a job file", e))?;
            if fsync {
                dir_sync.sync(dir_sync.ticket(), || dir::sync_dir(dir))?;
            }
            Ok(())
        })();
        if let Err(e) = ready {
            let _ = fs::remove_file(&tmp);
            let _ = fs::remove_file(link_path(dir, &name));
            return Err(e);
        }
        Ok(Writer {
            pid,
            file: Arc::new(file),
            path,
            end: SEGMENT_HEADER,
        })
    }
}

// ---- reading ---------------------------------------------------------------

/// A record a spooler holds: nobody else runs it until it is finished.
#[derive(Debug)]
pub(crate) struct Claimed {
    seg: String,
    off: u64,
    locked: bool,
    /// The job's name (see [`job_path`]).
    pub(crate) name: PathBuf,
    /// The job, in the job-file format.
    pub(crate) payload: Vec<u8>,
}

/// How a claimed record ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Finish {
    /// Never run again.
    Done,
    /// Run again from this time (Unix ms) on.
    Later(u64),
    /// Not a job; a copy was kept elsewhere.
    SetAside,
}

/// A spooler's view of its directory's segments.
pub(crate) struct Reader {
    dir: PathBuf,
    /// The only spooler of the directory: takes no record locks.
    alone: bool,
    /// By name: in creation order.
    segs: Vec<Seg>,
    /// Records not to run before a time: (Unix ms, segment, offset).
    later: BTreeSet<(u64, String, u64)>,
    /// Records of `later` whose time came.
    due: VecDeque<(String, u64)>,
}

struct Seg {
    name: String,
    file: File,
    /// For finishing records without a system call, when mapping worked.
    map: Option<Mapped>,
    /// How far this spooler has read the file (the mapping is written
    /// only below it).
    seen: u64,
    path: PathBuf,
    /// The file offset of `buf[0]`.
    base: u64,
    buf: Vec<u8>,
    /// The next record in `buf`.
    pos: usize,
    /// The last read found nothing new.
    eof: bool,
    /// The damage was logged: nothing past it is read.
    damaged: bool,
    /// Looked at for removal since it last changed.
    checked: bool,
}

impl Seg {
    fn open(dir: &Path, name: &str) -> io::Result<Seg> {
        let path = dir.join(name);
        let open = |p: &Path| OpenOptions::new().read(true).write(true).open(p);
        let file = open(&link_path(dir, name)).or_else(|_| open(&path))?;
        let map = Mapped::new(&file, MAP_LEN)
            .inspect_err(|e| tracing::debug!("spool journal {name} not mapped: {e}"))
            .ok();
        Ok(Seg {
            name: name.to_owned(),
            file,
            map,
            seen: 0,
            path,
            base: SEGMENT_HEADER,
            buf: Vec::new(),
            pos: 0,
            eof: false,
            damaged: false,
            checked: false,
        })
    }

    /// Reads from the start again.
    fn rewind(&mut self) {
        self.base = SEGMENT_HEADER;
        self.buf.clear();
        self.pos = 0;
        self.eof = false;
        self.damaged = false;
        self.checked = false;
    }

    /// Reads what follows the buffer; `false` when nothing does.
    fn fill(&mut self) -> io::Result<bool> {
        self.buf.drain(..self.pos);
        self.base += self.pos as u64;
        self.pos = 0;
        let have = self.buf.len();
        self.buf.resize(have + READ_CHUNK, 0);
        let got = loop {
            match self
                .file
                .read_at(&mut self.buf[have..], self.base + have as u64)
            {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.buf.truncate(have);
                    return Err(e);
                }
            }
        };
        self.buf.truncate(have + got);
        self.seen = self.seen.max(self.base + self.buf.len() as u64);
        Ok(got > 0)
    }
}

impl Reader {
    /// A reader of `dir`'s segments.
    pub(crate) fn new(dir: &Path, alone: bool) -> Reader {
        Reader {
            dir: dir.to_path_buf(),
            alone,
            segs: Vec::new(),
            later: BTreeSet::new(),
            due: VecDeque::new(),
        }
    }

    /// A segment named by an event: opened if new, read again if known.
    pub(crate) fn learn(&mut self, name: &str) {
        let at = match self.find(name) {
            Ok(i) => {
                self.segs[i].eof = false;
                self.segs[i].checked = false;
                return;
            }
            Err(at) => at,
        };
        match Seg::open(&self.dir, name) {
            Ok(seg) => self.segs.insert(at, seg),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("cannot open spool journal {name}: {e}"),
        }
    }

    /// Every segment in the directory, each read again from its start
    /// (records held by others or to retry are found again).
    pub(crate) fn scan(&mut self, names: &[String]) {
        let listed: BTreeSet<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| is_segment(n))
            .collect();
        self.segs.retain(|s| listed.contains(s.name.as_str()));
        for &name in &listed {
            self.learn(name);
        }
        // Second names left by a crash between the two removals (a
        // writer holds a segment's second name a moment before its first).
        if let Ok(links) = fs::read_dir(self.dir.join(LINKS)) {
            for entry in links.flatten() {
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                if listed.contains(name.as_str()) {
                    continue;
                }
                let writing = File::open(entry.path())
                    .and_then(|f| byte_held(&f, 0))
                    .unwrap_or(true);
                if !writing {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        for seg in &mut self.segs {
            seg.rewind();
        }
    }

    /// Where segment `name` is (or would go).
    fn find(&self, name: &str) -> std::result::Result<usize, usize> {
        self.segs.binary_search_by(|s| s.name.as_str().cmp(name))
    }

    /// Moves records whose time came to the front.
    pub(crate) fn promote(&mut self, now_ms: u64) {
        while let Some((at, _, _)) = self.later.first() {
            if *at > now_ms {
                break;
            }
            if let Some((_, seg, off)) = self.later.pop_first() {
                self.due.push_back((seg, off));
            }
        }
    }

    /// When the next record put off comes due (Unix ms).
    pub(crate) fn next_due_ms(&self) -> Option<u64> {
        self.later.first().map(|(at, _, _)| *at)
    }

    /// Claims the next record to run: those whose time came, then the
    /// segments in creation order. `None` when no segment has one now.
    pub(crate) fn next(&mut self, now_ms: u64) -> Option<Claimed> {
        while let Some((seg, off)) = self.due.pop_front() {
            if let Some(c) = self.claim_at(&seg, off, now_ms) {
                return Some(c);
            }
        }
        // First the segments with unread records, then one more read of
        // those that had none (new records since).
        for again in [false, true] {
            for i in 0..self.segs.len() {
                if self.segs[i].eof != again {
                    continue;
                }
                if let Some(c) = self.next_in(i, now_ms) {
                    return Some(c);
                }
            }
        }
        None
    }

    fn next_in(&mut self, i: usize, now_ms: u64) -> Option<Claimed> {
        let alone = self.alone;
        let seg = self.segs.get_mut(i)?;
        seg.eof = false;
        loop {
            if seg.damaged {
                seg.eof = true;
                return None;
            }
            match parse(&seg.buf[seg.pos..]) {
                Parsed::Record(h) => {
                    let at = seg.pos;
                    let off = seg.base + at as u64;
                    seg.pos += RECORD_HEADER + h.len as usize;
                    if h.state == State::Later && h.not_before_ms > now_ms {
                        self.later.insert((h.not_before_ms, seg.name.clone(), off));
                        continue;
                    }
                    if !h.runnable(now_ms) {
                        continue;
                    }
                    let payload = &seg.buf[at + RECORD_HEADER..seg.pos];
                    match claim(seg, off, payload, alone, now_ms) {
                        Ok(Some(c)) => return Some(c),
                        Ok(None) => continue,
                        Err(e) => {
                            tracing::warn!("cannot claim job {off} of {}: {e}", seg.name);
                            continue;
                        }
                    }
                }
                Parsed::Incomplete => match seg.fill() {
                    Ok(true) => {
                        seg.checked = false;
                    }
                    Ok(false) => {
                        seg.eof = true;
                        return None;
                    }
                    Err(e) => {
                        tracing::warn!("cannot read spool journal {}: {e}", seg.name);
                        seg.eof = true;
                        return None;
                    }
                },
                Parsed::Damaged(why) => {
                    tracing::error!(
                        "spool journal {} is damaged at byte {} ({why}); the jobs after it are \
                         not run, and the file is set aside once the jobs before it are done",
                        seg.path.display(),
                        seg.base + seg.pos as u64
                    );
                    seg.damaged = true;
                }
            }
        }
    }

    /// Claims the record at `off` of segment `name` (one whose time came).
    fn claim_at(&mut self, name: &str, off: u64, now_ms: u64) -> Option<Claimed> {
        let i = self.find(name).ok()?;
        let seg = &mut self.segs[i];
        let mut head = [0u8; RECORD_HEADER];
        seg.file.read_exact_at(&mut head, off).ok()?;
        let h = Header::decode(&head).ok()?;
        if !h.runnable(now_ms) {
            return None;
        }
        let mut payload = vec![0u8; h.len as usize];
        seg.file
            .read_exact_at(&mut payload, off + RECORD_HEADER as u64)
            .ok()?;
        seg.seen = seg.seen.max(off + RECORD_HEADER as u64 + u64::from(h.len));
        claim(seg, off, &payload, self.alone, now_ms).ok()?
    }

    /// Ends a claimed record: its header rewritten, its lock let go.
    pub(crate) fn finish(&mut self, c: Claimed, how: Finish) {
        let Ok(i) = self.find(&c.seg) else {
            return;
        };
        let seg = &mut self.segs[i];
        let (state, not_before_ms) = match how {
            Finish::Done => (State::Done, 0),
            Finish::Later(at) => (State::Later, at),
            Finish::SetAside => (State::SetAside, 0),
        };
        let h = Header {
            state,
            len: c.payload.len() as u32,
            not_before_ms,
        };
        let head = h.encode();
        let stored = seg
            .map
            .as_ref()
            .is_some_and(|m| m.write(c.off + 1, &head[1..], seg.seen));
        let written = if stored {
            Ok(())
        } else {
            seg.file.write_all_at(&head[1..], c.off + 1)
        };
        if let Err(e) = written {
            tracing::error!(
                "cannot mark job {} finished: {e}; it will run again",
                c.name.display()
            );
        }
        if c.locked {
            if let Err(e) = lock_byte(&seg.file, c.off, libc::F_UNLCK) {
                tracing::warn!("cannot unlock job {}: {e}", c.name.display());
            }
        }
        seg.checked = false;
        if let Finish::Later(at) = how {
            self.later.insert((at, c.seg, c.off));
        }
    }

    /// Removes the segments that are finished: sealed (no writer), every
    /// record done or set aside. A damaged one is renamed `.invalid_...`
    /// once the records before the damage are finished.
    pub(crate) fn collect(&mut self) {
        let mut gone = Vec::new();
        for seg in &mut self.segs {
            let name = &seg.name;
            if !seg.eof || seg.checked {
                continue;
            }
            seg.checked = true;
            match byte_held(&seg.file, 0) {
                Ok(false) => {}
                Ok(true) => continue,
                Err(e) => {
                    tracing::warn!("cannot look at the writer of spool journal {name}: {e}");
                    continue;
                }
            }
            let whole = match fs::read(&seg.path) {
                Ok(d) => d,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    gone.push(name.clone());
                    continue;
                }
                Err(e) => {
                    tracing::warn!("cannot read spool journal {name}: {e}");
                    continue;
                }
            };
            match summarize(&whole) {
                Summary {
                    pending: 0,
                    damaged: None,
                    ..
                } => {
                    if let Err(e) = remove_segment(&self.dir, name) {
                        tracing::warn!("cannot remove finished spool journal {name}: {e}");
                        continue;
                    }
                    gone.push(name.clone());
                }
                Summary {
                    pending: 0,
                    damaged: Some(at),
                    ..
                } => {
                    let to = seg.path.with_file_name(format!(
                        "{}{}",
                        dir::INVALID_PREFIX,
                        name.trim_start_matches('.')
                    ));
                    match fs::rename(&seg.path, &to) {
                        Ok(()) => {
                            tracing::error!(
                                "spool journal {name}, damaged at byte {at}, set aside as {}",
                                to.display()
                            );
                            let _ = remove_segment(&self.dir, name);
                            gone.push(name.clone());
                        }
                        Err(e) => tracing::warn!("cannot set aside spool journal {name}: {e}"),
                    }
                }
                _ => {}
            }
        }
        self.segs.retain(|s| !gone.contains(&s.name));
    }
}

/// Claims the record at `off` of `seg` (its payload in hand): its first
/// byte locked (unless `alone`), then its state read again under the lock
/// (another spooler may have finished it since it was read).
fn claim(
    seg: &Seg,
    off: u64,
    payload: &[u8],
    alone: bool,
    now_ms: u64,
) -> io::Result<Option<Claimed>> {
    if !alone {
        if !lock_byte(&seg.file, off, libc::F_WRLCK)? {
            return Ok(None);
        }
        let mut head = [0u8; RECORD_HEADER];
        let fresh = seg
            .file
            .read_exact_at(&mut head, off)
            .map(|()| Header::decode(&head));
        match fresh {
            Ok(Ok(h)) if h.runnable(now_ms) => {}
            other => {
                lock_byte(&seg.file, off, libc::F_UNLCK)?;
                // A read error is the caller's; a record that is not (or
                // no longer) runnable is simply not claimed.
                other.map(drop)?;
                return Ok(None);
            }
        }
    }
    Ok(Some(Claimed {
        seg: seg.name.clone(),
        off,
        locked: !alone,
        name: job_path(&seg.path, off),
        payload: payload.to_vec(),
    }))
}

/// What a whole segment holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Summary {
    /// Records to run (waiting or later), with their offsets.
    pub(crate) pending: usize,
    pub(crate) offsets: Vec<u64>,
    /// Where it is damaged, if it is.
    pub(crate) damaged: Option<u64>,
}

/// Reads a whole segment's records. Pure.
pub(crate) fn summarize(data: &[u8]) -> Summary {
    let mut s = Summary::default();
    if data.len() < SEGMENT_HEADER as usize || &data[..8] != MAGIC {
        s.damaged = Some(0);
        return s;
    }
    let mut pos = SEGMENT_HEADER as usize;
    while pos < data.len() {
        match parse(&data[pos..]) {
            Parsed::Record(h) => {
                if !h.state.finished() {
                    s.pending += 1;
                    s.offsets.push(pos as u64);
                }
                pos += RECORD_HEADER + h.len as usize;
            }
            // A record cut short by a crash.
            Parsed::Incomplete | Parsed::Damaged(_) => {
                s.damaged = Some(pos as u64);
                break;
            }
        }
    }
    s
}

/// The waiting jobs of `dir`'s segments, oldest segment first.
pub(crate) fn waiting(dir: &Path, names: &[String]) -> Vec<PathBuf> {
    let mut segs: Vec<&String> = names.iter().filter(|n| is_segment(n)).collect();
    segs.sort();
    let mut out = Vec::new();
    for name in segs {
        let path = dir.join(name);
        if let Ok(data) = fs::read(&path) {
            out.extend(
                summarize(&data)
                    .offsets
                    .into_iter()
                    .map(|o| job_path(&path, o)),
            );
        }
    }
    out
}

/// The job at `off` of segment `seg`, without claiming it: `Ok(None)`
/// when the segment is gone or the job finished.
pub(crate) fn read_job(seg: &Path, off: u64) -> io::Result<Option<Vec<u8>>> {
    let file = match File::open(seg) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut head = [0u8; RECORD_HEADER];
    if off < SEGMENT_HEADER {
        return Err(io::Error::other(format!(
            "offset {off} is inside the journal's header"
        )));
    }
    file.read_exact_at(&mut head, off)?;
    let h = Header::decode(&head).map_err(|why| {
        io::Error::other(format!("no journal record starts at byte {off}: {why}"))
    })?;
    if h.state.finished() {
        return Ok(None);
    }
    let mut payload = vec![0u8; h.len as usize];
    file.read_exact_at(&mut payload, off + RECORD_HEADER as u64)?;
    Ok(Some(payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        super::super::test_dir(&format!("journal-{tag}"))
    }

    fn names(dir: &Path) -> Vec<String> {
        dir::list_all(dir).unwrap()
    }

    #[test]
    fn records_parse_back_and_partial_ones_wait() {
        let mut buf = Vec::new();
        encode_record(b"hello", &mut buf);
        let Parsed::Record(h) = parse(&buf) else {
            panic!("not a record")
        };
        assert_eq!((h.state, h.len, h.not_before_ms), (State::Waiting, 5, 0));
        for cut in 0..buf.len() {
            assert_eq!(parse(&buf[..cut]), Parsed::Incomplete, "cut at {cut}");
        }
        assert!(matches!(parse(b"\0\0\0\0"), Parsed::Damaged(_)));
        let mut big = buf.clone();
        big[4..8].copy_from_slice(&(MAX_JOB as u32 + 1).to_le_bytes());
        assert!(matches!(parse(&big), Parsed::Damaged(w) if w.contains("at most")));
        let mut odd = buf;
        odd[1] = 9;
        assert!(matches!(parse(&odd), Parsed::Damaged(w) if w.contains("state")));
    }

    #[test]
    fn job_names_split_back_into_segment_and_offset() {
        let seg = Path::new("/var/spool/.journal_00000000000000000001_42");
        let p = job_path(seg, 4096);
        assert_eq!(split(&p), Some((seg.to_path_buf(), 4096)));
        assert_eq!(split(Path::new("/var/spool/job_1")), None);
        assert_eq!(split(seg), None);
        assert!(is_segment(".journal_1_2") && !is_segment(".journal_1_2#16"));
    }

    #[test]
    fn two_readers_never_hold_one_record_and_a_finished_segment_goes() {
        let d = tmpdir("claims");
        let j = Journal::default();
        let sync = GroupSync::default();
        let jobs: Vec<Vec<u8>> = (0..3).map(|i| format!("job{i}").into_bytes()).collect();
        let refs: Vec<&[u8]> = jobs.iter().map(Vec::as_slice).collect();
        let paths = j.append(&d, &refs, true, &sync).unwrap();
        assert_eq!(paths.len(), 3);
        let listed = names(&d);
        assert_eq!(waiting(&d, &listed), paths);
        let (seg, off) = split(&paths[1]).unwrap();
        assert_eq!(read_job(&seg, off).unwrap().unwrap(), b"job1");

        let (mut a, mut b) = (Reader::new(&d, false), Reader::new(&d, false));
        a.scan(&listed);
        b.scan(&listed);
        let now = now_ms();
        let first = a.next(now).unwrap();
        assert_eq!(first.payload, b"job0");
        // b skips the record a holds.
        let second = b.next(now).unwrap();
        assert_eq!(second.payload, b"job1");
        a.finish(first, Finish::Done);
        b.finish(second, Finish::Later(now + 60_000));
        let third = a.next(now).unwrap();
        assert_eq!(third.payload, b"job2");
        a.finish(third, Finish::Done);
        assert!(a.next(now).is_none());
        // job1 waits for its time; the segment is kept while its writer
        // lives, and while job1 is pending.
        assert_eq!(waiting(&d, &names(&d)).len(), 1);
        a.collect();
        assert!(seg.exists());
        drop(j);
        a.collect();
        assert!(seg.exists(), "job1 is still to run");
        b.promote(now + 60_000);
        let retried = b.next(now + 60_000).unwrap();
        assert_eq!(retried.payload, b"job1");
        b.finish(retried, Finish::Done);
        assert!(b.next(now + 60_000).is_none());
        let link = link_path(&d, &seg.file_name().unwrap().to_string_lossy());
        assert!(link.exists(), "spoolers write through the second name");
        b.collect();
        assert!(!seg.exists(), "sealed and finished: removed");
        assert!(!link.exists(), "with its second name");
        assert_eq!(read_job(&seg, off).unwrap(), None);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_damaged_segment_runs_up_to_the_damage_then_is_set_aside() {
        let d = tmpdir("damaged");
        let j = Journal::default();
        let sync = GroupSync::default();
        j.append(&d, &[b"good"], false, &sync).unwrap();
        let name = names(&d).into_iter().find(|n| is_segment(n)).unwrap();
        OpenOptions::new()
            .append(true)
            .open(d.join(&name))
            .unwrap()
            .write_all(b"garbage after the good record")
            .unwrap();
        drop(j);
        let mut r = Reader::new(&d, true);
        r.scan(&names(&d));
        let now = now_ms();
        let c = r.next(now).unwrap();
        assert_eq!(c.payload, b"good");
        r.finish(c, Finish::Done);
        assert!(r.next(now).is_none(), "nothing past the damage runs");
        r.collect();
        let left = names(&d);
        assert!(!left.contains(&name), "{left:?}");
        assert!(
            left.contains(&format!(".invalid_{}", name.trim_start_matches('.'))),
            "{left:?}"
        );
        fs::remove_dir_all(&d).unwrap();
    }

    proptest::proptest! {
        #[test]
        fn reading_any_bytes_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..96)) {
            let _ = parse(&data);
            let mut seg = MAGIC.to_vec();
            seg.extend_from_slice(&[0; 8]);
            seg.extend_from_slice(&data);
            let _ = summarize(&seg);
            let _ = summarize(&data);
        }
    }

    #[test]
    fn a_torn_tail_is_reported_where_it_starts() {
        let d = tmpdir("torn");
        let j = Journal::default();
        let sync = GroupSync::default();
        j.append(&d, &[b"one"], false, &sync).unwrap();
        let seg = d.join(names(&d).into_iter().find(|n| is_segment(n)).unwrap());
        let len = fs::metadata(&seg).unwrap().len();
        // A torn tail, as a crash would leave it.
        OpenOptions::new()
            .append(true)
            .open(&seg)
            .unwrap()
            .write_all(&[RECORD_MAGIC, 0, 0, 0, 99])
            .unwrap();
        let s = summarize(&fs::read(&seg).unwrap());
        assert_eq!((s.pending, s.damaged), (1, Some(len)));
        fs::remove_dir_all(&d).unwrap();
    }
}
