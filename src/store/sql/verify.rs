//! `callstream verify`, the part both backends share: recompute the hash chain, positions and
//! per-stream seqs from the stored rows. The chain covers the stored (sealed) text, so it needs no
//! key; each backend then compares its projections with a rebuild.

use std::collections::HashMap;

use super::db::{Db, Result, params};
use super::log;
use crate::store::log::{GENESIS_HASH, chain_hash};
use crate::store::{Broken, VerifyReport};

/// Rows read per query: bounded memory on any backend, however long the log.
const CHUNK: u64 = 4096;

pub fn chain(db: Db<'_>) -> Result<VerifyReport> {
    let sql = format!("SELECT {} FROM events WHERE position > ?1 ORDER BY position LIMIT ?2", log::SELECT_COLUMNS);
    let mut report = VerifyReport::default();
    let mut previous_hash = GENESIS_HASH;
    let mut expected_position = 1u64;
    let mut heads: HashMap<String, u64> = HashMap::new();
    'chunks: loop {
        let chunk = db.query_map(&sql, params![expected_position - 1, CHUNK], log::from_row)?;
        if chunk.is_empty() {
            break;
        }
        for event in chunk {
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
                break 'chunks;
            }
            *head = event.seq;
            previous_hash = event.hash;
            expected_position += 1;
        }
    }
    report.streams = heads.len() as u64;
    Ok(report)
}
