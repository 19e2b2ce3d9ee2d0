//! Figures collected over the rounds, the table, the checks and the JSON
//! summary.

use std::fmt::Write as _;

use serde::Serialize;

/// Which implementation a figure belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// flare, Rust handlers.
    Flare,
    /// uWSGI, Python handlers (`bench/uwsgi/flarebench.py`).
    Uwsgi,
    /// flare's Python package running the same `flarebench.py`.
    #[serde(rename = "flare-python")]
    FlarePy,
}

impl Side {
    /// For people.
    pub fn name(self) -> &'static str {
        match self {
            Side::Flare => "flare",
            Side::Uwsgi => "uWSGI",
            Side::FlarePy => "flare (Python)",
        }
    }

    /// Short, for file names.
    pub fn tag(self) -> &'static str {
        match self {
            Side::Flare => "flare",
            Side::Uwsgi => "uwsgi",
            Side::FlarePy => "flare-py",
        }
    }
}

/// How a figure is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Unit {
    /// Microseconds.
    #[serde(rename = "us")]
    Micros,
    /// Milliseconds.
    #[serde(rename = "ms")]
    Millis,
    /// Per second.
    #[serde(rename = "1/s")]
    PerSec,
    /// A count.
    #[serde(rename = "count")]
    Count,
    /// Mebibytes.
    #[serde(rename = "MiB")]
    MiB,
    /// Percent.
    #[serde(rename = "%")]
    Percent,
    /// A plain ratio.
    #[serde(rename = "ratio")]
    Ratio,
}

impl Unit {
    fn label(self) -> &'static str {
        match self {
            Unit::Micros => "µs",
            Unit::Millis => "ms",
            Unit::PerSec => "/s",
            Unit::Count => "",
            Unit::MiB => "MiB",
            Unit::Percent => "%",
            Unit::Ratio => "",
        }
    }
}

/// Min, median and max of one side's figures.
#[derive(Clone, Debug, Serialize)]
pub struct Stats {
    /// The median over the rounds (the mean of the middle two for an even count).
    pub median: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
    /// Every round's figure, in order.
    pub values: Vec<f64>,
}

impl Stats {
    fn of(values: &[f64]) -> Option<Stats> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Stats {
            median,
            min: v[0],
            max: v[n - 1],
            values: values.to_vec(),
        })
    }
}

/// One metric of one scenario, every side.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// The scenario, e.g. `burst 100000`.
    pub scenario: String,
    /// The metric, e.g. `time to last handler`.
    pub metric: String,
    /// Its unit.
    pub unit: Unit,
    /// flare's figures over the rounds (Rust handlers).
    pub flare: Option<Stats>,
    /// uWSGI's figures over the rounds.
    pub uwsgi: Option<Stats>,
    /// flare median / uWSGI median.
    pub ratio: Option<f64>,
    /// flare's figures with Python handlers (the same `flarebench.py`).
    pub flare_python: Option<Stats>,
    /// flare (Python) median / uWSGI median.
    pub ratio_python: Option<f64>,
    #[serde(skip)]
    raw: [Vec<f64>; 3],
}

impl Row {
    fn side(&self, side: Side) -> Option<&Stats> {
        match side {
            Side::Flare => self.flare.as_ref(),
            Side::Uwsgi => self.uwsgi.as_ref(),
            Side::FlarePy => self.flare_python.as_ref(),
        }
    }

    fn ratio(&self, side: Side) -> Option<f64> {
        match side {
            Side::Flare => self.ratio,
            Side::FlarePy => self.ratio_python,
            Side::Uwsgi => None,
        }
    }
}

/// A condition a run must meet (quick mode fails on any that does not).
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// The side it is about.
    pub side: Side,
    /// The scenario.
    pub scenario: String,
    /// What was checked, with the figures.
    pub what: String,
    /// Whether it held.
    pub ok: bool,
}

/// Everything a run measured.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// One row per scenario and metric, in the order first measured.
    pub rows: Vec<Row>,
    /// Every check made.
    pub checks: Vec<Check>,
    /// Remarks printed under the table.
    pub notes: Vec<String>,
    /// The project's targets and whether this run met them.
    pub targets: Vec<Goal>,
}

/// A target the project wants to reach, as this run found it.
#[derive(Clone, Debug, Serialize)]
pub struct Goal {
    /// The target.
    pub what: String,
    /// Met, not met, or not measured in this run.
    pub met: Option<bool>,
    /// The figures it was judged on.
    pub figures: String,
}

impl Report {
    /// Records one round's figure.
    pub fn add(&mut self, side: Side, scenario: &str, metric: &str, unit: Unit, value: f64) {
        let at = match self
            .rows
            .iter()
            .position(|r| r.scenario == scenario && r.metric == metric)
        {
            Some(i) => i,
            None => {
                // After the rows of the same scenario, if any.
                let at = self
                    .rows
                    .iter()
                    .rposition(|r| r.scenario == scenario)
                    .map_or(self.rows.len(), |i| i + 1);
                self.rows.insert(
                    at,
                    Row {
                        scenario: scenario.to_owned(),
                        metric: metric.to_owned(),
                        unit,
                        flare: None,
                        uwsgi: None,
                        ratio: None,
                        flare_python: None,
                        ratio_python: None,
                        raw: [Vec::new(), Vec::new(), Vec::new()],
                    },
                );
                at
            }
        };
        let row = &mut self.rows[at];
        row.raw[side as usize].push(value);
        row.flare = Stats::of(&row.raw[Side::Flare as usize]);
        row.uwsgi = Stats::of(&row.raw[Side::Uwsgi as usize]);
        row.flare_python = Stats::of(&row.raw[Side::FlarePy as usize]);
        let ratio = |f: &Option<Stats>| match (f, &row.uwsgi) {
            (Some(f), Some(u)) if u.median != 0.0 => Some(f.median / u.median),
            _ => None,
        };
        row.ratio = ratio(&row.flare);
        row.ratio_python = ratio(&row.flare_python);
    }

    /// Records a check.
    pub fn check(&mut self, side: Side, scenario: &str, ok: bool, what: String) {
        self.checks.push(Check {
            side,
            scenario: scenario.to_owned(),
            what,
            ok,
        });
    }

    /// Adds a remark (once).
    pub fn note(&mut self, text: String) {
        if !self.notes.contains(&text) {
            self.notes.push(text);
        }
    }

    /// A side's figures for a metric, if measured.
    pub fn stats(&self, side: Side, scenario: &str, metric: &str) -> Option<&Stats> {
        let row = self
            .rows
            .iter()
            .find(|r| r.scenario == scenario && r.metric == metric)?;
        row.side(side)
    }

    /// Records whether a project target is met (`None`: not measured).
    pub fn target(&mut self, what: &str, met: Option<bool>, figures: String) {
        self.targets.push(Goal {
            what: what.to_owned(),
            met,
            figures,
        });
    }

    /// The checks that failed.
    pub fn failures(&self) -> Vec<&Check> {
        self.checks.iter().filter(|c| !c.ok).collect()
    }

    /// Whether any figure of `side` was recorded.
    pub fn has(&self, side: Side) -> bool {
        self.rows.iter().any(|r| r.side(side).is_some())
    }

    /// The table of `side` (flare or flare (Python)) next to uWSGI:
    /// `scenario | metric | SIDE | uWSGI | SIDE/uWSGI`, each cell the median
    /// and, over several rounds, (min-max). Rows `side` did not measure
    /// are left out.
    pub fn table(&self, side: Side) -> String {
        let ratio_head = format!("{}/uWSGI", side.name());
        let header = ["scenario", "metric", side.name(), "uWSGI", &ratio_head];
        let mut lines: Vec<[String; 5]> = Vec::new();
        for r in self.rows.iter().filter(|r| r.side(side).is_some()) {
            let metric = match r.unit.label() {
                "" => r.metric.clone(),
                u => format!("{} ({u})", r.metric),
            };
            lines.push([
                r.scenario.clone(),
                metric,
                cell(r.side(side), r.unit),
                cell(r.uwsgi.as_ref(), r.unit),
                r.ratio(side)
                    .map_or("-".into(), |x| format!("{}x", sig3(x))),
            ]);
        }
        let width = |i: usize| {
            lines
                .iter()
                .map(|l| l[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        };
        let w: Vec<usize> = (0..5).map(width).collect();
        let mut s = String::new();
        let row = |s: &mut String, cells: [&str; 5]| {
            let mut out = String::new();
            for (i, c) in cells.iter().enumerate() {
                let pad = w[i].saturating_sub(c.chars().count());
                if i > 0 {
                    out.push_str(" | ");
                }
                if i >= 2 {
                    out.push_str(&" ".repeat(pad));
                    out.push_str(c);
                } else {
                    out.push_str(c);
                    out.push_str(&" ".repeat(pad));
                }
            }
            let _ = writeln!(s, "{}", out.trim_end());
        };
        row(&mut s, header);
        let rule: Vec<String> = w.iter().map(|&n| "-".repeat(n)).collect();
        let _ = writeln!(s, "{}", rule.join("-|-"));
        let mut last = String::new();
        for l in &lines {
            let scen = if l[0] == last { "" } else { &l[0] };
            row(&mut s, [scen, &l[1], &l[2], &l[3], &l[4]]);
            last.clone_from(&l[0]);
        }
        s
    }
}

fn cell(s: Option<&Stats>, unit: Unit) -> String {
    match s {
        None => "-".into(),
        Some(s) if s.values.len() == 1 || s.min == s.max => fmt(s.median, unit),
        Some(s) => format!(
            "{} ({}-{})",
            fmt(s.median, unit),
            fmt(s.min, unit),
            fmt(s.max, unit)
        ),
    }
}

/// A figure for people: counts and rates as whole numbers with thousands
/// separators, the rest with three significant digits.
pub fn fmt(v: f64, unit: Unit) -> String {
    match unit {
        Unit::Count | Unit::PerSec => grouped(v.round() as i64),
        _ => sig3(v),
    }
}

fn sig3(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() {
        "inf".into()
    } else if a >= 1000.0 {
        grouped(v.round() as i64)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else if a == 0.0 {
        "0".into()
    } else {
        format!("{v:.3}")
    }
}

fn grouped(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// The value at quantile `q` (0..=1) of `sorted` (nearest rank).
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), 50);
        assert_eq!(quantile(&v, 0.99), 99);
        assert_eq!(quantile(&v, 1.0), 100);
        assert_eq!(quantile(&[7], 0.99), 7);
        assert_eq!(quantile(&[], 0.5), 0);
    }

    #[test]
    fn figures_print_for_people() {
        assert_eq!(fmt(1_234_567.4, Unit::Count), "1,234,567");
        assert_eq!(fmt(999.0, Unit::PerSec), "999");
        assert_eq!(fmt(12.345, Unit::Micros), "12.3");
        assert_eq!(fmt(0.01234, Unit::Millis), "0.012");
        assert_eq!(fmt(4321.0, Unit::Micros), "4,321");
    }

    #[test]
    fn rows_keep_rounds_and_ratios() {
        let mut r = Report::default();
        for v in [3.0, 1.0, 2.0] {
            r.add(Side::Flare, "s", "m", Unit::Micros, v);
        }
        r.add(Side::Uwsgi, "s", "m", Unit::Micros, 4.0);
        let row = &r.rows[0];
        let f = row.flare.as_ref().unwrap();
        assert_eq!((f.min, f.median, f.max), (1.0, 2.0, 3.0));
        assert_eq!(row.ratio, Some(0.5));
        assert!(r.table(Side::Flare).contains("2.00 (1.00-3.00)"));
        // The Python side has its own ratio and its own table.
        r.add(Side::FlarePy, "s", "m", Unit::Micros, 8.0);
        let row = &r.rows[0];
        assert_eq!(row.ratio_python, Some(2.0));
        assert_eq!(row.ratio, Some(0.5));
        let py = r.table(Side::FlarePy);
        assert!(
            py.contains("flare (Python)/uWSGI") && py.contains("2.00x"),
            "{py}"
        );
        // Rows a side did not measure stay out of its table.
        r.add(Side::Flare, "only rust", "m", Unit::Micros, 1.0);
        assert!(!r.table(Side::FlarePy).contains("only rust"));
        assert!(r.table(Side::Flare).contains("only rust"));
    }
}
