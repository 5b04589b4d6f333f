//! One RabbitMQ connection per process, kept alive in the background, and confirmed publishing.
//!
//! A process starts whether or not the broker is up: [`Broker::spawn_supervisor`] connects, declares
//! the topology, and reconnects whenever the connection is lost for good (lapin's own auto-recovery
//! handles short outages first). [`Broker::is_connected`] feeds `/readyz`; [`Broker::publish`]
//! fails fast with [`BrokerError::Unavailable`] while there is no connection, which callers turn
//! into "retry later" (the outbox keeps the row, webhook ingress answers 503).
//!
//! On a cluster (`amqp.urls`), a connection walks the nodes: it starts at a node picked per process
//! (so processes spread over the cluster), tries each in turn, and the next connection starts at
//! the node after the one that last worked. There lapin's auto-recovery is off, since it would
//! keep knocking at the node that went away: a lost connection is replaced at once, on another
//! node, and the consumers start again on it (as after any replaced connection).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{Mutex, watch};
use tokio_util::sync::CancellationToken;

use super::envelope::Envelope;
use super::route::{Parcel, Route};
use super::topology::{Topology, is_home_node_down};
use crate::config::{AmqpSettings, redact_url};

/// How long lapin's recovery may try before the supervisor gives up on the connection and makes a
/// new one.
pub const RECOVERY_PATIENCE: Duration = Duration::from_secs(15);

/// How long a publish waits for the broker's confirm. A confirm that never comes (the channel
/// belonged to a connection the supervisor replaced, or the broker went away mid-publish) must not
/// hold its caller forever: the outbox relay would keep its claimed rows locked, and nothing would
/// be published again.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a broker operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// No connection right now; try again later.
    #[error("RabbitMQ is not connected")]
    Unavailable,
    /// The broker did not confirm the message (nack, or the channel failed before the confirm).
    #[error("RabbitMQ did not confirm the message: {0}")]
    NotConfirmed(String),
    /// The message matched no queue (published with `mandatory`).
    #[error("message with routing key {routing_key} matched no queue")]
    Unroutable {
        /// The routing key that matched nothing.
        routing_key: String,
    },
    /// A protocol or I/O error.
    #[error("RabbitMQ error: {0}")]
    Amqp(#[from] lapin::Error),
}

/// The process's broker connection. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    /// The broker's nodes (one unless `amqp.urls` names a cluster's).
    urls: Vec<SecretString>,
    /// The node the next connection attempt starts at.
    next_node: AtomicUsize,
    connection_name: String,
    topology: Topology,
    connect_timeout: Duration,
    /// Serializes connection attempts; never held while publishing.
    connecting: Mutex<()>,
    connection: std::sync::RwLock<Option<Arc<Connection>>>,
    /// The confirm-mode channel publishes go through, with the connection (by count) it belongs to.
    publish_channel: Mutex<Option<(u64, Channel)>>,
    connected: watch::Sender<bool>,
    /// Counts the connections made: a consumer whose channel belongs to an earlier one must start
    /// again on the new one.
    connections_made: watch::Sender<u64>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<String> = self.urls.iter().map(redact_url).collect();
        f.debug_struct("Broker")
            .field("urls", &urls)
            .field("connection_name", &self.connection_name)
            .field("connected", &*self.connected.borrow())
            .finish()
    }
}

impl Broker {
    /// A broker handle; nothing connects until [`Broker::connect`] or the supervisor runs.
    pub fn new(settings: &AmqpSettings, connection_name: &str) -> Self {
        let urls = settings.node_urls();
        // Processes spread over a cluster's nodes; a single broker is always node 0.
        let first = if urls.len() > 1 { rand::random_range(0..urls.len()) } else { 0 };
        Self {
            inner: Arc::new(Inner {
                urls,
                next_node: AtomicUsize::new(first),
                connection_name: connection_name.to_owned(),
                topology: Topology::from_settings(settings),
                connect_timeout: Duration::from_millis(settings.connect_timeout_ms),
                connecting: Mutex::new(()),
                connection: std::sync::RwLock::new(None),
                publish_channel: Mutex::new(None),
                connected: watch::channel(false).0,
                connections_made: watch::channel(0).0,
            }),
        }
    }

    /// The topology this broker declares.
    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    /// Whether a usable connection exists right now.
    pub fn is_connected(&self) -> bool {
        *self.inner.connected.borrow()
    }

    /// Changes of [`Broker::is_connected`], for consumers that wait for the broker to come back.
    pub fn watch_connected(&self) -> watch::Receiver<bool> {
        self.inner.connected.subscribe()
    }

    /// Changes whenever a new connection replaces the previous one. Channels of a connection the
    /// supervisor gave up on (lapin's recovery stalled) are not always told: a consumer on one
    /// can wait forever for deliveries, so consumers watch this and start again.
    pub fn watch_connections_made(&self) -> watch::Receiver<u64> {
        self.inner.connections_made.subscribe()
    }

    /// Returns the live connection, connecting (and declaring the topology) if there is none.
    pub async fn connect(&self) -> Result<Arc<Connection>, BrokerError> {
        let _attempt = self.inner.connecting.lock().await;
        if let Some(conn) = self.current() {
            let status = conn.status();
            if status.connected() || status.reconnecting() || status.connecting() {
                return Ok(conn);
            }
        }
        self.set_connection(None);
        let nodes = self.inner.urls.len();
        let first = self.inner.next_node.load(Ordering::Relaxed) % nodes;
        let mut failure = BrokerError::Unavailable;
        for step in 0..nodes {
            let node = (first + step) % nodes;
            let url = &self.inner.urls[node];
            match self.connect_to(url, nodes > 1).await {
                Ok(conn) => {
                    // The next connection (after this one is lost) starts at the following node.
                    self.inner.next_node.store((node + 1) % nodes, Ordering::Relaxed);
                    tracing::info!(url = %redact_url(url), "connected to RabbitMQ");
                    self.set_connection(Some(conn.clone()));
                    return Ok(conn);
                }
                Err(err) => {
                    if nodes > 1 {
                        tracing::debug!(url = %redact_url(url), error = %err, "RabbitMQ node unusable; trying the next");
                    }
                    failure = err;
                }
            }
        }
        Err(failure)
    }

    /// A connection to one node, with the topology declared on it.
    async fn connect_to(
        &self,
        url: &SecretString,
        cluster: bool,
    ) -> Result<Arc<Connection>, BrokerError> {
        let mut props = ConnectionProperties::default()
            .with_connection_name(self.inner.connection_name.clone().into());
        if !cluster {
            // lapin's own recovery rides out a broker restart: reconnect and replay the topology
            // and consumers. Its default backoff grows to a minute between tries; a broker that
            // is back in seconds should find its clients back in seconds. (On a cluster, the
            // other nodes are the way out: see the module's documentation.)
            props = props.enable_auto_recover().configure_backoff(|backoff| {
                backoff
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_delay(Duration::from_secs(2))
                    .with_max_times(150)
                    .with_jitter()
            });
        }
        let conn = tokio::time::timeout(
            self.inner.connect_timeout,
            Connection::connect(url.expose_secret(), props),
        )
        .await
        .map_err(|_| BrokerError::Unavailable)??;
        let conn = Arc::new(conn);
        if let Err(err) = self.declare_topology(&conn).await {
            let _ = conn.close(200, "topology not declared".into()).await;
            return Err(err);
        }
        Ok(conn)
    }

    async fn declare_topology(&self, conn: &Connection) -> Result<(), BrokerError> {
        let topology = &self.inner.topology;
        let channel = conn.create_channel().await?;
        topology.declare_replicated(&channel).await?;
        let _ = channel.close(200, "topology declared".into()).await;
        // The dead-letter queue on a channel of its own: on a cluster, its node may be the one
        // that is down, which must not keep the process off the nodes that are up. RabbitMQ keeps
        // what it dead-letters from quorum queues (at-least-once) until the queue is back.
        let channel = conn.create_channel().await?;
        match topology.declare_dead_letter_queue(&channel).await {
            Ok(()) => {
                let _ = channel.close(200, "topology declared".into()).await;
            }
            Err(err) if is_home_node_down(&err) => {
                tracing::warn!(
                    queue = %topology.dead_letter_queue(),
                    "the dead-letter queue's RabbitMQ node is down; dead letters wait until it is back"
                );
            }
            Err(err) => return Err(err.into()),
        }
        Ok(())
    }

    fn current(&self) -> Option<Arc<Connection>> {
        self.inner.connection.read().expect("connection lock poisoned").clone()
    }

    fn set_connection(&self, conn: Option<Arc<Connection>>) {
        let up = conn.is_some();
        if up {
            self.inner.connections_made.send_modify(|made| *made += 1);
        }
        *self.inner.connection.write().expect("connection lock poisoned") = conn;
        self.inner.connected.send_replace(up);
    }

    /// Keeps the connection up until `shutdown`: connects, watches it, and reconnects with a capped
    /// backoff when it is gone for good (or lapin's recovery has not brought it back within
    /// [`RECOVERY_PATIENCE`]). Returns the task handle.
    pub fn spawn_supervisor(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let broker = self.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            let mut logged_down = false;
            let mut down_since: Option<tokio::time::Instant> = None;
            loop {
                let healthy = match broker.connect().await {
                    Ok(conn) => {
                        backoff = Duration::from_millis(200);
                        logged_down = false;
                        let status = conn.status();
                        let up = status.connected();
                        broker.inner.connected.send_replace(up);
                        if up {
                            down_since = None;
                        } else if down_since.get_or_insert_with(tokio::time::Instant::now).elapsed()
                            > RECOVERY_PATIENCE
                        {
                            tracing::warn!(
                                "RabbitMQ connection still recovering; starting a new one"
                            );
                            broker.abandon(&conn).await;
                            down_since = None;
                        }
                        up || status.reconnecting() || status.connecting()
                    }
                    Err(err) => {
                        if !logged_down {
                            tracing::warn!(error = %err, "RabbitMQ unreachable; retrying in the background");
                            logged_down = true;
                        }
                        false
                    }
                };
                let pause = if healthy { Duration::from_millis(500) } else { backoff };
                if !healthy {
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
            broker.close().await;
        })
    }

    /// Drops `conn` (if it is still the current one) so the next [`Broker::connect`] makes a new
    /// connection.
    async fn abandon(&self, conn: &Arc<Connection>) {
        let _attempt = self.inner.connecting.lock().await;
        if self.current().is_some_and(|current| Arc::ptr_eq(&current, conn)) {
            self.set_connection(None);
            let _ = conn.close(320, "replaced".into()).await;
        }
    }

    /// A new channel on the live connection.
    pub async fn channel(&self) -> Result<Channel, BrokerError> {
        let conn = self.live_connection().await?;
        Ok(conn.create_channel().await?)
    }

    async fn live_connection(&self) -> Result<Arc<Connection>, BrokerError> {
        match self.current() {
            Some(conn) if conn.status().connected() => Ok(conn),
            _ => Err(BrokerError::Unavailable),
        }
    }

    /// Publishes `envelope` by `route` (see [`Broker::publish`]).
    pub async fn send(&self, envelope: &Envelope, route: Route<'_>) -> Result<(), BrokerError> {
        self.publish(Parcel::of(envelope), route).await
    }

    /// Publishes one persistent message by `route`, with publisher confirms and `mandatory`, and
    /// waits for the broker's confirm (at most [`CONFIRM_TIMEOUT`]): `Ok` means the message is
    /// stored in every queue it routes to. The one way gengate publishes.
    pub async fn publish(&self, parcel: Parcel, route: Route<'_>) -> Result<(), BrokerError> {
        let (exchange, parcel) = parcel.route(&self.inner.topology, &route);
        let channel = self.publish_channel().await?;
        let confirmed =
            tokio::time::timeout(CONFIRM_TIMEOUT, Self::publish_on(&channel, &exchange, &parcel))
                .await
                .unwrap_or_else(|_| {
                    Err(BrokerError::NotConfirmed(format!(
                        "no confirm within {} s",
                        CONFIRM_TIMEOUT.as_secs()
                    )))
                });
        match confirmed {
            Ok(Confirmation::Ack(None)) => Ok(()),
            Ok(Confirmation::Ack(Some(_))) => {
                Err(BrokerError::Unroutable { routing_key: parcel.routing_key })
            }
            Ok(Confirmation::Nack(_)) => Err(BrokerError::NotConfirmed("nack".into())),
            Ok(Confirmation::NotRequested) => {
                Err(BrokerError::NotConfirmed("confirms not enabled".into()))
            }
            Err(err) => {
                // The channel is suspect: the next publish opens a new one.
                self.drop_publish_channel(&channel).await;
                Err(err)
            }
        }
    }

    async fn publish_on(
        channel: &Channel,
        exchange: &str,
        parcel: &Parcel,
    ) -> Result<Confirmation, BrokerError> {
        let mut properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_headers(parcel.headers.clone());
        if let Some(id) = &parcel.message_id {
            properties = properties.with_message_id(id.clone().into());
        }
        let confirm = channel
            .basic_publish(
                exchange.into(),
                parcel.routing_key.as_str().into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                &parcel.body,
                properties,
            )
            .await?;
        confirm.await.map_err(|err| BrokerError::NotConfirmed(err.to_string()))
    }

    /// The confirm-mode channel on the live connection. A channel of an earlier connection is not
    /// reused even if it still looks open (see [`Broker::watch_connections_made`]).
    async fn publish_channel(&self) -> Result<Channel, BrokerError> {
        let mut slot = self.inner.publish_channel.lock().await;
        let connection = *self.inner.connections_made.borrow();
        if let Some((made, channel)) = slot.as_ref()
            && *made == connection
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        let channel = self.channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        *slot = Some((connection, channel.clone()));
        Ok(channel)
    }

    async fn drop_publish_channel(&self, failed: &Channel) {
        let mut slot = self.inner.publish_channel.lock().await;
        if slot.as_ref().is_some_and(|(_, c)| c.id() == failed.id()) {
            *slot = None;
        }
    }

    /// Closes the connection (at shutdown); unacknowledged deliveries go back to their queues.
    pub async fn close(&self) {
        self.inner.publish_channel.lock().await.take();
        let conn = self.inner.connection.write().expect("connection lock poisoned").take();
        if let Some(conn) = conn {
            let _ = conn.close(200, "shutting down".into()).await;
        }
        self.inner.connected.send_replace(false);
    }
}
