//! `flare-bench flare-node fan-out-floor`: the kernel's floor under the
//! fan-out scenario. The same processes and hops as flare's fan-out (a
//! sender, a relay in the master's place, K readers in the workers'
//! places), joined by plain pipes, with blocking reads and nothing else: no
//! runtime, no framing, no routing. What it measures is what waking K
//! sleeping processes costs on this machine, the part of the fan-out
//! figures no runtime can remove.
//!
//! Output: `RESULT` once `OUT/result.json` is written (like every node),
//! then `SUMMARY {}` after the children are gone.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, pipe, read, write};
use serde_json::json;

use crate::board::{self, Board, Field, now_ns};
use crate::node::NodeArgs;

/// Runs the floor node; returns the exit code.
pub fn main(a: &NodeArgs) -> i32 {
    match run(a) {
        Ok(()) => {
            println!("SUMMARY {{}}");
            let _ = std::io::stdout().flush();
            0
        }
        Err(e) => {
            eprintln!("floor node failed: {e}");
            1
        }
    }
}

fn run(a: &NodeArgs) -> Result<(), String> {
    let k = a.workers;
    if k == 0 || k as usize > board::MAX_ID {
        return Err(format!("1 to {} readers", board::MAX_ID));
    }
    let board = Board::map().map_err(|e| format!("board: {e}"))?;
    let (relay_rx, relay_tx) = pipe().map_err(|e| format!("pipe: {e}"))?;
    let mut readers = Vec::new();
    for _ in 0..k {
        readers.push(pipe().map_err(|e| format!("pipe: {e}"))?);
    }
    let mut children = Vec::new();
    for (i, (rx, _)) in readers.iter().enumerate() {
        let id = i as u32 + 1;
        match fork()? {
            ForkResult::Child => reader(board, id, rx),
            ForkResult::Parent { child } => children.push(child),
        }
    }
    match fork()? {
        ForkResult::Child => relay(&relay_rx, &readers),
        ForkResult::Parent { child } => children.push(child),
    }
    let outcome = send(board, a, &relay_tx, k);
    for &pid in &children {
        let _ = kill(pid, Signal::SIGKILL);
    }
    for &pid in &children {
        let _ = waitpid(pid, None);
    }
    let samples = outcome?;
    let tmp = a.out.join("result.json.tmp");
    let text = serde_json::to_vec(&json!({ "samples_ns": samples, "workers": k }))
        .map_err(|e| e.to_string())?;
    std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, a.out.join("result.json")).map_err(|e| format!("rename: {e}"))?;
    println!("RESULT");
    let _ = std::io::stdout().flush();
    Ok(())
}

/// The node is single-threaded here (a fresh process started by the
/// harness), so forking is sound.
#[allow(unsafe_code)]
fn fork() -> Result<ForkResult, String> {
    // SAFETY: this process has one thread (the harness starts the node as a
    // new process and nothing here spawns threads), so the child gets a
    // consistent copy of every lock and of the allocator.
    unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))
}

/// A reader: blocks in `read`, stamps its start on the board, as the
/// fan-out handler does.
fn reader(board: Board, id: u32, rx: &OwnedFd) -> ! {
    board.set_slot(id, Field::Ready, 1);
    let mut byte = [0u8; 1];
    loop {
        match read(rx.as_fd(), &mut byte) {
            Ok(1) => {
                let t = now_ns();
                board.set_slot(id, Field::Last, t);
                board.set_slot(id, Field::Seen, board.get(board::ROUND));
            }
            Err(nix::errno::Errno::EINTR) => {}
            _ => std::process::exit(0),
        }
    }
}

/// The relay: one byte in, one byte to every reader.
fn relay(rx: &OwnedFd, readers: &[(OwnedFd, OwnedFd)]) -> ! {
    let mut byte = [0u8; 1];
    loop {
        match read(rx.as_fd(), &mut byte) {
            Ok(1) => {
                for (_, tx) in readers {
                    if write(tx, &byte).is_err() {
                        std::process::exit(1);
                    }
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            _ => std::process::exit(0),
        }
    }
}

/// The sender: the fan-out mule's loop, with a pipe write for `send()`.
fn send(board: Board, a: &NodeArgs, tx: &OwnedFd, k: u32) -> Result<Vec<u64>, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(1..=k).all(|id| board.slot(id, Field::Ready) == 1) {
        if Instant::now() > deadline {
            return Err("readers did not start within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut samples = Vec::with_capacity(a.n as usize);
    for r in 1..=a.warmup + a.n {
        board.set(board::ROUND, r);
        let t0 = now_ns();
        write(tx, b"x").map_err(|e| format!("write: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(1..=k).all(|id| board.slot(id, Field::Seen) == r) {
            if Instant::now() > deadline {
                return Err(format!("round {r} did not reach all {k} readers in 10 s"));
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        let last = (1..=k)
            .map(|id| board.slot(id, Field::Last))
            .max()
            .unwrap_or(t0);
        if r > a.warmup {
            samples.push(last.saturating_sub(t0));
        }
    }
    Ok(samples)
}
