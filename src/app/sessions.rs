//! Call sessions: create (with Idempotency-Key) and read.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{AppState, idempotency, session_denied, session_not_found};
use crate::domain::actor::{Actor, ActorKind};
use crate::domain::canonical::to_canonical_string;
use crate::domain::envelope::server_event;
use crate::domain::event_types::EventType;
use crate::domain::ids::SessionId;
use crate::domain::principal::{Ownership, Principal};
use crate::domain::session::{
    CreatedPayload, ProviderCorrelation, Session, SessionCommand, SessionEvent, SessionState, decide,
};
use crate::error::{AppError, ErrorCode};
use crate::store::log::StoredEvent;
use crate::store::{ParticipantRecord, RecordingRecord, SessionRecord};

const CREATE_ROUTE: &str = "POST /v1/call/sessions";
const MAX_TITLE_CHARS: usize = 200;
const MAX_METADATA_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
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
    Actor { kind, id: principal.user_id.as_str().to_owned() }
}

/// `POST /v1/call/sessions`: the created session; a repeat with the same Idempotency-Key and
/// body returns the stored answer, with another body `IDEMPOTENCY_KEY_REUSED`.
#[tracing::instrument(skip_all, fields(tenant = %principal.tenant_id), err)]
pub async fn create(
    state: &AppState,
    principal: &Principal,
    request: CreateSession,
    idempotency_key: Option<String>,
) -> Result<SessionView, AppError> {
    principal
        .may_create_sessions()
        .map_err(|_| AppError::new(ErrorCode::ForbiddenRole, "only the user and service roles can create sessions"))?;
    if request.title.as_ref().is_some_and(|t| t.chars().count() > MAX_TITLE_CHARS) {
        return Err(AppError::new(
            ErrorCode::ValidationFailed,
            format!("`title` must be at most {MAX_TITLE_CHARS} characters"),
        ));
    }
    let metadata = request.metadata.map(Value::Object);
    if metadata.as_ref().is_some_and(|m| to_canonical_string(m).len() > MAX_METADATA_BYTES) {
        return Err(AppError::new(
            ErrorCode::ValidationFailed,
            format!("`metadata` must be at most {MAX_METADATA_BYTES} bytes"),
        ));
    }
    idempotency::validate(idempotency_key.as_deref())?;

    let created = CreatedPayload { owner_id: principal.user_id.as_str().to_owned(), title: request.title, metadata };
    let payload = serde_json::to_value(&created).map_err(AppError::internal)?;
    let request_hash: [u8; 32] = Sha256::digest(to_canonical_string(&payload)).into();
    let tenant = principal.tenant_id.as_str().to_owned();
    let user = principal.user_id.as_str().to_owned();
    let actor = actor_of(principal);
    let retention = state.config.idempotency_retention_secs as i64;
    let max_open_sessions = state.tenants.admission(&tenant).quotas.max_open_sessions;

    state
        .store
        .writer
        .execute(move |tx| {
            let scope =
                |key| crate::store::IdempotencyScope { tenant_id: &tenant, user_id: &user, route: CREATE_ROUTE, key };
            if let Some(key) = &idempotency_key
                && let Some(answer) = idempotency::stored_answer(tx, scope(key), retention, &request_hash)?
            {
                return Ok(answer);
            }
            if let Some(max) = max_open_sessions
                && tx.open_sessions(&tenant)? >= max
            {
                return Err(AppError::new(
                    ErrorCode::QuotaExceeded,
                    format!("your tenant may have at most {max} open sessions; end one first"),
                )
                .with_details(json!({ "quota": "maxOpenSessions", "limit": max })));
            }
            let session_id = SessionId::generate();
            let created = EventType::lookup("call.session.created")
                .ok_or_else(|| AppError::internal_msg("call.session.created is not registered"))?;
            let event = server_event(&session_id, created, payload, &tx.recorded_at().to_rfc3339())?;
            tx.append(&tenant, session_id.as_str(), &actor, vec![event.into()])?;
            let body = session_view(tx, session_id.as_str())?;
            if let Some(key) = &idempotency_key {
                idempotency::store_answer(tx, scope(key), &request_hash, &body)?;
            }
            Ok(body)
        })
        .await
}

/// `GET /v1/call/sessions/{id}`: the session with its participants and recordings.
#[tracing::instrument(skip_all, fields(session_id = %session_id), err)]
pub async fn get(state: &AppState, principal: &Principal, session_id: String) -> Result<SessionView, AppError> {
    visible_session(state, principal, session_id.clone()).await?;
    state.store.read(move |conn| session_view(conn, &session_id)).await
}

/// The full view of a session, read through `conn` (a reader, or the write transaction).
pub fn session_view(conn: &dyn crate::store::Reads, session_id: &str) -> Result<SessionView, AppError> {
    let record = conn.session(session_id)?.ok_or_else(|| session_not_found(session_id))?;
    let participants = conn.participants(session_id)?;
    let recordings = conn.recordings(session_id)?;
    Ok(SessionView { session: SessionSummary::from(&record), participants, recordings })
}

pub const MAX_LIST_LIMIT: u64 = 100;
pub const DEFAULT_LIST_LIMIT: u64 = 20;

/// `GET /v1/call/sessions`: users see their own sessions, operators and services their tenant's;
/// newest first, with an opaque cursor.
#[tracing::instrument(skip_all, err)]
pub async fn list(
    state: &AppState,
    principal: &Principal,
    limit: Option<u64>,
    cursor: Option<String>,
    state_filter: Option<String>,
) -> Result<SessionPage, AppError> {
    use crate::domain::principal::Role;
    let limit = limit.unwrap_or(DEFAULT_LIST_LIMIT);
    if !(1..=MAX_LIST_LIMIT).contains(&limit) {
        return Err(AppError::new(ErrorCode::QueryInvalid, format!("`limit` must be between 1 and {MAX_LIST_LIMIT}")));
    }
    if let Some(filter) = &state_filter
        && SessionState::parse(filter).is_none()
    {
        return Err(AppError::new(
            ErrorCode::QueryInvalid,
            "`state` must be one of created, connecting, active, ended, failed",
        ));
    }
    let before_position = cursor.as_deref().map(decode_cursor).transpose()?;
    let tenant_wide = principal.has(Role::Operator) || principal.has(Role::Service);
    let filter = crate::store::SessionFilter {
        tenant_id: principal.tenant_id.as_str().to_owned(),
        owner_id: (!tenant_wide).then(|| principal.user_id.as_str().to_owned()),
        state: state_filter,
        before_position,
        limit: limit + 1,
    };
    let mut rows = state.store.read(move |conn| conn.list_sessions(&filter)).await?;
    let next_cursor = if rows.len() as u64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|(_, position)| encode_cursor(*position))
    } else {
        None
    };
    Ok(SessionPage { sessions: rows.iter().map(|(record, _)| SessionSummary::from(record)).collect(), next_cursor })
}

const CURSOR_PREFIX: &str = "cs1.";

fn encode_cursor(position: u64) -> String {
    use base64::Engine;
    format!("{CURSOR_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(position.to_be_bytes()))
}

fn decode_cursor(cursor: &str) -> Result<u64, AppError> {
    use base64::Engine;
    let invalid = || AppError::new(ErrorCode::QueryInvalid, "`cursor` is not a cursor this API returned");
    let encoded = cursor.strip_prefix(CURSOR_PREFIX).ok_or_else(invalid)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded).map_err(|_| invalid())?;
    let bytes: [u8; 8] = bytes.try_into().map_err(|_| invalid())?;
    Ok(u64::from_be_bytes(bytes))
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TransitionRequest {
    pub to: String,
    pub reason: Option<String>,
    /// For `to: failed`: a SCREAMING_SNAKE code; defaults to `CLIENT_REPORTED_FAILURE`.
    pub code: Option<String>,
    pub expected_version: Option<u64>,
    /// Provider correlation set together with `to: active`.
    pub provider: Option<ProviderCorrelation>,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProviderRequest {
    pub provider: String,
    pub provider_room_id: Option<String>,
    pub provider_participant_id: Option<String>,
    pub provider_call_id: Option<String>,
    pub expected_version: Option<u64>,
}

fn validate_correlation(correlation: &ProviderCorrelation) -> Result<(), AppError> {
    let fields = [
        ("provider", &correlation.provider),
        ("providerRoomId", &correlation.provider_room_id),
        ("providerParticipantId", &correlation.provider_participant_id),
        ("providerCallId", &correlation.provider_call_id),
    ];
    for (name, value) in fields {
        if let Some(value) = value {
            crate::domain::ids::EventId::parse(value)
                .map_err(|why| AppError::new(ErrorCode::ValidationFailed, format!("`{name}` {why}")))?;
        }
    }
    if correlation.provider.is_none() {
        return Err(AppError::new(ErrorCode::ValidationFailed, "`provider` is required"));
    }
    Ok(())
}

/// `POST /v1/call/sessions/{id}/state`.
#[tracing::instrument(skip_all, fields(session_id = %session_id), err)]
pub async fn transition(
    state: &AppState,
    principal: &Principal,
    session_id: String,
    request: TransitionRequest,
) -> Result<SessionView, AppError> {
    let to = SessionState::parse(&request.to).ok_or_else(|| {
        AppError::new(ErrorCode::ValidationFailed, "`to` must be one of created, connecting, active, ended, failed")
    })?;
    if request.reason.as_ref().is_some_and(|r| r.chars().count() > 500) {
        return Err(AppError::new(ErrorCode::ValidationFailed, "`reason` must be at most 500 characters"));
    }
    if let Some(code) = &request.code {
        let well_formed = code.len() <= 64
            && code.starts_with(|c: char| c.is_ascii_uppercase())
            && code.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if !well_formed || to != SessionState::Failed {
            return Err(AppError::new(
                ErrorCode::ValidationFailed,
                "`code` is a SCREAMING_SNAKE code, only with `to: failed`",
            ));
        }
    }
    if let Some(provider) = &request.provider {
        validate_correlation(provider)?;
    }
    let command = SessionCommand::Transition {
        to,
        reason: request.reason,
        code: request.code,
        expected_version: request.expected_version,
        provider: request.provider,
    };
    run_session_command(state, principal, session_id, command).await
}

/// `POST /v1/call/sessions/{id}/provider`.
#[tracing::instrument(skip_all, fields(session_id = %session_id), err)]
pub async fn link_provider(
    state: &AppState,
    principal: &Principal,
    session_id: String,
    request: ProviderRequest,
) -> Result<SessionView, AppError> {
    let correlation = ProviderCorrelation {
        provider: Some(request.provider),
        provider_room_id: request.provider_room_id,
        provider_participant_id: request.provider_participant_id,
        provider_call_id: request.provider_call_id,
    };
    validate_correlation(&correlation)?;
    let command = SessionCommand::LinkProvider { correlation, expected_version: request.expected_version };
    run_session_command(state, principal, session_id, command).await
}

/// Load the aggregate inside the write transaction, decide, append, answer with the new view.
async fn run_session_command(
    state: &AppState,
    principal: &Principal,
    session_id: String,
    command: SessionCommand,
) -> Result<SessionView, AppError> {
    let principal = principal.clone();
    let metering = state.metering.clone();
    let insights = state.config.insights.clone();
    let (view, metered) = state
        .store
        .writer
        .execute(move |tx| {
            let (record, session) = load_for_write(tx, &principal, &session_id)?;
            let events = decide(&session, command)?;
            let appended = append_session_events(tx, &record, &principal, &events)?;
            let metered = super::billing::meter_appended(tx, &metering, &appended)?;
            let ended = appended.iter().any(|event| {
                SessionEvent::from_envelope_parts(&event.event_type, &event.payload).is_some_and(|c| c.ends_session())
            });
            if ended {
                super::insights::append_final(tx, &insights, &record, super::insights::Reason::Ended)?;
            }
            Ok::<_, AppError>((session_view(tx, &session_id)?, metered))
        })
        .await?;
    if metered > 0 {
        state.billing_work.notify_one();
    }
    Ok(view)
}

/// The session record and its aggregate, for a caller allowed to change it.
pub fn load_for_write(
    conn: &dyn crate::store::Reads,
    principal: &Principal,
    session_id: &str,
) -> Result<(SessionRecord, Session), AppError> {
    let record = conn.session(session_id)?.ok_or_else(|| session_not_found(session_id))?;
    principal
        .session_writer(Ownership { tenant_id: &record.tenant_id, owner_id: &record.owner_id })
        .map_err(|denied| session_denied(denied, session_id))?;
    let session = record.aggregate();
    Ok((record, session))
}

pub fn append_session_events(
    tx: &mut dyn crate::store::WriteUnit,
    record: &SessionRecord,
    principal: &Principal,
    events: &[SessionEvent],
) -> Result<Vec<StoredEvent>, AppError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let session_id = SessionId::parse(&record.session_id).map_err(AppError::internal_msg)?;
    let now = tx.recorded_at().to_rfc3339();
    let mut new_events = Vec::with_capacity(events.len());
    for event in events {
        let (type_name, payload) = event.to_envelope_parts();
        let event_type = EventType::lookup(type_name)
            .ok_or_else(|| AppError::internal_msg(format!("{type_name} is not registered")))?;
        new_events.push(server_event(&session_id, event_type, payload, &now)?.into());
    }
    let (_, appended) = tx.append(&record.tenant_id, &record.session_id, &actor_of(principal), new_events)?;
    Ok(appended)
}

/// Load a session the caller may read, or `SESSION_NOT_FOUND`.
pub async fn visible_session(
    state: &AppState,
    principal: &Principal,
    session_id: String,
) -> Result<SessionRecord, AppError> {
    let lookup_id = session_id.clone();
    let record =
        state.store.read(move |conn| conn.session(&lookup_id)).await?.ok_or_else(|| session_not_found(&session_id))?;
    principal
        .session_access(Ownership { tenant_id: &record.tenant_id, owner_id: &record.owner_id })
        .map_err(|denied| session_denied(denied, &session_id))?;
    Ok(record)
}

/// A session as lists show it (`GET /v1/call/sessions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionSummary {
    pub session_id: String,
    pub tenant_id: String,
    pub owner_id: String,
    pub title: Option<String>,
    pub metadata: Option<Value>,
    pub state: SessionState,
    pub version: u64,
    pub failure_code: Option<String>,
    pub provider: ProviderCorrelation,
    pub room: RoomView,
    pub head_seq: u64,
    pub event_count: u64,
    pub created_at: String,
    pub updated_at: String,
    pub last_event_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RoomView {
    pub sid: Option<String>,
    pub state: Option<String>,
}

/// A session with its participants and recordings (`GET /v1/call/sessions/{id}`, and the answer
/// of every session command).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SessionView {
    #[serde(flatten)]
    pub session: SessionSummary,
    pub participants: Vec<ParticipantRecord>,
    pub recordings: Vec<RecordingRecord>,
}

/// A page of sessions, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionPage {
    pub sessions: Vec<SessionSummary>,
    pub next_cursor: Option<String>,
}

impl From<&SessionRecord> for SessionSummary {
    fn from(record: &SessionRecord) -> Self {
        SessionSummary {
            session_id: record.session_id.clone(),
            tenant_id: record.tenant_id.clone(),
            owner_id: record.owner_id.clone(),
            title: record.title.clone(),
            metadata: record.metadata.as_deref().and_then(|m| serde_json::from_str::<Value>(m).ok()),
            state: record.state,
            version: record.version,
            failure_code: record.failure_code.clone(),
            provider: record.aggregate().provider,
            room: RoomView { sid: record.room_sid.clone(), state: record.room_state.clone() },
            head_seq: record.head_seq,
            event_count: record.event_count,
            created_at: record.created_at.clone(),
            updated_at: record.updated_at.clone(),
            last_event_at: record.last_event_at.clone(),
        }
    }
}
