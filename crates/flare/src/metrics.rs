//! Prometheus metrics: the stats document in the Prometheus text
//! exposition format (version 0.0.4), and the small HTTP/1.1 exchange the
//! metrics endpoint speaks.
//!
//! Where uWSGI's exporter (timonwong/uwsgi_exporter) publishes a figure with
//! the same meaning, the metric has its name and `worker_id` label, so
//! dashboards and alerts made for uWSGI keep working; everything only flare
//! has is `flare_`-prefixed. Every metric is listed in docs/stats.md.
//!
//! ```
//! let doc = flare::stats::StatsDoc::default();
//! let text = flare::metrics::render(&doc);
//! assert!(text.contains("# TYPE uwsgi_workers gauge\nuwsgi_workers 0\n"));
//! ```

use std::fmt::Write;

use crate::stats::{ProcStats, StatsDoc};

/// The `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The path the endpoint serves.
pub const PATH: &str = "/metrics";

/// Longest request head (request line and headers) accepted, bytes.
pub(crate) const MAX_REQUEST: usize = 8192;

/// Writes families of samples: one `# HELP` and `# TYPE` per family, then
/// its samples, as the format requires.
struct Out {
    text: String,
}

/// A metric's type.
#[derive(Clone, Copy)]
enum Type {
    Counter,
    Gauge,
}

impl Out {
    fn family(&mut self, name: &str, ty: Type, help: &str) {
        let ty = match ty {
            Type::Counter => "counter",
            Type::Gauge => "gauge",
        };
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {ty}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    /// A family with one unlabelled sample.
    fn single(&mut self, name: &str, ty: Type, help: &str, value: impl std::fmt::Display) {
        self.family(name, ty, help);
        self.sample(name, &[], value);
    }
}

/// A label value as the format wants it: backslash, quote and newline
/// escaped.
fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// Microseconds as seconds.
fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

/// Every process of the document with its role and id as label values.
fn processes(doc: &StatsDoc) -> impl Iterator<Item = (String, &ProcStats)> {
    doc.workers
        .iter()
        .chain(&doc.mules)
        .chain(&doc.spoolers)
        .map(|p| (p.id.to_string(), p))
}

/// The stats document as Prometheus metrics (text format 0.0.4).
///
/// Per-signal families carry a `num` label for each number raised at least
/// once (at most 256), so the label set stays bounded.
pub fn render(doc: &StatsDoc) -> String {
    let mut o = Out {
        text: String::with_capacity(16 * 1024),
    };
    uwsgi_compatible(&mut o, doc);
    flare_group(&mut o, doc);
    flare_processes(&mut o, doc);
    flare_signals(&mut o, doc);
    flare_sources(&mut o, doc);
    o.text
}

/// The figures uWSGI's exporter publishes, same names and meaning.
fn uwsgi_compatible(o: &mut Out, doc: &StatsDoc) {
    o.single(
        "uwsgi_up",
        Type::Gauge,
        "Whether the server is up (always 1 when it answers).",
        1,
    );
    o.single(
        "uwsgi_listen_queue_length",
        Type::Gauge,
        "Length of listen queue (always 0: flare has no request socket).",
        doc.listen_queue,
    );
    o.single(
        "uwsgi_listen_queue_errors",
        Type::Gauge,
        "Number of listen queue errors (always 0).",
        doc.listen_queue_errors,
    );
    o.single(
        "uwsgi_signal_queue_length",
        Type::Gauge,
        "Signals queued in the master for all processes.",
        doc.signal_queue,
    );
    o.single(
        "uwsgi_workers",
        Type::Gauge,
        "Number of workers.",
        doc.workers.len(),
    );
    type Field = fn(&ProcStats) -> f64;
    let gauges: [(&str, &str, Field); 9] = [
        (
            "accepting",
            "Is this worker accepting signals (running)?",
            |w| f64::from(w.accepting),
        ),
        (
            "signal_queue_length",
            "Signals queued for this worker in the master.",
            |w| w.signal_queue as f64,
        ),
        ("rss_bytes", "Worker RSS bytes.", |w| w.rss as f64),
        ("vsz_bytes", "Worker VSZ bytes.", |w| w.vsz as f64),
        (
            "running_time_seconds",
            "Time spent in signal handlers, seconds.",
            |w| secs(w.running_time),
        ),
        (
            "last_spawn_time_seconds",
            "Last spawn time in seconds since epoch.",
            |w| w.last_spawn as f64,
        ),
        (
            "average_response_time_seconds",
            "Average handler run time, seconds.",
            |w| secs(w.avg_rt),
        ),
        ("busy", "Is a handler running now?", |w| {
            f64::from(w.current_signal.is_some())
        }),
        (
            "cores",
            "Number of cores (always 1: the dispatcher).",
            |w| w.cores.len() as f64,
        ),
    ];
    for (name, help, f) in gauges {
        let name = format!("uwsgi_worker_{name}");
        o.family(&name, Type::Gauge, help);
        for w in &doc.workers {
            o.sample(&name, &[("worker_id", &w.id.to_string())], f(w));
        }
    }
    let counters: [(&str, &str, Field); 5] = [
        ("requests_total", "Signals handled.", |w| w.requests as f64),
        (
            "exceptions_total",
            "Handlers that panicked or raised.",
            |w| w.exceptions as f64,
        ),
        (
            "harakiri_count_total",
            "Handler timeouts (harakiri).",
            |w| w.harakiri_count as f64,
        ),
        ("signals_total", "Signals handled.", |w| w.signals as f64),
        (
            "respawn_count_total",
            "Times the worker was forked again after dying.",
            |w| w.respawn_count as f64,
        ),
    ];
    for (name, help, f) in counters {
        let name = format!("uwsgi_worker_{name}");
        o.family(&name, Type::Counter, help);
        for w in &doc.workers {
            o.sample(&name, &[("worker_id", &w.id.to_string())], f(w));
        }
    }
}

/// The master's totals.
fn flare_group(o: &mut Out, doc: &StatsDoc) {
    let f = &doc.flare;
    o.family(
        "flare_info",
        Type::Gauge,
        "Always 1; the version in a label.",
    );
    o.sample("flare_info", &[("version", &doc.version)], 1);
    o.single(
        "flare_start_time_seconds",
        Type::Gauge,
        "When the master started, seconds since epoch.",
        f.started_at,
    );
    o.single(
        "flare_uptime_seconds",
        Type::Gauge,
        "How long the master has run, seconds.",
        f.uptime_ms as f64 / 1e3,
    );
    let c = &f.counters;
    let totals = [
        (
            "flare_signals_raised_total",
            "Signals raised (by processes, sources, remote nodes, control).",
            c.raised,
        ),
        (
            "flare_signals_routed_total",
            "Raised signals that reached at least one process or pool.",
            c.routed,
        ),
        (
            "flare_signals_unrouted_total",
            "Raised signals no process could get.",
            c.unrouted,
        ),
        (
            "flare_deliveries_total",
            "Deliveries queued to processes (a `workers` signal makes one per worker).",
            c.delivered,
        ),
        (
            "flare_deliveries_handled_total",
            "Deliveries acknowledged as handled.",
            c.handled,
        ),
        (
            "flare_deliveries_dropped_total",
            "Deliveries dropped because a queue was at its bound.",
            c.dropped,
        ),
        (
            "flare_deliveries_redelivered_total",
            "Deliveries given again after the process that had them died.",
            c.redelivered,
        ),
        (
            "flare_deliveries_dead_lettered_total",
            "Deliveries given up after too many attempts.",
            c.dead_lettered,
        ),
        (
            "flare_handler_timeouts_total",
            "Children killed because a handler ran past its time limit.",
            c.timeouts,
        ),
        (
            "flare_stalls_total",
            "Children killed because they made no progress for their stall limit while work waited.",
            c.stalls,
        ),
    ];
    for (name, help, v) in totals {
        o.single(name, Type::Counter, help, v);
    }
    o.family(
        "flare_remote_requests_total",
        Type::Counter,
        "Remote signal requests, by answer.",
    );
    o.sample(
        "flare_remote_requests_total",
        &[("outcome", "accepted")],
        c.remote_accepted,
    );
    o.sample(
        "flare_remote_requests_total",
        &[("outcome", "rejected")],
        c.remote_rejected,
    );
    o.family(
        "flare_remote_connections_closed_total",
        Type::Counter,
        "Remote connections closed by the master, by reason.",
    );
    for (reason, v) in [
        ("malformed", c.remote_malformed),
        ("timed_out", c.remote_timed_out),
        ("refused", c.remote_refused),
        ("evicted", c.remote_evicted),
        ("rejected", c.remote_closed_rejected),
    ] {
        o.sample(
            "flare_remote_connections_closed_total",
            &[("reason", reason)],
            v,
        );
    }
    o.family(
        "flare_attach_total",
        Type::Counter,
        "Attached processes and attach connections, by event.",
    );
    for (event, v) in [
        ("joined", c.attached),
        ("left", c.detached),
        ("refused", c.attach_refused),
        ("timed_out", c.attach_timed_out),
    ] {
        o.sample("flare_attach_total", &[("event", event)], v);
    }
    o.family(
        "flare_admin_connections_closed_total",
        Type::Counter,
        "Stats, control and metrics connections closed by the master, by reason.",
    );
    for (reason, v) in [
        ("timed_out", c.admin_timed_out),
        ("refused", c.admin_refused),
        ("evicted", c.admin_evicted),
    ] {
        o.sample(
            "flare_admin_connections_closed_total",
            &[("reason", reason)],
            v,
        );
    }
    o.single(
        "flare_table_registered",
        Type::Gauge,
        "Signal numbers registered in the signal table.",
        f.table.iter().filter(|r| !r.reserved).count(),
    );
    o.single(
        "flare_table_reserved",
        Type::Gauge,
        "Signal numbers reserved by Signal::auto() and not registered yet.",
        f.table.iter().filter(|r| r.reserved).count(),
    );
}

/// One series per process of every role, labelled `role` and `id`.
fn flare_processes(o: &mut Out, doc: &StatsDoc) {
    o.family(
        "flare_processes",
        Type::Gauge,
        "Processes of the group, by role and state.",
    );
    let mut by_state = std::collections::BTreeMap::<(&str, &str), u64>::new();
    for (_, p) in processes(doc) {
        *by_state.entry((&p.role, &p.state)).or_default() += 1;
    }
    for ((role, state), n) in by_state {
        o.sample("flare_processes", &[("role", role), ("state", state)], n);
    }
    type Field = fn(&ProcStats) -> u64;
    let gauges: [(&str, &str, Field); 4] = [
        ("up", "1 while the process takes signals.", |p| {
            u64::from(p.accepting)
        }),
        (
            "pending",
            "Deliveries queued for it in the master or not yet acknowledged.",
            |p| p.signal_queue,
        ),
        ("rss_bytes", "Resident memory, bytes.", |p| p.rss),
        ("pid", "Its pid (0 when not running).", |p| u64::from(p.pid)),
    ];
    for (name, help, f) in gauges {
        let name = format!("flare_process_{name}");
        o.family(&name, Type::Gauge, help);
        for (id, p) in processes(doc) {
            o.sample(&name, &[("role", &p.role), ("id", &id)], f(p));
        }
    }
    let name = "flare_process_stalled_seconds";
    o.family(
        name,
        Type::Gauge,
        "How long it has made no progress while deliveries wait for it (0: moving or idle).",
    );
    for (id, p) in processes(doc) {
        o.sample(
            name,
            &[("role", &p.role), ("id", &id)],
            p.stalled_ms as f64 / 1e3,
        );
    }
    let counters: [(&str, &str, Field); 11] = [
        ("raised_total", "Signals the process raised.", |p| p.raised),
        ("handled_total", "Handler runs.", |p| p.signals),
        (
            "exceptions_total",
            "Handlers that panicked or raised.",
            |p| p.exceptions,
        ),
        (
            "timeouts_total",
            "Handler timeouts (harakiri kills).",
            |p| p.harakiri_count,
        ),
        (
            "respawns_total",
            "Times it was forked again after dying.",
            |p| p.respawn_count,
        ),
        ("stalls_total", "Times it was killed for a stall.", |p| {
            p.stalls
        }),
        ("deliveries_total", "Deliveries queued to it.", |p| {
            p.tally.delivered
        }),
        (
            "deliveries_dropped_total",
            "Deliveries to it dropped at the queue bound.",
            |p| p.tally.dropped,
        ),
        (
            "deliveries_redelivered_total",
            "Deliveries given to it again after it died.",
            |p| p.tally.redelivered,
        ),
        (
            "deliveries_dead_lettered_total",
            "Deliveries to it given up after too many attempts.",
            |p| p.tally.dead_lettered,
        ),
        (
            "deliveries_moved_total",
            "Pool deliveries given to another member after it died.",
            |p| p.tally.moved,
        ),
    ];
    for (name, help, f) in counters {
        let name = format!("flare_process_{name}");
        o.family(&name, Type::Counter, help);
        for (id, p) in processes(doc) {
            o.sample(&name, &[("role", &p.role), ("id", &id)], f(p));
        }
    }
    let name = "flare_process_handled_by_signal_total";
    o.family(
        name,
        Type::Counter,
        "Handler runs, by process and signal number (numbers handled at least once).",
    );
    for (id, p) in processes(doc) {
        for (num, n) in &p.handled_by_num {
            o.sample(
                name,
                &[("role", &p.role), ("id", &id), ("num", &num.to_string())],
                n,
            );
        }
    }
}

/// One series per signal number raised at least once, labelled `num`.
fn flare_signals(o: &mut Out, doc: &StatsDoc) {
    type Field = fn(&crate::SignalSummary) -> u64;
    let counters: [(&str, &str, Field); 7] = [
        ("raised_total", "Times the number was raised.", |s| s.raised),
        (
            "unrouted_total",
            "Raises of the number that reached nobody.",
            |s| s.unrouted,
        ),
        (
            "deliveries_total",
            "Deliveries of the number queued.",
            |s| s.tally.delivered,
        ),
        ("handled_total", "Deliveries of the number handled.", |s| {
            s.tally.handled
        }),
        ("dropped_total", "Deliveries of the number dropped.", |s| {
            s.tally.dropped
        }),
        (
            "redelivered_total",
            "Deliveries of the number given again after a death.",
            |s| s.tally.redelivered,
        ),
        (
            "dead_lettered_total",
            "Deliveries of the number given up after too many attempts.",
            |s| s.tally.dead_lettered,
        ),
    ];
    for (name, help, f) in counters {
        let name = format!("flare_signal_{name}");
        o.family(&name, Type::Counter, help);
        for s in &doc.flare.signals {
            o.sample(&name, &[("num", &s.num.to_string())], f(s));
        }
    }
}

/// Timers, cron entries and file monitors, labelled by id and signal.
fn flare_sources(o: &mut Out, doc: &StatsDoc) {
    for (name, help, held) in [
        (
            "flare_source_fired_total",
            "Times a timer, cron entry or file monitor raised its signal.",
            false,
        ),
        (
            "flare_source_held_total",
            "Firings skipped: the source is unique and its last signal was still queued or running.",
            true,
        ),
    ] {
        o.family(name, Type::Counter, help);
        for s in &doc.flare.sources {
            let v = if held { s.held } else { s.fired };
            o.sample(
                name,
                &[
                    ("source_id", &s.id.to_string()),
                    ("num", &s.sig.to_string()),
                    ("what", &s.what),
                ],
                v,
            );
        }
    }
}

/// What to do with the bytes a metrics connection sent so far.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Request {
    /// The request head is not complete yet.
    Partial,
    /// A `GET` (or `HEAD`: `head` true) of the metrics path.
    Metrics {
        /// Send the head only.
        head: bool,
    },
    /// Anything else: the complete response to send before closing.
    Refuse(Vec<u8>),
}

/// Reads an HTTP/1.x request head. Only `GET`/`HEAD` of [`PATH`] (any query
/// string) is served; other paths get 404, other methods 405, garbage or
/// a head longer than [`MAX_REQUEST`] bytes 400.
pub(crate) fn parse_request(buf: &[u8]) -> Request {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) if buf.len() <= MAX_REQUEST => Request::Partial,
        Ok(httparse::Status::Partial) => Request::Refuse(response(
            "400 Bad Request",
            "text/plain",
            &format!("request head longer than {MAX_REQUEST} bytes\n"),
            false,
        )),
        Err(e) => Request::Refuse(response(
            "400 Bad Request",
            "text/plain",
            &format!("not an HTTP/1.1 request: {e}\n"),
            false,
        )),
        Ok(httparse::Status::Complete(_)) => {
            let method = req.method.unwrap_or("");
            let path = req.path.unwrap_or("");
            let path = path.split('?').next().unwrap_or("");
            let head = method == "HEAD";
            if method != "GET" && !head {
                return Request::Refuse(response(
                    "405 Method Not Allowed",
                    "text/plain",
                    &format!("{method} is not served here; use GET {PATH}\n"),
                    false,
                ));
            }
            if path != PATH {
                return Request::Refuse(response(
                    "404 Not Found",
                    "text/plain",
                    &format!("no such path; metrics are at {PATH}\n"),
                    head,
                ));
            }
            Request::Metrics { head }
        }
    }
}

/// A complete HTTP/1.1 response that closes the connection.
pub(crate) fn response(status: &str, content_type: &str, body: &str, head_only: bool) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        r.extend_from_slice(body.as_bytes());
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SignalSummary;
    use crate::SourceSummary;
    use crate::Tally;
    use crate::stats::{FlareStats, RouteStats};

    fn doc() -> StatsDoc {
        let worker = |id: u32, handled: u64| ProcStats {
            id,
            pid: 100 + id,
            accepting: 1,
            requests: handled,
            signals: handled,
            harakiri_count: id.into(),
            respawn_count: 2,
            running_time: 1_500_000,
            avg_rt: 250,
            rss: 4096,
            role: "worker".into(),
            state: "running".into(),
            current_signal: (id == 2).then_some(7),
            handled_by_num: [(7, handled)].into_iter().collect(),
            tally: Tally {
                delivered: handled + 1,
                dead_lettered: 1,
                ..Tally::default()
            },
            cores: vec![Default::default()],
            ..ProcStats::default()
        };
        let mut mule = worker(1, 3);
        mule.stalled_ms = 2500;
        mule.stalls = 1;
        mule.role = "mule".into();
        mule.state = "paused".into();
        mule.accepting = 0;
        StatsDoc {
            version: "flare 0.1.0".into(),
            signal_queue: 5,
            workers: vec![worker(1, 10), worker(2, 20)],
            mules: vec![mule],
            flare: FlareStats {
                started_at: 1_700_000_000,
                uptime_ms: 1500,
                counters: crate::Counters {
                    raised: 33,
                    unrouted: 2,
                    dead_lettered: 1,
                    remote_accepted: 4,
                    remote_malformed: 1,
                    stalls: 1,
                    ..Default::default()
                },
                signals: vec![SignalSummary {
                    num: 7,
                    raised: 31,
                    unrouted: 0,
                    tally: Tally {
                        handled: 30,
                        ..Tally::default()
                    },
                }],
                table: vec![RouteStats {
                    num: 7,
                    target: "workers".into(),
                    ..RouteStats::default()
                }],
                sources: vec![SourceSummary {
                    id: 1,
                    sig: 7,
                    what: "cron `\"*\" * * * *`".into(),
                    fired: 9,
                    held: 0,
                    next_in_ms: None,
                }],
            },
            ..StatsDoc::default()
        }
    }

    fn value(text: &str, series: &str) -> Option<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(str::to_owned)
    }

    #[test]
    fn uwsgi_names_carry_the_document_figures() {
        let t = render(&doc());
        assert_eq!(value(&t, "uwsgi_workers").as_deref(), Some("2"));
        assert_eq!(value(&t, "uwsgi_signal_queue_length").as_deref(), Some("5"));
        assert_eq!(
            value(&t, "uwsgi_worker_signals_total{worker_id=\"2\"}").as_deref(),
            Some("20")
        );
        assert_eq!(
            value(&t, "uwsgi_worker_harakiri_count_total{worker_id=\"2\"}").as_deref(),
            Some("2")
        );
        assert_eq!(
            value(&t, "uwsgi_worker_running_time_seconds{worker_id=\"1\"}").as_deref(),
            Some("1.5")
        );
        assert_eq!(
            value(
                &t,
                "uwsgi_worker_average_response_time_seconds{worker_id=\"1\"}"
            )
            .as_deref(),
            Some("0.00025")
        );
        assert_eq!(
            value(&t, "uwsgi_worker_busy{worker_id=\"2\"}").as_deref(),
            Some("1")
        );
        assert!(t.contains("# TYPE uwsgi_worker_respawn_count_total counter\n"));
        // Mules are not uWSGI workers.
        assert!(!t.contains("uwsgi_worker_signals_total{worker_id=\"3\"}"));
    }

    #[test]
    fn flare_names_cover_totals_processes_signals_and_sources() {
        let t = render(&doc());
        assert_eq!(value(&t, "flare_stalls_total").as_deref(), Some("1"));
        assert_eq!(
            value(&t, "flare_process_stalled_seconds{role=\"mule\",id=\"1\"}").as_deref(),
            Some("2.5")
        );
        assert_eq!(
            value(&t, "flare_process_stalls_total{role=\"mule\",id=\"1\"}").as_deref(),
            Some("1")
        );
        assert_eq!(
            value(
                &t,
                "flare_process_stalled_seconds{role=\"worker\",id=\"1\"}"
            )
            .as_deref(),
            Some("0")
        );
        assert_eq!(
            value(&t, "flare_signals_raised_total").as_deref(),
            Some("33")
        );
        assert_eq!(
            value(&t, "flare_signals_unrouted_total").as_deref(),
            Some("2")
        );
        assert_eq!(
            value(&t, "flare_deliveries_dead_lettered_total").as_deref(),
            Some("1")
        );
        assert_eq!(
            value(&t, "flare_remote_requests_total{outcome=\"accepted\"}").as_deref(),
            Some("4")
        );
        assert_eq!(
            value(
                &t,
                "flare_remote_connections_closed_total{reason=\"malformed\"}"
            )
            .as_deref(),
            Some("1")
        );
        assert_eq!(
            value(&t, "flare_process_handled_total{role=\"mule\",id=\"1\"}").as_deref(),
            Some("3")
        );
        assert_eq!(
            value(&t, "flare_processes{role=\"mule\",state=\"paused\"}").as_deref(),
            Some("1")
        );
        assert_eq!(
            value(&t, "flare_processes{role=\"worker\",state=\"running\"}").as_deref(),
            Some("2")
        );
        assert_eq!(
            value(
                &t,
                "flare_process_handled_by_signal_total{role=\"worker\",id=\"2\",num=\"7\"}"
            )
            .as_deref(),
            Some("20")
        );
        assert_eq!(
            value(&t, "flare_signal_handled_total{num=\"7\"}").as_deref(),
            Some("30")
        );
        // Only numbers in use get a series.
        assert!(!t.contains("flare_signal_handled_total{num=\"8\"}"));
        // Label values are escaped.
        assert_eq!(
            value(
                &t,
                "flare_source_fired_total{source_id=\"1\",num=\"7\",what=\"cron `\\\"*\\\" * * * *`\"}"
            )
            .as_deref(),
            Some("9")
        );
        assert_eq!(value(&t, "flare_table_registered").as_deref(), Some("1"));
        assert_eq!(value(&t, "flare_uptime_seconds").as_deref(), Some("1.5"));
    }

    #[test]
    fn every_family_has_help_and_type_once_and_counters_end_in_total() {
        let t = render(&doc());
        let mut seen = std::collections::HashSet::new();
        let mut current = String::new();
        for line in t.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, ty) = rest.split_once(' ').unwrap();
                assert!(seen.insert(name.to_owned()), "{name} twice");
                if ty == "counter" {
                    assert!(name.ends_with("_total"), "{name}");
                }
                current = name.to_owned();
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                assert!(!rest.is_empty());
            } else {
                let name = line.split(['{', ' ']).next().unwrap();
                assert_eq!(name, current, "sample outside its family: {line}");
            }
        }
        assert!(seen.len() > 40, "{}", seen.len());
    }

    #[test]
    fn requests_are_answered_by_path_method_and_shape() {
        assert_eq!(
            parse_request(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Request::Metrics { head: false }
        );
        assert_eq!(
            parse_request(b"HEAD /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Request::Metrics { head: true }
        );
        assert_eq!(
            parse_request(b"GET /metrics HTTP/1.1\r\nHo"),
            Request::Partial
        );
        let starts = |r: Request, status: &str| match r {
            Request::Refuse(b) => {
                let s = String::from_utf8(b).unwrap();
                assert!(s.starts_with(&format!("HTTP/1.1 {status} ")), "{s}");
                assert!(s.contains("Connection: close\r\n"), "{s}");
            }
            other => panic!("{other:?}"),
        };
        starts(parse_request(b"GET / HTTP/1.1\r\n\r\n"), "404");
        starts(parse_request(b"POST /metrics HTTP/1.1\r\n\r\n"), "405");
        starts(parse_request(b"\x16\x03\x01 hello\r\n\r\n"), "400");
        let long = format!("GET /metrics HTTP/1.1\r\nX: {}", "a".repeat(MAX_REQUEST));
        starts(parse_request(long.as_bytes()), "400");
    }
}
