//! Transcript snapshots: an append-only history of transcript changes, written only by live
//! appends (never by rebuild), and compacted by retention without touching events.

use super::db::{Db, Prepared, Result, params};
use crate::store::CompactionStats;
use crate::store::log::StoredEvent;

pub const INSERT: &str = "INSERT INTO transcript_snapshots \
     (position, session_id, seq, segment_id, kind, revision, recorded_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

/// PostgreSQL: many snapshot rows in one statement, each column an array.
pub const INSERT_UNNEST: &str = "INSERT INTO transcript_snapshots \
     (position, session_id, seq, segment_id, kind, revision, recorded_at) \
     SELECT * FROM UNNEST($1::int8[], $2::text[], $3::int8[], $4::text[], $5::text[], $6::int8[], $7::text[])";

/// One snapshot row: `event` just became segment `segment_id`'s current text (called by the live
/// projection path only, so rebuilds never write history), with `statement` prepared from `INSERT`.
pub fn record(
    statement: &mut Prepared<'_>,
    event: &StoredEvent,
    segment_id: &str,
    kind: &str,
    revision: i64,
) -> Result<()> {
    statement.execute(params![
        event.position,
        event.stream_id,
        event.seq,
        segment_id,
        kind,
        revision,
        event.recorded_at
    ])?;
    Ok(())
}

/// Delete a session's superseded snapshots recorded before `before` (RFC 3339), keeping every
/// segment's current one.
pub fn compact(db: Db<'_>, session_id: &str, before: &str) -> Result<CompactionStats> {
    let join = db.ordered_join();
    let examined: u64 = db.query_row(
        &format!(
            "SELECT COUNT(*) FROM events e {join} transcript_snapshots t ON t.position = e.position \
             WHERE e.stream_id = ?1"
        ),
        params![session_id],
        |r| r.get(0),
    )?;
    let deleted = db.execute(
        &format!(
            "DELETE FROM transcript_snapshots WHERE position IN \
             (SELECT t.position FROM events e {join} transcript_snapshots t ON t.position = e.position \
              WHERE e.stream_id = ?1 AND t.recorded_at < ?2 AND NOT EXISTS \
              (SELECT 1 FROM transcript_segments s WHERE s.session_id = t.session_id \
               AND s.segment_id = t.segment_id AND s.seq = t.seq))"
        ),
        params![session_id, before],
    )? as u64;
    Ok(CompactionStats { examined, deleted, kept: examined - deleted })
}
