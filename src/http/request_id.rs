//! Request ids: kept from `X-Request-Id` when sane, else generated; echoed on the response, put on
//! the request's root span (so on every log line) and into every error body.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web;
use tracing::Instrument;

use crate::app::AppState;

tokio::task_local! {
    static REQUEST_ID: String;
}

const HEADER: &str = "x-request-id";

/// The current request's id, for error bodies built deep inside a handler.
pub fn current() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_else(|_| "unknown".to_owned())
}

fn acceptable(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = req
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let traceparent = req.headers().get("traceparent").cloned();
    // The route template, not the raw path: low-cardinality for logs and metrics.
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".to_owned());
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        route = %route,
        traceparent = traceparent.as_ref().and_then(|v| v.to_str().ok()).unwrap_or(""),
    );
    let metrics = req.app_data::<web::Data<AppState>>().map(|state| state.metrics.clone());
    let method = req.method().clone();
    let started = Instant::now();
    let mut response = REQUEST_ID.scope(id.clone(), next.call(req).instrument(span.clone())).await?;
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    span.in_scope(|| {
        tracing::info!(status, elapsed_ms = elapsed.as_secs_f64() * 1000.0, "request finished");
    });
    if let Some(metrics) = metrics {
        metrics.observe_request(method.as_str(), &route, status, elapsed);
    }
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert(HeaderName::from_static(HEADER), value);
    }
    if let Some(traceparent) = traceparent {
        headers.insert(HeaderName::from_static("traceparent"), traceparent);
    }
    Ok(response)
}
