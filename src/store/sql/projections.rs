//! Projections: tables derived from the log, updated inside the append transaction (inline) and
//! rebuilt from the log by the very same `apply` function.
//!
//! Every column is a function of the events alone (never of wall-clock time or request data), so
//! a rebuild yields exactly the live tables; `verify` and the rebuild test hold us to that.

use super::db::{Db, Prepared, Result, params};
use std::borrow::Cow;

use serde::Deserialize;

use super::log;
use crate::domain::action::{self, ActionEvent};
use crate::domain::session::{self, CreatedPayload, Session, SessionEvent};
use crate::store::log::StoredEvent;
use crate::store::sealing::Vault;

/// Bump when the DDL or `apply` changes; a database with another version is rebuilt at start-up.
pub const PROJECTION_VERSION: i64 = 10;

/// Derived tables, in the order they are compared.
pub const TABLES: &[&str] = &[
    "sessions",
    "session_participants",
    "session_recordings",
    "transcript_segments",
    "actions",
    "usage_records",
    "billing_adjustments",
    "billing_outbox",
    "billing_dead_letters",
    "reconciliation_runs",
    "reconciliation_mismatches",
];

const DDL: &str = r#"
CREATE TABLE sessions (
    session_id              TEXT PRIMARY KEY,
    tenant_id               TEXT NOT NULL,
    owner_id                TEXT NOT NULL,
    title                   TEXT,
    metadata                TEXT,
    state                   TEXT NOT NULL,
    version                 INTEGER NOT NULL,
    failure_code            TEXT,
    provider                TEXT,
    provider_room_id        TEXT,
    provider_participant_id TEXT,
    provider_call_id        TEXT,
    room_sid                TEXT,
    room_state              TEXT,
    head_seq                INTEGER NOT NULL DEFAULT 0,
    event_count             INTEGER NOT NULL DEFAULT 0,
    created_position        INTEGER NOT NULL,
    created_at              TEXT NOT NULL,
    updated_at              TEXT NOT NULL,
    last_event_at           TEXT NOT NULL
) STRICT;
CREATE INDEX sessions_by_owner ON sessions (tenant_id, owner_id, created_position DESC);
CREATE INDEX sessions_by_tenant ON sessions (tenant_id, created_position DESC);
CREATE INDEX sessions_by_provider_room ON sessions (provider, provider_room_id);

-- One row per participant identity; the current connection's sid decides whether a late
-- `left` (from an earlier connection) applies.
CREATE TABLE session_participants (
    session_id      TEXT NOT NULL,
    participant_id  TEXT NOT NULL,
    participant_sid TEXT,
    name            TEXT,
    kind            TEXT,
    state           TEXT NOT NULL,
    joined_at       TEXT NOT NULL,
    left_at         TEXT,
    left_reason     TEXT,
    PRIMARY KEY (session_id, participant_id)
) STRICT;

-- Recordings (LiveKit egress); `ended` is final for a recording id.
CREATE TABLE session_recordings (
    session_id   TEXT NOT NULL,
    recording_id TEXT NOT NULL,
    state        TEXT NOT NULL,
    status       TEXT,
    location     TEXT,
    error        TEXT,
    started_at   TEXT,
    ended_at     TEXT,
    PRIMARY KEY (session_id, recording_id)
) STRICT;

-- The current transcript: per segment, the winning event by (kind rank, revision):
-- partial 0 < final 1 < edited 2, then the higher revision. Ties keep the first. The text stays in
-- the log and is read through the winning `seq`, so a transcript is stored once, not three times.
CREATE TABLE transcript_segments (
    session_id  TEXT NOT NULL,
    segment_id  TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    kind_rank   INTEGER NOT NULL,
    revision    INTEGER NOT NULL,
    speaker     TEXT,
    start_ms    INTEGER,
    end_ms      INTEGER,
    confidence  REAL,
    language    TEXT,
    edited_by   TEXT,
    first_seq   INTEGER NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (session_id, segment_id)
) STRICT, WITHOUT ROWID;

-- In-call actions: the fold of each action's events (domain::action::evolve), keyed by the
-- tenant-scoped actionId. The confirmation token itself is never stored, only its id and expiry.
CREATE TABLE actions (
    tenant_id               TEXT NOT NULL,
    action_id               TEXT NOT NULL,
    session_id              TEXT NOT NULL,
    type                    TEXT NOT NULL,
    params                  TEXT NOT NULL,
    params_hash             TEXT NOT NULL,
    request_hash            TEXT NOT NULL,
    requested_by            TEXT NOT NULL,
    status                  TEXT NOT NULL,
    ack                     TEXT NOT NULL,
    confirmation_id         TEXT,
    confirmation_expires_at TEXT,
    confirmation_spent      INTEGER NOT NULL DEFAULT 0,
    claimed_by              TEXT,
    lease_expires_at        TEXT,
    created_at              TEXT NOT NULL,
    updated_at              TEXT NOT NULL,
    PRIMARY KEY (tenant_id, action_id)
) STRICT;
CREATE INDEX actions_by_session ON actions (session_id, created_at);
"#;

pub fn create(db: Db<'_>) -> Result<()> {
    db.batch(&db.ddl(DDL))?;
    db.batch(&db.ddl(super::billing::DDL))
}

pub fn drop_all(db: Db<'_>) -> Result<()> {
    for table in TABLES {
        db.batch(&format!("DROP TABLE IF EXISTS {table}"))?;
    }
    Ok(())
}

pub fn stored_version(db: Db<'_>) -> Result<Option<i64>> {
    db.query_opt("SELECT value FROM meta WHERE key = 'projection_version'", params![], |row| row.get::<String>(0))
        .map(|v| v.and_then(|v| v.parse().ok()))
}

pub fn set_version(db: Db<'_>) -> Result<()> {
    db.execute(
        "INSERT INTO meta (key, value) VALUES ('projection_version', ?1) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![PROJECTION_VERSION.to_string()],
    )?;
    Ok(())
}

/// Live appends also keep the append-only transcript history; a replay rebuilds projections only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Live,
    Replay,
}

/// Apply events (in position order) to every projection.
pub fn apply(db: Db<'_>, events: &[StoredEvent], mode: Mode) -> Result<()> {
    // The transcript tables depend on transcript events alone, so those are applied together.
    let mut transcript_events = Vec::new();
    for event in events {
        if is_transcript_type(&event.event_type) {
            transcript_events.push(event);
        } else if event.event_type.starts_with("billing.") {
            super::billing::apply(db, event)?;
        } else if let Some(action_event) = ActionEvent::from_envelope_parts(&event.event_type, &event.payload) {
            apply_action(db, event, &action_event)?;
        } else {
            apply_lifecycle(db, event)?;
        }
    }
    Transcripts { db, mode, upsert: None, snapshot: None }.apply_all(&transcript_events)?;
    // Stream counters once per stream, not once per event: the hot path of batch ingest.
    let mut heads: Vec<(&str, u64, u64, &str)> = Vec::new();
    for event in events {
        match heads.iter_mut().find(|(stream, ..)| *stream == event.stream_id) {
            Some(head) => {
                head.1 = event.seq;
                head.2 += 1;
                head.3 = &event.recorded_at;
            }
            None => heads.push((&event.stream_id, event.seq, 1, &event.recorded_at)),
        }
    }
    for (stream, head, count, at) in heads {
        db.execute(
            "UPDATE sessions SET head_seq = ?2, event_count = event_count + ?3, last_event_at = ?4 WHERE session_id = ?1",
            params![stream, head, count, at],
        )?;
    }
    Ok(())
}

/// The payload fields the projection reads from the `call.*` types, borrowed from the stored JSON
/// (validated against its schema on the way in). Absent fields read as `None`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct CallPayload<'a> {
    #[serde(borrow)]
    participant_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    participant_sid: Option<Cow<'a, str>>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    reason: Option<Cow<'a, str>>,
    #[serde(borrow)]
    room_sid: Option<Cow<'a, str>>,
    #[serde(borrow)]
    recording_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    status: Option<Cow<'a, str>>,
    #[serde(borrow)]
    location: Option<Cow<'a, str>>,
    #[serde(borrow)]
    error: Option<Cow<'a, str>>,
}

fn apply_lifecycle(db: Db<'_>, event: &StoredEvent) -> Result<()> {
    if event.event_type == "call.session.created" {
        let Ok(created) = serde_json::from_str::<CreatedPayload>(&event.payload) else { return Ok(()) };
        let session = Session::new();
        db.execute(
            "INSERT INTO sessions (session_id, tenant_id, owner_id, title, metadata, state, version, \
             created_position, created_at, updated_at, last_event_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?9)",
            params![
                event.stream_id,
                event.tenant_id,
                created.owner_id,
                created.title,
                created.metadata.as_ref().map(crate::domain::canonical::to_canonical_string),
                session.state.as_str(),
                session.version,
                event.position,
                event.recorded_at,
            ],
        )?;
        return Ok(());
    }
    if let Some(change) = SessionEvent::from_envelope_parts(&event.event_type, &event.payload) {
        // The row stores exactly what the aggregate's fold returns.
        if let Some(record) = super::queries::session(db, &event.stream_id)? {
            let session = session::evolve(record.aggregate(), &change);
            super::queries::save_lifecycle(db, &event.stream_id, &session, &event.recorded_at)?;
        }
        return Ok(());
    }
    // Parsed only by the arms that read it: most call.* types change no projection.
    let payload = || serde_json::from_str::<CallPayload>(&event.payload).unwrap_or_default();
    match event.event_type.as_str() {
        "call.participant.joined" => {
            let payload = payload();
            // An erased identity (its tenant's key was destroyed) leaves no participant row.
            if payload.participant_id.is_none() {
                return Ok(());
            }
            db.execute("INSERT INTO session_participants (session_id, participant_id, participant_sid, name, kind, state, joined_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, 'joined', ?6) \
                 ON CONFLICT (session_id, participant_id) DO UPDATE SET participant_sid = excluded.participant_sid, \
                 name = COALESCE(excluded.name, session_participants.name), kind = COALESCE(excluded.kind, session_participants.kind), state = 'joined', \
                 joined_at = excluded.joined_at, left_at = NULL, left_reason = NULL", params![
                event.stream_id,
                payload.participant_id,
                payload.participant_sid,
                payload.name,
                payload.kind,
                event.recorded_at,
            ])?;
        }
        "call.participant.left" => {
            let payload = payload();
            // A leave carrying the sid of an earlier connection is stale (the participant has
            // reconnected since): it stays in the log and changes nothing here.
            db.execute(
                "UPDATE session_participants SET state = 'left', left_at = ?4, left_reason = ?5 \
                 WHERE session_id = ?1 AND participant_id = ?2 \
                 AND (CAST(?3 AS TEXT) IS NULL OR participant_sid IS NULL OR participant_sid = ?3)",
                params![
                    event.stream_id,
                    payload.participant_id,
                    payload.participant_sid,
                    event.recorded_at,
                    payload.reason,
                ],
            )?;
        }
        "call.room.started" => {
            let payload = payload();
            // A late `started` for the room instance that already finished changes nothing; a new
            // instance (another sid) restarts the room.
            db.execute("UPDATE sessions SET room_state = 'started', room_sid = COALESCE(?2, room_sid) \
                 WHERE session_id = ?1 AND NOT (COALESCE(room_state, '') = 'finished' AND (CAST(?2 AS TEXT) IS NULL OR COALESCE(room_sid = ?2, FALSE)))", params![event.stream_id, payload.room_sid])?;
        }
        "call.room.finished" => {
            let payload = payload();
            db.execute(
                "UPDATE sessions SET room_state = 'finished', room_sid = COALESCE(?2, room_sid) WHERE session_id = ?1",
                params![event.stream_id, payload.room_sid],
            )?;
        }
        "call.recording.started" => {
            let payload = payload();
            db.execute("INSERT INTO session_recordings (session_id, recording_id, state, started_at) VALUES (?1, ?2, 'active', ?3) \
                 ON CONFLICT (session_id, recording_id) DO UPDATE SET started_at = COALESCE(session_recordings.started_at, excluded.started_at)", params![event.stream_id, payload.recording_id, event.recorded_at])?;
        }
        "call.recording.updated" => {
            let payload = payload();
            db.execute("INSERT INTO session_recordings (session_id, recording_id, state, status) VALUES (?1, ?2, 'active', ?3) \
                 ON CONFLICT (session_id, recording_id) DO UPDATE SET status = excluded.status WHERE session_recordings.state <> 'ended'", params![event.stream_id, payload.recording_id, payload.status])?;
        }
        "call.recording.ended" => {
            let payload = payload();
            db.execute(
                "INSERT INTO session_recordings (session_id, recording_id, state, status, location, error, ended_at) \
                 VALUES (?1, ?2, 'ended', ?3, ?4, ?5, ?6) \
                 ON CONFLICT (session_id, recording_id) DO UPDATE SET state = 'ended', status = excluded.status, \
                 location = excluded.location, error = excluded.error, ended_at = excluded.ended_at",
                params![
                    event.stream_id,
                    payload.recording_id,
                    payload.status,
                    payload.location,
                    payload.error,
                    event.recorded_at,
                ],
            )?;
        }
        _ => {}
    }
    Ok(())
}

/// Fold one event into its action's row: the row is exactly what `evolve` returns.
fn apply_action(db: Db<'_>, event: &StoredEvent, action_event: &ActionEvent) -> Result<()> {
    let current = super::queries::action(db, &event.tenant_id, action_event.action_id())?;
    let before = current.as_ref().map(|row| row.action.clone());
    let Some(after) = action::evolve(before.clone(), &event.stream_id, action_event) else { return Ok(()) };
    if before.as_ref() == Some(&after) {
        return Ok(());
    }
    let created_at = current.map_or_else(|| event.recorded_at.clone(), |row| row.created_at);
    super::queries::save_action(db, &event.tenant_id, &after, &created_at, &event.recorded_at)
}

/// The fields of a `transcript.segment.*` payload the projection reads, borrowed from the stored
/// JSON (the payload was validated against its schema on the way in).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct SegmentPayload<'a> {
    #[serde(borrow)]
    segment_id: Option<Cow<'a, str>>,
    #[serde(deserialize_with = "integral")]
    revision: i64,
    #[serde(borrow)]
    speaker: Option<Cow<'a, str>>,
    #[serde(deserialize_with = "optional_integral")]
    start_ms: Option<i64>,
    #[serde(deserialize_with = "optional_integral")]
    end_ms: Option<i64>,
    confidence: Option<f64>,
    #[serde(borrow)]
    language: Option<Cow<'a, str>>,
    #[serde(borrow)]
    edited_by: Option<Cow<'a, str>>,
}

/// A JSON Schema `integer` may be written `3`, `3.0` or `3e0`; every integer in our schemas is
/// bounded to ±(2⁵³ − 1), where an f64 is exact, so any of those forms reads as the same i64.
fn integral<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    let number = serde_json::Number::deserialize(deserializer)?;
    number
        .as_i64()
        .or_else(|| {
            number.as_f64().filter(|f| f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_991.0).map(|f| f as i64)
        })
        .ok_or_else(|| serde::de::Error::custom("not an integer within ±(2^53 - 1)"))
}

fn optional_integral<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    Option::<serde_json::Number>::deserialize(deserializer)?
        .map(|number| integral(number).map_err(serde::de::Error::custom))
        .transpose()
}

fn is_transcript_type(event_type: &str) -> bool {
    matches!(event_type, "transcript.segment.partial" | "transcript.segment.final" | "transcript.segment.edited")
}

const SEGMENT_COLUMNS: &str = "session_id, segment_id, seq, kind, kind_rank, revision, speaker, start_ms, end_ms, \
     confidence, language, edited_by, first_seq, updated_at";

/// The segment's winning event: an upsert that only a higher (kind rank, revision) replaces.
const SEGMENT_CONFLICT: &str = "ON CONFLICT (session_id, segment_id) DO UPDATE SET seq = excluded.seq, \
     kind = excluded.kind, kind_rank = excluded.kind_rank, revision = excluded.revision, \
     speaker = COALESCE(excluded.speaker, transcript_segments.speaker), \
     start_ms = COALESCE(excluded.start_ms, transcript_segments.start_ms), \
     end_ms = COALESCE(excluded.end_ms, transcript_segments.end_ms), \
     confidence = COALESCE(excluded.confidence, transcript_segments.confidence), \
     language = COALESCE(excluded.language, transcript_segments.language), \
     edited_by = COALESCE(excluded.edited_by, transcript_segments.edited_by), \
     updated_at = excluded.updated_at \
     WHERE (excluded.kind_rank, excluded.revision) > (transcript_segments.kind_rank, transcript_segments.revision)";

fn upsert_segment_sql() -> String {
    format!(
        "INSERT INTO transcript_segments ({SEGMENT_COLUMNS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?3, ?13) {SEGMENT_CONFLICT}"
    )
}

/// The transcript statements of one batch, prepared on first use.
struct Transcripts<'c> {
    db: Db<'c>,
    mode: Mode,
    upsert: Option<Prepared<'c>>,
    snapshot: Option<Prepared<'c>>,
}

impl Transcripts<'_> {
    fn apply_all(&mut self, events: &[&StoredEvent]) -> Result<()> {
        match self.db {
            Db::Postgres(conn) if events.len() > 1 => self.apply_in_bulk(conn, events),
            _ => events.iter().try_for_each(|event| self.apply(event)),
        }
    }

    /// PostgreSQL: one upsert statement for many segments (a round trip per event is what bounds
    /// a remote database), and one insert for their snapshots. An upsert may touch a row once, so
    /// a segment's later events in the batch go in later statements ("waves"), in order.
    fn apply_in_bulk(&mut self, conn: &crate::store::postgres::driver::Conn, events: &[&StoredEvent]) -> Result<()> {
        use crate::store::postgres::driver::without_nul;
        let parsed: Vec<SegmentPayload> =
            events.iter().map(|event| serde_json::from_str(&event.payload).unwrap_or_default()).collect();
        let mut occurrences: std::collections::HashMap<(&str, &str), usize> = std::collections::HashMap::new();
        let mut waves: Vec<Vec<usize>> = Vec::new();
        for (index, (event, payload)) in events.iter().zip(&parsed).enumerate() {
            let seen =
                occurrences.entry((&event.stream_id, payload.segment_id.as_deref().unwrap_or_default())).or_default();
            if waves.len() <= *seen {
                waves.push(Vec::new());
            }
            waves[*seen].push(index);
            *seen += 1;
        }
        let sql = format!(
            "INSERT INTO transcript_segments ({SEGMENT_COLUMNS}) \
             SELECT s, g, q, k, r, v, sp, st, en, c, l, e, q, u FROM UNNEST($1::text[], $2::text[], $3::int8[], \
             $4::text[], $5::int8[], $6::int8[], $7::text[], $8::int8[], $9::int8[], $10::float8[], $11::text[], \
             $12::text[], $13::text[]) AS t(s, g, q, k, r, v, sp, st, en, c, l, e, u) {SEGMENT_CONFLICT} RETURNING session_id, seq"
        );
        let text = |value: &Option<Cow<'_, str>>| value.as_deref().map(|v| without_nul(v).into_owned());
        let mut won = Vec::new();
        for wave in waves {
            let mut columns = SegmentColumns::default();
            for &index in &wave {
                let (event, payload) = (events[index], &parsed[index]);
                let (kind, rank) = transcript_kind(&event.event_type);
                columns.session_id.push(event.stream_id.clone());
                columns.segment_id.push(text(&payload.segment_id));
                columns.seq.push(event.seq as i64);
                columns.kind.push(kind);
                columns.rank.push(rank);
                columns.revision.push(payload.revision);
                columns.speaker.push(text(&payload.speaker));
                columns.start_ms.push(payload.start_ms);
                columns.end_ms.push(payload.end_ms);
                columns.confidence.push(payload.confidence);
                columns.language.push(text(&payload.language));
                columns.edited_by.push(text(&payload.edited_by));
                columns.updated_at.push(event.recorded_at.clone());
            }
            let upsert = conn.statement(&sql)?;
            let rows = conn.client().query(
                &upsert,
                &[
                    &columns.session_id,
                    &columns.segment_id,
                    &columns.seq,
                    &columns.kind,
                    &columns.rank,
                    &columns.revision,
                    &columns.speaker,
                    &columns.start_ms,
                    &columns.end_ms,
                    &columns.confidence,
                    &columns.language,
                    &columns.edited_by,
                    &columns.updated_at,
                ],
            )?;
            won.extend(rows.iter().map(|row| (row.get::<_, String>(0), row.get::<_, i64>(1))));
        }
        // As on the row-at-a-time path: only live appends keep the history, one snapshot per event
        // that became its segment's current text.
        if self.mode == Mode::Live && !won.is_empty() {
            let won: std::collections::HashSet<(String, i64)> = won.into_iter().collect();
            let mut snapshots = SnapshotColumns::default();
            for (event, payload) in events.iter().zip(&parsed) {
                if !won.contains(&(event.stream_id.clone(), event.seq as i64)) {
                    continue;
                }
                snapshots.position.push(event.position as i64);
                snapshots.session_id.push(event.stream_id.clone());
                snapshots.seq.push(event.seq as i64);
                snapshots.segment_id.push(text(&payload.segment_id).unwrap_or_default());
                snapshots.kind.push(transcript_kind(&event.event_type).0);
                snapshots.revision.push(payload.revision);
                snapshots.recorded_at.push(event.recorded_at.clone());
            }
            let insert = conn.statement(super::snapshots::INSERT_UNNEST)?;
            conn.client().execute(
                &insert,
                &[
                    &snapshots.position,
                    &snapshots.session_id,
                    &snapshots.seq,
                    &snapshots.segment_id,
                    &snapshots.kind,
                    &snapshots.revision,
                    &snapshots.recorded_at,
                ],
            )?;
        }
        Ok(())
    }

    fn apply(&mut self, event: &StoredEvent) -> Result<()> {
        let payload: SegmentPayload = serde_json::from_str(&event.payload).unwrap_or_default();
        let (kind, rank) = transcript_kind(&event.event_type);
        let upsert = match &mut self.upsert {
            Some(upsert) => upsert,
            None => self.upsert.insert(self.db.prepare(&upsert_segment_sql())?),
        };
        let changed = upsert.execute(params![
            event.stream_id,
            payload.segment_id,
            event.seq,
            kind,
            rank,
            payload.revision,
            payload.speaker,
            payload.start_ms,
            payload.end_ms,
            payload.confidence,
            payload.language,
            payload.edited_by,
            event.recorded_at,
        ])?;
        // Only an event that became its segment's current text leaves a snapshot, and only live
        // appends keep that history; stale revisions (kept in the log) leave none.
        if changed == 1 && self.mode == Mode::Live {
            let snapshot = match &mut self.snapshot {
                Some(snapshot) => snapshot,
                None => self.snapshot.insert(self.db.prepare(super::snapshots::INSERT)?),
            };
            let segment_id = payload.segment_id.as_deref().unwrap_or_default();
            super::snapshots::record(snapshot, event, segment_id, kind, payload.revision)?;
        }
        Ok(())
    }
}

/// One bulk upsert's rows, column by column.
#[derive(Default)]
struct SegmentColumns {
    session_id: Vec<String>,
    segment_id: Vec<Option<String>>,
    seq: Vec<i64>,
    kind: Vec<&'static str>,
    rank: Vec<i64>,
    revision: Vec<i64>,
    speaker: Vec<Option<String>>,
    start_ms: Vec<Option<i64>>,
    end_ms: Vec<Option<i64>>,
    confidence: Vec<Option<f64>>,
    language: Vec<Option<String>>,
    edited_by: Vec<Option<String>>,
    updated_at: Vec<String>,
}

#[derive(Default)]
struct SnapshotColumns {
    position: Vec<i64>,
    session_id: Vec<String>,
    seq: Vec<i64>,
    segment_id: Vec<String>,
    kind: Vec<&'static str>,
    revision: Vec<i64>,
    recorded_at: Vec<String>,
}

/// `(kind, rank)` of a transcript event type: an edit beats a final beats a partial.
pub fn transcript_kind(event_type: &str) -> (&'static str, i64) {
    match event_type {
        "transcript.segment.edited" => ("edited", 2),
        "transcript.segment.final" => ("final", 1),
        _ => ("partial", 0),
    }
}

/// Replay the whole log (read through `source` from `events_table`) into the projection tables
/// of `target`.
pub fn replay(source: Db<'_>, target: Db<'_>, events_table: &str, vault: &Vault) -> Result<u64> {
    const CHUNK: usize = 4096;
    let sql = format!(
        "SELECT {} FROM {events_table} WHERE position > ?1 ORDER BY position LIMIT {CHUNK}",
        log::SELECT_COLUMNS
    );
    let mut after = 0u64;
    let mut replayed = 0u64;
    loop {
        let mut chunk: Vec<StoredEvent> = source.query_map(&sql, params![after], log::from_row)?;
        let Some(last) = chunk.last() else { break };
        after = last.position;
        super::keys::open_all(source, vault, &mut chunk, true)?;
        apply(target, &chunk, Mode::Replay)?;
        replayed += chunk.len() as u64;
    }
    Ok(replayed)
}

/// Drop and rebuild every projection from the log, inside the caller's transaction.
pub fn rebuild(db: Db<'_>, vault: &Vault) -> Result<u64> {
    drop_all(db)?;
    create(db)?;
    let replayed = replay(db, db, "events", vault)?;
    set_version(db)?;
    Ok(replayed)
}
