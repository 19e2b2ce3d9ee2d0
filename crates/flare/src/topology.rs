//! The shape of a process group: how many workers, mules and spoolers, which
//! farms, and the slot index each process has in the master's tables.
//!
//! Slots are laid out workers first, then mules, then spoolers, so slot
//! arithmetic is a pair of subtractions. Pure: no I/O.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The life state of a child process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcState {
    /// Alive and serving signals.
    Running,
    /// Alive; skipped by `active-workers` and by pools; what is sent to it
    /// directly is kept until it resumes.
    Paused,
    /// Stopped on purpose and not respawned; skipped by every target.
    Cheaped,
    /// Dead, about to be forked again; signals for it are held.
    Respawning,
    /// Shut down with the master.
    Stopped,
    /// An attach slot with no process in it (none joined yet, or the last
    /// one left longer ago than the hold time): skipped by every target.
    Vacant,
}

impl ProcState {
    /// The numeric code kept in shared memory.
    pub(crate) fn code(self) -> u32 {
        match self {
            ProcState::Running => 1,
            ProcState::Paused => 2,
            ProcState::Cheaped => 3,
            ProcState::Respawning => 4,
            ProcState::Stopped => 5,
            ProcState::Vacant => 6,
        }
    }

    /// The state for a code read from shared memory.
    pub(crate) fn from_code(code: u32) -> ProcState {
        match code {
            1 => ProcState::Running,
            2 => ProcState::Paused,
            3 => ProcState::Cheaped,
            5 => ProcState::Stopped,
            6 => ProcState::Vacant,
            _ => ProcState::Respawning,
        }
    }
}

/// The kind of a flare process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The master: forks, routes, supervises. Id 0.
    Master,
    /// A worker (uWSGI `workerN`).
    Worker,
    /// A mule (uWSGI `muleN`); mules may also belong to farms.
    Mule,
    /// A spooler (uWSGI `spooler`).
    Spooler,
}

impl Role {
    /// The lowercase name used in targets and logs: `worker`, `mule`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Worker => "worker",
            Role::Mule => "mule",
            Role::Spooler => "spooler",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A process by role and 1-based id: `worker3`, `mule1`, `master`.
///
/// ```
/// use flare::{ProcId, Role};
/// assert_eq!(ProcId::new(Role::Worker, 3).to_string(), "worker3");
/// assert_eq!(ProcId::MASTER.to_string(), "master");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ProcId {
    /// The role.
    pub role: Role,
    /// The id within the role, from 1 (0 for the master).
    pub id: u32,
}

impl ProcId {
    /// The master process.
    pub const MASTER: ProcId = ProcId {
        role: Role::Master,
        id: 0,
    };

    /// A process id from its parts.
    pub const fn new(role: Role, id: u32) -> Self {
        ProcId { role, id }
    }
}

impl fmt::Display for ProcId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.role {
            Role::Master => f.write_str("master"),
            role => write!(f, "{}{}", role, self.id),
        }
    }
}

/// Index of a child process in the master's tables and in shared memory.
pub(crate) type Slot = usize;

/// The longest target text uWSGI accepts (its table keeps 64 bytes with the
/// terminating NUL); farm names are bounded by it too.
pub const MAX_TARGET_LEN: usize = 63;

/// A named set of mules (uWSGI `--farm NAME:1,2`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FarmSpec {
    /// The farm's name, used in `farm_NAME` targets.
    pub name: String,
    /// Mule ids (1-based), in declaration order, without duplicates.
    pub mules: Vec<u32>,
}

/// How many processes of each role a master runs, and its farms.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// Number of workers: those flare forks, then the attach slots.
    pub workers: u32,
    /// How many of the workers are attach slots (the last ones): processes
    /// flare did not fork (a gunicorn worker, a Node process) join the
    /// group through the attach socket and take one of them.
    #[serde(default)]
    pub attached: u32,
    /// Number of mules.
    pub mules: u32,
    /// Number of spoolers.
    pub spoolers: u32,
    /// Farms, numbered 1.. in declaration order.
    pub farms: Vec<FarmSpec>,
}

/// The most children one master may run; keeps slot numbers small and the
/// shared status area bounded.
pub const MAX_PROCESSES: u32 = 4096;

impl Topology {
    /// Checks that the counts and farms can work.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.attached > self.workers {
            return Err(Error::Config(format!(
                "{} attach slots among {} workers: attach slots are workers",
                self.attached, self.workers
            )));
        }
        let total = self.workers as u64 + self.mules as u64 + self.spoolers as u64;
        if total == 0 {
            return Err(Error::Config(
                "no processes: configure at least one worker, mule or spooler".into(),
            ));
        }
        if total > MAX_PROCESSES as u64 {
            return Err(Error::Config(format!(
                "{total} processes requested; at most {MAX_PROCESSES} are supported"
            )));
        }
        if self.farms.len() > MAX_PROCESSES as usize {
            return Err(Error::Config(format!(
                "{} farms declared; at most {MAX_PROCESSES} are supported",
                self.farms.len()
            )));
        }
        for (i, farm) in self.farms.iter().enumerate() {
            if farm.name.is_empty() {
                return Err(Error::Config(format!("farm {} has an empty name", i + 1)));
            }
            if farm.name.len() + "farm_".len() > MAX_TARGET_LEN {
                return Err(Error::Config(format!(
                    "farm name `{}` is too long: `farm_NAME` must fit in {MAX_TARGET_LEN} bytes",
                    farm.name
                )));
            }
            if !farm
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
            {
                return Err(Error::Config(format!(
                    "farm name `{}` may only use letters, digits, `_`, `-` and `.`",
                    farm.name
                )));
            }
            if self.farms[..i].iter().any(|f| f.name == farm.name) {
                return Err(Error::Config(format!(
                    "farm `{}` is declared twice",
                    farm.name
                )));
            }
            if farm.mules.is_empty() {
                return Err(Error::Config(format!("farm `{}` has no mules", farm.name)));
            }
            for (j, &m) in farm.mules.iter().enumerate() {
                if m == 0 || m > self.mules {
                    return Err(Error::Config(format!(
                        "farm `{}` names mule {m}, but mules are numbered 1..={}",
                        farm.name, self.mules
                    )));
                }
                if farm.mules[..j].contains(&m) {
                    return Err(Error::Config(format!(
                        "farm `{}` names mule {m} twice",
                        farm.name
                    )));
                }
            }
        }
        Ok(())
    }

    /// Total number of child processes (slots).
    pub(crate) fn slots(&self) -> usize {
        (self.workers + self.mules + self.spoolers) as usize
    }

    /// Slot of a child process, if it exists in this topology.
    pub(crate) fn slot_of(&self, p: ProcId) -> Option<Slot> {
        let (base, count) = match p.role {
            Role::Master => return None,
            Role::Worker => (0, self.workers),
            Role::Mule => (self.workers, self.mules),
            Role::Spooler => (self.workers + self.mules, self.spoolers),
        };
        (p.id >= 1 && p.id <= count).then(|| (base + p.id - 1) as Slot)
    }

    /// The process in a slot.
    pub(crate) fn proc_at(&self, slot: Slot) -> ProcId {
        let s = slot as u32;
        if s < self.workers {
            ProcId::new(Role::Worker, s + 1)
        } else if s < self.workers + self.mules {
            ProcId::new(Role::Mule, s - self.workers + 1)
        } else {
            ProcId::new(Role::Spooler, s - self.workers - self.mules + 1)
        }
    }

    /// Whether processes join `slot` through the attach socket instead of
    /// being forked.
    pub(crate) fn is_attach_slot(&self, slot: Slot) -> bool {
        let s = slot as u32;
        s < self.workers && s >= self.workers - self.attached
    }

    /// The attach slots.
    pub(crate) fn attach_slots(&self) -> std::ops::Range<Slot> {
        (self.workers - self.attached) as Slot..self.workers as Slot
    }

    /// Slots of every worker.
    pub(crate) fn worker_slots(&self) -> std::ops::Range<Slot> {
        0..self.workers as Slot
    }

    /// Slots of every mule.
    pub(crate) fn mule_slots(&self) -> std::ops::Range<Slot> {
        let b = self.workers as Slot;
        b..b + self.mules as Slot
    }

    /// Slots of every spooler.
    pub(crate) fn spooler_slots(&self) -> std::ops::Range<Slot> {
        let b = (self.workers + self.mules) as Slot;
        b..b + self.spoolers as Slot
    }

    /// Index (0-based) of the farm with this name.
    pub(crate) fn farm_by_name(&self, name: &str) -> Option<usize> {
        self.farms.iter().position(|f| f.name == name)
    }

    /// Slots of the mules of farm `index` (0-based), in declaration order.
    pub(crate) fn farm_slots(&self, index: usize) -> impl Iterator<Item = Slot> + '_ {
        let base = self.workers as Slot;
        self.farms
            .get(index)
            .into_iter()
            .flat_map(move |f| f.mules.iter().map(move |&m| base + m as Slot - 1))
    }
}

/// A set of slots, as a bitmap.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SlotSet {
    words: Vec<u64>,
}

impl SlotSet {
    /// A set holding one slot.
    pub(crate) fn one(slot: Slot) -> Self {
        let mut s = SlotSet::default();
        s.insert(slot);
        s
    }

    pub(crate) fn insert(&mut self, slot: Slot) {
        let w = slot / 64;
        if self.words.len() <= w {
            self.words.resize(w + 1, 0);
        }
        self.words[w] |= 1 << (slot % 64);
    }

    pub(crate) fn remove(&mut self, slot: Slot) {
        if let Some(w) = self.words.get_mut(slot / 64) {
            *w &= !(1 << (slot % 64));
        }
    }

    pub(crate) fn contains(&self, slot: Slot) -> bool {
        self.words
            .get(slot / 64)
            .is_some_and(|w| w & (1 << (slot % 64)) != 0)
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    /// Members in increasing order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Slot> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &w)| {
            (0..64)
                .filter(move |b| w & (1 << b) != 0)
                .map(move |b| i * 64 + b)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn topo() -> Topology {
        Topology {
            workers: 4,
            attached: 0,
            mules: 2,
            spoolers: 1,
            farms: vec![FarmSpec {
                name: "reports".into(),
                mules: vec![2, 1],
            }],
        }
    }

    #[test]
    fn slots_round_trip() {
        let t = topo();
        assert_eq!(t.slots(), 7);
        for s in 0..t.slots() {
            assert_eq!(t.slot_of(t.proc_at(s)), Some(s));
        }
        assert_eq!(t.proc_at(4), ProcId::new(Role::Mule, 1));
        assert_eq!(t.proc_at(6), ProcId::new(Role::Spooler, 1));
        assert_eq!(t.slot_of(ProcId::new(Role::Worker, 5)), None);
        assert_eq!(t.slot_of(ProcId::new(Role::Worker, 0)), None);
        assert_eq!(t.slot_of(ProcId::MASTER), None);
        assert_eq!(t.farm_slots(0).collect::<Vec<_>>(), vec![5, 4]);
    }

    #[test]
    fn validation_names_the_problem() {
        let mut t = topo();
        t.farms[0].mules = vec![3];
        let e = t.validate().unwrap_err().to_string();
        assert!(e.contains("mule 3") && e.contains("1..=2"), "{e}");
        let mut t = topo();
        t.farms.push(t.farms[0].clone());
        assert!(t.validate().unwrap_err().to_string().contains("twice"));
        let mut t = topo();
        t.farms[0].name = String::new();
        assert!(t.validate().unwrap_err().to_string().contains("empty"));
        let mut t = topo();
        t.farms[0].name = "x".repeat(59);
        assert!(t.validate().unwrap_err().to_string().contains("too long"));
        let t = Topology {
            workers: 0,
            attached: 0,
            mules: 0,
            spoolers: 0,
            farms: vec![],
        };
        assert!(t.validate().is_err());
        assert!(topo().validate().is_ok());
    }

    #[test]
    fn slot_set() {
        let mut s = SlotSet::one(3);
        s.insert(130);
        assert!(s.contains(3) && s.contains(130) && !s.contains(4));
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![3, 130]);
        s.remove(3);
        s.remove(130);
        assert!(s.is_empty());
    }
}
