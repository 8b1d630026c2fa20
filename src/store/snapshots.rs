//! Transcript snapshots: an append-only history of transcript changes, written only by live
//! appends (never by rebuild), and compacted by retention without touching events.

use rusqlite::{Connection, params};

use super::log::StoredEvent;

/// One snapshot row: `event` just became segment `segment_id`'s current text (called by the live
/// projection path only, so rebuilds never write history).
pub fn record(
    conn: &Connection,
    event: &StoredEvent,
    segment_id: &str,
    kind: &str,
    revision: i64,
    text: &str,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO transcript_snapshots (session_id, segment_id, seq, kind, revision, text, recorded_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![event.stream_id, segment_id, event.seq, kind, revision, text, event.recorded_at])?;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CompactionStats {
    pub examined: u64,
    pub deleted: u64,
    pub kept: u64,
}

/// Delete a session's superseded snapshots recorded before `before` (RFC 3339), keeping every
/// segment's current one.
pub fn compact(conn: &Connection, session_id: &str, before: &str) -> rusqlite::Result<CompactionStats> {
    let examined: u64 =
        conn.query_row("SELECT COUNT(*) FROM transcript_snapshots WHERE session_id = ?1", [session_id], |r| r.get(0))?;
    let deleted = conn.execute(
        "DELETE FROM transcript_snapshots WHERE session_id = ?1 AND recorded_at < ?2 AND NOT EXISTS \
         (SELECT 1 FROM transcript_segments s WHERE s.session_id = transcript_snapshots.session_id \
          AND s.segment_id = transcript_snapshots.segment_id AND s.seq = transcript_snapshots.seq)",
        params![session_id, before],
    )? as u64;
    Ok(CompactionStats { examined, deleted, kept: examined - deleted })
}
