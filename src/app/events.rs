//! Realtime event ingest (atomic batches) and replay.

use serde::Serialize;
use serde_json::{Value, json};

use super::sessions::{actor_of, visible_session};
use super::{AppState, session_denied, session_not_found};
use crate::domain::envelope::{IngestEvent, parse_envelope};
use crate::domain::error::Rejection;
use crate::domain::event_types::Writers;
use crate::domain::principal::{Ownership, Principal, Role};
use crate::error::{AppError, ErrorCode};
use crate::store::StoreError;
use crate::store::log::{NewEvent, ServedEvent, StoredEvent};
use crate::store::{AppendOutcome, WriteUnit};

pub const MAX_BATCH: usize = 500;
pub const MAX_REPLAY_LIMIT: u64 = 1000;
pub const DEFAULT_REPLAY_LIMIT: u64 = 100;

/// The class of write access a caller has through ingest and publish: a `service` may also write
/// service types; everyone else (the session owner) client types only. Server types are never
/// written this way.
pub fn caller_class(principal: &Principal) -> Writers {
    if principal.has(Role::Service) { Writers::Service } else { Writers::Client }
}

/// Validate every envelope of a batch, and that `caller` may write its type; the first failure
/// names its index and rejects the batch.
pub fn parse_batch(session_id: &str, raw: Vec<Value>, caller: Writers) -> Result<Vec<IngestEvent>, AppError> {
    if raw.is_empty() {
        return Err(AppError::new(ErrorCode::BatchEmpty, "`events` must hold at least one event"));
    }
    if raw.len() > MAX_BATCH {
        return Err(AppError::new(
            ErrorCode::BatchTooLarge,
            format!("a batch holds at most {MAX_BATCH} events; this one holds {}", raw.len()),
        ));
    }
    raw.into_iter()
        .enumerate()
        .map(|(index, value)| {
            let event = parse_envelope(value).map_err(|rejection| at_index(rejection, index))?;
            if event.session_id.as_str() != session_id {
                return Err(at_index(
                    Rejection::new(
                        ErrorCode::SessionMismatch,
                        format!("sessionId `{}` differs from the session in the path", event.session_id),
                    ),
                    index,
                ));
            }
            let writers = event.event_type.writers();
            if !writers.admit(caller) {
                let who = match writers {
                    Writers::Server => "only callstream itself writes it",
                    _ => "only services write it",
                };
                return Err(at_index(
                    Rejection::new(
                        ErrorCode::EventTypeReserved,
                        format!("you may not write `{}`: {who}", event.event_type.as_str()),
                    )
                    .with_details(json!({ "type": event.event_type.as_str(), "writers": writers.as_str() })),
                    index,
                ));
            }
            Ok(event)
        })
        .collect()
}

fn at_index(mut rejection: Rejection, index: usize) -> AppError {
    rejection.message = format!("events[{index}]: {}", rejection.message);
    let mut details = rejection.details.take().unwrap_or_else(|| json!({}));
    details["index"] = json!(index);
    AppError::from(rejection.with_details(details))
}

/// `POST /v1/realtime/sessions/{id}/events`: all events commit together or none do.
#[tracing::instrument(skip_all, fields(session_id = %session_id, events = raw.len()), err)]
pub async fn ingest(
    state: &AppState,
    principal: &Principal,
    session_id: String,
    raw: Vec<Value>,
) -> Result<IngestAnswer, AppError> {
    let events = parse_batch(&session_id, raw, caller_class(principal))?;
    let outcomes = append_checked(state, principal, session_id, events).await?;
    let head_seq = outcomes.iter().map(|o| o.seq).max().unwrap_or(0);
    let results = outcomes
        .into_iter()
        .map(|o| EventResult { event_id: o.event_id, seq: o.seq, position: o.position, duplicate: o.duplicate })
        .collect();
    Ok(IngestAnswer { results, head_seq })
}

/// What ingest answers: each event's place in the log, in request order.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngestAnswer {
    pub results: Vec<EventResult>,
    pub head_seq: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventResult {
    pub event_id: String,
    pub seq: u64,
    pub position: u64,
    /// An idempotent repeat: the original's seq and position, nothing appended.
    pub duplicate: bool,
}

/// A page of a session's log in seq order, with where to continue.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ReplayPage {
    pub events: Vec<ServedEvent>,
    pub diagnostics: ReplayDiagnostics,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplayDiagnostics {
    pub after: u64,
    pub limit: u64,
    pub returned: usize,
    pub head_seq: u64,
    pub next_after: u64,
    pub has_more: bool,
    pub epoch: String,
}

/// Append validated events to a session after checking, inside the write transaction, that the
/// caller may write to it. Shared by HTTP ingest and WebSocket publish.
pub async fn append_checked(
    state: &AppState,
    principal: &Principal,
    session_id: String,
    events: Vec<IngestEvent>,
) -> Result<Vec<AppendOutcome>, AppError> {
    let principal = principal.clone();
    let mut new_events: Vec<NewEvent> = events.into_iter().map(NewEvent::from).collect();
    for event in &mut new_events {
        event.preseal(state.store.vault(), principal.tenant_id.as_str());
    }
    let insights = state.config.insights.clone();
    state.store.writer.execute(move |tx| append_in_tx(tx, &principal, &session_id, new_events, &insights)).await
}

fn append_in_tx(
    tx: &mut dyn WriteUnit,
    principal: &Principal,
    session_id: &str,
    new_events: Vec<NewEvent>,
    insights: &crate::config::InsightsConfig,
) -> Result<Vec<AppendOutcome>, AppError> {
    let session = tx.session(session_id)?.ok_or_else(|| session_not_found(session_id))?;
    principal
        .session_writer(Ownership { tenant_id: &session.tenant_id, owner_id: &session.owner_id })
        .map_err(|denied| session_denied(denied, session_id))?;
    let (outcomes, stored) = tx.append(&session.tenant_id, session_id, &actor_of(principal), new_events)?;
    // A terminal session's final insights follow its transcript (a late final, an edit).
    if session.is_terminal() && stored.iter().any(super::insights::changes_insights) {
        super::insights::append_final(tx, insights, &session, super::insights::Reason::TranscriptChanged)?;
    }
    Ok(outcomes)
}

/// `GET /v1/realtime/sessions/{id}/events?after=&limit=`: ordered replay with diagnostics.
#[tracing::instrument(skip_all, fields(session_id = %session_id), err)]
pub async fn replay(
    state: &AppState,
    principal: &Principal,
    session_id: String,
    after: u64,
    limit: u64,
) -> Result<ReplayPage, AppError> {
    visible_session(state, principal, session_id.clone()).await?;
    let (events, head) = state
        .store
        .read(move |conn| -> Result<_, StoreError> {
            let events = conn.stream_events(&session_id, after, limit)?;
            let head = conn.stream_head(&session_id)?;
            Ok((events, head))
        })
        .await?;
    let next_after = events.last().map(|e| e.seq).unwrap_or(after);
    let returned = events.len();
    Ok(ReplayPage {
        events: events.iter().map(StoredEvent::served).collect(),
        diagnostics: ReplayDiagnostics {
            after,
            limit,
            returned,
            head_seq: head,
            next_after,
            has_more: next_after < head,
            epoch: state.store.epoch().to_owned(),
        },
    })
}
