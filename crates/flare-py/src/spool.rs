//! The spooler and the locks for Python: `uwsgi.spool()`, the spool
//! handler that calls `uwsgi.spooler`, `uwsgi.lock()`.
//!
//! The Python side (`flare/uwsgi.py`) checks and converts the job; these
//! functions take plain bytes.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use flare::{Job, SpoolOutcome, Task};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyBytes, PyDict, PyModule};

use crate::{err, gil};

/// The `flare.uwsgi` module and the two keys flare adds to each job,
/// made once per process.
struct Spooling {
    module: Py<PyModule>,
    task_name: Py<PyBytes>,
    body: Py<PyBytes>,
}

static SPOOLING: PyOnceLock<Spooling> = PyOnceLock::new();

/// Runs one job: calls `uwsgi.spooler` with the dict uWSGI gives a spool
/// function (the job's keys and values, `spooler_task_name`, and `body`
/// when there is one). The answer is uWSGI's code; an exception, a
/// non-integer answer (`True` and `False` included) or no `uwsgi.spooler`
/// at all is a retry, as in uWSGI.
fn run_task(task: &Task) -> SpoolOutcome {
    gil::keep_thread_state();
    Python::attach(|py| {
        let call = || -> PyResult<SpoolOutcome> {
            let s = SPOOLING.get_or_try_init(py, || {
                PyResult::Ok(Spooling {
                    module: py.import("flare.uwsgi")?.unbind(),
                    task_name: PyBytes::new(py, b"spooler_task_name").unbind(),
                    body: PyBytes::new(py, b"body").unbind(),
                })
            })?;
            let handler = s.module.bind(py).getattr("spooler")?;
            if handler.is_none() {
                return Err(PyRuntimeError::new_err(
                    "no uwsgi.spooler function is set: the job is kept and retried",
                ));
            }
            let job = PyDict::new(py);
            for (k, v) in &task.args {
                job.set_item(PyBytes::new(py, k), PyBytes::new(py, v))?;
            }
            let name = PyBytes::new(py, task.name.as_os_str().as_encoded_bytes());
            job.set_item(s.task_name.bind(py), name)?;
            if !task.body.is_empty() {
                job.set_item(s.body.bind(py), PyBytes::new(py, &task.body))?;
            }
            let answer = handler.call1((job,))?;
            if answer.is_instance_of::<PyBool>() {
                return Ok(SpoolOutcome::Retry);
            }
            Ok(answer
                .extract::<i64>()
                .map_or(SpoolOutcome::Retry, SpoolOutcome::from_code))
        };
        call().unwrap_or_else(|e| {
            e.print(py);
            SpoolOutcome::Retry
        })
    })
}

/// Makes `uwsgi.spooler` the handler of every spooler (set in the master,
/// inherited by the spoolers).
pub(crate) fn install_handler() {
    flare::set_spooler_handler(run_task);
}

/// One job as the Python side hands it over: keys and values, body, at,
/// priority, spooler.
type PyJob = (
    Vec<(Vec<u8>, Vec<u8>)>,
    Option<Vec<u8>>,
    Option<f64>,
    Option<u32>,
    Option<PathBuf>,
);

fn job_of((args, body, at, priority, spooler): PyJob) -> PyResult<Job> {
    let mut job = Job::new();
    job.args = args.into_iter().collect();
    job.body = body.unwrap_or_default();
    job.priority = priority;
    job.spooler = spooler;
    if let Some(at) = at {
        let d = Duration::try_from_secs_f64(at)
            .map_err(|e| PyValueError::new_err(format!("bad `at` {at}: {e}")))?;
        job.at = Some(SystemTime::UNIX_EPOCH + d);
    }
    Ok(job)
}

/// Spools a job; returns the job file's path as bytes (as uWSGI does).
#[pyfunction]
#[pyo3(signature = (args, body=None, at=None, priority=None, spooler=None))]
fn spool<'py>(
    py: Python<'py>,
    args: Vec<(Vec<u8>, Vec<u8>)>,
    body: Option<Vec<u8>>,
    at: Option<f64>,
    priority: Option<u32>,
    spooler: Option<PathBuf>,
) -> PyResult<Bound<'py, PyBytes>> {
    let job = job_of((args, body, at, priority, spooler))?;
    let path = py.detach(move || flare::spool(job)).map_err(err)?;
    Ok(PyBytes::new(py, path.as_os_str().as_encoded_bytes()))
}

/// Spools several jobs with one directory fsync; returns their paths.
#[pyfunction]
fn spool_many(py: Python<'_>, jobs: Vec<PyJob>) -> PyResult<Vec<Py<PyBytes>>> {
    let jobs = jobs.into_iter().map(job_of).collect::<PyResult<Vec<_>>>()?;
    let paths = py.detach(move || flare::spool_many(jobs)).map_err(err)?;
    Ok(paths
        .iter()
        .map(|p| PyBytes::new(py, p.as_os_str().as_encoded_bytes()).unbind())
        .collect())
}

/// The job files waiting in a spool directory (the first when None).
#[pyfunction]
#[pyo3(signature = (spooler=None))]
fn spooler_jobs(py: Python<'_>, spooler: Option<PathBuf>) -> PyResult<Vec<Py<PyBytes>>> {
    let jobs = flare::spooler_jobs(spooler.as_deref()).map_err(err)?;
    Ok(jobs
        .iter()
        .map(|p| PyBytes::new(py, p.as_os_str().as_encoded_bytes()).unbind())
        .collect())
}

/// The pids of the group's spoolers, in spooler order (0: not running).
#[pyfunction]
fn spooler_pids() -> Vec<u32> {
    flare::spooler_pids()
}

/// A job file read without claiming it: (keys and values, body), None when
/// there is no such file; OSError when it cannot be read or is not a
/// spool file.
#[pyfunction]
fn spooler_get_task<'py>(
    py: Python<'py>,
    path: PathBuf,
) -> PyResult<Option<(Bound<'py, PyDict>, Bound<'py, PyBytes>)>> {
    let Some(task) = py
        .detach(move || flare::spooler_get_task(path))
        .map_err(err)?
    else {
        return Ok(None);
    };
    let args = PyDict::new(py);
    for (k, v) in &task.args {
        args.set_item(PyBytes::new(py, k), PyBytes::new(py, v))?;
    }
    Ok(Some((args, PyBytes::new(py, &task.body))))
}

/// The group's spool directories, in the order they were given (empty
/// without a spooler); in an attached process, once it has attached.
#[pyfunction]
fn spooler_dirs() -> Vec<PathBuf> {
    flare::spooler_dirs()
}

/// How many locks the group has (0 outside a group).
#[pyfunction]
fn lock_count() -> u32 {
    flare::lock_count()
}

#[pyfunction]
fn set_spooler_frequency(secs: f64) -> PyResult<()> {
    let d = Duration::try_from_secs_f64(secs)
        .map_err(|e| PyValueError::new_err(format!("bad spooler frequency {secs}: {e}")))?;
    flare::set_spooler_frequency(d).map_err(err)
}

#[pyfunction]
fn lock(py: Python<'_>, n: u32) -> PyResult<()> {
    py.detach(move || flare::lock(n)).map_err(err)
}

#[pyfunction]
fn unlock(n: u32) -> PyResult<()> {
    flare::unlock(n).map_err(err)
}

#[pyfunction]
fn is_locked(n: u32) -> PyResult<bool> {
    flare::is_locked(n).map_err(err)
}

/// Adds these functions to the native module.
pub(crate) fn add_to(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(spool, m)?)?;
    m.add_function(wrap_pyfunction!(spool_many, m)?)?;
    m.add_function(wrap_pyfunction!(spooler_jobs, m)?)?;
    m.add_function(wrap_pyfunction!(spooler_pids, m)?)?;
    m.add_function(wrap_pyfunction!(spooler_get_task, m)?)?;
    m.add_function(wrap_pyfunction!(set_spooler_frequency, m)?)?;
    m.add_function(wrap_pyfunction!(spooler_dirs, m)?)?;
    m.add_function(wrap_pyfunction!(lock_count, m)?)?;
    m.add_function(wrap_pyfunction!(lock, m)?)?;
    m.add_function(wrap_pyfunction!(unlock, m)?)?;
    m.add_function(wrap_pyfunction!(is_locked, m)?)?;
    Ok(())
}
