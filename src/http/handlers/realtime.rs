use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use crate::app::{AppState, realtime, transcripts};
use crate::domain::principal::Principal;
use crate::error::{AppError, ErrorCode};
use crate::http::auth::{authenticate_with_expiry, bearer_token};
use crate::http::body::{Json, OptionalJson};
use crate::realtime::connection::{Connection, MAX_FRAME_BYTES};
use crate::realtime::hub::Hub;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WsQuery {
    #[serde(rename = "access_token")]
    access_token: Option<String>,
    resume_token: Option<String>,
    after: Option<u64>,
}

/// `GET /v1/realtime/sessions/{id}/ws` — JWT in `Authorization` or `access_token`; optional
/// `resumeToken` (resume) or `after` (a new connection starting after that seq).
pub async fn connect(
    state: web::Data<AppState>,
    hub: web::Data<Hub>,
    req: HttpRequest,
    body: web::Payload,
    id: web::Path<String>,
    query: web::Query<WsQuery>,
) -> Result<HttpResponse, AppError> {
    let WsQuery { access_token, resume_token, after } = query.into_inner();
    let token = match access_token {
        Some(token) if req.headers().get(actix_web::http::header::AUTHORIZATION).is_none() => token,
        _ => bearer_token(&req)?.to_owned(),
    };
    let (principal, expires_at) = authenticate_with_expiry(&state.config.jwt, &token, state.clock.now())?;
    crate::http::auth::admit(&state, &req, &principal)?;
    let (response, socket, incoming) = actix_ws::handle(&req, body).map_err(|_| {
        AppError::new(ErrorCode::WsUpgradeRequired, "this route speaks WebSocket: send an Upgrade request")
    })?;
    let opened = realtime::open(&state, &principal, id.into_inner(), resume_token, after).await?;
    let incoming =
        incoming.max_frame_size(MAX_FRAME_BYTES).aggregate_continuations().max_continuation_size(MAX_FRAME_BYTES);
    let connection = Connection::new(state.get_ref().clone(), hub.get_ref().clone(), principal, expires_at, opened);
    actix_web::rt::spawn(connection.run(socket, incoming));
    Ok(response)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReconnectBody {
    resume_token: String,
}

/// `POST /v1/call/sessions/{id}/reconnect`
pub async fn reconnect(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
    Json(body): Json<ReconnectBody>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(realtime::reconnect(&state, &principal, id.into_inner(), body.resume_token).await?))
}

/// `GET /v1/realtime/sessions/{id}/transcript`
pub async fn transcript(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(transcripts::transcript(&state, &principal, id.into_inner()).await?))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotQuery {
    after: Option<u64>,
    limit: Option<u64>,
}

/// `GET /v1/realtime/sessions/{id}/transcript-snapshots?after=&limit=`
pub async fn snapshots(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
    query: web::Query<SnapshotQuery>,
) -> Result<HttpResponse, AppError> {
    let (after, limit) = (query.after.unwrap_or(0), query.limit.unwrap_or(100));
    Ok(HttpResponse::Ok().json(transcripts::snapshots(&state, &principal, id.into_inner(), after, limit).await?))
}

/// `POST /v1/realtime/sessions/{id}/transcript-snapshots/compact`
pub async fn compact(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
    OptionalJson(body): OptionalJson<transcripts::CompactRequest>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(transcripts::compact(&state, &principal, id.into_inner(), body).await?))
}
