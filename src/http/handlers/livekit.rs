use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

use crate::app::AppState;
use crate::app::livekit::{self, WebhookOutcome};
use crate::domain::principal::Principal;
use crate::error::AppError;
use crate::http::body::{OptionalJson, RawBody};

/// `POST /v1/call/sessions/{id}/livekit-token`
pub async fn token(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
    OptionalJson(body): OptionalJson<livekit::TokenRequest>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(livekit::issue_token(&state, &principal, id.into_inner(), body).await?))
}

/// `POST /v1/webhooks/livekit` — no bearer: LiveKit's signature over the raw body authenticates it.
pub async fn webhook(
    state: web::Data<AppState>,
    req: HttpRequest,
    RawBody(body): RawBody,
) -> Result<HttpResponse, AppError> {
    let authorization = req.headers().get(actix_web::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let outcome = livekit::receive_webhook(&state, authorization, &body).await;
    let verdict = match &outcome {
        Ok(WebhookOutcome::Appended { .. }) => ("appended", ""),
        Ok(WebhookOutcome::Duplicate) => ("duplicate", ""),
        Ok(WebhookOutcome::Accepted { .. }) => ("ignored", ""),
        Err(AppError::Rejected(rejection)) => ("rejected", rejection.code.as_str()),
        Err(AppError::Internal(_)) => ("failed", ""),
    };
    state.metrics.observe_webhook(verdict.0, verdict.1);
    Ok(match outcome? {
        WebhookOutcome::Appended { session_id, event_type, seq } => HttpResponse::Ok()
            .json(json!({ "duplicate": false, "sessionId": session_id, "type": event_type, "seq": seq })),
        WebhookOutcome::Duplicate => HttpResponse::Ok().json(json!({ "duplicate": true })),
        WebhookOutcome::Accepted { reason } => {
            HttpResponse::Accepted().json(json!({ "duplicate": false, "ignored": reason }))
        }
    })
}
