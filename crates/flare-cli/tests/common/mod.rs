//! Helpers for tests that run the `flare` command (and uWSGI) as a user does.
//! Every wait has a deadline.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub const DEADLINE: Duration = Duration::from_secs(60);

pub fn flare() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flare"))
}

/// Runs `flare signal ARGS...`: exit code and stdout.
pub fn flare_signal(args: &[&str]) -> (i32, String) {
    let out = flare()
        .arg("signal")
        .args(args)
        .output()
        .expect("run flare signal");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A process whose stdout lines are read as they come.
pub struct Proc {
    pub child: Child,
    lines: Receiver<String>,
    pub seen: Vec<String>,
}

impl Proc {
    pub fn spawn(mut cmd: Command) -> Proc {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0);
        let mut child = cmd.spawn().expect("spawn");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `needle`.
    pub fn wait_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no line with {needle:?}; output:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// SIGINT to its process group (Ctrl-C), then the rest of its output.
    pub fn interrupt(mut self) -> (ExitStatus, Vec<String>) {
        let pgid = -(self.child.id() as i32);
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pgid),
            nix::sys::signal::Signal::SIGINT,
        );
        while let Ok(line) = self.lines.recv_timeout(DEADLINE) {
            self.seen.push(line);
        }
        let status = self.child.wait().expect("wait");
        (status, std::mem::take(&mut self.seen))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let pgid = nix::unistd::Pid::from_raw(-(self.child.id() as i32));
            let _ = nix::sys::signal::kill(pgid, nix::sys::signal::Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// A background process group, ended with SIGKILL when dropped.
pub struct Group(pub Child);

impl Group {
    pub fn spawn(mut cmd: Command) -> Group {
        Group(cmd.process_group(0).spawn().expect("spawn"))
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(-(self.0.id() as i32));
        let _ = nix::sys::signal::kill(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

/// `flare demo` listening for remote signals at `addr`, script done.
pub fn demo_listening(addr: &str, allow: Option<&str>) -> Proc {
    let mut cmd = flare();
    cmd.args(["demo", "--step-ms", "0", "--remote", addr]);
    if let Some(a) = allow {
        cmd.args(["--remote-allow", a]);
    }
    let mut p = Proc::spawn(cmd);
    p.wait_line("the group keeps running");
    p
}

/// `flare demo` serving stats at `addr`, script done, still running.
pub fn demo_with_stats(addr: &str) -> Proc {
    let mut cmd = flare();
    cmd.args(["demo", "--step-ms", "0", "--stats", addr]);
    let mut p = Proc::spawn(cmd);
    p.wait_line("the group keeps running");
    p
}

/// A program running in a tmux pane of its own tmux server, for tests that
/// read a real terminal screen.
pub struct Tmux {
    socket: String,
    exit_file: PathBuf,
}

impl Tmux {
    /// Starts `command` in a `width` x `height` pane; its exit code lands
    /// in a file when it ends.
    pub fn start(name: &str, width: u16, height: u16, command: &str) -> Tmux {
        let socket = format!("flare-test-{name}-{}", std::process::id());
        let exit_file = std::env::temp_dir().join(format!("{socket}.exit"));
        let _ = std::fs::remove_file(&exit_file);
        let line = format!("{command}; echo $? > {}; sleep 60", exit_file.display());
        let ok = Command::new("tmux")
            .args(["-L", &socket, "new-session", "-d", "-s", "t"])
            .args(["-x", &width.to_string(), "-y", &height.to_string()])
            .arg(line)
            .env("TERM", "xterm-256color")
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "tmux is needed for this test (apt-get install tmux)");
        Tmux { socket, exit_file }
    }

    pub fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p", "-t", "t"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen satisfies `ok`; returns it.
    pub fn wait_screen(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let screen = self.screen();
            if ok(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "screen never showed {what}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn keys(&self, keys: &str) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "send-keys", "-t", "t", keys])
            .status();
    }

    /// Waits for the program to end; its exit code.
    pub fn exit_code(&self) -> i32 {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Ok(code) = std::fs::read_to_string(&self.exit_file)
                && let Ok(code) = code.trim().parse()
            {
                return code;
            }
            assert!(Instant::now() < deadline, "the program in tmux did not end");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
        let _ = std::fs::remove_file(&self.exit_file);
    }
}

/// uwsgitop from PyPI, in the same venv as uWSGI.
pub fn uwsgitop() -> PathBuf {
    let bin = uwsgi().with_file_name("uwsgitop");
    if !bin.exists() {
        let ok = Command::new(bin.with_file_name("pip"))
            .args(["install", "--quiet", "uwsgitop==0.12"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok && bin.exists(),
            "cannot install uwsgitop next to {}",
            bin.display()
        );
    }
    bin
}

/// A TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("flare-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// The uWSGI binary: `$FLARE_UWSGI`, else `target/uwsgi-venv/bin/uwsgi`,
/// created on first use with `pip install pyuwsgi` (.ci/run creates it
/// up front).
pub fn uwsgi() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    static LOCK: Mutex<()> = Mutex::new(());
    BIN.get_or_init(|| {
        let _g = LOCK.lock();
        if let Some(p) = std::env::var_os("FLARE_UWSGI") {
            return PathBuf::from(p);
        }
        let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/uwsgi-venv");
        let bin = venv.join("bin/uwsgi");
        if !bin.exists() {
            let ok = Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .is_ok_and(|s| s.success())
                && Command::new(venv.join("bin/pip"))
                    .args(["install", "--quiet", "pyuwsgi==2.0.30"])
                    .status()
                    .is_ok_and(|s| s.success());
            assert!(
                ok && bin.exists(),
                "uWSGI is needed for this test: set FLARE_UWSGI to a uwsgi binary, or let the \
                 test install it (python3 -m venv {0}; {0}/bin/pip install pyuwsgi==2.0.30)",
                venv.display()
            );
        }
        bin
    })
    .clone()
}

/// Waits until `path` has a line containing `needle` (a file another
/// process writes).
pub fn wait_in_file(path: &Path, needle: &str) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{needle:?} not in {} after {DEADLINE:?}:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
