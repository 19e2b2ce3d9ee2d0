//! The master's side of the fleet: it never talks to NATS. It hands the
//! bridge (a child, role `bridge`) what needs NATS as notices on the
//! bridge's channel (fleet-unique firings to claim, children's fleet sends
//! to publish) and carries out what the bridge asks for (deliver a fleet
//! arrival to a local target, raise a firing this node won, the answer to
//! a child's send, the bridge's counters). Without a running bridge every
//! fleet action fails at once or follows the source's `on_unreachable`:
//! nothing local waits for it.

use std::collections::HashMap;

use super::Engine;
use super::token::Channel;
use crate::error::RegistrationError;
use crate::fleet::{Firing, FleetStats, Unreachable};
use crate::origin::Origin;
use crate::proto::{Notice, Reply, Request, encode_notice, encode_with_payload};
use crate::target::Target;
use crate::topology::{ProcId, Role, Slot};

/// A child's fleet send, waiting for the bridge's answer.
struct Pending {
    slot: Slot,
    chan: Channel,
    id: u64,
    /// The asking process (a successor in the slot gets no stray reply).
    pid: u32,
}

/// What the master keeps about its fleet.
#[derive(Default)]
pub(super) struct FleetState {
    /// The bridge's slot, when the group is in a fleet.
    slot: Option<Slot>,
    pending: HashMap<u64, Pending>,
    next_ticket: u64,
    stats: FleetStats,
}

impl FleetState {
    pub(super) fn new(topo: &crate::topology::Topology, names: Option<(String, String)>) -> Self {
        let mut stats = FleetStats::default();
        if let Some((fleet, node)) = names {
            stats.fleet = fleet;
            stats.node = node;
        }
        FleetState {
            slot: topo.slot_of(ProcId::new(Role::Bridge, 1)),
            stats,
            ..FleetState::default()
        }
    }
}

fn refused(why: String) -> Reply {
    Reply::Err(RegistrationError::Master(why))
}

impl Engine {
    /// The bridge's slot if it runs now.
    fn bridge_up(&self) -> Option<Slot> {
        let s = self.fleet.slot?;
        let p = &self.procs[s];
        (p.pid.is_some() && p.a.is_some() && p.life.running()).then_some(s)
    }

    /// Queues a notice for the bridge; false when it is not running.
    fn notify_bridge(&mut self, n: &Notice) -> bool {
        let Some(s) = self.bridge_up() else {
            return false;
        };
        let Some(a) = self.procs[s].a.as_mut() else {
            return false;
        };
        if let Err(e) = encode_notice(n, a.out()) {
            tracing::error!("fleet: cannot encode a notice for the bridge: {e}");
            return false;
        }
        self.d.mark_dirty(s);
        true
    }

    /// A fleet-unique source is due: the bridge claims it; without a
    /// bridge the source's `on_unreachable` decides.
    pub(super) fn fleet_fire(&mut self, f: Firing, origin: Origin) {
        let (policy, sig, due) = (f.on_unreachable, f.sig, f.due_ms);
        if self.notify_bridge(&Notice::Firing(f)) {
            return;
        }
        match policy {
            Unreachable::Skip => {
                self.fleet.stats.no_bridge_skipped += 1;
                tracing::warn!(
                    num = sig,
                    outcome = "skipped",
                    "fleet: once-per-fleet firing of signal {sig} (due {due} ms) skipped: the \
                     fleet bridge is not running"
                );
            }
            Unreachable::RunLocally => {
                self.fleet.stats.no_bridge_local += 1;
                tracing::warn!(
                    num = sig,
                    outcome = "run-locally",
                    "fleet: once-per-fleet firing of signal {sig} (due {due} ms) run here: the \
                     fleet bridge is not running"
                );
                self.raise_source(sig, origin);
            }
        }
    }

    fn raise_source(&mut self, sig: u8, origin: Origin) {
        let out = self.raise(sig, origin, None);
        if let Some(id) = origin.source() {
            self.sources.queued(id.get(), out.queued);
        }
    }

    /// Writes a reply to a request now (for replies the bridge answers
    /// later).
    fn reply_to(&mut self, slot: Slot, chan: Channel, id: u64, reply: &Reply) {
        let me = self.procs[slot].id;
        if let Some(c) = self.procs[slot].conn_mut(chan) {
            if let Err(e) = encode_with_payload(true, id, reply, c.out()) {
                tracing::error!("{me}: cannot encode a reply: {e}");
            }
            self.d.mark_dirty(slot);
        }
    }

    /// A child's fleet send: forwarded to the bridge, answered when the
    /// bridge has the nodes' answers (or at once when it cannot be sent).
    pub(super) fn fleet_send(
        &mut self,
        slot: Slot,
        chan: Channel,
        id: u64,
        target: String,
        num: u8,
    ) {
        if self.fleet.slot.is_none() {
            let r = refused(
                "this group is not in a fleet (MasterBuilder::fleet, flare run --fleet URL)".into(),
            );
            return self.reply_to(slot, chan, id, &r);
        }
        self.fleet.next_ticket += 1;
        let ticket = self.fleet.next_ticket;
        let sent = self.notify_bridge(&Notice::Send {
            ticket,
            target,
            num,
        });
        if !sent {
            self.fleet.stats.no_bridge_sends += 1;
            let r = refused("the fleet bridge is not running (it is being restarted)".into());
            return self.reply_to(slot, chan, id, &r);
        }
        let pid = self.procs[slot].last_pid;
        self.fleet.pending.insert(
            ticket,
            Pending {
                slot,
                chan,
                id,
                pid,
            },
        );
    }

    /// What only the bridge may ask for.
    pub(super) fn on_fleet_request(&mut self, slot: Slot, req: Request) -> Reply {
        if Some(slot) != self.fleet.slot {
            let me = self.procs[slot].id;
            tracing::warn!("{me}: sent a request only the fleet bridge may send");
            return refused("only the fleet bridge may send this request".into());
        }
        match req {
            Request::FleetSent { ticket, result } => {
                if let Some(p) = self.fleet.pending.remove(&ticket) {
                    if self.procs[p.slot].last_pid == p.pid && self.procs[p.slot].pid.is_some() {
                        let r = match result {
                            Ok(report) => Reply::Fleet(report),
                            Err(e) => refused(e),
                        };
                        self.reply_to(p.slot, p.chan, p.id, &r);
                    }
                }
                Reply::Ok
            }
            Request::FleetRaise {
                num,
                target,
                source,
            } => self.fleet_raise(num, target, source),
            Request::FleetCounts(c) => {
                self.fleet.stats.counts = c;
                Reply::Ok
            }
            _ => refused("not a fleet request".into()),
        }
    }

    fn fleet_raise(&mut self, num: u8, target: Option<String>, source: Option<u32>) -> Reply {
        if let Some(id) = source {
            let Some(origin) = self.sources.origin_of(id) else {
                return Reply::Raised {
                    accepted: false,
                    detail: format!("source #{id} is gone"),
                };
            };
            let out = self.raise(num, origin, None);
            self.sources.queued(id, out.queued);
            return Reply::Raised {
                accepted: out.accepted,
                detail: String::new(),
            };
        }
        let Some(text) = target else {
            return Reply::Raised {
                accepted: false,
                detail: "no target".into(),
            };
        };
        let outcome = text
            .parse::<Target>()
            .map_err(|e| e.to_string())
            .and_then(|t| self.d.raise_to(num, &t, Origin::Remote, self.turn_started));
        match outcome {
            Ok(out) if out.accepted => Reply::Raised {
                accepted: true,
                detail: String::new(),
            },
            Ok(_) => Reply::Raised {
                accepted: false,
                detail: format!(
                    "signal {num} for {text} reached nobody here or was dropped (no process of \
                     {text} can run it now)"
                ),
            },
            Err(why) => Reply::Raised {
                accepted: false,
                detail: why,
            },
        }
    }

    /// The bridge died: the sends it held fail now.
    pub(super) fn fleet_bridge_gone(&mut self, slot: Slot) {
        if Some(slot) != self.fleet.slot {
            return;
        }
        self.fleet.stats.bridge_respawns += 1;
        for (_, p) in std::mem::take(&mut self.fleet.pending) {
            if self.procs[p.slot].last_pid == p.pid && self.procs[p.slot].pid.is_some() {
                let r = refused("the fleet bridge died before the nodes answered".into());
                self.reply_to(p.slot, p.chan, p.id, &r);
            }
        }
    }

    /// The fleet figures for the stats document.
    pub(super) fn fleet_stats(&self) -> Option<FleetStats> {
        let s = self.fleet.slot?;
        let mut st = self.fleet.stats.clone();
        st.bridge_pid = self.procs[s].pid.map_or(0, |p| p.as_raw() as u32);
        Some(st)
    }
}
