//! A completed generation's result files, and their copy into gengate's storage: which files wait
//! to be copied, and the conditional updates that record how each copy ended. A file is `pending`
//! from its job's completion until a worker archives it (`archived`, with its object key, probe and
//! poster) or gives up (`failed`, with the reason); `gengatectl archive retry` makes a failed file
//! pending again, `archive purge` deletes the objects of old generations (`purged`). Every update
//! is conditional on the state it leaves, so a copy that runs twice records once.

use serde::Serialize;
use serde_json::json;
use sqlx::PgExecutor;
use time::OffsetDateTime;
use uuid::Uuid;

use super::GenerationStatus;
use super::transitions::{self, Cause};
use crate::db::Tx;
use crate::ids::GenerationId;
use crate::names::named_enum;
use crate::outbox;
use crate::queue::{Envelope, payloads};

named_enum! {
    /// Where a result file's copy into storage is.
    pub enum ArchiveStatus ("archive status") {
        /// Waiting for (or under) its copy; clients get the provider's URL.
        Pending = "pending",
        /// Copied: clients get links to gengate's copy.
        Archived = "archived",
        /// Not copied, for the recorded reason; clients keep the provider's URL.
        Failed = "failed",
        /// Its copy was deleted by retention (`gengatectl archive purge`).
        Purged = "purged",
    }
}

/// Which table a file lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    /// `generation_videos`: a video, with a quality label, a poster and a duration.
    Video,
    /// `generation_images`: an image at a position.
    Image,
}

impl FileKind {
    fn table(self) -> &'static str {
        match self {
            FileKind::Video => "generation_videos",
            FileKind::Image => "generation_images",
        }
    }
}

/// One result file as recorded at completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResultFileRow {
    /// Video or image.
    pub kind: FileKind,
    /// The row.
    pub id: Uuid,
    /// Its generation.
    pub generation_id: GenerationId,
    /// The video's quality label (`720p`, `original`, `original-2`) or the image's position.
    pub label: String,
    /// Where the provider serves it (allowlisted and in normal form when it was recorded).
    pub source_url: String,
}

#[derive(sqlx::FromRow)]
struct FileRow {
    kind: String,
    id: Uuid,
    generation_id: GenerationId,
    label: String,
    url: String,
}

impl From<FileRow> for ResultFileRow {
    fn from(row: FileRow) -> Self {
        let kind = if row.kind == "video" { FileKind::Video } else { FileKind::Image };
        Self {
            kind,
            id: row.id,
            generation_id: row.generation_id,
            label: row.label,
            source_url: row.url,
        }
    }
}

/// The files of `generation` that wait to be copied.
pub async fn pending_files(
    executor: impl PgExecutor<'_>,
    generation: GenerationId,
) -> Result<Vec<ResultFileRow>, sqlx::Error> {
    let rows: Vec<FileRow> = sqlx::query_as(
        "SELECT 'video' AS kind, id, generation_id, quality AS label, url FROM generation_videos
         WHERE generation_id = $1 AND archive_status = 'pending'
         UNION ALL
         SELECT 'image', id, generation_id, position::text, url FROM generation_images
         WHERE generation_id = $1 AND archive_status = 'pending'
         ORDER BY kind, label",
    )
    .bind(generation)
    .fetch_all(executor)
    .await?;
    Ok(rows.into_iter().map(ResultFileRow::from).collect())
}

/// What a copy kept of a file.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ArchivedFile {
    /// Where the file is in the store.
    pub object_key: String,
    /// Where its poster is, for a video that has one.
    pub poster_key: Option<String>,
    /// Its size.
    pub size_bytes: i64,
    /// SHA-256 of its bytes.
    #[serde(skip)]
    pub sha256: [u8; 32],
    /// Pixels, when the probe could tell.
    pub width: Option<i32>,
    /// Pixels, when the probe could tell.
    pub height: Option<i32>,
    /// The codec the probe found (`h264`, `png`, …).
    pub codec: Option<String>,
    /// Seconds, for a video the probe could read.
    pub duration_s: Option<f32>,
    /// What is missing, if anything (`archived without a poster: not a video`).
    pub detail: Option<String>,
}

/// Records a file as archived, if it is still pending. `false`: another copy recorded it first
/// (or it was failed meanwhile).
pub async fn mark_archived(
    executor: impl PgExecutor<'_>,
    file: &ResultFileRow,
    archived: &ArchivedFile,
) -> Result<bool, sqlx::Error> {
    // Videos keep a poster and a duration besides; images have neither.
    let query = match file.kind {
        FileKind::Video => sqlx::query(
            "UPDATE generation_videos SET archive_status = 'archived', object_key = $2,
                    size_bytes = $3, sha256 = $4, width = $5, height = $6, codec = $7,
                    archive_detail = $8, archived_at = now(),
                    poster_key = $9, duration_s = COALESCE($10, duration_s)
             WHERE id = $1 AND archive_status = 'pending'",
        ),
        FileKind::Image => sqlx::query(
            "UPDATE generation_images SET archive_status = 'archived', object_key = $2,
                    size_bytes = $3, sha256 = $4, width = $5, height = $6, codec = $7,
                    archive_detail = $8, archived_at = now()
             WHERE id = $1 AND archive_status = 'pending'",
        ),
    };
    let mut query = query
        .bind(file.id)
        .bind(&archived.object_key)
        .bind(archived.size_bytes)
        .bind(archived.sha256.as_slice())
        .bind(archived.width)
        .bind(archived.height)
        .bind(&archived.codec)
        .bind(&archived.detail);
    if file.kind == FileKind::Video {
        query = query.bind(&archived.poster_key).bind(archived.duration_s);
    }
    Ok(query.execute(executor).await?.rows_affected() == 1)
}

/// Records a file as failed with `reason`, if it is still pending.
pub async fn mark_failed(
    executor: impl PgExecutor<'_>,
    file: &ResultFileRow,
    reason: &str,
) -> Result<bool, sqlx::Error> {
    let sql = format!(
        "UPDATE {} SET archive_status = 'failed', archive_detail = $2
         WHERE id = $1 AND archive_status = 'pending'",
        file.kind.table()
    );
    let updated = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(file.id)
        .bind(super::failure::outside_text(reason))
        .execute(executor)
        .await?
        .rows_affected();
    Ok(updated == 1)
}

/// Notes in the generation's audit log how the copy of one of its files ended: its source URL
/// (kept for good), and where it went or why it did not. Written in the transaction that
/// records the file's status, so the two never disagree.
pub async fn record_outcome(
    tx: &mut Tx,
    file: &ResultFileRow,
    outcome: serde_json::Value,
) -> Result<(), sqlx::Error> {
    let mut detail = json!({"kind": file.kind, "label": file.label, "source_url": file.source_url});
    if let (Some(detail), serde_json::Value::Object(outcome)) = (detail.as_object_mut(), outcome) {
        detail.extend(outcome);
    }
    let cause = Cause { kind: "archive", detail: Some(detail), ..Cause::default() };
    transitions::record(tx, file.generation_id, Some(GenerationStatus::Completed), None, &cause)
        .await
}

/// Makes the failed files of `generation` (or of every generation) pending again and queues a
/// copy of each such generation, in the caller's transaction. Returns the generations queued.
pub async fn requeue_failed(
    tx: &mut Tx,
    generation: Option<GenerationId>,
) -> Result<Vec<GenerationId>, sqlx::Error> {
    let generations: Vec<GenerationId> = sqlx::query_scalar(
        "WITH videos AS (
             UPDATE generation_videos SET archive_status = 'pending', archive_detail = NULL
             WHERE archive_status = 'failed' AND ($1::uuid IS NULL OR generation_id = $1)
             RETURNING generation_id),
         images AS (
             UPDATE generation_images SET archive_status = 'pending', archive_detail = NULL
             WHERE archive_status = 'failed' AND ($1::uuid IS NULL OR generation_id = $1)
             RETURNING generation_id)
         SELECT DISTINCT generation_id FROM (SELECT * FROM videos UNION ALL SELECT * FROM images) f
         ORDER BY generation_id",
    )
    .bind(generation)
    .fetch_all(&mut **tx)
    .await?;
    for id in &generations {
        enqueue(tx, *id).await?;
    }
    Ok(generations)
}

/// Queues the copy of a generation's pending files (in the transaction that made them pending).
pub async fn enqueue(tx: &mut Tx, generation: GenerationId) -> Result<(), sqlx::Error> {
    outbox::enqueue(tx, &Envelope::of(generation, &payloads::Archive {})).await
}

/// Files waiting to be copied, across all generations.
pub async fn pending_count(executor: impl PgExecutor<'_>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM generation_videos WHERE archive_status = 'pending')
              + (SELECT count(*) FROM generation_images WHERE archive_status = 'pending')",
    )
    .fetch_one(executor)
    .await
}

/// An archived file of an old generation, for `gengatectl archive purge`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct StoredObject {
    /// `video` or `image`.
    pub kind: String,
    /// The file's row.
    pub id: Uuid,
    /// Its generation.
    pub generation_id: GenerationId,
    /// The file's object.
    pub object_key: String,
    /// Its poster's object, if any.
    pub poster_key: Option<String>,
    /// Its size.
    pub size_bytes: Option<i64>,
}

/// Archived files of generations that ended before `before`, oldest first.
pub async fn stored_before(
    executor: impl PgExecutor<'_>,
    before: OffsetDateTime,
) -> Result<Vec<StoredObject>, sqlx::Error> {
    sqlx::query_as(
        "SELECT 'video' AS kind, v.id, v.generation_id, v.object_key, v.poster_key, v.size_bytes
         FROM generation_videos v JOIN generations g ON g.id = v.generation_id
         WHERE v.archive_status = 'archived' AND g.completed_at < $1
         UNION ALL
         SELECT 'image', i.id, i.generation_id, i.object_key, NULL, i.size_bytes
         FROM generation_images i JOIN generations g ON g.id = i.generation_id
         WHERE i.archive_status = 'archived' AND g.completed_at < $1
         ORDER BY generation_id, kind, id",
    )
    .bind(before)
    .fetch_all(executor)
    .await
}

/// Records a file's objects as deleted (`purged`): clients get no link to it any more.
pub async fn mark_purged(
    executor: impl PgExecutor<'_>,
    object: &StoredObject,
) -> Result<(), sqlx::Error> {
    let table =
        if object.kind == "video" { FileKind::Video.table() } else { FileKind::Image.table() };
    let sql = format!(
        "UPDATE {table} SET archive_status = 'purged', archive_detail = 'deleted by archive purge'
         WHERE id = $1 AND archive_status = 'archived'"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql)).bind(object.id).execute(executor).await?;
    Ok(())
}
