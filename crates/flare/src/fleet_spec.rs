//! The fleet's pure values that the channel codec and source specs carry:
//! what a send reached, a once-per-fleet firing and its settings, the
//! bridge's counters. No I/O; [`crate::fleet`] re-exports the public ones.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a fleet send reached: which nodes accepted, which rejected (and
/// why), which live nodes did not answer in time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendReport {
    /// The fleet target, as given.
    pub target: String,
    /// The signal number.
    pub num: u8,
    /// Nodes that delivered it.
    pub accepted: Vec<String>,
    /// Nodes that refused it, with their reason.
    pub rejected: Vec<(String, String)>,
    /// Nodes known to be live that did not answer before the timeout.
    pub missing: Vec<String>,
}

impl SendReport {
    /// Whether at least one node accepted and none refused or stayed
    /// silent.
    pub fn all_accepted(&self) -> bool {
        !self.accepted.is_empty() && self.rejected.is_empty() && self.missing.is_empty()
    }

    /// Nodes that were expected to answer or answered.
    pub fn nodes(&self) -> usize {
        self.accepted.len() + self.rejected.len() + self.missing.len()
    }
}

impl fmt::Display for SendReport {
    /// `2 of 3 nodes accepted signal 17 (fleet:workers); c did not answer`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.nodes();
        write!(
            f,
            "{} of {n} node{} accepted signal {} ({})",
            self.accepted.len(),
            if n == 1 { "" } else { "s" },
            self.num,
            self.target
        )?;
        if !self.accepted.is_empty() {
            write!(f, ": {}", self.accepted.join(", "))?;
        }
        for (node, why) in &self.rejected {
            write!(f, "; {node} rejected it: {why}")?;
        }
        if !self.missing.is_empty() {
            write!(f, "; {} did not answer", self.missing.join(", "))?;
        }
        Ok(())
    }
}

/// What a node does with a fleet-unique firing when NATS cannot be asked
/// who runs it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unreachable {
    /// Skip the firing (counted and logged): never twice, maybe never.
    /// The default.
    #[default]
    Skip,
    /// Run it on this node anyway (counted and logged): never missed, but
    /// several nodes may run it while NATS is away.
    RunLocally,
}

/// A fleet-unique source's settings ([`crate::Source::fleet_unique`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FleetUnique {
    /// What to do when NATS is unreachable at a firing.
    #[serde(default)]
    pub on_unreachable: Unreachable,
}

/// One due firing of a fleet-unique source, handed by the master to the
/// bridge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Firing {
    /// The local source id (to raise it with its origin).
    pub(crate) source: u32,
    pub(crate) sig: u8,
    /// The key every node computes for this firing.
    pub(crate) key: String,
    /// The due time, Unix milliseconds.
    pub(crate) due_ms: u64,
    pub(crate) on_unreachable: Unreachable,
}

/// Counters of one node's fleet traffic (the bridge's, as the stats
/// document shows them under `flare.fleet`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FleetCounts {
    /// Fleet sends published by this node.
    pub sent: u64,
    /// Fleet sends that failed here (NATS unreachable, nobody listening,
    /// the bridge not running).
    pub send_failed: u64,
    /// Answers "accepted" collected by this node's sends.
    pub answers_accepted: u64,
    /// Answers "rejected" collected by this node's sends.
    pub answers_rejected: u64,
    /// Live nodes that did not answer one of this node's sends in time.
    pub answers_missing: u64,
    /// Fleet signals that arrived here.
    pub received: u64,
    /// Arrivals delivered here.
    pub accepted: u64,
    /// Arrivals refused here (allow-list, target, nobody to run it).
    pub rejected: u64,
    /// Messages on the fleet subjects that were not fleet signals
    /// (dropped, logged).
    pub malformed: u64,
    /// Fleet-unique firings this node won and ran.
    pub unique_won: u64,
    /// Fleet-unique firings another node had already claimed.
    pub unique_lost: u64,
    /// Fleet-unique firings skipped because NATS was unreachable.
    pub unique_skipped: u64,
    /// Fleet-unique firings run here without asking NATS (unreachable,
    /// `run-locally`).
    pub unique_local: u64,
    /// Times the bridge's NATS connection came up (the first included).
    pub connects: u64,
    /// Times it went down.
    pub disconnects: u64,
    /// Whether it is up now.
    pub connected: bool,
}
