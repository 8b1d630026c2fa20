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

tokio::task_local! {
    static REQUEST_ID: String;
    static TRACE: Trace;
}

/// The trace a request belongs to (W3C `traceparent`: version 00).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// 32 lowercase hex digits, not all zero.
    pub trace_id: String,
    /// 2 hex digits.
    pub flags: String,
}

impl Trace {
    /// `00-<trace id>-<parent id>-<flags>`; anything else (or an all-zero id) is not a trace.
    pub fn parse(header: &str) -> Option<Trace> {
        let parts: Vec<&str> = header.trim().split('-').collect();
        let hex =
            |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let zero = |s: &str| s.bytes().all(|b| b == b'0');
        match parts.as_slice() {
            [version, trace, parent, flags]
                if *version == "00"
                    && hex(trace, 32)
                    && hex(parent, 16)
                    && hex(flags, 2)
                    && !zero(trace)
                    && !zero(parent) =>
            {
                Some(Trace { trace_id: (*trace).to_owned(), flags: (*flags).to_owned() })
            }
            _ => None,
        }
    }

    fn start() -> Trace {
        Trace { trace_id: uuid::Uuid::new_v4().simple().to_string(), flags: "01".to_owned() }
    }

    /// A `traceparent` for a call made on this trace's behalf: same trace, a fresh span id.
    pub fn child(&self) -> String {
        let span = &uuid::Uuid::new_v4().simple().to_string()[..16];
        format!("00-{}-{span}-{}", self.trace_id, self.flags)
    }
}

/// Run `future` (typically on a spawned task, where task-locals do not follow) with the current
/// request's id and trace.
pub fn carry<F: std::future::Future>(future: F) -> impl std::future::Future<Output = F::Output> {
    let id = current();
    let trace = TRACE.try_with(Clone::clone).unwrap_or_else(|_| Trace::start());
    REQUEST_ID.scope(id, TRACE.scope(trace, future))
}

/// The `traceparent` an outbound call made while serving the current request should carry.
pub fn outbound_traceparent() -> Option<String> {
    TRACE.try_with(Trace::child).ok()
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
    let mut response =
        REQUEST_ID.scope(id.clone(), TRACE.scope(trace, next.call(req).instrument(span.clone()))).await?;
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

#[cfg(test)]
mod tests {
    use super::Trace;

    #[test]
    fn traceparent_parsing_follows_w3c() {
        let trace = Trace::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").expect("valid");
        assert_eq!(trace.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        let child = trace.child();
        assert_eq!(Trace::parse(&child), Some(trace.clone()), "a child is a valid traceparent of the same trace");
        for invalid in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(Trace::parse(invalid), None, "{invalid}");
        }
    }
}
