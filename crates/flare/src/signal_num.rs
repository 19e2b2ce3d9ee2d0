//! Signal numbers given as text or as a wider integer: 0-255, and anything
//! else is [`Error::BadNumber`], never a wrap-around. Pure.

use crate::error::{Error, Result};

/// Parses a decimal number from 0 to 255 (surrounding blanks allowed).
pub(crate) fn parse(text: &str) -> Result<u8> {
    text.trim().parse::<u8>().map_err(|_| Error::BadNumber {
        text: text.to_owned(),
    })
}

/// Narrows an integer to a signal number.
pub(crate) fn from_i64(n: i64) -> Result<u8> {
    u8::try_from(n).map_err(|_| Error::BadNumber {
        text: n.to_string(),
    })
}
