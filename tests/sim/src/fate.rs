//! What happens to a task: the `[[sim:…]]` markers a prompt carries and, for prompts without fate
//! markers, the configured rates rolled deterministically from the seed and the task's key.
//!
//! A fate is decided once, when a create request arrives, and never changes; the admin view shows
//! it so a test can assert on what the simulator meant to do, not only on what it did.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::SimConfig;

/// Markers found in a prompt. Markers may be combined; unknown markers are ignored (and logged).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Directives {
    /// `[[sim:ok]]`: succeed; opts the task out of the configured rates.
    pub ok: bool,
    /// `[[sim:fail]]`: end failed.
    pub fail: bool,
    /// `[[sim:no-callback]]`: succeed without calling back.
    pub no_callback: bool,
    /// `[[sim:dup-callback]]`: deliver every terminal callback 3 times, concurrently.
    pub dup_callback: bool,
    /// `[[sim:fail-then-success]]`: a failure callback, then a success callback.
    pub fail_then_success: bool,
    /// `[[sim:never]]`: stay running forever.
    pub never: bool,
    /// `[[sim:create-retry=N]]`: create answers a retryable error N times first.
    pub create_retry: u32,
    /// `[[sim:create-5xx=N]]`: create answers 500/503 N times first.
    pub create_5xx: u32,
    /// `[[sim:reject]]`: create answers a permanent error.
    pub reject: bool,
    /// `[[sim:unknown-status]]`: report an undocumented status before succeeding.
    pub unknown_status: bool,
    /// `[[sim:evil-url]]`: the result URL is on a host no allowlist should contain.
    pub evil_url: bool,
    /// `[[sim:delay=MS]]`: this task's time to finish.
    pub delay_ms: Option<u64>,
    /// `[[sim:accept-delay=MS]]`: record the task, then hold the create response this long.
    pub accept_delay_ms: Option<u64>,
    /// `[[sim:usage=N]]`: the units Kling reports having charged (`final_unit_deduction`).
    pub usage: Option<u64>,
    /// `[[sim:dirty-failure]]`: a failure's message carries a NUL and other control characters,
    /// as a careless provider's might.
    pub dirty_failure: bool,
    /// `[[sim:result-gone]]`: the result file answers 410, as an expired one does.
    pub result_gone: bool,
    /// `[[sim:result-stall]]`: the result file sends its headers and four bytes, then nothing.
    pub result_stall: bool,
    /// `[[sim:result-text]]`: the result file is text, not a video or an image.
    pub result_text: bool,
    /// `[[sim:result-size=N]]`: the result file is N bytes (not a real video), made as it is sent.
    pub result_size: Option<u64>,
    /// `[[sim:result-redirect]]`: the result file redirects to a host no allowlist should hold.
    pub result_redirect: bool,
}

impl Directives {
    /// Reads every `[[sim:name]]` / `[[sim:name=value]]` marker in `prompt`.
    pub fn parse(prompt: &str) -> Self {
        let mut directives = Self::default();
        let mut rest = prompt;
        while let Some(start) = rest.find("[[sim:") {
            let after = &rest[start + "[[sim:".len()..];
            let Some(end) = after.find("]]") else { break };
            directives.apply(after[..end].trim());
            rest = &after[end + 2..];
        }
        directives
    }

    fn apply(&mut self, marker: &str) {
        let (name, value) = match marker.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim())),
            None => (marker, None),
        };
        let number = || value.and_then(|v| v.parse::<u64>().ok());
        match (name, value) {
            ("ok", None) => self.ok = true,
            ("fail", None) => self.fail = true,
            ("no-callback", None) => self.no_callback = true,
            ("dup-callback", None) => self.dup_callback = true,
            ("fail-then-success", None) => self.fail_then_success = true,
            ("never", None) => self.never = true,
            ("reject", None) => self.reject = true,
            ("unknown-status", None) => self.unknown_status = true,
            ("evil-url", None) => self.evil_url = true,
            ("dirty-failure", None) => self.dirty_failure = true,
            ("result-gone", None) => self.result_gone = true,
            ("result-stall", None) => self.result_stall = true,
            ("result-text", None) => self.result_text = true,
            ("result-redirect", None) => self.result_redirect = true,
            ("result-size", Some(_)) if number().is_some() => self.result_size = number(),
            ("create-retry", Some(_)) if number().is_some() => {
                self.create_retry = number().map_or(0, saturating_u32);
            }
            ("create-5xx", Some(_)) if number().is_some() => {
                self.create_5xx = number().map_or(0, saturating_u32);
            }
            ("delay", Some(_)) if number().is_some() => self.delay_ms = number(),
            ("accept-delay", Some(_)) if number().is_some() => self.accept_delay_ms = number(),
            ("usage", Some(_)) if number().is_some() => self.usage = number(),
            _ => tracing::warn!(marker, "ignoring an unknown [[sim:…]] marker"),
        }
    }

    /// Whether any marker decides the fate. Only markers of timing and detail (`delay`,
    /// `accept-delay`, `usage`, `dirty-failure`, `result-…`) leave a task to the configured
    /// rates.
    pub fn decides_fate(&self) -> bool {
        let timing_only = Self {
            delay_ms: None,
            accept_delay_ms: None,
            usage: None,
            dirty_failure: false,
            result_gone: false,
            result_stall: false,
            result_text: false,
            result_size: None,
            result_redirect: false,
            ..self.clone()
        } == Self::default();
        !timing_only
    }
}

fn saturating_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Probabilities (0.0–1.0) of each fate for tasks whose prompt has no fate marker. Each is rolled
/// independently from `hash(seed, roll key, fate name)` (the simulator uses the prompt), so the same seed and the same tasks give
/// the same fates on every run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rates {
    /// End failed.
    pub fail: f64,
    /// Deliver the terminal callback 3 times.
    pub dup_callback: f64,
    /// Failure callback first, success later (wins over `fail` when both roll).
    pub fail_then_success: f64,
    /// Never call back.
    pub no_callback: f64,
    /// Answer the first create with a 5xx.
    pub create_5xx: f64,
    /// Answer the first create with a retryable error (Kling 1303 / kie 429).
    pub create_retry: f64,
    /// Report an undocumented status before succeeding.
    pub unknown_status: f64,
}

/// How a task ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Succeeds after its delay.
    Succeed,
    /// Fails after its delay.
    Fail,
    /// Fails after its delay, then succeeds `recovery_delay_ms` later.
    FailThenSucceed,
    /// Keeps running forever.
    Never,
}

/// Where a fate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChosenBy {
    /// At least one fate marker in the prompt.
    Markers,
    /// No fate marker: the configured rates (all zero by default, i.e. plain success).
    Rates,
}

/// The resolved fate of one task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fate {
    /// Markers or rates.
    pub chosen_by: ChosenBy,
    /// How it ends.
    pub outcome: Outcome,
    /// Whether status changes are called back at all.
    pub callbacks: bool,
    /// Whether each terminal callback is delivered 3 times.
    pub dup_callback: bool,
    /// Whether an undocumented status is reported before the end.
    pub unknown_status: bool,
    /// Whether the result URL is on `evil.example.com`.
    pub evil_url: bool,
    /// Whether every create is refused with a permanent error.
    pub reject: bool,
    /// Retryable create errors before the create is accepted.
    pub create_retry: u32,
    /// 5xx create answers (after the retryable ones) before the create is accepted.
    pub create_5xx: u32,
    /// Time from creation to the terminal status.
    pub duration_ms: u64,
    /// How long the create response is held after the task was recorded.
    pub accept_delay_ms: u64,
}

/// How many times a terminal callback is delivered for `dup-callback`.
pub const DUPLICATE_CALLBACKS: u32 = 3;

impl Fate {
    /// Decides the fate of a task whose prompt carries `directives`; rates roll on `key`.
    pub fn decide(directives: &Directives, config: &SimConfig, key: &str) -> Self {
        let duration_ms = directives.delay_ms.unwrap_or(config.task_duration_ms);
        let accept_delay_ms = directives.accept_delay_ms.unwrap_or(config.accept_delay_ms);
        if directives.decides_fate() {
            // When outcome markers conflict the most persistent one wins.
            let outcome = if directives.never {
                Outcome::Never
            } else if directives.fail_then_success {
                Outcome::FailThenSucceed
            } else if directives.fail {
                Outcome::Fail
            } else {
                Outcome::Succeed
            };
            return Self {
                chosen_by: ChosenBy::Markers,
                outcome,
                callbacks: !directives.no_callback,
                dup_callback: directives.dup_callback,
                unknown_status: directives.unknown_status,
                evil_url: directives.evil_url,
                reject: directives.reject,
                create_retry: directives.create_retry,
                create_5xx: directives.create_5xx,
                duration_ms,
                accept_delay_ms,
            };
        }

        let rates = &config.rates;
        let hit = |name: &str, rate: f64| roll(config.seed, key, name) < rate;
        let outcome = if hit("fail-then-success", rates.fail_then_success) {
            Outcome::FailThenSucceed
        } else if hit("fail", rates.fail) {
            Outcome::Fail
        } else {
            Outcome::Succeed
        };
        Self {
            chosen_by: ChosenBy::Rates,
            outcome,
            callbacks: !hit("no-callback", rates.no_callback),
            dup_callback: hit("dup-callback", rates.dup_callback),
            unknown_status: hit("unknown-status", rates.unknown_status),
            evil_url: false,
            reject: false,
            create_retry: u32::from(hit("create-retry", rates.create_retry)),
            create_5xx: u32::from(hit("create-5xx", rates.create_5xx)),
            duration_ms,
            accept_delay_ms,
        }
    }
}

/// Why the n-th create request (from 1) for a task's key is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CreateRefusal {
    /// A retryable refusal (Kling 429/1303, kie 429).
    Retryable,
    /// A server error; `alternate` switches between the two flavours (500 / 503).
    ServerError { alternate: bool },
    /// A permanent refusal (Kling 400/1201, kie 422).
    Reject,
}

impl Fate {
    /// Retryable refusals come first, then server errors, then the verdict (None: accept).
    pub(crate) fn create_refusal(&self, attempt: u32) -> Option<CreateRefusal> {
        if attempt <= self.create_retry {
            Some(CreateRefusal::Retryable)
        } else if attempt <= self.create_retry.saturating_add(self.create_5xx) {
            let alternate = (attempt - self.create_retry).is_multiple_of(2);
            Some(CreateRefusal::ServerError { alternate })
        } else if self.reject {
            Some(CreateRefusal::Reject)
        } else {
            None
        }
    }
}

/// A number in [0, 1) fixed by the seed, the roll key and the fate's name.
fn roll(seed: u64, key: &str, name: &str) -> f64 {
    let digest = Sha256::new()
        .chain_update(seed.to_be_bytes())
        .chain_update(key.as_bytes())
        .chain_update([0])
        .chain_update(name.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // The top 53 bits fill an f64 mantissa exactly.
    (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_anywhere_in_the_prompt_combine() {
        let d = Directives::parse(
            "a cat [[sim:dup-callback]] on a boat [[sim:delay=250]][[sim:create-retry=2]] end",
        );
        assert!(d.dup_callback);
        assert_eq!(d.delay_ms, Some(250));
        assert_eq!(d.create_retry, 2);
        assert!(d.decides_fate());
    }

    #[test]
    fn timing_markers_leave_the_fate_to_the_rates() {
        let d = Directives::parse("[[sim:delay=10]] [[sim:accept-delay=5]]");
        assert!(!d.decides_fate());
        assert!(!Directives::parse("no markers at all").decides_fate());
        assert!(Directives::parse("[[sim:ok]]").decides_fate());
    }

    #[test]
    fn malformed_and_unknown_markers_are_ignored() {
        let d = Directives::parse("[[sim:delay=soon]] [[sim:explode]] [[sim:fail");
        assert_eq!(d, Directives::default());
    }

    #[test]
    fn create_errors_come_in_order_then_the_verdict() {
        let fate = Fate::decide(
            &Directives::parse("[[sim:create-retry=1]][[sim:create-5xx=2]]"),
            &SimConfig::default(),
            "k",
        );
        let answers: Vec<_> = (1..=4).map(|n| fate.create_refusal(n)).collect();
        assert_eq!(
            answers,
            [
                Some(CreateRefusal::Retryable),
                Some(CreateRefusal::ServerError { alternate: false }),
                Some(CreateRefusal::ServerError { alternate: true }),
                None,
            ]
        );
    }

    #[test]
    fn rates_are_a_pure_function_of_seed_and_key() {
        let config = SimConfig {
            seed: 42,
            rates: Rates { fail: 0.5, ..Rates::default() },
            ..SimConfig::default()
        };
        let fates = |config: &SimConfig| {
            (0..64)
                .map(|i| Fate::decide(&Directives::default(), config, &format!("k{i}")).outcome)
                .collect::<Vec<_>>()
        };
        let first = fates(&config);
        assert_eq!(first, fates(&config));
        let failed = first.iter().filter(|o| **o == Outcome::Fail).count();
        assert!((16..=48).contains(&failed), "{failed} of 64 failed at rate 0.5");
        assert_ne!(first, fates(&SimConfig { seed: 43, ..config }));
    }
}
