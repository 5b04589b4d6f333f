//! Reading generations as clients and operators see them.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgExecutor;
use time::OffsetDateTime;

use super::GenerationStatus;
use crate::ids::{GenerationId, UserId};
use crate::pagination::Cursor;

/// Why a generation failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The provider's (or gengate's) code, e.g. `1301` or `deadline_exceeded`.
    pub code: String,
    /// What happened.
    pub message: String,
}

/// A result video.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoView {
    /// Where to fetch it.
    pub url: String,
    /// A first-frame poster, when there is one.
    pub poster_url: Option<String>,
    /// Its quality label.
    pub quality: String,
    /// Seconds.
    pub duration: Option<f32>,
}

/// A result image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageView {
    /// Where to fetch it.
    pub url: String,
}

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
    pub media: String,
    /// The prompt template used.
    pub sub_type: Option<String>,
    /// The model.
    pub model: String,
    /// The mode.
    pub mode: String,
    /// The normalized request.
    pub params: Value,
    /// `prepaid` or `postpaid`.
    pub billing: String,
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

/// A row of [`VIEW_COLUMNS`].
#[derive(sqlx::FromRow)]
pub(super) struct ViewRow {
    id: GenerationId,
    status: String,
    media: String,
    sub_type: Option<String>,
    model: String,
    mode: String,
    params: Value,
    billing: String,
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

impl From<ViewRow> for GenerationView {
    fn from(row: ViewRow) -> Self {
        let status = GenerationStatus::parse(&row.status).unwrap_or(GenerationStatus::Failed);
        let failure = match (row.failure_code, row.failure_message) {
            (Some(code), message) => Some(Failure { code, message: message.unwrap_or_default() }),
            (None, Some(message)) => Some(Failure { code: "unknown".into(), message }),
            (None, None) => None,
        };
        let result = (status == GenerationStatus::Completed)
            .then_some(GenerationResult { videos: row.videos.0, images: row.images.0 });
        Self {
            id: row.id,
            status,
            media: row.media,
            sub_type: row.sub_type,
            model: row.model,
            mode: row.mode,
            params: row.params,
            billing: row.billing,
            cost: row.cost,
            charged: row.charged,
            progress: row.progress,
            failure,
            result,
            created_at: row.created_at,
            updated_at: row.updated_at,
            completed_at: row.completed_at,
        }
    }
}

/// The columns of a [`GenerationView`], selected from `generations g`.
pub(super) const VIEW_COLUMNS: &str = "
    g.id, g.status, g.type AS media, g.sub_type, g.model, g.mode, g.params, g.billing, g.cost,
    COALESCE((SELECT -sum(e.amount) FROM ledger_entries e
              WHERE e.generation_id = g.id AND NOT e.is_voided), 0)::bigint AS charged,
    g.progress, g.failure_code, g.failure_message,
    (SELECT COALESCE(json_agg(json_build_object('url', v.url, 'poster_url', v.poster_url,
                                                'quality', v.quality, 'duration', v.duration_s)
                              ORDER BY v.quality), '[]'::json)
     FROM generation_videos v WHERE v.generation_id = g.id) AS videos,
    (SELECT COALESCE(json_agg(json_build_object('url', i.url) ORDER BY i.position), '[]'::json)
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
    Ok(row.map(GenerationView::from))
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
    let mut data: Vec<GenerationView> = rows.into_iter().map(GenerationView::from).collect();
    let next_cursor = Cursor::next_page(&mut data, limit as usize, |g| Cursor {
        created_at: g.created_at,
        id: g.id.0,
    });
    Ok(GenerationPage { data, next_cursor })
}

/// One row of a generation's audit log.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct EventView {
    /// Status before (`None` for the submit).
    pub from_status: Option<String>,
    /// Status after (`None`: recorded, not applied).
    pub to_status: Option<String>,
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
