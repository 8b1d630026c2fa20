use actix_web::{HttpRequest, HttpResponse, web};

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
    let outcome = outcome?;
    // Verified but not appended (no session maps the room): 202, so LiveKit does not retry.
    Ok(match outcome {
        WebhookOutcome::Accepted { .. } => HttpResponse::Accepted().json(outcome.answer()),
        _ => HttpResponse::Ok().json(outcome.answer()),
    })
}
