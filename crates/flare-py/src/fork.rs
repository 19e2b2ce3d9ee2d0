//! CPython's fork protocol, called by the master around every fork.

use pyo3::prelude::*;

/// Flushes `sys.stdout` and `sys.stderr` (errors ignored: a closed stream
/// has nothing to lose). Before a fork, so that a child does not write out
/// again what the master had buffered; at a child's end, because children
/// leave with `_exit`.
pub(crate) fn flush_streams(py: Python<'_>) {
    if let Ok(sys) = py.import("sys") {
        for name in ["stdout", "stderr"] {
            if let Ok(stream) = sys.getattr(name) {
                let _ = stream.call_method0("flush");
            }
        }
    }
}

/// Before `fork()`: Python's streams are flushed, then CPython takes its
/// import lock and runs `os.register_at_fork` "before" callbacks.
pub(crate) fn before() {
    Python::attach(flush_streams);
    // SAFETY: the master calls this on the thread that runs `Group.run()`,
    // which holds the GIL for the whole run (the master never releases it:
    // no other Python thread runs in the master), as PyOS_BeforeFork needs.
    unsafe { pyo3::ffi::PyOS_BeforeFork() }
}

/// In the master after `fork()`.
pub(crate) fn parent() {
    // SAFETY: same thread, GIL held, right after a fork it prepared with
    // PyOS_BeforeFork: the documented pairing.
    unsafe { pyo3::ffi::PyOS_AfterFork_Parent() }
}

/// In the child after `fork()`: CPython reinitialises its locks and
/// threading state for the one thread that exists now.
pub(crate) fn child() {
    // SAFETY: the only thread of the new process, the one that called
    // fork() while holding the GIL, right after the fork: the documented
    // pairing with PyOS_BeforeFork.
    unsafe { pyo3::ffi::PyOS_AfterFork_Child() }
}
