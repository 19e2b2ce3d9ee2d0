//! The spooler and the locks for Python: `uwsgi.spool()`, the spool
//! handler that calls `uwsgi.spooler`, `uwsgi.lock()`.
//!
//! The Python side (`flare/uwsgi.py`) checks and converts the job; these
//! functions take plain bytes.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use flare::{Job, SpoolOutcome, Task};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict};

use crate::{err, gil};

/// `flare.uwsgi._run_spool_task`, looked up once per process.
static RUN_TASK: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Runs one job through `flare.uwsgi._run_spool_task` (which calls
/// `uwsgi.spooler`) with the dict uWSGI gives a spool function: the job's
/// keys and values, `spooler_task_name`, and `body` when there is one. An
/// exception or a non-integer answer is a retry, as in uWSGI.
fn run_task(task: &Task) -> SpoolOutcome {
    gil::keep_thread_state();
    Python::attach(|py| {
        let call = || -> PyResult<i64> {
            let run = RUN_TASK.get_or_try_init(py, || {
                py.import("flare.uwsgi")?
                    .getattr("_run_spool_task")
                    .map(Bound::unbind)
            })?;
            let job = PyDict::new(py);
            for (k, v) in &task.args {
                job.set_item(PyBytes::new(py, k), PyBytes::new(py, v))?;
            }
            let name = PyBytes::new(py, task.name.as_os_str().as_encoded_bytes());
            job.set_item(PyBytes::new(py, b"spooler_task_name"), name)?;
            if !task.body.is_empty() {
                job.set_item(PyBytes::new(py, b"body"), PyBytes::new(py, &task.body))?;
            }
            run.bind(py).call1((job,))?.extract()
        };
        match call() {
            Ok(code) => SpoolOutcome::from_code(code),
            Err(e) => {
                e.print(py);
                SpoolOutcome::Retry
            }
        }
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
    m.add_function(wrap_pyfunction!(lock, m)?)?;
    m.add_function(wrap_pyfunction!(unlock, m)?)?;
    m.add_function(wrap_pyfunction!(is_locked, m)?)?;
    Ok(())
}
