//! The client side of the stats and control endpoints.

use std::time::Duration;

use super::StatsDoc;
use crate::error::{Error, Result};
use crate::remote::{RemoteAddr, Stream};

/// Fetches the stats document from the stats endpoint at `addr`
/// (`host:port`, a Unix socket path or `@name`).
pub fn fetch(addr: &str, timeout: Duration) -> Result<StatsDoc> {
    let parsed: RemoteAddr = addr.parse()?;
    let mut s = Stream::connect(&parsed, timeout).map_err(Error::Unreachable)?;
    let mut json = Vec::new();
    s.read_to_end(&mut json).map_err(Error::Unreachable)?;
    serde_json::from_slice(&json)
        .map_err(|e| Error::Protocol(format!("{addr} did not send a flare stats document: {e}")))
}

/// Sends one command to the control endpoint at `addr` and returns its
/// answer: `Ok` with the text after `ok`, or the error it gave.
///
/// ```no_run
/// let answer = flare::stats::control("/run/app-control.sock", "pause worker2",
///                                     Duration::from_secs(5))?;
/// assert_eq!(answer, "worker2 paused");
/// # Ok::<(), flare::Error>(())
/// ```
pub fn control(addr: &str, command: &str, timeout: Duration) -> Result<String> {
    let parsed: RemoteAddr = addr.parse()?;
    let mut s = Stream::connect(&parsed, timeout).map_err(Error::Unreachable)?;
    let line = s
        .ask_line(format!("{}\n", command.trim()).as_bytes())
        .map_err(Error::Unreachable)?;
    if let Some(ok) = line.strip_prefix("ok") {
        Ok(ok.trim_start().to_owned())
    } else if let Some(e) = line.strip_prefix("error:") {
        Err(Error::Control(e.trim().to_owned()))
    } else {
        Err(Error::Protocol(format!(
            "unexpected answer from {addr}: {line:?}"
        )))
    }
}
