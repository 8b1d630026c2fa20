use actix_web::{HttpResponse, web};

use crate::app::contract;
use crate::domain::principal::Principal;
use crate::error::{AppError, ErrorCode};

/// `GET /v1/contract`: types, versions, schema URLs and error codes.
pub async fn catalog(_principal: Principal) -> HttpResponse {
    HttpResponse::Ok().json(contract::catalog())
}

/// `GET /v1/contract/schemas/{file}`: one JSON Schema, e.g. `transcript.segment.final.v1.json`.
pub async fn schema(_principal: Principal, file: web::Path<String>) -> Result<HttpResponse, AppError> {
    let schema = contract::schema(&file)
        .ok_or_else(|| AppError::new(ErrorCode::RouteNotFound, format!("no schema named `{file}`")))?;
    Ok(HttpResponse::Ok().content_type("application/schema+json").body(schema))
}
