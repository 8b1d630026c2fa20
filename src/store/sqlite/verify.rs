//! `callstream verify`: recompute the hash chain and compare projections with a rebuild.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::log;
use super::projections;
use crate::store::log::GENESIS_HASH;
use crate::store::log::chain_hash;
use crate::store::sealing::Vault;
use crate::store::{Broken, StoreError, VerifyReport};

/// The chain is checked on the stored (sealed) text, so it needs no key; comparing projections
/// with a rebuild opens the payloads, so that part does.
pub fn verify(database: &Path, vault: &Vault) -> Result<VerifyReport, StoreError> {
    let conn = Connection::open_with_flags(database, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI)?;
    let mut report = VerifyReport::default();
    let mut statement = conn.prepare(&format!("SELECT {} FROM events ORDER BY position", log::SELECT_COLUMNS))?;
    let mut rows = statement.query([])?;
    let mut previous_hash = GENESIS_HASH;
    let mut expected_position = 1u64;
    let mut heads: HashMap<String, u64> = HashMap::new();
    while let Some(row) = rows.next()? {
        let event = log::from_row(row)?;
        report.events += 1;
        let head = heads.entry(event.stream_id.clone()).or_insert(0);
        let problem = if event.position != expected_position {
            Some(format!("expected position {expected_position}, found {}", event.position))
        } else if event.prev_hash != previous_hash {
            Some("prev_hash does not match the previous event's hash".to_owned())
        } else if chain_hash(&event) != event.hash {
            Some("hash does not match the event's content".to_owned())
        } else if event.seq != *head + 1 {
            Some(format!("stream {} expected seq {}, found {}", event.stream_id, *head + 1, event.seq))
        } else {
            None
        };
        if let Some(reason) = problem {
            report.first_broken = Some(Broken { position: event.position, reason });
            break;
        }
        *head = event.seq;
        previous_hash = event.hash;
        expected_position += 1;
    }
    report.streams = heads.len() as u64;
    drop(rows);
    drop(statement);
    report.projection_differences = projections::diff_against_rebuild(database, vault)?;
    Ok(report)
}
