//! Wire codecs: the child <-> master channel and uwsgi packets.
//!
//! Every message is a 16-byte frame; requests and replies carry a JSON
//! payload right after their frame. Both sides read and write many frames
//! per system call. Layout (little endian):
//!
//! | bytes | field |
//! |---|---|
//! | 0 | kind: 1 deliver, 2 ack, 3 raise, 4 request, 5 reply |
//! | 1 | signal number |
//! | 2 | attempt (deliver) |
//! | 3 | flags: bit 0 = given to one member of a pool (deliver) |
//! | 4..8 | u32: origin (deliver), payload length (request, reply) |
//! | 8..16 | u64: sequence (deliver, ack), request id (request, reply) |
//!
//! Pure: no I/O. See docs/wire-formats.md. The uwsgi packet codec for
//! remote signals is in [`uwsgi`].

pub(crate) mod attach;
pub mod uwsgi;

use serde::{Deserialize, Serialize};

use crate::error::{Error, RegistrationError};
use crate::origin::Origin;

/// Size of every frame.
pub(crate) const FRAME_LEN: usize = 16;

/// Largest payload a request or reply may carry.
pub(crate) const MAX_PAYLOAD: usize = 64 * 1024;

/// One encoded frame.
pub(crate) type RawFrame = [u8; FRAME_LEN];

const DELIVER: u8 = 1;
const ACK: u8 = 2;
const RAISE: u8 = 3;
const REQUEST: u8 = 4;
const REPLY: u8 = 5;

const FLAG_POOLED: u8 = 1;

/// A decoded frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// Master to child: run the handler of `num`. `seq` numbers the
    /// deliveries to one process, increasing.
    Deliver {
        num: u8,
        attempt: u8,
        origin: Origin,
        seq: u64,
        pooled: bool,
    },
    /// Child to master: every delivery up to and including `seq` is handled.
    Ack { seq: u64 },
    /// Child to master: raise `num`.
    Raise { num: u8 },
    /// Child to master: a request; `len` payload bytes follow.
    Request { id: u64, len: u32 },
    /// Master to child: the reply to request `id`; `len` payload bytes follow.
    Reply { id: u64, len: u32 },
}

impl Frame {
    /// Encodes into 16 bytes.
    pub(crate) fn encode(self) -> RawFrame {
        let mut b = [0u8; FRAME_LEN];
        let (kind, num, attempt, word, long) = match self {
            Frame::Deliver {
                num,
                attempt,
                origin,
                seq,
                pooled,
            } => {
                b[3] = u8::from(pooled) * FLAG_POOLED;
                (DELIVER, num, attempt, origin.encode(), seq)
            }
            Frame::Ack { seq } => (ACK, 0, 0, 0, seq),
            Frame::Raise { num } => (RAISE, num, 0, 0, 0),
            Frame::Request { id, len } => (REQUEST, 0, 0, len, id),
            Frame::Reply { id, len } => (REPLY, 0, 0, len, id),
        };
        b[0] = kind;
        b[1] = num;
        b[2] = attempt;
        b[4..8].copy_from_slice(&word.to_le_bytes());
        b[8..16].copy_from_slice(&long.to_le_bytes());
        b
    }

    /// Decodes 16 bytes.
    pub(crate) fn decode(b: &RawFrame) -> Result<Frame, Error> {
        let word = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let long = u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]);
        Ok(match b[0] {
            DELIVER => Frame::Deliver {
                num: b[1],
                attempt: b[2],
                origin: Origin::decode(word),
                seq: long,
                pooled: b[3] & FLAG_POOLED != 0,
            },
            ACK => Frame::Ack { seq: long },
            RAISE => Frame::Raise { num: b[1] },
            REQUEST | REPLY => {
                if word as usize > MAX_PAYLOAD {
                    return Err(Error::Protocol(format!(
                        "payload of {word} bytes announced; at most {MAX_PAYLOAD} are allowed"
                    )));
                }
                if b[0] == REQUEST {
                    Frame::Request {
                        id: long,
                        len: word,
                    }
                } else {
                    Frame::Reply {
                        id: long,
                        len: word,
                    }
                }
            }
            k => return Err(Error::Protocol(format!("unknown frame kind {k}"))),
        })
    }
}

/// Encodes a request or reply frame with its payload.
pub(crate) fn encode_with_payload<T: Serialize>(
    reply: bool,
    id: u64,
    body: &T,
    out: &mut Vec<u8>,
) -> Result<(), Error> {
    let payload = serde_json::to_vec(body).map_err(|e| Error::Protocol(e.to_string()))?;
    if payload.len() > MAX_PAYLOAD {
        return Err(Error::Protocol(format!(
            "payload of {} bytes; at most {MAX_PAYLOAD} are allowed",
            payload.len()
        )));
    }
    let len = payload.len() as u32;
    let frame = if reply {
        Frame::Reply { id, len }
    } else {
        Frame::Request { id, len }
    };
    out.extend_from_slice(&frame.encode());
    out.extend_from_slice(&payload);
    Ok(())
}

/// A message read off a channel.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Msg<'a> {
    /// A frame without payload.
    Frame(Frame),
    /// A request or reply frame and its payload.
    Payload { frame: Frame, body: &'a [u8] },
}

/// Splits a byte stream into messages, however the reads cut it.
///
/// The consumer may stop after any message; what follows stays here until
/// the next `feed` (an empty one just resumes).
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    pending: Vec<u8>,
}

impl Decoder {
    /// Feeds the bytes of one read, calling `on_msg` for each whole message
    /// until it returns `false`. Returns whether the consumer stopped.
    /// After an error the stream is unusable: close the channel.
    pub(crate) fn feed(
        &mut self,
        data: &[u8],
        on_msg: &mut dyn FnMut(Msg<'_>) -> bool,
    ) -> Result<bool, Error> {
        if self.pending.is_empty() {
            // The usual case: decode straight from the read buffer.
            let (used, stopped) = decode_units(data, on_msg)?;
            self.pending.extend_from_slice(&data[used..]);
            Ok(stopped)
        } else {
            self.pending.extend_from_slice(data);
            let (used, stopped) = decode_units(&self.pending, on_msg)?;
            self.pending.drain(..used);
            Ok(stopped)
        }
    }

    /// Bytes that came before the channel was set up (frames a client sent
    /// right after its hello): they are decoded first.
    pub(crate) fn preload(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    /// Whether a whole message is waiting (the consumer stopped early).
    pub(crate) fn has_message(&self) -> Result<bool, Error> {
        Ok(self.pending.len() >= FRAME_LEN
            && self.pending.len() >= unit_len(header(&self.pending))?)
    }

    /// Whether any byte is waiting (a message cut by a read, or held back).
    #[cfg(test)]
    pub(crate) fn is_mid_message(&self) -> bool {
        !self.pending.is_empty()
    }
}

/// Emits the whole messages at the start of `buf`; returns the bytes used
/// and whether the consumer stopped.
fn decode_units(
    buf: &[u8],
    on_msg: &mut dyn FnMut(Msg<'_>) -> bool,
) -> Result<(usize, bool), Error> {
    let mut at = 0;
    while buf.len() - at >= FRAME_LEN {
        let len = unit_len(header(&buf[at..]))?;
        if buf.len() - at < len {
            break;
        }
        let go_on = emit(&buf[at..at + len], on_msg)?;
        at += len;
        if !go_on {
            return Ok((at, true));
        }
    }
    Ok((at, false))
}

fn header(data: &[u8]) -> &RawFrame {
    data[..FRAME_LEN]
        .try_into()
        .expect("caller checked the length")
}

/// Length of the message a header starts: frame plus payload.
fn unit_len(h: &RawFrame) -> Result<usize, Error> {
    Ok(match Frame::decode(h)? {
        Frame::Request { len, .. } | Frame::Reply { len, .. } => FRAME_LEN + len as usize,
        _ => FRAME_LEN,
    })
}

fn emit(unit: &[u8], on_msg: &mut dyn FnMut(Msg<'_>) -> bool) -> Result<bool, Error> {
    let frame = Frame::decode(header(unit))?;
    Ok(match frame {
        Frame::Request { .. } | Frame::Reply { .. } => on_msg(Msg::Payload {
            frame,
            body: &unit[FRAME_LEN..],
        }),
        _ => on_msg(Msg::Frame(frame)),
    })
}

/// A request from a child to the master.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Request {
    /// Register `num` with `target` for the asking child.
    Register { num: u8, target: String },
    /// Reserve the first free number for the asking child.
    Reserve,
    /// Shut the whole group down gracefully.
    Stop,
    /// Add a source raising `sig`, owned by the asking child.
    AddSource {
        sig: u8,
        source: crate::source_spec::Source,
    },
    /// Remove a source.
    RemoveSource { id: u32 },
    /// A process set a user harakiri for the first time in the group: the
    /// master starts checking deadlines.
    UserHarakiri,
    /// An attached process has registered its handlers: deliveries may
    /// start (nothing is written to an attach slot before).
    Ready,
}

/// The master's answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Reply {
    /// Done.
    Ok,
    /// The number reserved.
    Num(u8),
    /// The id of the source added.
    Source(u32),
    /// Refused.
    Err(RegistrationError),
}

impl Reply {
    /// The refusal a child gets for a request the master could not carry
    /// out.
    pub(crate) fn refused(e: Error) -> Reply {
        Reply::Err(RegistrationError::for_child(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{ProcId, Role};
    use proptest::prelude::*;

    fn frames() -> Vec<Frame> {
        vec![
            Frame::Deliver {
                num: 255,
                attempt: 3,
                origin: Origin::Process(ProcId::new(Role::Mule, 2)),
                seq: u64::MAX,
                pooled: true,
            },
            Frame::Deliver {
                num: 1,
                attempt: 1,
                origin: Origin::Remote,
                seq: 0,
                pooled: false,
            },
            Frame::Ack { seq: 12345 },
            Frame::Raise { num: 0 },
            Frame::Raise { num: 200 },
        ]
    }

    #[test]
    fn frames_round_trip() {
        for f in frames() {
            assert_eq!(Frame::decode(&f.encode()).unwrap(), f);
        }
    }

    #[test]
    fn unknown_kinds_and_oversized_payloads_are_errors() {
        let mut b = [0u8; FRAME_LEN];
        b[0] = 9;
        assert!(
            Frame::decode(&b)
                .unwrap_err()
                .to_string()
                .contains("unknown frame kind 9")
        );
        let mut b = Frame::Request { id: 1, len: 0 }.encode();
        b[4..8].copy_from_slice(&(MAX_PAYLOAD as u32 + 1).to_le_bytes());
        assert!(Frame::decode(&b).is_err());
        let mut d = Decoder::default();
        assert!(d.feed(&b, &mut |_| true).is_err());
    }

    /// A stream of frames and payload messages, with what decoding it yields.
    fn stream() -> (Vec<u8>, Vec<String>) {
        let mut bytes = Vec::new();
        let mut want = Vec::new();
        for (i, f) in frames().into_iter().enumerate() {
            bytes.extend_from_slice(&f.encode());
            want.push(format!("{f:?}"));
            let req = Request::Register {
                num: i as u8,
                target: "farm_x".repeat(i),
            };
            encode_with_payload(false, i as u64, &req, &mut bytes).unwrap();
            want.push(format!("{i} {req:?}"));
        }
        encode_with_payload(
            true,
            99,
            &Reply::Err(RegistrationError::NoSignalAvailable),
            &mut bytes,
        )
        .unwrap();
        want.push("reply 99".into());
        (bytes, want)
    }

    fn decode_in_pieces(bytes: &[u8], cuts: &[usize]) -> Vec<String> {
        let mut d = Decoder::default();
        let mut got = Vec::new();
        let mut on = |m: Msg<'_>| {
            record(m, &mut got);
            true
        };
        let mut at = 0;
        for &c in cuts {
            let c = c.clamp(at, bytes.len());
            d.feed(&bytes[at..c], &mut on).unwrap();
            at = c;
        }
        d.feed(&bytes[at..], &mut on).unwrap();
        assert!(!d.is_mid_message());
        got
    }

    fn record(m: Msg<'_>, got: &mut Vec<String>) {
        match m {
            Msg::Frame(f) => got.push(format!("{f:?}")),
            Msg::Payload {
                frame: Frame::Request { id, .. },
                body,
            } => {
                let r: Request = serde_json::from_slice(body).unwrap();
                got.push(format!("{id} {r:?}"));
            }
            Msg::Payload {
                frame: Frame::Reply { id, .. },
                body,
            } => {
                let r: Reply = serde_json::from_slice(body).unwrap();
                assert_eq!(r, Reply::Err(RegistrationError::NoSignalAvailable));
                got.push(format!("reply {id}"));
            }
            m => panic!("{m:?}"),
        }
    }

    #[test]
    fn the_consumer_can_stop_and_resume_anywhere() {
        let (bytes, want) = stream();
        for stop_after in 1..want.len() {
            let mut d = Decoder::default();
            let mut got = Vec::new();
            let stopped = d
                .feed(&bytes, &mut |m| {
                    record(m, &mut got);
                    got.len() < stop_after
                })
                .unwrap();
            assert!(stopped);
            assert_eq!(got.len(), stop_after);
            assert!(d.has_message().unwrap());
            let stopped = d
                .feed(&[], &mut |m| {
                    record(m, &mut got);
                    true
                })
                .unwrap();
            assert!(!stopped && !d.has_message().unwrap() && !d.is_mid_message());
            assert_eq!(got, want);
        }
    }

    #[test]
    fn every_single_cut_decodes_the_same() {
        let (bytes, want) = stream();
        for cut in 0..=bytes.len() {
            assert_eq!(decode_in_pieces(&bytes, &[cut]), want, "cut at {cut}");
        }
        let ones: Vec<usize> = (1..bytes.len()).collect();
        assert_eq!(decode_in_pieces(&bytes, &ones), want, "byte by byte");
    }

    proptest! {
        #[test]
        fn any_split_decodes_the_same(mut cuts in proptest::collection::vec(0usize..400, 0..20)) {
            let (bytes, want) = stream();
            cuts.sort();
            prop_assert_eq!(decode_in_pieces(&bytes, &cuts), want);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512),
                                       cut in 0usize..512) {
            let mut d = Decoder::default();
            let cut = cut.min(data.len());
            let mut n = 0;
            let mut count = |_: Msg<'_>| {
                n += 1;
                true
            };
            if d.feed(&data[..cut], &mut count).is_ok() {
                let _ = d.feed(&data[cut..], &mut count);
            }
        }
    }
}
