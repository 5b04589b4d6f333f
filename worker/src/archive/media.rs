//! What `ffprobe` and `ffmpeg` tell of a file: its duration, size in pixels and codec, and a
//! poster (its first frame as a JPEG). Both run as child processes with a time limit, on the file
//! staged on disk; their output is parsed, never trusted to be there.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::process::Command;

/// How long either program may run on one file.
const TIME_LIMIT: Duration = Duration::from_secs(120);

/// What the probe found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Probe {
    /// Seconds (videos).
    pub duration_s: Option<f32>,
    /// Pixels.
    pub width: Option<i32>,
    /// Pixels.
    pub height: Option<i32>,
    /// The first video stream's codec (`h264`, `png`, …).
    pub codec: Option<String>,
    /// Whether the file has a moving-picture stream (a still image has a video stream too, but
    /// no duration worth the name and a single frame).
    pub is_video: bool,
}

#[derive(Deserialize)]
struct ProbeOutput {
    #[serde(default)]
    streams: Vec<Stream>,
    #[serde(default)]
    format: Option<Format>,
}

#[derive(Deserialize)]
struct Stream {
    codec_type: Option<String>,
    codec_name: Option<String>,
    width: Option<i32>,
    height: Option<i32>,
    duration: Option<String>,
}

#[derive(Deserialize)]
struct Format {
    duration: Option<String>,
    format_name: Option<String>,
}

/// Runs `ffprobe` on `file`. `Err` says why it could not read it (not a media file, or the
/// program is missing).
pub async fn probe(ffprobe: &Path, file: &Path) -> Result<Probe, String> {
    let mut command = Command::new(ffprobe);
    command
        .args(["-v", "error", "-print_format", "json", "-show_format", "-show_streams"])
        .arg(file);
    let output = run(command, "ffprobe").await?;
    let parsed: ProbeOutput =
        serde_json::from_slice(&output).map_err(|e| format!("ffprobe's output: {e}"))?;
    let Some(stream) = parsed.streams.iter().find(|s| s.codec_type.as_deref() == Some("video"))
    else {
        return Err("no picture in it".to_owned());
    };
    let duration = parsed
        .format
        .as_ref()
        .and_then(|f| f.duration.as_deref())
        .or(stream.duration.as_deref())
        .and_then(|d| d.parse::<f32>().ok())
        .filter(|d| d.is_finite() && *d > 0.0);
    let still = parsed
        .format
        .as_ref()
        .and_then(|f| f.format_name.as_deref())
        .is_some_and(|name| name.contains("pipe") || name.contains("image2"));
    Ok(Probe {
        duration_s: duration,
        width: stream.width.filter(|w| *w > 0),
        height: stream.height.filter(|h| *h > 0),
        codec: stream.codec_name.clone(),
        is_video: !still && duration.is_some(),
    })
}

/// Writes the first frame of `video` to `poster` as a JPEG.
pub async fn poster(ffmpeg: &Path, video: &Path, poster: &Path) -> Result<(), String> {
    let mut command = Command::new(ffmpeg);
    command
        .args(["-v", "error", "-nostdin", "-y", "-i"])
        .arg(video)
        .args(["-frames:v", "1", "-q:v", "3", "-f", "image2", "-c:v", "mjpeg"])
        .arg(poster);
    run(command, "ffmpeg").await.map(drop)
}

async fn run(mut command: Command, name: &str) -> Result<Vec<u8>, String> {
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let child = command.spawn().map_err(|e| format!("{name} could not be started: {e}"))?;
    let output = tokio::time::timeout(TIME_LIMIT, child.wait_with_output())
        .await
        .map_err(|_| format!("{name} took longer than {} s", TIME_LIMIT.as_secs()))?
        .map_err(|e| format!("{name}: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("no message");
        return Err(format!("{name} could not read it: {}", first.trim()));
    }
    Ok(output.stdout)
}
