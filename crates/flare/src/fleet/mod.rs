//! Fleets: signals across nodes and once-per-fleet sources, over NATS.
//!
//! A group joins a fleet with [`MasterBuilder::fleet`](crate::MasterBuilder::fleet).
//! The master stays single-threaded: the NATS connection lives in a child
//! of the group, the bridge ([`Role::Bridge`](crate::Role::Bridge)), which
//! runs its own current-thread async runtime, is supervised and respawned
//! like any child, and talks to the master over the usual channel.
//!
//! - Fleet targets ([`FleetTarget`]): `fleet:T` (every node), `node:NAME:T`
//!   (one named node), `any-node:T` (one node of the fleet, a NATS queue
//!   group). `T` is a local target on the receiving node (`workers`,
//!   `worker2`, `mules`, ... or the number's registered pool target).
//!   [`send`] sends from a child; [`Client`] (feature `fleet`) from any
//!   program, as `flare signal nats://host:4222 fleet:workers 17` does.
//! - Each node checks what arrives against its own allow-list
//!   ([`FleetOptions::allow`]) and answers accepted or rejected, with its
//!   name; the sender counts the answers against the live nodes.
//! - Once-per-fleet sources ([`Source::fleet_unique`](crate::Source::fleet_unique)):
//!   every node schedules them; for each due firing each node's bridge
//!   tries an atomic create of one key in a JetStream key-value bucket;
//!   the node that creates it raises the signal.
//!
//! This module holds the parts without I/O (targets, messages, keys,
//! counters, options); the bridge and the client are in `bridge` and
//! `client`, built with the `fleet` feature. See docs/fleet.md.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::proto::{Reply, Request};
use crate::target::Target;

#[cfg(feature = "fleet")]
mod bridge;
#[cfg(feature = "fleet")]
mod client;
#[cfg(feature = "fleet")]
mod nats;

pub(crate) use crate::fleet_spec::Firing;
pub use crate::fleet_spec::{FleetCounts, FleetUnique, SendReport, Unreachable};
#[cfg(feature = "fleet")]
pub(crate) use bridge::run as run_bridge;
#[cfg(feature = "fleet")]
pub use client::Client;

/// Version of the JSON messages on the fleet subjects.
pub const WIRE_VERSION: u32 = 1;

/// Longest fleet or node name: they are NATS subject tokens and key parts.
pub const MAX_NAME_LEN: usize = 64;

/// How long a sender waits for the nodes' answers by default.
pub const DEFAULT_REPLY_TIMEOUT: Duration = Duration::from_millis(1000);

/// Checks a fleet or node name: 1 to 64 of letters, digits, `-` and `_`.
///
/// # Errors
///
/// [`Error::Config`] naming the bad text and what is valid.
pub fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(Error::Config(format!(
            "{what} name `{name}` must be 1 to {MAX_NAME_LEN} characters"
        )));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(Error::Config(format!(
            "{what} name `{name}` may only use letters, digits, `-` and `_`"
        )));
    }
    Ok(())
}

/// The host name, for the default node name (`--node`).
pub fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let clean: String = raw
        .trim()
        .split('.')
        .next()
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(MAX_NAME_LEN)
        .collect();
    if clean.is_empty() {
        "node".into()
    } else {
        clean
    }
}

/// How a group joins its fleet: the NATS server, the names, the
/// credentials and TLS settings handed to the client, and this node's
/// allow-list.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FleetOptions {
    /// NATS server URL(s), comma-separated: `nats://host:4222`,
    /// `tls://host:4222`.
    pub url: String,
    /// The fleet's name: nodes with the same name and server form a fleet.
    pub fleet: String,
    /// This node's name, unique in the fleet (default: the host name).
    pub node: String,
    /// A NATS credentials file (`.creds`, JWT and nkey seed).
    pub creds: Option<PathBuf>,
    /// User and password.
    pub user_password: Option<(String, String)>,
    /// An authentication token.
    pub token: Option<String>,
    /// CA certificates (PEM) to trust for the server's TLS certificate.
    pub tls_ca: Option<PathBuf>,
    /// A client certificate and key (PEM) for TLS client authentication.
    pub tls_cert_key: Option<(PathBuf, PathBuf)>,
    /// Require TLS even for a `nats://` URL.
    pub tls_required: bool,
    /// Signal numbers this node accepts from the fleet; `None`: all.
    pub allow: Option<Vec<u8>>,
    /// How long a sender waits for the nodes' answers.
    pub reply_timeout: Duration,
}

impl FleetOptions {
    /// Options with the defaults: no credentials, no TLS settings, every
    /// number allowed, [`DEFAULT_REPLY_TIMEOUT`].
    pub fn new(url: impl Into<String>, fleet: impl Into<String>, node: impl Into<String>) -> Self {
        FleetOptions {
            url: url.into(),
            fleet: fleet.into(),
            node: node.into(),
            creds: None,
            user_password: None,
            token: None,
            tls_ca: None,
            tls_cert_key: None,
            tls_required: false,
            allow: None,
            reply_timeout: DEFAULT_REPLY_TIMEOUT,
        }
    }

    /// Checks the names and the URL's shape.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] saying what is wrong.
    pub fn validate(&self) -> Result<()> {
        check_name("fleet", &self.fleet)?;
        check_name("node", &self.node)?;
        for u in self.url.split(',') {
            let u = u.trim();
            let ok = ["nats://", "tls://", "ws://", "wss://"]
                .iter()
                .any(|p| u.starts_with(p) && u.len() > p.len());
            if !ok {
                return Err(Error::Config(format!(
                    "fleet server `{u}` is not a NATS URL: write nats://host:4222 or tls://host:4222"
                )));
            }
        }
        if self.reply_timeout.is_zero() {
            return Err(Error::Config(
                "the fleet reply timeout must be above zero".into(),
            ));
        }
        Ok(())
    }

    /// Whether this node accepts `num` from the fleet.
    pub fn allows(&self, num: u8) -> bool {
        self.allow.as_ref().is_none_or(|a| a.contains(&num))
    }
}

/// Where a fleet signal goes.
///
/// ```
/// use flare::fleet::FleetTarget;
/// let t: FleetTarget = "node:b:worker1".parse().unwrap();
/// assert_eq!(t.to_string(), "node:b:worker1");
/// assert!("fleet:nope".parse::<FleetTarget>().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FleetTarget {
    /// `fleet:T`: target `T` on every node.
    All(Target),
    /// `node:NAME:T`: target `T` on the node called NAME.
    Node(String, Target),
    /// `any-node:T`: target `T` on one node, chosen by NATS (a queue group).
    Any(Target),
}

impl FleetTarget {
    /// The local target on the receiving node.
    pub fn local(&self) -> &Target {
        match self {
            FleetTarget::All(t) | FleetTarget::Node(_, t) | FleetTarget::Any(t) => t,
        }
    }

    /// Whether a text is meant as a fleet target (it may still not parse).
    pub fn looks_like(text: &str) -> bool {
        ["fleet:", "node:", "any-node:"]
            .iter()
            .any(|p| text.starts_with(p))
    }

    /// The NATS subject for this target in `fleet`.
    #[cfg_attr(not(feature = "fleet"), allow(dead_code))]
    pub(crate) fn subject(&self, fleet: &str) -> String {
        match self {
            FleetTarget::All(_) => subject_all(fleet),
            FleetTarget::Node(n, _) => subject_node(fleet, n),
            FleetTarget::Any(_) => subject_any(fleet),
        }
    }
}

const FLEET_TARGETS: &str = "fleet:T (every node), node:NAME:T (one node), any-node:T (one node \
     chosen for you), where T is a local target such as workers, worker2, mules, mule1, farm_NAME";

impl FromStr for FleetTarget {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::Fleet(format!(
                "invalid fleet target `{s}`: {why}; valid: {FLEET_TARGETS}"
            ))
        };
        let local = |t: &str| {
            t.parse::<Target>()
                .map_err(|e| bad(&format!("`{t}` is not a target ({e})")))
        };
        if let Some(rest) = s.strip_prefix("fleet:") {
            Ok(FleetTarget::All(local(rest)?))
        } else if let Some(rest) = s.strip_prefix("any-node:") {
            Ok(FleetTarget::Any(local(rest)?))
        } else if let Some(rest) = s.strip_prefix("node:") {
            let (name, t) = rest
                .split_once(':')
                .ok_or_else(|| bad("a node target is node:NAME:T"))?;
            check_name("node", name).map_err(|e| bad(&e.to_string()))?;
            Ok(FleetTarget::Node(name.to_owned(), local(t)?))
        } else {
            Err(bad("it must start with fleet:, node: or any-node:"))
        }
    }
}

impl fmt::Display for FleetTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FleetTarget::All(t) => write!(f, "fleet:{t}"),
            FleetTarget::Node(n, t) => write!(f, "node:{n}:{t}"),
            FleetTarget::Any(t) => write!(f, "any-node:{t}"),
        }
    }
}

/// Subject every node listens on.
#[cfg_attr(not(feature = "fleet"), allow(dead_code))]
pub(crate) fn subject_all(fleet: &str) -> String {
    format!("flare.{fleet}.all")
}

/// Subject one node listens on.
#[cfg_attr(not(feature = "fleet"), allow(dead_code))]
pub(crate) fn subject_node(fleet: &str, node: &str) -> String {
    format!("flare.{fleet}.node.{node}")
}

/// Subject of the queue group (one node of the fleet gets each message).
#[cfg_attr(not(feature = "fleet"), allow(dead_code))]
pub(crate) fn subject_any(fleet: &str) -> String {
    format!("flare.{fleet}.any")
}

/// The key-value bucket of once-per-fleet firings.
#[cfg_attr(not(feature = "fleet"), allow(dead_code))]
pub(crate) fn firings_bucket(fleet: &str) -> String {
    format!("flare_{fleet}_firings")
}

/// The key-value bucket of live nodes (each bridge refreshes its key).
#[cfg_attr(not(feature = "fleet"), allow(dead_code))]
pub(crate) fn nodes_bucket(fleet: &str) -> String {
    format!("flare_{fleet}_nodes")
}

/// A signal on the fleet subjects (JSON).
#[cfg_attr(not(feature = "fleet"), allow(dead_code))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Arrival {
    /// [`WIRE_VERSION`].
    pub(crate) v: u32,
    pub(crate) num: u8,
    /// The local target on the receiving node.
    pub(crate) target: String,
    /// The sending node (or `cli`).
    pub(crate) from: String,
}

/// A node's answer to an [`Arrival`] (JSON).
#[cfg_attr(not(feature = "fleet"), allow(dead_code))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Answer {
    pub(crate) v: u32,
    pub(crate) node: String,
    pub(crate) accepted: bool,
    #[serde(default)]
    pub(crate) detail: String,
}

/// FNV-1a, 64 bits: a stable hash (the standard library's is not stable
/// across builds, and every node must compute the same key).
fn fnv1a(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The key of one firing: the signal, a hash of the source's kind text
/// (the same on every node that declares the same source, unlike the
/// local source id) and the due time.
pub(crate) fn firing_key(sig: u8, kind: &str, due_ms: u64) -> String {
    let normal: Vec<&str> = kind.split_whitespace().collect();
    format!("s{sig}.{:016x}.{due_ms}", fnv1a(&normal.join(" ")))
}

/// The due time every node agrees on for a timer firing seen at
/// `now_ms`: the nearest multiple of the period since the Unix epoch.
pub(crate) fn timer_due_ms(period: Duration, now_ms: u64) -> u64 {
    let p = (period.as_millis() as u64).max(1);
    (now_ms + p / 2) / p * p
}

/// How long from `now_ms` until the next multiple of the period since the
/// Unix epoch (what a fleet-unique timer's first firing waits).
pub(crate) fn until_aligned(period: Duration, now_ms: u64) -> Duration {
    let p = (period.as_millis() as u64).max(1);
    let next = now_ms / p * p + p;
    Duration::from_millis(next - now_ms)
}

/// The current Unix time in milliseconds.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Fleet figures in the stats document (`flare.fleet`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FleetStats {
    /// The fleet's name.
    pub fleet: String,
    /// This node's name.
    pub node: String,
    /// The bridge's counters, as it last reported them.
    pub counts: FleetCounts,
    /// Fleet-unique firings the master could not hand to the bridge
    /// (it was not running) and skipped.
    pub no_bridge_skipped: u64,
    /// ... and ran locally (`run-locally`).
    pub no_bridge_local: u64,
    /// Fleet sends refused because the bridge was not running.
    pub no_bridge_sends: u64,
    /// The bridge's pid (0 while it is being respawned).
    pub bridge_pid: u32,
    /// Times the bridge was respawned.
    pub bridge_respawns: u64,
}

/// Sends `num` to a fleet target from a child of a group in a fleet,
/// through the group's bridge: `fleet:workers`, `node:b:worker1`,
/// `any-node:worker`. Waits for the nodes' answers (at most the fleet's
/// reply timeout).
///
/// # Errors
///
/// [`Error::Fleet`] for a bad fleet target, no fleet configured, the
/// bridge not running, NATS unreachable or nobody listening;
/// [`Error::NoRuntime`] outside a flare child.
pub fn send(target: &str, num: u8) -> Result<SendReport> {
    let parsed: FleetTarget = target.parse()?;
    let Some(ctx) = crate::child::context() else {
        return Err(Error::NoRuntime(
            "fleet::send needs a flare child: send from a worker, mule or spooler, or use \
             fleet::Client (or `flare signal nats://... TARGET NUM`) from outside the group",
        ));
    };
    let reply = ctx.request(&Request::FleetSend {
        target: parsed.to_string(),
        num,
    })?;
    match reply {
        Reply::Fleet(report) => Ok(report),
        Reply::Err(crate::error::RegistrationError::Master(why)) => Err(Error::Fleet(why)),
        Reply::Err(e) => Err(Error::Fleet(e.to_string())),
        other => Err(Error::Protocol(format!(
            "unexpected reply to a fleet send: {other:?}"
        ))),
    }
}

/// Sends a fleet signal and turns a partial result into an error:
/// `Err(Error::Rejected)` when a node refused it or a live node did not
/// answer (the message lists them). What `send_remote("fleet:...")` does.
pub(crate) fn send_strict(target: &str, num: u8) -> Result<()> {
    let report = send(target, num)?;
    if report.all_accepted() {
        Ok(())
    } else {
        Err(Error::Fleet(report.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_targets_parse_and_print_back() {
        for t in [
            "fleet:workers",
            "fleet:mules",
            "node:b:worker1",
            "any-node:worker",
        ] {
            assert_eq!(t.parse::<FleetTarget>().unwrap().to_string(), t);
        }
        let e = "node:b".parse::<FleetTarget>().unwrap_err().to_string();
        assert!(e.contains("node:NAME:T"), "{e}");
        let e = "node:a.b:workers"
            .parse::<FleetTarget>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("letters, digits"), "{e}");
        let e = "fleet:nope".parse::<FleetTarget>().unwrap_err().to_string();
        assert!(e.contains("`nope` is not a target"), "{e}");
        assert!("workers".parse::<FleetTarget>().is_err());
        assert!(FleetTarget::looks_like("any-node:worker"));
        assert!(!FleetTarget::looks_like("127.0.0.1:3031"));
    }

    #[test]
    fn keys_are_stable_and_due_times_aligned() {
        let a = firing_key(17, "timer every 1s", 5000);
        assert_eq!(a, firing_key(17, "timer  every 1s", 5000));
        assert_ne!(a, firing_key(18, "timer every 1s", 5000));
        assert_ne!(a, firing_key(17, "timer every 2s", 5000));
        assert_ne!(a, firing_key(17, "timer every 1s", 6000));
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        );
        let s = Duration::from_secs(1);
        assert_eq!(timer_due_ms(s, 10_000), 10_000);
        assert_eq!(timer_due_ms(s, 10_020), 10_000);
        assert_eq!(timer_due_ms(s, 9_990), 10_000);
        assert_eq!(until_aligned(s, 10_250), Duration::from_millis(750));
        assert_eq!(until_aligned(s, 10_000), Duration::from_millis(1000));
    }

    #[test]
    fn reports_say_who_did_not_answer() {
        let r = SendReport {
            target: "fleet:workers".into(),
            num: 17,
            accepted: vec!["a".into(), "b".into()],
            rejected: vec![],
            missing: vec!["c".into()],
        };
        assert_eq!(
            r.to_string(),
            "2 of 3 nodes accepted signal 17 (fleet:workers): a, b; c did not answer"
        );
        assert!(!r.all_accepted());
    }

    #[test]
    fn options_are_checked() {
        let o = FleetOptions::new("nats://127.0.0.1:4222", "app", "a");
        assert!(o.validate().is_ok());
        let e = FleetOptions::new("127.0.0.1:4222", "app", "a")
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("nats://host:4222"), "{e}");
        assert!(
            FleetOptions::new("nats://x:1", "a b", "a")
                .validate()
                .is_err()
        );
        let mut o = FleetOptions::new("nats://x:1", "app", "a");
        o.allow = Some(vec![17]);
        assert!(o.allows(17) && !o.allows(18));
        assert!(check_name("node", &host_name()).is_ok());
    }
}
