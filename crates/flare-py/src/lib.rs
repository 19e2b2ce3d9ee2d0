//! `flare._flare`: the native core of the Python package.
//!
//! The Python modules (`flare`, `flare.runtime.*`, the `uwsgi` compatibility
//! module) are thin layers over these functions. The master runs holding
//! the GIL (no other Python thread runs in it) and forks with CPython's fork
//! protocol; in a child, handlers run on flare's dispatcher thread, taking
//! the GIL for each call, and every call that may block releases it.

mod fork;
mod gil;
mod spool;

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use flare::{
    Error, ForkHooks, Master, ProcessInfo, Received, RegistrationError, Role, Signal, Source,
};
use pyo3::exceptions::{
    PyConnectionError, PyOSError, PyRuntimeError, PySystemError, PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple};

pyo3::create_exception!(
    _flare,
    NoSignalAvailable,
    pyo3::exceptions::PyRuntimeError,
    "All 256 signal numbers are registered or reserved."
);

/// flare's errors as the Python exceptions uwsgiconf documents; the message
/// carries the causes too.
fn err(e: Error) -> PyErr {
    let text = e.report();
    match e {
        Error::Rejected { .. } => PyValueError::new_err(text),
        Error::Unreachable(_) => PyOSError::new_err(text),
        Error::Wait(_) => PySystemError::new_err(text),
        Error::Registration(RegistrationError::NoSignalAvailable) => {
            NoSignalAvailable::new_err(text)
        }
        Error::Registration(RegistrationError::Master(_)) => PyRuntimeError::new_err(text),
        Error::BadNumber { .. } | Error::Registration(_) | Error::Config(_) => {
            PyValueError::new_err(text)
        }
        Error::InvalidJob(_) | Error::BadLock { .. } => PyValueError::new_err(text),
        Error::Spool { .. } => PyOSError::new_err(text),
        // A fleet send that did not reach every live node, or could not
        // be sent: "unable to deliver", as for a remote node.
        Error::Fleet(_) => PyOSError::new_err(text),
        // Nothing listens there, or the master refused (its reason).
        Error::Attach { .. } => PyConnectionError::new_err(text),
        _ => PyRuntimeError::new_err(text),
    }
}

/// A signal number from Python: 0-255 or a clear ValueError.
fn num(n: i64) -> PyResult<u8> {
    Signal::try_from(n).map(Signal::num).map_err(err)
}

/// Entry callables by role, set after the app module is imported (the
/// master is built before, so that the app's registrations are the
/// master's). Read in the children, after fork.
static ENTRIES: Mutex<[Option<Py<PyAny>>; 3]> = Mutex::new([None, None, None]);

fn role_index(role: Role) -> usize {
    match role {
        Role::Worker | Role::Master | Role::Bridge => 0,
        Role::Mule => 1,
        Role::Spooler => 2,
    }
}

/// A child's life: its role's entry callable (the Python layer always sets
/// one: it runs the post-fork hooks, then the user's entry or
/// `serve_forever`).
fn run_entry(me: ProcessInfo) {
    let entry = Python::attach(|py| {
        ENTRIES
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(role_index(me.role))
            .and_then(|e| e.as_ref().map(|e| e.clone_ref(py)))
    });
    let raised = Python::attach(|py| {
        let raised = match entry {
            Some(f) => f.call0(py).map_err(|e| e.print(py)).is_err(),
            None => py.detach(|| flare::serve_forever()),
        };
        // The child leaves with _exit: what Python buffered goes out now.
        fork::flush_streams(py);
        raised
    });
    if raised {
        // Ends the child as a failed entry (status 101), without a second
        // report: the traceback is printed.
        std::panic::resume_unwind(Box::new("the entry function raised"));
    }
}

/// Serves signals for good, without holding the GIL (handlers need it).
#[pyfunction]
fn serve_forever(py: Python<'_>) {
    py.detach(|| flare::serve_forever())
}

/// A Python callable as a flare handler: called with the signal number,
/// exceptions printed as uWSGI prints them and counted (`exceptions` in
/// the stats and the summary).
fn handler(func: Py<PyAny>) -> impl Fn(Received) + Send + Sync + 'static {
    move |rx: Received| {
        gil::keep_thread_state();
        Python::attach(|py| {
            if let Err(e) = func.call1(py, (rx.num,)) {
                e.print(py);
                flare::note_handler_exception();
            }
        })
    }
}

/// A handler must be callable with one argument (the signal number): a
/// `TypeError` at registration otherwise, rather than one per signal. A
/// callable whose signature cannot be read (some builtins and C callables)
/// is taken as it is.
fn check_handler(py: Python<'_>, func: &Bound<'_, PyAny>) -> PyResult<()> {
    if !func.is_callable() {
        return Err(PyTypeError::new_err(format!(
            "a signal handler must be a callable taking the signal number, not {} ({})",
            func.get_type().name()?,
            func.repr()?
        )));
    }
    let signature = match py.import("inspect")?.call_method1("signature", (func,)) {
        Ok(s) => s,
        Err(e) if e.is_instance_of::<PyValueError>(py) || e.is_instance_of::<PyTypeError>(py) => {
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    match signature.call_method1("bind", (0,)) {
        Ok(_) => Ok(()),
        Err(e) if e.is_instance_of::<PyTypeError>(py) => Err(PyTypeError::new_err(format!(
            "signal handler {}{} cannot be called with one argument, the signal number ({})",
            func.getattr("__qualname__").map_or_else(
                |_| func.repr().map(|r| r.to_string()),
                |n| Ok(n.to_string())
            )?,
            signature.str()?,
            e.value(py)
        ))),
        Err(e) => Err(e),
    }
}

/// Sends flare's log lines to stderr, as the `flare` command does
/// (`flare::logging`: `FLARE_LOG` filters, `FLARE_LOG_FORMAT=json` for one
/// JSON object per line). Once per process; a subscriber already installed
/// stays.
fn install_log() -> PyResult<()> {
    flare::logging::init().map_err(err)
}

/// The process group: built from the options, then (after the app's
/// registrations) run.
#[pyclass(unsendable)]
struct Group {
    master: Option<Master>,
}

#[pymethods]
impl Group {
    #[new]
    #[pyo3(signature = (workers=1, mules=0, farms=Vec::new(), spoolers=0, remote=None, remote_allow=None, stats=None, control=None, metrics=None, harakiri=None, drain_timeout=None, busy_poll=None, stack_dump_signal=None, role_harakiri=(None, None, None), mule_msg_size=None, allow_uids=Vec::new(), spooler_dirs=Vec::new(), spooler_processes=None, spooler_frequency=None, locks=0, spooler_fsync=true, spooler_journal=true, stall=None, attach=None, attach_workers=None, attach_hold=None, fleet=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        workers: u32,
        mules: u32,
        farms: Vec<(String, Vec<u32>)>,
        spoolers: u32,
        remote: Option<String>,
        remote_allow: Option<Vec<u8>>,
        stats: Option<String>,
        control: Option<String>,
        metrics: Option<String>,
        harakiri: Option<f64>,
        drain_timeout: Option<f64>,
        busy_poll: Option<f64>,
        stack_dump_signal: Option<i32>,
        role_harakiri: (Option<f64>, Option<f64>, Option<f64>),
        mule_msg_size: Option<usize>,
        allow_uids: Vec<u32>,
        spooler_dirs: Vec<std::path::PathBuf>,
        spooler_processes: Option<u32>,
        spooler_frequency: Option<f64>,
        locks: u32,
        spooler_fsync: bool,
        spooler_journal: bool,
        stall: Option<f64>,
        attach: Option<String>,
        attach_workers: Option<u32>,
        attach_hold: Option<f64>,
        fleet: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Group> {
        install_log()?;
        // The one tunable without a builder method; every other option is
        // set below, over these defaults.
        let mut opts = flare::Options::default();
        if let Some(secs) = attach_hold {
            opts.attach_hold = duration(secs)?;
        }
        let mut b = Master::builder()
            .options(opts)
            .workers(workers)
            .mules(mules)
            .spoolers(spoolers)
            .worker_entry(run_entry)
            .mule_entry(run_entry)
            .spooler_entry(run_entry)
            .fork_hooks(ForkHooks {
                before: fork::before,
                parent: fork::parent,
                child: fork::child,
            });
        for (name, ids) in farms {
            b = b.farm(name, ids);
        }
        if let Some(addr) = remote {
            b = b.remote(addr);
            if let Some(allow) = remote_allow {
                b = b.remote_allow(allow);
            }
        }
        if let Some(addr) = stats {
            b = b.stats(addr);
        }
        if let Some(path) = attach {
            b = b.attach(path);
        }
        if let Some(n) = attach_workers {
            b = b.attach_workers(n);
        }
        b = b.allow_uids(allow_uids);
        if let Some(addr) = control {
            b = b.control(addr);
        }
        if let Some(addr) = metrics {
            b = b.metrics(addr);
        }
        if let Some(secs) = harakiri {
            let d = Duration::try_from_secs_f64(secs)
                .map_err(|e| PyValueError::new_err(e.to_string()))?;
            b = b
                .harakiri(Role::Worker, d)
                .harakiri(Role::Mule, d)
                .harakiri(Role::Spooler, d);
        }
        if let Some(secs) = stall {
            // 0 turns the stall check off.
            let d = Duration::try_from_secs_f64(secs)
                .map_err(|e| PyValueError::new_err(e.to_string()))?;
            let d = (!d.is_zero()).then_some(d);
            b = b
                .stall_limit(Role::Worker, d)
                .stall_limit(Role::Mule, d)
                .stall_limit(Role::Spooler, d);
        }
        if let Some(secs) = drain_timeout {
            let d = Duration::try_from_secs_f64(secs)
                .map_err(|e| PyValueError::new_err(e.to_string()))?;
            b = b.drain_timeout(d);
        }
        // uWSGI's --harakiri, --mule-harakiri, --spooler-harakiri.
        let (w, m, s) = role_harakiri;
        for (role, secs) in [(Role::Worker, w), (Role::Mule, m), (Role::Spooler, s)] {
            if let Some(secs) = secs.filter(|s| *s > 0.0) {
                b = b.harakiri(role, duration(secs)?);
            }
        }
        if let Some(bytes) = mule_msg_size {
            b = b.mule_msg_size(bytes);
        }
        // Sent to a child past its time limit before the SIGKILL; the
        // Python layer registers faulthandler for it in every child.
        if let Some(sig) = stack_dump_signal {
            b = b.harakiri_stack_dump(sig, STACK_DUMP_GRACE);
        }
        for dir in spooler_dirs {
            b = b.spooler_dir(dir);
        }
        if let Some(n) = spooler_processes {
            b = b.spooler_processes(n);
        }
        if let Some(secs) = spooler_frequency {
            let d = Duration::try_from_secs_f64(secs)
                .map_err(|e| PyValueError::new_err(e.to_string()))?;
            b = b.spooler_frequency(d);
        }
        b = b
            .locks(locks)
            .spooler_fsync(spooler_fsync)
            .spooler_journal(spooler_journal);
        spool::install_handler();
        if let Some(secs) = busy_poll {
            let d = Duration::try_from_secs_f64(secs)
                .map_err(|e| PyValueError::new_err(e.to_string()))?;
            b = b.busy_poll(d);
        }
        if let Some(f) = fleet {
            b = b.fleet_options(fleet_options(f)?);
        }
        Ok(Group {
            master: Some(b.build().map_err(err)?),
        })
    }

    /// Sets the entry callables (None: serve signals).
    #[pyo3(signature = (worker=None, mule=None, spooler=None))]
    fn set_entries(
        &self,
        worker: Option<Py<PyAny>>,
        mule: Option<Py<PyAny>>,
        spooler: Option<Py<PyAny>>,
    ) {
        *ENTRIES.lock().unwrap_or_else(PoisonError::into_inner) = [worker, mule, spooler];
    }

    /// Where remote signals, stats and control listen (None when off).
    fn addresses(&self) -> (Option<String>, Option<String>, Option<String>) {
        self.master.as_ref().map_or((None, None, None), |m| {
            (m.remote_addr(), m.stats_addr(), m.control_addr())
        })
    }

    /// Forks the group and supervises it until a graceful shutdown; returns
    /// the summary as JSON. Runs only in the master; children never return.
    fn run(&mut self) -> PyResult<String> {
        let master = self
            .master
            .take()
            .ok_or_else(|| PyRuntimeError::new_err("this group already ran"))?;
        let summary = master.run().map_err(err)?;
        serde_json::to_string(&summary).map_err(|e| PyRuntimeError::new_err(e.to_string()))
    }
}

/// Registers `func` for signal `n` on `target` (in the master before run,
/// or in this child).
#[pyfunction]
fn register(py: Python<'_>, n: i64, target: &str, func: Py<PyAny>) -> PyResult<()> {
    check_handler(py, func.bind(py))?;
    let sig = Signal::new(num(n)?);
    let target = target.to_owned();
    let h = handler(func);
    py.detach(move || sig.register_handler(target.as_str(), h))
        .map_err(err)
}

/// Checks a signal number (0-255): a clear `ValueError` otherwise.
#[pyfunction]
fn check_signal(n: i64) -> PyResult<()> {
    num(n).map(drop)
}

/// Checks a registration made outside a group (recorded, replayed when
/// the process attaches) as far as it can be checked without the group: the
/// number, the target's grammar and the handler's signature.
#[pyfunction]
fn check_registration(py: Python<'_>, n: i64, target: &str, func: Py<PyAny>) -> PyResult<()> {
    num(n)?;
    target.parse::<flare::Target>().map_err(err)?;
    check_handler(py, func.bind(py))
}

/// Checks a cron spec (crontab text or five integers) without adding it.
#[pyfunction]
fn check_cron(spec: &Bound<'_, PyAny>) -> PyResult<()> {
    cron_source(spec).map(drop)
}

/// Joins the group whose master listens at `path` (its attach socket) as a
/// worker: (role, id, pid). `on_ready` (the Python layer's replay of what
/// was registered before) runs once this process is a member and before
/// the master starts delivering, so the first signals find their handlers.
/// From then on it is a member like a forked worker; handlers run on the
/// dispatcher thread.
#[pyfunction]
fn attach(py: Python<'_>, path: String, on_ready: Py<PyAny>) -> PyResult<(String, u32, u32)> {
    install_log()?;
    // What the callback raised, kept whole for Python (flare only needs to
    // know that it failed).
    let raised: Mutex<Option<PyErr>> = Mutex::new(None);
    let joined = py.detach(|| {
        flare::attach_with(path.as_str(), |_| {
            Python::attach(|py| match on_ready.call0(py) {
                Ok(_) => Ok(()),
                Err(e) => {
                    let text = e.to_string();
                    *raised.lock().unwrap_or_else(PoisonError::into_inner) = Some(e);
                    Err(Error::Config(format!("registering before Ready: {text}")))
                }
            })
        })
    });
    if let Some(e) = raised.into_inner().unwrap_or_else(PoisonError::into_inner) {
        return Err(e);
    }
    let me = joined.map_err(err)?;
    Ok((me.role.to_string(), me.id, me.pid))
}

/// Reserves the first free number (Signal() in flare: atomic).
#[pyfunction]
fn reserve(py: Python<'_>) -> PyResult<u8> {
    py.detach(Signal::auto).map(Signal::num).map_err(err)
}

#[pyfunction]
fn registered(n: i64) -> PyResult<bool> {
    Ok(Signal::new(num(n)?).registered())
}

#[pyfunction]
fn available() -> PyResult<u8> {
    flare::get_available_num().map_err(err)
}

#[pyfunction]
fn send(py: Python<'_>, n: i64) -> PyResult<()> {
    let sig = Signal::new(num(n)?);
    py.detach(move || sig.send()).map_err(err)
}

#[pyfunction]
fn try_send(n: i64) -> PyResult<()> {
    Signal::new(num(n)?)
        .try_send()
        .map_err(|e| PyRuntimeError::new_err(e.to_string()))
}

#[pyfunction]
#[pyo3(signature = (addr, n, timeout=4.0))]
fn send_remote(py: Python<'_>, addr: &str, n: i64, timeout: f64) -> PyResult<()> {
    let n = num(n)?;
    let t =
        Duration::try_from_secs_f64(timeout).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let addr = addr.to_owned();
    if flare::fleet::FleetTarget::looks_like(&addr) {
        // `remote="fleet:workers"`: through the group's fleet.
        return py
            .detach(move || flare::Signal::new(n).send_remote(&addr))
            .map_err(err);
    }
    py.detach(move || flare::send_remote(&addr, n, t))
        .map_err(err)
}

/// Waits for signal `n` (any signal for None); returns its number, or None
/// when `timeout` (seconds) passed.
#[pyfunction]
#[pyo3(signature = (n=None, timeout=None))]
fn wait(py: Python<'_>, n: Option<i64>, timeout: Option<f64>) -> PyResult<Option<u8>> {
    let n = n.map(num).transpose()?;
    let t = timeout
        .map(Duration::try_from_secs_f64)
        .transpose()
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    py.detach(move || match (n, t) {
        (Some(n), None) => Signal::new(n).wait().map(Some),
        (Some(n), Some(t)) => Signal::new(n).wait_timeout(t),
        (None, None) => flare::wait_any().map(Some),
        (None, Some(t)) => flare::wait_any_timeout(t),
    })
    .map(|r| r.map(|rx| rx.num))
    .map_err(err)
}

#[pyfunction]
fn last_received() -> Option<u8> {
    flare::get_last_received().map(Signal::num)
}

/// (role, id, pid) of this process, or None outside a flare group; an
/// error in a process forked from a member (it is not the member).
#[pyfunction]
fn whoami() -> PyResult<Option<(String, u32, u32)>> {
    match flare::whoami() {
        Ok(w) => Ok(Some((w.role.to_string(), w.id, w.pid))),
        Err(Error::NoRuntime(_)) => Ok(None),
        Err(e) => Err(err(e)),
    }
}

/// The group's master pid, or None outside a flare group.
#[pyfunction]
fn master_pid() -> PyResult<Option<u32>> {
    match flare::master_pid() {
        Ok(pid) => Ok(Some(pid)),
        Err(Error::NoRuntime(_)) => Ok(None),
        Err(e) => Err(err(e)),
    }
}

#[pyfunction]
fn stop(py: Python<'_>) -> PyResult<()> {
    py.detach(flare::stop).map_err(err)
}

/// Fleet options from the Python layer's dict (keys as in `flare.Group`).
fn fleet_options(d: &Bound<'_, PyDict>) -> PyResult<flare::fleet::FleetOptions> {
    macro_rules! get {
        ($k:expr, $t:ty) => {
            match d.get_item($k)? {
                Some(v) if !v.is_none() => Some(v.extract::<$t>()?),
                _ => None,
            }
        };
    }
    let url = get!("url", String).ok_or_else(|| PyValueError::new_err("fleet: no url"))?;
    let name = get!("name", String).unwrap_or_else(|| "flare".into());
    let node = get!("node", String).unwrap_or_else(flare::fleet::host_name);
    let mut o = flare::fleet::FleetOptions::new(url, name, node);
    o.allow = get!("allow", Vec<u8>);
    o.creds = get!("creds", std::path::PathBuf);
    if let (Some(u), Some(p)) = (get!("user", String), get!("password", String)) {
        o.user_password = Some((u, p));
    }
    o.token = get!("token", String);
    o.tls_ca = get!("tls_ca", std::path::PathBuf);
    let cert = get!("tls_cert", std::path::PathBuf);
    if let (Some(c), Some(k)) = (cert, get!("tls_key", std::path::PathBuf)) {
        o.tls_cert_key = Some((c, k));
    }
    o.tls_required = get!("tls", bool).unwrap_or(false);
    if let Some(secs) = get!("reply_timeout", f64) {
        o.reply_timeout = duration(secs)?;
    }
    Ok(o)
}

/// `fleet_unique`: False/None (per node), True (once per fleet, skipped
/// when NATS is unreachable) or "local" (run here then).
fn fleet_mode(v: Option<&Bound<'_, PyAny>>) -> PyResult<Option<bool>> {
    let Some(v) = v.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    if let Ok(text) = v.extract::<String>() {
        return match text.as_str() {
            "local" | "run-locally" => Ok(Some(true)),
            "skip" => Ok(Some(false)),
            other => Err(PyValueError::new_err(format!(
                "fleet_unique={other:?}: use True (skip a firing when NATS is unreachable) or \
                 \"local\" (run it on this node then)"
            ))),
        };
    }
    Ok(v.is_truthy()?.then_some(false))
}

fn add_fleet(
    py: Python<'_>,
    source: Source,
    n: i64,
    unique: bool,
    fleet: Option<&Bound<'_, PyAny>>,
) -> PyResult<u32> {
    let source = match fleet_mode(fleet)? {
        None => source,
        Some(false) => source.fleet_unique(),
        Some(true) => source.fleet_unique_or_local(),
    };
    add(py, source, n, unique)
}

/// Sends `n` to a fleet target from a child; the nodes' answers as a dict.
#[pyfunction]
fn fleet_send(py: Python<'_>, target: String, n: i64) -> PyResult<Py<PyAny>> {
    let n = num(n)?;
    let report = py
        .detach(move || flare::fleet::send(&target, n))
        .map_err(err)?;
    let d = PyDict::new(py);
    d.set_item("target", &report.target)?;
    d.set_item("num", report.num)?;
    d.set_item("accepted", &report.accepted)?;
    d.set_item("rejected", &report.rejected)?;
    d.set_item("missing", &report.missing)?;
    d.set_item("text", report.to_string())?;
    Ok(d.into_any().unbind())
}

fn add(py: Python<'_>, source: Source, n: i64, unique: bool) -> PyResult<u32> {
    let n = num(n)?;
    let source = if unique { source.unique() } else { source };
    py.detach(move || source.raise(n))
        .map(|id| id.get())
        .map_err(err)
}

fn duration(secs: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(secs)
        .map_err(|e| PyValueError::new_err(format!("bad period {secs}: {e}")))
}

#[pyfunction]
#[pyo3(signature = (n, secs, unique=false, fleet_unique=None))]
fn add_timer(
    py: Python<'_>,
    n: i64,
    secs: f64,
    unique: bool,
    fleet_unique: Option<&Bound<'_, PyAny>>,
) -> PyResult<u32> {
    add_fleet(py, Source::timer(duration(secs)?), n, unique, fleet_unique)
}

#[pyfunction]
#[pyo3(signature = (n, secs, repeat=None, unique=false, fleet_unique=None))]
fn add_rb_timer(
    py: Python<'_>,
    n: i64,
    secs: f64,
    repeat: Option<u64>,
    unique: bool,
    fleet_unique: Option<&Bound<'_, PyAny>>,
) -> PyResult<u32> {
    add_fleet(
        py,
        Source::rb_timer(duration(secs)?, repeat),
        n,
        unique,
        fleet_unique,
    )
}

/// A cron source: `spec` is crontab text or uWSGI's five integers.
#[pyfunction]
#[pyo3(signature = (n, spec, unique=false, fleet_unique=None))]
fn add_cron(
    py: Python<'_>,
    n: i64,
    spec: &Bound<'_, PyAny>,
    unique: bool,
    fleet_unique: Option<&Bound<'_, PyAny>>,
) -> PyResult<u32> {
    add_fleet(py, cron_source(spec)?, n, unique, fleet_unique)
}

/// A cron source from crontab text or uWSGI's five integers.
fn cron_source(spec: &Bound<'_, PyAny>) -> PyResult<Source> {
    if let Ok(text) = spec.extract::<String>() {
        Source::cron(text.as_str())
    } else {
        let t = spec.cast::<PyTuple>().map_err(|_| {
            PyValueError::new_err(
                "a cron spec is crontab text or five integers (minute, hour, day, month, weekday)",
            )
        })?;
        let v: [i32; 5] = t.extract()?;
        Source::cron(v)
    }
    .map_err(err)
}

#[pyfunction]
#[pyo3(signature = (n, path, recursive=false))]
fn add_file_monitor(
    py: Python<'_>,
    n: i64,
    path: std::path::PathBuf,
    recursive: bool,
) -> PyResult<u32> {
    let s = Source::file_monitor(path);
    add(py, if recursive { s.recursive() } else { s }, n, false)
}

#[pyfunction]
fn remove_source(py: Python<'_>, id: u32) -> PyResult<()> {
    // Source ids are the numbers add_* returned.
    py.detach(move || flare::remove_source(flare::SourceId::from(id)))
        .map_err(err)
}

// ---- mule and farm messages ------------------------------------------------

/// A mule message's outcome for Python: sent (True), or the mailbox was
/// full and `wait` was false (False).
fn sent(r: flare::Result<()>) -> PyResult<bool> {
    match r {
        Ok(()) => Ok(true),
        Err(Error::MailboxFull { .. }) => Ok(false),
        Err(e @ (Error::MessageTooLarge { .. } | Error::Mailbox(_))) => {
            Err(PyValueError::new_err(e.to_string()))
        }
        Err(e) => Err(err(e)),
    }
}

/// Sends `msg` to mule `mule` (0: any mule); waits while its mailbox is
/// full unless `wait` is false (then returns False).
#[pyfunction]
#[pyo3(signature = (msg, mule=0, wait=true))]
fn mule_msg(py: Python<'_>, msg: &[u8], mule: u32, wait: bool) -> PyResult<bool> {
    let msg = msg.to_vec();
    sent(py.detach(move || {
        if wait {
            flare::mule_msg(&msg, mule)
        } else {
            flare::try_mule_msg(&msg, mule)
        }
    }))
}

/// Sends `msg` to one mule of farm `farm`; as [`mule_msg`].
#[pyfunction]
#[pyo3(signature = (farm, msg, wait=true))]
fn farm_msg(py: Python<'_>, farm: String, msg: &[u8], wait: bool) -> PyResult<bool> {
    let msg = msg.to_vec();
    sent(py.detach(move || {
        if wait {
            flare::farm_msg(&farm, &msg)
        } else {
            flare::try_farm_msg(&farm, &msg)
        }
    }))
}

fn mailbox_err(e: Error) -> PyErr {
    match e {
        Error::Mailbox(_) => PyValueError::new_err(e.to_string()),
        e => err(e),
    }
}

/// The next message for this mule: `("message", bytes)`, `("signal",
/// None)` when a handler ran while waiting (with `signals`), or
/// `("timeout", None)`. `timeout` in seconds, None: for good.
#[pyfunction]
#[pyo3(signature = (signals=true, farms=true, timeout=None))]
fn mule_get_msg<'py>(
    py: Python<'py>,
    signals: bool,
    farms: bool,
    timeout: Option<f64>,
) -> PyResult<(&'static str, Option<Bound<'py, PyBytes>>)> {
    let timeout = timeout.map(duration).transpose()?;
    let got = py
        .detach(move || {
            flare::mule_get_msg(flare::GetMsg {
                signals,
                farms,
                timeout,
            })
        })
        .map_err(mailbox_err)?;
    Ok(match got {
        flare::Inbox::Message(m) => ("message", Some(PyBytes::new(py, &m))),
        flare::Inbox::Signal => ("signal", None),
        flare::Inbox::Timeout => ("timeout", None),
    })
}

/// The next message for one of this mule's farms; None after `timeout`.
#[pyfunction]
#[pyo3(signature = (timeout=None))]
fn farm_get_msg(py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Bound<'_, PyBytes>>> {
    let timeout = timeout.map(duration).transpose()?;
    let got = py
        .detach(move || flare::farm_get_msg(timeout))
        .map_err(mailbox_err)?;
    Ok(got.map(|m| PyBytes::new(py, &m)))
}

// ---- handler time limits from code, current signal -----------------------

/// How long a child past its limit has to write its stack.
const STACK_DUMP_GRACE: Duration = Duration::from_millis(500);

/// Sets this process's own time limit in seconds from now (0: none).
#[pyfunction]
fn set_user_harakiri(py: Python<'_>, secs: f64) -> PyResult<()> {
    let limit = if secs <= 0.0 {
        None
    } else {
        Some(duration(secs)?)
    };
    py.detach(move || flare::set_user_harakiri(limit))
        .map_err(err)
}

/// The signal whose handler runs in this process now.
#[pyfunction]
fn current_signal() -> Option<u8> {
    flare::current_signal().map(Signal::num)
}

/// Every process of the group: (role, id, pid, state, current signal or
/// None, handled, respawns). Empty outside a flare child.
#[pyfunction]
#[allow(clippy::type_complexity)]
fn processes() -> Vec<(String, u32, u32, String, Option<u8>, u64, u64)> {
    flare::processes()
        .into_iter()
        .map(|p| {
            let state = serde_json::to_value(p.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            (
                p.proc.role.to_string(),
                p.proc.id,
                p.pid,
                state,
                p.current,
                p.handled,
                p.respawns,
            )
        })
        .collect()
}

/// The `flare` command (stats, top, ctl, signal, demo) with `argv` (the
/// program name first); returns its exit status. Behind the `flare` entry
/// point the wheel installs, so no Rust toolchain is needed to run it.
#[pyfunction]
fn cli_main(argv: Vec<String>) -> u8 {
    flare_cli::exit_status(argv)
}

#[pymodule]
fn _flare(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Group>()?;
    m.add("NoSignalAvailable", m.py().get_type::<NoSignalAvailable>())?;
    m.add_function(wrap_pyfunction!(register, m)?)?;
    m.add_function(wrap_pyfunction!(check_signal, m)?)?;
    m.add_function(wrap_pyfunction!(check_registration, m)?)?;
    m.add_function(wrap_pyfunction!(check_cron, m)?)?;
    m.add_function(wrap_pyfunction!(attach, m)?)?;
    m.add_function(wrap_pyfunction!(cli_main, m)?)?;
    m.add_function(wrap_pyfunction!(reserve, m)?)?;
    m.add_function(wrap_pyfunction!(registered, m)?)?;
    m.add_function(wrap_pyfunction!(available, m)?)?;
    m.add_function(wrap_pyfunction!(send, m)?)?;
    m.add_function(wrap_pyfunction!(try_send, m)?)?;
    m.add_function(wrap_pyfunction!(send_remote, m)?)?;
    m.add_function(wrap_pyfunction!(fleet_send, m)?)?;
    m.add_function(wrap_pyfunction!(wait, m)?)?;
    m.add_function(wrap_pyfunction!(last_received, m)?)?;
    m.add_function(wrap_pyfunction!(whoami, m)?)?;
    m.add_function(wrap_pyfunction!(master_pid, m)?)?;
    m.add_function(wrap_pyfunction!(stop, m)?)?;
    m.add_function(wrap_pyfunction!(serve_forever, m)?)?;
    m.add_function(wrap_pyfunction!(add_timer, m)?)?;
    m.add_function(wrap_pyfunction!(add_rb_timer, m)?)?;
    m.add_function(wrap_pyfunction!(add_cron, m)?)?;
    m.add_function(wrap_pyfunction!(add_file_monitor, m)?)?;
    m.add_function(wrap_pyfunction!(remove_source, m)?)?;
    // mule and farm messages
    m.add_function(wrap_pyfunction!(mule_msg, m)?)?;
    m.add_function(wrap_pyfunction!(farm_msg, m)?)?;
    m.add_function(wrap_pyfunction!(mule_get_msg, m)?)?;
    m.add_function(wrap_pyfunction!(farm_get_msg, m)?)?;
    // time limits from code, current signal
    m.add_function(wrap_pyfunction!(set_user_harakiri, m)?)?;
    m.add_function(wrap_pyfunction!(current_signal, m)?)?;
    m.add_function(wrap_pyfunction!(processes, m)?)?;
    spool::add_to(m)?;
    Ok(())
}
