//! Copying a completed generation's result files into gengate's storage: download (streamed to a
//! staging file), probe, upload (streamed, a part at a time), poster. The staging directory is
//! removed whatever happens. What to do with the outcome is the `generation.archive` handler's
//! business (`crate::handlers`).

pub mod fetch;
pub mod media;

use std::path::{Path, PathBuf};

use gengate_shared::generation::archive::{ArchivedFile, FileKind, ResultFileRow};
use gengate_shared::storage;

use crate::context::WorkerContext;

/// Why a copy (or its download) did not end with the file in storage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CopyError {
    /// Trying again later may help.
    #[error("{0}")]
    Retryable(String),
    /// It will not: the file ends `failed` with this reason.
    #[error("{reason}: {detail}")]
    Permanent {
        /// A short, stable name: `source_gone`, `too_large`, `redirect_refused`,
        /// `source_refused`.
        reason: &'static str,
        /// What happened.
        detail: String,
    },
}

/// Copies one file; returns what was kept.
pub async fn copy(ctx: &WorkerContext, file: &ResultFileRow) -> Result<ArchivedFile, CopyError> {
    let base = ctx.settings.archive.temp_dir.clone().unwrap_or_else(std::env::temp_dir);
    // A directory of this copy's own: a redelivered message may copy the same file at once.
    let staging = base.join(format!("gengate-archive-{}-{}", file.id, uuid::Uuid::now_v7()));
    tokio::fs::create_dir_all(&staging)
        .await
        .map_err(|e| CopyError::Retryable(format!("creating {}: {e}", staging.display())))?;
    let copied = copy_staged(ctx, file, &staging).await;
    if let Err(err) = tokio::fs::remove_dir_all(&staging).await {
        tracing::warn!(error = %err, dir = %staging.display(), "staging directory not removed");
    }
    copied
}

async fn copy_staged(
    ctx: &WorkerContext,
    file: &ResultFileRow,
    staging: &Path,
) -> Result<ArchivedFile, CopyError> {
    let settings = &ctx.settings.archive;
    let source = staging.join("source");
    let fetched = ctx.fetcher.fetch(&file.source_url, &source).await?;
    let probe = media::probe(&settings.ffprobe, &source).await;
    let extension = extension(file, fetched.content_type.as_deref());
    let key = match file.kind {
        FileKind::Video => storage::video_key(file.generation_id, &file.label, &extension),
        FileKind::Image => {
            let position = file.label.parse().unwrap_or_default();
            storage::image_key(file.generation_id, position, &extension)
        }
    };
    upload(ctx, &key, &source).await?;
    metrics::counter!("gengate_archive_bytes_total").increment(fetched.size_bytes);

    let mut archived = ArchivedFile {
        object_key: key,
        size_bytes: i64::try_from(fetched.size_bytes).unwrap_or(i64::MAX),
        sha256: fetched.sha256,
        ..ArchivedFile::default()
    };
    match (probe, file.kind) {
        (Ok(probe), kind) => {
            archived.width = probe.width;
            archived.height = probe.height;
            archived.codec = probe.codec.clone();
            if kind == FileKind::Video {
                archived.duration_s = probe.duration_s;
                if probe.is_video {
                    match poster(ctx, file, &source, staging).await {
                        Ok(key) => archived.poster_key = Some(key),
                        Err(why) => {
                            archived.detail = Some(format!("archived without a poster: {why}"))
                        }
                    }
                } else {
                    archived.detail = Some("archived without a poster: not a video".to_owned());
                }
            }
        }
        (Err(why), FileKind::Video) => {
            archived.detail = Some(format!("archived without a poster: not a video ({why})"));
        }
        (Err(why), FileKind::Image) => {
            archived.detail = Some(format!("archived without its size: not an image ({why})"));
        }
    }
    Ok(archived)
}

async fn poster(
    ctx: &WorkerContext,
    file: &ResultFileRow,
    video: &Path,
    staging: &Path,
) -> Result<String, String> {
    let frame: PathBuf = staging.join("poster.jpg");
    media::poster(&ctx.settings.archive.ffmpeg, video, &frame).await?;
    let key = storage::poster_key(file.generation_id, &file.label);
    upload(ctx, &key, &frame).await.map_err(|e| e.to_string())?;
    Ok(key)
}

async fn upload(ctx: &WorkerContext, key: &str, path: &Path) -> Result<(), CopyError> {
    ctx.storage
        .put_file(key, path, storage::content_type(key))
        .await
        .map(drop)
        .map_err(|e| CopyError::Retryable(format!("storing {key}: {e}")))
}

/// The file's extension: from its URL's path when it names a known one, else from its content
/// type, else what its kind usually is.
fn extension(file: &ResultFileRow, content_type: Option<&str>) -> String {
    const KNOWN: [&str; 8] = ["mp4", "mov", "webm", "png", "jpg", "jpeg", "webp", "gif"];
    let from_url = url::Url::parse(&file.source_url).ok().and_then(|url| {
        let name = url.path_segments()?.next_back()?.to_ascii_lowercase();
        let (_, extension) = name.rsplit_once('.')?;
        KNOWN.contains(&extension).then(|| extension.to_owned())
    });
    let from_type = || {
        Some(match content_type?.split(';').next()?.trim() {
            "video/mp4" => "mp4",
            "video/quicktime" => "mov",
            "video/webm" => "webm",
            "image/png" => "png",
            "image/jpeg" => "jpg",
            "image/webp" => "webp",
            "image/gif" => "gif",
            _ => return None,
        })
    };
    from_url.or_else(|| from_type().map(str::to_owned)).unwrap_or_else(|| {
        match file.kind {
            FileKind::Video => "mp4",
            FileKind::Image => "png",
        }
        .to_owned()
    })
}
