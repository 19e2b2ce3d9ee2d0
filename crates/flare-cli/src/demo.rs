//! `flare demo`: a scripted group that shows every kind of target.
//!
//! Mule 1 conducts: for each step it cues the process that acts (with a
//! cue signal only that process handles), waits a moment so the output
//! stays readable, and at the end asks the master to stop. Every handler
//! run prints one line: who ran it, the signal, its target, who raised it.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use flare::{Farm, Master, Mule, Received, Signal, Source, Target};

/// Options of `flare demo`.
#[derive(clap::Args)]
pub struct Args {
    /// Pause between steps, in milliseconds.
    #[arg(long, default_value_t = 350)]
    step_ms: u64,
    /// Also listen for remote signals here (`host:port`, `:port`, a socket
    /// path): try `flare signal ADDR 17`. The demo then keeps running after
    /// its script, until Ctrl-C.
    #[arg(long, value_name = "ADDR")]
    remote: Option<String>,
    /// With --remote: only these signal numbers may be raised remotely
    /// (comma separated); others are answered "rejected".
    #[arg(long, value_name = "NUMS", value_delimiter = ',', requires = "remote")]
    remote_allow: Option<Vec<u8>>,
    /// Serve stats here (`host:port` or a socket path): watch with
    /// `flare top ADDR`. The demo then keeps running until Ctrl-C.
    #[arg(long, value_name = "ADDR")]
    stats: Option<String>,
    /// Take control commands on this Unix socket: try
    /// `flare ctl ADDR pause worker2`. The demo then keeps running.
    #[arg(long, value_name = "PATH")]
    control: Option<String>,
    /// Users (uids, comma separated) who may use the Unix-socket endpoints
    /// besides root and the demo's own user; peers are checked with
    /// SO_PEERCRED, abstract `@name` sockets included.
    #[arg(long, value_name = "UIDS", value_delimiter = ',')]
    allow_uid: Vec<u32>,
}

/// While the demo lingers, a quiet timer keeps the workers busy so live
/// views have something to show.
const HEARTBEAT_SIGNAL: u8 = 33;

/// The signal the demo offers to remote nodes.
const REMOTE_SIGNAL: u8 = 17;

/// What one step does, and who does it.
struct Step {
    actor: &'static str,
    what: &'static str,
    raise: &'static [u8],
}

const STEPS: &[Step] = &[
    Step {
        actor: "worker1",
        what: "raises 1 for `workers`: every worker runs it",
        raise: &[1],
    },
    Step {
        actor: "mule1",
        what: "raises 2 four times for `worker`: the first available worker each time",
        raise: &[2, 2, 2, 2],
    },
    Step {
        actor: "spooler1",
        what: "raises 3 for `worker3`: only worker 3",
        raise: &[3],
    },
    Step {
        actor: "worker4",
        what: "raises 4 for `active-workers`: every running, unpaused worker",
        raise: &[4],
    },
    Step {
        actor: "worker2",
        what: "registers 20 for `workers` at run time, then raises it: only worker 2 holds that handler",
        raise: &[20],
    },
    Step {
        actor: "mule2",
        what: "raises 5 for `mules`: every mule",
        raise: &[5],
    },
    Step {
        actor: "worker3",
        what: "raises 6 twice for `mule`: the first available mule",
        raise: &[6, 6],
    },
    Step {
        actor: "worker1",
        what: "raises 7 for `mule2` (Mule(2))",
        raise: &[7],
    },
    Step {
        actor: "worker2",
        what: "raises 8 twice for `farm_reports` (Farm::named): a free mule of the farm",
        raise: &[8, 8],
    },
    Step {
        actor: "worker4",
        what: "raises 9 for `farm1` (Farm::index(1)): the same farm by number",
        raise: &[9],
    },
    Step {
        actor: "mule2",
        what: "raises 10 for `spooler`: the first available spooler",
        raise: &[10],
    },
    Step {
        actor: "worker2",
        what: "writes the watched file: its file monitor raises 32 for `spooler`",
        raise: &[],
    },
    Step {
        actor: "worker3",
        what: "raises 99, which nobody registered: the first available worker records it",
        raise: &[99],
    },
];

/// Step `i` is cued by signal `CUE + i`, registered for its actor only.
const CUE: u8 = 200;

/// The one unregistered signal of the script.
const UNREGISTERED: u8 = 99;

/// Signals raised by the demo's sources: an rb timer, a cron entry and a
/// file monitor.
const TIMER_SIGNAL: u8 = 30;
const CRON_SIGNAL: u8 = 31;
const FILE_SIGNAL: u8 = 32;

/// The file the demo watches (set before the fork, so every child has it).
static WATCHED: OnceLock<PathBuf> = OnceLock::new();

fn me() -> String {
    flare::whoami().map_or("?".into(), |w| w.proc_id().to_string())
}

/// The handler every demo signal gets: one line per run.
fn show(target: Target) -> impl Fn(Received) + Send + Sync + 'static {
    move |rx| {
        println!(
            "    {:<8} ran signal {:>2}  target {:<15} raised by {}",
            me(),
            rx.num,
            target.to_string(),
            rx.origin
        );
    }
}

/// Does the step its cue names, in the actor's process.
fn perform(rx: Received) {
    let Some(step) = STEPS.get(usize::from(rx.num - CUE)) else {
        return;
    };
    if step.raise.is_empty() {
        if let Some(path) = WATCHED.get()
            && let Err(e) = std::fs::write(path, b"changed by the demo\n")
        {
            println!("    {}: could not write {}: {e}", me(), path.display());
        }
        return;
    }
    if step.raise == [20] {
        let target = Target::Workers;
        if let Err(e) = Signal::new(20).register_handler(target.clone(), show(target)) {
            println!("    {}: could not register signal 20: {e}", me());
            return;
        }
    }
    raise_all(step);
}

fn raise_all(step: &Step) {
    for &num in step.raise {
        if let Err(e) = Signal::new(num).send() {
            println!("    {}: could not raise {num}: {e}", me());
        }
    }
}

pub fn run(args: Args) -> flare::Result<()> {
    let pause = Duration::from_millis(args.step_ms);
    let linger = args.remote.is_some() || args.stats.is_some() || args.control.is_some();
    println!("flare demo: 4 workers, 2 mules (farm `reports` = mules 1 and 2), 1 spooler");
    println!("every handler run prints: process, signal, target, who raised it");
    if let Some(addr) = &args.remote {
        println!(
            "listening for remote signals on {addr}: try `flare signal {addr} {REMOTE_SIGNAL}` \
             (signal {REMOTE_SIGNAL} runs in every worker)"
        );
    }
    if let Some(addr) = &args.stats {
        println!("stats on {addr}: watch with `flare top {addr}` or `flare stats {addr}`");
    }
    if let Some(addr) = &args.control {
        println!("control on {addr}: try `flare ctl {addr} pause worker2`");
    }
    println!();
    let dir = std::env::temp_dir().join(format!("flare-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| flare::Error::Io {
        context: "creating the demo's directory",
        source: e,
    })?;
    let watched = WATCHED.get_or_init(|| dir.join("watched.txt")).clone();
    let mut builder = Master::builder();
    if let Some(addr) = &args.stats {
        builder = builder.stats(addr.clone());
    }
    if let Some(addr) = &args.control {
        builder = builder.control(addr.clone());
    }
    builder = builder.allow_uids(args.allow_uid.iter().copied());
    if let Some(addr) = &args.remote {
        builder = builder.remote(addr.clone());
        if let Some(allow) = args.remote_allow {
            builder = builder.remote_allow(allow);
        }
    }
    let master = builder
        .workers(4)
        .mules(2)
        .farm("reports", [1, 2])
        .spoolers(1)
        .mule_entry(move |me| {
            if me.id != 1 {
                flare::serve_forever();
            }
            // Mule 1 conducts.
            std::thread::sleep(pause);
            for (i, step) in STEPS.iter().enumerate() {
                println!("[{:>2}] {} {}", i + 1, step.actor, step.what);
                if step.actor == "mule1" {
                    raise_all(step);
                } else if let Err(e) = Signal::new(CUE + i as u8).send() {
                    println!("     cannot cue {}: {e}", step.actor);
                }
                std::thread::sleep(pause);
            }
            if linger {
                println!("[end] script done; the group keeps running for you: Ctrl-C to stop\n");
                flare::serve_forever();
            }
            println!(
                "[end] mule1 asks the master to stop; the master drains, then stops everyone\n"
            );
            if let Err(e) = flare::stop() {
                println!("     cannot stop: {e}");
            }
            flare::serve_forever();
        })
        .build()?;
    let targets: [(u8, Target); 10] = [
        (1, Target::Workers),
        (2, Target::Worker),
        (3, Target::WorkerN(3)),
        (4, Target::ActiveWorkers),
        (5, Target::Mules),
        (6, Target::Mule),
        (7, Mule(2).into()),
        (8, Farm::named("reports").into()),
        (9, Farm::index(1).into()),
        (10, Target::Spooler),
    ];
    for (num, target) in targets {
        Signal::new(num).register_handler(target.clone(), show(target))?;
    }
    Signal::new(REMOTE_SIGNAL).register_handler(Target::Workers, show(Target::Workers))?;
    // Sources: a timer firing three times, a cron entry for every minute
    // (it fires in the minute it is added), and a file monitor.
    Signal::new(TIMER_SIGNAL).register_handler(Target::Worker, show(Target::Worker))?;
    Signal::new(CRON_SIGNAL).register_handler(Target::Mules, show(Target::Mules))?;
    Signal::new(FILE_SIGNAL).register_handler(Target::Spooler, show(Target::Spooler))?;
    let period = (pause * 3).max(Duration::from_millis(20));
    Source::rb_timer(period, Some(3)).raise(TIMER_SIGNAL)?;
    flare::add_cron(CRON_SIGNAL, "* * * * *")?;
    flare::add_file_monitor(FILE_SIGNAL, &watched)?;
    if linger {
        Signal::new(HEARTBEAT_SIGNAL).register_handler(Target::ActiveWorkers, |_| {})?;
        Source::timer(Duration::from_millis(250)).raise(HEARTBEAT_SIGNAL)?;
    }
    println!(
        "sources: an rb timer (signal {TIMER_SIGNAL}, every {} ms, 3 times), a cron entry \
         for every minute (signal {CRON_SIGNAL}), a file monitor on {} (signal {FILE_SIGNAL})\n",
        period.as_millis(),
        watched.display()
    );
    for (i, step) in STEPS.iter().enumerate() {
        let target: Target = match step.actor {
            "mule1" => continue,
            "spooler1" => Target::Spooler,
            actor => actor.parse()?,
        };
        Signal::new(CUE + i as u8).register_handler(target, perform)?;
    }
    let summary = master.run();
    let _ = std::fs::remove_dir_all(&dir);
    let summary = summary?;
    for p in &summary.processes {
        if p.handled_by_num.contains_key(&UNREGISTERED) {
            println!(
                "signal {UNREGISTERED} (unregistered) was recorded by {} as its last received signal",
                p.proc
            );
        }
    }
    println!("\nsummary: signals raised and handled per process (cue signals included)");
    print!("{}", summary.table());
    Ok(())
}
