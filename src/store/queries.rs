//! Read models as plain structs, and the queries that load them. Used by readers and, inside the
//! write transaction, by commands that validate against current state.

use rusqlite::{Connection, OptionalExtension, Row};

use super::log::{self, StoredEvent};

#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    pub session_id: String,
    pub tenant_id: String,
    pub owner_id: String,
    pub title: Option<String>,
    pub metadata: Option<String>,
    pub state: String,
    pub version: u64,
    pub failure_code: Option<String>,
    pub provider: Option<String>,
    pub provider_room_id: Option<String>,
    pub provider_participant_id: Option<String>,
    pub provider_call_id: Option<String>,
    pub head_seq: u64,
    pub event_count: u64,
    pub created_at: String,
    pub updated_at: String,
    pub last_event_at: String,
}

const SESSION_COLUMNS: &str = "session_id, tenant_id, owner_id, title, metadata, state, version, failure_code, provider, \
     provider_room_id, provider_participant_id, provider_call_id, head_seq, event_count, created_at, updated_at, \
     last_event_at";

fn session_from_row(row: &Row<'_>) -> rusqlite::Result<SessionRecord> {
    Ok(SessionRecord {
        session_id: row.get(0)?,
        tenant_id: row.get(1)?,
        owner_id: row.get(2)?,
        title: row.get(3)?,
        metadata: row.get(4)?,
        state: row.get(5)?,
        version: row.get(6)?,
        failure_code: row.get(7)?,
        provider: row.get(8)?,
        provider_room_id: row.get(9)?,
        provider_participant_id: row.get(10)?,
        provider_call_id: row.get(11)?,
        head_seq: row.get(12)?,
        event_count: row.get(13)?,
        created_at: row.get(14)?,
        updated_at: row.get(15)?,
        last_event_at: row.get(16)?,
    })
}

pub fn session(conn: &Connection, session_id: &str) -> rusqlite::Result<Option<SessionRecord>> {
    conn.prepare_cached(&format!(
        "SELECT {SESSION_COLUMNS} FROM sessions WHERE session_id = ?1"
    ))?
    .query_row([session_id], session_from_row)
    .optional()
}

/// Events of one stream with `seq > after`, in seq order.
pub fn stream_events(
    conn: &Connection,
    stream_id: &str,
    after: u64,
    limit: u64,
) -> rusqlite::Result<Vec<StoredEvent>> {
    conn.prepare_cached(&format!(
        "SELECT {} FROM events WHERE stream_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        log::SELECT_COLUMNS
    ))?
    .query_map(rusqlite::params![stream_id, after, limit], log::from_row)?
    .collect()
}

/// Events in global position order after `after`.
pub fn events_after_position(
    conn: &Connection,
    after: u64,
    limit: u64,
) -> rusqlite::Result<Vec<StoredEvent>> {
    conn.prepare_cached(&format!(
        "SELECT {} FROM events WHERE position > ?1 ORDER BY position LIMIT ?2",
        log::SELECT_COLUMNS
    ))?
    .query_map(rusqlite::params![after, limit], log::from_row)?
    .collect()
}

pub fn stream_head(conn: &Connection, stream_id: &str) -> rusqlite::Result<u64> {
    log::stream_head(conn, stream_id)
}

/// A stored response for an Idempotency-Key: `(request_hash, status, response)`.
pub fn idempotent_response(
    conn: &Connection,
    tenant_id: &str,
    route: &str,
    key: &str,
) -> rusqlite::Result<Option<(Vec<u8>, u16, String)>> {
    conn.prepare_cached(
        "SELECT request_hash, status, response FROM idempotency_keys WHERE tenant_id = ?1 AND route = ?2 AND key = ?3",
    )?
    .query_row([tenant_id, route, key], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
    .optional()
}

#[allow(clippy::too_many_arguments)]
pub fn store_idempotent_response(
    conn: &Connection,
    tenant_id: &str,
    route: &str,
    key: &str,
    request_hash: &[u8],
    status: u16,
    response: &str,
    created_at: &str,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO idempotency_keys (tenant_id, route, key, request_hash, status, response, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(rusqlite::params![tenant_id, route, key, request_hash, status, response, created_at])?;
    Ok(())
}
