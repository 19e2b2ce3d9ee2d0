//! `flare serve --attach`: a master with no code of its own; a client
//! speaking docs/attach.md's frames joins, registers, raises and is
//! delivered to, and the summary counts it.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use common::{DEADLINE, Proc, flare};

fn frame(kind: u8, num: u8, word: u32, long: u64) -> Vec<u8> {
    let mut f = vec![0u8; 16];
    f[0] = kind;
    f[1] = num;
    f[4..8].copy_from_slice(&word.to_le_bytes());
    f[8..16].copy_from_slice(&long.to_le_bytes());
    f
}

fn request(id: u64, json: &str) -> Vec<u8> {
    let mut v = frame(4, 0, json.len() as u32, id);
    v.extend_from_slice(json.as_bytes());
    v
}

/// One frame and, for a reply, its JSON.
fn read_msg(s: &mut UnixStream) -> ([u8; 16], String) {
    let mut head = [0u8; 16];
    s.read_exact(&mut head).expect("a frame");
    let len = if head[0] == 5 {
        u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize
    } else {
        0
    };
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("its payload");
    (head, String::from_utf8(body).expect("JSON"))
}

#[test]
fn serve_takes_attached_clients_and_counts_them() {
    let dir = std::env::temp_dir().join(format!("flare-serve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("attach.sock");
    let sock = sock.to_str().unwrap();
    let mut cmd = flare();
    cmd.args([
        "serve",
        "--attach",
        sock,
        "--attach-workers",
        "2",
        "--summary",
    ]);
    let mut serve = Proc::spawn(cmd);
    serve.wait_line("attach socket");

    let mut c = UnixStream::connect(sock).expect("connect");
    c.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut hello = request(0, r#"{"version":1,"role":"worker","fds":false}"#);
    hello.extend(request(1, r#"{"Register":{"num":17,"target":"workers"}}"#));
    hello.extend(request(2, r#""Ready""#));
    c.write_all(&hello).unwrap();
    let answer = read_msg(&mut c).1;
    assert!(
        answer.contains(r#""Attached""#) && answer.contains(r#""worker":1"#),
        "{answer}"
    );
    assert_eq!(read_msg(&mut c).1, r#""Ok""#);
    assert_eq!(read_msg(&mut c).1, r#""Ok""#);
    // Its own raise of 17 comes back to it (`workers`: every worker).
    c.write_all(&frame(3, 17, 0, 0)).unwrap();
    let (d, _) = read_msg(&mut c);
    assert_eq!((d[0], d[1]), (1, 17), "a deliver frame for 17");
    let seq = u64::from_le_bytes(d[8..16].try_into().unwrap());
    c.write_all(&frame(2, 0, 0, seq)).unwrap();

    let (status, lines) = serve.interrupt();
    assert!(status.success(), "{status}: {lines:?}");
    let summary = lines
        .iter()
        .find_map(|l| l.strip_prefix("SUMMARY "))
        .expect("a summary");
    let summary: serde_json::Value = serde_json::from_str(summary).unwrap();
    assert_eq!(summary["counters"]["raised"], 1, "{summary}");
    assert_eq!(summary["counters"]["handled"], 1, "{summary}");
    assert_eq!(summary["counters"]["attached"], 1, "{summary}");
    let _ = std::fs::remove_dir_all(&dir);
}
