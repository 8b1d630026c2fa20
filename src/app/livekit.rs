//! LiveKit use cases: join tokens for a session's room, and signed webhooks into the log.

use std::time::Duration;

use livekit_api::access_token::TokenVerifier;
use serde::Deserialize;

use super::sessions::{append_session_events, load_for_write, visible_session};
use super::{AppState, session_denied};
use crate::config::MAX_LIVEKIT_TOKEN_TTL_SECS;
use crate::domain::actor::{Actor, ActorKind};
use crate::domain::envelope::server_event;
use crate::domain::event_types::EventType;
use crate::domain::ids::SessionId;
use crate::domain::principal::{Ownership, Principal};
use crate::domain::session::{ProviderCorrelation, SessionCommand, decide};
use crate::error::{AppError, ErrorCode};
use crate::livekit::{token, webhook};
use crate::store::{Receipt, Retained};

pub const PROVIDER: &str = "livekit";
/// Receipts are kept far longer than the tolerance window, after which a replay is stale anyway.
const RECEIPT_RETENTION_HOURS: i64 = 24;

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TokenRequest {
    pub ttl_secs: Option<u64>,
}

/// `POST /v1/call/sessions/{id}/livekit-token`: `{token, url, room, identity, expiresAt}`.
#[tracing::instrument(skip_all, fields(session_id = %session_id), err)]
pub async fn issue_token(
    state: &AppState,
    principal: &Principal,
    session_id: String,
    request: TokenRequest,
) -> Result<JoinToken, AppError> {
    let ttl = request.ttl_secs.unwrap_or(state.config.livekit_token_ttl_secs);
    if !(60..=MAX_LIVEKIT_TOKEN_TTL_SECS).contains(&ttl) {
        return Err(AppError::new(
            ErrorCode::ValidationFailed,
            format!("`ttlSecs` must be between 60 and {MAX_LIVEKIT_TOKEN_TTL_SECS}"),
        ));
    }
    let record = visible_session(state, principal, session_id.clone()).await?;
    principal
        .session_writer(Ownership { tenant_id: &record.tenant_id, owner_id: &record.owner_id })
        .map_err(|denied| session_denied(denied, &session_id))?;
    let room = match (&record.provider, &record.provider_room_id) {
        (Some(provider), Some(room)) if provider == PROVIDER && !record.is_terminal() => room.clone(),
        _ => map_room(state, principal, session_id).await?,
    };
    let identity = principal.user_id.as_str();
    let jwt = token::mint_join_token(&state.config.livekit, &room, identity, Duration::from_secs(ttl))?;
    // LiveKit's SDK stamps the JWT's own `nbf`/`exp` from the system time; what we answer uses ours.
    let expires_at = state.clock.now().plus_seconds(ttl as i64);
    Ok(JoinToken {
        token: jwt,
        url: state.config.livekit.url.clone(),
        room,
        identity: identity.to_owned(),
        expires_at: expires_at.to_rfc3339_seconds(),
    })
}

/// A LiveKit access token for the session's room.
#[derive(Debug, Clone, PartialEq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JoinToken {
    pub token: String,
    pub url: String,
    pub room: String,
    pub identity: String,
    pub expires_at: String,
}

/// Persist the session ↔ room mapping on first use (room = session id); stable afterwards.
async fn map_room(state: &AppState, principal: &Principal, session_id: String) -> Result<String, AppError> {
    let principal = principal.clone();
    state
        .store
        .writer
        .execute(move |tx| {
            let (record, session) = load_for_write(tx, &principal, &session_id)?;
            if session.state.is_terminal() {
                return Err(AppError::new(
                    ErrorCode::SessionTerminated,
                    format!("session `{session_id}` is {}; it issues no more tokens", session.state.as_str()),
                ));
            }
            if let (Some(PROVIDER), Some(room)) =
                (session.provider.provider.as_deref(), &session.provider.provider_room_id)
            {
                return Ok(room.clone());
            }
            let correlation = ProviderCorrelation {
                provider: Some(PROVIDER.to_owned()),
                provider_room_id: Some(session_id.clone()),
                ..Default::default()
            };
            let events = decide(&session, SessionCommand::LinkProvider { correlation, expected_version: None })?;
            append_session_events(tx, &record, &principal, &events)?;
            Ok(session_id)
        })
        .await
}

/// What a webhook did.
#[derive(Debug, Clone, PartialEq)]
pub enum WebhookOutcome {
    /// Translated and appended to the mapped session.
    Appended { session_id: String, event_type: &'static str, seq: u64 },
    /// Seen before: nothing appended.
    Duplicate,
    /// Verified, but no session maps its room (or its type is unknown): receipt kept, nothing appended.
    Accepted { reason: &'static str },
}

/// What the webhook route answers: where the event went, or why nothing was appended.
#[derive(Debug, Clone, PartialEq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAnswer {
    pub duplicate: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub event_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignored: Option<&'static str>,
}

impl WebhookOutcome {
    pub fn answer(&self) -> WebhookAnswer {
        let none = WebhookAnswer { duplicate: false, session_id: None, event_type: None, seq: None, ignored: None };
        match self {
            WebhookOutcome::Appended { session_id, event_type, seq } => WebhookAnswer {
                session_id: Some(session_id.clone()),
                event_type: Some(event_type),
                seq: Some(*seq),
                ..none
            },
            WebhookOutcome::Duplicate => WebhookAnswer { duplicate: true, ..none },
            WebhookOutcome::Accepted { reason } => WebhookAnswer { ignored: Some(reason), ..none },
        }
    }
}

/// `POST /v1/webhooks/livekit`.
#[tracing::instrument(skip_all, err)]
pub async fn receive_webhook(
    state: &AppState,
    authorization: Option<&str>,
    raw_body: &[u8],
) -> Result<WebhookOutcome, AppError> {
    let config = &state.config.livekit;
    let verifier = TokenVerifier::with_api_key(&config.api_key, config.api_secret.expose());
    let token = webhook::token_from_header(authorization)?;
    let hook = webhook::verify(&verifier, token, raw_body)?;
    tracing::info!(webhook_id = %hook.id, event = %hook.event, "livekit webhook verified");
    let tolerance = state.config.webhook_tolerance_secs;
    let actor = Actor { kind: ActorKind::Livekit, id: config.api_key.clone() };
    state.store.writer.execute(move |tx| record_webhook(tx, &hook, tolerance, &actor)).await
}

fn record_webhook(
    tx: &mut dyn crate::store::WriteUnit,
    hook: &webhook::Webhook,
    tolerance_secs: u64,
    actor: &Actor,
) -> Result<WebhookOutcome, AppError> {
    if tx.webhook_receipt_exists(&hook.id)? {
        return Ok(WebhookOutcome::Duplicate);
    }
    let received_at = tx.recorded_at();
    let now = received_at.unix_seconds();
    if !webhook::is_fresh(hook.created_at, now, tolerance_secs) {
        return Err(AppError::new(
            ErrorCode::WebhookStale,
            format!(
                "createdAt is {} s from the server clock; the tolerance is {tolerance_secs} s",
                hook.created_at - now
            ),
        ));
    }
    tx.prune_expired(Retained::WebhookReceipts, received_at.plus_seconds(-RECEIPT_RETENTION_HOURS * 3600))?;

    let translation = webhook::translate(hook);
    let room = translation.as_ref().and_then(|t| t.room_name.clone());
    let session = match &room {
        Some(room) => tx.session_by_room(PROVIDER, room)?,
        None => None,
    };
    let received_text = received_at.to_rfc3339();
    let receipt = |outcome, session_id| Receipt {
        webhook_id: &hook.id,
        event: &hook.event,
        room_name: room.as_deref(),
        session_id,
        outcome,
        created_at: hook.created_at,
        received_at: &received_text,
    };
    let known_type = translation.is_some();
    let (Some(translation), Some(session)) = (translation, session) else {
        let reason = if known_type { "unknown_room" } else { "unknown_event" };
        tx.store_webhook_receipt(&receipt(reason, None))?;
        return Ok(WebhookOutcome::Accepted { reason });
    };

    let session_id = SessionId::parse(&session.session_id).map_err(AppError::internal_msg)?;
    let event_type = EventType::lookup(translation.event_type)
        .ok_or_else(|| AppError::internal_msg(format!("{} is not registered", translation.event_type)))?;
    let ts = chrono::DateTime::from_timestamp(hook.created_at, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut event = server_event(&session_id, event_type, translation.payload, &ts)?;
    // The webhook id names the event, so even a lost receipt could not append it twice.
    let safe_id: String =
        hook.id.chars().map(|c| if c.is_ascii_alphanumeric() || "._:-".contains(c) { c } else { '_' }).collect();
    event.event_id = crate::domain::ids::EventId::parse(&format!("lk:{safe_id}")).map_err(AppError::internal_msg)?;
    let (outcomes, _) = tx.append(&session.tenant_id, &session.session_id, actor, vec![event.into()])?;
    tx.store_webhook_receipt(&receipt("appended", Some(session.session_id.as_str())))?;
    let seq = outcomes.first().map(|o| o.seq).unwrap_or_default();
    Ok(WebhookOutcome::Appended { session_id: session.session_id, event_type: translation.event_type, seq })
}
