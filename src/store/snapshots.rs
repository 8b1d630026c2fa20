//! Transcript snapshots: an append-only history of transcript changes, written only by live
//! appends (never by rebuild), and compacted by retention without touching events.

use rusqlite::{Connection, params};

use super::log::StoredEvent;

/// After `projections::apply`: one snapshot row per transcript event that became its segment's
/// current text. Stale revisions (kept in the log) change nothing and leave no snapshot.
pub fn record_live(conn: &Connection, events: &[StoredEvent]) -> rusqlite::Result<()> {
    for event in events.iter().filter(|e| e.event_type.starts_with("transcript.segment.")) {
        let segment_id = event.payload_json().get("segmentId").and_then(serde_json::Value::as_str).map(str::to_owned);
        // By primary key: the segment's current row is this event's only if it won.
        conn.prepare_cached(
            "INSERT INTO transcript_snapshots (session_id, segment_id, seq, kind, revision, text, recorded_at) \
             SELECT session_id, segment_id, seq, kind, revision, text, updated_at FROM transcript_segments \
             WHERE session_id = ?1 AND segment_id = ?2 AND seq = ?3",
        )?
        .execute(params![event.stream_id, segment_id, event.seq])?;
    }
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
