//! The HTTP edge: security headers on every response and a strict CORS allowlist.
//!
//! CORS: only origins listed exactly in `CALLSTREAM_CORS_ORIGINS` get `Access-Control-Allow-Origin`.
//! A preflight from any other origin is answered 403 `CORS_ORIGIN_DENIED`; a plain request from one
//! is served without CORS headers, so the browser withholds the answer (callers authenticate with
//! bearer tokens, never cookies, so there is no ambient credential to abuse). WebSocket upgrades are
//! not subject to CORS in browsers; they carry their token explicitly for the same reason.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, ResponseError, web};

use crate::app::AppState;
use crate::error::{AppError, ErrorCode};

const SECURITY_HEADERS: [(&str, &str); 5] = [
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("content-security-policy", "default-src 'none'; frame-ancestors 'none'"),
    ("strict-transport-security", "max-age=31536000; includeSubDomains"),
];
const ALLOWED_METHODS: &str = "GET, POST, PUT, PATCH, DELETE";
const ALLOWED_HEADERS: &str = "authorization, content-type, idempotency-key, x-request-id, traceparent";
const EXPOSED_HEADERS: &str = "x-request-id, retry-after, traceparent";
const PREFLIGHT_MAX_AGE_SECS: &str = "600";

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let origin = req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()).map(str::to_ascii_lowercase);
    let allowed = match (&origin, req.app_data::<web::Data<AppState>>()) {
        (Some(origin), Some(state)) => state.config.edge.cors_origins.iter().any(|o| o == origin),
        _ => false,
    };
    let preflight =
        req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = match (&origin, preflight) {
        (Some(_), true) if allowed => req.into_response(
            HttpResponse::NoContent()
                .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, ALLOWED_METHODS))
                .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOWED_HEADERS))
                .insert_header((header::ACCESS_CONTROL_MAX_AGE, PREFLIGHT_MAX_AGE_SECS))
                .finish(),
        ),
        (Some(origin), true) => {
            let denied = AppError::new(
                ErrorCode::CorsOriginDenied,
                format!("origin `{origin}` is not in this server's CORS allowlist"),
            );
            req.into_response(denied.error_response())
        }
        _ => next.call(req).await?.map_into_boxed_body(),
    };
    let headers = response.headers_mut();
    if let Some(origin) = origin.filter(|_| allowed)
        && let Ok(value) = HeaderValue::from_str(&origin)
    {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSED_HEADERS));
    }
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    secure(headers);
    Ok(response)
}

fn secure(headers: &mut HeaderMap) {
    for (name, value) in SECURITY_HEADERS {
        // A page (the console) sets a policy of its own; every other answer gets `default-src 'none'`.
        if name == "content-security-policy" && headers.contains_key(header::CONTENT_SECURITY_POLICY) {
            continue;
        }
        headers.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
    }
    // Answers carry tokens and live state; no cache may keep them unless a handler says otherwise.
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}
