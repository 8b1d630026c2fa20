//! Realtime connections as seen by the store: open or resume (rotating the resume token), acks,
//! disconnects, and `POST /v1/call/sessions/{id}/reconnect`.

use serde_json::json;

use super::resume_token::{self as resume, ResumeClaim};
use super::sessions::{actor_of, visible_session};
use super::{AppState, session_not_found};
use crate::domain::envelope::server_event;
use crate::domain::event_types::EventType;
use crate::domain::ids::SessionId;
use crate::domain::principal::Principal;
use crate::domain::session::SessionState;
use crate::domain::time::Timestamp;
use crate::error::{AppError, ErrorCode};
use crate::store::{ConnectionRecord, Retained, WriteUnit};

/// A connection ready to stream: where to start and the token that resumes it.
#[derive(Debug, Clone)]
pub struct Opened {
    pub connection_id: String,
    pub session_id: String,
    /// Events with `seq > replay_from` are sent.
    pub replay_from: u64,
    pub generation: u64,
    pub resume_token: String,
    pub resumed: bool,
}

fn terminated(session_id: &str, state: SessionState) -> AppError {
    AppError::new(
        ErrorCode::SessionTerminated,
        format!("session `{session_id}` is {state}; it has no live stream any more"),
    )
}

fn token_invalid(message: &str) -> AppError {
    AppError::new(ErrorCode::ResumeTokenInvalid, message)
}

/// How long a closed connection's row (checkpoint, token generation) is kept: far past any
/// reconnect window, so a late resume is still told `RESUME_WINDOW_EXPIRED` rather than
/// `RESUME_TOKEN_INVALID`.
const CONNECTION_RETENTION_SECS: u64 = 7 * 86_400;

/// Open a new connection (from `after`, default the beginning) or resume one with its token.
#[tracing::instrument(skip_all, fields(session_id = %session_id), err)]
pub async fn open(
    state: &AppState,
    principal: &Principal,
    session_id: String,
    resume_token: Option<String>,
    after: Option<u64>,
) -> Result<Opened, AppError> {
    let session = visible_session(state, principal, session_id.clone()).await?;
    if session.is_terminal() {
        return Err(terminated(&session_id, session.state));
    }
    match resume_token {
        Some(token) => resume(state, principal, session_id, &token, true).await,
        None => {
            let principal = principal.clone();
            let secret = state.config.resume_secret.expose().to_owned();
            let epoch = state.store.epoch().to_owned();
            let window_secs = state.config.realtime.reconnect_window_secs;
            state
                .store
                .writer
                .execute(move |tx| {
                    let head = tx.stream_head(&session_id)?;
                    let replay_from = after.unwrap_or(0);
                    if replay_from > head {
                        return Err(AppError::new(
                            ErrorCode::AckBeyondHead,
                            format!("`after` {replay_from} is beyond the head {head}"),
                        ));
                    }
                    let record = ConnectionRecord {
                        connection_id: format!("wc_{}", uuid::Uuid::now_v7().simple()),
                        tenant_id: principal.tenant_id.as_str().to_owned(),
                        session_id: session_id.clone(),
                        user_id: principal.user_id.as_str().to_owned(),
                        acked_seq: replay_from,
                        generation: 1,
                        disconnected_at: None,
                    };
                    // Connections closed long past any reconnect window go, a few per new one.
                    let keep = CONNECTION_RETENTION_SECS.max(window_secs) as i64;
                    let cutoff = crate::app::idempotency::not_before(tx, keep);
                    tx.prune_expired(Retained::WsConnections, cutoff)?;
                    tx.insert_connection(&record)?;
                    let claim = ResumeClaim { connection_id: record.connection_id.clone(), generation: 1, epoch };
                    Ok(Opened {
                        resume_token: resume::sign(&secret, &claim),
                        connection_id: record.connection_id,
                        session_id,
                        replay_from,
                        generation: 1,
                        resumed: false,
                    })
                })
                .await
        }
    }
}

/// Consume a resume token and hand out the next one. With `record_event`, the resume is logged as
/// `call.connection.resumed` (the WebSocket path); `POST …/reconnect` only rotates.
pub async fn resume(
    state: &AppState,
    principal: &Principal,
    session_id: String,
    token: &str,
    record_event: bool,
) -> Result<Opened, AppError> {
    let secret = state.config.resume_secret.expose().to_owned();
    let claim = resume::verify(&secret, token)
        .ok_or_else(|| token_invalid("the resume token is not one this server issued"))?;
    if claim.epoch != state.store.epoch() {
        return Err(AppError::new(
            ErrorCode::EpochChanged,
            "the resume token belongs to another database history; reload the session from scratch",
        )
        .with_details(json!({ "epoch": state.store.epoch() })));
    }
    let principal = principal.clone();
    let window = chrono::Duration::seconds(state.config.realtime.reconnect_window_secs as i64);
    let epoch = state.store.epoch().to_owned();
    state
        .store
        .writer
        .execute(move |tx| resume_in_tx(tx, &principal, &session_id, claim, &secret, epoch, window, record_event))
        .await
}

#[allow(clippy::too_many_arguments)]
fn resume_in_tx(
    tx: &mut dyn WriteUnit,
    principal: &Principal,
    session_id: &str,
    claim: ResumeClaim,
    secret: &str,
    epoch: String,
    window: chrono::Duration,
    record_event: bool,
) -> Result<Opened, AppError> {
    let record = tx
        .connection(&claim.connection_id)?
        .filter(|r| {
            r.session_id == session_id
                && r.tenant_id == principal.tenant_id.as_str()
                && r.user_id == principal.user_id.as_str()
        })
        .ok_or_else(|| token_invalid("the resume token is not for this session and caller"))?;
    let session = tx.session(session_id)?.ok_or_else(|| session_not_found(session_id))?;
    if session.is_terminal() {
        return Err(terminated(session_id, session.state));
    }
    if record.generation != claim.generation {
        return Err(token_invalid("the resume token was already used; use the newest one"));
    }
    let now = tx.recorded_at();
    if let Some(disconnected_at) = &record.disconnected_at {
        let since = Timestamp::parse(disconnected_at)
            .ok_or_else(|| AppError::internal_msg("a stored disconnect time is not RFC 3339"))?;
        if now.millis_since(since) > window.num_milliseconds() {
            return Err(AppError::new(
                ErrorCode::ResumeWindowExpired,
                format!("the reconnect window of {} s after the disconnect has passed", window.num_seconds()),
            ));
        }
    }
    if !tx.rotate_connection(&record.connection_id, claim.generation)? {
        return Err(token_invalid("the resume token was already used; use the newest one"));
    }
    if record_event {
        let id = SessionId::parse(session_id).map_err(AppError::internal_msg)?;
        let resumed =
            EventType::lookup("call.connection.resumed").ok_or_else(|| AppError::internal_msg("unregistered"))?;
        let payload = json!({ "connectionId": record.connection_id, "replayFrom": record.acked_seq });
        let event = server_event(&id, resumed, payload, &now.to_rfc3339())?;
        tx.append(&record.tenant_id, session_id, &actor_of(principal), vec![event.into()])?;
    }
    let generation = claim.generation + 1;
    let next = ResumeClaim { connection_id: record.connection_id.clone(), generation, epoch };
    Ok(Opened {
        resume_token: resume::sign(secret, &next),
        connection_id: record.connection_id,
        session_id: session_id.to_owned(),
        replay_from: record.acked_seq,
        generation,
        resumed: true,
    })
}

/// Where and how to resume: the rotated token, the server-side checkpoint, the socket's URL.
#[derive(Debug, Clone, PartialEq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Reconnect {
    pub resume_token: String,
    pub replay_from: u64,
    pub epoch: String,
    pub connection_id: String,
    pub ws_url: String,
}

/// `POST /v1/call/sessions/{id}/reconnect` `{resumeToken}` → `{resumeToken, replayFrom, epoch, wsUrl}`.
#[tracing::instrument(skip_all, fields(session_id = %session_id), err)]
pub async fn reconnect(
    state: &AppState,
    principal: &Principal,
    session_id: String,
    token: String,
) -> Result<Reconnect, AppError> {
    let session = visible_session(state, principal, session_id.clone()).await?;
    if session.is_terminal() {
        return Err(terminated(&session_id, session.state));
    }
    let opened = resume(state, principal, session_id, &token, false).await?;
    Ok(Reconnect {
        ws_url: format!("/v1/realtime/sessions/{}/ws?resumeToken={}", opened.session_id, opened.resume_token),
        resume_token: opened.resume_token,
        replay_from: opened.replay_from,
        epoch: state.store.epoch().to_owned(),
        connection_id: opened.connection_id,
    })
}

/// Persist a checkpoint; an ack beyond the head is refused.
pub async fn ack(state: &AppState, connection_id: String, session_id: String, seq: u64) -> Result<(), AppError> {
    state
        .store
        .writer
        .execute(move |tx| {
            let head = tx.stream_head(&session_id)?;
            if seq > head {
                return Err(AppError::new(ErrorCode::AckBeyondHead, format!("seq {seq} is beyond the head {head}")));
            }
            tx.record_ack(&connection_id, seq)?;
            Ok(())
        })
        .await
}

/// The socket is gone: the reconnect window starts now (unless a newer resume took over).
pub async fn disconnected(state: &AppState, connection_id: String, generation: u64) -> Result<(), AppError> {
    state
        .store
        .writer
        .execute(move |tx| {
            tx.mark_disconnected(&connection_id, generation)?;
            Ok(())
        })
        .await
}
