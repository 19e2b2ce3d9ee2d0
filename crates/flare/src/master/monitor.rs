//! File monitors on one inotify descriptor.
//!
//! A file is watched through its parent directory, filtered by its name:
//! that one watch sees it written, created, removed and replaced by a
//! rename (how editors save), and sees a missing file appear. A directory
//! gets a watch of its own (and, when recursive, one per subdirectory,
//! added as they appear) plus the parent watch for its name, so its removal
//! and re-creation are seen too.
//!
//! A burst of events is coalesced: the first event fires at once and opens
//! a window (100 ms by default); events inside the window fire once more
//! when it closes. So a burst of any length raises at most one signal per
//! window plus the first.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};

use crate::error::{Error, RegistrationError, Result};

/// Coalescing window for bursts of file events.
pub(crate) const WINDOW: Duration = Duration::from_millis(100);

fn mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MODIFY
        | WatchMask::CLOSE_WRITE
        | WatchMask::ATTRIB
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
}

/// Which events of a watch concern a monitor.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Filter {
    /// Events about this entry of the watched directory.
    Name(OsString),
    /// Every event of the watched directory.
    All,
}

struct Watch {
    wd: WatchDescriptor,
    /// The directory watched (the path it was first added under).
    dir: PathBuf,
    users: Vec<(u32, Filter)>,
}

struct Monitor {
    path: PathBuf,
    recursive: bool,
    window_end: Option<Instant>,
    dirty: bool,
}

/// Every file monitor of the master.
#[derive(Default)]
pub(super) struct Monitors {
    inotify: Option<Inotify>,
    /// By watch descriptor number.
    watches: HashMap<i32, Watch>,
    monitors: HashMap<u32, Monitor>,
    buf: Vec<u8>,
}

impl Monitors {
    /// Starts watching `path` for source `id`. The path must exist, or its
    /// parent directory must.
    pub(super) fn add(&mut self, id: u32, path: &Path, recursive: bool) -> Result<PathBuf> {
        let path = std::path::absolute(path).map_err(|e| {
            Error::from(RegistrationError::InvalidSource(format!(
                "{}: {e}",
                path.display()
            )))
        })?;
        let (parent, name) = match (path.parent(), path.file_name()) {
            (Some(p), Some(n)) => (p.to_path_buf(), n.to_os_string()),
            _ => {
                return Err(Error::from(RegistrationError::InvalidSource(format!(
                    "cannot monitor {}: it has no parent directory to watch",
                    path.display()
                ))));
            }
        };
        if !parent.is_dir() {
            return Err(Error::from(RegistrationError::InvalidSource(format!(
                "cannot monitor {}: neither it nor its parent directory {} exists",
                path.display(),
                parent.display()
            ))));
        }
        if self.inotify.is_none() {
            let ino =
                Inotify::init().map_err(|e| Error::io("creating the inotify descriptor", e))?;
            self.inotify = Some(ino);
        }
        self.watch(id, &parent, Filter::Name(name))?;
        if path.is_dir() {
            self.watch_tree(id, &path, recursive);
        }
        self.monitors.insert(
            id,
            Monitor {
                path: path.clone(),
                recursive,
                window_end: None,
                dirty: false,
            },
        );
        Ok(path)
    }

    fn watch(&mut self, id: u32, dir: &Path, filter: Filter) -> Result<()> {
        let Some(ino) = self.inotify.as_ref() else {
            return Ok(());
        };
        let wd = ino.watches().add(dir, mask()).map_err(|e| {
            Error::from(RegistrationError::InvalidSource(format!(
                "cannot watch {}: {e}",
                dir.display()
            )))
        })?;
        let w = self
            .watches
            .entry(wd.get_watch_descriptor_id())
            .or_insert_with(|| Watch {
                wd,
                dir: dir.to_path_buf(),
                users: Vec::new(),
            });
        if !w.users.iter().any(|(i, f)| *i == id && *f == filter) {
            w.users.push((id, filter));
        }
        Ok(())
    }

    /// Watches a directory (and, if recursive, every directory below it).
    /// Failures below the top are logged, not fatal: a subdirectory may
    /// vanish while we walk.
    fn watch_tree(&mut self, id: u32, dir: &Path, recursive: bool) {
        if let Err(e) = self.watch(id, dir, Filter::All) {
            tracing::warn!("file monitor #{id}: {e}");
            return;
        }
        if !recursive {
            return;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                self.watch_tree(id, &e.path(), true);
            }
        }
    }

    /// Stops a monitor; watches nobody uses any more are removed.
    pub(super) fn remove(&mut self, id: u32) {
        self.monitors.remove(&id);
        let Some(ino) = self.inotify.as_ref() else {
            return;
        };
        self.watches.retain(|_, w| {
            w.users.retain(|(i, _)| *i != id);
            if w.users.is_empty() {
                let _ = ino.watches().remove(w.wd.clone());
                false
            } else {
                true
            }
        });
    }

    pub(super) fn fd(&self) -> Option<RawFd> {
        self.inotify.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Reads every pending event; returns the monitors that fire now.
    pub(super) fn read(&mut self, now: Instant) -> Vec<u32> {
        let mut touched: Vec<u32> = Vec::new();
        let mut new_dirs: Vec<(u32, PathBuf, bool)> = Vec::new();
        let mut gone: Vec<i32> = Vec::new();
        let mut buf = std::mem::take(&mut self.buf);
        if buf.is_empty() {
            buf = vec![0; 64 * 1024];
        }
        while let Some(ino) = self.inotify.as_mut() {
            let events = match ino.read_events(&mut buf) {
                Ok(ev) => ev,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::error!("file monitors: reading inotify failed: {e}");
                    break;
                }
            };
            for ev in events {
                if ev.mask.contains(EventMask::Q_OVERFLOW) {
                    // Events were lost: tell everyone something changed.
                    touched.extend(self.monitors.keys().copied());
                    continue;
                }
                let wdn = ev.wd.get_watch_descriptor_id();
                if ev.mask.contains(EventMask::IGNORED) {
                    gone.push(wdn);
                }
                let Some(w) = self.watches.get(&wdn) else {
                    continue;
                };
                let appeared = ev.mask.contains(EventMask::ISDIR)
                    && ev.mask.intersects(EventMask::CREATE | EventMask::MOVED_TO);
                for (id, filter) in &w.users {
                    let concerns = match filter {
                        Filter::All => true,
                        Filter::Name(n) => ev.name.is_some_and(|name| name == n.as_os_str()),
                    };
                    if !concerns || ev.mask == EventMask::IGNORED {
                        continue;
                    }
                    touched.push(*id);
                    let Some(m) = self.monitors.get(id) else {
                        continue;
                    };
                    if appeared {
                        let dir = match filter {
                            // The monitored path itself appeared as a directory.
                            Filter::Name(_) => Some(m.path.clone()),
                            // A subdirectory appeared in a recursive tree.
                            Filter::All if m.recursive => ev.name.map(|n| w.dir.join(n)),
                            Filter::All => None,
                        };
                        if let Some(d) = dir {
                            new_dirs.push((*id, d, m.recursive));
                        }
                    }
                }
            }
        }
        self.buf = buf;
        for wdn in gone {
            self.watches.remove(&wdn);
        }
        for (id, dir, recursive) in new_dirs {
            self.watch_tree(id, &dir, recursive);
        }
        touched.sort_unstable();
        touched.dedup();
        touched
            .into_iter()
            .filter(|&id| self.touch(id, now))
            .collect()
    }

    /// An event for a monitor: true when it fires now.
    fn touch(&mut self, id: u32, now: Instant) -> bool {
        let Some(m) = self.monitors.get_mut(&id) else {
            return false;
        };
        match m.window_end {
            Some(end) if now < end => {
                m.dirty = true;
                false
            }
            _ => {
                m.window_end = Some(now + WINDOW);
                m.dirty = false;
                true
            }
        }
    }

    /// Closes the windows that ended; returns the monitors that had events
    /// inside theirs and so fire again now.
    pub(super) fn expire(&mut self, now: Instant) -> Vec<u32> {
        let mut fire = Vec::new();
        for (id, m) in &mut self.monitors {
            if m.window_end.is_some_and(|end| now >= end) {
                if m.dirty {
                    m.dirty = false;
                    m.window_end = Some(now + WINDOW);
                    fire.push(*id);
                } else {
                    m.window_end = None;
                }
            }
        }
        fire
    }

    /// The earliest open window end.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.monitors.values().filter_map(|m| m.window_end).min()
    }
}
