//! The event log's SQLite row mapping, shared by writer, readers, verify and rebuild.

use rusqlite::{Connection, Row, params};

use crate::store::log::{Actor, ActorKind, GENESIS_HASH, StoredEvent};

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
