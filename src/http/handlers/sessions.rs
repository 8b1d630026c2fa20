use actix_web::{HttpRequest, HttpResponse, web};

use crate::app::{AppState, insights, sessions};
use crate::domain::principal::Principal;
use crate::error::AppError;
use crate::http::body::Json;

/// `POST /v1/call/sessions`
pub async fn create(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    Json(body): Json<sessions::CreateSession>,
) -> Result<HttpResponse, AppError> {
    let key = req.headers().get("idempotency-key").map(|v| v.to_str().unwrap_or("\u{0}").to_owned());
    Ok(HttpResponse::Created().json(sessions::create(&state, &principal, body, key).await?))
}

/// `GET /v1/call/sessions/{id}`
pub async fn get(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(sessions::get(&state, &principal, id.into_inner()).await?))
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<u64>,
    cursor: Option<String>,
    state: Option<String>,
}

/// `GET /v1/call/sessions?limit=&cursor=&state=`
pub async fn list(
    state: web::Data<AppState>,
    principal: Principal,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, AppError> {
    let ListQuery { limit, cursor, state: state_filter } = query.into_inner();
    Ok(HttpResponse::Ok().json(sessions::list(&state, &principal, limit, cursor, state_filter).await?))
}

/// `POST /v1/call/sessions/{id}/state`
pub async fn transition(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
    Json(body): Json<sessions::TransitionRequest>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(sessions::transition(&state, &principal, id.into_inner(), body).await?))
}

/// `POST /v1/call/sessions/{id}/provider`
pub async fn link_provider(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
    Json(body): Json<sessions::ProviderRequest>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(sessions::link_provider(&state, &principal, id.into_inner(), body).await?))
}

pub async fn insights(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(insights::insights(&state, &principal, id.into_inner()).await?))
}
