//! The uwsgi packet codec, as far as remote signals need it.
//!
//! A packet is a 4-byte header: `modifier1` (u8), `datasize` (u16, little
//! endian), `modifier2` (u8), followed by `datasize` bytes. A signal request
//! is modifier1 110 with no data and the signal number in modifier2; the
//! reply is modifier1 255, no data, modifier2 1 (delivered) or 0 (rejected).
//! Pure: no I/O.

use std::fmt;

/// Size of a uwsgi packet header.
pub const HEADER_LEN: usize = 4;
/// modifier1 of a signal request.
pub const SIGNAL: u8 = 110;
/// modifier1 of a signal reply.
pub const REPLY: u8 = 255;

/// A uwsgi packet header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Selects the request handler (110: signal).
    pub modifier1: u8,
    /// Bytes of data after the header.
    pub datasize: u16,
    /// Request specific (the signal number, the reply status).
    pub modifier2: u8,
}

impl Header {
    /// Encodes into 4 bytes.
    pub fn encode(self) -> [u8; HEADER_LEN] {
        let [lo, hi] = self.datasize.to_le_bytes();
        [self.modifier1, lo, hi, self.modifier2]
    }

    /// Decodes 4 bytes.
    pub fn decode(b: [u8; HEADER_LEN]) -> Header {
        Header {
            modifier1: b[0],
            datasize: u16::from_le_bytes([b[1], b[2]]),
            modifier2: b[3],
        }
    }
}

/// The request that raises `num` on a remote node.
pub fn signal_request(num: u8) -> [u8; HEADER_LEN] {
    Header {
        modifier1: SIGNAL,
        datasize: 0,
        modifier2: num,
    }
    .encode()
}

/// The reply to a signal request.
pub fn signal_reply(delivered: bool) -> [u8; HEADER_LEN] {
    Header {
        modifier1: REPLY,
        datasize: 0,
        modifier2: u8::from(delivered),
    }
    .encode()
}

/// Why a packet is not a signal request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// modifier1 is not 110.
    Modifier1(u8),
    /// The packet carries data; signal requests carry none.
    Datasize(u16),
    /// The stream ended inside a header.
    Short(usize),
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Malformed::Modifier1(m) => {
                write!(f, "modifier1 {m} where a signal request has {SIGNAL}")
            }
            Malformed::Datasize(n) => {
                write!(f, "datasize {n} where a signal request has 0")
            }
            Malformed::Short(n) => write!(f, "stream ended after {n} of {HEADER_LEN} header bytes"),
        }
    }
}

/// Reads a signal request header: the signal number, or what is wrong.
///
/// # Errors
///
/// [`Malformed`] when the header is not a signal request (another
/// `modifier1`, or a body announced).
pub fn parse_request(b: [u8; HEADER_LEN]) -> Result<u8, Malformed> {
    let h = Header::decode(b);
    if h.modifier1 != SIGNAL {
        Err(Malformed::Modifier1(h.modifier1))
    } else if h.datasize != 0 {
        Err(Malformed::Datasize(h.datasize))
    } else {
        Ok(h.modifier2)
    }
}

/// Reads a signal reply: delivered or not. uWSGI's own client takes any
/// modifier2 other than 0 as delivered; so does this.
///
/// # Errors
///
/// [`Malformed`] when the header is not a signal reply.
pub fn parse_reply(b: [u8; HEADER_LEN]) -> Result<bool, Malformed> {
    let h = Header::decode(b);
    if h.modifier1 != REPLY {
        Err(Malformed::Modifier1(h.modifier1))
    } else if h.datasize != 0 {
        Err(Malformed::Datasize(h.datasize))
    } else {
        Ok(h.modifier2 != 0)
    }
}

/// Cuts a byte stream into signal requests, however reads split it.
///
/// Keeps unconsumed bytes; the consumer may stop after any request (to
/// apply back-pressure) and resume later with an empty feed.
#[derive(Debug, Default)]
pub struct RequestReader {
    pending: Vec<u8>,
}

/// What the reader found.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// Every whole request was handed over; a partial header may wait.
    Drained,
    /// The consumer asked to stop; requests may wait.
    Stopped,
    /// A malformed packet: the stream is unusable, close it.
    Malformed(Malformed),
}

impl RequestReader {
    /// Adds the bytes of one read and hands over each whole request until
    /// `on_request` returns `false`.
    pub fn feed(&mut self, data: &[u8], on_request: &mut dyn FnMut(u8) -> bool) -> Read {
        self.pending.extend_from_slice(data);
        let mut at = 0;
        let mut result = Read::Drained;
        while self.pending.len() - at >= HEADER_LEN {
            let mut h = [0u8; HEADER_LEN];
            h.copy_from_slice(&self.pending[at..at + HEADER_LEN]);
            match parse_request(h) {
                Ok(num) => {
                    at += HEADER_LEN;
                    if !on_request(num) {
                        result = Read::Stopped;
                        break;
                    }
                }
                Err(m) => {
                    result = Read::Malformed(m);
                    break;
                }
            }
        }
        self.pending.drain(..at);
        result
    }

    /// Whether a whole request is waiting (the consumer stopped early).
    pub fn has_request(&self) -> bool {
        self.pending.len() >= HEADER_LEN
    }

    /// Whether part of a request (less than a header) is waiting for more
    /// bytes.
    pub fn partial(&self) -> bool {
        (1..HEADER_LEN).contains(&self.pending.len())
    }

    /// At the end of the stream: what is wrong with the bytes left, if any.
    pub fn finish(&self) -> Option<Malformed> {
        match self.pending.len() {
            0 => None,
            n if n < HEADER_LEN => Some(Malformed::Short(n)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn requests_and_replies_round_trip() {
        for num in [0u8, 17, 255] {
            assert_eq!(parse_request(signal_request(num)), Ok(num));
        }
        assert_eq!(signal_request(17), [110, 0, 0, 17]);
        assert_eq!(signal_reply(true), [255, 0, 0, 1]);
        assert_eq!(parse_reply(signal_reply(true)), Ok(true));
        assert_eq!(parse_reply(signal_reply(false)), Ok(false));
        assert_eq!(parse_reply([255, 0, 0, 7]), Ok(true));
    }

    #[test]
    fn what_is_wrong_is_named() {
        assert_eq!(parse_request([0, 0, 0, 1]), Err(Malformed::Modifier1(0)));
        assert_eq!(parse_request([110, 4, 1, 1]), Err(Malformed::Datasize(260)));
        assert_eq!(parse_reply([110, 0, 0, 1]), Err(Malformed::Modifier1(110)));
        let e = Malformed::Datasize(260).to_string();
        assert!(e.contains("260") && e.contains("0"), "{e}");
    }

    #[test]
    fn reader_stops_at_garbage_and_reports_short_streams() {
        let mut r = RequestReader::default();
        let mut got = vec![];
        let mut bytes = signal_request(1).to_vec();
        bytes.extend_from_slice(b"GET / HTTP/1.0\r\n");
        let res = r.feed(&bytes, &mut |n| {
            got.push(n);
            true
        });
        assert_eq!(got, vec![1]);
        assert_eq!(res, Read::Malformed(Malformed::Modifier1(b'G')));
        let mut r = RequestReader::default();
        assert_eq!(r.feed(&[110, 0], &mut |_| true), Read::Drained);
        assert_eq!(r.finish(), Some(Malformed::Short(2)));
    }

    #[test]
    fn reader_stops_and_resumes() {
        let mut r = RequestReader::default();
        let bytes: Vec<u8> = (0..10).flat_map(signal_request).collect();
        let mut got = vec![];
        assert_eq!(
            r.feed(&bytes, &mut |n| {
                got.push(n);
                got.len() < 3
            }),
            Read::Stopped
        );
        assert!(r.has_request());
        assert_eq!(
            r.feed(&[], &mut |n| {
                got.push(n);
                true
            }),
            Read::Drained
        );
        assert_eq!(got, (0..10).collect::<Vec<u8>>());
        assert_eq!(r.finish(), None);
    }

    proptest! {
        /// Valid request streams decode to the same numbers however cut.
        #[test]
        fn any_split_of_requests_decodes_the_same(
            nums in proptest::collection::vec(any::<u8>(), 0..64),
            mut cuts in proptest::collection::vec(0usize..256, 0..16),
        ) {
            let bytes: Vec<u8> = nums.iter().flat_map(|&n| signal_request(n)).collect();
            cuts.sort();
            let mut r = RequestReader::default();
            let mut got = vec![];
            let mut at = 0;
            for c in cuts.into_iter().chain([bytes.len()]) {
                let c = c.clamp(at, bytes.len());
                let res = r.feed(&bytes[at..c], &mut |n| { got.push(n); true });
                prop_assert_eq!(res, Read::Drained);
                at = c;
            }
            prop_assert_eq!(got, nums);
            prop_assert_eq!(r.finish(), None);
        }

        /// Arbitrary bytes, arbitrarily cut: never a panic; what comes out
        /// before the first bad header is exactly the valid prefix.
        #[test]
        fn arbitrary_streams_never_panic(
            data in proptest::collection::vec(any::<u8>(), 0..256),
            mut cuts in proptest::collection::vec(0usize..256, 0..8),
        ) {
            cuts.sort();
            let mut r = RequestReader::default();
            let mut got = vec![];
            let mut at = 0;
            let mut bad = None;
            for c in cuts.into_iter().chain([data.len()]) {
                let c = c.clamp(at, data.len());
                if let Read::Malformed(m) = r.feed(&data[at..c], &mut |n| { got.push(n); true }) {
                    bad = Some(m);
                    break;
                }
                at = c;
            }
            let valid: Vec<u8> = data
                .chunks_exact(HEADER_LEN)
                .map_while(|c| parse_request([c[0], c[1], c[2], c[3]]).ok())
                .collect();
            prop_assert_eq!(&got, &valid);
            if bad.is_none() {
                prop_assert_eq!(valid.len(), data.len() / HEADER_LEN);
            }
        }
    }
}
