use actix_web::{HttpResponse, web};

use crate::app::{AppState, orchestration};
use crate::domain::principal::Principal;
use crate::error::AppError;
use crate::http::body::Json;

/// `POST /v1/orchestration/actions/execute`
pub async fn execute(
    state: web::Data<AppState>,
    principal: Principal,
    Json(body): Json<orchestration::ExecuteRequest>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(orchestration::execute(&state, &principal, body).await?))
}

/// `POST /v1/actions/decision`
pub async fn decision(
    state: web::Data<AppState>,
    principal: Principal,
    Json(body): Json<orchestration::DecisionRequest>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(orchestration::decide(&state, &principal, body).await?))
}

/// `GET /v1/orchestration/actions/{actionId}`
pub async fn get(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(orchestration::get(&state, &principal, id.into_inner()).await?))
}
