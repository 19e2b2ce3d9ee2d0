//! Time limits set from code (`flare::set_user_harakiri`) and the stack
//! dump signal before the kill: `flare-limits user DIR`. Children report
//! as `FACT key=value` lines; the scenario stops itself.

use std::path::PathBuf;
use std::time::Duration;

use flare::{Master, Signal};
use flare_tests::{fact, finish};

/// The stack dump signal's handler: one async-signal-safe write.
extern "C" fn on_dump(_: nix::libc::c_int) {
    let line = b"FACT dump=received\n";
    // SAFETY: write(2) on stdout with a valid buffer is async-signal-safe.
    unsafe {
        nix::libc::write(1, line.as_ptr().cast(), line.len());
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("user") if args.len() == 2 => user(PathBuf::from(&args[1])),
        _ => {
            eprintln!("usage: flare-limits user DIR");
            std::process::exit(2);
        }
    };
    finish(result);
}

/// Mule 1 sets a 200 ms limit for itself and hangs (the first time, told
/// by a marker directory): the master sends SIGUSR1 (its stack dump
/// signal), then kills it 300 ms later; the respawned mule stops the group.
fn user(dir: PathBuf) -> flare::Result<flare::Summary> {
    let master = Master::builder()
        .workers(1)
        .mules(1)
        .harakiri_stack_dump(nix::libc::SIGUSR1, Duration::from_millis(300))
        .mule_entry(move |_| {
            let action = nix::sys::signal::SigAction::new(
                nix::sys::signal::SigHandler::Handler(on_dump),
                nix::sys::signal::SaFlags::empty(),
                nix::sys::signal::SigSet::empty(),
            );
            // SAFETY: the handler only calls write(2).
            unsafe { nix::sys::signal::sigaction(nix::sys::signal::Signal::SIGUSR1, &action) }
                .expect("sigaction");
            if std::fs::create_dir(dir.join("hung")).is_ok() {
                flare::set_user_harakiri(Some(Duration::from_millis(200))).expect("limit");
                fact("hanging", "yes");
                loop {
                    std::thread::park();
                }
            }
            // A cleared limit is never enforced: set one, clear it, outlive it.
            flare::set_user_harakiri(Some(Duration::from_millis(100))).expect("limit");
            flare::set_user_harakiri(None).expect("clear");
            let _ = flare::mule_get_msg(flare::GetMsg {
                // Past the cleared limit, its stack dump grace and a check.
                timeout: Some(Duration::from_millis(800)),
                ..flare::GetMsg::default()
            });
            fact("respawned", "yes");
            Signal::new(1).send().expect("send");
            flare::serve_forever();
        })
        .build()?;
    Signal::new(1).register_handler("worker1", |_| flare::stop().expect("stop"))?;
    let outside = flare::set_user_harakiri(Some(Duration::from_secs(1)));
    fact("in_master", outside.is_err());
    master.run()
}
