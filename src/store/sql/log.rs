//! The event log's rows, shared by writer, readers, verify and rebuild on both backends.

use super::db::{Db, Prepared, Result, Row, params};
use crate::store::log::{Actor, ActorKind, GENESIS_HASH, StoredEvent};

pub const SELECT_COLUMNS: &str = "position, tenant_id, stream_id, seq, event_id, type, schema_version, ts, \
     recorded_at, actor_kind, actor_id, payload, content_hash, prev_hash, hash";

pub fn from_row(row: &Row<'_>) -> Result<StoredEvent> {
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
        actor: Actor { kind: ActorKind::parse(&row.get::<String>(9)?), id: row.get(10)? },
        payload: row.get(11)?,
        content_hash: hash_column(row, 12)?,
        prev_hash: hash_column(row, 13)?,
        hash: hash_column(row, 14)?,
    })
}

fn hash_column(row: &Row<'_>, index: usize) -> Result<[u8; 32]> {
    row.get(index)
}

pub const INSERT: &str = "INSERT INTO events (position, tenant_id, stream_id, seq, event_id, type, schema_version, ts, \
     recorded_at, actor_kind, actor_id, payload, content_hash, prev_hash, hash) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) ON CONFLICT DO NOTHING";

/// Insert one row with `statement` (prepared from `INSERT`); false when a unique key (an eventId
/// the tenant used, most likely) already holds it. A conflict is answered, not raised:
/// PostgreSQL aborts a transaction on an error.
pub fn insert(statement: &mut Prepared<'_>, event: &StoredEvent) -> Result<bool> {
    let inserted = statement.execute(params![
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
        event.content_hash,
        event.prev_hash,
        event.hash,
    ])?;
    Ok(inserted == 1)
}

/// The last position and its hash: where the next append continues the chain.
pub fn tip(db: Db<'_>) -> Result<(u64, [u8; 32])> {
    Ok(db
        .query_opt("SELECT position, hash FROM events ORDER BY position DESC LIMIT 1", params![], |row| {
            Ok((row.get(0)?, hash_column(row, 1)?))
        })?
        .unwrap_or((0, GENESIS_HASH)))
}

pub fn stream_head(db: Db<'_>, stream_id: &str) -> Result<u64> {
    db.query_row("SELECT COALESCE(MAX(seq), 0) FROM events WHERE stream_id = ?1", params![stream_id], |row| row.get(0))
}

/// An earlier event with the same tenant and eventId, if any: `(stream, seq, content_hash)`.
pub fn find_by_event_id(db: Db<'_>, tenant_id: &str, event_id: &str) -> Result<Option<(String, u64, [u8; 32])>> {
    db.query_opt(
        "SELECT stream_id, seq, content_hash FROM events WHERE tenant_id = ?1 AND event_id = ?2",
        params![tenant_id, event_id],
        |row| Ok((row.get(0)?, row.get(1)?, hash_column(row, 2)?)),
    )
}
