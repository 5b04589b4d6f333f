//! Result files. Every succeeded task's result URL points back at the simulator
//! (`{sim_url}/files/{task_id}.mp4`, or `.png` for image models) and is served as a tiny but real
//! file, so a gateway that downloads, probes and makes posters of results has something genuine
//! to chew on; or, by the task's markers, as a file that is gone, never ends, is not a video, or
//! is as large as a test needs.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use futures_util::StreamExt;

use super::fate::Directives;
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
/// A task's `[[sim:result-…]]` markers change what its file is (see `docs/simulator.md`).
async fn serve(State(sim): State<Sim>, Path(name): Path<String>) -> Response {
    let Some((task_id, extension)) = name.rsplit_once('.') else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Some(prompt) = sim.with(|state| state.tasks.get(task_id).map(|task| task.prompt.clone()))
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let directives = Directives::parse(&prompt);
    let content_type = match extension {
        "mp4" => "video/mp4",
        "png" => "image/png",
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    if directives.result_gone {
        return StatusCode::GONE.into_response();
    }
    if directives.result_redirect {
        let elsewhere = format!("{EVIL_ORIGIN}/files/{name}");
        return (StatusCode::FOUND, [(header::LOCATION, elsewhere)]).into_response();
    }
    if directives.result_stall {
        // The headers and a first chunk, then nothing: a reader times out.
        let stream = futures_util::stream::once(async {
            Ok::<_, std::io::Error>(Bytes::from_static(b"...."))
        })
        .chain(futures_util::stream::pending());
        return ([(header::CONTENT_TYPE, content_type)], Body::from_stream(stream)).into_response();
    }
    if directives.result_text {
        return ([(header::CONTENT_TYPE, "text/plain")], "this is not a video\n").into_response();
    }
    if let Some(size) = directives.result_size {
        return ([(header::CONTENT_TYPE, content_type)], large_body(size)).into_response();
    }
    match extension {
        "mp4" => ([(header::CONTENT_TYPE, content_type)], TINY_MP4).into_response(),
        _ => ([(header::CONTENT_TYPE, content_type)], TINY_PNG).into_response(),
    }
}

/// `size` bytes, made as they are sent (a 500 MB file costs the simulator no memory), with its
/// `Content-Length`.
fn large_body(size: u64) -> Response {
    const CHUNK: u64 = 64 * 1024;
    let chunk = Bytes::from(vec![b'g'; usize::try_from(CHUNK).expect("64 KiB")]);
    let chunks = (0..size.div_ceil(CHUNK)).map(move |i| {
        let len = usize::try_from(CHUNK.min(size - i * CHUNK)).expect("at most a chunk");
        Ok::<_, std::io::Error>(chunk.slice(..len))
    });
    let mut response = Response::new(Body::from_stream(futures_util::stream::iter(chunks)));
    response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    response
}

/// A real PNG, 32×32 (see `tests/sim/fixtures/media/README.md`).
pub const TINY_PNG: &[u8] = include_bytes!("../fixtures/media/tiny.png");

/// A real MP4: one second of 64×36 H.264 (see `tests/sim/fixtures/media/README.md`).
pub const TINY_MP4: &[u8] = include_bytes!("../fixtures/media/tiny.mp4");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixtures_are_an_mp4_and_a_png() {
        assert_eq!(&TINY_MP4[4..8], b"ftyp");
        assert_eq!(&TINY_PNG[..8], b"\x89PNG\r\n\x1a\n");
    }

    #[test]
    fn kie_video_models_get_videos_and_the_rest_images() {
        assert_eq!(Media::of_kie_model("sora-2-image-to-video"), Media::Video);
        assert_eq!(Media::of_kie_model("wan/2-6-text-to-video"), Media::Video);
        assert_eq!(Media::of_kie_model("google/nano-banana"), Media::Image);
    }
}
