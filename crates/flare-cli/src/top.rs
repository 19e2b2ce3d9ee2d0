//! `flare top ADDR`: a live view of a master, in the spirit of uwsgitop.
//!
//! Polls the stats endpoint, shows one row per process with its signal
//! rate, and a sparkline of the group's signals per second. Keys: `q`
//! quits; `n`, `r`, `h`, `u` sort by name, rate, handled, queued.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use flare::stats::StatsDoc;
use ratatui::Frame;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Sparkline, Table};

use crate::stats::processes;

/// Options of `flare top`.
#[derive(clap::Args)]
pub struct Args {
    /// The stats endpoint: `host:port`, a Unix socket path or `@name`.
    addr: String,
    /// Milliseconds between two looks at the master.
    #[arg(long, default_value_t = 1000)]
    interval: u64,
}

/// How the rows are ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sort {
    /// By role and id.
    Name,
    /// By signals per second, highest first.
    Rate,
    /// By signals handled, most first.
    Handled,
    /// By signals queued, most first.
    Queued,
}

impl Sort {
    fn label(self) -> &'static str {
        match self {
            Sort::Name => "name",
            Sort::Rate => "rate",
            Sort::Handled => "handled",
            Sort::Queued => "queued",
        }
    }
}

/// One process, as a row.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcRow {
    pub name: String,
    pub pid: u32,
    pub state: String,
    pub status: String,
    pub rate: f64,
    pub handled: u64,
    pub queued: u64,
    pub respawns: u64,
    pub timeouts: u64,
    pub last: Option<u8>,
    pub current_ms: Option<u64>,
    pub rss: u64,
    order: (String, u32),
}

/// Rows for a document, with rates from the previous one (`dt` apart).
pub fn rows(doc: &StatsDoc, prev: &HashMap<String, u64>, dt: f64, sort: Sort) -> Vec<ProcRow> {
    let mut rows: Vec<ProcRow> = processes(doc)
        .map(|p| {
            let name = format!("{}{}", p.role, p.id);
            let rate = match prev.get(&name) {
                Some(&before) if dt > 0.0 => p.signals.saturating_sub(before) as f64 / dt,
                _ => 0.0,
            };
            ProcRow {
                order: (p.role.clone(), p.id),
                name,
                pid: p.pid,
                state: p.state.clone(),
                status: p.status.clone(),
                rate,
                handled: p.signals,
                queued: p.signal_queue,
                respawns: p.respawn_count,
                timeouts: p.harakiri_count,
                last: p.last_signal,
                current_ms: p.current_ms,
                rss: p.rss,
            }
        })
        .collect();
    let role_rank = |r: &str| match r {
        "worker" => 0,
        "mule" => 1,
        _ => 2,
    };
    match sort {
        Sort::Name => rows.sort_by_key(|r| (role_rank(&r.order.0), r.order.1)),
        Sort::Rate => rows.sort_by(|a, b| b.rate.total_cmp(&a.rate)),
        Sort::Handled => rows.sort_by_key(|r| std::cmp::Reverse(r.handled)),
        Sort::Queued => rows.sort_by_key(|r| std::cmp::Reverse(r.queued)),
    }
    rows
}

struct View {
    addr: String,
    doc: Option<StatsDoc>,
    error: Option<String>,
    rows: Vec<ProcRow>,
    history: VecDeque<u64>,
    sort: Sort,
}

pub fn run(args: Args) -> flare::Result<()> {
    let interval = Duration::from_millis(args.interval.max(100));
    let mut terminal = ratatui::init();
    let result = event_loop(&mut terminal, &args.addr, interval);
    ratatui::restore();
    result
}

fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    addr: &str,
    interval: Duration,
) -> flare::Result<()> {
    let mut view = View {
        addr: addr.to_owned(),
        doc: None,
        error: None,
        rows: Vec::new(),
        history: VecDeque::new(),
        sort: Sort::Name,
    };
    let mut prev: HashMap<String, u64> = HashMap::new();
    let mut prev_total: Option<u64> = None;
    let mut last_poll: Option<Instant> = None;
    loop {
        let due = last_poll.is_none_or(|t| t.elapsed() >= interval);
        if due {
            let dt = last_poll.map_or(0.0, |t| t.elapsed().as_secs_f64());
            last_poll = Some(Instant::now());
            match flare::stats::fetch(addr, Duration::from_secs(2)) {
                Ok(doc) => {
                    view.rows = rows(&doc, &prev, dt, view.sort);
                    prev = view
                        .rows
                        .iter()
                        .map(|r| (r.name.clone(), r.handled))
                        .collect();
                    let total = doc.flare.counters.handled;
                    if let Some(before) = prev_total {
                        let per_s = total.saturating_sub(before) as f64 / dt.max(0.001);
                        view.history.push_back(per_s.round() as u64);
                        if view.history.len() > 240 {
                            view.history.pop_front();
                        }
                    }
                    prev_total = Some(total);
                    view.doc = Some(doc);
                    view.error = None;
                }
                Err(e) => {
                    view.error = Some(format!(
                        "{}; retrying every {} ms",
                        e.report(),
                        interval.as_millis()
                    ));
                }
            }
        }
        terminal
            .draw(|f| draw(f, &view))
            .map_err(|e| flare::Error::io("drawing the screen", e))?;
        let wait = interval.saturating_sub(last_poll.map_or(Duration::ZERO, |t| t.elapsed()));
        if event::poll(wait).map_err(|e| flare::Error::io("reading keys", e))?
            && let Event::Key(k) = event::read().map_err(|e| flare::Error::io("reading keys", e))?
        {
            if k.kind != KeyEventKind::Press {
                continue;
            }
            let ctrl_c =
                k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c');
            match k.code {
                KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                _ if ctrl_c => return Ok(()),
                KeyCode::Char('n') => view.sort = Sort::Name,
                KeyCode::Char('r') => view.sort = Sort::Rate,
                KeyCode::Char('h') => view.sort = Sort::Handled,
                KeyCode::Char('u') => view.sort = Sort::Queued,
                _ => {}
            }
            if let Some(doc) = &view.doc {
                // Re-sort at once; keep the last rates.
                let rates: HashMap<String, f64> =
                    view.rows.iter().map(|r| (r.name.clone(), r.rate)).collect();
                view.rows = rows(doc, &HashMap::new(), 0.0, view.sort);
                for r in &mut view.rows {
                    r.rate = rates.get(&r.name).copied().unwrap_or(0.0);
                }
                if view.sort == Sort::Rate {
                    view.rows.sort_by(|a, b| b.rate.total_cmp(&a.rate));
                }
            }
        }
    }
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1}G", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1}M", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1}K", b as f64 / 1024.0),
        b => b.to_string(),
    }
}

fn draw(f: &mut Frame, view: &View) {
    let [header, spark, table, footer] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Length(4),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(f.area());
    let mut head = vec![];
    match &view.doc {
        Some(doc) => {
            let c = &doc.flare.counters;
            let rate = view.history.back().copied().unwrap_or(0);
            head.push(Line::from(format!(
                "{} - master {} - up {:.0} s - {} signals/s - queued {}",
                doc.version,
                doc.pid,
                doc.flare.uptime_ms as f64 / 1000.0,
                rate,
                doc.signal_queue
            )));
            head.push(Line::from(format!(
                "raised {} handled {} unrouted {} dropped {} redelivered {} dead-lettered {} timeouts {}",
                c.raised, c.handled, c.unrouted, c.dropped, c.redelivered, c.dead_lettered, c.timeouts
            )));
        }
        None => head.push(Line::from(format!("flare top - {}", view.addr))),
    }
    if let Some(e) = &view.error {
        head.push(Line::styled(
            e.clone(),
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        ));
    }
    f.render_widget(Paragraph::new(head), header);
    let data: Vec<u64> = view.history.iter().copied().collect();
    f.render_widget(
        Sparkline::default()
            .block(Block::bordered().title("signals/s"))
            .data(&data)
            .style(Style::new().fg(Color::Cyan)),
        spark,
    );
    let widths = [
        Constraint::Length(10),
        Constraint::Length(8),
        Constraint::Length(11),
        Constraint::Length(11),
        Constraint::Length(9),
        Constraint::Length(10),
        Constraint::Length(7),
        Constraint::Length(8),
        Constraint::Length(5),
        Constraint::Length(5),
        Constraint::Length(8),
        Constraint::Length(7),
    ];
    let head_row = Row::new([
        "PROC", "PID", "STATE", "STATUS", "SIG/S", "HANDLED", "QUEUED", "RESPAWN", "HARA", "LAST",
        "CUR ms", "RSS",
    ])
    .style(Style::new().add_modifier(Modifier::REVERSED));
    let body = view.rows.iter().map(|r| {
        let style = match r.state.as_str() {
            "paused" => Style::new().fg(Color::Blue),
            "cheaped" => Style::new().fg(Color::Magenta),
            "respawning" | "stopped" => Style::new().fg(Color::Red),
            _ if r.status.starts_with("sig") => Style::new().fg(Color::Yellow),
            _ => Style::new(),
        };
        Row::new([
            r.name.clone(),
            r.pid.to_string(),
            r.state.clone(),
            r.status.clone(),
            format!("{:.0}", r.rate),
            r.handled.to_string(),
            r.queued.to_string(),
            r.respawns.to_string(),
            r.timeouts.to_string(),
            r.last.map_or("-".into(), |n| n.to_string()),
            r.current_ms.map_or("-".into(), |n| n.to_string()),
            human(r.rss),
        ])
        .style(style)
    });
    f.render_widget(Table::new(body, widths).header(head_row), table);
    f.render_widget(
        Paragraph::new(format!(
            "q quit | sort: n name, r rate, h handled, u queued (now: {})",
            view.sort.label()
        )),
        footer,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use flare::stats::ProcStats;

    fn doc() -> StatsDoc {
        let p = |role: &str, id, signals, queued| ProcStats {
            id,
            role: role.into(),
            signals,
            signal_queue: queued,
            ..ProcStats::default()
        };
        StatsDoc {
            workers: vec![p("worker", 1, 100, 0), p("worker", 2, 50, 9)],
            mules: vec![p("mule", 1, 300, 1)],
            ..StatsDoc::default()
        }
    }

    #[test]
    fn rates_come_from_the_previous_look() {
        let prev: HashMap<String, u64> = [("worker1".into(), 40), ("mule1".into(), 300)].into();
        let rows = rows(&doc(), &prev, 2.0, Sort::Name);
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["worker1", "worker2", "mule1"]);
        assert_eq!(rows[0].rate, 30.0);
        assert_eq!(rows[1].rate, 0.0, "no earlier look");
        assert_eq!(rows[2].rate, 0.0);
    }

    #[test]
    fn every_sort_key_orders_the_rows() {
        let prev: HashMap<String, u64> = [("worker2".into(), 0)].into();
        let names = |sort| -> Vec<String> {
            rows(&doc(), &prev, 1.0, sort)
                .into_iter()
                .map(|r| r.name)
                .collect()
        };
        assert_eq!(names(Sort::Rate)[0], "worker2");
        assert_eq!(names(Sort::Handled), ["mule1", "worker1", "worker2"]);
        assert_eq!(names(Sort::Queued), ["worker2", "mule1", "worker1"]);
    }
}
