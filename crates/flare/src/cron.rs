//! Cron specifications: crontab text and uWSGI's five integers.
//!
//! Matching is done by `croner` on local wall-clock minutes. uWSGI's form
//! (`minute hour day month weekday`, `-1` every, `-N` every value divisible
//! by N, weekday 7 = Sunday) is translated into crontab lists that mean
//! exactly what uWSGI means, day and weekday included. Pure: no I/O.

use std::fmt;
use std::str::FromStr;

use chrono::NaiveDateTime;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

use crate::error::{Error, RegistrationError, Result};

/// When a cron source fires: once in every local minute that matches.
///
/// ```
/// use flare::CronSpec;
/// // Standard crontab text: every 15 minutes, 9:00-17:45, Monday to Friday.
/// let text: CronSpec = "*/15 9-17 * * 1-5".parse().unwrap();
/// // uWSGI's five integers (minute hour day month weekday): every 5 minutes.
/// let ints = CronSpec::uwsgi(-5, -1, -1, -1, -1).unwrap();
/// assert_eq!(ints.to_string(), "uwsgi -5 -1 -1 -1 -1");
/// assert!("61 * * * *".parse::<CronSpec>().is_err());
/// ```
#[derive(Clone)]
pub struct CronSpec {
    /// What the user wrote, for messages and duplicate detection.
    source: String,
    cron: Cron,
}

impl fmt::Debug for CronSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronSpec({:?})", self.source)
    }
}

impl PartialEq for CronSpec {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for CronSpec {}

impl fmt::Display for CronSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

const FIELDS: &str = "minute hour day month weekday";

impl FromStr for CronSpec {
    type Err = Error;

    /// Crontab text: five fields (`minute hour day month weekday`) with
    /// `*`, lists, ranges and steps, month and day names; or
    /// `uwsgi M H D MO W`, uWSGI's integers.
    fn from_str(text: &str) -> Result<CronSpec> {
        let t = text.trim();
        if let Some(ints) = t.strip_prefix("uwsgi ") {
            let v: Vec<i32> = ints
                .split_whitespace()
                .map(|n| n.parse::<i32>())
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| bad(text, "uWSGI's form takes five integers"))?;
            let [m, h, d, mo, w] = v[..] else {
                return Err(bad(text, "uWSGI's form takes five integers"));
            };
            return CronSpec::uwsgi(m, h, d, mo, w);
        }
        let n = t.split_whitespace().count();
        if n != 5 {
            return Err(bad(
                text,
                &format!("it has {n} fields; a cron spec has five: {FIELDS}"),
            ));
        }
        let cron = parser(false)
            .parse(t)
            .map_err(|e| bad(text, &format!("{e} (fields: {RANGES})")))?;
        checked(t.to_owned(), cron)
    }
}

/// Refuses a spec that can never fire (30 February): surely a mistake.
fn checked(source: String, cron: Cron) -> Result<CronSpec> {
    let start = chrono::DateTime::from_timestamp(0, 0).map(|d| d.naive_utc());
    if start.is_some_and(|s| cron.find_next_occurrence(&s, false).is_err()) {
        return Err(bad(&source, "it never matches any date"));
    }
    Ok(CronSpec { source, cron })
}

fn parser(dom_and_dow: bool) -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .dom_and_dow(dom_and_dow)
        .build()
}

fn bad(text: &str, why: &str) -> Error {
    Error::from(RegistrationError::InvalidSource(format!(
        "cron spec `{text}`: {why}"
    )))
}

/// The fields and their ranges, for parse errors that do not name them.
const RANGES: &str = "minute 0-59, hour 0-23, day 1-31, month 1-12 or JAN-DEC, \
                      weekday 0-7 or SUN-SAT";

impl CronSpec {
    /// uWSGI's `add_cron(signum, minute, hour, day, month, weekday)`: `-1`
    /// is every value, `-N` every value divisible by N, weekday 0 or 7 is
    /// Sunday. As in uWSGI, day and weekday are either-or only when both
    /// are given exactly; otherwise both must match.
    ///
    /// # Errors
    ///
    /// [`RegistrationError::InvalidSource`] when a field is out of its range
    /// (minute 0-59, hour 0-23, day 1-31, month 1-12, weekday 0-7, or -N).
    pub fn uwsgi(minute: i32, hour: i32, day: i32, month: i32, weekday: i32) -> Result<CronSpec> {
        let source = format!("uwsgi {minute} {hour} {day} {month} {weekday}");
        let field = |v: i32, lo: i32, hi: i32, name: &str| -> Result<String> {
            if v >= 0 {
                if v < lo || v > hi {
                    return Err(bad(
                        &source,
                        &format!("{name} {v} is out of range {lo}..={hi} (or -1, -N)"),
                    ));
                }
                Ok(v.to_string())
            } else if v == -1 {
                Ok("*".into())
            } else {
                let n = v.unsigned_abs() as i32;
                let list: Vec<String> = (lo..=hi)
                    .filter(|x| x % n == 0)
                    .map(|x| x.to_string())
                    .collect();
                if list.is_empty() {
                    return Err(bad(&source, &format!("{name} {v} never matches")));
                }
                Ok(list.join(","))
            }
        };
        let weekday = if weekday == 7 { 0 } else { weekday };
        let text = [
            field(minute, 0, 59, "minute")?,
            field(hour, 0, 23, "hour")?,
            field(day, 1, 31, "day")?,
            field(month, 1, 12, "month")?,
            field(weekday, 0, 6, "weekday")?,
        ]
        .join(" ");
        let either_day = day >= 0 && weekday >= 0;
        let cron = parser(!either_day)
            .parse(&text)
            .map_err(|e| bad(&source, &e.to_string()))?;
        checked(source, cron)
    }

    /// The next matching local minute after `t`.
    pub(crate) fn next_after(&self, t: &NaiveDateTime) -> Option<NaiveDateTime> {
        self.cron.find_next_occurrence(t, false).ok()
    }

    /// Whether the local wall-clock minute `t` matches (seconds ignored).
    pub fn matches(&self, t: &NaiveDateTime) -> bool {
        use chrono::Timelike;
        let minute = t
            .with_second(0)
            .unwrap_or(*t)
            .with_nanosecond(0)
            .unwrap_or(*t);
        self.cron.is_time_matching(&minute).unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, NaiveDate};

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, mo, d)
            .and_then(|d| d.and_hms_opt(h, mi, 0))
            .expect("valid date")
    }

    fn spec(s: &str) -> CronSpec {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    /// Every minute of a span where `c` matches.
    fn matching_minutes(c: &CronSpec, from: NaiveDateTime, minutes: i64) -> Vec<NaiveDateTime> {
        (0..minutes)
            .map(|i| from + chrono::Duration::minutes(i))
            .filter(|t| c.matches(t))
            .collect()
    }

    #[test]
    fn crontab_steps_ranges_lists() {
        let c = spec("*/15 9-17 * * 1-5");
        // Monday 2026-11-23.
        assert!(c.matches(&at(2026, 11, 23, 9, 0)));
        assert!(c.matches(&at(2026, 11, 23, 17, 45)));
        assert!(!c.matches(&at(2026, 11, 23, 18, 0)));
        assert!(!c.matches(&at(2026, 11, 23, 9, 10)));
        assert!(!c.matches(&at(2026, 11, 22, 9, 0)), "Sunday");
        let c = spec("5,10 0 1 * *");
        assert_eq!(matching_minutes(&c, at(2026, 3, 1, 0, 0), 60).len(), 2);
        let c = spec("0 12 * JAN,dec SUN");
        assert!(c.matches(&at(2026, 12, 6, 12, 0)), "a Sunday in December");
    }

    #[test]
    fn weekday_0_and_7_are_sunday() {
        let sunday = at(2026, 11, 22, 8, 30);
        assert_eq!(sunday.weekday(), chrono::Weekday::Sun);
        for s in [
            "30 8 * * 0",
            "30 8 * * 7",
            "uwsgi 30 8 -1 -1 0",
            "uwsgi 30 8 -1 -1 7",
        ] {
            assert!(spec(s).matches(&sunday), "{s}");
            assert!(
                !spec(s).matches(&(sunday + chrono::Duration::days(1))),
                "{s}"
            );
        }
    }

    #[test]
    fn month_ends_and_leap_day() {
        let c = spec("0 0 31 * *");
        let hits: Vec<u32> = (1..=12)
            .filter(|&m| {
                (1..=31).any(|d| {
                    NaiveDate::from_ymd_opt(2026, m, d)
                        .and_then(|x| x.and_hms_opt(0, 0, 0))
                        .is_some_and(|t| d == 31 && c.matches(&t))
                })
            })
            .collect();
        assert_eq!(hits, vec![1, 3, 5, 7, 8, 10, 12], "only months with a 31st");
        let leap = spec("0 0 29 2 *");
        assert!(leap.matches(&at(2028, 2, 29, 0, 0)));
        assert!(!leap.matches(&at(2027, 3, 1, 0, 0)));
        assert!(spec("uwsgi 0 0 29 2 -1").matches(&at(2028, 2, 29, 0, 0)));
    }

    #[test]
    fn uwsgi_negative_values_mean_divisible_by() {
        let c = spec("uwsgi -5 -1 -1 -1 -1");
        let hits = matching_minutes(&c, at(2026, 1, 1, 0, 0), 60);
        assert_eq!(hits.len(), 12);
        assert!(hits.iter().all(|t| chrono::Timelike::minute(t) % 5 == 0));
        // Day -2: even days (uWSGI tests mday % 2), unlike crontab */2.
        let even = spec("uwsgi 0 0 -2 -1 -1");
        assert!(even.matches(&at(2026, 1, 2, 0, 0)) && !even.matches(&at(2026, 1, 3, 0, 0)));
        let odd = spec("0 0 */2 * *");
        assert!(odd.matches(&at(2026, 1, 3, 0, 0)) && !odd.matches(&at(2026, 1, 2, 0, 0)));
        // Month -3: March, June, September, December.
        let q = spec("uwsgi 0 0 1 -3 -1");
        let months: Vec<u32> = (1..=12)
            .filter(|&m| q.matches(&at(2026, m, 1, 0, 0)))
            .collect();
        assert_eq!(months, vec![3, 6, 9, 12]);
    }

    #[test]
    fn uwsgi_day_and_weekday_rules() {
        // Both exact: either the 1st or a Monday.
        let either = spec("uwsgi 0 0 1 -1 1");
        assert!(either.matches(&at(2026, 11, 1, 0, 0)), "the 1st, a Sunday");
        assert!(either.matches(&at(2026, 11, 2, 0, 0)), "a Monday");
        assert!(!either.matches(&at(2026, 11, 3, 0, 0)));
        // One of them "every N": both must match (uWSGI ANDs).
        let both = spec("uwsgi 0 0 -2 -1 1");
        assert!(both.matches(&at(2026, 11, 2, 0, 0)), "Monday the 2nd");
        assert!(
            !both.matches(&at(2026, 11, 9, 0, 0)),
            "Monday the 9th is odd"
        );
        assert!(!both.matches(&at(2026, 11, 4, 0, 0)), "Wednesday the 4th");
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        for (s, want) in [
            ("* * * *", "4 fields"),
            ("* * * * * *", "6 fields"),
            ("61 * * * *", "cron spec `61 * * * *`: "),
            ("61 * * * *", "minute 0-59"),
            ("x * * * *", "invalid signal source: cron spec"),
            ("uwsgi 1 2 3", "five integers"),
            ("uwsgi 60 -1 -1 -1 -1", "minute 60 is out of range 0..=59"),
            ("uwsgi 0 0 -40 -1 -1", "day -40 never matches"),
            ("uwsgi 0 0 30 2 -1", "never matches any date"),
            ("0 0 30 2 *", "never matches any date"),
        ] {
            let e = s.parse::<CronSpec>().unwrap_err().to_string();
            assert!(e.contains(want), "{s}: {e}");
        }
    }
}
