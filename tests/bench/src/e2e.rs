//! `e2e`: how many generations go from submit to `completed` per second, and how long that takes.
//!
//! The simulator is set to finish tasks at once (`POST /_sim/config`, restored afterwards), so
//! what is measured is gengate: API, outbox relay, RabbitMQ, workers, webhook ingress and
//! settlement. Each client submits a job as its own bench user, polls
//! `GET /v1/generations/{id}` until the job ends, and submits the next: a closed loop with one
//! job per client in flight. Jobs still running when the window closes are waited for (up to the
//! job timeout) for their latency, but only completions inside the window count for the rate.
//!
//! If nothing completes within the job timeout (no worker running, or workers that cannot reach
//! the simulator) the scenario stops, cancels its jobs, and says so instead of hanging.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::client::Api;
use super::load::{TRANSPORT_ERROR_PAUSE, error_chain};
use super::progress::{self, Ticker};
use super::setup::BenchUser;
use super::stats::{LatencySummary, Unexpected, UnexpectedLine};
use super::submit::job_body;

/// How the scenario runs.
#[derive(Debug, Clone, Copy)]
pub struct E2eSettings {
    /// How long clients keep submitting.
    pub window: Duration,
    /// How long one job may take from submit to its end before it counts as timed out; also how
    /// long the scenario waits for a first completion before it gives up.
    pub job_timeout: Duration,
    /// Pause between two polls of a job.
    pub poll_interval: Duration,
}

/// How one job ended, as its client saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum JobEnd {
    /// `completed`.
    Completed {
        /// From just before the submit to the poll that saw `completed`.
        observed: Duration,
        /// `completed_at - created_at` as the server recorded them.
        server: Option<Duration>,
        /// Seen completed before the window closed.
        in_window: bool,
    },
    /// `failed`, with the failure code.
    Failed {
        /// `failure.code`.
        code: Option<String>,
    },
    /// `canceled` (by someone else: the bench only cancels jobs it gave up on).
    Canceled,
    /// Still `status` when the job timeout passed.
    TimedOut {
        /// The last status seen.
        status: String,
    },
    /// Still `status` when the run stopped (nothing was completing, or Ctrl-C).
    Abandoned {
        /// The last status seen.
        status: String,
    },
}

/// How the accepted jobs that did not complete ended: counted by each client's [`Tally`], and
/// reported as they are in [`E2eReport`] (whose JSON has these fields at its top level).
#[derive(Debug, Clone, Default, Serialize)]
pub struct NotCompleted {
    /// Jobs seen `failed`.
    pub failed: u64,
    /// Jobs seen `canceled` (not by the bench).
    pub canceled: u64,
    /// Jobs that did not end within the job timeout.
    pub timed_out: u64,
    /// Jobs given up when the run stopped.
    pub abandoned: u64,
    /// Jobs the bench canceled after giving up on them (timed out or abandoned).
    pub canceled_by_bench: u64,
    /// The last status of timed-out and abandoned jobs.
    pub unfinished_by_status: BTreeMap<String, u64>,
    /// `failure.code` of failed jobs (`-` when there was none).
    pub failure_codes: BTreeMap<String, u64>,
}

impl NotCompleted {
    /// Jobs that ended without completing (`canceled_by_bench` is part of `timed_out` and
    /// `abandoned`).
    pub fn total(&self) -> u64 {
        self.failed + self.canceled + self.timed_out + self.abandoned
    }

    /// Adds another client's counts.
    pub fn merge(&mut self, other: NotCompleted) {
        self.failed += other.failed;
        self.canceled += other.canceled;
        self.timed_out += other.timed_out;
        self.abandoned += other.abandoned;
        self.canceled_by_bench += other.canceled_by_bench;
        add_counts(&mut self.unfinished_by_status, other.unfinished_by_status);
        add_counts(&mut self.failure_codes, other.failure_codes);
    }
}

/// Adds `more` to `counts`, key by key.
fn add_counts(counts: &mut BTreeMap<String, u64>, more: BTreeMap<String, u64>) {
    for (key, n) in more {
        *counts.entry(key).or_default() += n;
    }
}

/// The bookkeeping of the scenario: one per client, merged at the end.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Jobs accepted (202).
    pub submitted: u64,
    /// Jobs seen `completed`.
    pub completed: u64,
    /// … of which before the window closed.
    pub completed_in_window: u64,
    /// How the other accepted jobs ended.
    pub not_completed: NotCompleted,
    /// Submit to `completed`, as observed by polling.
    pub observed: Vec<Duration>,
    /// `created_at` to `completed_at`, as recorded by the server.
    pub server: Vec<Duration>,
    /// Latency of accepted submits.
    pub submit_latencies: Vec<Duration>,
    /// Submits answered with anything but 202.
    pub submit_unexpected: Unexpected,
    /// Polls answered with anything but 200.
    pub poll_unexpected: Unexpected,
    /// Polls sent.
    pub polls: u64,
    /// Polls the API answered (any status): each read the generation in PostgreSQL once.
    pub status_reads: u64,
}

impl Tally {
    /// A job was accepted after `latency`.
    pub fn accepted(&mut self, latency: Duration) {
        self.submitted += 1;
        self.submit_latencies.push(latency);
    }

    /// A job ended.
    pub fn ended(&mut self, end: JobEnd) {
        let ends = &mut self.not_completed;
        match end {
            JobEnd::Completed { observed, server, in_window } => {
                self.completed += 1;
                self.completed_in_window += u64::from(in_window);
                self.observed.push(observed);
                self.server.extend(server);
            }
            JobEnd::Failed { code } => {
                ends.failed += 1;
                *ends.failure_codes.entry(code.unwrap_or_else(|| "-".into())).or_default() += 1;
            }
            JobEnd::Canceled => ends.canceled += 1,
            JobEnd::TimedOut { status } => {
                ends.timed_out += 1;
                *ends.unfinished_by_status.entry(status).or_default() += 1;
            }
            JobEnd::Abandoned { status } => {
                ends.abandoned += 1;
                *ends.unfinished_by_status.entry(status).or_default() += 1;
            }
        }
    }

    /// Jobs accepted whose end was not recorded (0 once every client is done).
    pub fn unaccounted(&self) -> u64 {
        self.submitted - (self.completed + self.not_completed.total())
    }

    /// Adds another client's tally.
    pub fn merge(&mut self, other: Tally) {
        self.submitted += other.submitted;
        self.completed += other.completed;
        self.completed_in_window += other.completed_in_window;
        self.not_completed.merge(other.not_completed);
        self.observed.extend(other.observed);
        self.server.extend(other.server);
        self.submit_latencies.extend(other.submit_latencies);
        self.submit_unexpected.merge(other.submit_unexpected);
        self.poll_unexpected.merge(other.poll_unexpected);
        self.polls += other.polls;
        self.status_reads += other.status_reads;
    }

    /// What is wrong with the run: an error when it measured nothing, warnings when some jobs
    /// did not complete.
    pub fn verdict(&self, job_timeout: Duration) -> (Option<String>, Vec<String>) {
        let mut warnings = Vec::new();
        let ends = &self.not_completed;
        let unfinished = describe(&ends.unfinished_by_status);
        if self.submitted == 0 {
            return (
                Some("no job was accepted; see the unexpected submit answers".to_owned()),
                warnings,
            );
        }
        if self.completed == 0 {
            let mut error = format!(
                "no job completed within {}s of its submission ({} submitted",
                job_timeout.as_secs_f64(),
                self.submitted
            );
            if !unfinished.is_empty() {
                error.push_str(&format!("; left {unfinished}"));
            }
            if ends.failed > 0 {
                error.push_str(&format!("; failed: {}", describe(&ends.failure_codes)));
            }
            error.push_str(
                "). Are gengate-worker processes running, consuming gengate.jobs, and able to \
                 reach the provider simulator?",
            );
            return (Some(error), warnings);
        }
        if ends.timed_out > 0 {
            warnings.push(format!(
                "{} of {} jobs did not end within {}s (left {unfinished})",
                ends.timed_out,
                self.submitted,
                job_timeout.as_secs_f64()
            ));
        }
        if ends.failed > 0 {
            warnings.push(format!(
                "{} jobs failed ({}); the simulator should have made every one succeed",
                ends.failed,
                describe(&ends.failure_codes)
            ));
        }
        if ends.canceled > 0 {
            warnings.push(format!("{} jobs were canceled by someone else", ends.canceled));
        }
        (None, warnings)
    }
}

/// `queued ×3, submitted ×1`.
fn describe(counts: &BTreeMap<String, u64>) -> String {
    counts.iter().map(|(k, n)| format!("{k} ×{n}")).collect::<Vec<_>>().join(", ")
}

/// The fields of the simulator's config the scenario changes, and to what.
pub fn fast_simulator_patch() -> Value {
    // `rates: null` resets every fault rate to 0: each task simply succeeds.
    json!({"task_duration_ms": 0, "accept_delay_ms": 0, "rates": null})
}

/// The patch that puts back what [`fast_simulator_patch`] changed, from the config saved before.
/// A field the saved config lacked is reset to its default (`null`).
pub fn restore_patch(saved: &Value) -> Value {
    let fields = fast_simulator_patch();
    let restored = fields
        .as_object()
        .expect("the patch is an object")
        .keys()
        .map(|key| (key.clone(), saved.get(key).cloned().unwrap_or(Value::Null)))
        .collect();
    Value::Object(restored)
}

/// What was done to the simulator.
#[derive(Debug, Clone, Serialize, Default)]
pub struct SimulatorNote {
    /// The simulator was set to finish tasks at once.
    pub configured: bool,
    /// … and its earlier settings were put back.
    pub restored: bool,
    /// Why not, if not.
    pub note: Option<String>,
}

async fn sim_config(
    http: &reqwest::Client,
    sim_url: &str,
    patch: Option<&Value>,
) -> anyhow::Result<Value> {
    let url = format!("{sim_url}/_sim/config");
    let request = match patch {
        Some(patch) => http.post(&url).json(patch),
        None => http.get(&url),
    };
    let response = request.send().await.with_context(|| format!("reaching {url}"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    anyhow::ensure!(status.is_success(), "{url} answered {status}: {body}");
    serde_json::from_str(&body).with_context(|| format!("{url} answered {body}"))
}

/// The scenario's figures.
#[derive(Debug, Clone, Serialize)]
pub struct E2eReport {
    /// Concurrent clients (one job in flight each).
    pub concurrency: usize,
    /// The submit window, in seconds.
    pub window_s: f64,
    /// From the first submit to the last job's end, in seconds.
    pub elapsed_s: f64,
    /// Per-job timeout, in seconds.
    pub job_timeout_s: f64,
    /// Pause between polls of one job, in milliseconds.
    pub poll_interval_ms: u64,
    /// Jobs accepted.
    pub submitted: u64,
    /// Jobs seen completed.
    pub completed: u64,
    /// … before the window closed.
    pub completed_in_window: u64,
    /// `completed_in_window` per second of window.
    pub completed_per_s: f64,
    /// How the other accepted jobs ended; its fields stand at the top level of the JSON
    /// (`failed`, `canceled`, `timed_out`, …), right after `completed_per_s`.
    #[serde(flatten)]
    pub not_completed: NotCompleted,
    /// Submit to completed, as seen by polling (resolution: the poll interval).
    pub latency: LatencySummary,
    /// `completed_at - created_at` as recorded by the server.
    pub server_latency: LatencySummary,
    /// Latency of the submits.
    pub submit_latency: LatencySummary,
    /// Submits answered with anything but 202. Should be empty.
    pub submit_unexpected: Vec<UnexpectedLine>,
    /// Polls answered with anything but 200. Should be empty.
    pub poll_unexpected: Vec<UnexpectedLine>,
    /// Requests that got no answer.
    pub transport_errors: u64,
    /// Polls sent.
    pub polls: u64,
    /// Polls the API answered (any status; in a clean run, every poll, answered 200). Each cost
    /// PostgreSQL one read-only commit, counted in the scenario's commits per job.
    pub status_reads: u64,
    /// `status_reads` per completed job (the unit of the scenario's cost per job); `null` when
    /// nothing completed.
    pub status_reads_per_job: Option<f64>,
    /// What was done to the simulator.
    pub simulator: SimulatorNote,
    /// Why the run measured nothing, if so.
    pub error: Option<String>,
    /// What else went wrong.
    pub warnings: Vec<String>,
    /// Stopped early by Ctrl-C.
    pub interrupted: bool,
}

/// `count` per completed job; `None` when nothing completed.
pub fn per_completed_job(count: u64, completed: u64) -> Option<f64> {
    (completed > 0).then(|| count as f64 / completed as f64)
}

impl E2eReport {
    /// Unexpected answers plus transport errors.
    pub fn unexpected_total(&self) -> u64 {
        self.submit_unexpected.iter().chain(&self.poll_unexpected).map(|l| l.count).sum::<u64>()
            + self.transport_errors
    }
}

/// The parts of the generation object the scenario reads.
#[derive(Debug, Deserialize)]
struct Generation {
    id: String,
    status: String,
    #[serde(default)]
    failure: Option<Failure>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    created_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    completed_at: Option<OffsetDateTime>,
}

#[derive(Debug, Deserialize)]
struct Failure {
    code: Option<String>,
}

impl Generation {
    fn server_latency(&self) -> Option<Duration> {
        Duration::try_from(self.completed_at? - self.created_at?).ok()
    }
}

/// Runs the scenario with the simulator set to finish tasks at once (when its URL is known).
pub async fn run(
    api: &Api,
    sim_url: Option<&str>,
    users: &[BenchUser],
    settings: E2eSettings,
    stop: &CancellationToken,
) -> E2eReport {
    let mut simulator = SimulatorNote::default();
    let saved = match sim_url {
        None => {
            simulator.note =
                Some("no simulator URL (GENGATE_SIM_URL): its task duration stays as it is".into());
            None
        }
        Some(url) => match sim_config(api.http(), url, None).await {
            Ok(saved) => match sim_config(api.http(), url, Some(&fast_simulator_patch())).await {
                Ok(_) => {
                    simulator.configured = true;
                    Some(saved)
                }
                Err(error) => {
                    simulator.note = Some(format!("could not configure the simulator: {error:#}"));
                    None
                }
            },
            Err(error) => {
                simulator.note = Some(format!("could not read the simulator's config: {error:#}"));
                None
            }
        },
    };

    let mut report = measure(api, users, settings, stop).await;

    if let (Some(url), Some(saved)) = (sim_url, saved) {
        match sim_config(api.http(), url, Some(&restore_patch(&saved))).await {
            Ok(_) => simulator.restored = true,
            Err(error) => {
                simulator.note =
                    Some(format!("could not restore the simulator's config: {error:#}"))
            }
        }
    }
    report.simulator = simulator;
    report
}

async fn measure(
    api: &Api,
    users: &[BenchUser],
    settings: E2eSettings,
    stop: &CancellationToken,
) -> E2eReport {
    let concurrency = users.len();
    let completed = Arc::new(AtomicU64::new(0));
    // Stops the clients: Ctrl-C, or nothing completing.
    let halt = stop.child_token();
    let no_progress = Arc::new(AtomicBool::new(false));
    let ticker = Ticker::start(
        progress::timed_bar("e2e", settings.window),
        Some(completed.clone()),
        "completed",
    );
    let start = Instant::now();
    let deadline = start + settings.window;

    let watchdog = tokio::spawn({
        let (completed, halt, no_progress) = (completed.clone(), halt.clone(), no_progress.clone());
        async move {
            loop {
                tokio::select! {
                    _ = halt.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
                if completed.load(Ordering::Relaxed) > 0 {
                    return;
                }
                if start.elapsed() >= settings.job_timeout {
                    no_progress.store(true, Ordering::Relaxed);
                    halt.cancel();
                    return;
                }
            }
        }
    });

    let body = job_body();
    let clients: Vec<_> = users
        .iter()
        .map(|user| {
            let (api, key, body) = (api.clone(), user.key.clone(), body.clone());
            let (completed, halt) = (completed.clone(), halt.clone());
            tokio::spawn(async move {
                let mut tally = Tally::default();
                while Instant::now() < deadline && !halt.is_cancelled() {
                    let submitted_at = Instant::now();
                    let answer = match api.submit(&key, body.clone()).await {
                        Ok(answer) => answer,
                        Err(error) => {
                            tally.submit_unexpected.transport_error(&error_chain(&error));
                            tokio::time::sleep(TRANSPORT_ERROR_PAUSE).await;
                            continue;
                        }
                    };
                    if answer.status != 202 {
                        tally
                            .submit_unexpected
                            .answer(answer.status, answer.problem_code().as_deref());
                        continue;
                    }
                    let Ok(job) = answer.json::<Generation>() else {
                        tally.submit_unexpected.answer(answer.status, Some("unparsable_body"));
                        continue;
                    };
                    tally.accepted(answer.latency);
                    let end = follow(
                        &api,
                        &key,
                        job,
                        submitted_at,
                        deadline,
                        settings,
                        &halt,
                        &mut tally,
                    )
                    .await;
                    if let JobEnd::Completed { .. } = end {
                        completed.fetch_add(1, Ordering::Relaxed);
                    }
                    tally.ended(end);
                }
                tally
            })
        })
        .collect();

    let mut tally = Tally::default();
    for client in clients {
        tally.merge(client.await.expect("bench client panicked"));
    }
    let elapsed = start.elapsed();
    halt.cancel();
    let _ = watchdog.await;
    ticker.finish().await;

    let (mut error, warnings) = tally.verdict(settings.job_timeout);
    if error.is_none() && no_progress.load(Ordering::Relaxed) {
        error = Some("stopped: nothing completed within the job timeout".into());
    }
    let window = settings.window.min(elapsed);
    let transport_errors =
        tally.submit_unexpected.transport_errors() + tally.poll_unexpected.transport_errors();
    E2eReport {
        concurrency,
        window_s: settings.window.as_secs_f64(),
        elapsed_s: elapsed.as_secs_f64(),
        job_timeout_s: settings.job_timeout.as_secs_f64(),
        poll_interval_ms: u64::try_from(settings.poll_interval.as_millis()).unwrap_or(u64::MAX),
        submitted: tally.submitted,
        completed: tally.completed,
        completed_in_window: tally.completed_in_window,
        completed_per_s: tally.completed_in_window as f64 / window.as_secs_f64().max(f64::EPSILON),
        not_completed: tally.not_completed,
        latency: LatencySummary::from_samples(&mut tally.observed),
        server_latency: LatencySummary::from_samples(&mut tally.server),
        submit_latency: LatencySummary::from_samples(&mut tally.submit_latencies),
        submit_unexpected: tally.submit_unexpected.lines(),
        poll_unexpected: tally.poll_unexpected.lines(),
        transport_errors,
        polls: tally.polls,
        status_reads: tally.status_reads,
        status_reads_per_job: per_completed_job(tally.status_reads, tally.completed),
        simulator: SimulatorNote::default(),
        error,
        warnings,
        interrupted: stop.is_cancelled(),
    }
}

/// Polls one job until it ends, times out, or the run stops; a job given up on is canceled so
/// that it neither holds credits nor waits in the queue for a later worker.
#[allow(clippy::too_many_arguments)]
async fn follow(
    api: &Api,
    key: &str,
    job: Generation,
    submitted_at: Instant,
    deadline: Instant,
    settings: E2eSettings,
    halt: &CancellationToken,
    tally: &mut Tally,
) -> JobEnd {
    let path = format!("/v1/generations/{}", job.id);
    let mut status = job.status;
    let end = loop {
        if submitted_at.elapsed() >= settings.job_timeout {
            break JobEnd::TimedOut { status };
        }
        tokio::select! {
            _ = halt.cancelled() => break JobEnd::Abandoned { status },
            _ = tokio::time::sleep(settings.poll_interval) => {}
        }
        tally.polls += 1;
        let answer = match api.get(key, &path).await {
            Ok(answer) => {
                // Answered, so the API read the job: one read-only commit in PostgreSQL, which the
                // report takes off the scenario's commits per job.
                tally.status_reads += 1;
                answer
            }
            Err(error) => {
                tally.poll_unexpected.transport_error(&error_chain(&error));
                tokio::time::sleep(TRANSPORT_ERROR_PAUSE).await;
                continue;
            }
        };
        let seen_at = Instant::now();
        let current = match answer.status {
            200 => answer.json::<Generation>(),
            other => {
                tally.poll_unexpected.answer(other, answer.problem_code().as_deref());
                continue;
            }
        };
        let Ok(current) = current else {
            tally.poll_unexpected.answer(answer.status, Some("unparsable_body"));
            continue;
        };
        match current.status.as_str() {
            "completed" => {
                break JobEnd::Completed {
                    observed: seen_at - submitted_at,
                    server: current.server_latency(),
                    in_window: seen_at <= deadline,
                };
            }
            "failed" => {
                break JobEnd::Failed { code: current.failure.and_then(|f| f.code) };
            }
            "canceled" => break JobEnd::Canceled,
            _ => status = current.status,
        }
    };
    if matches!(end, JobEnd::TimedOut { .. } | JobEnd::Abandoned { .. })
        && api.post_empty(key, &format!("{path}/cancel")).await.is_ok_and(|a| a.status == 200)
    {
        tally.not_completed.canceled_by_bench += 1;
    }
    end
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(30);

    fn completed(ms: u64, in_window: bool) -> JobEnd {
        JobEnd::Completed {
            observed: Duration::from_millis(ms),
            server: Some(Duration::from_millis(ms - 5)),
            in_window,
        }
    }

    #[test]
    fn every_accepted_job_is_accounted_for() {
        let mut a = Tally::default();
        for _ in 0..4 {
            a.accepted(Duration::from_millis(3));
        }
        a.ended(completed(120, true));
        a.ended(completed(300, false));
        a.ended(JobEnd::Failed { code: Some("provider_failed".into()) });
        assert_eq!(a.unaccounted(), 1);
        a.ended(JobEnd::TimedOut { status: "submitted".into() });
        assert_eq!(a.unaccounted(), 0);

        let mut b = Tally::default();
        b.accepted(Duration::from_millis(4));
        b.ended(JobEnd::Abandoned { status: "queued".into() });
        b.not_completed.canceled_by_bench += 1;
        a.merge(b);

        assert_eq!((a.submitted, a.completed, a.completed_in_window), (5, 2, 1));
        let ends = &a.not_completed;
        assert_eq!(
            (ends.failed, ends.timed_out, ends.abandoned, ends.canceled_by_bench),
            (1, 1, 1, 1)
        );
        assert_eq!(a.unaccounted(), 0);
        assert_eq!(a.observed.len(), 2);
        assert_eq!(a.server.len(), 2);
        assert_eq!(a.submit_latencies.len(), 5);
        assert_eq!(
            ends.unfinished_by_status,
            BTreeMap::from([("queued".into(), 1), ("submitted".into(), 1)])
        );
        assert_eq!(ends.failure_codes, BTreeMap::from([("provider_failed".into(), 1)]));
    }

    #[test]
    fn status_reads_add_up_over_clients_and_divide_by_completed_jobs() {
        let mut a = Tally { polls: 12, status_reads: 11, ..Tally::default() };
        a.merge(Tally { polls: 8, status_reads: 8, ..Tally::default() });
        assert_eq!((a.polls, a.status_reads), (20, 19));
        assert_eq!(per_completed_job(19, 4), Some(4.75));
        assert_eq!(per_completed_job(19, 0), None);
        let json = serde_json::to_value(sample_report()).unwrap();
        assert_eq!(json["status_reads"], json!(1230));
        assert_eq!(json["status_reads_per_job"].as_f64(), Some(1230.0 / 90.0));
    }

    #[test]
    fn nothing_completing_is_an_error_that_names_what_was_left() {
        let mut tally = Tally::default();
        for _ in 0..3 {
            tally.accepted(Duration::from_millis(2));
        }
        tally.ended(JobEnd::TimedOut { status: "queued".into() });
        tally.ended(JobEnd::Abandoned { status: "queued".into() });
        tally.ended(JobEnd::Abandoned { status: "submitted".into() });
        let (error, _) = tally.verdict(TIMEOUT);
        let error = error.expect("an error");
        assert!(error.contains("no job completed within 30s"), "{error}");
        assert!(error.contains("queued ×2, submitted ×1"), "{error}");
        assert!(error.contains("gengate-worker"), "{error}");
    }

    #[test]
    fn nothing_accepted_is_an_error_too() {
        let (error, _) = Tally::default().verdict(TIMEOUT);
        assert!(error.unwrap().contains("no job was accepted"));
    }

    #[test]
    fn partial_trouble_is_a_warning() {
        let mut tally = Tally::default();
        for _ in 0..3 {
            tally.accepted(Duration::from_millis(2));
        }
        tally.ended(completed(50, true));
        tally.ended(JobEnd::TimedOut { status: "submitted".into() });
        tally.ended(JobEnd::Failed { code: None });
        let (error, warnings) = tally.verdict(TIMEOUT);
        assert_eq!(error, None);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("1 of 3 jobs did not end"), "{warnings:?}");
        assert!(warnings[1].contains("1 jobs failed (- ×1)"), "{warnings:?}");
    }

    #[test]
    fn a_clean_run_has_no_verdict() {
        let mut tally = Tally::default();
        tally.accepted(Duration::from_millis(2));
        tally.ended(completed(50, true));
        assert_eq!(tally.verdict(TIMEOUT), (None, vec![]));
    }

    /// A report with every field set, the job ends to distinct values.
    pub(crate) fn sample_report() -> E2eReport {
        let mut tally = Tally::default();
        tally.ended(JobEnd::Failed { code: Some("provider_failed".into()) });
        tally.ended(JobEnd::Canceled);
        tally.ended(JobEnd::Canceled);
        for status in ["queued", "queued", "submitted"] {
            tally.ended(JobEnd::TimedOut { status: status.into() });
        }
        tally.ended(JobEnd::Abandoned { status: "queued".into() });
        tally.not_completed.canceled_by_bench = 4;
        E2eReport {
            concurrency: 32,
            window_s: 20.0,
            elapsed_s: 21.5,
            job_timeout_s: 30.0,
            poll_interval_ms: 50,
            submitted: 100,
            completed: 90,
            completed_in_window: 85,
            completed_per_s: 4.25,
            not_completed: tally.not_completed,
            latency: LatencySummary::from_samples(&mut [Duration::from_millis(120)]),
            server_latency: LatencySummary::from_samples(&mut [Duration::from_millis(100)]),
            submit_latency: LatencySummary::from_samples(&mut [Duration::from_millis(4)]),
            submit_unexpected: vec![UnexpectedLine {
                status: 429,
                code: "rate_limited".into(),
                count: 7,
            }],
            poll_unexpected: vec![],
            transport_errors: 6,
            polls: 1234,
            status_reads: 1230,
            status_reads_per_job: per_completed_job(1230, 90),
            simulator: SimulatorNote { configured: true, restored: true, note: None },
            error: None,
            warnings: vec!["w".into()],
            interrupted: false,
        }
    }

    #[test]
    fn the_job_ends_stand_at_the_top_level_of_the_report() {
        let json = serde_json::to_value(sample_report()).unwrap();
        let report = json.as_object().expect("an object");
        for (key, value) in [
            ("failed", json!(1)),
            ("canceled", json!(2)),
            ("timed_out", json!(3)),
            ("abandoned", json!(1)),
            ("canceled_by_bench", json!(4)),
            ("unfinished_by_status", json!({"queued": 3, "submitted": 1})),
            ("failure_codes", json!({"provider_failed": 1})),
        ] {
            assert_eq!(report.get(key), Some(&value), "{key} in {json}");
        }
        // The same keys as before the counts had a struct of their own (and as docs/benchmarks.md
        // shows): nothing nested, nothing renamed.
        let mut keys: Vec<&str> = report.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut expected = vec![
            "concurrency",
            "window_s",
            "elapsed_s",
            "job_timeout_s",
            "poll_interval_ms",
            "submitted",
            "completed",
            "completed_in_window",
            "completed_per_s",
            "failed",
            "canceled",
            "timed_out",
            "abandoned",
            "canceled_by_bench",
            "unfinished_by_status",
            "failure_codes",
            "latency",
            "server_latency",
            "submit_latency",
            "submit_unexpected",
            "poll_unexpected",
            "transport_errors",
            "polls",
            "status_reads",
            "status_reads_per_job",
            "simulator",
            "error",
            "warnings",
            "interrupted",
        ];
        expected.sort_unstable();
        assert_eq!(keys, expected);
    }

    #[test]
    fn the_simulator_gets_back_what_it_had() {
        let saved = json!({"listen": "127.0.0.1:8099", "task_duration_ms": 200,
                           "accept_delay_ms": 5, "rates": {"fail": 0.1}, "seed": 3});
        assert_eq!(
            restore_patch(&saved),
            json!({"task_duration_ms": 200, "accept_delay_ms": 5, "rates": {"fail": 0.1}})
        );
        // A field the saved config did not have goes back to its default.
        assert_eq!(
            restore_patch(&json!({"task_duration_ms": 200})),
            json!({"task_duration_ms": 200, "accept_delay_ms": null, "rates": null})
        );
    }

    #[test]
    fn server_latency_comes_from_the_timestamps() {
        let job: Generation = serde_json::from_value(json!({
            "id": "x", "status": "completed", "failure": null,
            "created_at": "2026-01-01T00:00:00.100Z", "completed_at": "2026-01-01T00:00:00.350Z"
        }))
        .unwrap();
        assert_eq!(job.server_latency(), Some(Duration::from_millis(250)));
        let queued: Generation =
            serde_json::from_value(json!({"id": "y", "status": "queued", "completed_at": null,
                                          "created_at": "2026-01-01T00:00:00Z"}))
            .unwrap();
        assert_eq!(queued.server_latency(), None);
    }
}
