//! The fleet bridge: a child of the group (role `bridge`) that holds the
//! group's NATS connection on a current-thread tokio runtime. The master
//! never touches NATS; it talks to the bridge over the usual channel:
//!
//! - arrivals on `flare.<fleet>.all`, `flare.<fleet>.node.<node>` and the
//!   queue group on `flare.<fleet>.any` are checked against this node's
//!   allow-list, handed to the master (`Request::FleetRaise`) and
//!   answered (accepted or rejected, with this node's name);
//! - the master's notices: a fleet-unique firing to claim (an atomic
//!   create of its key in the firings bucket; the winner raises it), a
//!   child's fleet send to publish (answered with `Request::FleetSent`);
//! - every second the node's key in the live-nodes bucket is refreshed;
//!   counters go to the master when they change.
//!
//! When the bridge dies or NATS is away, local delivery goes on: nothing
//! in the master waits for the bridge.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use tokio::sync::mpsc::unbounded_channel;

use super::nats::{self, ANNOUNCE_EVERY};
use super::{
    Answer, Arrival, Firing, FleetCounts, FleetOptions, FleetTarget, Unreachable, WIRE_VERSION,
};
use crate::proto::{Notice, Reply, Request};
use crate::ratelog::RateLog;

/// How long a claim (or a live-node listing) may take before NATS counts
/// as unreachable for it.
const KV_TIMEOUT: Duration = Duration::from_secs(2);
/// How often counters are looked at (and sent to the master if changed).
const TICK: Duration = Duration::from_millis(250);

/// The bridge's entry: runs until the master goes away (the dispatcher
/// thread ends the process then) or the connection cannot be set up (the
/// master respawns the bridge with backoff).
pub(crate) fn run(opts: FleetOptions) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("fleet bridge: cannot start its runtime: {e}");
            return;
        }
    };
    rt.block_on(serve(opts));
}

struct Bridge {
    opts: FleetOptions,
    client: async_nats::Client,
    js: jetstream::Context,
    counts: Mutex<FleetCounts>,
    firings: tokio::sync::Mutex<Option<kv::Store>>,
    nodes: tokio::sync::Mutex<Option<kv::Store>>,
    /// Live nodes as last listed, and when.
    live: Mutex<Option<(Instant, Vec<String>)>>,
    malformed_log: Mutex<RateLog>,
    rejected_log: Mutex<RateLog>,
}

async fn serve(opts: FleetOptions) {
    let (notice_tx, mut notices) = unbounded_channel::<Notice>();
    crate::child::set_notice_sink(move |n| {
        let _ = notice_tx.send(n);
    });
    let (event_tx, mut events) = unbounded_channel();
    let name = format!("flare bridge {}/{}", opts.fleet, opts.node);
    let client = match nats::connect(&opts, name, true, Some(event_tx)).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("fleet bridge: {e}");
            return;
        }
    };
    let js = jetstream::new(client.clone());
    let b = Arc::new(Bridge {
        client,
        js,
        counts: Mutex::new(FleetCounts::default()),
        firings: tokio::sync::Mutex::new(None),
        nodes: tokio::sync::Mutex::new(None),
        live: Mutex::new(None),
        malformed_log: Mutex::new(RateLog::new(10, Duration::from_secs(1))),
        rejected_log: Mutex::new(RateLog::new(10, Duration::from_secs(1))),
        opts,
    });
    let fleet = b.opts.fleet.clone();
    let subs = async {
        let all = b.client.subscribe(super::subject_all(&fleet)).await?;
        let mine = b
            .client
            .subscribe(super::subject_node(&fleet, &b.opts.node))
            .await?;
        let any = b
            .client
            .queue_subscribe(super::subject_any(&fleet), format!("flare.{fleet}.any"))
            .await?;
        Ok::<_, async_nats::SubscribeError>(futures_util::stream::select_all([all, mine, any]))
    };
    let mut arrivals = match subs.await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("fleet bridge: cannot subscribe: {e}");
            return;
        }
    };
    tracing::info!(
        "fleet bridge: node `{}` of fleet `{}` on {} (pid {})",
        b.opts.node,
        b.opts.fleet,
        b.opts.url,
        std::process::id()
    );
    let mut tick = tokio::time::interval(TICK);
    let mut reported = FleetCounts::default();
    let mut announced: Option<Instant> = None;
    loop {
        tokio::select! {
            m = arrivals.next() => match m {
                Some(m) => b.on_arrival(m).await,
                None => {
                    tracing::error!("fleet bridge: the subscriptions ended; restarting");
                    return;
                }
            },
            n = notices.recv() => match n {
                Some(Notice::Firing(f)) => {
                    let b = b.clone();
                    tokio::spawn(async move { b.claim(f).await });
                }
                Some(Notice::Send { ticket, target, num }) => {
                    let b = b.clone();
                    tokio::spawn(async move { b.send(ticket, target, num).await });
                }
                None => return,
            },
            e = events.recv() => {
                if let Some(e) = e {
                    b.on_event(e).await;
                }
            }
            _ = tick.tick() => {
                if announced.is_none_or(|t| t.elapsed() >= ANNOUNCE_EVERY) {
                    announced = Some(Instant::now());
                    let b = b.clone();
                    tokio::spawn(async move { b.announce().await });
                }
                let now = b.count(|c| c.connected = nats::connected(&b.client));
                if now != reported {
                    reported = now;
                    master(&Request::FleetCounts(now));
                }
            }
        }
    }
}

/// One request to the master (a short blocking round trip on a pipe).
fn master(req: &Request) -> Option<Reply> {
    let ctx = crate::child::context()?;
    match ctx.request(req) {
        Ok(r) => Some(r),
        Err(e) => {
            // The master gone: the dispatcher thread ends the process.
            tracing::debug!("fleet bridge: request to the master failed: {}", e.report());
            None
        }
    }
}

impl Bridge {
    /// Changes the counters; returns them.
    fn count(&self, f: impl FnOnce(&mut FleetCounts)) -> FleetCounts {
        let mut c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut c);
        *c
    }

    async fn on_event(&self, e: async_nats::Event) {
        match e {
            async_nats::Event::Connected => {
                self.count(|c| {
                    c.connects += 1;
                    c.connected = true;
                });
                // A restarted server may have lost the memory bucket.
                *self.nodes.lock().await = None;
                *self.firings.lock().await = None;
                tracing::info!("fleet bridge: connected to NATS at {}", self.opts.url);
            }
            async_nats::Event::Disconnected => {
                self.count(|c| {
                    c.disconnects += 1;
                    c.connected = false;
                });
                tracing::warn!(
                    "fleet bridge: disconnected from NATS at {}; reconnecting with backoff \
                     (local signals are not affected)",
                    self.opts.url
                );
            }
            other => tracing::info!("fleet bridge: NATS: {other}"),
        }
    }

    /// Answers an arrival's sender, if it asked for an answer.
    async fn answer(&self, reply: Option<async_nats::Subject>, accepted: bool, detail: String) {
        let Some(reply) = reply else { return };
        let a = Answer {
            v: WIRE_VERSION,
            node: self.opts.node.clone(),
            accepted,
            detail,
        };
        if let Ok(body) = serde_json::to_vec(&a) {
            if let Err(e) = self.client.publish(reply, body.into()).await {
                tracing::debug!("fleet bridge: answer not sent: {e}");
            }
        }
    }

    async fn on_arrival(&self, m: async_nats::Message) {
        let arrival = match serde_json::from_slice::<Arrival>(&m.payload) {
            Ok(a) if a.v == WIRE_VERSION => a,
            Ok(a) => {
                self.malformed(
                    &m,
                    &format!("wire version {} (this node speaks {WIRE_VERSION})", a.v),
                );
                self.answer(m.reply, false, format!("unsupported wire version {}", a.v))
                    .await;
                return;
            }
            Err(e) => {
                self.malformed(&m, &e.to_string());
                self.answer(m.reply, false, format!("malformed fleet message: {e}"))
                    .await;
                return;
            }
        };
        self.count(|c| c.received += 1);
        let num = arrival.num;
        let (accepted, detail) = if !self.opts.allows(num) {
            (
                false,
                format!(
                    "signal {num} is not on node {}'s fleet allow-list",
                    self.opts.node
                ),
            )
        } else {
            match master(&Request::FleetRaise {
                num,
                target: Some(arrival.target.clone()),
                source: None,
            }) {
                Some(Reply::Raised { accepted, detail }) => (accepted, detail),
                Some(other) => (
                    false,
                    format!("unexpected reply from the master: {other:?}"),
                ),
                None => (false, "the master is gone".into()),
            }
        };
        if accepted {
            self.count(|c| c.accepted += 1);
        } else {
            self.count(|c| c.rejected += 1);
            let held = self
                .rejected_log
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .allow(Instant::now());
            if let Some(held) = held {
                tracing::warn!(
                    num,
                    outcome = "rejected",
                    "fleet: signal {num} for {} from {} rejected: {detail}{}",
                    arrival.target,
                    arrival.from,
                    suppressed(held)
                );
            }
        }
        self.answer(m.reply, accepted, detail).await;
    }

    fn malformed(&self, m: &async_nats::Message, why: &str) {
        self.count(|c| c.malformed += 1);
        let held = self
            .malformed_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .allow(Instant::now());
        if let Some(held) = held {
            tracing::warn!(
                outcome = "malformed",
                "fleet: malformed message on {} ({} bytes) dropped: {why}{}",
                m.subject,
                m.payload.len(),
                suppressed(held)
            );
        }
    }

    async fn firings(&self) -> Result<kv::Store, String> {
        let mut g = self.firings.lock().await;
        if let Some(s) = g.as_ref() {
            return Ok(s.clone());
        }
        let s = nats::firings_store(&self.js, &self.opts.fleet).await?;
        *g = Some(s.clone());
        Ok(s)
    }

    async fn nodes(&self) -> Result<kv::Store, String> {
        let mut g = self.nodes.lock().await;
        if let Some(s) = g.as_ref() {
            return Ok(s.clone());
        }
        let s = nats::nodes_store(&self.js, &self.opts.fleet).await?;
        *g = Some(s.clone());
        Ok(s)
    }

    /// Claims one firing; raises it here if this node won.
    async fn claim(&self, f: Firing) {
        if !nats::connected(&self.client) {
            return self.unreachable(&f, "NATS is not connected");
        }
        let store = match tokio::time::timeout(KV_TIMEOUT, self.firings()).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return self.unreachable(&f, &e),
            Err(_) => return self.unreachable(&f, "the firings bucket did not answer in time"),
        };
        let node = self.opts.node.clone();
        match tokio::time::timeout(KV_TIMEOUT, store.create(&f.key, node.into())).await {
            Ok(Ok(_)) => {
                self.count(|c| c.unique_won += 1);
                tracing::debug!("fleet: firing {} won here", f.key);
                self.raise_here(&f);
            }
            Ok(Err(e)) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                self.count(|c| c.unique_lost += 1);
            }
            Ok(Err(e)) => {
                *self.firings.lock().await = None;
                self.unreachable(&f, &e.to_string());
            }
            Err(_) => self.unreachable(&f, "the claim did not finish in time"),
        }
    }

    fn raise_here(&self, f: &Firing) {
        master(&Request::FleetRaise {
            num: f.sig,
            target: None,
            source: Some(f.source),
        });
    }

    fn unreachable(&self, f: &Firing, why: &str) {
        match f.on_unreachable {
            Unreachable::Skip => {
                self.count(|c| c.unique_skipped += 1);
                tracing::warn!(
                    num = f.sig,
                    outcome = "skipped",
                    "fleet: once-per-fleet firing of signal {} (due {} ms) skipped: {why} \
                     (the source says skip when NATS is unreachable)",
                    f.sig,
                    f.due_ms
                );
            }
            Unreachable::RunLocally => {
                self.count(|c| c.unique_local += 1);
                tracing::warn!(
                    num = f.sig,
                    outcome = "run-locally",
                    "fleet: once-per-fleet firing of signal {} (due {} ms) run on this node: \
                     {why} (the source says run locally when NATS is unreachable)",
                    f.sig,
                    f.due_ms
                );
                self.raise_here(f);
            }
        }
    }

    /// Refreshes this node's key in the live-nodes bucket.
    async fn announce(&self) {
        if !nats::connected(&self.client) {
            return;
        }
        let body = format!("{}", std::process::id());
        let put = async {
            let s = self.nodes().await?;
            s.put(&self.opts.node, body.into())
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(KV_TIMEOUT, put).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                *self.nodes.lock().await = None;
                tracing::debug!("fleet bridge: announcing this node failed: {e}");
            }
            Err(_) => tracing::debug!("fleet bridge: announcing this node timed out"),
        }
    }

    /// The live nodes, listed at most once a second.
    async fn live(&self) -> Vec<String> {
        {
            let g = self.live.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((at, nodes)) = g.as_ref() {
                if at.elapsed() < ANNOUNCE_EVERY {
                    return nodes.clone();
                }
            }
        }
        let listed = async {
            let s = self.nodes().await?;
            nats::live_nodes(&s).await
        };
        match tokio::time::timeout(KV_TIMEOUT, listed).await {
            Ok(Ok(nodes)) => {
                *self.live.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some((Instant::now(), nodes.clone()));
                nodes
            }
            _ => self
                .live
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .map(|(_, n)| n.clone())
                .unwrap_or_default(),
        }
    }

    /// Publishes a child's fleet send; answers the master with the result.
    async fn send(&self, ticket: u64, target: String, num: u8) {
        // Whatever happens to this task, the child waiting gets an answer.
        let mut guard = Unanswered(Some(ticket));
        let result = match target.parse::<FleetTarget>() {
            Err(e) => Err(e.to_string()),
            Ok(t) => {
                let live = if matches!(t, FleetTarget::All(_)) {
                    self.live().await
                } else {
                    Vec::new()
                };
                nats::send(
                    &self.client,
                    &self.opts.fleet,
                    &self.opts.node,
                    &t,
                    num,
                    self.opts.reply_timeout,
                    &live,
                )
                .await
            }
        };
        self.count(|c| match &result {
            Ok(r) => {
                c.sent += 1;
                c.answers_accepted += r.accepted.len() as u64;
                c.answers_rejected += r.rejected.len() as u64;
                c.answers_missing += r.missing.len() as u64;
            }
            Err(_) => c.send_failed += 1,
        });
        if let Err(e) = &result {
            tracing::warn!("fleet: signal {num} to {target} not sent: {e}");
        }
        guard.0 = None;
        master(&Request::FleetSent { ticket, result });
    }
}

/// A child's send not answered yet: answered "failed" if the task ends
/// without answering (it panicked, or the runtime is going away).
struct Unanswered(Option<u64>);

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(ticket) = self.0.take() {
            master(&Request::FleetSent {
                ticket,
                result: Err("the fleet bridge failed while sending".into()),
            });
        }
    }
}

fn suppressed(held: u64) -> String {
    if held == 0 {
        String::new()
    } else {
        format!(" ({held} similar lines suppressed)")
    }
}
