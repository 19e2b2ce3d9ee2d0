//! Sending fleet signals from outside a group (the `flare signal
//! nats://...` command, scripts, tests): one NATS connection, a
//! current-thread runtime of its own, blocking calls.

use std::time::Duration;

use super::{FleetOptions, FleetTarget, SendReport, nats};
use crate::error::{Error, Result};

/// A connection to a fleet's NATS server for sending fleet signals.
///
/// Not for a master before `run()`: the client's runtime may start a
/// thread (for name resolution), and `run()` refuses to fork a process
/// with more than one. Inside a group use [`crate::fleet::send`].
///
/// ```no_run
/// let c = flare::fleet::Client::connect("nats://127.0.0.1:4222", "app")?;
/// let report = c.send("fleet:workers", 17)?;
/// println!("{report}"); // 3 of 3 nodes accepted signal 17 (fleet:workers): a, b, c
/// # Ok::<(), flare::Error>(())
/// ```
pub struct Client {
    rt: tokio::runtime::Runtime,
    nc: async_nats::Client,
    js: async_nats::jetstream::Context,
    opts: FleetOptions,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.opts.url)
            .field("fleet", &self.opts.fleet)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to the server at `url` for the fleet called `fleet`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a bad URL or fleet name; [`Error::Fleet`]
    /// when the server cannot be reached.
    pub fn connect(url: &str, fleet: &str) -> Result<Client> {
        Client::with_options(FleetOptions::new(url, fleet, "cli"))
    }

    /// Connects with every option given (credentials, TLS, reply
    /// timeout); `opts.node` names this sender in the arrivals.
    ///
    /// # Errors
    ///
    /// As [`Client::connect`].
    pub fn with_options(opts: FleetOptions) -> Result<Client> {
        opts.validate()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting the fleet client's runtime", e))?;
        let name = format!("flare client {}", opts.node);
        let nc = rt
            .block_on(nats::connect(&opts, name, false, None))
            .map_err(Error::Fleet)?;
        // It spawns a task: inside the runtime.
        let js = {
            let _in = rt.enter();
            async_nats::jetstream::new(nc.clone())
        };
        Ok(Client { rt, nc, js, opts })
    }

    /// Sets how long [`Client::send`] waits for the nodes' answers.
    pub fn set_reply_timeout(&mut self, t: Duration) {
        self.opts.reply_timeout = t;
    }

    /// The live nodes of the fleet (each bridge refreshes its entry every
    /// second; a node gone for 3 s drops out).
    ///
    /// # Errors
    ///
    /// [`Error::Fleet`] when the live-nodes bucket cannot be read.
    pub fn nodes(&self) -> Result<Vec<String>> {
        self.rt.block_on(self.live_nodes()).map_err(Error::Fleet)
    }

    /// The live nodes, read from the fleet's bucket.
    async fn live_nodes(&self) -> std::result::Result<Vec<String>, String> {
        let s = nats::nodes_store(&self.js, &self.opts.fleet).await?;
        nats::live_nodes(&s).await
    }

    /// Sends `num` to a fleet target and waits for the answers: for
    /// `fleet:T` until every live node answered or the reply timeout.
    ///
    /// # Errors
    ///
    /// [`Error::Fleet`] for a bad target, NATS unreachable, or nobody
    /// listening. A node that refused or did not answer is in the report,
    /// not an error.
    pub fn send(&self, target: &str, num: u8) -> Result<SendReport> {
        let t: FleetTarget = target.parse()?;
        self.rt
            .block_on(async {
                let live = match t {
                    FleetTarget::All(_) => self.live_nodes().await?,
                    _ => Vec::new(),
                };
                nats::send(
                    &self.nc,
                    &self.opts.fleet,
                    &self.opts.node,
                    &t,
                    num,
                    self.opts.reply_timeout,
                    &live,
                )
                .await
            })
            .map_err(Error::Fleet)
    }

    /// Publishes raw bytes on a fleet subject (`all`, `any` or
    /// `node.NAME`), for tests of what nodes do with bad input.
    ///
    /// # Errors
    ///
    /// [`Error::Fleet`] when publishing fails.
    #[doc(hidden)]
    pub fn publish_raw(&self, which: &str, body: &[u8]) -> Result<()> {
        let subject = format!("flare.{}.{which}", self.opts.fleet);
        self.rt
            .block_on(async {
                self.nc.publish(subject, body.to_vec().into()).await?;
                self.nc.flush().await.map_err(async_nats::Error::from)
            })
            .map_err(|e| Error::Fleet(format!("publishing: {e}")))
    }
}
