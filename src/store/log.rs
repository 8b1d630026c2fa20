//! The event log as every backend stores it: the stored form, its actor, and the hash chain.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::domain::envelope::IngestEvent;

pub const GENESIS_HASH: [u8; 32] = [0; 32];

pub use crate::domain::actor::{Actor, ActorKind};

/// An event as stored in the log, with every server-assigned field.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub position: u64,
    pub tenant_id: String,
    pub stream_id: String,
    pub seq: u64,
    pub event_id: String,
    pub event_type: String,
    pub schema_version: u32,
    pub ts: String,
    pub recorded_at: String,
    pub actor: Actor,
    /// Canonical JSON text.
    pub payload: String,
    pub content_hash: [u8; 32],
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
}

/// An event as the API serves it (SPEC §2): the ingest keys plus `seq`, `position`,
/// `recordedAt` and `actor`. Replay, action histories and WebSocket `event` frames all use it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServedEvent {
    pub event_id: String,
    pub session_id: String,
    pub ts: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub payload: Value,
    pub schema_version: u32,
    pub seq: u64,
    pub position: u64,
    pub recorded_at: String,
    pub actor: Actor,
}

impl StoredEvent {
    pub fn served(&self) -> ServedEvent {
        ServedEvent {
            event_id: self.event_id.clone(),
            session_id: self.stream_id.clone(),
            ts: self.ts.clone(),
            event_type: self.event_type.clone(),
            payload: self.payload_json(),
            schema_version: self.schema_version,
            seq: self.seq,
            position: self.position,
            recorded_at: self.recorded_at.clone(),
            actor: self.actor.clone(),
        }
    }

    /// The served form as a JSON value.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self.served()).unwrap_or(Value::Null)
    }

    pub fn payload_json(&self) -> Value {
        serde_json::from_str(&self.payload).unwrap_or(Value::Null)
    }
}

/// `sha256(prev_hash || canonical bytes)`; the canonical bytes length-prefix every stored field so
/// that no two different events share them.
pub fn chain_hash(event: &StoredEvent) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(event.prev_hash);
    hasher.update(event.position.to_le_bytes());
    hasher.update(event.seq.to_le_bytes());
    hasher.update(u64::from(event.schema_version).to_le_bytes());
    for field in [
        event.tenant_id.as_str(),
        &event.stream_id,
        &event.event_id,
        &event.event_type,
        &event.ts,
        &event.recorded_at,
        event.actor.kind.as_str(),
        &event.actor.id,
        &event.payload,
    ] {
        hasher.update((field.len() as u64).to_le_bytes());
        hasher.update(field.as_bytes());
    }
    hasher.update(event.content_hash);
    hasher.finalize().into()
}

/// What an append command carries for one event before the log assigns its place.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: String,
    pub event_type: &'static str,
    pub schema_version: u32,
    pub ts: String,
    pub payload: String,
    pub content_hash: [u8; 32],
    /// The payload already sealed on the request's thread with the tenant's active key, so the
    /// single writer does not spend its time on it; used only if that key is still the active one.
    pub presealed: Option<Presealed>,
}

#[derive(Debug, Clone)]
pub struct Presealed {
    pub tenant_id: String,
    pub generation: u32,
    pub payload: String,
}

impl NewEvent {
    /// Seal the personal fields now when the vault holds the tenant's active key (it holds only
    /// committed, unerased keys); otherwise the writer seals them.
    pub fn preseal(&mut self, vault: &crate::store::sealing::Vault, tenant_id: &str) {
        let personal = crate::store::sealing::personal_fields(self.event_type);
        if personal.is_empty() {
            return;
        }
        let Some(key) = vault.active(tenant_id) else { return };
        if let Ok(Some(payload)) = crate::store::sealing::seal(&key, tenant_id, &self.event_id, personal, &self.payload)
        {
            self.presealed = Some(Presealed { tenant_id: tenant_id.to_owned(), generation: key.generation, payload });
        }
    }
}

impl From<IngestEvent> for NewEvent {
    fn from(event: IngestEvent) -> Self {
        NewEvent {
            event_id: event.event_id.as_str().to_owned(),
            event_type: event.event_type.as_str(),
            schema_version: event.schema_version,
            ts: event.ts,
            payload: event.payload,
            content_hash: event.content_hash,
            presealed: None,
        }
    }
}
