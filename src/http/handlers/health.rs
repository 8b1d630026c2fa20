use actix_web::{HttpResponse, web};

use crate::app::AppState;
use crate::app::health::{HealthAnswer, Readiness, readiness};

/// `GET /health/live`: the process answers.
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(HealthAnswer { status: "ok", checks: None, failed: Vec::new() })
}

/// `GET /metrics`: Prometheus text exposition (docs/operations.md).
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let backlog = state.store.read(|reads| reads.billing_backlog()).await;
    if let Err(err) = &backlog {
        tracing::warn!(error = %err, "metrics: the billing backlog could not be read");
    }
    let text = state.metrics.render(&state.store.writer.stats, state.store.writer.queue_depth(), backlog.ok().as_ref());
    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(text)
}

/// `GET /health/ready`: 200 when every check passes, else 503 naming the failed ones.
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let Readiness { ready, checks } = readiness(&state).await;
    let failed = checks.failed();
    let body = HealthAnswer { status: if ready { "ready" } else { "not_ready" }, checks: Some(checks), failed };
    if ready { HttpResponse::Ok().json(body) } else { HttpResponse::ServiceUnavailable().json(body) }
}
