//! Remote signals between flare and a real uWSGI (pyuwsgi from PyPI), both
//! ways.

mod common;

use std::process::{Command, Stdio};

use common::{Group, demo_listening, flare_signal, free_port, temp_dir, uwsgi, wait_in_file};

const APP: &str = r#"
import uwsgi

def handler(num):
    print("HANDLER ran", num, "in worker", uwsgi.worker_id(), flush=True)

uwsgi.register_signal(17, "worker", handler)
print("APP READY", flush=True)

def application(env, start_response):
    start_response("200 OK", [])
    return [b"ok"]
"#;

#[test]
fn flare_signal_runs_a_python_handler_on_a_uwsgi_node() {
    let dir = temp_dir("uwsgi-node");
    std::fs::write(dir.join("app.py"), APP).unwrap();
    let log = dir.join("uwsgi.log");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut cmd = Command::new(uwsgi());
    cmd.current_dir(&dir)
        .args(["--master", "--processes", "1", "--wsgi-file", "app.py"])
        .args(["--socket", &addr, "--die-on-term", "--log-master"])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null());
    let node = Group::spawn(cmd);
    wait_in_file(&log, "APP READY");
    wait_in_file(&log, "spawned uWSGI worker 1");

    let (code, out) = flare_signal(&[&addr, "17"]);
    assert_eq!(code, 0, "{out}");
    wait_in_file(&log, "HANDLER ran 17 in worker 1");
    drop(node);

    // Nobody there any more.
    let (code, _) = flare_signal(&[&format!("127.0.0.1:{}", free_port()), "17"]);
    assert_eq!(code, 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn uwsgi_signal_reaches_a_flare_master_and_respects_its_allow_list() {
    let addr = format!("127.0.0.1:{}", free_port());
    let demo = demo_listening(&addr, Some("17"));
    let client = |num: &str| {
        let out = Command::new(uwsgi())
            .args(["--signal", &format!("{addr},{num}")])
            .output()
            .expect("run uwsgi --signal");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code().unwrap_or(-1), text)
    };
    let (code, text) = client("17");
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&format!("signal 17 delivered to node {addr}")),
        "{text}"
    );
    let (code, text) = client("18");
    assert_eq!(code, 2, "uWSGI's client sees the rejection: {text}");
    assert!(text.contains("rejected signal 18"), "{text}");
    let (code, out) = flare_signal(&[&addr, "18"]);
    assert_eq!(code, 2, "{out}");

    let (status, lines) = demo.interrupt();
    assert!(status.success());
    let ran = lines
        .iter()
        .filter(|l| l.contains("ran signal 17") && l.contains("raised by remote"))
        .count();
    assert_eq!(
        ran,
        4,
        "the flare handler ran in every worker:\n{}",
        lines.join("\n")
    );
}
