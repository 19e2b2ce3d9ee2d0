//! CPython's fork protocol, called by the master around every fork.

/// Before `fork()`: CPython takes its import lock and runs `os.register_at_fork`
/// "before" callbacks.
pub(crate) fn before() {
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
