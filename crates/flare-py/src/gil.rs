//! A lasting Python thread state for flare's dispatcher thread.
//!
//! Handlers run on the dispatcher, a thread Python did not start. Taking
//! the GIL there with `PyGILState_Ensure` creates a thread state, and
//! releasing it destroys that state again when nothing else holds it: two
//! allocations and a round of bookkeeping per signal, which made a Python
//! handler cost several times what it costs under uWSGI. Keeping one
//! thread state for the thread's whole life leaves each handler call with
//! just taking and dropping the GIL.

use std::cell::Cell;

thread_local! {
    static KEPT: Cell<bool> = const { Cell::new(false) };
}

/// Gives the calling thread a Python thread state that lives as long as
/// the thread; the GIL is not held on return. Cheap after the first call.
pub(crate) fn keep_thread_state() {
    KEPT.with(|kept| {
        if kept.get() {
            return;
        }
        // SAFETY: the interpreter is initialised (this runs in a process
        // forked from a running CPython, after PyOS_AfterFork_Child), and
        // this thread does not hold the GIL (handlers are called without
        // it). PyGILState_Ensure creates this thread's state and takes the
        // GIL; its count stays at one for good, so later Ensure/Release
        // pairs (Python::attach) never destroy the state. PyEval_SaveThread
        // then drops the GIL, keeping the state, for the next Ensure.
        unsafe {
            let _ = pyo3::ffi::PyGILState_Ensure();
            let _ = pyo3::ffi::PyEval_SaveThread();
        }
        kept.set(true);
    });
}
