//! The remote listener's framing: any bytes, cut anywhere, never panic, and
//! exactly the valid prefix of 4-byte signal requests comes out.
#![no_main]

use flare::uwsgi::{HEADER_LEN, Read, RequestReader, parse_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&cut, data)) = input.split_first() else {
        return;
    };
    let cut = (cut as usize).min(data.len());
    let mut reader = RequestReader::default();
    let mut got = Vec::new();
    let mut bad = false;
    for part in [&data[..cut], &data[cut..]] {
        if let Read::Malformed(_) = reader.feed(part, &mut |n| {
            got.push(n);
            true
        }) {
            bad = true;
            break;
        }
    }
    let valid: Vec<u8> = data
        .chunks_exact(HEADER_LEN)
        .map_while(|c| parse_request([c[0], c[1], c[2], c[3]]).ok())
        .collect();
    assert_eq!(got, valid);
    if !bad {
        assert_eq!(valid.len(), data.len() / HEADER_LEN);
    }
});
