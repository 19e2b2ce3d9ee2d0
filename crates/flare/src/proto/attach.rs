//! The attach handshake: what a process that flare did not fork sends to
//! join a group as a worker, and the master's answer. Both are a request or
//! reply frame (id 0) with a JSON payload; after them the socket carries
//! the usual channel frames. Pure: no I/O. See docs/attach.md.

use serde::{Deserialize, Serialize};

use super::{FRAME_LEN, Frame, MAX_PAYLOAD, RawFrame};
use crate::topology::Topology;

/// The protocol version this master speaks.
pub(crate) const VERSION: u32 = 1;

/// The hello: the client's first and only message before the frames.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Hello {
    /// The protocol version the client speaks.
    pub(crate) version: u32,
    /// What it joins as; `worker` is the only role.
    #[serde(default = "worker")]
    pub(crate) role: String,
    /// Whether it takes descriptors (flare's own Rust and Python clients):
    /// the master then passes the channel pipes and the group's shared
    /// memory with `SCM_RIGHTS` and closes the socket.
    #[serde(default)]
    pub(crate) fds: bool,
}

fn worker() -> String {
    "worker".to_owned()
}

/// The master's answer to a hello.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Answer {
    /// Joined: the process is worker `worker` from now on.
    Attached(Attached),
    /// Not joined, and why; the master closes the socket after it.
    Refused(String),
}

/// What an attached process learns about its place.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Attached {
    /// The protocol version of the master.
    pub(crate) version: u32,
    /// Its worker id: it is `worker{worker}`.
    pub(crate) worker: u32,
    /// The master's pid.
    pub(crate) master_pid: u32,
    /// For a client that takes descriptors: what it needs to run as a
    /// forked worker does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) setup: Option<Setup>,
}

/// What a descriptor-taking client needs besides the descriptors, which
/// come in this order: channel A's read and write ends, channel B's read
/// and write ends, the status memory, then the locks' file if `locks` is
/// above zero, then the spooler's shared settings if `spool` is given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Setup {
    /// Its slot in the master's tables and in shared memory.
    pub(crate) slot: usize,
    /// The group's shape, for targets.
    pub(crate) topology: Topology,
    /// `Options::busy_poll`, in nanoseconds.
    pub(crate) busy_poll_ns: u64,
    /// How many locks the group has (0: none passed).
    pub(crate) locks: u32,
    /// The group's spool directories, so the process can spool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) spool: Option<SpoolShare>,
}

/// The spool settings an attached process takes on (it spools; it never
/// serves a directory).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SpoolShare {
    /// The spool directories, in the order they were configured.
    pub(crate) dirs: Vec<std::path::PathBuf>,
    /// Spoolers per directory.
    pub(crate) per_dir: u32,
    /// Whether `spool()` fsyncs.
    pub(crate) fsync: bool,
    /// Whether plain jobs go to the journal.
    pub(crate) journal: bool,
}

/// Descriptors that come with an [`Answer::Attached`] in descriptor mode,
/// before the locks' file.
pub(crate) const SETUP_FDS: usize = 5;

/// How far a hello has come, from the bytes received so far.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Progress {
    /// More bytes are needed.
    Partial,
    /// Whole: the hello, and how many bytes it took.
    Done(Hello, usize),
}

/// Reads a hello from the first bytes a client sent. An error is the text
/// of the refusal.
pub(crate) fn parse_hello(buf: &[u8]) -> Result<Progress, String> {
    let Some(head) = buf.get(..FRAME_LEN) else {
        return Ok(Progress::Partial);
    };
    let head: &RawFrame = head
        .try_into()
        .map_err(|_| "a frame is 16 bytes".to_owned())?;
    let len = match Frame::decode(head) {
        Ok(Frame::Request { id: 0, len }) => len as usize,
        Ok(_) => {
            return Err(format!(
                "the first message must be the hello: a request frame (kind 4) with id 0 and \
                 a JSON payload {{\"version\": {VERSION}, \"role\": \"worker\"}}; got kind {}",
                head[0]
            ));
        }
        Err(e) => return Err(format!("{e}; the first message must be the hello")),
    };
    if len > MAX_PAYLOAD {
        return Err(format!("a hello of {len} bytes; at most {MAX_PAYLOAD}"));
    }
    let Some(body) = buf.get(FRAME_LEN..FRAME_LEN + len) else {
        return Ok(Progress::Partial);
    };
    let hello: Hello = serde_json::from_slice(body).map_err(|e| {
        format!(
            "the hello is not valid JSON of the form {{\"version\": {VERSION}, \"role\": \
             \"worker\", \"fds\": false}}: {e}"
        )
    })?;
    if hello.version != VERSION {
        return Err(format!(
            "protocol version {} is not supported; this master speaks version {VERSION}",
            hello.version
        ));
    }
    if hello.role != "worker" {
        return Err(format!(
            "role `{}` cannot attach; attached processes join as `worker`",
            hello.role
        ));
    }
    Ok(Progress::Done(hello, FRAME_LEN + len))
}

/// Encodes a hello (for flare's own clients).
pub(crate) fn encode_hello(fds: bool) -> Vec<u8> {
    let hello = Hello {
        version: VERSION,
        role: worker(),
        fds,
    };
    encode(false, &hello)
}

/// Encodes an answer.
pub(crate) fn encode_answer(answer: &Answer) -> Vec<u8> {
    encode(true, answer)
}

fn encode<T: Serialize>(reply: bool, body: &T) -> Vec<u8> {
    let mut out = Vec::new();
    // These small types always serialise, and far below the limit.
    if super::encode_with_payload(reply, 0, body, &mut out).is_err() {
        out.clear();
    }
    out
}

/// Reads an answer (for flare's own clients): `Partial` until whole.
pub(crate) fn parse_answer(buf: &[u8]) -> Result<Option<(Answer, usize)>, String> {
    let Some(head) = buf.get(..FRAME_LEN) else {
        return Ok(None);
    };
    let head: &RawFrame = head
        .try_into()
        .map_err(|_| "a frame is 16 bytes".to_owned())?;
    let len = match Frame::decode(head) {
        Ok(Frame::Reply { id: 0, len }) => len as usize,
        Ok(f) => return Err(format!("the master answered with {f:?}, not a reply")),
        Err(e) => return Err(e.to_string()),
    };
    let Some(body) = buf.get(FRAME_LEN..FRAME_LEN + len) else {
        return Ok(None);
    };
    serde_json::from_slice(body)
        .map(|a| Some((a, FRAME_LEN + len)))
        .map_err(|e| format!("unreadable answer: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hello_round_trips_whatever_the_cut() {
        let bytes = encode_hello(true);
        for cut in 0..bytes.len() {
            assert_eq!(parse_hello(&bytes[..cut]), Ok(Progress::Partial), "{cut}");
        }
        match parse_hello(&bytes) {
            Ok(Progress::Done(h, n)) => {
                assert!(h.fds && h.version == VERSION && h.role == "worker");
                assert_eq!(n, bytes.len());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_minimal_hello_from_another_language_is_enough() {
        let mut bytes = Vec::new();
        let body = br#"{"version":1}"#;
        bytes.extend_from_slice(&[4, 0, 0, 0]);
        bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&0u64.to_le_bytes());
        bytes.extend_from_slice(body);
        let Ok(Progress::Done(h, _)) = parse_hello(&bytes) else {
            panic!()
        };
        assert!(!h.fds && h.role == "worker");
    }

    #[test]
    fn bad_hellos_say_what_is_expected() {
        let raise = Frame::Raise { num: 3 }.encode();
        assert!(
            parse_hello(&raise)
                .unwrap_err()
                .contains("must be the hello")
        );
        assert!(
            parse_hello(&[9; 16])
                .unwrap_err()
                .contains("unknown frame kind 9")
        );
        let mut v2 = Vec::new();
        super::super::encode_with_payload(false, 0, &serde_json::json!({"version": 2}), &mut v2)
            .unwrap();
        let e = parse_hello(&v2).unwrap_err();
        assert!(e.contains("version 2") && e.contains("version 1"), "{e}");
        let mut junk = Vec::new();
        junk.extend_from_slice(&Frame::Request { id: 0, len: 3 }.encode());
        junk.extend_from_slice(b"{{{");
        assert!(parse_hello(&junk).unwrap_err().contains("not valid JSON"));
        let mut mule = Vec::new();
        super::super::encode_with_payload(
            false,
            0,
            &serde_json::json!({"version": 1, "role": "mule"}),
            &mut mule,
        )
        .unwrap();
        assert!(parse_hello(&mule).unwrap_err().contains("role `mule`"));
    }

    #[test]
    fn answers_round_trip() {
        let a = Answer::Attached(Attached {
            version: VERSION,
            worker: 3,
            master_pid: 10,
            setup: None,
        });
        let bytes = encode_answer(&a);
        assert_eq!(parse_answer(&bytes[..10]), Ok(None));
        assert_eq!(parse_answer(&bytes), Ok(Some((a, bytes.len()))));
        let json = std::str::from_utf8(&bytes[FRAME_LEN..]).unwrap();
        assert_eq!(
            json,
            r#"{"Attached":{"version":1,"worker":3,"master_pid":10}}"#
        );
    }
}
