//! A private RabbitMQ namespace per test: a unique `amqp.prefix`, so parallel tests never share an
//! exchange or a queue. Everything under the prefix is deleted when the test ends.

use gengate_shared::config::{AmqpSettings, Settings};
use gengate_shared::queue::{Broker, Topology};
use lapin::options::{BasicGetOptions, ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};
use uuid::Uuid;

/// Broker URL for tests; override with `GENGATE_TEST_AMQP_URL`.
pub fn amqp_url() -> String {
    std::env::var("GENGATE_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// The delay tiers of test stacks: short, so retries and polls come back within a test.
pub const TEST_DELAY_TIERS_MS: &str = "1000,2000,5000";

/// A test's broker namespace.
#[derive(Debug)]
pub struct TestBroker {
    /// What the test's processes are given (prefix, URL, delay tiers).
    settings: AmqpSettings,
    topology: Topology,
    /// The broker's nodes: the machine's broker ([`amqp_url`]), or a cluster's.
    urls: Vec<String>,
}

impl TestBroker {
    /// A fresh, unique prefix with the test delay tiers (nothing is declared until a process or
    /// [`TestBroker::broker`] connects).
    pub fn new() -> Self {
        Self::with_delay_tiers(TEST_DELAY_TIERS_MS)
    }

    /// A fresh, unique prefix whose processes use these delay tiers (`GENGATE__AMQP__DELAY_TIERS_MS`
    /// syntax), so that every tier queue they declare is deleted at the end too.
    pub fn with_delay_tiers(delay_tiers_ms: &str) -> Self {
        Self::on_nodes(delay_tiers_ms, &[], None)
    }

    /// [`TestBroker::with_delay_tiers`] on the nodes of a cluster (`amqp.urls`; none: the
    /// machine's broker), its quorum queues declared with `quorum_initial_group_size` replicas.
    pub fn on_nodes(
        delay_tiers_ms: &str,
        urls: &[String],
        quorum_initial_group_size: Option<u32>,
    ) -> Self {
        let prefix = format!("t{}", &Uuid::now_v7().simple().to_string()[20..]);
        let mut vars = std::collections::BTreeMap::new();
        vars.insert("GENGATE__AMQP__PREFIX".to_owned(), prefix);
        vars.insert("GENGATE__AMQP__URL".to_owned(), amqp_url());
        if !urls.is_empty() {
            vars.insert("GENGATE__AMQP__URLS".to_owned(), urls.join(","));
        }
        if let Some(size) = quorum_initial_group_size {
            vars.insert("GENGATE__AMQP__QUORUM_INITIAL_GROUP_SIZE".to_owned(), size.to_string());
        }
        vars.insert("GENGATE__AMQP__DELAY_TIERS_MS".to_owned(), delay_tiers_ms.to_owned());
        let settings = Settings::load_from(None, Some(vars)).expect("test settings").amqp;
        let urls = if urls.is_empty() { vec![amqp_url()] } else { urls.to_vec() };
        Self { topology: Topology::from_settings(&settings), settings, urls }
    }

    /// The prefix to give the processes under test (`GENGATE__AMQP__PREFIX`).
    pub fn prefix(&self) -> &str {
        &self.settings.prefix
    }

    /// The names under this prefix.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// A connected [`Broker`] on this namespace (declares the topology), for publishing or
    /// inspecting from the test itself.
    pub async fn broker(&self) -> Broker {
        let broker = Broker::new(&self.settings, "gengate-test");
        broker.connect().await.expect("connect to RabbitMQ for tests");
        broker
    }

    /// Publishes a message to the namespace's exchange (with confirms), as gengate would.
    pub async fn publish(&self, envelope: &gengate_shared::queue::Envelope) {
        let broker = self.broker().await;
        broker.send(envelope, gengate_shared::queue::Route::Now).await.expect("publish");
        broker.close().await;
    }

    /// Takes every message currently in `queue` (acknowledging them), bodies parsed as JSON.
    pub async fn drain(&self, queue: &str) -> Vec<serde_json::Value> {
        let conn = connect_any(&self.urls).await.expect("connect");
        let channel = conn.create_channel().await.expect("channel");
        let mut bodies = Vec::new();
        while let Some(message) = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
        {
            bodies.push(serde_json::from_slice(&message.delivery.data).expect("JSON message body"));
        }
        let _ = conn.close(200, "done".into()).await;
        bodies
    }
}

impl Default for TestBroker {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let queues = self.topology.all_queues();
        let exchanges = self.topology.all_exchanges();
        let urls = self.urls.clone();
        let _ = std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async move {
                let conn = connect_any(&urls).await?;
                for queue in queues {
                    // A channel closes on a failed delete (queue never declared); use one each.
                    let channel = conn.create_channel().await.ok()?;
                    let _ = channel.queue_delete(queue.into(), QueueDeleteOptions::default()).await;
                }
                for exchange in exchanges {
                    let channel = conn.create_channel().await.ok()?;
                    let _ = channel
                        .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
                        .await;
                }
                let _ = conn.close(200, "test done".into()).await;
                Some(())
            })
        })
        .join();
    }
}

/// A plain connection to the first of `urls` that answers.
async fn connect_any(urls: &[String]) -> Option<Connection> {
    for url in urls {
        if let Ok(conn) = Connection::connect(url, ConnectionProperties::default()).await {
            return Some(conn);
        }
    }
    None
}
