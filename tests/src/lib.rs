//! What every scenario binary shares: how it logs, how it reports what it
//! saw (`FACT key=value` lines as it goes, one `SUMMARY <json>` at the end)
//! and how it fails. The tests in `tests/tests` read those lines.

use std::fmt::Display;

/// Prints one `FACT key=value` line (stdout, one write), which the test
/// reads as soon as it comes.
pub fn fact(key: &str, value: impl Display) {
    println!("FACT {key}={value}");
}

/// Logs to stderr, filtered by `RUST_LOG` (warnings and errors when unset).
pub fn init_log() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
}

/// Prints the scenario's `SUMMARY <json>`; on an error, prints it and
/// exits with status 1.
pub fn finish<T: serde::Serialize>(result: Result<T, impl Display>) {
    match result {
        Ok(summary) => match serde_json::to_string(&summary) {
            Ok(json) => println!("SUMMARY {json}"),
            Err(e) => {
                eprintln!("scenario failed: its summary cannot be written as JSON: {e}");
                std::process::exit(1);
            }
        },
        Err(e) => {
            eprintln!("scenario failed: {e}");
            std::process::exit(1);
        }
    }
}
