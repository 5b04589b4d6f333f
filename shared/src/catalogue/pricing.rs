//! Prices in whole credits, computed exactly.
//!
//! Video: base × ⌈duration / 5⌉ × aspect factor × mode factor × quality factor, rounded up.
//! Image: base × quality factor, rounded up. Factors are kept in thousandths and multiplied as
//! integers, so 50 × 1.2 is 60, not 60.000000000000014 rounded up to 61.

use serde::Serializer;
use serde::ser::SerializeMap;

use super::{Model, Permille};
use crate::generation::{MediaType, Mode};

/// The aspect-ratio factor: 16:9 and 9:16 1.2, 1:1 1.0, 21:9 and 9:21 1.3.
pub fn aspect_factor(ratio: &str) -> Option<Permille> {
    match ratio {
        "16:9" | "9:16" => Some(1200),
        "1:1" => Some(1000),
        "21:9" | "9:21" => Some(1300),
        _ => None,
    }
}

/// The mode factor: text2video 1.0, image2video 1.1, omni-video 1.2, multi-image2video 1.3;
/// image modes 1.0.
pub fn mode_factor(mode: Mode) -> Permille {
    match mode {
        Mode::Text2Video | Mode::Text2Image | Mode::Image2Image => 1000,
        Mode::Image2Video => 1100,
        Mode::OmniVideo => 1200,
        Mode::MultiImage2Video => 1300,
    }
}

/// The price of one generation, or `None` for a combination the model does not price (an
/// aspect ratio or quality without a factor).
pub fn price(
    model: &Model,
    mode: Mode,
    duration: Option<u32>,
    aspect_ratio: Option<&str>,
    quality: Option<&str>,
) -> Option<i64> {
    let quality = match quality {
        Some(q) => model.quality_factor(q)?,
        None => 1000,
    };
    let base = u128::try_from(model.base_price).ok()?;
    let (numerator, denominator) = match model.media {
        MediaType::Video => {
            let units = u128::from(duration?.div_ceil(5));
            let aspect = u128::from(aspect_factor(aspect_ratio?)?);
            let mode = u128::from(mode_factor(mode));
            (base * units * aspect * mode * u128::from(quality), 1_000_000_000u128)
        }
        MediaType::Image => (base * u128::from(quality), 1000u128),
    };
    i64::try_from(numerator.div_ceil(denominator)).ok()
}

pub(super) fn serialize_qualities<S: Serializer>(
    qualities: &[(String, Permille)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut map = serializer.serialize_map(Some(qualities.len()))?;
    for (name, factor) in qualities {
        map.serialize_entry(name, &(*factor as f64 / 1000.0))?;
    }
    map.end()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::generation::Billing;
    use crate::providers::ProviderKind;

    fn model(media: MediaType, base: i64, qualities: &[(&str, Permille)]) -> Model {
        Model {
            name: "m".into(),
            provider: ProviderKind::Kling,
            provider_model: "p".into(),
            options: BTreeMap::new(),
            media,
            billing: Billing::Prepaid,
            base_price: base,
            modes: vec![],
            durations: vec![],
            aspect_ratios: vec![],
            qualities: qualities.iter().map(|(n, f)| (n.to_string(), *f)).collect(),
            default_quality: None,
            max_prompt_chars: 100,
            max_images: 4,
            end_frame: false,
            camera_control: false,
            deadline: Duration::from_secs(60),
            units_per_5s: None,
        }
    }

    #[test]
    fn video_prices_follow_the_formula_and_round_up() {
        let m = model(MediaType::Video, 40, &[]);
        // 40 × 1 × 1.2 × 1.0 = 48
        assert_eq!(price(&m, Mode::Text2Video, Some(5), Some("16:9"), None), Some(48));
        // 40 × 2 × 1.0 × 1.1 = 88
        assert_eq!(price(&m, Mode::Image2Video, Some(10), Some("1:1"), None), Some(88));
        // 40 × 1 × 1.2 × 1.1 = 52.8 → 53
        assert_eq!(price(&m, Mode::Image2Video, Some(5), Some("9:16"), None), Some(53));
        // 40 × 2 × 1.3 × 1.3 = 135.2 → 136
        assert_eq!(price(&m, Mode::MultiImage2Video, Some(10), Some("21:9"), None), Some(136));
        // ⌈3 / 5⌉ = 1 and ⌈6 / 5⌉ = 2 units; omni 1.2
        assert_eq!(price(&m, Mode::OmniVideo, Some(3), Some("1:1"), None), Some(48));
        assert_eq!(price(&m, Mode::OmniVideo, Some(6), Some("1:1"), None), Some(96));
    }

    #[test]
    fn exact_products_are_not_pushed_up_by_float_error() {
        // 50 × 1.2 in floating point is 60.000000000000014.
        let m = model(MediaType::Video, 50, &[]);
        assert_eq!(price(&m, Mode::Text2Video, Some(5), Some("16:9"), None), Some(60));
        let m = model(MediaType::Video, 25, &[("1080p", 1500)]);
        // 25 × 3 × 1.2 × 1.5 = 135
        assert_eq!(price(&m, Mode::Text2Video, Some(15), Some("9:16"), Some("1080p")), Some(135));
    }

    #[test]
    fn images_are_priced_per_item_with_quality() {
        let m = model(MediaType::Image, 4, &[("hd", 1250)]);
        assert_eq!(price(&m, Mode::Text2Image, None, Some("16:9"), None), Some(4));
        assert_eq!(price(&m, Mode::Image2Image, None, None, Some("hd")), Some(5));
    }

    #[test]
    fn unpriced_combinations_have_no_price() {
        let m = model(MediaType::Video, 40, &[]);
        assert_eq!(price(&m, Mode::Text2Video, Some(5), Some("4:3"), None), None);
        assert_eq!(price(&m, Mode::Text2Video, Some(5), Some("16:9"), Some("8k")), None);
        assert_eq!(price(&m, Mode::Text2Video, None, Some("16:9"), None), None);
    }
}
