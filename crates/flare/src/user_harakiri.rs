//! Handler time limits set from code (uWSGI `uwsgi.set_user_harakiri(secs)`,
//! uwsgidecorators' `@harakiri`).
//!
//! A process sets a deadline in its own status slot in shared memory; the
//! master, which checks running handlers every 50 ms once any process of
//! the group has used a user limit, kills a process whose deadline passed
//! (after the stack dump signal, when one is configured:
//! [`crate::MasterBuilder::harakiri_stack_dump`]), counts the timeout and
//! respawns it. The deadline runs whatever the process does meanwhile (a
//! handler, a mule loop), as in uWSGI; setting 0 (`None`) clears it.

use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::proto::{Reply, Request};
use crate::shm::monotonic_ns;

/// Sets (`Some`) or clears (`None` or zero) this process's own time limit,
/// counted from now. Only in a flare child.
///
/// # Errors
///
/// [`Error::NoRuntime`] outside a flare child; the errors of the request
/// to the master (such as [`Error::MasterGone`]).
pub fn set_user_harakiri(limit: Option<Duration>) -> Result<()> {
    let ctx = crate::child::context().ok_or(Error::NoRuntime(
        "set_user_harakiri works in a flare child (worker, mule or spooler); the master \
         runs no handlers",
    ))?;
    let st = ctx.shm.slot(ctx.slot);
    let Some(limit) = limit.filter(|l| !l.is_zero()) else {
        st.user_harakiri_ns.store(0, Relaxed);
        return Ok(());
    };
    let deadline = monotonic_ns().saturating_add(limit.as_nanos().min(u64::MAX as u128) as u64);
    st.user_harakiri_ns.store(deadline.max(1), Relaxed);
    // The first use in the group tells the master to start checking.
    if ctx.shm.user_harakiri_used().swap(1, SeqCst) == 0 {
        if let Reply::Err(e) = ctx.request(&Request::UserHarakiri)? {
            return Err(e.into());
        }
    }
    Ok(())
}
