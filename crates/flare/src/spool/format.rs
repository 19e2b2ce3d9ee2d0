//! The job file format: uWSGI's spool file, so files move between the two.
//!
//! A 4-byte header (`modifier1` = 17, the size of the variables as a u16
//! little endian, `modifier2` = 0), the variables (each key and value
//! preceded by its length as a u16 little endian), then the body, to the
//! end of the file. Pure: no I/O.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// A job's keys and values.
pub(crate) type Vars = BTreeMap<Vec<u8>, Vec<u8>>;

/// uWSGI's `modifier1` for spool files.
pub(crate) const MODIFIER1: u8 = 17;

/// The largest size of a job's variables (the header's u16).
pub(crate) const MAX_VARS: usize = u16::MAX as usize;

/// Encodes variables and body as a spool file.
pub(crate) fn encode(vars: &Vars, body: &[u8]) -> Result<Vec<u8>> {
    let mut size = 0usize;
    for (k, v) in vars {
        for part in [k, v] {
            if part.len() > MAX_VARS {
                return Err(Error::InvalidJob(format!(
                    "key or value of {} bytes (key `{}`): each is at most {MAX_VARS} bytes; put \
                     large data in the body",
                    part.len(),
                    String::from_utf8_lossy(&k[..k.len().min(64)])
                )));
            }
        }
        size += 4 + k.len() + v.len();
    }
    if size > MAX_VARS {
        return Err(Error::InvalidJob(format!(
            "the job's keys and values take {size} bytes encoded; at most {MAX_VARS} (as in \
             uWSGI); put large data in the body, which has no limit"
        )));
    }
    let mut out = Vec::with_capacity(4 + size + body.len());
    out.push(MODIFIER1);
    out.extend_from_slice(&(size as u16).to_le_bytes());
    out.push(0);
    for (k, v) in vars {
        out.extend_from_slice(&(k.len() as u16).to_le_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(&(v.len() as u16).to_le_bytes());
        out.extend_from_slice(v);
    }
    out.extend_from_slice(body);
    Ok(out)
}

/// Decodes a spool file into its variables and body; the error says what
/// is wrong with it.
pub(crate) fn decode(data: &[u8]) -> Result<(Vars, Vec<u8>), String> {
    if data.len() < 4 {
        return Err(format!(
            "{} bytes, shorter than the 4-byte header",
            data.len()
        ));
    }
    if data[0] != MODIFIER1 {
        return Err(format!(
            "modifier1 is {}, not {MODIFIER1}: not a spool file",
            data[0]
        ));
    }
    let size = u16::from_le_bytes([data[1], data[2]]) as usize;
    let Some(vars_bytes) = data.get(4..4 + size) else {
        return Err(format!(
            "the header announces {size} bytes of variables, the file has {}",
            data.len() - 4
        ));
    };
    let mut vars = BTreeMap::new();
    let mut rest = vars_bytes;
    while !rest.is_empty() {
        let key = take(&mut rest).ok_or("a key runs past the variables")?;
        let value = take(&mut rest).ok_or("a value runs past the variables")?;
        vars.insert(key.to_vec(), value.to_vec());
    }
    Ok((vars, data[4 + size..].to_vec()))
}

/// Takes one length-prefixed string off the front of `rest`.
fn take<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = u16::from_le_bytes([*rest.first()?, *rest.get(1)?]) as usize;
    let s = rest.get(2..2 + len)?;
    *rest = &rest[2 + len..];
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn matches_the_uwsgi_example() {
        // uWSGI's documentation: {'hello' => 'world'} is 17|14|0|0 |5|0|hello |5|0|world.
        let got = encode(&vars(&[("hello", "world")]), b"").unwrap();
        assert_eq!(got, b"\x11\x0e\x00\x00\x05\x00hello\x05\x00world");
    }

    #[test]
    fn round_trips_with_a_body() {
        let v = vars(&[("a", ""), ("key", "value"), ("x", "\u{e9}")]);
        let data = encode(&v, b"\x00body\xff").unwrap();
        assert_eq!(decode(&data).unwrap(), (v, b"\x00body\xff".to_vec()));
    }

    #[test]
    fn too_large_variables_are_refused_with_the_limit() {
        let big = "x".repeat(40_000);
        let e = encode(&vars(&[("a", &big), ("b", &big)]), b"").unwrap_err();
        assert!(e.to_string().contains("at most 65535"), "{e}");
        let e = encode(&vars(&[("a", &"y".repeat(70_000))]), b"").unwrap_err();
        assert!(e.to_string().contains("key `a`"), "{e}");
    }

    #[test]
    fn damaged_files_are_described() {
        assert!(decode(b"\x11").unwrap_err().contains("shorter"));
        assert!(
            decode(b"\x10\x00\x00\x00")
                .unwrap_err()
                .contains("modifier1")
        );
        assert!(
            decode(b"\x11\x09\x00\x00abc")
                .unwrap_err()
                .contains("announces")
        );
        assert!(
            decode(b"\x11\x03\x00\x00\x05\x00h")
                .unwrap_err()
                .contains("key")
        );
        assert!(
            decode(b"\x11\x03\x00\x00\x00\x00\x01")
                .unwrap_err()
                .contains("value")
        );
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = decode(&data);
        }
    }
}
