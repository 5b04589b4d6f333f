//! The model catalogue: which models clients may use, how each is priced, and the prompt
//! templates. Built once from settings (`[catalogue]`, `[models.*]`, `[prompt_templates.*]`) and
//! checked then, so a bad price table stops the process at start-up rather than at a submit.

mod pricing;
mod validate;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

pub use pricing::{aspect_factor, mode_factor, price};
pub use validate::{Submission, normalized_request_hash};

use crate::config::Settings;
use crate::generation::{Billing, MediaType, Mode};
use crate::providers::ProviderKind;

/// A factor in thousandths (1.2 is 1200), so prices are exact integer arithmetic.
pub type Permille = u64;

/// One model clients can ask for.
#[derive(Debug, Clone, Serialize)]
pub struct Model {
    /// The name clients use.
    pub name: String,
    /// Who runs it.
    pub provider: ProviderKind,
    /// The model family at the provider.
    #[serde(skip)]
    pub provider_model: String,
    /// Fixed adapter options.
    #[serde(skip)]
    pub options: BTreeMap<String, String>,
    /// What it makes.
    #[serde(rename = "type")]
    pub media: MediaType,
    /// When credits move.
    pub billing: Billing,
    /// Credits per 5-second unit (video) or per image, before factors.
    pub base_price: i64,
    /// Modes offered.
    pub modes: Vec<Mode>,
    /// Durations offered (seconds); the first is the default.
    pub durations: Vec<u32>,
    /// Aspect ratios offered; the first is the default.
    pub aspect_ratios: Vec<String>,
    /// Quality choices with their factors.
    #[serde(serialize_with = "pricing::serialize_qualities")]
    pub qualities: Vec<(String, Permille)>,
    /// The quality used when a request names none.
    pub default_quality: Option<String>,
    /// Longest prompt after the template, in characters.
    pub max_prompt_chars: usize,
    /// Most input images.
    pub max_images: usize,
    /// Takes a last frame (`end_image_url`) in image2video.
    pub end_frame: bool,
    /// Takes a `camera_control` in text2video and image2video.
    pub camera_control: bool,
    /// Time until an unfinished job fails and is refunded.
    #[serde(skip)]
    pub deadline: Duration,
    /// Provider usage units per 5-second unit, for settling at reported usage.
    #[serde(skip)]
    pub units_per_5s: Option<f64>,
}

impl Model {
    /// The provider usage a request of `duration` seconds is expected to report, where the model
    /// settles by usage.
    pub fn expected_units(&self, duration: Option<u32>) -> Option<f64> {
        Some(self.units_per_5s? * f64::from(duration?.div_ceil(5)))
    }
}

/// What a job that was expected to use `expected` units and reported `reported` costs: the same
/// fraction of its price, rounded up, and never more than the price.
pub fn settle_by_usage(cost: i64, expected: f64, reported: f64) -> i64 {
    if !(expected > 0.0 && reported.is_finite() && reported >= 0.0) || reported >= expected {
        return cost;
    }
    // Whole thousandths of a unit keep the arithmetic exact enough and integer. Usage is seconds
    // or items: a figure past 10^15 units is not usage, and the price stands.
    let thousandths = |units: f64| {
        let scaled = (units * 1000.0).round();
        #[allow(clippy::cast_possible_truncation, reason = "checked to be below 10^18 first")]
        (scaled < 1e18).then_some(scaled as i128)
    };
    let (Some(expected), Some(reported)) = (thousandths(expected), thousandths(reported)) else {
        return cost;
    };
    if expected == 0 {
        return cost;
    }
    // At most `cost` (reported < expected), so it fits in an i64.
    i64::try_from((i128::from(cost) * reported + expected - 1) / expected).unwrap_or(cost)
}

impl Model {
    /// The factor of a quality this model offers.
    pub fn quality_factor(&self, quality: &str) -> Option<Permille> {
        self.qualities.iter().find(|(name, _)| name == quality).map(|(_, f)| *f)
    }
}

/// A prompt template.
#[derive(Debug, Clone)]
pub struct PromptTemplate {
    /// Before the client's prompt.
    pub prefix: String,
    /// After the client's prompt.
    pub suffix: String,
    /// Used when the request has no negative prompt.
    pub default_negative_prompt: Option<String>,
}

impl PromptTemplate {
    /// The prompt the provider receives.
    pub fn apply(&self, prompt: &str) -> String {
        format!("{}{prompt}{}", self.prefix, self.suffix)
    }
}

/// The catalogue.
#[derive(Debug, Clone)]
pub struct Catalogue {
    /// The price table's version, stored on every generation.
    pub version: String,
    models: BTreeMap<String, Model>,
    templates: BTreeMap<String, PromptTemplate>,
    /// Accept input images on private addresses, plain http and any port (the local stack and
    /// tests, whose images live on loopback).
    allow_private_image_urls: bool,
}

impl Catalogue {
    /// Builds and checks the catalogue; the error names every problem found.
    pub fn from_settings(settings: &Settings) -> Result<Self, String> {
        let mut problems = Vec::new();
        let mut models = BTreeMap::new();
        for (name, m) in &settings.models {
            if !m.enabled {
                continue;
            }
            let mut bad = |what: String| problems.push(format!("models.{name}: {what}"));
            let (provider, media, billing) = (m.provider, m.media, m.billing);
            if m.base_price <= 0 {
                bad("base_price must be positive".into());
            }
            let mut modes = Vec::new();
            for mode in &m.modes {
                if mode.media() == media {
                    modes.push(*mode);
                } else {
                    bad(format!("mode {mode} does not make a {media}"));
                }
            }
            if modes.is_empty() {
                bad("offers no modes".into());
            }
            if media == MediaType::Video {
                if m.durations.is_empty() || m.durations.contains(&0) {
                    bad("a video model needs positive durations".into());
                }
                if m.aspect_ratios.is_empty() {
                    bad("a video model needs aspect ratios".into());
                }
                for ratio in &m.aspect_ratios {
                    if aspect_factor(ratio).is_none() {
                        bad(format!("aspect ratio {ratio} has no price factor"));
                    }
                }
            } else if !m.durations.is_empty() {
                bad("an image model has no durations".into());
            }
            let mut qualities = Vec::new();
            for (quality, factor) in &m.qualities {
                if !(factor.is_finite() && *factor > 0.0 && *factor < 100.0) {
                    bad(format!("quality {quality} has factor {factor}, not in (0, 100)"));
                } else {
                    #[allow(
                        clippy::cast_possible_truncation,
                        clippy::cast_sign_loss,
                        reason = "the factor is checked to be in (0, 100): at most 100,000 permille"
                    )]
                    let permille = (factor * 1000.0).round() as Permille;
                    qualities.push((quality.clone(), permille));
                }
            }
            match (&m.default_quality, qualities.is_empty()) {
                (None, false) => bad("default_quality is required with qualities".into()),
                (Some(q), false) if !m.qualities.contains_key(q) => {
                    bad(format!("default_quality {q} is not one of the qualities"))
                }
                (Some(_), true) => bad("default_quality without qualities".into()),
                _ => {}
            }
            if m.max_prompt_chars == 0 {
                bad("max_prompt_chars must be positive".into());
            }
            if m.units_per_5s.is_some_and(|u| !(u.is_finite() && u > 0.0)) {
                bad("units_per_5s must be positive".into());
            }
            if m.end_frame
                && !(provider == ProviderKind::Kling && modes.contains(&Mode::Image2Video))
            {
                bad("end_frame needs a Kling model offering image2video".into());
            }
            let moves = modes.iter().any(|m| matches!(m, Mode::Text2Video | Mode::Image2Video));
            if m.camera_control && !(provider == ProviderKind::Kling && moves) {
                bad("camera_control needs a Kling model offering text2video or image2video".into());
            }
            if m.deadline_seconds == 0 {
                bad("deadline_seconds must be positive".into());
            }
            models.insert(
                name.clone(),
                Model {
                    name: name.clone(),
                    provider,
                    provider_model: m.provider_model.clone(),
                    options: m.options.clone(),
                    media,
                    billing,
                    base_price: m.base_price,
                    modes,
                    durations: m.durations.clone(),
                    aspect_ratios: m.aspect_ratios.clone(),
                    qualities,
                    default_quality: m.default_quality.clone(),
                    max_prompt_chars: m.max_prompt_chars,
                    max_images: m.max_images,
                    end_frame: m.end_frame,
                    camera_control: m.camera_control,
                    deadline: Duration::from_secs(m.deadline_seconds),
                    units_per_5s: m.units_per_5s,
                },
            );
        }
        if settings.catalogue.version.trim().is_empty() {
            problems.push("catalogue.version must not be empty".into());
        }
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        let templates = settings
            .prompt_templates
            .iter()
            .map(|(name, t)| {
                let template = PromptTemplate {
                    prefix: t.prefix.clone(),
                    suffix: t.suffix.clone(),
                    default_negative_prompt: t.default_negative_prompt.clone(),
                };
                (name.clone(), template)
            })
            .collect();
        Ok(Self {
            version: settings.catalogue.version.clone(),
            models,
            templates,
            allow_private_image_urls: settings.catalogue.allow_private_image_urls,
        })
    }

    /// An offered model by name.
    pub fn model(&self, name: &str) -> Option<&Model> {
        self.models.get(name)
    }

    /// Every offered model, by name.
    pub fn models(&self) -> impl Iterator<Item = &Model> {
        self.models.values()
    }

    /// A prompt template by `sub_type`.
    pub fn template(&self, sub_type: &str) -> Option<&PromptTemplate> {
        self.templates.get(sub_type)
    }

    /// The `sub_type`s with a template.
    pub fn sub_types(&self) -> impl Iterator<Item = &str> {
        self.templates.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_below_expectation_settles_the_same_fraction_rounded_up() {
        assert_eq!(settle_by_usage(84, 4.0, 2.0), 42);
        assert_eq!(settle_by_usage(85, 4.0, 2.0), 43);
        assert_eq!(settle_by_usage(84, 4.0, 4.0), 84);
        assert_eq!(settle_by_usage(84, 4.0, 9.0), 84, "never above the price");
        assert_eq!(settle_by_usage(84, 4.0, 0.0), 0);
        assert_eq!(settle_by_usage(84, 0.0, 1.0), 84);
        assert_eq!(settle_by_usage(84, 4.0, f64::NAN), 84);
        assert_eq!(
            settle_by_usage(i64::MAX, 1e300, 1e299),
            i64::MAX,
            "not usage: the price stands"
        );
        assert_eq!(settle_by_usage(84, 0.0001, 0.0), 84, "below the resolution: the price stands");
    }
}
