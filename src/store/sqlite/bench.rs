//! The ingest benchmark's baseline: the same rows inserted with bare SQLite statements, batch by
//! batch, with none of callstream's work (validation, projections, hashing).

use std::path::Path;
use std::time::Instant;

use rusqlite::Connection;

use super::log;
use crate::config::Durability;
use crate::store::StoreError;
use crate::store::log::StoredEvent;

/// Events per second inserting every event of `source` into a fresh database at `target`.
pub fn raw_insert_rate(source: &Path, target: &Path, durability: Durability, batch: usize) -> Result<f64, StoreError> {
    let source = Connection::open(source)?;
    let rows: Vec<StoredEvent> = source
        .prepare(&format!("SELECT {} FROM events ORDER BY position", log::SELECT_COLUMNS))?
        .query_map([], log::from_row)?
        .collect::<rusqlite::Result<_>>()?;
    // The copied rows are stored (sealed) text: no payload is opened, so any master key does.
    let vault = crate::store::sealing::Vault::new(&crate::config::MasterKey::generate());
    let conn = super::open_for_writing(target, durability, crate::clock::Clock::system().now(), &vault)?;
    let started = Instant::now();
    let mut insert = conn.prepare(log::INSERT)?;
    for chunk in rows.chunks(batch.max(1)) {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        for row in chunk {
            log::insert(&mut insert, row)?;
        }
        conn.execute_batch("COMMIT")?;
    }
    Ok(rows.len() as f64 / started.elapsed().as_secs_f64())
}
