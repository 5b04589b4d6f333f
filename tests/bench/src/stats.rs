//! Latency samples and what is reported of them: percentiles by nearest rank over the sorted
//! samples (every sample is kept: a bench run records at most a few million), and answers that
//! were not what a scenario expected, counted by status and problem code.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// The `p`-th percentile (0–100) of `sorted` (ascending) by the nearest-rank method: the smallest
/// sample such that at least `p` % of the samples are at most it. `p = 0` is the minimum,
/// `p = 100` the maximum; `None` without samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let p = p.clamp(0.0, 100.0);
    // p × n first: exact for whole percentages, where p / 100 × n may land a hair above a rank.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "p is clamped to [0, 100]: the rank is between 0 and the sample count"
    )]
    let rank = (p * sorted.len() as f64 / 100.0).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Latency figures of one measured operation, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
    /// Arithmetic mean.
    pub mean_ms: f64,
}

impl LatencySummary {
    /// Summarizes `samples` (any order; sorted in place).
    pub fn from_samples(samples: &mut [Duration]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let ms = |p: f64| percentile(samples, p).map_or(0.0, as_ms);
        let total: Duration = samples.iter().sum();
        Self {
            count: samples.len() as u64,
            p50_ms: ms(50.0),
            p90_ms: ms(90.0),
            p99_ms: ms(99.0),
            max_ms: ms(100.0),
            mean_ms: as_ms(total) / samples.len() as f64,
        }
    }
}

/// Milliseconds with microsecond resolution.
pub fn as_ms(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

/// Answers a scenario did not expect (any status but the one it measures), by status and the
/// problem+json `code`, plus requests that got no answer at all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Unexpected {
    by_status: BTreeMap<(u16, String), u64>,
    transport_errors: u64,
    first_transport_error: Option<String>,
}

/// One line of [`Unexpected`] as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnexpectedLine {
    /// HTTP status.
    pub status: u16,
    /// The problem `code` of the body, or `-` when it had none.
    pub code: String,
    /// How many.
    pub count: u64,
}

impl Unexpected {
    /// Counts one answer with `status` whose body said `code` (if it was a problem).
    pub fn answer(&mut self, status: u16, code: Option<&str>) {
        *self.by_status.entry((status, code.unwrap_or("-").to_owned())).or_default() += 1;
    }

    /// Counts one request that failed without an answer (connect error, timeout, reset).
    pub fn transport_error(&mut self, error: &str) {
        self.transport_errors += 1;
        self.first_transport_error.get_or_insert_with(|| error.to_owned());
    }

    /// Adds another client's counts.
    pub fn merge(&mut self, other: Unexpected) {
        for (key, count) in other.by_status {
            *self.by_status.entry(key).or_default() += count;
        }
        self.transport_errors += other.transport_errors;
        if self.first_transport_error.is_none() {
            self.first_transport_error = other.first_transport_error;
        }
    }

    /// Unexpected answers and failed requests together.
    pub fn total(&self) -> u64 {
        self.by_status.values().sum::<u64>() + self.transport_errors
    }

    /// The answers by status and code, most frequent first.
    pub fn lines(&self) -> Vec<UnexpectedLine> {
        let mut lines: Vec<UnexpectedLine> = self
            .by_status
            .iter()
            .map(|((status, code), count)| UnexpectedLine {
                status: *status,
                code: code.clone(),
                count: *count,
            })
            .collect();
        lines.sort_by(|a, b| b.count.cmp(&a.count).then(a.status.cmp(&b.status)));
        lines
    }

    /// Requests without an answer.
    pub fn transport_errors(&self) -> u64 {
        self.transport_errors
    }

    /// The first transport error seen, for the report.
    pub fn first_transport_error(&self) -> Option<&str> {
        self.first_transport_error.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|v| Duration::from_millis(*v)).collect()
    }

    #[test]
    fn nearest_rank_percentiles_of_one_to_a_hundred() {
        let samples = ms(&(1..=100).collect::<Vec<_>>());
        assert_eq!(percentile(&samples, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&samples, 90.0), Some(Duration::from_millis(90)));
        assert_eq!(percentile(&samples, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&samples, 99.5), Some(Duration::from_millis(100)));
        assert_eq!(percentile(&samples, 100.0), Some(Duration::from_millis(100)));
        assert_eq!(percentile(&samples, 0.0), Some(Duration::from_millis(1)));
    }

    #[test]
    fn percentiles_of_few_samples_are_samples() {
        let samples = ms(&[10, 20, 30, 40]);
        // 50 % of 4 is 2 samples: the second.
        assert_eq!(percentile(&samples, 50.0), Some(Duration::from_millis(20)));
        // Anything above 75 % needs all four.
        assert_eq!(percentile(&samples, 76.0), Some(Duration::from_millis(40)));
        assert_eq!(percentile(&samples, 99.0), Some(Duration::from_millis(40)));
        assert_eq!(percentile(&ms(&[7]), 50.0), Some(Duration::from_millis(7)));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn out_of_range_percentiles_are_clamped() {
        let samples = ms(&[1, 2, 3]);
        assert_eq!(percentile(&samples, -5.0), Some(Duration::from_millis(1)));
        assert_eq!(percentile(&samples, 250.0), Some(Duration::from_millis(3)));
    }

    #[test]
    fn summary_sorts_its_samples() {
        let mut samples = ms(&[30, 10, 20, 40]);
        let summary = LatencySummary::from_samples(&mut samples);
        assert_eq!(summary.count, 4);
        assert_eq!(summary.p50_ms, 20.0);
        assert_eq!(summary.p90_ms, 40.0);
        assert_eq!(summary.max_ms, 40.0);
        assert_eq!(summary.mean_ms, 25.0);
        assert_eq!(LatencySummary::from_samples(&mut []), LatencySummary::default());
    }

    #[test]
    fn summary_keeps_microseconds() {
        let mut samples = vec![Duration::from_micros(1_234)];
        assert_eq!(LatencySummary::from_samples(&mut samples).p50_ms, 1.234);
    }

    #[test]
    fn unexpected_answers_are_counted_by_status_and_code() {
        let mut a = Unexpected::default();
        a.answer(429, Some("rate_limited"));
        a.answer(429, Some("rate_limited"));
        a.answer(500, None);
        let mut b = Unexpected::default();
        b.answer(429, Some("too_many_in_flight"));
        b.answer(429, Some("rate_limited"));
        b.transport_error("connection refused");
        a.merge(b);
        assert_eq!(a.total(), 6);
        assert_eq!(a.transport_errors(), 1);
        assert_eq!(a.first_transport_error(), Some("connection refused"));
        assert_eq!(
            a.lines(),
            vec![
                UnexpectedLine { status: 429, code: "rate_limited".into(), count: 3 },
                UnexpectedLine { status: 429, code: "too_many_in_flight".into(), count: 1 },
                UnexpectedLine { status: 500, code: "-".into(), count: 1 },
            ]
        );
    }
}
