//! Spooler and lock scenarios, one per process: `flare-spool NAME ARGS`.
//!
//! Spool handlers append `id pid` lines to a run log (one `write` per
//! line, `O_APPEND`), so what ran survives any kill; the scenario reads the
//! logs at the end and prints `SUMMARY <json>`. Children report as
//! `FACT key=value` lines.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, SystemTime};

use flare::{Job, Master, MasterBuilder, Options, Signal, SpoolOutcome, Task};
use flare_tests::{fact, finish, init_log};
use serde_json::{Value, json};

fn append(path: &Path, line: &str) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open log");
    f.write_all(line.as_bytes()).expect("append");
}

fn arg<'a>(task: &'a Task, key: &str) -> &'a str {
    task.args
        .get(key.as_bytes())
        .and_then(|v| std::str::from_utf8(v).ok())
        .unwrap_or("")
}

fn main() {
    init_log();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = |i: usize| PathBuf::from(args.get(i).map_or("", String::as_str));
    let num = |i: usize, d: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let result = match args.first().map(String::as_str).unwrap_or("") {
        "basic" => basic(path(1), path(2), num(3, 200)),
        "prompt" => prompt(path(1)),
        "durable-run" => durable_run(path(1), path(2), path(3), num(4, 10_000)),
        "durable-finish" => durable_finish(path(1), path(2), path(3)),
        "readonly" => readonly(path(1)),
        "options" => options(path(1), path(2)),
        "full" => full(path(1)),
        "throughput" => throughput(
            path(1),
            num(2, 20_000),
            num(3, 1) as u32,
            num(4, 1) == 1,
            num(5, 1).max(1) as usize,
            num(6, 1).max(1) as usize,
        ),
        "locks" => locks(path(1)),
        "attached" => attached(path(1), num(2, 200)),
        "attached-client" => attached_client(path(1), num(2, 200)),
        other => {
            eprintln!(
                "unknown scenario `{other}`; scenarios: basic DIR LOG [N], prompt DIR, \
                 durable-run DIR LOG SPOOLED [N], durable-finish DIR LOG SPOOLED, readonly DIR, \
                 locks DIR, options DIR1 DIR2, full DIR, \
                 throughput DIR N SPOOLERS FSYNC(0|1) [BATCH [THREADS]], attached DIR N, \
                 attached-client SOCK N"
            );
            std::process::exit(2);
        }
    };
    finish(result);
}

/// Counts per id in a run log.
fn runs(log: &Path) -> BTreeMap<u64, u64> {
    let mut out = BTreeMap::new();
    for line in fs::read_to_string(log).unwrap_or_default().lines() {
        if let Some(id) = line.split(' ').next().and_then(|i| i.parse().ok()) {
            *out.entry(id).or_insert(0) += 1;
        }
    }
    out
}

/// What is left in a spool directory: jobs waiting (job files and the
/// journal's jobs, as `spooler_jobs` lists them), temporaries, set-aside
/// files, journal segments.
fn left(dir: &Path) -> Value {
    let (mut invalid, mut segments) = (0, 0);
    let tmp = fs::read_dir(dir.join(".tmp")).map_or(0, |d| d.count());
    for e in fs::read_dir(dir).expect("read spool dir").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(".invalid_") {
            invalid += 1;
        } else if name.starts_with(".journal_") {
            segments += 1;
        }
    }
    let jobs = flare::spooler_jobs(Some(dir)).map_or(usize::MAX, |j| j.len());
    json!({"jobs": jobs, "tmp": tmp, "invalid": invalid, "segments": segments})
}

static DONE: AtomicU64 = AtomicU64::new(0);

/// The group `basic` and `durable-finish` share: `workers` workers and
/// `spoolers` spoolers on `dir`, whose handler appends `id pid` to `log`
/// and raises signal 10 (worker 1 counts).
fn logged_spoolers(dir: &Path, log: &Path, workers: u32, spoolers: u32) -> MasterBuilder {
    let log = log.to_path_buf();
    Master::builder()
        .workers(workers)
        .spooler_dir(dir)
        .spooler_processes(spoolers)
        .spooler_handler(move |task| {
            append(
                &log,
                &format!("{} {}\n", arg(task, "id"), std::process::id()),
            );
            Signal::new(10).send().expect("send");
            SpoolOutcome::Ok
        })
}

/// Two workers spool `n` jobs between them; two spoolers on one directory
/// run them; each run is logged; worker 1 stops the group when every job
/// has reported (signal 10 from the handler, after the log line) and the
/// directory is empty.
fn basic(dir: PathBuf, log: PathBuf, n: u64) -> flare::Result<Value> {
    let master = logged_spoolers(&dir, &log, 2, 2)
        .spooler_frequency(Duration::from_secs(3600))
        .worker_entry(move |me| {
            for id in (u64::from(me.id) - 1..n).step_by(2) {
                flare::spool(Job::new().arg("id", id.to_string())).expect("spool");
            }
            fact("spooled_by", me.id);
            if me.id == 1 {
                // Every job reported, and its file is gone: a spooler
                // removes it after its handler returned, a moment after
                // the handler's signal.
                while DONE.load(SeqCst) < n || !flare::spooler_jobs(None).expect("jobs").is_empty()
                {
                    let _ = Signal::new(10).wait_timeout(Duration::from_millis(50));
                }
                flare::stop().expect("stop");
            }
            flare::serve_forever();
        })
        .build()?;
    Signal::new(10).register_handler("worker1", move |_| {
        DONE.fetch_add(1, SeqCst);
    })?;
    let summary = master.run()?;
    let ran = runs(&log);
    let spooler_pids: std::collections::BTreeSet<String> = fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(1).map(str::to_owned))
        .collect();
    Ok(json!({
        "jobs": n,
        "distinct": ran.len(),
        "runs": ran.values().sum::<u64>(),
        "max_runs": ran.values().max().copied().unwrap_or(0),
        "spooler_pids": spooler_pids.len(),
        "left": left(&dir),
        "handled_10": summary.processes.iter().map(|p| p.handled).sum::<u64>(),
    }))
}

fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros()
}

/// A job spooled while the spooler is idle, after its start-up scan, runs
/// although the scan period is an hour: only inotify can have woken it.
/// Handshake: the first job's handler raises 11; worker 1's handler for 11
/// spools the second; the second's handler raises 12, which stops.
fn prompt(dir: PathBuf) -> flare::Result<Value> {
    let master = Master::builder()
        .workers(1)
        .spooler_dir(&dir)
        .spooler_frequency(Duration::from_secs(3600))
        .spooler_handler(|task| {
            match arg(task, "step") {
                "first" => Signal::new(11).send().expect("send 11"),
                _ => {
                    let t0: u128 = arg(task, "t0").parse().unwrap_or(0);
                    fact("second_ran", 1);
                    fact("spool_to_start_us", now_us().saturating_sub(t0));
                    Signal::new(12).send().expect("send 12");
                }
            }
            SpoolOutcome::Ok
        })
        .worker_entry(|_| {
            flare::spool(Job::new().arg("step", "first")).expect("spool first");
            flare::serve_forever();
        })
        .build()?;
    Signal::new(11).register_handler("worker1", |_| {
        let job = Job::new()
            .arg("step", "second")
            .arg("t0", now_us().to_string());
        flare::spool(job).expect("spool second");
        fact("second_spooled", 1);
    })?;
    Signal::new(12).register_handler("worker1", |_| flare::stop().expect("stop"))?;
    master.run()?;
    Ok(json!({"left": left(&dir)}))
}

fn quick_respawn() -> Options {
    let mut o = Options::default();
    o.min_lifetime = Duration::ZERO;
    o.max_backoff = Duration::from_millis(20);
    o
}

/// Workers spool `n` jobs (each logged in SPOOLED once spool() returned);
/// three spoolers run them, and a spooler kills itself (SIGKILL) after
/// logging about one job in 300, mid-job. The test kills this master
/// with SIGKILL once every job is spooled and job n/2 has run.
fn durable_run(dir: PathBuf, log: PathBuf, spooled: PathBuf, n: u64) -> flare::Result<Value> {
    let milestone = n / 2;
    let markers = dir.parent().map(Path::to_path_buf).unwrap_or_default();
    let master = Master::builder()
        .options(quick_respawn())
        .workers(2)
        .spooler_dir(&dir)
        .spooler_processes(3)
        // Process kills are what this run is about: the page cache
        // outlives any process, so the fsyncs would only make it slow on
        // a real disk (the other scenarios spool with them).
        .spooler_fsync(false)
        .spooler_handler(move |task| {
            let id: u64 = arg(task, "id").parse().unwrap_or(u64::MAX);
            let pid = std::process::id();
            append(&log, &format!("{id} {pid}\n"));
            if id == milestone {
                fact("milestone", id);
            }
            // The job's work (it makes the run long enough to be killed
            // in the middle, with every job spooled).
            std::thread::sleep(Duration::from_millis(2));
            let h = id.wrapping_mul(2_654_435_761) ^ u64::from(pid).wrapping_mul(40_503);
            if h.is_multiple_of(300) {
                let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
            }
            SpoolOutcome::Ok
        })
        .worker_entry(move |me| {
            if me.id <= 2 && fs::create_dir(markers.join(format!("worker{}", me.id))).is_ok() {
                for id in (u64::from(me.id) - 1..n).step_by(2) {
                    flare::spool(Job::new().arg("id", id.to_string())).expect("spool");
                    append(&spooled, &format!("{id}\n"));
                }
                fact("spooled_by", me.id);
            }
            flare::serve_forever();
        })
        .build()?;
    master.run()?;
    Ok(json!({"unexpected": "the master should have been killed"}))
}

/// Restarts the group on the same directory: spoolers run what is left;
/// worker 1 stops the group when the directory is empty (checked after
/// each job's signal, and at least every second). Then counts.
fn durable_finish(dir: PathBuf, log: PathBuf, spooled: PathBuf) -> flare::Result<Value> {
    let master = logged_spoolers(&dir, &log, 1, 3)
        .worker_entry(move |_| {
            fact(
                "left_at_restart",
                flare::spooler_jobs(None).expect("jobs").len(),
            );
            while !flare::spooler_jobs(None).expect("jobs").is_empty() {
                let _ = Signal::new(10).wait_timeout(Duration::from_secs(1));
            }
            flare::stop().expect("stop");
            flare::serve_forever();
        })
        .build()?;
    Signal::new(10).register_handler("worker1", |_| {})?;
    master.run()?;
    let ran = runs(&log);
    let accepted: Vec<u64> = fs::read_to_string(&spooled)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect();
    let lost = accepted.iter().filter(|id| !ran.contains_key(id)).count();
    let twice = ran.values().filter(|&&c| c >= 2).count();
    Ok(json!({
        "accepted": accepted.len(),
        "distinct_ran": ran.len(),
        "runs": ran.values().sum::<u64>(),
        "ran_twice_or_more": twice,
        "lost": lost,
        "left": left(&dir),
    }))
}

/// Run as an unprivileged user: a read-only spool directory fails the
/// start-up check; one that turns read-only fails spool() clearly.
fn readonly(dir: PathBuf) -> flare::Result<Value> {
    let built = Master::builder().workers(1).spooler_dir(&dir).build();
    let master = match built {
        Err(e) => {
            fact("startup_error", &e);
            return Ok(json!({"startup": e.to_string()}));
        }
        Ok(m) => m,
    };
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o500)).expect("chmod 0500");
    let err = flare::spool(Job::new().arg("a", "b"))
        .err()
        .map(|e| e.to_string());
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).expect("chmod 0700");
    let ok = flare::spool(Job::new().arg("a", "b")).is_ok();
    drop(master);
    Ok(json!({"spool_error": err, "spool_after_chmod_back": ok}))
}

/// Lock 1 across processes: worker 1 takes it and reports its pid; worker
/// 2 sees it taken and waits in lock(1); the test SIGKILLs worker 1; worker
/// 2 gets the lock and checks the old holder is dead.
fn locks(dir: PathBuf) -> flare::Result<Value> {
    let master = Master::builder()
        .workers(2)
        .locks(2)
        .worker_entry(move |me| {
            if me.id == 1 {
                if fs::create_dir(dir.join("holder-started")).is_ok() {
                    flare::lock(1).expect("lock 1");
                    fs::write(dir.join("holder"), me.pid.to_string()).expect("write pid");
                    fact("holder_pid", me.pid);
                    Signal::new(20).send().expect("send 20");
                }
                flare::serve_forever();
            }
            fact("bad_lock", flare::lock(3).expect_err("lock 3 of 0..2"));
            fact("is_locked_0", flare::is_locked(0).expect("is_locked"));
            let _ = Signal::new(20).wait();
            fact("is_locked_1", flare::is_locked(1).expect("is_locked"));
            let holder = fs::read_to_string(dir.join("holder")).expect("holder pid");
            fact("waiting", 1);
            flare::lock(1).expect("lock 1 in worker 2");
            // The lock is released while the holder's exit closes its
            // files, a moment before it is a zombie: at this point it must
            // not be sleeping as a live holder would, and it must then end.
            let state = || {
                let stat = fs::read_to_string(format!("/proc/{holder}/stat")).unwrap_or_default();
                stat.rsplit(')')
                    .next()
                    .and_then(|s| s.split_whitespace().next())
                    .map(str::to_owned)
            };
            let at_acquire = state();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let mut ended = false;
            while std::time::Instant::now() < deadline {
                if matches!(state().as_deref(), None | Some("Z") | Some("X")) {
                    ended = true;
                    break;
                }
                std::thread::yield_now();
            }
            fact("holder_gone", ended && at_acquire.as_deref() != Some("S"));
            flare::unlock(1).expect("unlock");
            fact("unlock_unheld", flare::unlock(1).is_err());
            flare::stop().expect("stop");
            flare::serve_forever();
        })
        .build()?;
    Signal::new(20).register_handler("worker2", |_| {})?;
    master.run()?;
    Ok(json!({"ok": true}))
}

/// Job options: priorities order the jobs one spooler finds at start-up
/// (spooled by the master before run()); `at` holds a job back; `spooler`
/// picks the directory (and so the spoolers); an unknown one is an error.
fn options(dir1: PathBuf, dir2: PathBuf) -> flare::Result<Value> {
    let unknown = flare::spool(Job::new()).err().map(|e| e.to_string());
    let master = Master::builder()
        .workers(1)
        .spooler_dir(&dir1)
        .spooler_dir(&dir2)
        .spooler_handler(|task| {
            let me = flare::whoami().expect("in a spooler");
            let what = arg(task, "what");
            let mut line = format!("ran={what} spooler={} dir={}", me.id, task.dir.display());
            if let Ok(at) = arg(task, "at").parse::<u64>() {
                let now = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                line += &format!(" not_before_at={}", now >= at);
            }
            fact("job", line);
            Signal::new(10).send().expect("send");
            SpoolOutcome::Ok
        })
        .build()?;
    let later = SystemTime::now() + Duration::from_secs(2);
    let at_job = flare::spool(Job::new().arg("what", "at").at(later))?;
    flare::spool(Job::new().arg("what", "none"))?;
    // One batch over both directories (one fsync of each).
    let batch = flare::spool_many([
        Job::new().arg("what", "p5").priority(5),
        Job::new().arg("what", "p1").priority(1),
        Job::new().arg("what", "dir2").spooler(&dir2),
    ])?;
    let task = flare::spooler_get_task(&at_job)?.expect("the at job is there");
    let got_task = json!({
        "what": arg(&task, "what"),
        "has_at": task.args.contains_key(b"at".as_slice()),
        "dir": task.dir == dir1,
        "missing": flare::spooler_get_task(dir1.join("job_nope"))?.is_none(),
    });
    let batch_dirs: Vec<bool> = batch.iter().map(|p| p.starts_with(&dir2)).collect();
    let pids_in_master = flare::spooler_pids();
    let bad = flare::spool(Job::new().spooler("/nonexistent/spool"))
        .err()
        .map(|e| e.to_string());
    let waiting = flare::spooler_jobs(None)?.len();
    Signal::new(10).register_handler("worker1", |_| {
        if DONE.fetch_add(1, SeqCst) + 1 == 5 {
            flare::stop().expect("stop");
        }
    })?;
    master.run()?;
    Ok(json!({
        "before_build": unknown,
        "get_task": got_task,
        "batch_in_dir2": batch_dirs,
        "pids_in_master": pids_in_master,
        "unknown_spooler": bad,
        "waiting_in_dir1": waiting,
        "left1": left(&dir1),
        "left2": left(&dir2),
    }))
}

/// Rust handlers, for docs/benchmarks.md: worker 1 spools `n` jobs as fast
/// as it can (`batch` at a time through `spool_many` when above 1, from
/// `threads` threads at once), then 200 jobs one at a time into idle
/// spoolers; each job's handler raises 10 (worker 1 counts) and appends
/// its spool-to-start time.
fn throughput(
    dir: PathBuf,
    n: u64,
    spoolers: u32,
    fsync: bool,
    batch: usize,
    threads: usize,
) -> flare::Result<Value> {
    const PINGS: u64 = 200;
    let lat_log = dir.with_extension("latency");
    let _ = fs::remove_file(&lat_log);
    let lat2 = lat_log.clone();
    let master = Master::builder()
        .workers(1)
        .spooler_dir(&dir)
        .spooler_processes(spoolers)
        .spooler_fsync(fsync)
        .spooler_handler(move |task| {
            if let Ok(t0) = arg(task, "t0").parse::<u128>() {
                append(&lat2, &format!("{}\n", now_us().saturating_sub(t0)));
            }
            Signal::new(10).send().expect("send");
            SpoolOutcome::Ok
        })
        .worker_entry(move |_| {
            let t = std::time::Instant::now();
            let ids: Vec<u64> = (0..n).collect();
            let per_thread = ids.len().div_ceil(threads).max(1);
            std::thread::scope(|s| {
                for part in ids.chunks(per_thread) {
                    s.spawn(move || {
                        for chunk in part.chunks(batch) {
                            let jobs = chunk.iter().map(|i| Job::new().arg("id", i.to_string()));
                            if batch == 1 {
                                jobs.for_each(|j| drop(flare::spool(j).expect("spool")));
                            } else {
                                flare::spool_many(jobs).expect("spool_many");
                            }
                        }
                    });
                }
            });
            let enq = t.elapsed();
            while DONE.load(SeqCst) < n {
                let _ = Signal::new(10).wait_timeout(Duration::from_secs(1));
            }
            let all = t.elapsed();
            for k in 0..PINGS {
                let job = Job::new().arg("t0", now_us().to_string());
                flare::spool(job).expect("spool");
                while DONE.load(SeqCst) < n + k + 1 {
                    let _ = Signal::new(10).wait_timeout(Duration::from_secs(1));
                }
            }
            let mut lat: Vec<u64> = fs::read_to_string(&lat_log)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.parse().ok())
                .collect();
            lat.sort_unstable();
            let pct = |p: usize| lat.get((lat.len().saturating_sub(1)) * p / 100).copied();
            fact(
                "throughput",
                json!({
                    "jobs": n, "spoolers": spoolers, "fsync": fsync, "batch": batch,
                    "threads": threads,
                    "enqueued_per_s": (n as f64 / enq.as_secs_f64()).round(),
                    "completed_per_s": (n as f64 / all.as_secs_f64()).round(),
                    "start_p50_us": pct(50), "start_p99_us": pct(99),
                    "pings": lat.len(),
                }),
            );
            flare::stop().expect("stop");
            flare::serve_forever();
        })
        .build()?;
    Signal::new(10).register_handler("worker1", |_| {
        DONE.fetch_add(1, SeqCst);
    })?;
    master.run()?;
    Ok(json!({"left": left(&dir)}))
}

/// A group with one forked worker, one attach slot and one spooler on
/// `DIR/spool`: prints `FACT attach=PATH` once the socket is bound; the
/// test then starts `attached-client`, which spools `n` plain jobs and
/// one with a priority. The handler logs `id name` per job and raises
/// signal 10; the forked worker stops the group once all `n + 1` have run
/// and none is waiting (a job counts as waiting until its handler has
/// returned and it is marked done).
fn attached(dir: PathBuf, n: u64) -> flare::Result<Value> {
    let spool = dir.join("spool");
    fs::create_dir_all(&spool).map_err(|e| flare::Error::io("creating the spool dir", e))?;
    let log = dir.join("ran.log");
    let sock = dir.join("attach.sock");
    let (ran, seen) = (log.clone(), log.clone());
    let master = Master::builder()
        .workers(1)
        .attach(sock.to_string_lossy())
        .attach_workers(1)
        .spooler_dir(&spool)
        .spooler_handler(move |task| {
            append(
                &ran,
                &format!("{} {}\n", arg(task, "id"), task.name.display()),
            );
            Signal::new(10).send().expect("send");
            SpoolOutcome::Ok
        })
        .worker_entry(move |_| {
            let lines = || fs::read_to_string(&seen).map_or(0, |s| s.lines().count()) as u64;
            while lines() <= n || !flare::spooler_jobs(None).expect("jobs").is_empty() {
                let _ = Signal::new(10).wait_timeout(Duration::from_millis(50));
            }
            flare::stop().expect("stop");
            flare::serve_forever();
        })
        .build()?;
    Signal::new(10).register_handler("worker1", |_| {})?;
    fact("attach", sock.display());
    master.run()?;
    let lines = fs::read_to_string(&log).unwrap_or_default();
    let rows: Vec<(&str, &str)> = lines.lines().filter_map(|l| l.split_once(' ')).collect();
    let distinct: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.0).collect();
    Ok(json!({
        "distinct": distinct.len(),
        "runs": rows.len(),
        "journal_runs": rows.iter().filter(|r| r.1.contains("/.journal_")).count(),
        "file_runs": rows.iter().filter(|r| r.1.contains("/job_")).count(),
        "left": left(&spool),
    }))
}

/// Attaches to `sock` (a group of `attached`) and spools `n` plain jobs
/// and one with a priority, as a web worker of another server would.
fn attached_client(sock: PathBuf, n: u64) -> flare::Result<Value> {
    flare::attach(sock.to_string_lossy())?;
    let mut journal = 0;
    for id in 0..n {
        let name = flare::spool(Job::new().arg("id", id.to_string()))?;
        journal += usize::from(name.to_string_lossy().contains("/.journal_"));
    }
    let file = flare::spool(Job::new().arg("id", n.to_string()).priority(1))?;
    // Its name, not its existence: the spooler may have run it already.
    let file = file
        .file_name()
        .is_some_and(|f| f.to_string_lossy().starts_with("job_"));
    Ok(json!({"spooled": n + 1, "journal": journal, "file": file}))
}

/// A spool directory on a small file system: spool() until it is full;
/// the error says so, and the jobs accepted before are all there, whole.
fn full(dir: PathBuf) -> flare::Result<Value> {
    let master = Master::builder().workers(1).spooler_dir(&dir).build()?;
    let mut accepted = 0;
    let mut error = None;
    for i in 0..1000 {
        let job = Job::new().arg("i", i.to_string()).body(vec![7u8; 8192]);
        match flare::spool(job) {
            Ok(_) => accepted += 1,
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    let jobs = flare::spooler_jobs(None)?;
    let whole = jobs
        .iter()
        .filter(|p| {
            flare::spooler_get_task(p).is_ok_and(|t| t.is_some_and(|t| t.body == [7u8; 8192]))
        })
        .count();
    drop(master);
    Ok(
        json!({"accepted": accepted, "error": error, "jobs": jobs.len(), "whole": whole, "left": left(&dir)}),
    )
}
