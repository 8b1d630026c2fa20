//! The event log: stored form, the hash chain, and the row mapping shared by writer, readers,
//! verify and rebuild.

use rusqlite::{Connection, Row, params};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::domain::envelope::IngestEvent;

pub const GENESIS_HASH: [u8; 32] = [0; 32];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActorKind {
    User,
    Operator,
    Service,
    Livekit,
    System,
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::User => "user",
            ActorKind::Operator => "operator",
            ActorKind::Service => "service",
            ActorKind::Livekit => "livekit",
            ActorKind::System => "system",
        }
    }

    fn parse(raw: &str) -> ActorKind {
        match raw {
            "user" => ActorKind::User,
            "operator" => ActorKind::Operator,
            "service" => ActorKind::Service,
            "livekit" => ActorKind::Livekit,
            _ => ActorKind::System,
        }
    }
}

/// Who appended an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Actor {
    pub kind: ActorKind,
    pub id: String,
}

impl Actor {
    pub fn system() -> Actor {
        Actor { kind: ActorKind::System, id: "callstream".to_owned() }
    }
}

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

impl StoredEvent {
    /// The served form (SPEC §2): the ingest keys plus `seq`, `position`, `recordedAt`, `actor`.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "eventId": self.event_id,
            "sessionId": self.stream_id,
            "ts": self.ts,
            "type": self.event_type,
            "payload": serde_json::from_str::<Value>(&self.payload).unwrap_or(Value::Null),
            "schemaVersion": self.schema_version,
            "seq": self.seq,
            "position": self.position,
            "recordedAt": self.recorded_at,
            "actor": self.actor,
        })
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
        }
    }
}

pub const SELECT_COLUMNS: &str = "position, tenant_id, stream_id, seq, event_id, type, schema_version, ts, \
     recorded_at, actor_kind, actor_id, payload, content_hash, prev_hash, hash";

pub fn from_row(row: &Row<'_>) -> rusqlite::Result<StoredEvent> {
    Ok(StoredEvent {
        position: row.get(0)?,
        tenant_id: row.get(1)?,
        stream_id: row.get(2)?,
        seq: row.get(3)?,
        event_id: row.get(4)?,
        event_type: row.get(5)?,
        schema_version: row.get(6)?,
        ts: row.get(7)?,
        recorded_at: row.get(8)?,
        actor: Actor { kind: ActorKind::parse(&row.get::<_, String>(9)?), id: row.get(10)? },
        payload: row.get(11)?,
        content_hash: hash_column(row, 12)?,
        prev_hash: hash_column(row, 13)?,
        hash: hash_column(row, 14)?,
    })
}

fn hash_column(row: &Row<'_>, index: usize) -> rusqlite::Result<[u8; 32]> {
    let bytes: Vec<u8> = row.get(index)?;
    bytes.try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Blob, "hash is not 32 bytes".into())
    })
}

/// The statement `insert` runs; prepare it once per batch (the SQL is long to hash and look up).
pub const INSERT: &str = "INSERT INTO events (position, tenant_id, stream_id, seq, event_id, type, schema_version, ts, \
     recorded_at, actor_kind, actor_id, payload, content_hash, prev_hash, hash) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)";

/// Insert one row with `statement` prepared from `INSERT`.
pub fn insert(statement: &mut rusqlite::Statement<'_>, event: &StoredEvent) -> rusqlite::Result<()> {
    statement.execute(params![
        event.position,
        event.tenant_id,
        event.stream_id,
        event.seq,
        event.event_id,
        event.event_type,
        event.schema_version,
        event.ts,
        event.recorded_at,
        event.actor.kind.as_str(),
        event.actor.id,
        event.payload,
        event.content_hash.as_slice(),
        event.prev_hash.as_slice(),
        event.hash.as_slice(),
    ])?;
    Ok(())
}

/// The last position and its hash: where the next append continues the chain.
pub fn tip(conn: &Connection) -> rusqlite::Result<(u64, [u8; 32])> {
    let mut statement = conn.prepare_cached("SELECT position, hash FROM events ORDER BY position DESC LIMIT 1")?;
    let mut rows = statement.query([])?;
    match rows.next()? {
        None => Ok((0, GENESIS_HASH)),
        Some(row) => Ok((row.get(0)?, hash_column(row, 1)?)),
    }
}

pub fn stream_head(conn: &Connection, stream_id: &str) -> rusqlite::Result<u64> {
    let mut statement = conn.prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM events WHERE stream_id = ?1")?;
    statement.query_row([stream_id], |row| row.get(0))
}

/// An earlier event with the same tenant and eventId, if any: `(stream, seq, content_hash)`.
pub fn find_by_event_id(
    conn: &Connection,
    tenant_id: &str,
    event_id: &str,
) -> rusqlite::Result<Option<(String, u64, [u8; 32])>> {
    let mut statement =
        conn.prepare_cached("SELECT stream_id, seq, content_hash FROM events WHERE tenant_id = ?1 AND event_id = ?2")?;
    let mut rows = statement.query([tenant_id, event_id])?;
    match rows.next()? {
        None => Ok(None),
        Some(row) => Ok(Some((row.get(0)?, row.get(1)?, hash_column(row, 2)?))),
    }
}
