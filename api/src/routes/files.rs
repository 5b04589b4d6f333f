//! `GET /files/{key}?expires=…&sig=…`: gengate's copies of result files, by the signed links the
//! generation object hands out (with the filesystem store; S3 links go to the store itself). A
//! link is checked in constant time and refused once expired; only keys gengate makes are
//! served. Files are streamed, and a single byte range (`Range: bytes=…`) is answered with 206, so
//! video players can seek.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use gengate_http::problem::Problem;
use gengate_shared::storage::{self, LinkRefusal};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange};
use serde::Deserialize;
use time::OffsetDateTime;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, Result};
use crate::extract::{Path, Query};
use crate::openapi::{problems, schemas};
use crate::state::ApiContext;

/// The file routes (documented by the handler's `#[utoipa::path]`; the document writes the
/// wildcard `{*key}` as `{key}`).
pub(crate) fn routes() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new().routes(routes!(serve))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct Link {
    /// When the link expires (Unix seconds).
    #[param(required = true)]
    expires: Option<i64>,
    /// The link's signature.
    #[param(required = true)]
    sig: Option<String>,
}

/// Download a result file.
///
/// gengate's copy of a result file, by the signed link the generation object hands out (`url`,
/// `poster_url`) with the filesystem store (S3 links go to the store itself). A link is refused
/// once expired: read the generation again for a fresh one. A single byte range (`Range:
/// bytes=…`) is answered with `206`, so video players can seek.
#[utoipa::path(
    get,
    path = "/files/{*key}",
    operation_id = "downloadFile",
    tag = "files",
    params(
        ("key" = String, Path, description = "The stored file, as the link names it \
            (`generations/{id}/{file}`; it holds slashes)."),
        Link,
        ("Range" = Option<String>, Header, nullable = false, description = "One byte range: `bytes=a-b`, \
            `bytes=a-` or `bytes=-n`."),
    ),
    responses(
        (status = OK, description = "The file.", headers(
            ("Content-Length" = u64, description = "Bytes."),
            ("Cache-Control" = String, description = "`private, max-age=<seconds until the \
                link expires>`: no shared cache keeps it past the link."),
            ("Accept-Ranges" = String, description = "`bytes`."),
         ), content((schemas::Binary = "video/mp4"), (schemas::Binary = "image/jpeg"), (schemas::Binary = "image/png"),
                    (schemas::Binary = "image/webp"), (schemas::Binary = "application/octet-stream"))),
        (status = PARTIAL_CONTENT, description = "The byte range asked for.", headers(
            ("Content-Range" = String, description = "`bytes a-b/size`."),
         ), content((schemas::Binary = "video/mp4"), (schemas::Binary = "image/jpeg"), (schemas::Binary = "image/png"),
                    (schemas::Binary = "image/webp"), (schemas::Binary = "application/octet-stream"))),
        problems::DownloadFile,
    ),
)]
async fn serve(
    State(ctx): State<ApiContext>,
    Path(key): Path<String>,
    Query(link): Query<Link>,
    headers: HeaderMap,
) -> Result<Response> {
    if !storage::is_our_key(&key) {
        return Err(ApiError::NotFound);
    }
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let (Some(expires), Some(signature)) = (link.expires, link.sig.as_deref()) else {
        return Err(refused(LinkRefusal::Invalid));
    };
    ctx.storage.verify_link(&key, expires, signature, now).map_err(refused)?;

    let range = match headers.get(header::RANGE).map(parse_range) {
        None => None,
        Some(Some(range)) => Some(range),
        Some(None) => return Err(unsatisfiable()),
    };
    let options = GetOptions { range: range.clone(), ..GetOptions::default() };
    let found = ctx.storage.store().get_opts(&ObjectPath::from(key.as_str()), options).await;
    let found = match found {
        Ok(found) => found,
        Err(object_store::Error::NotFound { .. }) => return Err(ApiError::NotFound),
        // A range past the end: the store refuses it.
        Err(_) if range.is_some() => return Err(unsatisfiable()),
        Err(err) => return Err(ApiError::Internal(err.into())),
    };
    let (start, end, size) = (found.range.start, found.range.end, found.meta.size);
    let mut response = Response::new(Body::from_stream(found.into_stream()));
    let out = response.headers_mut();
    out.insert(header::CONTENT_TYPE, HeaderValue::from_static(storage::content_type(&key)));
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    // The link is the permission: no shared cache may keep the file past it.
    let max_age = (expires - now).max(0);
    if let Ok(value) = HeaderValue::from_str(&format!("private, max-age={max_age}")) {
        out.insert(header::CACHE_CONTROL, value);
    }
    if range.is_some() {
        if let Ok(value) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", end - 1)) {
            out.insert(header::CONTENT_RANGE, value);
        }
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    Ok(response)
}

/// One byte range: `bytes=a-b`, `bytes=a-` or `bytes=-n`; `None` for anything else (several
/// ranges included).
fn parse_range(value: &HeaderValue) -> Option<GetRange> {
    let spec = value.to_str().ok()?.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    match (first.trim(), last.trim()) {
        ("", n) => Some(GetRange::Suffix(n.parse().ok().filter(|n| *n > 0)?)),
        (a, "") => Some(GetRange::Offset(a.parse().ok()?)),
        (a, b) => {
            let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
            (a <= b).then(|| GetRange::Bounded(a..b + 1))
        }
    }
}

fn refused(why: LinkRefusal) -> ApiError {
    let (code, title) = match why {
        LinkRefusal::Invalid => ("link_invalid", "Invalid link"),
        LinkRefusal::Expired => ("link_expired", "Link expired"),
    };
    let detail = format!("{why}; read the generation again for a fresh link");
    Problem::new(StatusCode::FORBIDDEN, code, title, detail).into()
}

fn unsatisfiable() -> ApiError {
    Problem::new(
        StatusCode::RANGE_NOT_SATISFIABLE,
        "range_not_satisfiable",
        "Range not satisfiable",
        "one byte range within the file, e.g. `Range: bytes=0-1023`",
    )
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_range_is_read_several_are_not() {
        let range = |text: &str| parse_range(&HeaderValue::from_str(text).unwrap());
        assert_eq!(range("bytes=0-9"), Some(GetRange::Bounded(0..10)));
        assert_eq!(range("bytes=100-"), Some(GetRange::Offset(100)));
        assert_eq!(range("bytes=-5"), Some(GetRange::Suffix(5)));
        for bad in ["bytes=9-0", "bytes=0-1,5-6", "items=0-1", "bytes=-0", "bytes=x-1", "bytes=-"] {
            assert_eq!(range(bad), None, "{bad}");
        }
    }
}
