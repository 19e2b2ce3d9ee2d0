//! The handlers this process can run: its own registrations and those it
//! inherited from the master through `fork()`.

use std::sync::{Arc, PoisonError, RwLock};

use crate::origin::Received;
use crate::target::Target;

/// A signal handler: runs in the process the signal is routed to, one at a
/// time, in arrival order.
pub type Handler = Arc<dyn Fn(Received) + Send + Sync + 'static>;

/// A registration as this process knows it (uwsgiconf `SignalDescription`).
#[derive(Clone)]
pub struct SignalDescription {
    /// The signal number.
    pub num: u8,
    /// Where the signal is delivered.
    pub target: Target,
    /// The handler.
    pub func: Handler,
}

impl std::fmt::Debug for SignalDescription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalDescription")
            .field("num", &self.num)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

static LOCAL: RwLock<Vec<Option<SignalDescription>>> = RwLock::new(Vec::new());

/// Installs a handler; returns the one it replaced.
pub(crate) fn install(desc: SignalDescription) -> Option<SignalDescription> {
    let mut t = LOCAL.write().unwrap_or_else(PoisonError::into_inner);
    if t.len() < 256 {
        t.resize(256, None);
    }
    let num = desc.num as usize;
    t[num].replace(desc)
}

/// Puts back what was there before a refused registration.
pub(crate) fn restore(num: u8, previous: Option<SignalDescription>) {
    let mut t = LOCAL.write().unwrap_or_else(PoisonError::into_inner);
    if let Some(slot) = t.get_mut(num as usize) {
        *slot = previous;
    }
}

/// The handler for a number, if this process has one.
pub(crate) fn get(num: u8) -> Option<Handler> {
    let t = LOCAL.read().unwrap_or_else(PoisonError::into_inner);
    t.get(num as usize)?.as_ref().map(|d| d.func.clone())
}

/// Every registration this process made or inherited, by number.
pub(crate) fn all() -> Vec<SignalDescription> {
    let t = LOCAL.read().unwrap_or_else(PoisonError::into_inner);
    t.iter().flatten().cloned().collect()
}
