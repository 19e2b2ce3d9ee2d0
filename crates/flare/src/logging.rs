//! How flare's log lines look: the one rule used by the `flare` command,
//! `python -m flare` and the test scenarios (cargo feature `logging`).
//!
//! - `FLARE_LOG`: the filter, in tracing's `EnvFilter` syntax (default
//!   `info`; e.g. `flare=debug`).
//! - `FLARE_LOG_FORMAT`: `text` (default: one line for people, coloured on
//!   a terminal) or `json`: one JSON object per line, for log shippers.
//!
//! A JSON line has `timestamp` (RFC 3339, UTC), `level`, `module` (the
//! Rust module), `pid`, `process` (`master`, `worker3`, ...), `message`,
//! and the event's own fields: the signal lines carry `num` (the signal
//! number), `target` (its target), `outcome` (`unrouted`, `dropped`,
//! `dead_lettered`, ...) and, where there is one, `origin` (who raised it)
//! and `proc` (the process it concerns).
//!
//! ```no_run
//! flare::logging::init()?;
//! tracing::info!(num = 7, "ready");
//! # Ok::<(), flare::Error>(())
//! ```

use std::fmt;
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::error::{Error, Result};

/// The two formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One line for people.
    Text,
    /// One JSON object per line.
    Json,
}

impl Format {
    /// Reads `FLARE_LOG_FORMAT` (unset or empty: text).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the value and the valid ones when it is
    /// neither `text` nor `json`.
    pub fn from_env() -> Result<Format> {
        match std::env::var("FLARE_LOG_FORMAT") {
            Err(_) => Ok(Format::Text),
            Ok(v) => v.parse(),
        }
    }
}

impl std::str::FromStr for Format {
    type Err = Error;

    fn from_str(s: &str) -> Result<Format> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            other => Err(Error::Config(format!(
                "FLARE_LOG_FORMAT={other:?} is not a log format; use `text` (the default) or `json`"
            ))),
        }
    }
}

/// Installs the subscriber for this process: log lines to stderr, filtered
/// by `FLARE_LOG`, in the `FLARE_LOG_FORMAT` format. A subscriber already
/// installed stays (so calling it twice is harmless).
///
/// # Errors
///
/// [`Error::Config`] when `FLARE_LOG_FORMAT` is neither `text` nor `json`.
pub fn init() -> Result<()> {
    let format = Format::from_env()?;
    let filter = std::env::var("FLARE_LOG")
        .ok()
        .and_then(|f| tracing_subscriber::EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    let _ = match format {
        Format::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .try_init(),
        Format::Json => builder.with_ansi(false).event_format(JsonLine).try_init(),
    };
    Ok(())
}

/// Formats an event as one JSON object.
struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = serde_json::Map::new();
        line.insert(
            "timestamp".into(),
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                .into(),
        );
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("module".into(), meta.target().into());
        line.insert("pid".into(), std::process::id().into());
        line.insert("process".into(), process().into());
        event.record(&mut Fields(&mut line));
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// Who is logging: the child's role and id, else `master` (the master, or
/// a process outside a group).
fn process() -> String {
    match crate::child::context() {
        Some(ctx) => match ctx.own() {
            Ok(ctx) => ctx.info.proc_id().to_string(),
            Err(_) => format!("forked from {}", ctx.info.proc_id()),
        },
        None => "master".into(),
    }
}

/// Collects an event's fields into the line.
struct Fields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl Visit for Fields<'_> {
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_read_with_a_clear_error_for_others() {
        assert_eq!("json".parse::<Format>().unwrap(), Format::Json);
        assert_eq!(" JSON ".parse::<Format>().unwrap(), Format::Json);
        assert_eq!("".parse::<Format>().unwrap(), Format::Text);
        assert_eq!("text".parse::<Format>().unwrap(), Format::Text);
        let e = "logfmt".parse::<Format>().unwrap_err().to_string();
        assert!(e.contains("\"logfmt\"") && e.contains("json"), "{e}");
    }

    #[test]
    fn a_json_line_has_the_process_and_the_event_fields() {
        use tracing_subscriber::fmt::MakeWriter;
        #[derive(Clone, Default)]
        struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        impl<'a> MakeWriter<'a> for Buf {
            type Writer = Buf;
            fn make_writer(&'a self) -> Buf {
                self.clone()
            }
        }
        let buf = Buf::default();
        let sub = tracing_subscriber::fmt()
            .with_writer(buf.clone())
            .event_format(JsonLine)
            .finish();
        tracing::subscriber::with_default(sub, || {
            tracing::warn!(
                num = 7u8,
                target = "workers",
                outcome = "unrouted",
                "signal 7 unrouted"
            );
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["num"], 7);
        assert_eq!(line["target"], "workers");
        assert_eq!(line["outcome"], "unrouted");
        assert_eq!(line["message"], "signal 7 unrouted");
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["process"], "master");
        assert_eq!(line["pid"], std::process::id());
    }
}
