//! Result files. Every succeeded task's result URL points back at the simulator
//! (`{sim_url}/files/{task_id}.mp4`, or `.png` for image models) and is served as a tiny but real
//! file, so a gateway that downloads or sniffs results has something genuine to chew on.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::state::Sim;

/// Host of the result URLs of `[[sim:evil-url]]` tasks: never on an allowlist.
pub const EVIL_ORIGIN: &str = "https://evil.example.com";

/// What a result file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Media {
    Video,
    Image,
}

impl Media {
    /// kie.ai serves image models too; any model without `video` in its name is taken for one
    /// (`sora-2-image-to-video` is a video model, `google/nano-banana` an image model).
    pub(crate) fn of_kie_model(model: &str) -> Self {
        if model.contains("video") { Self::Video } else { Self::Image }
    }

    fn extension(self) -> &'static str {
        match self {
            Self::Video => "mp4",
            Self::Image => "png",
        }
    }
}

/// The result URL of a task.
pub(crate) fn result_url(base_url: &str, task_id: &str, media: Media, evil: bool) -> String {
    let origin = if evil { EVIL_ORIGIN } else { base_url };
    format!("{origin}/files/{task_id}.{}", media.extension())
}

pub(crate) fn routes() -> Router<Sim> {
    Router::new().route("/files/{name}", get(serve))
}

/// Serves the file of a task the simulator knows; anything else is 404, like an expired result.
async fn serve(State(sim): State<Sim>, Path(name): Path<String>) -> Response {
    let Some((task_id, extension)) = name.rsplit_once('.') else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if !sim.with(|state| state.tasks.contains_key(task_id)) {
        return StatusCode::NOT_FOUND.into_response();
    }
    match extension {
        "mp4" => ([(header::CONTENT_TYPE, "video/mp4")], TINY_MP4.as_slice()).into_response(),
        "png" => ([(header::CONTENT_TYPE, "image/png")], TINY_PNG).into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A 1×1 transparent PNG (grey + alpha, 8 bit): signature, IHDR, IDAT, IEND, CRCs checked.
pub const TINY_PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x04, 0x00, 0x00, 0x00, 0xb5, 0x1c, 0x0c,
    0x02, 0x00, 0x00, 0x00, 0x0b, 0x49, 0x44, 0x41, 0x54, 0x78, 0xda, 0x63, 0x64, 0x60, 0x00, 0x00,
    0x00, 0x06, 0x00, 0x02, 0x30, 0x81, 0xd0, 0x2f, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44,
    0xae, 0x42, 0x60, 0x82,
];

/// A structurally valid ISO-BMFF / MP4 file: an `ftyp` box and a `moov` box holding a one-second
/// movie header with no tracks. Built from its boxes so its layout can be read here.
pub static TINY_MP4: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let mut ftyp = Vec::new();
    ftyp.extend_from_slice(b"isom"); // major brand
    ftyp.extend_from_slice(&0x200u32.to_be_bytes()); // minor version
    ftyp.extend_from_slice(b"isomiso2mp41"); // compatible brands

    let mut mvhd = Vec::new();
    mvhd.extend_from_slice(&[0; 4]); // version 0, flags
    mvhd.extend_from_slice(&[0; 8]); // creation and modification time
    mvhd.extend_from_slice(&1000u32.to_be_bytes()); // timescale: milliseconds
    mvhd.extend_from_slice(&1000u32.to_be_bytes()); // duration: one second
    mvhd.extend_from_slice(&0x0001_0000u32.to_be_bytes()); // rate 1.0
    mvhd.extend_from_slice(&0x0100u16.to_be_bytes()); // volume 1.0
    mvhd.extend_from_slice(&[0; 10]); // reserved
    for value in [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
        mvhd.extend_from_slice(&value.to_be_bytes()); // identity matrix
    }
    mvhd.extend_from_slice(&[0; 24]); // pre-defined
    mvhd.extend_from_slice(&1u32.to_be_bytes()); // next track id

    let mut file = mp4_box(b"ftyp", &ftyp);
    file.extend(mp4_box(b"moov", &mp4_box(b"mvhd", &mvhd)));
    file
});

fn mp4_box(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
    let size = u32::try_from(8 + payload.len()).expect("tiny boxes");
    let mut bytes = size.to_be_bytes().to_vec();
    bytes.extend_from_slice(kind);
    bytes.extend_from_slice(payload);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mp4_is_a_sequence_of_well_sized_boxes() {
        let mut rest = TINY_MP4.as_slice();
        let mut kinds = Vec::new();
        while !rest.is_empty() {
            let size = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            kinds.push(String::from_utf8(rest[4..8].to_vec()).unwrap());
            rest = &rest[size..];
        }
        assert_eq!(kinds, ["ftyp", "moov"]);
        assert_eq!(&TINY_MP4[4..12], b"ftypisom");
    }

    #[test]
    fn kie_video_models_get_videos_and_the_rest_images() {
        assert_eq!(Media::of_kie_model("sora-2-image-to-video"), Media::Video);
        assert_eq!(Media::of_kie_model("wan/2-6-text-to-video"), Media::Video);
        assert_eq!(Media::of_kie_model("google/nano-banana"), Media::Image);
    }
}
