//! `flare signal`: uWSGI's exit codes, against a flare master.

mod common;

use common::{demo_listening, flare_signal, free_port, temp_dir};

#[test]
fn exit_codes_are_uwsgis() {
    let dir = temp_dir("signal");
    let sock = dir.join("demo.sock");
    let addr = sock.to_str().unwrap();
    let demo = demo_listening(addr, Some("17"));

    let (code, out) = flare_signal(&[addr, "17"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.trim(), format!("signal 17 delivered to node {addr}"));

    let (code, out) = flare_signal(&[&format!("{addr},17")]);
    assert_eq!(code, 0, "the ADDR,NUM form: {out}");

    let (code, out) = flare_signal(&[addr, "18"]);
    assert_eq!(code, 2, "off the allow-list: {out}");
    assert_eq!(out.trim(), format!("node {addr} rejected signal 18"));

    for bad in ["256", "-1", "x"] {
        let (code, _) = flare_signal(&[addr, bad]);
        assert_eq!(code, 3, "bad number {bad}");
    }

    let nobody = format!("127.0.0.1:{}", free_port());
    let (code, out) = flare_signal(&[&nobody, "17"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("unable to deliver signal 17"), "{out}");

    let (status, lines) = demo.interrupt();
    assert!(status.success());
    let ran = lines
        .iter()
        .filter(|l| l.contains("ran signal 17") && l.contains("raised by remote"))
        .count();
    assert_eq!(
        ran,
        8,
        "two remote signals, four workers each:\n{}",
        lines.join("\n")
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("remote: accepted 2 | rejected 1")),
        "{}",
        lines.join("\n")
    );
    let _ = std::fs::remove_dir_all(&dir);
}
