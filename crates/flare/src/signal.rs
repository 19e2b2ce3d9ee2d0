//! The signal API, named after `uwsgiconf.runtime.signals`.
//!
//! Each call works out where it runs: in a master before `run()` it acts on
//! the master's table directly; in a child it talks to the master over the
//! child's channels and reads the shared-memory mirror.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Acquire;
use std::time::Duration;

use crate::child;
use crate::error::{Error, RegistrationError, Result, TrySendError};
use crate::handlers::{self, SignalDescription};
use crate::master;
use crate::origin::Received;
use crate::proto::{Reply, Request};
use crate::signal_num;
use crate::table::MirrorEntry;
use crate::target::IntoTarget;

/// A uWSGI signal: a number from 0 to 255 (uwsgiconf `Signal`).
///
/// ```no_run
/// use flare::Signal;
///
/// let sig = Signal::auto()?;                      // uwsgiconf: Signal()
/// sig.register_handler("workers", |rx| {          // @sig.register_handler(target="workers")
///     println!("signal {} from {}", rx.num, rx.origin);
/// })?;
/// sig.send()?;                                    // sig.send()
/// # Ok::<(), flare::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Signal {
    num: u8,
}

impl Signal {
    /// The signal with this number (uwsgiconf `Signal(num)`).
    pub const fn new(num: u8) -> Signal {
        Signal { num }
    }

    /// The first free number, reserved atomically in the master so no other
    /// process can take it before this one registers it (uwsgiconf
    /// `Signal()`, which only looks the number up).
    ///
    /// # Errors
    ///
    /// [`RegistrationError::NoSignalAvailable`] when all 256 numbers are
    /// taken, [`Error::NoRuntime`] outside a flare process or in a running
    /// master, [`Error::MasterGone`] when the master has gone away.
    pub fn auto() -> Result<Signal> {
        let num = match child::context() {
            Some(ctx) => match ctx.request(&Request::Reserve)? {
                Reply::Num(n) => n,
                Reply::Err(e) => return Err(e.into()),
                other => {
                    return Err(Error::Protocol(format!(
                        "reserve answered without a number: {other:?}"
                    )));
                }
            },
            None => master::with_setup(|s| s.reserve())??,
        };
        Ok(Signal { num })
    }

    /// The number (uwsgiconf `int(signal)`).
    pub const fn num(self) -> u8 {
        self.num
    }

    /// Whether the number is registered anywhere in the group (uwsgiconf
    /// `signal.registered`). False outside a flare process.
    pub fn registered(self) -> bool {
        match child::context() {
            Some(ctx) => mirror_entry(ctx, self.num).registered,
            None => master::with_setup(|s| s.table.is_registered(self.num)).unwrap_or(false),
        }
    }

    /// Who registered or reserved the number: [`ProcId::MASTER`] for the
    /// master, the child (or attached process) otherwise; `None` when it is
    /// free, or outside a flare process. A language binding uses it to
    /// tell numbers its own kind of process registered (the same decorator
    /// in every attached web worker) from numbers held elsewhere.
    ///
    /// ```no_run
    /// use flare::{ProcId, Signal};
    /// if Signal::new(17).owner() == Some(ProcId::MASTER) {
    ///     println!("17 was registered before the children were forked");
    /// }
    /// ```
    pub fn owner(self) -> Option<crate::ProcId> {
        match child::context() {
            Some(ctx) => mirror_entry(ctx, self.num).owner,
            None => master::with_setup(|s| {
                s.table.owner(self.num).map(|o| match o {
                    crate::table::Owner::Master => crate::ProcId::MASTER,
                    crate::table::Owner::Child(slot) => s.table.topology().proc_at(slot),
                })
            })
            .ok()
            .flatten(),
        }
    }

    /// Registers `handler` for this signal on `target` (uwsgiconf
    /// `signal.register_handler(target=...)`; default target `worker`).
    ///
    /// In the master before `run()`, every child inherits the handler. In a
    /// child, only that child can run it; other children registering the
    /// same number and target join it; another target is a
    /// [`RegistrationError::Conflict`]. The README lists every rule.
    ///
    /// # Errors
    ///
    /// [`RegistrationError::InvalidTarget`] for a target that is not valid
    /// in this group, [`RegistrationError::Unrunnable`],
    /// [`RegistrationError::AlreadyRegistered`] and
    /// [`RegistrationError::Conflict`] as the rules above say;
    /// [`Error::NoRuntime`] outside a flare process or in a running master,
    /// [`Error::MasterGone`] when the master has gone away.
    pub fn register_handler<T, F>(self, target: T, handler: F) -> Result<()>
    where
        T: IntoTarget,
        F: Fn(Received) + Send + Sync + 'static,
    {
        self.register_handler_then(target, handler, |_| {})
    }

    /// [`Signal::register_handler`], then `callback(self)` once the
    /// registration is in place (uwsgiconf's `callback=` argument).
    ///
    /// # Errors
    ///
    /// As [`Signal::register_handler`]; `callback` is not called then.
    pub fn register_handler_then<T, F, C>(self, target: T, handler: F, callback: C) -> Result<()>
    where
        T: IntoTarget,
        F: Fn(Received) + Send + Sync + 'static,
        C: FnOnce(Signal),
    {
        let target = target.into_target()?;
        let num = self.num;
        let desc = SignalDescription {
            num,
            target: target.clone(),
            func: Arc::new(handler),
        };
        match child::context() {
            Some(ctx) => {
                // The grammar and the group are checked here for a clear
                // error without a round trip; the master checks again.
                target.resolve(&ctx.topo)?;
                // Installed first: the master may route the signal here as
                // soon as it accepts, before the reply is read.
                let previous = handlers::install(desc);
                let req = Request::Register {
                    num,
                    target: target.to_string(),
                };
                match ctx.request(&req) {
                    Ok(Reply::Ok) => {}
                    Ok(Reply::Err(e)) => {
                        handlers::restore(num, previous);
                        return Err(e.into());
                    }
                    Ok(other) => {
                        handlers::restore(num, previous);
                        return Err(Error::Protocol(format!("unexpected reply {other:?}")));
                    }
                    Err(e) => {
                        handlers::restore(num, previous);
                        return Err(e);
                    }
                }
            }
            None => {
                master::with_setup(|s| s.register(num, &target))??;
                handlers::install(desc);
            }
        }
        tracing::debug!("signal {num} registered for {target}");
        callback(self);
        Ok(())
    }

    /// Raises the signal: the master routes it by its target (uwsgiconf
    /// `signal.send()`). Waits while the channel to the master is full;
    /// never drops. In a master before `run()`, the signal is raised when
    /// `run()` starts.
    ///
    /// # Errors
    ///
    /// [`Error::NoRuntime`] outside a flare process or in a running master,
    /// [`Error::MasterGone`] when the master has gone away.
    pub fn send(self) -> Result<()> {
        match child::context() {
            Some(ctx) => ctx.raise(self.num, true).map(drop),
            None => master::with_setup(|s| s.raised.push(self.num)),
        }
    }

    /// Raises the signal on the remote node at `addr` (uwsgiconf
    /// `signal.send(remote=addr)`; uWSGI `uwsgi --signal addr,num`):
    /// [`Error::Rejected`] when the node refuses it, [`Error::Unreachable`]
    /// when it cannot be reached or does not answer within 4 s. Works in any
    /// process, flare or not.
    ///
    /// A fleet target (`fleet:workers`, `node:b:worker1`, `any-node:worker`)
    /// instead of an address sends through the group's fleet
    /// ([`crate::fleet::send`]): `Ok` when every live node it went to
    /// accepted it.
    ///
    /// # Errors
    ///
    /// [`Error::Rejected`], [`Error::Unreachable`], and [`Error::Config`]
    /// when `addr` is not an address; for a fleet target [`Error::Fleet`],
    /// whose text says which nodes refused or did not answer.
    pub fn send_remote(self, addr: &str) -> Result<()> {
        if crate::fleet::FleetTarget::looks_like(addr) {
            return crate::fleet::send_strict(addr, self.num);
        }
        crate::remote::send_remote(addr, self.num, crate::remote::DEFAULT_TIMEOUT)
    }

    /// Like [`Signal::send`], but never waits.
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`] when the channel to the master is full (the
    /// signal is not sent; `send()` would wait), [`TrySendError::Closed`]
    /// when no master takes it: the master is gone, or this process is
    /// neither one of its children nor a master before `run()`.
    pub fn try_send(self) -> Result<(), TrySendError> {
        let num = self.num;
        match child::context() {
            Some(ctx) => match ctx.raise(num, false) {
                Ok(true) => Ok(()),
                Ok(false) => Err(TrySendError::Full(num)),
                Err(e) => {
                    tracing::debug!("signal {num} not sent: {}", e.report());
                    Err(TrySendError::Closed(num))
                }
            },
            None => {
                master::with_setup(|s| s.raised.push(num)).map_err(|_| TrySendError::Closed(num))
            }
        }
    }

    /// Blocks until this process has received this signal and run its
    /// handler (uwsgiconf `signal.wait()`). Only in a child, and not from
    /// inside a handler.
    ///
    /// As in uWSGI, a signal is not missed because it arrived before the
    /// call: `wait()` returns at once when the signal was received since
    /// this thread's previous `wait()` for it returned (or since the process
    /// started). Several arrivals in between wake one `wait()`.
    ///
    /// # Errors
    ///
    /// [`Error::Wait`] outside a child (the master receives no signals) or
    /// from inside a handler, [`Error::MasterGone`] when the master has gone
    /// away.
    pub fn wait(self) -> Result<Received> {
        waiting(Some(self.num), None)?.ok_or_else(|| Error::Wait("woke without a signal".into()))
    }

    /// [`Signal::wait`] with a limit: `Ok(None)` when it passes.
    ///
    /// # Errors
    ///
    /// As [`Signal::wait`].
    pub fn wait_timeout(self, timeout: Duration) -> Result<Option<Received>> {
        waiting(Some(self.num), Some(timeout))
    }
}

/// Blocks until this process receives any signal (uWSGI `signal_wait()`
/// without a number).
///
/// # Errors
///
/// As [`Signal::wait`].
pub fn wait_any() -> Result<Received> {
    waiting(None, None)?.ok_or_else(|| Error::Wait("woke without a signal".into()))
}

/// [`wait_any`] with a limit: `Ok(None)` when it passes.
///
/// # Errors
///
/// As [`Signal::wait`].
pub fn wait_any_timeout(timeout: Duration) -> Result<Option<Received>> {
    waiting(None, Some(timeout))
}

fn waiting(num: Option<u8>, timeout: Option<Duration>) -> Result<Option<Received>> {
    match child::context() {
        Some(ctx) => ctx.wait(num, timeout),
        None => Err(Error::Wait(
            "only a child process receives signals; the master routes them".into(),
        )),
    }
}

/// The first signal number neither registered nor reserved (uwsgiconf
/// `get_available_num()`). Only looks; [`Signal::auto`] also reserves.
///
/// # Errors
///
/// [`RegistrationError::NoSignalAvailable`] when all 256 are taken,
/// [`Error::NoRuntime`] outside a flare process or in a running master.
pub fn get_available_num() -> Result<u8> {
    match child::context() {
        Some(ctx) => (0..=255u8)
            .find(|&n| !mirror_entry(ctx, n).taken)
            .ok_or(RegistrationError::NoSignalAvailable.into()),
        None => master::with_setup(|s| s.table.first_available())?
            .ok_or(RegistrationError::NoSignalAvailable.into()),
    }
}

/// The last signal this process received (uwsgiconf `get_last_received()`);
/// `None` before the first.
pub fn get_last_received() -> Option<Signal> {
    last_received().map(|rx| Signal::new(rx.num))
}

/// The signal whose handler runs in this process now, if any (so that,
/// inside a handler, uWSGI's `signal_received()` names the signal being
/// handled).
pub fn current_signal() -> Option<Signal> {
    let ctx = child::context()?;
    let current = ctx
        .shm
        .slot(ctx.slot)
        .current
        .load(std::sync::atomic::Ordering::Acquire);
    (current != 0).then(|| Signal::new((current - 1) as u8))
}

/// The last signal this process received, with who raised it.
pub fn last_received() -> Option<Received> {
    child::context().and_then(|ctx| ctx.last_received())
}

/// The registrations this process made or inherited from the master
/// (uwsgiconf `registry_signals` / `REGISTERED_SIGNALS`), by number.
pub fn registry_signals() -> Vec<SignalDescription> {
    handlers::all()
}

/// Asks the master to shut the whole group down gracefully (uWSGI
/// `uwsgi.stop()`): queued signals are handled, then every child is ended.
///
/// # Errors
///
/// [`Error::NoRuntime`] outside a flare process or in a running master,
/// [`Error::MasterGone`] when the master has gone away.
pub fn stop() -> Result<()> {
    match child::context() {
        Some(ctx) => match ctx.request(&Request::Stop)? {
            Reply::Err(e) => Err(e.into()),
            _ => Ok(()),
        },
        None => Err(Error::NoRuntime(
            "stop() is for child processes; the master stops on SIGTERM or SIGINT",
        )),
    }
}

/// Blocks the calling thread for good: for an entry function that has
/// nothing left to do but let its process serve signals until shutdown.
/// In a spooler with a spool directory, this thread runs the spool jobs.
pub fn serve_forever() -> ! {
    crate::spool::serve_if_spooler();
    loop {
        std::thread::park();
    }
}

/// The pid of this group's master (uWSGI `masterpid()`): this process's
/// own in the master; the master's in a forked child and in an attached
/// process (which is not the master's child).
///
/// # Errors
///
/// [`Error::NoRuntime`] and [`Error::ForkedFromMember`], as [`whoami`].
pub fn master_pid() -> Result<u32> {
    match child::context() {
        Some(ctx) => ctx.own().map(|ctx| ctx.master_pid),
        None if master::is_master() => Ok(std::process::id()),
        None => Err(Error::NoRuntime(
            "not a flare process: build a master with Master::builder() first",
        )),
    }
}

/// Who this process is (the master or a child of the group).
///
/// Outside a flare process group it is [`Error::NoRuntime`]; in a process
/// forked from a member (by a handler or an entry function: it has the
/// member's memory but is not the member) it is
/// [`Error::ForkedFromMember`], so that it never claims the member's
/// identity.
///
/// # Errors
///
/// [`Error::NoRuntime`] and [`Error::ForkedFromMember`], as above.
pub fn whoami() -> Result<child::ProcessInfo> {
    match child::context() {
        Some(ctx) => ctx.own().map(|ctx| ctx.info),
        None if master::is_master() => Ok(child::ProcessInfo {
            role: crate::Role::Master,
            id: 0,
            pid: std::process::id(),
        }),
        None => Err(Error::NoRuntime(
            "not a flare process: build a master with Master::builder() first",
        )),
    }
}

fn mirror_entry(ctx: &child::ChildCtx, num: u8) -> MirrorEntry {
    MirrorEntry::decode(ctx.shm.table()[num as usize].load(Acquire), &ctx.topo)
}

impl From<Signal> for u8 {
    fn from(s: Signal) -> u8 {
        s.num
    }
}

impl From<u8> for Signal {
    fn from(num: u8) -> Signal {
        Signal { num }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.num.fmt(f)
    }
}

impl FromStr for Signal {
    type Err = Error;

    /// Parses a decimal number from 0 to 255; anything else (300, -1, x)
    /// is [`Error::BadNumber`], never a wrap-around.
    fn from_str(text: &str) -> Result<Signal> {
        signal_num::parse(text).map(Signal::new)
    }
}

impl TryFrom<i64> for Signal {
    type Error = Error;

    /// Any integer from 0 to 255; anything else is [`Error::BadNumber`].
    fn try_from(n: i64) -> Result<Signal> {
        signal_num::from_i64(n).map(Signal::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_parse_without_wrapping() {
        assert_eq!("0".parse::<Signal>().unwrap().num(), 0);
        assert_eq!(" 255 ".parse::<Signal>().unwrap().num(), 255);
        for bad in ["256", "300", "-1", "", "x", "1.5", "0x10"] {
            let e = bad.parse::<Signal>().unwrap_err();
            assert!(matches!(e, Error::BadNumber { .. }), "{bad}");
            assert!(e.to_string().contains("0 to 255"), "{e}");
        }
        assert!(Signal::try_from(256i64).is_err());
        assert!(Signal::try_from(-1i64).is_err());
        assert_eq!(u8::from(Signal::try_from(17i64).unwrap()), 17);
    }

    #[test]
    fn outside_a_group_calls_say_so() {
        assert!(!Signal::new(1).registered());
        assert!(matches!(get_available_num(), Err(Error::NoRuntime(_))));
        assert!(matches!(Signal::new(1).wait(), Err(Error::Wait(_))));
        assert!(get_last_received().is_none());
        assert!(matches!(whoami(), Err(Error::NoRuntime(_))));
        let e = Signal::new(3)
            .register_handler("workers", |_| {})
            .unwrap_err();
        assert!(e.to_string().contains("Master::builder()"), "{e}");
    }
}
