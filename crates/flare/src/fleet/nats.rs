//! What the bridge and the client share: connecting with the configured
//! credentials and TLS, the key-value buckets, listing live nodes, and
//! sending one fleet signal and collecting the nodes' answers.

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::{self, kv, stream::StorageType};
use futures_util::StreamExt;

use super::{Answer, Arrival, FleetOptions, FleetTarget, SendReport, WIRE_VERSION};

/// How long a bridge's key in the live-nodes bucket lasts without a
/// refresh (it refreshes every [`ANNOUNCE_EVERY`]).
pub(super) const NODE_TTL: Duration = Duration::from_secs(3);
/// How often a bridge refreshes its live-node key.
pub(super) const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);
/// How long a firing's key is kept: a node whose clock is this far behind
/// could claim a firing again.
pub(super) const FIRING_TTL: Duration = Duration::from_secs(600);

/// The backoff between reconnect attempts: 100 ms doubling to 2 s.
fn reconnect_delay(attempts: usize) -> Duration {
    let shift = attempts.min(5) as u32;
    Duration::from_millis(100u64 << shift).min(Duration::from_secs(2))
}

/// Connects with every option of `o` (credentials, TLS). `background`:
/// return at once and connect (and reconnect, for ever) in the
/// background, as the bridge does; otherwise fail when the first attempt
/// fails, as a one-shot sender should.
pub(super) async fn connect(
    o: &FleetOptions,
    name: String,
    background: bool,
    events: Option<tokio::sync::mpsc::UnboundedSender<async_nats::Event>>,
) -> Result<async_nats::Client, String> {
    let mut c = async_nats::ConnectOptions::new()
        .name(name)
        .max_reconnects(None)
        .reconnect_delay_callback(reconnect_delay)
        .connection_timeout(Duration::from_secs(2));
    if let Some(path) = &o.creds {
        c = c
            .credentials_file(path)
            .await
            .map_err(|e| format!("reading NATS credentials {}: {e}", path.display()))?;
    }
    if let Some((u, p)) = &o.user_password {
        c = c.user_and_password(u.clone(), p.clone());
    }
    if let Some(t) = &o.token {
        c = c.token(t.clone());
    }
    if let Some(ca) = &o.tls_ca {
        c = c.add_root_certificates(ca.clone());
    }
    if let Some((cert, key)) = &o.tls_cert_key {
        c = c.add_client_certificate(cert.clone(), key.clone());
    }
    if o.tls_required {
        c = c.require_tls(true);
    }
    if background {
        c = c.retry_on_initial_connect();
    }
    if let Some(tx) = events {
        c = c.event_callback(move |e| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(e);
            }
        });
    }
    let servers: Vec<&str> = o.url.split(',').map(str::trim).collect();
    c.connect(servers)
        .await
        .map_err(|e| format!("cannot connect to NATS at {}: {e}", o.url))
}

/// Whether the client is connected now.
pub(super) fn connected(c: &async_nats::Client) -> bool {
    c.connection_state() == State::Connected
}

/// The live-nodes bucket, created if missing.
pub(super) async fn nodes_store(js: &jetstream::Context, fleet: &str) -> Result<kv::Store, String> {
    store(
        js,
        kv::Config {
            bucket: super::nodes_bucket(fleet),
            description: "flare fleet: live nodes".into(),
            history: 1,
            max_age: NODE_TTL,
            storage: StorageType::Memory,
            ..Default::default()
        },
    )
    .await
}

/// The once-per-fleet firings bucket, created if missing.
pub(super) async fn firings_store(
    js: &jetstream::Context,
    fleet: &str,
) -> Result<kv::Store, String> {
    store(
        js,
        kv::Config {
            bucket: super::firings_bucket(fleet),
            description: "flare fleet: once-per-fleet firings".into(),
            history: 1,
            max_age: FIRING_TTL,
            storage: StorageType::File,
            ..Default::default()
        },
    )
    .await
}

async fn store(js: &jetstream::Context, config: kv::Config) -> Result<kv::Store, String> {
    let bucket = config.bucket.clone();
    if let Ok(s) = js.get_key_value(bucket.clone()).await {
        return Ok(s);
    }
    match js.create_key_value(config).await {
        Ok(s) => Ok(s),
        // Another node may have created it meanwhile.
        Err(e) => js
            .get_key_value(bucket.clone())
            .await
            .map_err(|_| format!("cannot create the key-value bucket {bucket}: {e}")),
    }
}

/// The live nodes: the keys of the live-nodes bucket.
pub(super) async fn live_nodes(store: &kv::Store) -> Result<Vec<String>, String> {
    let mut keys = store
        .keys()
        .await
        .map_err(|e| format!("listing live nodes: {e}"))?;
    let mut out = Vec::new();
    while let Some(k) = keys.next().await {
        match k {
            Ok(k) => out.push(k),
            Err(e) => return Err(format!("listing live nodes: {e}")),
        }
    }
    out.sort();
    Ok(out)
}

/// Sends `num` to `target` and collects the answers: for `fleet:T` until
/// every node of `live` answered or `timeout`; for one node, its answer.
pub(super) async fn send(
    client: &async_nats::Client,
    fleet: &str,
    from: &str,
    target: &FleetTarget,
    num: u8,
    timeout: Duration,
    live: &[String],
) -> Result<SendReport, String> {
    if !connected(client) {
        return Err("NATS is not connected (the bridge reconnects in the background)".into());
    }
    let arrival = Arrival {
        v: WIRE_VERSION,
        num,
        target: target.local().to_string(),
        from: from.to_owned(),
    };
    let payload = serde_json::to_vec(&arrival).map_err(|e| e.to_string())?;
    let subject = target.subject(fleet);
    let mut report = SendReport {
        target: target.to_string(),
        num,
        ..SendReport::default()
    };
    match target {
        FleetTarget::All(_) => {
            let inbox = client.new_inbox();
            let mut sub = client
                .subscribe(inbox.clone())
                .await
                .map_err(|e| format!("subscribing to the reply inbox: {e}"))?;
            client
                .publish_with_reply(subject, inbox, payload.into())
                .await
                .map_err(|e| format!("publishing: {e}"))?;
            client
                .flush()
                .await
                .map_err(|e| format!("publishing: {e}"))?;
            let expected: BTreeSet<&str> = live.iter().map(String::as_str).collect();
            let mut answered = BTreeSet::new();
            let deadline = tokio::time::Instant::now() + timeout;
            while expected.is_empty() || !expected.iter().all(|n| answered.contains(*n)) {
                let next = tokio::time::timeout_at(deadline, sub.next()).await;
                let Ok(Some(m)) = next else { break };
                match serde_json::from_slice::<Answer>(&m.payload) {
                    Ok(a) => {
                        if !answered.insert(a.node.clone()) {
                            continue;
                        }
                        record(&mut report, a);
                    }
                    Err(e) => tracing::warn!("fleet: unreadable answer dropped: {e}"),
                }
            }
            let _ = sub.unsubscribe().await;
            report.missing = expected
                .iter()
                .filter(|n| !answered.contains(**n))
                .map(|n| (*n).to_owned())
                .collect();
            if report.nodes() == 0 {
                return Err(format!(
                    "no node of fleet `{fleet}` answered within {} ms",
                    timeout.as_millis()
                ));
            }
        }
        _ => {
            let who = match target {
                FleetTarget::Node(name, _) => format!("node `{name}`"),
                _ => format!("any node of fleet `{fleet}`"),
            };
            let asked =
                tokio::time::timeout(timeout, client.request(subject, payload.into())).await;
            match asked {
                Err(_) => match target {
                    FleetTarget::Node(..) => report.missing.push(name_of(target)),
                    _ => {
                        return Err(format!(
                            "{who} did not answer within {} ms",
                            timeout.as_millis()
                        ));
                    }
                },
                Ok(Err(e)) if e.kind() == async_nats::client::RequestErrorKind::NoResponders => {
                    return Err(format!(
                        "{who} is not connected to the fleet (no responders)"
                    ));
                }
                Ok(Err(e)) => return Err(format!("asking {who}: {e}")),
                Ok(Ok(m)) => match serde_json::from_slice::<Answer>(&m.payload) {
                    Ok(a) => record(&mut report, a),
                    Err(e) => return Err(format!("{who} sent an unreadable answer: {e}")),
                },
            }
        }
    }
    Ok(report)
}

fn name_of(t: &FleetTarget) -> String {
    match t {
        FleetTarget::Node(n, _) => n.clone(),
        _ => String::new(),
    }
}

fn record(report: &mut SendReport, a: Answer) {
    if a.accepted {
        report.accepted.push(a.node);
    } else {
        report.rejected.push((a.node, a.detail));
    }
}
