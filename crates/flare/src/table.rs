//! The signal table: 256 routes, who owns them and who can run them.
//!
//! This module is the one place for the registration rules: the master
//! registering a number twice is `AlreadyRegistered`; a child's
//! registration runs only in that child, other children with the same
//! target join it as runners and another target is a `Conflict`; a target
//! that can never include a process able to run it is `Unrunnable`; a
//! child's registrations die with it; a reserved number (`Signal::auto()`)
//! may be registered only by the process that reserved it.
//!
//! Only the master holds a `Table`; children read a mirror of it through
//! [`MirrorEntry`], one `u64` per number. Pure: no I/O.

use std::sync::Arc;

use crate::error::{Error, RegistrationError, Result};
use crate::target::{Resolved, Target};
use crate::topology::{ProcId, Slot, SlotSet, Topology};

/// Who registered or reserved a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    /// The master, before `run()`: every child inherits the handler.
    Master,
    /// A child at run time: only the runners can run the handler.
    Child(Slot),
}

impl Owner {
    pub(crate) fn describe(self, topo: &Topology) -> String {
        match self {
            Owner::Master => "the master".into(),
            Owner::Child(s) => topo.proc_at(s).to_string(),
        }
    }
}

/// The processes that hold a handler for a route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Runners {
    /// Registered in the master: every child inherited the handler.
    All,
    /// Registered at run time by these children.
    Only(SlotSet),
}

impl Runners {
    pub(crate) fn contains(&self, slot: Slot) -> bool {
        match self {
            Runners::All => true,
            Runners::Only(set) => set.contains(slot),
        }
    }
}

/// A registered number.
#[derive(Clone, Debug)]
pub(crate) struct Route {
    /// The target as registered (printed back in stats and errors).
    pub(crate) target: Target,
    /// The target resolved against the process group.
    pub(crate) resolved: Resolved,
    /// Who registered it first (or, after that one died, a remaining runner).
    pub(crate) owner: Owner,
    /// Who can run it.
    pub(crate) runners: Runners,
}

#[derive(Clone, Debug)]
enum Entry {
    Free,
    Reserved(Owner),
    Registered(Route),
}

/// A number that is not free, as [`Table::taken`] lists it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Taken<'a> {
    /// Reserved (by `Signal::auto()`), not registered yet.
    Reserved(Owner),
    /// Registered.
    Registered(&'a Route),
}

/// What a successful registration did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Registration {
    /// The number was free (or reserved by the registrant).
    New,
    /// Another child had registered the same number and target; the
    /// registrant became a runner too.
    Joined,
    /// The registrant could already run it; only its handler changes.
    Replaced,
}

/// The master's signal table.
#[derive(Clone, Debug)]
pub(crate) struct Table {
    topo: Arc<Topology>,
    entries: Vec<Entry>,
}

impl Table {
    pub(crate) fn new(topo: Arc<Topology>) -> Self {
        Table {
            topo,
            entries: vec![Entry::Free; 256],
        }
    }

    /// The group's shape.
    pub(crate) fn topology(&self) -> &Topology {
        &self.topo
    }

    /// The route of a number, if it is registered.
    pub(crate) fn route(&self, num: u8) -> Option<&Route> {
        match &self.entries[num as usize] {
            Entry::Registered(r) => Some(r),
            _ => None,
        }
    }

    /// Who registered or reserved a number.
    pub(crate) fn owner(&self, num: u8) -> Option<Owner> {
        match &self.entries[num as usize] {
            Entry::Free => None,
            Entry::Reserved(o) => Some(*o),
            Entry::Registered(r) => Some(r.owner),
        }
    }

    /// Whether a number is registered (uWSGI `signal_registered`).
    pub(crate) fn is_registered(&self, num: u8) -> bool {
        self.route(num).is_some()
    }

    /// The first number neither registered nor reserved.
    pub(crate) fn first_available(&self) -> Option<u8> {
        self.entries
            .iter()
            .position(|e| matches!(e, Entry::Free))
            .map(|i| i as u8)
    }

    /// Takes the first free number for `who`, so no other process can pick
    /// it before `who` registers it.
    pub(crate) fn reserve(&mut self, who: Owner) -> Result<u8> {
        let num = self
            .first_available()
            .ok_or(RegistrationError::NoSignalAvailable)?;
        self.entries[num as usize] = Entry::Reserved(who);
        Ok(num)
    }

    /// Applies the registration rules (see the module documentation).
    pub(crate) fn register(
        &mut self,
        num: u8,
        target: &Target,
        who: Owner,
    ) -> Result<Registration> {
        let resolved = target.resolve(&self.topo)?;
        if let Owner::Child(slot) = who {
            if !resolved.includes(&self.topo, slot) {
                return Err(Error::from(RegistrationError::Unrunnable {
                    num,
                    target: target.to_string(),
                    process: self.topo.proc_at(slot).to_string(),
                }));
            }
        }
        let topo = &self.topo;
        let entry = &mut self.entries[num as usize];
        match entry {
            Entry::Reserved(holder) if *holder != who => {
                Err(Error::from(RegistrationError::Conflict {
                    num,
                    existing: None,
                    owner: holder.describe(topo),
                    requested: target.to_string(),
                }))
            }
            Entry::Free | Entry::Reserved(_) => {
                let runners = match who {
                    Owner::Master => Runners::All,
                    Owner::Child(slot) => Runners::Only(SlotSet::one(slot)),
                };
                *entry = Entry::Registered(Route {
                    target: target.clone(),
                    resolved,
                    owner: who,
                    runners,
                });
                Ok(Registration::New)
            }
            Entry::Registered(route) => match who {
                Owner::Master if route.owner == Owner::Master => {
                    Err(Error::from(RegistrationError::AlreadyRegistered {
                        num,
                        target: route.target.to_string(),
                    }))
                }
                Owner::Child(slot) if route.target.same_as(target, topo) => {
                    match &mut route.runners {
                        Runners::All => Ok(Registration::Replaced),
                        Runners::Only(set) if set.contains(slot) => Ok(Registration::Replaced),
                        Runners::Only(set) => {
                            set.insert(slot);
                            Ok(Registration::Joined)
                        }
                    }
                }
                _ => Err(Error::from(RegistrationError::Conflict {
                    num,
                    existing: Some(route.target.to_string()),
                    owner: route.owner.describe(topo),
                    requested: target.to_string(),
                })),
            },
        }
    }

    /// Forgets what a dead child registered or reserved. Returns the numbers
    /// whose entry changed.
    pub(crate) fn release_child(&mut self, slot: Slot) -> Vec<u8> {
        let mut changed = Vec::new();
        for (num, entry) in self.entries.iter_mut().enumerate() {
            match entry {
                Entry::Reserved(Owner::Child(s)) if *s == slot => {
                    *entry = Entry::Free;
                    changed.push(num as u8);
                }
                Entry::Registered(route) => {
                    let Runners::Only(set) = &mut route.runners else {
                        continue;
                    };
                    if !set.contains(slot) {
                        continue;
                    }
                    set.remove(slot);
                    let next = set.iter().next();
                    match next {
                        None => *entry = Entry::Free,
                        Some(next) if route.owner == Owner::Child(slot) => {
                            route.owner = Owner::Child(next);
                        }
                        Some(_) => {}
                    }
                    changed.push(num as u8);
                }
                _ => {}
            }
        }
        changed
    }

    /// Every registered or reserved number, in order.
    pub(crate) fn taken(&self) -> impl Iterator<Item = (u8, Taken<'_>)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(num, e)| match e {
                Entry::Free => None,
                Entry::Reserved(owner) => Some((num as u8, Taken::Reserved(*owner))),
                Entry::Registered(r) => Some((num as u8, Taken::Registered(r))),
            })
    }

    /// The mirror word children read for `num`.
    pub(crate) fn mirror_word(&self, num: u8) -> u64 {
        match &self.entries[num as usize] {
            Entry::Free => 0,
            Entry::Reserved(owner) => MirrorEntry::encode(STATE_RESERVED, None, *owner),
            Entry::Registered(r) => {
                MirrorEntry::encode(STATE_REGISTERED, Some(&r.resolved_key(&self.topo)), r.owner)
            }
        }
    }
}

impl Route {
    /// The target as kind and number, for the mirror word.
    fn resolved_key(&self, topo: &Topology) -> (u8, u32) {
        match &self.target {
            Target::Worker => (1, 0),
            Target::Workers => (2, 0),
            Target::WorkerN(n) => (3, *n),
            Target::ActiveWorkers => (4, 0),
            Target::Mule => (5, 0),
            Target::Mules => (6, 0),
            Target::MuleN(n) => (7, *n),
            Target::Spooler => (8, 0),
            Target::FarmN(n) => (9, *n),
            Target::FarmNamed(name) => (10, topo.farm_by_name(name).map_or(0, |i| i as u32 + 1)),
        }
    }
}

const STATE_RESERVED: u64 = 1;
const STATE_REGISTERED: u64 = 2;

/// One number of the table as children see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MirrorEntry {
    /// Registered (not just reserved).
    pub(crate) registered: bool,
    /// Reserved or registered: not available.
    pub(crate) taken: bool,
    /// The target, when registered.
    pub(crate) target: Option<Target>,
    /// Who registered or reserved it (`ProcId::MASTER` for the master).
    pub(crate) owner: Option<ProcId>,
}

impl MirrorEntry {
    // Layout: bits 0-1 state, 8-15 target kind, 16-39 target number,
    // 40-63 owner (0 = master, slot + 1 = child).
    fn encode(state: u64, target: Option<&(u8, u32)>, owner: Owner) -> u64 {
        let (kind, n) = target.copied().unwrap_or((0, 0));
        let owner = match owner {
            Owner::Master => 0,
            Owner::Child(s) => s as u64 + 1,
        };
        state | (kind as u64) << 8 | ((n as u64) & 0xff_ffff) << 16 | (owner & 0xff_ffff) << 40
    }

    /// Decodes a mirror word; `topo` gives farm names back.
    pub(crate) fn decode(word: u64, topo: &Topology) -> MirrorEntry {
        let state = word & 3;
        let n = ((word >> 16) & 0xff_ffff) as u32;
        let target = match (word >> 8) & 0xff {
            1 => Some(Target::Worker),
            2 => Some(Target::Workers),
            3 => Some(Target::WorkerN(n)),
            4 => Some(Target::ActiveWorkers),
            5 => Some(Target::Mule),
            6 => Some(Target::Mules),
            7 => Some(Target::MuleN(n)),
            8 => Some(Target::Spooler),
            9 => Some(Target::FarmN(n)),
            10 => topo
                .farms
                .get((n as usize).wrapping_sub(1))
                .map(|f| Target::FarmNamed(f.name.clone())),
            _ => None,
        };
        MirrorEntry {
            registered: state == STATE_REGISTERED,
            taken: state != 0,
            target: if state == STATE_REGISTERED {
                target
            } else {
                None
            },
            owner: (state != 0).then(|| match (word >> 40) & 0xff_ffff {
                0 => ProcId::MASTER,
                s => topo.proc_at(s as usize - 1),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::FarmSpec;

    fn table() -> Table {
        Table::new(Arc::new(Topology {
            workers: 4,
            attached: 0,
            mules: 2,
            spoolers: 1,
            farms: vec![FarmSpec {
                name: "reports".into(),
                mules: vec![1, 2],
            }],
            bridges: 0,
        }))
    }

    fn t(s: &str) -> Target {
        s.parse().unwrap()
    }

    const W1: Owner = Owner::Child(0);
    const W2: Owner = Owner::Child(1);
    const M1: Owner = Owner::Child(4);

    #[test]
    fn master_registration_is_inherited_by_everyone() {
        let mut tb = table();
        assert_eq!(
            tb.register(5, &t("mules"), Owner::Master).unwrap(),
            Registration::New
        );
        let r = tb.route(5).unwrap();
        assert_eq!(r.runners, Runners::All);
        assert!((0..7).all(|s| r.runners.contains(s)));
    }

    #[test]
    fn master_registering_twice_is_already_registered() {
        let mut tb = table();
        tb.register(5, &t("workers"), Owner::Master).unwrap();
        let e = tb.register(5, &t("workers"), Owner::Master).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Registration(RegistrationError::AlreadyRegistered { num: 5, .. })
            ),
            "{e}"
        );
        assert!(e.to_string().contains("`workers`"));
    }

    #[test]
    fn child_registration_runs_only_there_and_others_join() {
        let mut tb = table();
        assert_eq!(
            tb.register(9, &t("workers"), W1).unwrap(),
            Registration::New
        );
        assert_eq!(tb.route(9).unwrap().runners, Runners::Only(SlotSet::one(0)));
        assert_eq!(
            tb.register(9, &t("workers"), W2).unwrap(),
            Registration::Joined
        );
        let r = tb.route(9).unwrap();
        assert!(r.runners.contains(0) && r.runners.contains(1) && !r.runners.contains(2));
        assert_eq!(r.owner, W1);
    }

    #[test]
    fn same_process_registering_again_replaces() {
        let mut tb = table();
        tb.register(9, &t("worker"), W1).unwrap();
        assert_eq!(
            tb.register(9, &t("worker0"), W1).unwrap(),
            Registration::Replaced
        );
        // A child re-registering a master route with its target: replaces.
        tb.register(10, &t("workers"), Owner::Master).unwrap();
        assert_eq!(
            tb.register(10, &t("workers"), W2).unwrap(),
            Registration::Replaced
        );
    }

    #[test]
    fn another_target_is_a_conflict_naming_target_and_owner() {
        let mut tb = table();
        tb.register(9, &t("workers"), W1).unwrap();
        let e = tb.register(9, &t("worker"), W2).unwrap_err();
        let Error::Registration(RegistrationError::Conflict {
            num,
            existing,
            owner,
            requested,
        }) = &e
        else {
            panic!("{e}")
        };
        assert_eq!(
            (*num, existing.as_deref(), owner.as_str()),
            (9, Some("workers"), "worker1")
        );
        assert_eq!(requested, "worker");
        assert!(e.to_string().contains("worker1") && e.to_string().contains("`workers`"));
        tb.register(10, &t("mules"), Owner::Master).unwrap();
        let e = tb.register(10, &t("mule"), M1).unwrap_err().to_string();
        assert!(e.contains("the master") && e.contains("`mules`"), "{e}");
    }

    #[test]
    fn farm_by_name_and_number_are_the_same_target() {
        let mut tb = table();
        tb.register(3, &t("farm_reports"), M1).unwrap();
        assert_eq!(
            tb.register(3, &t("farm1"), Owner::Child(5)).unwrap(),
            Registration::Joined
        );
    }

    #[test]
    fn a_target_that_cannot_reach_the_registrant_is_unrunnable() {
        let mut tb = table();
        let e = tb.register(4, &t("mules"), W1).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Registration(RegistrationError::Unrunnable { num: 4, .. })
            ),
            "{e}"
        );
        assert!(e.to_string().contains("worker1"));
        assert!(tb.register(4, &t("worker2"), W1).is_err());
        assert!(tb.register(4, &t("worker1"), W1).is_ok());
        assert!(tb.route(4).is_some() && tb.route(5).is_none());
    }

    #[test]
    fn bad_targets_fail_at_registration() {
        let mut tb = table();
        for bad in ["worker99", "farm_nope", "farm2", "mule3"] {
            let e = tb.register(1, &t(bad), Owner::Master).unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::Registration(RegistrationError::InvalidTarget { .. })
                ),
                "{bad}: {e}"
            );
        }
        assert!(tb.first_available() == Some(0) && !tb.is_registered(1));
    }

    #[test]
    fn available_and_reserved_numbers() {
        let mut tb = table();
        assert_eq!(tb.first_available(), Some(0));
        tb.register(0, &t("worker"), Owner::Master).unwrap();
        assert_eq!(tb.first_available(), Some(1));
        assert_eq!(tb.reserve(W1).unwrap(), 1);
        assert_eq!(tb.first_available(), Some(2));
        assert!(!tb.is_registered(1));
        // Someone else cannot register a reserved number...
        let e = tb.register(1, &t("workers"), W2).unwrap_err();
        assert!(e.to_string().contains("reserved by worker1"), "{e}");
        // ...its holder can.
        assert_eq!(
            tb.register(1, &t("workers"), W1).unwrap(),
            Registration::New
        );
        for _ in 2..256 {
            tb.reserve(Owner::Master).unwrap();
        }
        assert_eq!(tb.first_available(), None);
        assert!(matches!(
            tb.reserve(W1),
            Err(Error::Registration(RegistrationError::NoSignalAvailable))
        ));
    }

    #[test]
    fn a_dead_child_takes_its_registrations_with_it() {
        let mut tb = table();
        tb.register(1, &t("workers"), W1).unwrap();
        tb.register(1, &t("workers"), W2).unwrap();
        tb.register(2, &t("worker1"), W1).unwrap();
        tb.register(3, &t("workers"), Owner::Master).unwrap();
        tb.reserve(W1).unwrap(); // 0
        let mut changed = tb.release_child(0);
        changed.sort();
        assert_eq!(changed, vec![0, 1, 2]);
        assert_eq!(
            tb.route(1).unwrap().owner,
            W2,
            "ownership passes to a runner"
        );
        assert!(!tb.route(1).unwrap().runners.contains(0));
        assert!(tb.route(2).is_none() && tb.route(3).is_some());
        assert_eq!(tb.first_available(), Some(0));
    }

    #[test]
    fn mirror_words_decode_to_the_entry() {
        let mut tb = table();
        tb.register(1, &t("farm_reports"), Owner::Master).unwrap();
        tb.register(2, &t("worker3"), Owner::Child(2)).unwrap();
        tb.reserve(W1).unwrap();
        let topo = tb.topology().clone();
        let d = |n| MirrorEntry::decode(tb.mirror_word(n), &topo);
        assert_eq!(d(1).target, Some(t("farm_reports")));
        assert_eq!(d(2).target, Some(t("worker3")));
        assert!(d(2).registered && d(2).taken);
        assert!(!d(0).registered && d(0).taken);
        assert!(!d(3).taken);
    }
}
