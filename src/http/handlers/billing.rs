//! Billing routes: usage, summaries, adjustments, a session's billing events and dead letters,
//! replay, reconciliation runs, alerts, the scheduler and the trace (docs/billing.md).

use actix_web::{HttpRequest, HttpResponse, web};

use crate::app::{AppState, billing, outbox, reconciliation};
use crate::domain::principal::Principal;
use crate::error::AppError;
use crate::http::body::{Json, OptionalJson};

/// `GET /v1/billing/usage/{usageId}`
pub async fn usage(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(billing::usage(&state, &principal, id.into_inner()).await?))
}

/// `GET /v1/billing/accounts/{tenantId}/usage-summary?from=&to=&groupBy=`
pub async fn usage_summary(
    state: web::Data<AppState>,
    principal: Principal,
    tenant: web::Path<String>,
    query: web::Query<billing::SummaryQuery>,
) -> Result<HttpResponse, AppError> {
    let summary = billing::usage_summary(&state, &principal, tenant.into_inner(), query.into_inner()).await?;
    Ok(HttpResponse::Ok().json(summary))
}

/// `GET /v1/billing/accounts/{tenantId}/events`
pub async fn account_events(
    state: web::Data<AppState>,
    principal: Principal,
    tenant: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(billing::account_events(&state, &principal, tenant.into_inner()).await?))
}

pub async fn account_dead_letters(
    state: web::Data<AppState>,
    principal: Principal,
    tenant: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(billing::account_dead_letters(&state, &principal, tenant.into_inner()).await?))
}

/// `POST /v1/billing/adjustments`
pub async fn adjust(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    Json(body): Json<billing::AdjustmentRequest>,
) -> Result<HttpResponse, AppError> {
    let key = req.headers().get("idempotency-key").map(|v| v.to_str().unwrap_or("\u{0}").to_owned());
    Ok(HttpResponse::Created().json(billing::adjust(&state, &principal, body, key).await?))
}

/// `GET /v1/billing/sessions/{id}/events`
pub async fn session_events(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(billing::session_events(&state, &principal, id.into_inner()).await?))
}

/// `GET /v1/billing/sessions/{id}/dead-letters`
pub async fn session_dead_letters(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(billing::session_dead_letters(&state, &principal, id.into_inner()).await?))
}

/// `POST /v1/billing/dead-letters/{id}/replay`
pub async fn replay(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(billing::replay_dead_letter(&state, &principal, id.into_inner()).await?))
}

/// `GET /v1/billing/trace/{usageId}`
pub async fn trace(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(billing::trace(&state, &principal, id.into_inner()).await?))
}

/// `POST /v1/billing/reconciliation/hourly-trigger`: 201 for a new run, 200 for the window's
/// existing one.
pub async fn trigger(
    state: web::Data<AppState>,
    principal: Principal,
    OptionalJson(body): OptionalJson<reconciliation::TriggerRequest>,
) -> Result<HttpResponse, AppError> {
    let answer = reconciliation::trigger(&state, &principal, body).await?;
    Ok(if answer.created { HttpResponse::Created() } else { HttpResponse::Ok() }.json(answer))
}

/// `GET /v1/billing/reconciliation/runs`
pub async fn runs(
    state: web::Data<AppState>,
    principal: Principal,
    query: web::Query<reconciliation::RunsQuery>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(reconciliation::runs(&state, &principal, query.into_inner()).await?))
}

/// `GET /v1/billing/reconciliation/runs/{id}`
pub async fn run(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(reconciliation::run(&state, &principal, id.into_inner()).await?))
}

/// `POST /v1/billing/reconciliation/alerts/deliver {dryRun?}`
pub async fn deliver_alerts(
    state: web::Data<AppState>,
    principal: Principal,
    OptionalJson(body): OptionalJson<outbox::DeliverAlerts>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(outbox::deliver_alerts_now(&state, &principal, body).await?))
}

/// `GET /v1/billing/reconciliation/scheduler`
pub async fn scheduler(state: web::Data<AppState>, principal: Principal) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(reconciliation::scheduler(&state, &principal).await?))
}

/// `PUT /v1/billing/reconciliation/scheduler {enabled}`
pub async fn set_scheduler(
    state: web::Data<AppState>,
    principal: Principal,
    Json(body): Json<reconciliation::SchedulerChange>,
) -> Result<HttpResponse, AppError> {
    let view = reconciliation::set_scheduler(&state, &principal, body, crate::context::current()).await?;
    Ok(HttpResponse::Ok().json(view))
}
