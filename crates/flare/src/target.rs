//! Signal targets: the uWSGI target grammar, parsed and printed back.
//!
//! Parsing ([`Target::from_str`]) checks the grammar only; whether a target
//! exists in a given process group (`worker9` with 4 workers, an unknown
//! farm) is checked by [`Target::resolve`] at registration. Pure: no I/O.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, RegistrationError, Result};
use crate::topology::{MAX_TARGET_LEN, Slot, Topology};

/// Where a signal is delivered: the uWSGI target grammar.
///
/// | text | meaning |
/// |---|---|
/// | `worker`, `worker0` (and the empty text) | the first available worker |
/// | `workers` | every worker |
/// | `workerN` (N >= 1) | worker N only |
/// | `active-workers` | every running worker that is neither cheaped nor paused |
/// | `mule`, `mule0` | the first available mule |
/// | `mules` | every mule |
/// | `muleN` (N >= 1) | mule N only |
/// | `spooler` | the first available spooler |
/// | `farmN` (N >= 1) | the first available mule of the N-th farm |
/// | `farm_NAME` | the first available mule of the farm called NAME |
///
/// ```
/// use flare::Target;
/// let t: Target = "farm_reports".parse().unwrap();
/// assert_eq!(t, Target::FarmNamed("reports".into()));
/// assert_eq!(t.to_string(), "farm_reports");
/// assert_eq!("worker0".parse::<Target>().unwrap(), Target::Worker);
/// assert!("mule-1".parse::<Target>().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub enum Target {
    /// `worker` / `worker0`: the first available worker (the default).
    #[default]
    Worker,
    /// `workers`: every worker.
    Workers,
    /// `workerN`: worker N (from 1).
    WorkerN(u32),
    /// `active-workers`: every running worker, neither cheaped nor paused.
    ActiveWorkers,
    /// `mule` / `mule0`: the first available mule.
    Mule,
    /// `mules`: every mule.
    Mules,
    /// `muleN`: mule N (from 1).
    MuleN(u32),
    /// `spooler`: the first available spooler.
    Spooler,
    /// `farmN`: the first available mule of farm N (from 1, declaration order).
    FarmN(u32),
    /// `farm_NAME`: the first available mule of the farm called NAME.
    FarmNamed(String),
}

/// The grammar, for error messages that have no process group to list.
const GRAMMAR: &str = "worker, worker0, workers, workerN, active-workers, mule, mule0, mules, \
                       muleN, spooler, farmN, farm_NAME (N >= 1)";

impl FromStr for Target {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let bad = |reason: &str| {
            Error::from(RegistrationError::InvalidTarget {
                text: text.to_owned(),
                reason: reason.to_owned(),
                valid: GRAMMAR.to_owned(),
            })
        };
        if text.len() > MAX_TARGET_LEN {
            return Err(bad(&format!(
                "it is {} bytes long; targets are at most {MAX_TARGET_LEN} bytes",
                text.len()
            )));
        }
        let t = match text {
            "" | "worker" | "worker0" => Target::Worker,
            "workers" => Target::Workers,
            "active-workers" => Target::ActiveWorkers,
            "mule" | "mule0" => Target::Mule,
            "mules" => Target::Mules,
            "spooler" => Target::Spooler,
            _ => {
                if let Some(name) = text.strip_prefix("farm_") {
                    if name.is_empty() {
                        return Err(bad("the farm name is empty"));
                    }
                    Target::FarmNamed(name.to_owned())
                } else if let Some(n) = text.strip_prefix("worker") {
                    Target::WorkerN(index(n).ok_or_else(|| bad("not a worker number"))?)
                } else if let Some(n) = text.strip_prefix("mule") {
                    Target::MuleN(index(n).ok_or_else(|| bad("not a mule number"))?)
                } else if let Some(n) = text.strip_prefix("farm") {
                    Target::FarmN(index(n).ok_or_else(|| bad("not a farm number"))?)
                } else {
                    return Err(bad("unknown target"));
                }
            }
        };
        Ok(t)
    }
}

/// A 1-based index written as canonical decimal: no sign, no leading zero.
fn index(digits: &str) -> Option<u32> {
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    canonical.then(|| digits.parse().ok()).flatten()
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Worker => f.write_str("worker"),
            Target::Workers => f.write_str("workers"),
            Target::WorkerN(n) => write!(f, "worker{n}"),
            Target::ActiveWorkers => f.write_str("active-workers"),
            Target::Mule => f.write_str("mule"),
            Target::Mules => f.write_str("mules"),
            Target::MuleN(n) => write!(f, "mule{n}"),
            Target::Spooler => f.write_str("spooler"),
            Target::FarmN(n) => write!(f, "farm{n}"),
            Target::FarmNamed(name) => write!(f, "farm_{name}"),
        }
    }
}

/// A target checked against a process group: what the router works with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resolved {
    /// First available worker.
    WorkerPool,
    /// Every worker that exists and is not cheaped.
    AllWorkers,
    /// Every running worker, neither cheaped nor paused.
    ActiveWorkers,
    /// One worker.
    Worker(Slot),
    /// First available mule.
    MulePool,
    /// Every mule.
    AllMules,
    /// One mule.
    Mule(Slot),
    /// First available spooler.
    SpoolerPool,
    /// First available mule of a farm (0-based farm index).
    Farm(usize),
}

impl Resolved {
    /// Whether the target picks one member of a pool.
    pub(crate) fn is_pool(self) -> bool {
        matches!(
            self,
            Resolved::WorkerPool | Resolved::MulePool | Resolved::SpoolerPool | Resolved::Farm(_)
        )
    }

    /// Every slot the target can ever reach, ignoring process states.
    pub(crate) fn members(self, topo: &Topology) -> Vec<Slot> {
        match self {
            Resolved::WorkerPool | Resolved::AllWorkers | Resolved::ActiveWorkers => {
                topo.worker_slots().collect()
            }
            Resolved::MulePool | Resolved::AllMules => topo.mule_slots().collect(),
            Resolved::Worker(s) | Resolved::Mule(s) => vec![s],
            Resolved::SpoolerPool => topo.spooler_slots().collect(),
            Resolved::Farm(i) => topo.farm_slots(i).collect(),
        }
    }

    /// Whether the target can ever reach `slot`.
    pub(crate) fn includes(self, topo: &Topology, slot: Slot) -> bool {
        match self {
            Resolved::WorkerPool | Resolved::AllWorkers | Resolved::ActiveWorkers => {
                topo.worker_slots().contains(&slot)
            }
            Resolved::MulePool | Resolved::AllMules => topo.mule_slots().contains(&slot),
            Resolved::Worker(s) | Resolved::Mule(s) => s == slot,
            Resolved::SpoolerPool => topo.spooler_slots().contains(&slot),
            Resolved::Farm(i) => topo.farm_slots(i).any(|s| s == slot),
        }
    }
}

impl Target {
    /// Checks the target against a process group and resolves it to the
    /// slots it names. The error names the text and lists what is valid
    /// in this group.
    pub(crate) fn resolve(&self, topo: &Topology) -> Result<Resolved> {
        let bad = |reason: String| {
            Error::from(RegistrationError::InvalidTarget {
                text: self.to_string(),
                reason,
                valid: valid_targets(topo),
            })
        };
        let have = |n: u32, role: &str| -> Result<()> {
            if n == 0 {
                Err(bad(format!("this master has no {role}s")))
            } else {
                Ok(())
            }
        };
        let numbered = |n: u32, count: u32, role: &str| -> Result<Slot> {
            have(count, role)?;
            if n > count {
                Err(bad(format!(
                    "this master has {count} {role}{} ({role}1..{role}{count})",
                    if count == 1 { "" } else { "s" }
                )))
            } else {
                Ok((n - 1) as Slot)
            }
        };
        Ok(match self {
            Target::Worker => {
                have(topo.workers, "worker")?;
                Resolved::WorkerPool
            }
            Target::Workers => {
                have(topo.workers, "worker")?;
                Resolved::AllWorkers
            }
            Target::ActiveWorkers => {
                have(topo.workers, "worker")?;
                Resolved::ActiveWorkers
            }
            Target::WorkerN(n) => Resolved::Worker(numbered(*n, topo.workers, "worker")?),
            Target::Mule => {
                have(topo.mules, "mule")?;
                Resolved::MulePool
            }
            Target::Mules => {
                have(topo.mules, "mule")?;
                Resolved::AllMules
            }
            Target::MuleN(n) => {
                let i = numbered(*n, topo.mules, "mule")?;
                Resolved::Mule(topo.workers as Slot + i)
            }
            Target::Spooler => {
                have(topo.spoolers, "spooler")?;
                Resolved::SpoolerPool
            }
            Target::FarmN(n) => {
                let count = topo.farms.len() as u32;
                Resolved::Farm(numbered(*n, count, "farm")?)
            }
            Target::FarmNamed(name) => match topo.farm_by_name(name) {
                Some(i) => Resolved::Farm(i),
                None if topo.farms.is_empty() => {
                    return Err(bad("this master has no farms".into()));
                }
                None => return Err(bad(format!("there is no farm called `{name}`"))),
            },
        })
    }

    /// The same target with farm names and numbers made one: two targets are
    /// the same registration target when their canonical forms are equal.
    pub(crate) fn same_as(&self, other: &Target, topo: &Topology) -> bool {
        match (self.resolve(topo), other.resolve(topo)) {
            (Ok(a), Ok(b)) => a == b,
            _ => self == other,
        }
    }
}

/// Every target valid in `topo`, for error messages.
pub(crate) fn valid_targets(topo: &Topology) -> String {
    let mut v: Vec<String> = Vec::new();
    let range = |role: &str, n: u32| {
        if n == 1 {
            format!("{role}1")
        } else {
            format!("{role}1..{role}{n}")
        }
    };
    if topo.workers > 0 {
        v.extend(["worker", "worker0", "workers", "active-workers"].map(String::from));
        v.push(range("worker", topo.workers));
    }
    if topo.mules > 0 {
        v.extend(["mule", "mule0", "mules"].map(String::from));
        v.push(range("mule", topo.mules));
    }
    if topo.spoolers > 0 {
        v.push("spooler".into());
    }
    if !topo.farms.is_empty() {
        v.push(range("farm", topo.farms.len() as u32));
        v.extend(topo.farms.iter().map(|f| format!("farm_{}", f.name)));
    }
    v.join(", ")
}

/// A mule as a signal target (uwsgiconf `Mule(id)`): `Mule(2)` is `mule2`,
/// `Mule(0)` the first available mule.
///
/// ```
/// use flare::{Mule, Target};
/// assert_eq!(Target::from(Mule(2)).to_string(), "mule2");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Mule(pub u32);

impl From<Mule> for Target {
    fn from(m: Mule) -> Self {
        match m.0 {
            0 => Target::Mule,
            n => Target::MuleN(n),
        }
    }
}

/// A mule farm as a signal target (uwsgiconf `Farm(name)`): by name
/// (`farm_NAME`) or by declaration number (`farmN`).
///
/// ```
/// use flare::{Farm, Target};
/// assert_eq!(Target::from(Farm::named("reports")).to_string(), "farm_reports");
/// assert_eq!(Target::from(Farm::index(1)).to_string(), "farm1");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Farm(Target);

impl Farm {
    /// The farm called `name`.
    pub fn named(name: impl Into<String>) -> Self {
        Farm(Target::FarmNamed(name.into()))
    }

    /// The `n`-th farm (from 1, in declaration order).
    pub fn index(n: u32) -> Self {
        Farm(Target::FarmN(n))
    }
}

impl From<Farm> for Target {
    fn from(f: Farm) -> Self {
        f.0
    }
}

/// Anything `register_handler` accepts as a target: a [`Target`], its text,
/// a [`Mule`] or a [`Farm`].
pub trait IntoTarget {
    /// Converts into a target, checking the grammar of text.
    ///
    /// # Errors
    ///
    /// [`RegistrationError::InvalidTarget`] for text that is not a target.
    fn into_target(self) -> Result<Target>;
}

impl IntoTarget for Target {
    fn into_target(self) -> Result<Target> {
        Ok(self)
    }
}

impl IntoTarget for &Target {
    fn into_target(self) -> Result<Target> {
        Ok(self.clone())
    }
}

impl IntoTarget for &str {
    fn into_target(self) -> Result<Target> {
        self.parse()
    }
}

impl IntoTarget for String {
    fn into_target(self) -> Result<Target> {
        self.parse()
    }
}

impl IntoTarget for &String {
    fn into_target(self) -> Result<Target> {
        self.parse()
    }
}

impl IntoTarget for Mule {
    fn into_target(self) -> Result<Target> {
        Ok(self.into())
    }
}

impl IntoTarget for Farm {
    fn into_target(self) -> Result<Target> {
        Ok(self.into())
    }
}

impl<T: IntoTarget> IntoTarget for Option<T> {
    /// `None` is the default target, `worker`.
    fn into_target(self) -> Result<Target> {
        self.map_or(Ok(Target::Worker), T::into_target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::FarmSpec;

    fn topo() -> Topology {
        Topology {
            workers: 4,
            attached: 0,
            mules: 2,
            spoolers: 1,
            farms: vec![
                FarmSpec {
                    name: "reports".into(),
                    mules: vec![1, 2],
                },
                FarmSpec {
                    name: "solo".into(),
                    mules: vec![2],
                },
            ],
        }
    }

    #[test]
    fn every_row_parses_and_prints_back() {
        let rows = [
            ("worker", Target::Worker, "worker"),
            ("worker0", Target::Worker, "worker"),
            ("", Target::Worker, "worker"),
            ("workers", Target::Workers, "workers"),
            ("worker1", Target::WorkerN(1), "worker1"),
            ("worker42", Target::WorkerN(42), "worker42"),
            ("active-workers", Target::ActiveWorkers, "active-workers"),
            ("mule", Target::Mule, "mule"),
            ("mule0", Target::Mule, "mule"),
            ("mules", Target::Mules, "mules"),
            ("mule2", Target::MuleN(2), "mule2"),
            ("spooler", Target::Spooler, "spooler"),
            ("farm1", Target::FarmN(1), "farm1"),
            (
                "farm_reports",
                Target::FarmNamed("reports".into()),
                "farm_reports",
            ),
            ("farm_9", Target::FarmNamed("9".into()), "farm_9"),
        ];
        for (text, want, printed) in rows {
            let got: Target = text.parse().unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(got, want, "{text:?}");
            assert_eq!(got.to_string(), printed);
            assert_eq!(
                printed.parse::<Target>().unwrap(),
                got,
                "print/parse round trip"
            );
        }
    }

    #[test]
    fn bad_grammar_is_rejected_with_the_text_and_the_grammar() {
        for text in [
            "mule-1",
            "worker-1",
            "workerx",
            "worker01",
            "farm0",
            "farm",
            "farm_",
            "nope",
            "Workers",
            " worker",
            "worker ",
            "spoolers",
            "mule+1",
            "worker99999999999",
        ] {
            let e = text.parse::<Target>().expect_err(text).to_string();
            assert!(e.contains(&format!("`{text}`")), "{e}");
            assert!(e.contains("active-workers"), "lists the grammar: {e}");
        }
        let long = format!("farm_{}", "a".repeat(59));
        let e = long.parse::<Target>().unwrap_err().to_string();
        assert!(
            e.contains("64 bytes long") && e.contains("at most 63"),
            "{e}"
        );
        let ok = format!("farm_{}", "a".repeat(58));
        assert!(ok.parse::<Target>().is_ok());
    }

    #[test]
    fn resolve_against_the_group() {
        let t = topo();
        let r = |s: &str| s.parse::<Target>().unwrap().resolve(&t);
        assert_eq!(r("worker").unwrap(), Resolved::WorkerPool);
        assert_eq!(r("worker4").unwrap(), Resolved::Worker(3));
        assert_eq!(r("mule1").unwrap(), Resolved::Mule(4));
        assert_eq!(r("farm_solo").unwrap(), Resolved::Farm(1));
        assert_eq!(r("farm2").unwrap(), Resolved::Farm(1));
        assert_eq!(r("spooler").unwrap(), Resolved::SpoolerPool);
        assert_eq!(r("farm_solo").unwrap().members(&t), vec![5]);
        assert_eq!(r("workers").unwrap().members(&t), vec![0, 1, 2, 3]);

        let e = r("worker99").unwrap_err().to_string();
        assert!(e.contains("`worker99`") && e.contains("4 workers"), "{e}");
        assert!(
            e.contains("worker1..worker4") && e.contains("farm_reports"),
            "{e}"
        );
        let e = r("farm_nope").unwrap_err().to_string();
        assert!(
            e.contains("no farm called `nope`") && e.contains("farm_solo"),
            "{e}"
        );
        assert!(r("mule3").unwrap_err().to_string().contains("2 mules"));
        assert!(r("farm3").unwrap_err().to_string().contains("2 farms"));

        let bare = Topology {
            workers: 1,
            attached: 0,
            mules: 0,
            spoolers: 0,
            farms: vec![],
        };
        for text in ["mule", "mules", "mule1", "spooler", "farm1", "farm_x"] {
            let e = text.parse::<Target>().unwrap().resolve(&bare).unwrap_err();
            let e = e.to_string();
            assert!(e.contains("has no"), "{text}: {e}");
            assert!(
                e.ends_with("valid targets: worker, worker0, workers, active-workers, worker1")
            );
        }
    }

    #[test]
    fn includes_matches_members() {
        let t = topo();
        for text in [
            "worker",
            "workers",
            "active-workers",
            "worker2",
            "mule",
            "mules",
            "mule2",
            "spooler",
            "farm1",
            "farm_solo",
        ] {
            let r = text.parse::<Target>().unwrap().resolve(&t).unwrap();
            for s in 0..t.slots() {
                assert_eq!(r.includes(&t, s), r.members(&t).contains(&s), "{text} {s}");
            }
        }
    }

    #[test]
    fn same_target_by_meaning() {
        let t = topo();
        let p = |s: &str| s.parse::<Target>().unwrap();
        assert!(p("farm1").same_as(&p("farm_reports"), &t));
        assert!(p("worker0").same_as(&p("worker"), &t));
        assert!(!p("workers").same_as(&p("worker"), &t));
    }

    #[test]
    fn mule_and_farm_values() {
        assert_eq!(Target::from(Mule(0)), Target::Mule);
        assert_eq!(Target::from(Mule(3)), Target::MuleN(3));
        assert_eq!(Target::from(Farm::named("x")).to_string(), "farm_x");
        assert_eq!(Target::from(Farm::index(2)).to_string(), "farm2");
        assert_eq!(None::<&str>.into_target().unwrap(), Target::Worker);
        assert_eq!(Some("mules").into_target().unwrap(), Target::Mules);
    }
}
