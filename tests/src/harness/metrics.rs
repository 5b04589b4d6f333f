//! Reading what a process's Prometheus metrics say, as an operator's dashboard would.

use crate::TestApp;

impl TestApp {
    /// The API's metrics (served on its operations listener), as text.
    pub async fn api_metrics(&self) -> String {
        metrics_at(&self.http, &self.ops_url).await
    }

    /// Worker `index`'s metrics, as text.
    pub async fn worker_metrics(&self, index: usize) -> String {
        metrics_at(&self.http, &self.workers[index].url).await
    }
}

async fn metrics_at(http: &reqwest::Client, base: &str) -> String {
    let response = http.get(format!("{base}/metrics")).send().await.expect("GET /metrics");
    assert_eq!(response.status(), 200, "{base}/metrics");
    response.text().await.expect("metrics text")
}

/// The value of one series, written as rendered (`name` or `name{label="value"}`); 0 if the
/// series is not there yet (a counter appears with its first increment).
pub fn metric_value(text: &str, series: &str) -> u64 {
    sum_lines(text, |rest| rest.starts_with(' ') && rest.len() > 1, series)
}

/// The sum of every series of the metric `name`, whatever their labels; 0 if there is none.
pub fn metric_total(text: &str, name: &str) -> u64 {
    sum_lines(text, |rest| rest.starts_with('{') || rest.starts_with(' '), name)
}

fn sum_lines(text: &str, follows: impl Fn(&str) -> bool, prefix: &str) -> u64 {
    text.lines()
        .filter(|line| line.strip_prefix(prefix).is_some_and(&follows))
        .map(|line| {
            let value = line.rsplit(' ').next().unwrap_or_default();
            value.parse::<u64>().unwrap_or_else(|_| panic!("not a whole number: {line}"))
        })
        .sum()
}
