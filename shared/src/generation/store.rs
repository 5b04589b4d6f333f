//! Reading generations as clients and operators see them.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{FromRow, PgExecutor, Row};
use time::OffsetDateTime;

use super::archive::ArchiveStatus;
use super::failure::FailureKind;
use super::{Billing, GenerationStatus, MediaType, Mode};
use crate::ids::{GenerationId, UserId};
use crate::pagination::Cursor;
use crate::providers::ProviderKind;
use crate::storage::{Storage, StorageError};

/// Why a generation failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The provider's (or gengate's) code, e.g. `1301` or `deadline_exceeded`.
    pub code: String,
    /// What happened.
    pub message: String,
}

/// A result file as clients see it: where to fetch it and how gengate's copy of it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileView {
    /// Where to fetch it: once archived, a signed link to gengate's copy (see
    /// [`GenerationView::with_links`]); before, the provider's URL.
    pub url: String,
    /// Pixels, once archived.
    pub width: Option<i32>,
    /// Pixels, once archived.
    pub height: Option<i32>,
    /// Bytes, once archived.
    pub size_bytes: Option<i64>,
    /// `pending` (being copied; `url` is the provider's), `archived`, `failed` (the provider's
    /// URL stays, as long as the provider serves it) or `purged` (deleted by retention).
    pub archive_status: ArchiveStatus,
    /// Why it failed, or what an archived file lacks (`archived without a poster: not a video`).
    pub archive_detail: Option<String>,
    /// The stored object (operators' business; clients get links).
    #[serde(default, skip_serializing)]
    pub object_key: Option<String>,
}

impl FileView {
    /// Points `url` at gengate's copy, if there is one.
    async fn link(&mut self, storage: &Storage, now_unix: i64) -> Result<(), StorageError> {
        if let (Some(key), ArchiveStatus::Archived) = (&self.object_key, self.archive_status) {
            self.url = storage.link(key, now_unix).await?;
        }
        Ok(())
    }
}

/// A result video: the file, its poster frame and what it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoView {
    /// The file.
    #[serde(flatten)]
    pub file: FileView,
    /// A signed link to its first frame (JPEG), once archived, when it is a video.
    pub poster_url: Option<String>,
    /// Its quality label.
    pub quality: String,
    /// Seconds.
    pub duration: Option<f32>,
    /// The stored poster.
    #[serde(default, skip_serializing)]
    pub poster_key: Option<String>,
}

/// A result image: the file alone.
pub type ImageView = FileView;

/// A finished generation's files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationResult {
    /// Videos.
    pub videos: Vec<VideoView>,
    /// Images.
    pub images: Vec<ImageView>,
}

/// The generation object of the HTTP API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationView {
    /// The generation.
    pub id: GenerationId,
    /// Where it is.
    pub status: GenerationStatus,
    /// `video` or `image`.
    #[serde(rename = "type")]
    pub media: MediaType,
    /// The prompt template used.
    pub sub_type: Option<String>,
    /// The model.
    pub model: String,
    /// The mode.
    pub mode: Mode,
    /// The request as the client sent it, after defaults (operators see the whole stored
    /// snapshot: the prompt as the provider receives it, adapter options, expected usage).
    pub params: Value,
    /// `prepaid` or `postpaid`.
    pub billing: Billing,
    /// Price at submit.
    pub cost: i64,
    /// Net credits charged now.
    pub charged: i64,
    /// Percent done, while the provider reports it.
    pub progress: Option<i16>,
    /// Why it failed.
    pub failure: Option<Failure>,
    /// Its files, once completed.
    pub result: Option<GenerationResult>,
    /// When it was accepted.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Last change.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// When it ended.
    #[serde(with = "time::serde::rfc3339::option")]
    pub completed_at: Option<OffsetDateTime>,
}

impl GenerationView {
    /// The view with links to gengate's copies of its archived files (signed, expiring
    /// `storage.link_ttl_secs` after `now_unix`); files not archived keep the provider's URL.
    /// Every answer to a client goes through this: links are made when they are read.
    pub async fn with_links(
        mut self,
        storage: &Storage,
        now_unix: i64,
    ) -> Result<Self, StorageError> {
        let Some(result) = self.result.as_mut() else { return Ok(self) };
        for video in &mut result.videos {
            video.file.link(storage, now_unix).await?;
            if let (Some(key), ArchiveStatus::Archived) =
                (&video.poster_key, video.file.archive_status)
            {
                video.poster_url = Some(storage.link(key, now_unix).await?);
            }
        }
        for image in &mut result.images {
            image.link(storage, now_unix).await?;
        }
        Ok(self)
    }
}

/// A row of [`VIEW_COLUMNS`].
#[derive(sqlx::FromRow)]
pub(super) struct ViewRow {
    id: GenerationId,
    status: GenerationStatus,
    media: MediaType,
    sub_type: Option<String>,
    model: String,
    mode: Mode,
    params: Value,
    billing: Billing,
    cost: i64,
    charged: i64,
    progress: Option<i16>,
    failure_code: Option<String>,
    failure_message: Option<String>,
    videos: sqlx::types::Json<Vec<VideoView>>,
    images: sqlx::types::Json<Vec<ImageView>>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
    completed_at: Option<OffsetDateTime>,
}

/// The client's own request in a stored params snapshot: `(key shown, key stored)`. The rest (the
/// prompt as the provider receives it, adapter options, expected usage) is gengate's business.
const CLIENT_PARAMS: [(&str, &str); 10] = [
    ("prompt", "client_prompt"),
    ("negative_prompt", "client_negative_prompt"),
    ("duration", "duration"),
    ("aspect_ratio", "aspect_ratio"),
    ("quality", "quality"),
    ("image_urls", "image_urls"),
    ("end_image_url", "end_image_url"),
    ("camera_control", "camera_control"),
    ("sub_type", "sub_type"),
    ("metadata", "metadata"),
];

/// The request as its client sent it (after defaults), out of the stored params snapshot.
fn client_params(stored: &Value) -> Value {
    let params = CLIENT_PARAMS.iter().filter_map(|(shown, key)| {
        stored.get(key).filter(|v| !v.is_null()).map(|v| ((*shown).to_owned(), v.clone()))
    });
    Value::Object(params.collect())
}

impl ViewRow {
    /// The generation as its owner sees it, or (`for_operator`) with the params as stored. The
    /// failure is in the words clients are told either way: a code stored before codes were
    /// stable (a provider's own) reads as a generic failure, so no provider text reaches a client.
    pub(super) fn into_view(self, for_operator: bool) -> GenerationView {
        let status = self.status;
        let failure = (self.failure_code.is_some() || self.failure_message.is_some()).then(|| {
            let kind = FailureKind::from_code(self.failure_code.as_deref().unwrap_or_default());
            Failure { code: kind.code().to_owned(), message: kind.message().to_owned() }
        });
        let params = if for_operator { self.params } else { client_params(&self.params) };
        let result = (status == GenerationStatus::Completed)
            .then_some(GenerationResult { videos: self.videos.0, images: self.images.0 });
        GenerationView {
            id: self.id,
            status,
            media: self.media,
            sub_type: self.sub_type,
            model: self.model,
            mode: self.mode,
            params,
            billing: self.billing,
            cost: self.cost,
            charged: self.charged,
            progress: self.progress,
            failure,
            result,
            created_at: self.created_at,
            updated_at: self.updated_at,
            completed_at: self.completed_at,
        }
    }
}

/// The columns of a [`GenerationView`], selected from `generations g`.
pub(super) const VIEW_COLUMNS: &str = "
    g.id, g.status, g.type AS media, g.sub_type, g.model, g.mode, g.params, g.billing, g.cost,
    COALESCE((SELECT -sum(e.amount) FROM ledger_entries e
              WHERE e.generation_id = g.id AND NOT e.is_voided), 0)::bigint AS charged,
    g.progress, g.failure_code, g.failure_message,
    (SELECT COALESCE(json_agg(json_build_object(
                'url', v.url, 'poster_url', NULL, 'quality', v.quality, 'duration', v.duration_s,
                'width', v.width, 'height', v.height, 'size_bytes', v.size_bytes,
                'archive_status', v.archive_status, 'archive_detail', v.archive_detail,
                'object_key', v.object_key, 'poster_key', v.poster_key)
                ORDER BY v.quality), '[]'::json)
     FROM generation_videos v WHERE v.generation_id = g.id) AS videos,
    (SELECT COALESCE(json_agg(json_build_object(
                'url', i.url, 'width', i.width, 'height', i.height, 'size_bytes', i.size_bytes,
                'archive_status', i.archive_status, 'archive_detail', i.archive_detail,
                'object_key', i.object_key)
                ORDER BY i.position), '[]'::json)
     FROM generation_images i WHERE i.generation_id = g.id) AS images,
    g.created_at, g.updated_at, g.completed_at";

/// One generation as its owner sees it (`owner: None` for operators).
pub async fn view(
    executor: impl PgExecutor<'_>,
    id: GenerationId,
    owner: Option<UserId>,
) -> Result<Option<GenerationView>, sqlx::Error> {
    let sql = format!(
        "SELECT {VIEW_COLUMNS} FROM generations g WHERE g.id = $1 AND ($2::uuid IS NULL OR g.user_id = $2)"
    );
    let row: Option<ViewRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(owner)
        .fetch_optional(executor)
        .await?;
    Ok(row.map(|row| row.into_view(owner.is_none())))
}

/// One page of a user's generations, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct GenerationPage {
    /// The generations.
    pub data: Vec<GenerationView>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// A user's generations, newest first, optionally only those in `status`.
pub async fn list(
    executor: impl PgExecutor<'_>,
    owner: UserId,
    status: Option<GenerationStatus>,
    cursor: Option<Cursor>,
    limit: i64,
) -> Result<GenerationPage, sqlx::Error> {
    let limit = limit.clamp(1, 100);
    let sql = format!(
        "SELECT {VIEW_COLUMNS} FROM generations g
         WHERE g.user_id = $1 AND ($2::text IS NULL OR g.status = $2)
           AND ($3::timestamptz IS NULL OR (g.created_at, g.id) < ($3, $4))
         ORDER BY g.created_at DESC, g.id DESC
         LIMIT $5"
    );
    let rows: Vec<ViewRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(owner)
        .bind(status.map(GenerationStatus::as_str))
        .bind(cursor.map(|c| c.created_at))
        .bind(cursor.map(|c| c.id))
        .bind(limit + 1)
        .fetch_all(executor)
        .await?;
    let mut data: Vec<GenerationView> = rows.into_iter().map(|row| row.into_view(false)).collect();
    let next_cursor =
        Cursor::next_page(&mut data, limit, |g| Cursor { created_at: g.created_at, id: g.id.0 });
    Ok(GenerationPage { data, next_cursor })
}

/// One row of a generation's audit log.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct EventView {
    /// Status before (`None` for the submit).
    pub from_status: Option<GenerationStatus>,
    /// Status after (`None`: recorded, not applied).
    pub to_status: Option<GenerationStatus>,
    /// What caused it.
    pub cause: String,
    /// The message that carried it.
    pub message_id: Option<uuid::Uuid>,
    /// SHA-256 (hex) of the provider payload, for webhooks and polls.
    pub payload_digest: Option<String>,
    /// Anything else worth keeping.
    pub detail: Option<Value>,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A generation's audit log, oldest first.
pub async fn events(
    executor: impl PgExecutor<'_>,
    id: GenerationId,
) -> Result<Vec<EventView>, sqlx::Error> {
    sqlx::query_as(
        "SELECT from_status, to_status, cause, message_id, encode(payload_digest, 'hex') AS payload_digest,
                detail, created_at
         FROM generation_events WHERE generation_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(executor)
    .await
}

/// Everything about one generation an operator looks at: the generation, its ledger entries and
/// its audit log (`GET /admin/generations/{id}`, `gengatectl generation show`).
#[derive(Debug, Clone, Serialize)]
pub struct GenerationDetail {
    /// The generation.
    #[serde(flatten)]
    pub generation: GenerationView,
    /// Its ledger entries, oldest first.
    pub ledger: Vec<crate::ledger::EntryView>,
    /// Its audit log, oldest first.
    pub events: Vec<EventView>,
}

/// The generation with its ledger entries and audit log; `None` if there is none.
pub async fn detail(
    pool: &sqlx::PgPool,
    id: GenerationId,
) -> Result<Option<GenerationDetail>, sqlx::Error> {
    let Some(generation) = view(pool, id, None).await? else { return Ok(None) };
    let ledger = crate::ledger::generation_entries(pool, id).await?;
    let events = events(pool, id).await?;
    Ok(Some(GenerationDetail { generation, ledger, events }))
}

/// What webhook ingress needs to know of a generation to admit a callback for it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WebhookTarget {
    /// Whose wire format the callback is in.
    pub provider: ProviderKind,
    /// SHA-256 of the generation's callback token.
    pub webhook_token_hash: Vec<u8>,
    /// Where the generation is.
    pub status: GenerationStatus,
    /// When it ended, if it did.
    pub completed_at: Option<OffsetDateTime>,
}

impl WebhookTarget {
    /// Whether the generation's callback token still admits webhooks at `now`: while the job
    /// runs, and for `window` after it ended (a late success may still restore a failed job;
    /// duplicates of a final callback are still answered), never after.
    pub fn token_alive(&self, now: OffsetDateTime, window: std::time::Duration) -> bool {
        self.status.is_in_flight() || self.completed_at.is_none_or(|ended| now < ended + window)
    }
}

/// The generations webhooks name, as ingress sees them, in one statement (ingress shares it
/// between concurrent webhooks: see [`crate::batched_reads`]).
pub async fn webhook_targets(
    executor: impl PgExecutor<'_>,
    ids: &[GenerationId],
) -> Result<crate::batched_reads::Rows<GenerationId, WebhookTarget>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, provider, webhook_token_hash, status, completed_at FROM generations
         WHERE id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(executor)
    .await?;
    rows.iter().map(|row| Ok((row.try_get("id")?, WebhookTarget::from_row(row)))).collect()
}
