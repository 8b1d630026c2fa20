//! Read models as plain structs, and the queries that load them. Used by readers and, inside the
//! write transaction, by commands that validate against current state.

use super::db::{Db, Dialect, Result, Row, corrupt, params};
use super::log;
use crate::domain::action::{Action, ActionState, Claim, Confirmation};
use crate::domain::canonical::to_canonical_string;
use crate::domain::session::{Session, SessionState};
use crate::domain::time::Timestamp;
use crate::store::log::StoredEvent;
use crate::store::{
    ActionRow, ConnectionRecord, IdempotencyScope, ParticipantRecord, Receipt, RecordingRecord, Retained,
    SegmentRecord, SessionFilter, SessionRecord, SnapshotRecord,
};

/// Store a session's lifecycle as `evolve` left it.
pub fn save_lifecycle(db: Db<'_>, session_id: &str, session: &Session, updated_at: &str) -> Result<()> {
    db.execute(
        "UPDATE sessions SET state = ?2, version = ?3, failure_code = ?4, provider = ?5, provider_room_id = ?6, \
         provider_participant_id = ?7, provider_call_id = ?8, updated_at = ?9 WHERE session_id = ?1",
        params![
            session_id,
            session.state.as_str(),
            session.version,
            session.failure_code,
            session.provider.provider,
            session.provider.provider_room_id,
            session.provider.provider_participant_id,
            session.provider.provider_call_id,
            updated_at,
        ],
    )?;
    Ok(())
}

const SESSION_COLUMNS: &str = "session_id, tenant_id, owner_id, title, metadata, state, version, failure_code, provider, \
     provider_room_id, provider_participant_id, provider_call_id, room_sid, room_state, head_seq, event_count, \
     created_at, updated_at, last_event_at";

fn session_from_row(row: &Row<'_>) -> Result<SessionRecord> {
    Ok(SessionRecord {
        session_id: row.get(0)?,
        tenant_id: row.get(1)?,
        owner_id: row.get(2)?,
        title: row.get(3)?,
        metadata: row.get(4)?,
        state: {
            let raw: String = row.get(5)?;
            SessionState::parse(&raw).ok_or_else(|| corrupt(5, &format!("state {raw}")))?
        },
        version: row.get(6)?,
        failure_code: row.get(7)?,
        provider: row.get(8)?,
        provider_room_id: row.get(9)?,
        provider_participant_id: row.get(10)?,
        provider_call_id: row.get(11)?,
        room_sid: row.get(12)?,
        room_state: row.get(13)?,
        head_seq: row.get(14)?,
        event_count: row.get(15)?,
        created_at: row.get(16)?,
        updated_at: row.get(17)?,
        last_event_at: row.get(18)?,
    })
}

pub fn session(db: Db<'_>, session_id: &str) -> Result<Option<SessionRecord>> {
    db.query_opt(
        &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE session_id = ?1"),
        params![session_id],
        session_from_row,
    )
}

/// Events of one stream with `seq > after`, in seq order.
pub fn stream_events(db: Db<'_>, stream_id: &str, after: u64, limit: u64) -> Result<Vec<StoredEvent>> {
    db.query_map(
        &format!("SELECT {} FROM events WHERE stream_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3", log::SELECT_COLUMNS),
        params![stream_id, after, limit],
        log::from_row,
    )
}

/// Events of one stream whose type starts with `type_prefix`, in seq order.
pub fn events_of_type(db: Db<'_>, stream_id: &str, type_prefix: &str) -> Result<Vec<StoredEvent>> {
    db.query_map(&format!(
        "SELECT {} FROM events WHERE stream_id = ?1 AND substr(type, 1, length(CAST(?2 AS TEXT))) = CAST(?2 AS TEXT) ORDER BY seq",
        log::SELECT_COLUMNS
    ), params![stream_id, type_prefix], log::from_row)
}

pub fn stream_head(db: Db<'_>, stream_id: &str) -> Result<u64> {
    log::stream_head(db, stream_id)
}

pub fn idempotent_response(
    db: Db<'_>,
    scope: IdempotencyScope<'_>,
    not_before: &str,
) -> Result<Option<(Vec<u8>, u16, String)>> {
    let IdempotencyScope { tenant_id, user_id, route, key } = scope;
    db.execute(
        "DELETE FROM idempotency_keys WHERE tenant_id = ?1 AND user_id = ?2 AND route = ?3 AND key = ?4 \
         AND created_at < ?5",
        params![tenant_id, user_id, route, key, not_before],
    )?;
    prune_expired(db, Retained::IdempotencyKeys, not_before)?;
    db.query_opt(
        "SELECT request_hash, status, response FROM idempotency_keys \
         WHERE tenant_id = ?1 AND user_id = ?2 AND route = ?3 AND key = ?4",
        params![tenant_id, user_id, route, key],
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
    )
}

pub fn store_idempotent_response(
    db: Db<'_>,
    scope: IdempotencyScope<'_>,
    request_hash: &[u8],
    status: u16,
    response: &str,
    created_at: &str,
) -> Result<()> {
    let IdempotencyScope { tenant_id, user_id, route, key } = scope;
    db.execute(
        "INSERT INTO idempotency_keys (tenant_id, user_id, route, key, request_hash, status, response, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![tenant_id, user_id, route, key, request_hash, status, response, created_at],
    )?;
    Ok(())
}

pub fn participants(db: Db<'_>, session_id: &str) -> Result<Vec<ParticipantRecord>> {
    db.query_map(
        "SELECT participant_id, participant_sid, name, kind, state, joined_at, left_at, left_reason \
         FROM session_participants WHERE session_id = ?1 ORDER BY joined_at, participant_id",
        params![session_id],
        |row| {
            Ok(ParticipantRecord {
                participant_id: row.get(0)?,
                participant_sid: row.get(1)?,
                name: row.get(2)?,
                kind: row.get(3)?,
                state: row.get(4)?,
                joined_at: row.get(5)?,
                left_at: row.get(6)?,
                left_reason: row.get(7)?,
            })
        },
    )
}

pub fn recordings(db: Db<'_>, session_id: &str) -> Result<Vec<RecordingRecord>> {
    db.query_map(
        "SELECT recording_id, state, status, location, error, started_at, ended_at \
         FROM session_recordings WHERE session_id = ?1 ORDER BY recording_id",
        params![session_id],
        |row| {
            Ok(RecordingRecord {
                recording_id: row.get(0)?,
                state: row.get(1)?,
                status: row.get(2)?,
                location: row.get(3)?,
                error: row.get(4)?,
                started_at: row.get(5)?,
                ended_at: row.get(6)?,
            })
        },
    )
}

/// Newest first; returns the page and each row's `created_position` for the cursor.
pub fn list_sessions(db: Db<'_>, filter: &SessionFilter) -> Result<Vec<(SessionRecord, u64)>> {
    let sql = format!(
        "SELECT {SESSION_COLUMNS}, created_position FROM sessions \
         WHERE tenant_id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR owner_id = ?2) AND (CAST(?3 AS TEXT) IS NULL OR state = ?3) \
         AND (CAST(?4 AS BIGINT) IS NULL OR created_position < ?4) ORDER BY created_position DESC LIMIT ?5"
    );
    db.query_map(
        &sql,
        params![filter.tenant_id, filter.owner_id, filter.state, filter.before_position, filter.limit],
        |row| Ok((session_from_row(row)?, row.get(19)?)),
    )
}

/// The session mapped to a provider room.
pub fn session_by_room(db: Db<'_>, provider: &str, room: &str) -> Result<Option<SessionRecord>> {
    db.query_opt(
        &format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE provider = ?1 AND provider_room_id = ?2 \
         ORDER BY created_position DESC LIMIT 1"
        ),
        params![provider, room],
        session_from_row,
    )
}

pub fn webhook_receipt_exists(db: Db<'_>, webhook_id: &str) -> Result<bool> {
    db.query_opt("SELECT 1 FROM webhook_receipts WHERE webhook_id = ?1", params![webhook_id], |_| Ok(()))
        .map(|found| found.is_some())
}

pub fn store_webhook_receipt(db: Db<'_>, receipt: &Receipt<'_>) -> Result<()> {
    db.execute(
        "INSERT INTO webhook_receipts (webhook_id, event, room_name, session_id, outcome, created_at, received_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            receipt.webhook_id,
            receipt.event,
            receipt.room_name,
            receipt.session_id,
            receipt.outcome,
            receipt.created_at,
            receipt.received_at,
        ],
    )?;
    Ok(())
}

/// Delete a bounded number of rows older than `cutoff` (RFC 3339), so retention never stalls the writer.
pub fn prune_expired(db: Db<'_>, table: Retained, cutoff: &str) -> Result<usize> {
    let (table, column) = match table {
        Retained::IdempotencyKeys => ("idempotency_keys", "created_at"),
        Retained::WebhookReceipts => ("webhook_receipts", "received_at"),
        // Open connections have no disconnected_at (NULL < cutoff is not true): never pruned.
        Retained::WsConnections => ("ws_connections", "disconnected_at"),
    };
    db.execute(
        &format!(
            "DELETE FROM {table} WHERE {row} IN (SELECT {row} FROM {table} WHERE {column} < ?1 LIMIT 64)",
            row = db.pick("rowid", "ctid")
        ),
        params![cutoff],
    )
}

pub fn connection(db: Db<'_>, connection_id: &str) -> Result<Option<ConnectionRecord>> {
    db.query_opt(
        "SELECT connection_id, tenant_id, session_id, user_id, acked_seq, generation, disconnected_at \
         FROM ws_connections WHERE connection_id = ?1",
        params![connection_id],
        |row| {
            Ok(ConnectionRecord {
                connection_id: row.get(0)?,
                tenant_id: row.get(1)?,
                session_id: row.get(2)?,
                user_id: row.get(3)?,
                acked_seq: row.get(4)?,
                generation: row.get(5)?,
                disconnected_at: row.get(6)?,
            })
        },
    )
}

pub fn insert_connection(db: Db<'_>, record: &ConnectionRecord, now: &str) -> Result<()> {
    db.execute("INSERT INTO ws_connections (connection_id, tenant_id, session_id, user_id, acked_seq, generation, created_at, connected_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)", params![
        record.connection_id,
        record.tenant_id,
        record.session_id,
        record.user_id,
        record.acked_seq,
        record.generation,
        now
    ])?;
    Ok(())
}

/// Whether another node still runs (`store::postgres::liveness`): on PostgreSQL, its node lock
/// is still held (trying it holds it only until this transaction ends). Embedded SQLite admits one
/// process, so a node other than this one is a process that has ended.
pub fn node_is_running(db: Db<'_>, node_id: &str) -> Result<bool> {
    use crate::store::postgres::liveness::{NODE_LOCK_CLASS, node_key};
    match db.dialect() {
        Dialect::Sqlite => Ok(false),
        Dialect::Postgres => db.query_row(
            "SELECT CAST(CASE WHEN pg_try_advisory_xact_lock(?1, ?2) THEN 0 ELSE 1 END AS BIGINT)",
            params![i64::from(NODE_LOCK_CLASS), i64::from(node_key(node_id))],
            |row| Ok(row.get::<i64>(0)? == 1),
        ),
    }
}

/// Rotate the resume generation if it is still `expected`; false when another resume won.
pub fn rotate_connection(db: Db<'_>, connection_id: &str, expected: u64, now: &str) -> Result<bool> {
    let changed = db.execute(
        "UPDATE ws_connections SET generation = generation + 1, connected_at = ?3, disconnected_at = NULL \
             WHERE connection_id = ?1 AND generation = ?2",
        params![connection_id, expected, now],
    )?;
    if changed == 1 && db.dialect() == Dialect::Postgres {
        // Delivered at commit to every node: one holding an older socket of it closes that.
        let notice = format!("{} {}", expected + 1, connection_id);
        db.execute("SELECT pg_notify(?1, ?2)", params![crate::store::postgres::feed::TAKEN_OVER, notice])?;
    }
    Ok(changed == 1)
}

/// Monotonic checkpoint: lower or repeated acks change nothing.
pub fn record_ack(db: Db<'_>, connection_id: &str, seq: u64) -> Result<()> {
    db.execute(
        "UPDATE ws_connections SET acked_seq = ?2 WHERE connection_id = ?1 AND acked_seq < ?2",
        params![connection_id, seq],
    )?;
    Ok(())
}

/// Mark a socket gone, unless a newer resume already took the connection over.
pub fn mark_disconnected(db: Db<'_>, connection_id: &str, generation: u64, now: &str) -> Result<()> {
    db.execute("UPDATE ws_connections SET disconnected_at = ?3 WHERE connection_id = ?1 AND generation = ?2 AND disconnected_at IS NULL", params![connection_id, generation, now])?;
    Ok(())
}

/// The current transcript, in speaking order (start time, then first appearance).
pub fn transcript(db: Db<'_>, session_id: &str) -> Result<Vec<(SegmentRecord, Option<SealedText>)>> {
    let sql = format!(
        "SELECT s.segment_id, s.seq, s.kind, s.revision, {text}, s.speaker, s.start_ms, \
         s.end_ms, s.confidence, s.language, s.edited_by, s.updated_at, \
         e.tenant_id, e.event_id, e.type, CASE WHEN {sealed} THEN e.payload END \
         FROM transcript_segments s JOIN events e ON e.stream_id = s.session_id AND e.seq = s.seq \
         WHERE s.session_id = ?1 ORDER BY s.start_ms IS NULL, s.start_ms, s.first_seq",
        text = db.json_text("e.payload", "text"),
        sealed = db.contains("e.payload", SEALED_MARK),
    );
    db.query_map(&sql, params![session_id], |row| {
        Ok((
            SegmentRecord {
                segment_id: row.get(0)?,
                seq: row.get(1)?,
                kind: row.get(2)?,
                revision: row.get(3)?,
                text: row.get(4)?,
                erased: false,
                speaker: row.get(5)?,
                start_ms: row.get(6)?,
                end_ms: row.get(7)?,
                confidence: row.get(8)?,
                language: row.get(9)?,
                edited_by: row.get(10)?,
                updated_at: row.get(11)?,
            },
            sealed_text(row, 12)?,
        ))
    })
}

/// In the payload of an event whose personal fields are sealed (`store::sealing`).
const SEALED_MARK: &str = "\"$sealed\"";

/// The event a text lives in, when its payload is sealed and must be opened to read it.
#[derive(Debug)]
pub struct SealedText {
    pub tenant_id: String,
    pub event_id: String,
    pub event_type: String,
    pub payload: String,
}

fn sealed_text(row: &Row<'_>, first: usize) -> Result<Option<SealedText>> {
    let Some(payload) = row.get::<Option<String>>(first + 3)? else { return Ok(None) };
    Ok(Some(SealedText {
        tenant_id: row.get(first)?,
        event_id: row.get(first + 1)?,
        event_type: row.get(first + 2)?,
        payload,
    }))
}

pub fn transcript_snapshots(
    db: Db<'_>,
    session_id: &str,
    after_seq: u64,
    limit: u64,
) -> Result<Vec<(SnapshotRecord, Option<SealedText>)>> {
    let sql = format!(
        "SELECT t.segment_id, t.seq, t.kind, t.revision, {text}, t.recorded_at, \
         EXISTS (SELECT 1 FROM transcript_segments s WHERE s.session_id = t.session_id \
         AND s.segment_id = t.segment_id AND s.seq = t.seq), \
         e.tenant_id, e.event_id, e.type, CASE WHEN {sealed} THEN e.payload END \
         FROM events e {join} transcript_snapshots t ON t.position = e.position \
         WHERE e.stream_id = ?1 AND e.seq > ?2 ORDER BY e.seq LIMIT ?3",
        join = db.ordered_join(),
        text = db.json_text("e.payload", "text"),
        sealed = db.contains("e.payload", SEALED_MARK),
    );
    db.query_map(&sql, params![session_id, after_seq, limit], |row| {
        Ok((
            SnapshotRecord {
                segment_id: row.get(0)?,
                seq: row.get(1)?,
                kind: row.get(2)?,
                revision: row.get(3)?,
                text: row.get(4)?,
                erased: false,
                recorded_at: row.get(5)?,
                current: row.get(6)?,
            },
            sealed_text(row, 7)?,
        ))
    })
}

/// `(snapshots, superseded)` of a session.
pub fn snapshot_stats(db: Db<'_>, session_id: &str) -> Result<(u64, u64)> {
    db.query_row(
        &format!(
            "SELECT COUNT(*), CAST(COALESCE(SUM(CASE WHEN NOT EXISTS (SELECT 1 FROM transcript_segments s \
             WHERE s.session_id = t.session_id AND s.segment_id = t.segment_id AND s.seq = t.seq) THEN 1 ELSE 0 END), 0) \
             AS BIGINT) \
             FROM events e {} transcript_snapshots t ON t.position = e.position WHERE e.stream_id = ?1",
            db.ordered_join()
        ),
        params![session_id],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )
}

pub fn action(db: Db<'_>, tenant_id: &str, action_id: &str) -> Result<Option<ActionRow>> {
    db.query_opt(
        "SELECT tenant_id, action_id, session_id, type, params, params_hash, request_hash, requested_by, status, ack, \
         confirmation_id, confirmation_expires_at, confirmation_spent, claimed_by, lease_expires_at, created_at, \
         updated_at FROM actions WHERE tenant_id = ?1 AND action_id = ?2",
        params![tenant_id, action_id],
        |row| {
            let params: String = row.get(4)?;
            let status: String = row.get(8)?;
            let ack: String = row.get(9)?;
            let timestamp = |index: usize| -> Result<Option<Timestamp>> {
                row.get::<Option<String>>(index)?
                    .map(|raw| Timestamp::parse(&raw).ok_or_else(|| corrupt(index, "not an RFC 3339 time")))
                    .transpose()
            };
            let confirmation = match (row.get::<Option<String>>(10)?, timestamp(11)?) {
                (Some(id), Some(expires_at)) => Some(Confirmation { id, expires_at, spent: row.get(12)? }),
                _ => None,
            };
            let claim = match (row.get::<Option<String>>(13)?, timestamp(14)?) {
                (Some(node), Some(lease_expires_at)) => Some(Claim { node, lease_expires_at }),
                _ => None,
            };
            Ok(ActionRow {
                tenant_id: row.get(0)?,
                action: Action {
                    action_id: row.get(1)?,
                    session_id: row.get(2)?,
                    action_type: row.get(3)?,
                    params: serde_json::from_str(&params).map_err(|_| corrupt(4, "params are not a JSON object"))?,
                    params_hash: row.get(5)?,
                    request_hash: row.get(6)?,
                    requested_by: row.get(7)?,
                    state: ActionState::parse(&status).ok_or_else(|| corrupt(8, "unknown action state"))?,
                    ack: serde_json::from_str(&ack).map_err(|_| corrupt(9, "not an ack"))?,
                    confirmation,
                    claim,
                },
                created_at: row.get(15)?,
                updated_at: row.get(16)?,
            })
        },
    )
}

/// Store an action as `evolve` left it (the projection's only write).
pub fn save_action(db: Db<'_>, tenant_id: &str, action: &Action, created_at: &str, updated_at: &str) -> Result<()> {
    let confirmation = action.confirmation.as_ref();
    let claim = action.claim.as_ref();
    db.execute(
        "INSERT INTO actions (tenant_id, action_id, session_id, type, params, params_hash, request_hash, \
         requested_by, status, ack, confirmation_id, confirmation_expires_at, confirmation_spent, claimed_by, \
         lease_expires_at, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17) \
         ON CONFLICT (tenant_id, action_id) DO UPDATE SET session_id = excluded.session_id, type = excluded.type, \
         params = excluded.params, params_hash = excluded.params_hash, request_hash = excluded.request_hash, \
         requested_by = excluded.requested_by, status = excluded.status, ack = excluded.ack, \
         confirmation_id = excluded.confirmation_id, confirmation_expires_at = excluded.confirmation_expires_at, \
         confirmation_spent = excluded.confirmation_spent, claimed_by = excluded.claimed_by, \
         lease_expires_at = excluded.lease_expires_at, created_at = excluded.created_at, \
         updated_at = excluded.updated_at",
        params![
            tenant_id,
            action.action_id,
            action.session_id,
            action.action_type,
            to_canonical_string(&serde_json::Value::Object(action.params.clone())),
            action.params_hash,
            action.request_hash,
            action.requested_by,
            action.state.as_str(),
            to_canonical_string(&serde_json::to_value(&action.ack).unwrap_or_default()),
            confirmation.map(|c| c.id.as_str()),
            confirmation.map(|c| c.expires_at.to_rfc3339()),
            confirmation.is_some_and(|c| c.spent),
            claim.map(|c| c.node.as_str()),
            claim.map(|c| c.lease_expires_at.to_rfc3339()),
            created_at,
            updated_at,
        ],
    )?;
    Ok(())
}

/// `(all actions of the session, actions requested since `since`)`.
pub fn action_usage(db: Db<'_>, session_id: &str, since: &str) -> Result<(u64, u64)> {
    db.query_row("SELECT COUNT(*), CAST(COALESCE(SUM(CASE WHEN created_at >= ?2 THEN 1 ELSE 0 END), 0) AS BIGINT) FROM actions WHERE session_id = ?1", params![session_id, since], |row| Ok((row.get(0)?, row.get(1)?)))
}

/// The orchestration and safety events of one action, in log order.
pub fn action_history(db: Db<'_>, session_id: &str, action_id: &str) -> Result<Vec<StoredEvent>> {
    db.query_map(
        &format!(
            "SELECT {} FROM events WHERE stream_id = ?1 AND (type LIKE 'orchestration.%' OR type LIKE 'safety.%') \
         AND {} = ?2 ORDER BY seq",
            log::SELECT_COLUMNS,
            db.json_text("payload", "actionId"),
        ),
        params![session_id, action_id],
        log::from_row,
    )
}
