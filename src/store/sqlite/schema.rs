//! Versioned migrations of the durable tables (the log and operational state).
//!
//! Projection tables are not migrated: they are derived, carry their own version
//! (`projections::PROJECTION_VERSION`) and are rebuilt from the log when it changes.

use rusqlite_migration::{M, Migrations};

pub fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(
            r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE events (
    position       INTEGER PRIMARY KEY,
    tenant_id      TEXT NOT NULL,
    stream_id      TEXT NOT NULL,
    seq            INTEGER NOT NULL,
    event_id       TEXT NOT NULL,
    type           TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    ts             TEXT NOT NULL,
    recorded_at    TEXT NOT NULL,
    actor_kind     TEXT NOT NULL,
    actor_id       TEXT NOT NULL,
    payload        TEXT NOT NULL,
    content_hash   BLOB NOT NULL,
    prev_hash      BLOB NOT NULL,
    hash           BLOB NOT NULL,
    UNIQUE (stream_id, seq),
    UNIQUE (tenant_id, event_id)
) STRICT;

CREATE TRIGGER events_are_append_only_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER events_are_append_only_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;

-- Stored responses of commands sent with an Idempotency-Key.
CREATE TABLE idempotency_keys (
    tenant_id    TEXT NOT NULL,
    route        TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash BLOB NOT NULL,
    status       INTEGER NOT NULL,
    response     TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (tenant_id, route, key)
) STRICT;
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
"#,
        ),
        M::up(
            r#"
-- The LiveKit webhook replay guard: one receipt per webhook id, written in the same transaction as
-- the events the webhook produced.
CREATE TABLE webhook_receipts (
    webhook_id  TEXT PRIMARY KEY,
    event       TEXT NOT NULL,
    room_name   TEXT,
    session_id  TEXT,
    outcome     TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    received_at TEXT NOT NULL
) STRICT;
CREATE INDEX webhook_receipts_by_age ON webhook_receipts (received_at);
"#,
        ),
        M::up(
            r#"
-- Realtime connections: the server-side checkpoint (acked seq) and the resume token generation.
CREATE TABLE ws_connections (
    connection_id   TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL,
    session_id      TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    acked_seq       INTEGER NOT NULL DEFAULT 0,
    generation      INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL,
    connected_at    TEXT NOT NULL,
    disconnected_at TEXT
) STRICT;
CREATE INDEX ws_connections_by_session ON ws_connections (session_id);

-- Append-only history of transcript changes (one row per event that changed a segment's current
-- text). Retention compaction deletes superseded rows; events are never touched.
CREATE TABLE transcript_snapshots (
    snapshot_id INTEGER PRIMARY KEY,
    session_id  TEXT NOT NULL,
    segment_id  TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    revision    INTEGER NOT NULL,
    text        TEXT NOT NULL,
    recorded_at TEXT NOT NULL
) STRICT;
CREATE INDEX transcript_snapshots_by_session ON transcript_snapshots (session_id, seq);
"#,
        ),
        M::up(
            r#"
-- In-call actions: the idempotency record of each actionId (its request and its final ack) and
-- the current confirmation nonce. The decisions and outcomes themselves are events.
CREATE TABLE actions (
    tenant_id     TEXT NOT NULL,
    action_id     TEXT NOT NULL,
    session_id    TEXT NOT NULL,
    type          TEXT NOT NULL,
    params        TEXT NOT NULL,
    params_hash   TEXT NOT NULL,
    request_hash  BLOB NOT NULL,
    requested_by  TEXT NOT NULL,
    status        TEXT NOT NULL,
    ack           TEXT,
    confirm_nonce TEXT,
    confirm_used  INTEGER NOT NULL DEFAULT 0,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    PRIMARY KEY (tenant_id, action_id)
) STRICT;
CREATE INDEX actions_by_session ON actions (session_id, created_at);
"#,
        ),
        M::up(
            r#"
-- Snapshots keyed by (session, seq) in one b-tree: one insert per transcript change instead of two.
CREATE TABLE transcript_snapshots_v2 (
    session_id  TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    segment_id  TEXT NOT NULL,
    kind        TEXT NOT NULL,
    revision    INTEGER NOT NULL,
    text        TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
) STRICT, WITHOUT ROWID;
INSERT INTO transcript_snapshots_v2 (session_id, seq, segment_id, kind, revision, text, recorded_at)
    SELECT session_id, seq, segment_id, kind, revision, text, recorded_at FROM transcript_snapshots;
DROP TABLE transcript_snapshots;
ALTER TABLE transcript_snapshots_v2 RENAME TO transcript_snapshots;
"#,
        ),
        M::up(
            r#"
-- Snapshots keyed by the event's log position: every insert appends at the end of the b-tree
-- (as the log does) instead of landing in the middle of one session's range. Reads reach a
-- session's rows through the log's (stream_id, seq) index.
CREATE TABLE transcript_snapshots_v3 (
    position    INTEGER PRIMARY KEY,
    session_id  TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    segment_id  TEXT NOT NULL,
    kind        TEXT NOT NULL,
    revision    INTEGER NOT NULL,
    text        TEXT NOT NULL,
    recorded_at TEXT NOT NULL
) STRICT;
INSERT INTO transcript_snapshots_v3 (position, session_id, seq, segment_id, kind, revision, text, recorded_at)
    SELECT e.position, t.session_id, t.seq, t.segment_id, t.kind, t.revision, t.text, t.recorded_at
    FROM transcript_snapshots t JOIN events e ON e.stream_id = t.session_id AND e.seq = t.seq;
DROP TABLE transcript_snapshots;
ALTER TABLE transcript_snapshots_v3 RENAME TO transcript_snapshots;
"#,
        ),
        M::up(
            r#"
-- Tenants known to operators: status and quotas. A tenant without a row is active with defaults.
CREATE TABLE tenants (
    tenant_id  TEXT PRIMARY KEY,
    name       TEXT,
    status     TEXT NOT NULL CHECK (status IN ('active', 'suspended')),
    quotas     TEXT NOT NULL,
    version    INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
) STRICT;

-- Append-only audit trail of operator and governance actions, written in the same transaction as
-- the change it records.
CREATE TABLE audit_log (
    audit_id     INTEGER PRIMARY KEY,
    at           TEXT NOT NULL,
    actor_id     TEXT NOT NULL,
    actor_tenant TEXT NOT NULL,
    action       TEXT NOT NULL,
    target       TEXT NOT NULL,
    details      TEXT NOT NULL,
    request_id   TEXT NOT NULL
) STRICT;
CREATE TRIGGER audit_log_is_append_only_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_log_is_append_only_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"#,
        ),
        M::up(
            r#"
-- A snapshot's text is its event's text: read it from the log instead of storing a copy.
ALTER TABLE transcript_snapshots DROP COLUMN text;
"#,
        ),
        M::up(
            r#"
-- An Idempotency-Key belongs to the caller who chose it, not to the whole tenant: two users of one
-- tenant who pick the same key each get their own answer. Stored answers keep their owner (the
-- session they created names it).
CREATE TABLE idempotency_keys_v2 (
    tenant_id    TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    route        TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash BLOB NOT NULL,
    status       INTEGER NOT NULL,
    response     TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (tenant_id, user_id, route, key)
) STRICT;
INSERT INTO idempotency_keys_v2 (tenant_id, user_id, route, key, request_hash, status, response, created_at)
    SELECT tenant_id, COALESCE(json_extract(response, '$.ownerId'), ''), route, key, request_hash, status,
           response, created_at
    FROM idempotency_keys;
DROP TABLE idempotency_keys;
ALTER TABLE idempotency_keys_v2 RENAME TO idempotency_keys;
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
"#,
        ),
        M::up(
            r#"
-- Actions became a projection of their events (src/domain/action.rs): the table is now created and
-- rebuilt with the other projections, from the log alone.
DROP TABLE actions;
"#,
        ),
        M::up(
            r#"
-- Retry bookkeeping of the billing outbox and the alert worker: the only billing state that is not
-- a projection of the log (every outcome is an event). Survives restarts, so a retry keeps its time.
CREATE TABLE delivery_attempts (
    kind            TEXT NOT NULL,
    item_id         TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    next_attempt_at TEXT NOT NULL,
    last_error_code TEXT,
    last_error      TEXT,
    PRIMARY KEY (kind, item_id)
) STRICT;

-- The reconciliation scheduler's switch and progress (changes to it are audited).
CREATE TABLE scheduler_state (
    name        TEXT PRIMARY KEY,
    enabled     INTEGER NOT NULL,
    last_run_at TEXT,
    last_window TEXT,
    last_error  TEXT,
    updated_at  TEXT NOT NULL
) STRICT;
"#,
        ),
        // Crypto-shredding: each tenant's data keys, wrapped by the master key. Erasure sets
        // `wrapped` to NULL (the row stays as the record of it); the log itself is never touched.
        M::up(
            r#"
CREATE TABLE tenant_keys (
    tenant_id  TEXT NOT NULL,
    generation INTEGER NOT NULL,
    wrapped    BLOB,
    created_at TEXT NOT NULL,
    erased_at  TEXT,
    PRIMARY KEY (tenant_id, generation)
) STRICT;
"#,
        ),
        // The node holding a delivery's claim, so another can release it at once when that node
        // has ended (`store::postgres::liveness`); NULL once the attempt's outcome is recorded.
        M::up("ALTER TABLE delivery_attempts ADD COLUMN claimed_by TEXT;"),
    ])
}

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_valid() {
        assert!(super::migrations().validate().is_ok());
    }

    #[test]
    fn snapshots_keep_their_rows_when_rekeyed_by_position() {
        let mut conn = rusqlite::Connection::open_in_memory().expect("open");
        super::migrations().to_version(&mut conn, 5).expect("up to 5");
        for (position, seq) in [(7, 1), (9, 2)] {
            conn.execute(
                "INSERT INTO events VALUES (?1, 't1', 's1', ?2, ?3, 'transcript.segment.final', 1, 'ts', 'at', \
                 'user', 'u', '{}', x'00', x'00', x'00')",
                rusqlite::params![position, seq, format!("e{seq}")],
            )
            .expect("event");
            conn.execute(
                "INSERT INTO transcript_snapshots VALUES ('s1', ?1, 'seg', 'final', 1, ?2, 'at')",
                rusqlite::params![seq, format!("text {seq}")],
            )
            .expect("snapshot");
        }
        super::migrations().to_version(&mut conn, 6).expect("re-keyed");
        let rows: Vec<(i64, i64, String)> = conn
            .prepare("SELECT position, seq, text FROM transcript_snapshots ORDER BY position")
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect())
            .expect("rows");
        assert_eq!(rows, vec![(7, 1, "text 1".to_owned()), (9, 2, "text 2".to_owned())]);
        // Later the copy of the text goes (it is read from the log); the rows stay.
        super::migrations().to_latest(&mut conn).expect("to latest");
        let rows: Vec<(i64, i64)> = conn
            .prepare("SELECT position, seq FROM transcript_snapshots ORDER BY position")
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .expect("rows");
        assert_eq!(rows, vec![(7, 1), (9, 2)]);
    }
}
