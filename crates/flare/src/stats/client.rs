//! The client side of the stats and control endpoints.

use std::time::Duration;

use super::StatsDoc;
use crate::error::{Error, Result};
use crate::remote::{RemoteAddr, Stream};

const STATS: &str = "stats";
const CONTROL: &str = "control";

/// How many bytes of a bad answer an error quotes.
const QUOTED: usize = 60;

/// Fetches the stats document from the stats endpoint at `addr`
/// (`host:port`, a Unix socket path or `@name`).
///
/// # Errors
///
/// [`Error::Endpoint`] when the endpoint cannot be reached or read within
/// `timeout` (its source says why: refused, permission denied, ...),
/// [`Error::BadAnswer`] when it sends nothing or something that is not a
/// stats document, [`Error::Config`] for an address that cannot be parsed.
pub fn fetch(addr: &str, timeout: Duration) -> Result<StatsDoc> {
    let mut s = connect(STATS, addr, timeout)?;
    let mut json = Vec::new();
    s.read_to_end(&mut json)
        .map_err(|source| endpoint(STATS, addr, source))?;
    if json.iter().all(u8::is_ascii_whitespace) {
        return Err(bad_answer(
            STATS,
            addr,
            "sent nothing (it closed the connection without a document)".into(),
        ));
    }
    if let Err(e) = serde_json::from_slice::<serde_json::Value>(&json) {
        return Err(bad_answer(
            STATS,
            addr,
            format!("sent something that is not JSON ({e}): {}", quote(&json)),
        ));
    }
    serde_json::from_slice(&json).map_err(|e| {
        bad_answer(
            STATS,
            addr,
            format!("sent JSON that is not a flare stats document: {e}"),
        )
    })
}

/// Sends one command to the control endpoint at `addr` and returns its
/// answer: `Ok` with the text after `ok`, or the error it gave.
///
/// ```no_run
/// let answer = flare::stats::control("/run/app-control.sock", "pause worker2",
///                                     std::time::Duration::from_secs(5))?;
/// assert_eq!(answer, "worker2 paused");
/// # Ok::<(), flare::Error>(())
/// ```
///
/// # Errors
///
/// [`Error::Control`] when the endpoint refuses the command,
/// [`Error::Endpoint`] when it cannot be reached or does not answer within
/// `timeout`, [`Error::BadAnswer`] when it answers nothing or something
/// else than `ok ...` / `error: ...`, [`Error::Config`] for an address that
/// cannot be parsed.
pub fn control(addr: &str, command: &str, timeout: Duration) -> Result<String> {
    let mut s = connect(CONTROL, addr, timeout)?;
    let line = s
        .ask_line(format!("{}\n", command.trim()).as_bytes())
        .map_err(|source| endpoint(CONTROL, addr, source))?;
    if let Some(ok) = line.strip_prefix("ok") {
        Ok(ok.trim_start().to_owned())
    } else if let Some(e) = line.strip_prefix("error:") {
        Err(Error::Control(e.trim().to_owned()))
    } else if line.trim().is_empty() {
        Err(bad_answer(
            CONTROL,
            addr,
            "sent nothing (it closed the connection without an answer)".into(),
        ))
    } else {
        Err(bad_answer(
            CONTROL,
            addr,
            format!(
                "answered neither `ok ...` nor `error: ...`: {}",
                quote(line.as_bytes())
            ),
        ))
    }
}

fn connect(which: &'static str, addr: &str, timeout: Duration) -> Result<Stream> {
    let parsed: RemoteAddr = addr.parse()?;
    Stream::connect(&parsed, timeout).map_err(|source| endpoint(which, addr, source))
}

fn endpoint(which: &'static str, addr: &str, source: std::io::Error) -> Error {
    Error::Endpoint {
        endpoint: which,
        addr: addr.to_owned(),
        source,
    }
}

fn bad_answer(which: &'static str, addr: &str, problem: String) -> Error {
    Error::BadAnswer {
        endpoint: which,
        addr: addr.to_owned(),
        problem,
    }
}

/// The start of an answer, printable.
fn quote(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(QUOTED)]);
    let more = if bytes.len() > QUOTED { "..." } else { "" };
    format!("{text:?}{more}")
}
