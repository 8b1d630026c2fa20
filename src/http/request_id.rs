//! Request ids: kept from `X-Request-Id` when sane, else generated; echoed on the response, put on
//! the request's root span (so on every log line) and into every error body.
//!
//! W3C trace context: an incoming valid `traceparent` is echoed, its trace id goes on the span,
//! and outbound calls made while serving the request (action executors) carry a child
//! `traceparent` with the same trace id; without one, the request starts a new trace.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web;
use tracing::Instrument;

use crate::app::AppState;
use crate::context::{self, Trace};

const HEADER: &str = "x-request-id";

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = req
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| context::acceptable(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let traceparent = req.headers().get("traceparent").cloned();
    let trace = traceparent.as_ref().and_then(|v| v.to_str().ok()).and_then(Trace::parse).unwrap_or_else(Trace::start);
    // The route template, not the raw path: low-cardinality for logs and metrics.
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".to_owned());
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        route = %route,
        trace_id = %trace.trace_id,
    );
    let metrics = req.app_data::<web::Data<AppState>>().map(|state| state.metrics.clone());
    let method = req.method().clone();
    let started = Instant::now();
    let mut response = context::scope(id.clone(), trace, next.call(req).instrument(span.clone())).await?;
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
