//! Readiness: the database is writable, the writer answers, migrations and projections are current.

use crate::store::StoreError;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};

use super::AppState;

pub struct Readiness {
    pub ready: bool,
    pub checks: Value,
}

pub async fn readiness(state: &AppState) -> Readiness {
    let writer = &state.store.writer;
    let alive = writer.stats.alive.load(Ordering::SeqCst);
    // A no-op command proves the writer takes the write lock and commits.
    let round_trip =
        tokio::time::timeout(Duration::from_secs(2), writer.execute(|tx| Ok::<_, StoreError>(tx.recorded_at())));
    let writable = matches!(round_trip.await, Ok(Ok(_)));
    let current = state.store.read(|reads| reads.schema_is_current()).await.unwrap_or(false);
    Readiness {
        ready: alive && writable && current,
        checks: json!({
            "writerAlive": alive,
            "databaseWritable": writable,
            "migrationsCurrent": current,
            "writerQueueDepth": writer.queue_depth(),
            "epoch": state.store.epoch(),
        }),
    }
}
