//! How the worker tries again, as data: each kind of work that may be retried has one
//! [`RetryPolicy`], and [`RetryPolicies`] holds them all, built from the settings once.
//!
//! A retry is a new message published to the delay tier that covers the wanted pause (see
//! `Topology::tier_for`): the tiers round each pause up (to the longest tier, past it), so the
//! pause a message really waits is the tier's. [`RetryPolicy::schedule`] says what the tiers make
//! of a policy, and the tests below pin the defaults' real schedules.

use std::time::Duration;

use backon::ExponentialBuilder;
use gengate_shared::config::Settings;

/// Tries of one kind of work: `attempts` in all, and before try `n + 1` a pause of `pauses[n]`
/// (the last entry repeats).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first included.
    pub attempts: u32,
    /// The pause after each failed try, in order; the last one repeats.
    pub pauses: Vec<Duration>,
}

impl RetryPolicy {
    /// The pause after try `attempt` (0 for the first) failed, or `None` when it was the last.
    pub fn after(&self, attempt: u32) -> Option<Duration> {
        if attempt + 1 >= self.attempts {
            return None;
        }
        let index = usize::try_from(attempt).unwrap_or(usize::MAX).min(self.pauses.len() - 1);
        Some(self.pauses[index])
    }

    /// The pauses each retry really waits, given the broker's delay `tiers` (ascending).
    pub fn schedule(&self, tiers: &[Duration]) -> Vec<Duration> {
        (0..self.attempts)
            .map_while(|attempt| self.after(attempt))
            .map(|wanted| {
                tiers.iter().copied().find(|tier| *tier >= wanted).unwrap_or(tiers[tiers.len() - 1])
            })
            .collect()
    }
}

fn secs(seconds: &[u64]) -> Vec<Duration> {
    seconds.iter().copied().map(Duration::from_secs).collect()
}

/// Every retry policy of the worker.
#[derive(Debug, Clone)]
pub struct RetryPolicies {
    /// Creating an upstream task that failed for a reason that may pass (the provider is
    /// overloaded, asks to slow down): `worker.submit_attempts` tries, pausing 5 s, 15 s, 45 s,
    /// 135 s, then 405 s, or longer if the provider asks (`Retry-After`). With the default tiers
    /// the pauses are 5 s, 15 s, 60 s and 300 s; after the last try the job fails and is refunded.
    pub submit: RetryPolicy,
    /// A webhook that arrives before its job's submission is recorded (a fast provider): 9 tries,
    /// the first three a second apart (the worker that created the task usually records it within
    /// milliseconds), then 5 s apart, about half a minute in all; then polling takes over.
    pub early_update: RetryPolicy,
    /// A webhook whose confirming query keeps failing (the provider is overloaded): 5 tries, 5 s
    /// apart; then polling settles the job.
    pub confirm: RetryPolicy,
    /// Copying a result file that failed for a reason that may pass: `archive.attempts` tries,
    /// pausing 5 s, 30 s, 3 min, then 18 min (with the default tiers: 5 s, 30 s, then 5 min);
    /// then the file ends `failed` and the job keeps the provider's URL.
    pub archive: RetryPolicy,
}

impl RetryPolicies {
    /// The policies the settings configure.
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            submit: RetryPolicy {
                attempts: settings.worker.submit_attempts,
                pauses: secs(&[5, 15, 45, 135, 405]),
            },
            early_update: RetryPolicy { attempts: 9, pauses: secs(&[1, 1, 1, 5]) },
            confirm: RetryPolicy { attempts: 5, pauses: secs(&[5]) },
            archive: RetryPolicy {
                attempts: settings.archive.attempts,
                pauses: secs(&[5, 30, 180, 1080]),
            },
        }
    }

    /// Retries of one create call within a delivery, for a blip (a reset connection): two more
    /// calls, 100 ms to 1 s apart, before the delivery retries through the delay tiers instead.
    pub fn create_call() -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(1))
            .with_max_times(2)
            .with_jitter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `deploy/gengate.example.toml`, the documented defaults.
    fn example_settings() -> Settings {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/gengate.example.toml");
        Settings::load_from(Some(&path), Some(Default::default())).expect("the example loads")
    }

    fn default_tiers() -> Vec<Duration> {
        example_settings().amqp.delay_tiers_ms.into_iter().map(Duration::from_millis).collect()
    }

    fn policies(submit_attempts: u32, archive_attempts: u32) -> RetryPolicies {
        let mut settings = example_settings();
        settings.worker.submit_attempts = submit_attempts;
        settings.archive.attempts = archive_attempts;
        RetryPolicies::from_settings(&settings)
    }

    #[test]
    fn the_default_schedules_are_what_the_docs_say() {
        let settings = example_settings();
        let p = policies(settings.worker.submit_attempts, settings.archive.attempts);
        let tiers = default_tiers();
        assert_eq!(p.submit.schedule(&tiers), secs(&[5, 15, 60, 300]));
        assert_eq!(p.early_update.schedule(&tiers), secs(&[1, 1, 1, 5, 5, 5, 5, 5]));
        assert_eq!(p.confirm.schedule(&tiers), secs(&[5, 5, 5, 5]));
        assert_eq!(p.archive.schedule(&tiers), secs(&[5, 30, 300, 300]));
    }

    #[test]
    fn the_last_try_has_no_pause_and_the_last_pause_repeats() {
        let p = policies(8, 1);
        assert_eq!(p.submit.after(0), Some(Duration::from_secs(5)));
        assert_eq!(p.submit.after(6), Some(Duration::from_secs(405)));
        assert_eq!(p.submit.after(7), None);
        assert_eq!(p.archive.after(0), None, "one try in all: no retry");
    }
}
