//! The ingest benchmark's baseline: the same rows inserted with bare SQLite statements, batch by
//! batch, with none of callstream's work (validation, projections, hashing).

use std::path::Path;
use std::time::Instant;

use rusqlite::Connection;

use crate::config::Durability;
use crate::store::StoreError;
use crate::store::log::StoredEvent;
use crate::store::sql::db::{Db, params};
use crate::store::sql::log;

/// Events per second inserting every event of `source` into a fresh database at `target`.
pub fn raw_insert_rate(source: &Path, target: &Path, durability: Durability, batch: usize) -> Result<f64, StoreError> {
    let source = Connection::open(source)?;
    let rows: Vec<StoredEvent> = Db::Sqlite(&source).query_map(
        &format!("SELECT {} FROM events ORDER BY position", log::SELECT_COLUMNS),
        params![],
        log::from_row,
    )?;
    // The copied rows are stored (sealed) text: no payload is opened, so any master key does.
    let vault = crate::store::sealing::Vault::new(&crate::config::MasterKey::generate());
    let conn = super::open_for_writing(target, durability, crate::clock::Clock::system().now(), &vault)?;
    let started = Instant::now();
    let mut insert = conn.prepare(log::INSERT)?;
    for chunk in rows.chunks(batch.max(1)) {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        for e in chunk {
            insert.execute(rusqlite::params![
                e.position,
                e.tenant_id,
                e.stream_id,
                e.seq,
                e.event_id,
                e.event_type,
                e.schema_version,
                e.ts,
                e.recorded_at,
                e.actor.kind.as_str(),
                e.actor.id,
                e.payload,
                e.content_hash,
                e.prev_hash,
                e.hash,
            ])?;
        }
        conn.execute_batch("COMMIT")?;
    }
    Ok(rows.len() as f64 / started.elapsed().as_secs_f64())
}
