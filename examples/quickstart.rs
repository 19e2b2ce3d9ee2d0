//! The README's quick start: a master with workers and a mule; the mule
//! raises signals, the workers run the handlers; then the group stops.
//!
//! Run it with `cargo run -p flare-signals --example quickstart`.

use flare::{Master, Mule, Signal};

fn main() -> flare::Result<()> {
    let master = Master::builder()
        .workers(3)
        .mules(1)
        .mule_entry(|me| {
            // Runs in mule 1 after fork.
            println!("mule {} (pid {}) raising signals", me.id, me.pid);
            Signal::new(1).send().expect("send");
            Signal::new(2).send().expect("send");
            // Stop the group: queued signals are handled first.
            flare::stop().expect("stop");
            flare::serve_forever();
        })
        .build()?;

    // Registered in the master before run(): every child inherits them.
    Signal::new(1).register_handler("workers", |rx| {
        let me = flare::whoami().expect("inside the group");
        println!("{} ran signal {} from {}", me.proc_id(), rx.num, rx.origin);
    })?;
    Signal::new(2).register_handler(Mule(1), |rx| {
        println!("mule 1 ran signal {}", rx.num);
    })?;

    let summary = master.run()?;
    print!("{}", summary.table());
    Ok(())
}
