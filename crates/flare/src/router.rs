//! Routing: which processes get a raised signal.
//!
//! `decide` turns a signal's route and the processes' states into a
//! decision; `pick` chooses the member of a pool that gets a pooled signal.
//! Every routing rule lives here and is tested here, without a fork. Pure.

use crate::table::Route;
use crate::target::Resolved;
use crate::topology::{ProcState, Slot, Topology};

/// What the router needs to know about one child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProcView {
    pub(crate) state: ProcState,
    /// Deliveries sent or queued to it and not yet acknowledged.
    pub(crate) load: usize,
}

/// Why a signal reached nobody.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unrouted {
    /// The target names no process that can run the handler right now
    /// (e.g. `active-workers` while every worker is paused).
    NoProcess,
    /// The one process named by the target is cheaped.
    Cheaped(Slot),
}

/// What to do with one raised signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Deliver to every slot the router wrote into `out`.
    Each,
    /// Give it to the first available member of its pool (see [`pick`]).
    Pool,
    /// Nobody can get it.
    Unrouted(Unrouted),
}

/// Routes a signal: `route` is its table entry (`None` when unregistered,
/// which uWSGI sends to the first available worker).
pub(crate) fn decide(
    route: Option<&Route>,
    topo: &Topology,
    procs: &[ProcView],
    out: &mut Vec<Slot>,
) -> Decision {
    out.clear();
    let Some(route) = route else {
        // Empty attach slots do not count: nobody would take it.
        return if topo
            .worker_slots()
            .any(|s| procs[s].state != ProcState::Vacant)
        {
            Decision::Pool
        } else {
            Decision::Unrouted(Unrouted::NoProcess)
        };
    };
    let runs = |s: Slot| route.runners.contains(s);
    match route.resolved {
        r if r.is_pool() => {
            if r.members(topo)
                .into_iter()
                .any(|s| runs(s) && procs[s].state != ProcState::Vacant)
            {
                Decision::Pool
            } else {
                Decision::Unrouted(Unrouted::NoProcess)
            }
        }
        Resolved::AllWorkers | Resolved::AllMules => {
            let all = if route.resolved == Resolved::AllWorkers {
                topo.worker_slots()
            } else {
                topo.mule_slots()
            };
            out.extend(all.filter(|&s| runs(s) && held_for(procs[s].state)));
            each(out)
        }
        Resolved::ActiveWorkers => {
            out.extend(
                topo.worker_slots()
                    .filter(|&s| runs(s) && procs[s].state == ProcState::Running),
            );
            each(out)
        }
        Resolved::Worker(s) | Resolved::Mule(s) => {
            if procs[s].state == ProcState::Cheaped {
                Decision::Unrouted(Unrouted::Cheaped(s))
            } else if runs(s) && procs[s].state != ProcState::Vacant {
                out.push(s);
                Decision::Each
            } else {
                Decision::Unrouted(Unrouted::NoProcess)
            }
        }
        _ => Decision::Unrouted(Unrouted::NoProcess),
    }
}

/// Whether a process that is not running still gets signals sent to it by
/// name (they wait for it): everyone but the cheaped, the stopped and
/// empty attach slots.
fn held_for(state: ProcState) -> bool {
    !matches!(
        state,
        ProcState::Cheaped | ProcState::Stopped | ProcState::Vacant
    )
}

fn each(out: &[Slot]) -> Decision {
    if out.is_empty() {
        Decision::Unrouted(Unrouted::NoProcess)
    } else {
        Decision::Each
    }
}

/// The members of a signal's pool that can run it, ignoring their state,
/// in slot order.
pub(crate) fn pool_candidates(route: Option<&Route>, topo: &Topology, out: &mut Vec<Slot>) {
    out.clear();
    match route {
        None => out.extend(topo.worker_slots()),
        Some(r) if r.resolved.is_pool() => out.extend(
            r.resolved
                .members(topo)
                .into_iter()
                .filter(|&s| r.runners.contains(s)),
        ),
        Some(_) => {}
    }
    // `pick` rotates through candidates by slot number.
    out.sort_unstable();
    out.dedup();
}

/// Picks the pool member that gets the next pooled signal: a running member
/// whose load is under `prefetch`, the least loaded first, ties broken
/// round-robin after `cursor` (the last member picked). A member busy in a
/// long handler keeps its load up and so stops being picked.
pub(crate) fn pick(
    candidates: &[Slot],
    procs: &[ProcView],
    prefetch: usize,
    cursor: &mut Slot,
) -> Option<Slot> {
    let start = candidates.partition_point(|&s| s <= *cursor);
    let rotated = candidates[start..].iter().chain(&candidates[..start]);
    let mut best: Option<(usize, Slot)> = None;
    for &s in rotated {
        let p = procs[s];
        if p.state != ProcState::Running || p.load >= prefetch {
            continue;
        }
        if best.is_none_or(|(load, _)| p.load < load) {
            best = Some((p.load, s));
            if p.load == 0 {
                break;
            }
        }
    }
    let (_, s) = best?;
    *cursor = s;
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{Owner, Registration, Table};
    use crate::target::Target;
    use crate::topology::FarmSpec;
    use std::sync::Arc;

    const RUN: ProcView = ProcView {
        state: ProcState::Running,
        load: 0,
    };

    fn topo() -> Arc<Topology> {
        Arc::new(Topology {
            workers: 4,
            attached: 0,
            mules: 3,
            spoolers: 2,
            farms: vec![FarmSpec {
                name: "reports".into(),
                mules: vec![3, 1],
            }],
        })
    }

    fn table_with(num: u8, target: &str, who: Owner) -> Table {
        let mut tb = Table::new(topo());
        let r = tb
            .register(num, &target.parse::<Target>().unwrap(), who)
            .unwrap();
        assert_eq!(r, Registration::New);
        tb
    }

    fn route_each(tb: &Table, num: u8, procs: &[ProcView]) -> (Decision, Vec<Slot>) {
        let mut out = vec![];
        let d = decide(tb.route(num), tb.topology(), procs, &mut out);
        (d, out)
    }

    #[test]
    fn broadcast_targets_reach_exactly_their_members() {
        let procs = [RUN; 9];
        let cases = [
            ("workers", vec![0, 1, 2, 3]),
            ("active-workers", vec![0, 1, 2, 3]),
            ("worker3", vec![2]),
            ("mules", vec![4, 5, 6]),
            ("mule2", vec![5]),
        ];
        for (target, want) in cases {
            let tb = table_with(7, target, Owner::Master);
            assert_eq!(
                route_each(&tb, 7, &procs),
                (Decision::Each, want),
                "{target}"
            );
        }
    }

    #[test]
    fn pools_are_pools() {
        let procs = [RUN; 9];
        for target in ["worker", "mule", "spooler", "farm1", "farm_reports"] {
            let tb = table_with(7, target, Owner::Master);
            assert_eq!(route_each(&tb, 7, &procs).0, Decision::Pool, "{target}");
        }
        let tb = Table::new(topo());
        assert_eq!(
            route_each(&tb, 200, &procs).0,
            Decision::Pool,
            "unregistered"
        );
        let mut c = vec![];
        pool_candidates(None, tb.topology(), &mut c);
        assert_eq!(
            c,
            vec![0, 1, 2, 3],
            "unregistered signals go to the workers"
        );
        let tb = table_with(7, "farm_reports", Owner::Master);
        pool_candidates(tb.route(7), tb.topology(), &mut c);
        assert_eq!(c, vec![4, 6], "farm members in slot order");
        let tb = table_with(7, "spooler", Owner::Master);
        pool_candidates(tb.route(7), tb.topology(), &mut c);
        assert_eq!(c, vec![7, 8]);
    }

    #[test]
    fn dead_members_are_held_for_cheaped_and_paused_are_not_active() {
        let mut procs = [RUN; 9];
        procs[0].state = ProcState::Respawning;
        procs[1].state = ProcState::Paused;
        procs[2].state = ProcState::Cheaped;
        let tb = table_with(7, "workers", Owner::Master);
        assert_eq!(route_each(&tb, 7, &procs), (Decision::Each, vec![0, 1, 3]));
        let tb = table_with(7, "active-workers", Owner::Master);
        assert_eq!(route_each(&tb, 7, &procs), (Decision::Each, vec![3]));
        let tb = table_with(7, "worker1", Owner::Master);
        assert_eq!(
            route_each(&tb, 7, &procs),
            (Decision::Each, vec![0]),
            "held"
        );
        let tb = table_with(7, "worker2", Owner::Master);
        assert_eq!(
            route_each(&tb, 7, &procs),
            (Decision::Each, vec![1]),
            "kept"
        );
        let tb = table_with(7, "worker3", Owner::Master);
        assert_eq!(
            route_each(&tb, 7, &procs).0,
            Decision::Unrouted(Unrouted::Cheaped(2))
        );
        procs[3].state = ProcState::Paused;
        let tb = table_with(7, "active-workers", Owner::Master);
        assert_eq!(
            route_each(&tb, 7, &procs).0,
            Decision::Unrouted(Unrouted::NoProcess)
        );
    }

    #[test]
    fn child_registrations_route_only_to_their_runners() {
        let procs = [RUN; 9];
        let mut tb = table_with(7, "workers", Owner::Child(1));
        assert_eq!(route_each(&tb, 7, &procs), (Decision::Each, vec![1]));
        tb.register(7, &Target::Workers, Owner::Child(3)).unwrap();
        assert_eq!(route_each(&tb, 7, &procs), (Decision::Each, vec![1, 3]));
        let tb = table_with(8, "worker", Owner::Child(2));
        let mut c = vec![];
        pool_candidates(tb.route(8), tb.topology(), &mut c);
        assert_eq!(c, vec![2]);
        let tb = table_with(9, "mules", Owner::Child(5));
        assert_eq!(route_each(&tb, 9, &procs), (Decision::Each, vec![5]));
    }

    #[test]
    fn no_workers_means_unregistered_signals_are_unrouted() {
        let tb = Table::new(Arc::new(Topology {
            workers: 0,
            attached: 0,
            mules: 1,
            spoolers: 0,
            farms: vec![],
        }));
        let mut out = vec![];
        assert_eq!(
            decide(None, tb.topology(), &[RUN], &mut out),
            Decision::Unrouted(Unrouted::NoProcess)
        );
    }

    #[test]
    fn pick_prefers_idle_members_round_robin() {
        let procs = [RUN; 4];
        let cands = [0, 1, 2, 3];
        let mut cursor = 3;
        let picks: Vec<_> = (0..8)
            .map(|_| pick(&cands, &procs, 4, &mut cursor).unwrap())
            .collect();
        assert_eq!(picks, vec![0, 1, 2, 3, 0, 1, 2, 3]);
    }

    #[test]
    fn pick_skips_busy_dead_paused_and_full_members() {
        let mut procs = [RUN; 4];
        procs[0].load = 4; // busy: its credit is used up
        procs[1].state = ProcState::Respawning;
        procs[2].state = ProcState::Paused;
        procs[3].load = 2;
        let mut cursor = 0;
        assert_eq!(pick(&[0, 1, 2, 3], &procs, 4, &mut cursor), Some(3));
        procs[3].load = 4;
        assert_eq!(pick(&[0, 1, 2, 3], &procs, 4, &mut cursor), None);
        procs[0].load = 3;
        assert_eq!(pick(&[0, 1, 2, 3], &procs, 4, &mut cursor), Some(0));
    }

    #[test]
    fn pick_takes_the_least_loaded() {
        let mut procs = [RUN; 4];
        procs[0].load = 2;
        procs[1].load = 1;
        procs[2].load = 3;
        procs[3].load = 1;
        let mut cursor = 1;
        assert_eq!(pick(&[0, 1, 2, 3], &procs, 8, &mut cursor), Some(3));
        assert_eq!(pick(&[0, 1, 2, 3], &procs, 8, &mut cursor), Some(1));
    }
}
