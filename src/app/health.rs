//! Readiness: the database is writable, the writer answers, migrations and projections are current.

use crate::store::StoreError;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::AppState;

pub struct Readiness {
    pub ready: bool,
    pub checks: ReadinessChecks,
}

/// Each readiness condition, as `GET /health/ready` shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadinessChecks {
    pub writer_alive: bool,
    pub database_writable: bool,
    pub migrations_current: bool,
    pub writer_queue_depth: usize,
    pub epoch: String,
}

/// `GET /health/ready` and `GET /health/live`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HealthAnswer {
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checks: Option<ReadinessChecks>,
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
        checks: ReadinessChecks {
            writer_alive: alive,
            database_writable: writable,
            migrations_current: current,
            writer_queue_depth: writer.queue_depth(),
            epoch: state.store.epoch().to_owned(),
        },
    }
}
