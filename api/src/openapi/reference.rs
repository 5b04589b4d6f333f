//! `GET /docs`: a browsable reference of the API (Swagger UI on `/openapi.json`). Its files are
//! compiled into the binary (`api/assets/swagger-ui`, see its README): the page loads nothing
//! from elsewhere, and its `Content-Security-Policy` says so to the browser.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{problems, schemas};
use crate::error::ApiError;
use crate::extract::Path;
use crate::state::ApiContext;

/// Only this origin: scripts and styles from `/docs/…`, the document and "try it out" requests
/// to the API itself. Swagger UI sets inline styles and draws icons as `data:` images.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; \
    connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page and its files: `(name under /docs/, content type, bytes)`.
const ASSETS: [(&str, &str, &[u8]); 4] = [
    (
        "swagger-ui-bundle.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/swagger-ui/swagger-ui-bundle.js"),
    ),
    (
        "swagger-ui.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/swagger-ui/swagger-ui.css"),
    ),
    ("favicon-32x32.png", "image/png", include_bytes!("../../assets/swagger-ui/favicon-32x32.png")),
    ("reference.js", "text/javascript; charset=utf-8", include_bytes!("reference.js")),
];

const PAGE: &str = include_str!("reference.html");

/// The reference's routes.
pub(super) fn routes() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new().routes(routes!(page)).routes(routes!(asset))
}

/// The API reference.
///
/// An HTML page (Swagger UI) that reads this document; its files are served by the API itself.
#[utoipa::path(
    get,
    path = "/docs",
    operation_id = "getApiReference",
    tag = "documentation",
    responses(
        (status = OK, description = "The page.", body = String, content_type = "text/html"),
        problems::Common,
    ),
)]
async fn page() -> Response {
    let mut response = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response();
    let headers = response.headers_mut();
    headers
        .insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// A file of the API reference.
///
/// The scripts, style sheet and icon the page loads.
#[utoipa::path(
    get,
    path = "/docs/{asset}",
    operation_id = "getApiReferenceAsset",
    tag = "documentation",
    params(("asset" = String, Path, description = "The file's name, as the page names it.")),
    responses(
        (status = OK, description = "The file.",
         content((schemas::Binary = "text/javascript"), (schemas::Binary = "text/css"), (schemas::Binary = "image/png"))),
        problems::Asset,
    ),
)]
async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    let (_, content_type, bytes) =
        ASSETS.iter().find(|(asset, _, _)| *asset == name).ok_or(ApiError::NotFound)?;
    let mut response = ([(header::CONTENT_TYPE, *content_type)], *bytes).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    Ok(response)
}
