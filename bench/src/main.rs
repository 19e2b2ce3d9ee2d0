//! flare-bench: the same scenarios on flare and on uWSGI (Python handlers),
//! alternating the two, one table of medians (min-max) with flare/uWSGI
//! ratios, and `target/bench/results.json`.
//!
//! ```text
//! cargo run --release -p flare-bench -- [--quick] [--rounds N] [--only SCENARIO]
//! bash bench/run.sh [same arguments]      # installs pyuwsgi first
//! ```
//!
//! uWSGI comes from `FLARE_UWSGI` (a `uwsgi` binary), else the workspace's
//! `target/uwsgi-venv/bin/uwsgi`, else `uwsgi` on the `PATH`. The flare side
//! runs as `flare-bench flare-node SCENARIO ...`, a separate process.
//! See docs/benchmarks.md.

// The one exception: the shared-memory mapping in board.rs.
#![deny(unsafe_code)]

mod board;
mod client;
mod floor;
mod harness;
mod node;
mod procs;
mod report;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;

use harness::{Harness, Plan, Scenario};
use report::Side;

/// Benchmarks flare side by side with uWSGI.
#[derive(Parser, Debug)]
#[command(
    name = "flare-bench",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    node: Option<Internal>,
    /// Small counts (a few seconds in all); fails when counts do not add up.
    #[arg(long)]
    quick: bool,
    /// Rounds per side (default 3, 1 with --quick).
    #[arg(long)]
    rounds: Option<usize>,
    /// Run only these scenarios (repeat the flag or separate by commas).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Scenario>,
    /// Run flare only, without uWSGI.
    #[arg(long)]
    flare_only: bool,
    /// Skip the Python-handler side (flare's Python package running the
    /// same flarebench.py as uWSGI).
    #[arg(long)]
    no_python: bool,
    /// flare's busy-poll window in microseconds (default: the library's,
    /// 50; 0 turns busy polling off).
    #[arg(long)]
    busy_poll_us: Option<u64>,
    /// Where to write the JSON summary (default: target/bench/results.json
    /// in the workspace).
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Internal {
    /// Runs the flare side of one scenario (started by the harness).
    #[command(hide = true)]
    FlareNode(node::NodeArgs),
    /// Joins a flare node's group through its attach socket as a worker
    /// (started by the node, for the attached scenarios).
    #[command(hide = true)]
    AttachWorker(node::AttachArgs),
    /// Becomes PROGRAM (exec), killed when the harness dies (started by
    /// the harness for uWSGI).
    #[command(hide = true)]
    Launch {
        /// The program and its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<std::ffi::OsString>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.node {
        Some(Internal::FlareNode(args)) => {
            // A separate, single-threaded process: it builds a master.
            if let Err(e) = procs::die_with_parent() {
                eprintln!("flare-bench flare-node: {e}");
                return ExitCode::from(2);
            }
            return ExitCode::from(node::main(args) as u8);
        }
        Some(Internal::AttachWorker(args)) => {
            if let Err(e) = procs::die_with_parent() {
                eprintln!("flare-bench attach-worker: {e}");
                return ExitCode::from(2);
            }
            return ExitCode::from(node::attach_worker(&args) as u8);
        }
        Some(Internal::Launch { command }) => {
            let e = procs::die_with_parent().and_then(|()| procs::exec(&command));
            eprintln!("flare-bench launch: {}", e.err().unwrap_or_default());
            return ExitCode::from(2);
        }
        None => {}
    }
    match bench(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("flare-bench: {e}");
            ExitCode::from(2)
        }
    }
}

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
}

/// Runs the harness; `Ok(false)` when a check failed.
fn bench(cli: Cli) -> Result<bool, String> {
    let rounds = cli.rounds.unwrap_or(if cli.quick { 1 } else { 3 }).max(1);
    let plan = if cli.quick {
        Plan::quick(rounds)
    } else {
        Plan::full(rounds)
    };
    let uwsgi = if cli.flare_only {
        None
    } else {
        Some(find_uwsgi()?)
    };
    let uwsgi_version = uwsgi.as_deref().map(version).transpose()?;
    let python = if cli.no_python { None } else { find_python() };
    let apps = Path::new(env!("CARGO_MANIFEST_DIR")).join("uwsgi");
    if uwsgi.is_some() && !apps.join("flarebench.py").is_file() {
        return Err(format!("the uWSGI apps are missing: {}", apps.display()));
    }
    let scenarios: Vec<Scenario> = if cli.only.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        Scenario::ALL
            .into_iter()
            .filter(|s| cli.only.contains(s))
            .collect()
    };
    eprintln!(
        "flare-bench: {} mode, {rounds} round(s) per side, uWSGI: {}, flare (Python): {}",
        if plan.quick { "quick" } else { "full" },
        match (&uwsgi, &uwsgi_version) {
            (Some(p), Some(v)) => format!("{v} ({})", p.display()),
            _ => "not run (--flare-only)".into(),
        },
        match &python {
            Some(p) => p.display().to_string(),
            None if cli.no_python => "not run (--no-python)".into(),
            None => "not run (no Python with the flare package: set FLARE_PYTHON, or use \
                     bench/run.sh, which installs one)"
                .into(),
        }
    );
    let load_before = loadavg();
    let started = Instant::now();
    let mut h = Harness::new(
        plan.clone(),
        uwsgi.clone(),
        python.clone(),
        apps,
        cli.busy_poll_us,
    )?;
    for s in &scenarios {
        h.run(*s);
    }
    let elapsed = started.elapsed().as_secs_f64();
    h.judge_targets();
    let report = h.report;

    println!();
    println!("flare with Rust handlers; uWSGI with Python handlers (bench/uwsgi/flarebench.py):");
    println!();
    print!("{}", report.table(Side::Flare));
    if report.has(Side::FlarePy) {
        println!();
        println!(
            "flare's Python package and uWSGI running the same flarebench.py (Python handlers \
             on both sides):"
        );
        println!();
        print!("{}", report.table(Side::FlarePy));
    }
    if !report.notes.is_empty() {
        println!();
        for n in &report.notes {
            println!("note: {n}");
        }
    }
    println!();
    for t in &report.targets {
        match t.met {
            Some(met) => println!(
                "target: {}: {} ({})",
                t.what,
                if met { "met" } else { "NOT met" },
                t.figures
            ),
            None => println!("target: {}: not measured in this run", t.what),
        }
    }
    let failures = report.failures();
    println!();
    println!(
        "{} checks, {} failed; {elapsed:.1} s",
        report.checks.len(),
        failures.len()
    );
    for c in &failures {
        println!("FAILED [{} {}] {}", c.side.name(), c.scenario, c.what);
    }

    let path = cli
        .json
        .unwrap_or_else(|| workspace().join("target/bench/results.json"));
    let doc = json!({
        "mode": if plan.quick { "quick" } else { "full" },
        "rounds": rounds,
        "busy_poll_us": cli.busy_poll_us,
        "scenarios": scenarios
            .iter()
            .filter_map(|s| s.to_possible_value().map(|v| v.get_name().to_owned()))
            .collect::<Vec<_>>(),
        "elapsed_s": elapsed,
        "machine": machine(),
        "loadavg": { "before": load_before, "after": loadavg() },
        "uwsgi": { "path": uwsgi, "version": uwsgi_version },
        "python": python,
        "rows": report.rows,
        "checks": report.checks,
        "notes": report.notes,
        "targets": report.targets,
    });
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("results: {}", path.display());
    Ok(failures.is_empty())
}

/// `FLARE_PYTHON`, else the workspace's `target/py-venv` (where the
/// tests and `bench/run.sh` install the package), if it imports `flare`.
fn find_python() -> Option<PathBuf> {
    let candidate = std::env::var_os("FLARE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/py-venv/bin/python"));
    let ok = std::process::Command::new(&candidate)
        .args(["-c", "import flare.uwsgi"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(candidate)
}

/// `FLARE_UWSGI`, else the workspace venv, else `uwsgi` on the PATH.
fn find_uwsgi() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("FLARE_UWSGI") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!(
                "FLARE_UWSGI={} is not a file; point it at a uwsgi binary \
                 (bash bench/run.sh installs pyuwsgi 2.0.30 and sets it)",
                p.display()
            ))
        };
    }
    let venv = workspace().join("target/uwsgi-venv/bin/uwsgi");
    if venv.is_file() {
        return Ok(venv);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("uwsgi");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(
        "uWSGI not found: set FLARE_UWSGI to a uwsgi binary, or run `bash bench/run.sh` \
         (it installs pyuwsgi 2.0.30 in target/uwsgi-venv), or pass --flare-only"
            .into(),
    )
}

fn version(uwsgi: &Path) -> Result<String, String> {
    let out = std::process::Command::new(uwsgi)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", uwsgi.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} --version failed: {}",
            uwsgi.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn machine() -> serde_json::Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_owned());
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
    })
}

/// `/proc/loadavg`: how busy the machine was around the run.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_owned()
}
