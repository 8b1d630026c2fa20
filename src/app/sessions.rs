//! Call sessions: create (with Idempotency-Key) and read.

use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{AppState, session_denied, session_not_found};
use crate::domain::canonical::to_canonical_string;
use crate::domain::envelope::server_event;
use crate::domain::event_types::EventType;
use crate::domain::ids::SessionId;
use crate::domain::principal::{Ownership, Principal};
use crate::error::{AppError, ErrorCode};
use crate::store::log::{Actor, ActorKind};
use crate::store::queries::{self, SessionRecord};

const CREATE_ROUTE: &str = "POST /v1/call/sessions";
const MAX_TITLE_CHARS: usize = 200;
const MAX_METADATA_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    pub title: Option<String>,
    pub metadata: Option<serde_json::Map<String, Value>>,
}

pub fn actor_of(principal: &Principal) -> Actor {
    use crate::domain::principal::Role;
    let kind = if principal.has(Role::Service) {
        ActorKind::Service
    } else if principal.has(Role::User) {
        ActorKind::User
    } else {
        ActorKind::Operator
    };
    Actor {
        kind,
        id: principal.user_id.as_str().to_owned(),
    }
}

/// `POST /v1/call/sessions`: returns `(status, body)`; a repeat with the same Idempotency-Key and
/// body returns the stored answer, with another body `IDEMPOTENCY_KEY_REUSED`.
#[tracing::instrument(skip_all, fields(tenant = %principal.tenant_id), err)]
pub async fn create(
    state: &AppState,
    principal: &Principal,
    request: CreateSession,
    idempotency_key: Option<String>,
) -> Result<(u16, Value), AppError> {
    principal.may_create_sessions().map_err(|_| {
        AppError::new(
            ErrorCode::ForbiddenRole,
            "only the user and service roles can create sessions",
        )
    })?;
    if request
        .title
        .as_ref()
        .is_some_and(|t| t.chars().count() > MAX_TITLE_CHARS)
    {
        return Err(AppError::new(
            ErrorCode::ValidationFailed,
            format!("`title` must be at most {MAX_TITLE_CHARS} characters"),
        ));
    }
    let metadata = request.metadata.map(Value::Object);
    if metadata
        .as_ref()
        .is_some_and(|m| to_canonical_string(m).len() > MAX_METADATA_BYTES)
    {
        return Err(AppError::new(
            ErrorCode::ValidationFailed,
            format!("`metadata` must be at most {MAX_METADATA_BYTES} bytes"),
        ));
    }
    if let Some(key) = &idempotency_key
        && (key.is_empty() || key.len() > 255 || !key.chars().all(|c| c.is_ascii_graphic()))
    {
        return Err(AppError::new(
            ErrorCode::ValidationFailed,
            "Idempotency-Key must be 1–255 visible ASCII characters",
        ));
    }

    let mut payload = json!({ "ownerId": principal.user_id.as_str() });
    if let Some(title) = &request.title {
        payload["title"] = json!(title);
    }
    if let Some(metadata) = &metadata {
        payload["metadata"] = metadata.clone();
    }
    let request_hash: [u8; 32] = Sha256::digest(to_canonical_string(&payload)).into();
    let tenant = principal.tenant_id.as_str().to_owned();
    let actor = actor_of(principal);

    state
        .store
        .writer
        .execute(move |tx| {
            if let Some(key) = &idempotency_key
                && let Some((stored_hash, status, body)) =
                    queries::idempotent_response(tx.conn(), &tenant, CREATE_ROUTE, key)?
            {
                if stored_hash != request_hash {
                    return Err(AppError::new(
                        ErrorCode::IdempotencyKeyReused,
                        "this Idempotency-Key was already used with a different request body",
                    ));
                }
                return Ok((
                    status,
                    serde_json::from_str(&body).map_err(AppError::internal)?,
                ));
            }
            let session_id = SessionId::generate();
            let created = EventType::lookup("call.session.created")
                .ok_or_else(|| AppError::internal_msg("call.session.created is not registered"))?;
            let event = server_event(&session_id, created, payload, tx.recorded_at())?;
            tx.append(&tenant, session_id.as_str(), &actor, vec![event.into()])?;
            let record = queries::session(tx.conn(), session_id.as_str())?
                .ok_or_else(|| AppError::internal_msg("created session has no projection row"))?;
            let body = session_json(&record);
            if let Some(key) = &idempotency_key {
                let created_at = tx.recorded_at().to_owned();
                queries::store_idempotent_response(
                    tx.conn(),
                    &tenant,
                    CREATE_ROUTE,
                    key,
                    &request_hash,
                    201,
                    &body.to_string(),
                    &created_at,
                )?;
            }
            Ok((201, body))
        })
        .await
}

/// `GET /v1/call/sessions/{id}`.
#[tracing::instrument(skip_all, fields(session_id = %session_id), err)]
pub async fn get(
    state: &AppState,
    principal: &Principal,
    session_id: String,
) -> Result<Value, AppError> {
    let record = visible_session(state, principal, session_id).await?;
    Ok(session_json(&record))
}

/// Load a session the caller may read, or `SESSION_NOT_FOUND`.
pub async fn visible_session(
    state: &AppState,
    principal: &Principal,
    session_id: String,
) -> Result<SessionRecord, AppError> {
    let lookup_id = session_id.clone();
    let record = state
        .store
        .read(move |conn| Ok(queries::session(conn, &lookup_id)?))
        .await?
        .ok_or_else(|| session_not_found(&session_id))?;
    principal
        .session_access(Ownership {
            tenant_id: &record.tenant_id,
            owner_id: &record.owner_id,
        })
        .map_err(|denied| session_denied(denied, &session_id))?;
    Ok(record)
}

pub fn session_json(record: &SessionRecord) -> Value {
    json!({
        "sessionId": record.session_id,
        "tenantId": record.tenant_id,
        "ownerId": record.owner_id,
        "title": record.title,
        "metadata": record.metadata.as_deref().and_then(|m| serde_json::from_str::<Value>(m).ok()),
        "state": record.state,
        "version": record.version,
        "failureCode": record.failure_code,
        "provider": {
            "provider": record.provider,
            "providerRoomId": record.provider_room_id,
            "providerParticipantId": record.provider_participant_id,
            "providerCallId": record.provider_call_id,
        },
        "headSeq": record.head_seq,
        "eventCount": record.event_count,
        "createdAt": record.created_at,
        "updatedAt": record.updated_at,
        "lastEventAt": record.last_event_at,
    })
}
