//! Operator routes: tenants and the audit trail (docs/operations.md).

use actix_web::{HttpResponse, web};
use serde::Deserialize;

use crate::app::{AppState, governance, tenants};
use crate::domain::principal::Principal;
use crate::error::AppError;
use crate::http::body::Json;

/// `GET /v1/operator/tenants`
pub async fn list(state: web::Data<AppState>, principal: Principal) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(tenants::list(&state, &principal).await?))
}

/// `POST /v1/operator/tenants`
pub async fn create(
    state: web::Data<AppState>,
    principal: Principal,
    Json(body): Json<tenants::CreateTenant>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Created().json(tenants::create(&state, &principal, body, crate::context::current()).await?))
}

/// `GET /v1/operator/tenants/{id}`
pub async fn get(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(tenants::get(&state, &principal, id.into_inner()).await?))
}

/// `PATCH /v1/operator/tenants/{id}`
pub async fn update(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
    Json(body): Json<tenants::UpdateTenant>,
) -> Result<HttpResponse, AppError> {
    let updated = tenants::update(&state, &principal, id.into_inner(), body, crate::context::current()).await?;
    Ok(HttpResponse::Ok().json(updated))
}

/// `POST /v1/operator/clock`: only routed with `CALLSTREAM_TEST_CLOCK=1`.
pub async fn advance_clock(
    state: web::Data<AppState>,
    principal: Principal,
    Json(body): Json<tenants::AdvanceClock>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(tenants::advance_clock(&state, &principal, body, crate::context::current()).await?))
}

/// `GET /v1/governance/data-map`
pub async fn data_map(principal: Principal) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(tenants::data_map(&principal)?))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    after: Option<u64>,
    limit: Option<u64>,
}

/// `POST /v1/governance/tenants/{id}/erase {"confirm": "<tenantId>"}`
pub async fn erase(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
    Json(body): Json<governance::EraseTenant>,
) -> Result<HttpResponse, AppError> {
    let answer = governance::erase(&state, &principal, id.into_inner(), body, crate::context::current()).await?;
    Ok(HttpResponse::Ok().json(answer))
}

/// `GET /v1/governance/audit?after=&limit=` (also served at `/v1/operator/audit`: one trail)
pub async fn audit(
    state: web::Data<AppState>,
    principal: Principal,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, AppError> {
    let AuditQuery { after, limit } = query.into_inner();
    Ok(HttpResponse::Ok().json(tenants::audit_log(&state, &principal, after.unwrap_or(0), limit.unwrap_or(100)).await?))
}
