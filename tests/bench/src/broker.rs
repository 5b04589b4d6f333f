//! What RabbitMQ carried: messages published to gengate's queues, and how many wait in them, from
//! the broker's Prometheus endpoint (plugin `rabbitmq_prometheus`, port 15692, which
//! `deploy/dev` enables).
//!
//! The counts come from `GET /metrics/detailed?family=channel_queue_exchange_metrics`:
//! `rabbitmq_detailed_queue_messages_published_total`, one series per (channel, queue,
//! exchange), read straight from the broker's counters at the moment of the request. The
//! management plugin's HTTP API (`message_stats.publish`) has the same counts, but aggregated only
//! every `collect_statistics_interval` (5 s): up to 5 s of a window would land in the next one.
//!
//! A message counts once per queue it is routed to, when a client publishes it; a delayed message
//! counts once, into its delay tier's queue (expiring there and moving on to its work queue is
//! dead-lettering, not a publish). A channel's series disappears when the channel closes, so a
//! channel that closes inside a window takes its share of that window with it: see
//! [`published_between`].

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;

/// The default port of `rabbitmq_prometheus`.
pub const PROMETHEUS_PORT: u16 = 15692;

const PUBLISHED: &str = "rabbitmq_detailed_queue_messages_published_total";
const DEPTH: &str = "rabbitmq_detailed_queue_messages";

/// One sample of the Prometheus text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric's name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// Parses the Prometheus text exposition format (version 0.0.4): `# HELP` and `# TYPE` lines and
/// blank lines are skipped, label values are unescaped (`\\`, `\"`, `\n`), and an optional
/// timestamp after the value is ignored. Lines that do not parse are skipped.
pub fn parse_prometheus(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = line[..name_end].to_owned();
    let mut rest = line[name_end..].trim_start();
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(inner)?;
        labels = parsed;
        rest = after;
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some(Sample { name, labels, value })
}

/// `a="x",b="y\"z"}` → the labels and what follows the `}`.
fn parse_labels(mut text: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        text = text.trim_start_matches([' ', ',']);
        if let Some(after) = text.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = text.find('=')?;
        let key = text[..eq].trim().to_owned();
        text = text[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = text.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(key, value);
        text = &text[end + 1..];
    }
}

/// The broker's counters at one moment, for the queues whose names start with the prefix.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BrokerCounters {
    /// Messages published, by (channel, queue, exchange).
    pub published: BTreeMap<(String, String, String), u64>,
    /// Messages in each queue (ready and unacknowledged), as the queues last reported them
    /// (quorum queues report on their tick, every few seconds).
    pub depth: BTreeMap<String, u64>,
}

impl BrokerCounters {
    /// Reads the counters of queues named `{prefix}.…` out of a scrape.
    pub fn from_samples(samples: &[Sample], prefix: &str) -> Self {
        fn ours<'a>(labels: &'a BTreeMap<String, String>, prefix: &str) -> Option<&'a String> {
            labels
                .get("queue")
                .filter(|q| q.strip_prefix(prefix).is_some_and(|r| r.starts_with('.')))
        }
        let count = |value: f64| {
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "a message count: a whole, non-negative number well inside u64"
            )]
            let n = value.max(0.0).round() as u64;
            n
        };
        let mut counters = Self::default();
        for sample in samples {
            let Some(queue) = ours(&sample.labels, prefix) else {
                continue;
            };
            if sample.name == PUBLISHED {
                let label = |key: &str| sample.labels.get(key).cloned().unwrap_or_default();
                let key = (label("channel"), queue.clone(), label("exchange"));
                *counters.published.entry(key).or_default() += count(sample.value);
            } else if sample.name == DEPTH {
                *counters.depth.entry(queue.clone()).or_default() += count(sample.value);
            }
        }
        counters
    }

    /// Every message published so far, over the queues and channels.
    pub fn published_total(&self) -> u64 {
        self.published.values().sum()
    }

    /// Messages waiting in the queues, but for the dead-letter queue (which keeps what it gets).
    pub fn waiting(&self) -> Waiting {
        let mut waiting = Waiting::default();
        for (queue, n) in &self.depth {
            if queue.contains(".delay.") {
                waiting.delayed += n;
            } else if !queue.ends_with(".dlq") {
                waiting.work += n;
            }
        }
        waiting
    }
}

/// Messages waiting in the stack's queues.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Waiting {
    /// In the work queues (`jobs`, `events`, `poll`, `archive`): the workers take them as fast as
    /// they can.
    pub work: u64,
    /// In the delay tiers (`delay.{ms}ms`): each comes out when its delay ends (up to minutes).
    pub delayed: u64,
}

/// Messages published between two reads, by queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    /// By queue.
    pub by_queue: BTreeMap<String, u64>,
    /// Channels whose series were gone by the end: they closed inside the window, and what they
    /// published after the first read is not counted.
    pub channels_closed: u32,
}

impl Published {
    /// Over every queue.
    pub fn total(&self) -> u64 {
        self.by_queue.values().sum()
    }
}

/// What was published between `start` and `end`: per series, the growth; a series that is new
/// at the end (a channel opened inside the window) counts whole.
pub fn published_between(start: &BrokerCounters, end: &BrokerCounters) -> Published {
    let mut published = Published::default();
    for (key, now) in &end.published {
        let before = start.published.get(key).copied().unwrap_or(0);
        *published.by_queue.entry(key.1.clone()).or_default() += now.saturating_sub(before);
    }
    let mut closed: Vec<&str> = start
        .published
        .keys()
        .filter(|key| !end.published.contains_key(*key))
        .map(|(channel, _, _)| channel.as_str())
        .collect();
    closed.dedup();
    published.channels_closed = u32::try_from(closed.len()).unwrap_or(u32::MAX);
    published
}

/// `http://HOST:15692` for the broker of an `amqp://` or `amqps://` URL.
pub fn metrics_url_for(amqp_url: &str) -> Option<String> {
    let url = url::Url::parse(amqp_url).ok()?;
    if !matches!(url.scheme(), "amqp" | "amqps") {
        return None;
    }
    let host = url.host_str().filter(|h| !h.is_empty()).unwrap_or("localhost");
    Some(format!("http://{host}:{PROMETHEUS_PORT}"))
}

/// Reads the broker's Prometheus endpoint.
#[derive(Debug, Clone)]
pub struct BrokerMetrics {
    http: reqwest::Client,
    url: String,
    prefix: String,
}

impl BrokerMetrics {
    /// Reads `{base}/metrics/detailed` for the queues named `{prefix}.…`.
    pub fn new(base: &str, prefix: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .context("building the HTTP client for the broker's metrics")?;
        Ok(Self {
            http,
            url: format!(
                "{}/metrics/detailed?family=channel_queue_exchange_metrics&family=queue_coarse_metrics",
                base.trim_end_matches('/')
            ),
            prefix: prefix.to_owned(),
        })
    }

    /// Where the counters are read.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The counters now.
    pub async fn read(&self) -> anyhow::Result<BrokerCounters> {
        let response =
            self.http.get(&self.url).send().await.with_context(|| {
                format!("reaching {} (is rabbitmq_prometheus enabled?)", self.url)
            })?;
        let status = response.status();
        let text = response.text().await.with_context(|| format!("reading {}", self.url))?;
        anyhow::ensure!(status.is_success(), "{} answered {status}", self.url);
        Ok(BrokerCounters::from_samples(&parse_prometheus(&text), &self.prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // As rabbitmq_prometheus 3.10 answers /metrics/detailed for the two families (shortened).
    const SCRAPE: &str = r#"# TYPE rabbitmq_detailed_queue_messages_ready gauge
# HELP rabbitmq_detailed_queue_messages_ready Messages ready to be delivered to consumers
rabbitmq_detailed_queue_messages_ready{vhost="/",queue="gengate.jobs"} 3
rabbitmq_detailed_queue_messages_ready{vhost="/",queue="gengate.dlq"} 7
# TYPE rabbitmq_detailed_queue_messages gauge
# HELP rabbitmq_detailed_queue_messages Sum of ready and unacknowledged messages - total queue depth
rabbitmq_detailed_queue_messages{vhost="/",queue="gengate.jobs"} 5
rabbitmq_detailed_queue_messages{vhost="/",queue="gengate.delay.5000ms"} 2
rabbitmq_detailed_queue_messages{vhost="/",queue="gengate.dlq"} 7
rabbitmq_detailed_queue_messages{vhost="/",queue="gengate_test_1a2b.jobs"} 40
# TYPE rabbitmq_detailed_queue_messages_published_total counter
# HELP rabbitmq_detailed_queue_messages_published_total Total number of messages published to queues
rabbitmq_detailed_queue_messages_published_total{channel="<0.1203.0>",queue_vhost="/",queue="gengate.jobs",exchange_vhost="/",exchange="gengate"} 1200
rabbitmq_detailed_queue_messages_published_total{channel="<0.1203.0>",queue_vhost="/",queue="gengate.archive",exchange_vhost="/",exchange="gengate"} 1.1e3
rabbitmq_detailed_queue_messages_published_total{channel="<0.1310.0>",queue_vhost="/",queue="gengate.delay.5000ms",exchange_vhost="/",exchange="gengate.delay"} 950
rabbitmq_detailed_queue_messages_published_total{channel="<0.1310.0>",queue_vhost="/",queue="gengate_test_1a2b.jobs",exchange_vhost="/",exchange="gengate_test_1a2b"} 77
rabbitmq_detailed_queue_messages_published_total{channel="<0.1400.0>",queue_vhost="/",queue="other.jobs",exchange_vhost="/",exchange="other"} 5
"#;

    fn key(channel: &str, queue: &str, exchange: &str) -> (String, String, String) {
        (channel.into(), queue.into(), exchange.into())
    }

    #[test]
    fn parses_names_labels_and_values() {
        let samples = parse_prometheus(SCRAPE);
        assert_eq!(samples.len(), 11);
        assert_eq!(samples[0].name, "rabbitmq_detailed_queue_messages_ready");
        assert_eq!(samples[0].labels["queue"], "gengate.jobs");
        assert_eq!(samples[0].value, 3.0);
        assert_eq!(samples[7].labels["channel"], "<0.1203.0>");
        assert_eq!(samples[7].value, 1100.0);
    }

    #[test]
    fn escapes_timestamps_and_odd_lines() {
        let samples = parse_prometheus(
            "plain 4\nwith_ts{a=\"1\"} 2.5 1700000000000\n\
             esc{path=\"C:\\\\x\", say=\"a \\\"b\\\"\\nc\"} 1\n\
             spaced { a = \"1\" , b=\"2\" , } +Inf\nbroken{a=\"1\" 3\nnovalue\n# comment 5\n",
        );
        let by_name: BTreeMap<&str, &Sample> =
            samples.iter().map(|s| (s.name.as_str(), s)).collect();
        assert_eq!(samples.len(), 4, "{samples:?}");
        assert_eq!(by_name["plain"].value, 4.0);
        assert_eq!(by_name["with_ts"].value, 2.5);
        assert_eq!(by_name["esc"].labels["path"], "C:\\x");
        assert_eq!(by_name["esc"].labels["say"], "a \"b\"\nc");
        assert_eq!(by_name["spaced"].labels.len(), 2);
        assert_eq!(by_name["spaced"].value, f64::INFINITY);
    }

    #[test]
    fn keeps_the_queues_of_the_prefix_only() {
        let counters = BrokerCounters::from_samples(&parse_prometheus(SCRAPE), "gengate");
        assert_eq!(
            counters.published,
            BTreeMap::from([
                (key("<0.1203.0>", "gengate.archive", "gengate"), 1100),
                (key("<0.1203.0>", "gengate.jobs", "gengate"), 1200),
                (key("<0.1310.0>", "gengate.delay.5000ms", "gengate.delay"), 950),
            ])
        );
        assert_eq!(counters.published_total(), 3250);
        assert_eq!(counters.depth["gengate.jobs"], 5);
        // The dead-letter queue keeps what it gets: not waiting work.
        assert_eq!(counters.waiting(), Waiting { work: 5, delayed: 2 });
    }

    #[test]
    fn counts_growth_new_channels_and_closed_ones() {
        let start = BrokerCounters {
            published: BTreeMap::from([
                (key("<0.1.0>", "gengate.jobs", "gengate"), 100),
                (key("<0.2.0>", "gengate.events", "gengate"), 50),
                (key("<0.2.0>", "gengate.poll", "gengate"), 10),
            ]),
            depth: BTreeMap::new(),
        };
        let end = BrokerCounters {
            published: BTreeMap::from([
                (key("<0.1.0>", "gengate.jobs", "gengate"), 130),
                (key("<0.3.0>", "gengate.events", "gengate"), 12),
            ]),
            depth: BTreeMap::new(),
        };
        let published = published_between(&start, &end);
        assert_eq!(
            published.by_queue,
            BTreeMap::from([("gengate.events".into(), 12), ("gengate.jobs".into(), 30)])
        );
        assert_eq!(published.total(), 42);
        assert_eq!(published.channels_closed, 1);
    }

    #[test]
    fn the_metrics_url_follows_the_amqp_host() {
        assert_eq!(
            metrics_url_for("amqp://guest:guest@127.0.0.1:5672/%2f").as_deref(),
            Some("http://127.0.0.1:15692")
        );
        assert_eq!(
            metrics_url_for("amqps://u:p@broker.internal/vh").as_deref(),
            Some("http://broker.internal:15692")
        );
        assert_eq!(metrics_url_for("http://127.0.0.1:5672"), None);
        assert_eq!(metrics_url_for("not a url"), None);
    }
}
