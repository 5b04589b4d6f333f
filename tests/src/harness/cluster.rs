//! A three-node RabbitMQ cluster on this machine for one test, through `deploy/dev cluster` (nodes
//! gengate-c1..3@localhost, AMQP ports 5701-5703, data under `.run/cluster/`), beside the machine's
//! own broker, which every other test keeps using. Dropping it stops the nodes and deletes their
//! data, also when the test fails.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

/// The nodes `deploy/dev cluster up` starts.
pub const NODES: usize = 3;
/// AMQP port of node 1 (`GENGATE_DEV_CLUSTER_PORT`'s default); node `n` listens on this + n − 1.
const FIRST_PORT: u16 = 5701;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/dev")
}

/// Runs `deploy/dev cluster ARGS…` (blocking; every call takes seconds at most, `up` about 20 s)
/// and returns its standard output, or panics with what it printed.
fn cluster(args: &[&str]) -> String {
    let output = Command::new(script())
        .arg("cluster")
        .args(args)
        .env_remove("GENGATE_DEV_CLUSTER_PORT")
        .stdin(Stdio::null())
        .output()
        .expect("run deploy/dev cluster");
    assert!(
        output.status.success(),
        "deploy/dev cluster {args:?} exited with {}: {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A running three-node cluster (see the module's documentation).
#[derive(Debug)]
pub struct RabbitCluster {
    _private: (),
}

impl RabbitCluster {
    /// Starts the cluster afresh (a cluster left behind by an earlier run is deleted first) and
    /// waits until its three nodes run as one.
    pub async fn start() -> Self {
        tokio::task::spawn_blocking(|| {
            cluster(&["down", "--no-stack"]);
            cluster(&["up", "--no-stack"]);
        })
        .await
        .expect("deploy/dev cluster up");
        Self { _private: () }
    }

    /// The AMQP URL of node `n` (1-based).
    pub fn url(&self, n: usize) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", Self::port(n))
    }

    /// Every node's URL, node 1 first.
    pub fn urls(&self) -> Vec<String> {
        (1..=NODES).map(|n| self.url(n)).collect()
    }

    /// The AMQP port of node `n`.
    pub fn port(n: usize) -> u16 {
        FIRST_PORT + u16::try_from(n - 1).expect("a node number")
    }

    /// The node (1-based) listening on AMQP port `port`, if one of this cluster's.
    pub fn node_of_port(port: u16) -> Option<usize> {
        (1..=NODES).find(|n| Self::port(*n) == port)
    }

    /// Stops node `n`'s application (`rabbitmqctl stop_app`): its connections drop, its port
    /// refuses new ones, its quorum queue replicas leave (leaders move to the other nodes).
    pub async fn stop_node(&self, n: usize) {
        let n = n.to_string();
        tokio::task::spawn_blocking(move || cluster(&["stop-node", &n])).await.expect("stop-node");
    }

    /// Kills node `n`'s Erlang VM (SIGKILL): its connections and its links to the other nodes
    /// break at once, as when a machine dies. [`RabbitCluster::start_node`] boots it again, and
    /// it rejoins the cluster from its data.
    pub async fn kill_node(&self, n: usize) {
        let n = n.to_string();
        tokio::task::spawn_blocking(move || cluster(&["kill-node", &n])).await.expect("kill-node");
    }

    /// Starts node `n` again (its application, or its VM if it was killed) and waits until it
    /// runs.
    pub async fn start_node(&self, n: usize) {
        let n = n.to_string();
        tokio::task::spawn_blocking(move || cluster(&["start-node", &n]))
            .await
            .expect("start-node");
    }

    /// `rabbitmqctl ARGS… --formatter json` against node `n`, parsed.
    pub async fn ctl_json(&self, n: usize, args: &[&str]) -> Value {
        let mut all: Vec<String> = vec!["ctl".into(), n.to_string(), "-q".into()];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        all.extend(["--formatter".into(), "json".into()]);
        let out = tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            cluster(&refs)
        })
        .await
        .expect("cluster ctl");
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("rabbitmqctl printed no JSON ({e}): {out}"))
    }

    /// How many connections named `connection_name` each node (1-based) holds, asked of node
    /// `via` (any running node sees the whole cluster's).
    pub async fn connections_per_node(&self, via: usize, connection_name: &str) -> [usize; NODES] {
        let list = self.ctl_json(via, &["list_connections", "port", "client_properties"]).await;
        let mut counts = [0; NODES];
        for connection in list.as_array().into_iter().flatten() {
            let named = connection["client_properties"].to_string().contains(connection_name);
            let port = connection["port"].as_u64().and_then(|p| u16::try_from(p).ok());
            if let (true, Some(node)) = (named, port.and_then(Self::node_of_port)) {
                counts[node - 1] += 1;
            }
        }
        counts
    }

    /// `(members, online members)` of every quorum queue, by name, asked of node `via`.
    pub async fn quorum_members(&self, via: usize) -> BTreeMap<String, (usize, usize)> {
        let list = self.ctl_json(via, &["list_queues", "name", "type", "members", "online"]).await;
        let count = |queue: &Value, key: &str| queue[key].as_array().map_or(0, Vec::len);
        list.as_array()
            .into_iter()
            .flatten()
            .filter(|queue| queue["type"] == "quorum")
            .filter_map(|queue| {
                let name = queue["name"].as_str()?.to_owned();
                Some((name, (count(queue, "members"), count(queue, "online"))))
            })
            .collect()
    }
}

impl Drop for RabbitCluster {
    fn drop(&mut self) {
        let stopped = Command::new(script())
            .args(["cluster", "down", "--no-stack"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status();
        if !stopped.is_ok_and(|s| s.success()) {
            eprintln!("deploy/dev cluster down failed: stop the nodes gengate-c1..3 by hand");
        }
    }
}
