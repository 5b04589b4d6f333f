//! The closed loop every request-rate scenario uses: `concurrency` clients, each sending its next
//! request as soon as the previous one answered (or, paced, at its next arrival), until the window
//! closes.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::client::Answer;
use super::progress::{self, Ticker};
use super::stats::{LatencySummary, Unexpected, UnexpectedLine};

/// Pause after a request that got no answer.
pub const TRANSPORT_ERROR_PAUSE: Duration = Duration::from_millis(10);

/// What a closed loop measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoopReport {
    /// Concurrent clients.
    pub concurrency: usize,
    /// The planned window, in seconds.
    pub window_s: f64,
    /// From the first request to the last answer, in seconds.
    pub elapsed_s: f64,
    /// Requests sent.
    pub requests: u64,
    /// Requests answered with the expected status.
    pub ok: u64,
    /// `ok` per second of `elapsed_s`.
    pub ok_per_s: f64,
    /// Latency of the requests answered with the expected status.
    pub latency: LatencySummary,
    /// Answers with any other status, by status and problem code. Should be empty.
    pub unexpected: Vec<UnexpectedLine>,
    /// Requests that got no answer at all.
    pub transport_errors: u64,
    /// The first transport error, if any.
    pub first_transport_error: Option<String>,
    /// The run was stopped early (Ctrl-C).
    pub interrupted: bool,
}

impl LoopReport {
    /// Unexpected answers plus transport errors.
    pub fn unexpected_total(&self) -> u64 {
        self.unexpected.iter().map(|l| l.count).sum::<u64>() + self.transport_errors
    }
}

#[derive(Default)]
struct ClientTally {
    requests: u64,
    latencies: Vec<Duration>,
    unexpected: Unexpected,
}

/// When a paced client sends its requests: a Poisson process (independent exponential gaps of a
/// given mean), the usual model of requests from many independent users. Even gaps would lock
/// the client in step with whatever else runs on a fixed period (the simulator's tasks take a
/// fixed 200 ms), so that every request met the same part of it.
struct Arrivals {
    next: Instant,
    mean: Duration,
    rng: rand::rngs::StdRng,
}

impl Arrivals {
    fn new(start: Instant, mean: Duration, seed: u64) -> Self {
        use rand::SeedableRng;
        Self { next: start, mean, rng: rand::rngs::StdRng::seed_from_u64(seed) }
    }

    /// The time of the next request (the first is at the start).
    fn next(&mut self) -> Instant {
        use rand::Rng;
        let at = self.next;
        // Inverse transform: -ln(U) × mean, U in (0, 1].
        let u: f64 = 1.0 - self.rng.random::<f64>();
        self.next += self.mean.mul_f64(-u.ln());
        at
    }
}

/// Runs `concurrency` clients for `window`; client `c` sends its `n`-th request as
/// `request(c, n)`, and an answer counts when its status is `expected`. With a `pace`, a client
/// sends its requests at the times of [`Arrivals`] with that mean gap (a light load, whose
/// latency is not the machine's saturation), or as soon as the previous one answered if that is
/// later; without, always as soon as the previous one answered. `stop` ends the loop early.
pub async fn closed_loop<F, Fut>(
    label: &str,
    concurrency: usize,
    window: Duration,
    pace: Option<Duration>,
    expected: u16,
    stop: &CancellationToken,
    request: F,
) -> LoopReport
where
    F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Answer, reqwest::Error>> + Send,
{
    let ok_count = Arc::new(AtomicU64::new(0));
    let ticker = Ticker::start(progress::timed_bar(label, window), Some(ok_count.clone()), "ok");
    let start = Instant::now();
    let deadline = start + window;
    let clients: Vec<_> = (0..concurrency)
        .map(|client| {
            let request = request.clone();
            let ok_count = ok_count.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut tally = ClientTally::default();
                let mut arrivals = pace.map(|mean| Arrivals::new(start, mean, client as u64));
                while Instant::now() < deadline && !stop.is_cancelled() {
                    let n = tally.requests;
                    if let Some(arrivals) = &mut arrivals {
                        let slot = arrivals.next();
                        if slot >= deadline {
                            break;
                        }
                        tokio::select! {
                            _ = tokio::time::sleep_until(slot.into()) => {}
                            _ = stop.cancelled() => break,
                        }
                    }
                    tally.requests += 1;
                    match request(client, n).await {
                        Ok(answer) if answer.status == expected => {
                            tally.latencies.push(answer.latency);
                            ok_count.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(answer) => {
                            tally.unexpected.answer(answer.status, answer.problem_code().as_deref())
                        }
                        Err(error) => {
                            tally.unexpected.transport_error(&error_chain(&error));
                            // A refused connection fails at once; do not spin on it.
                            tokio::time::sleep(TRANSPORT_ERROR_PAUSE).await;
                        }
                    }
                }
                tally
            })
        })
        .collect();
    let mut requests = 0;
    let mut latencies = Vec::new();
    let mut unexpected = Unexpected::default();
    for client in clients {
        // A panicking client is a bench bug; let it show.
        let tally = client.await.expect("bench client panicked");
        requests += tally.requests;
        latencies.extend(tally.latencies);
        unexpected.merge(tally.unexpected);
    }
    let elapsed = start.elapsed();
    ticker.finish().await;
    let ok = latencies.len() as u64;
    LoopReport {
        concurrency,
        window_s: window.as_secs_f64(),
        elapsed_s: elapsed.as_secs_f64(),
        requests,
        ok,
        ok_per_s: ok as f64 / elapsed.as_secs_f64().max(f64::EPSILON),
        latency: LatencySummary::from_samples(&mut latencies),
        unexpected: unexpected.lines(),
        transport_errors: unexpected.transport_errors(),
        first_transport_error: unexpected.first_transport_error().map(str::to_owned),
        interrupted: stop.is_cancelled(),
    }
}

/// An error with its causes, on one line (reqwest's own message is often just "error sending
/// request").
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answered() -> Result<Answer, reqwest::Error> {
        Ok(Answer { status: 200, latency: Duration::from_micros(10), body: Default::default() })
    }

    #[test]
    fn arrivals_average_their_mean_gap() {
        let start = Instant::now();
        let mut arrivals = Arrivals::new(start, Duration::from_millis(100), 7);
        assert_eq!(arrivals.next(), start);
        let mut last = start;
        for _ in 0..10_000 {
            last = arrivals.next();
        }
        let mean = last.duration_since(start).as_secs_f64() / 10_000.0;
        assert!((0.095..0.105).contains(&mean), "mean gap {mean} s");
    }

    #[tokio::test]
    async fn a_paced_client_sends_no_faster_than_its_pace() {
        let stop = CancellationToken::new();
        let window = Duration::from_millis(400);
        let paced = closed_loop(
            "paced",
            1,
            window,
            Some(Duration::from_millis(100)),
            200,
            &stop,
            |_, _| answered(),
        )
        .await;
        // Four arrivals expected in the window (seeded: the same every run); answered at once, an
        // unpaced client sends thousands.
        assert!((1..=20).contains(&paced.requests), "{} requests", paced.requests);
        assert_eq!(paced.ok, paced.requests);
        let unpaced = closed_loop("unpaced", 1, window, None, 200, &stop, |_, _| answered()).await;
        assert!(unpaced.requests > 100, "{} requests", unpaced.requests);
    }
}
