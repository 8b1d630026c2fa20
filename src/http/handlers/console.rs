//! `GET /console`: the operator console, a page served from files compiled into the binary
//! (`console/`), built on the public API alone (docs/console.md). No CDN, no inline script: the
//! page's own Content-Security-Policy allows only its own files and the API on this origin.

use actix_web::http::header;
use actix_web::{HttpResponse, web};

use crate::error::{AppError, ErrorCode};

/// What the console's files may do: load themselves, talk to this origin (HTTP and WebSocket),
/// and nothing else — no inline script or style, no framing, no forms posting elsewhere.
const CONSOLE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const INDEX: &str = include_str!("../../../console/index.html");

/// The assets, by name: (content type, body).
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.js", "text/javascript; charset=utf-8", include_str!("../../../console/app.js")),
    ("app.css", "text/css; charset=utf-8", include_str!("../../../console/app.css")),
];

fn page(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONSOLE_CSP))
        // The files change only with the binary; the page itself is revalidated.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body)
}

pub async fn index() -> HttpResponse {
    page("text/html; charset=utf-8", INDEX)
}

pub async fn asset(file: web::Path<String>) -> Result<HttpResponse, AppError> {
    let file = file.into_inner();
    ASSETS
        .iter()
        .find(|(name, _, _)| *name == file)
        .map(|(_, content_type, body)| page(content_type, body))
        .ok_or_else(|| AppError::new(ErrorCode::RouteNotFound, format!("the console has no file `{file}`")))
}
