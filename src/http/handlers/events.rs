use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::Value;

use crate::app::AppState;
use crate::app::events::{self, DEFAULT_REPLAY_LIMIT, MAX_REPLAY_LIMIT};
use crate::domain::principal::Principal;
use crate::error::{AppError, ErrorCode};
use crate::http::body::Json;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IngestBody {
    events: Vec<Value>,
}

/// `POST /v1/realtime/sessions/{id}/events`
pub async fn ingest(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
    Json(body): Json<IngestBody>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(events::ingest(&state, &principal, id.into_inner(), body.events).await?))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayQuery {
    after: Option<u64>,
    limit: Option<u64>,
}

/// `GET /v1/realtime/sessions/{id}/events?after=&limit=`
pub async fn replay(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
    query: web::Query<ReplayQuery>,
) -> Result<HttpResponse, AppError> {
    let limit = query.limit.unwrap_or(DEFAULT_REPLAY_LIMIT);
    if !(1..=MAX_REPLAY_LIMIT).contains(&limit) {
        return Err(AppError::new(
            ErrorCode::QueryInvalid,
            format!("`limit` must be between 1 and {MAX_REPLAY_LIMIT}"),
        ));
    }
    let after = query.after.unwrap_or(0);
    Ok(HttpResponse::Ok().json(events::replay(&state, &principal, id.into_inner(), after, limit).await?))
}
