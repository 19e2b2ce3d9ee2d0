//! What every process of the group is doing, read from shared memory by
//! any child (uWSGI `uwsgi.workers()`).

use std::sync::atomic::Ordering::Relaxed;

use crate::topology::ProcId;
use crate::topology::ProcState;

/// One process of the group, as its status slot shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessStatus {
    /// Role and id.
    pub proc: ProcId,
    /// Pid of the process in the slot now (0 while none runs).
    pub pid: u32,
    /// Its life state.
    pub state: ProcState,
    /// The signal whose handler runs now, if any.
    pub current: Option<u8>,
    /// Deliveries handled.
    pub handled: u64,
    /// Times the slot was forked again.
    pub respawns: u64,
}

/// Every process of the group (workers, mules, spoolers, in slot order).
/// Empty outside a flare child.
pub fn processes() -> Vec<ProcessStatus> {
    let Some(ctx) = crate::child::context() else {
        return Vec::new();
    };
    (0..ctx.topo.slots())
        .map(|slot| {
            let st = ctx.shm.slot(slot);
            let current = st.current.load(Relaxed);
            ProcessStatus {
                proc: ctx.topo.proc_at(slot),
                pid: st.pid.load(Relaxed),
                state: st.state(),
                current: (current != 0).then(|| (current - 1) as u8),
                handled: st.handled.load(Relaxed),
                respawns: st.respawns.load(Relaxed),
            }
        })
        .collect()
}
