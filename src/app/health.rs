//! Readiness, check by check: the database is writable, the writer answers, migrations and
//! projections are current, the background workers run, and the process is not shutting down.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;

use super::AppState;
use super::workers::WorkerReport;
use crate::store::StoreError;

pub struct Readiness {
    pub ready: bool,
    pub checks: ReadinessChecks,
}

/// Each readiness condition, as `GET /health/ready` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadinessChecks {
    pub writer_alive: bool,
    pub database_writable: bool,
    pub migrations_current: bool,
    pub projections_current: bool,
    pub writer_queue_depth: usize,
    pub epoch: String,
    pub scheduler: SchedulerCheck,
    pub outbox_worker: WorkerReport,
    pub shutting_down: bool,
}

/// The reconciliation scheduler: its switch (off by default is healthy), its loop and last error.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulerCheck {
    pub enabled: bool,
    #[serde(flatten)]
    pub worker: WorkerReport,
    pub last_error: Option<String>,
}

/// `GET /health/ready` and `GET /health/live`.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct HealthAnswer {
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checks: Option<ReadinessChecks>,
    /// The checks that failed, by name (only when not ready).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<&'static str>,
}

impl ReadinessChecks {
    /// The names of the failed checks; empty when ready. A scheduler switched off is not a
    /// failure, a scheduler loop that stopped is; its last error is reported, not failed on.
    pub fn failed(&self) -> Vec<&'static str> {
        [
            ("writerAlive", self.writer_alive),
            ("databaseWritable", self.database_writable),
            ("migrationsCurrent", self.migrations_current),
            ("projectionsCurrent", self.projections_current),
            ("scheduler", self.scheduler.worker.running),
            ("outboxWorker", self.outbox_worker.running),
            ("shuttingDown", !self.shutting_down),
        ]
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(name, _)| name)
        .collect()
    }
}

pub async fn readiness(state: &AppState) -> Readiness {
    let writer = &state.store.writer;
    let alive = writer.stats.alive.load(Ordering::SeqCst);
    // A no-op command proves the writer takes the write lock and commits.
    let round_trip =
        tokio::time::timeout(Duration::from_secs(2), writer.execute(|tx| Ok::<_, StoreError>(tx.recorded_at())));
    let writable = matches!(round_trip.await, Ok(Ok(_)));
    let (migrations, projections, scheduler) = state
        .store
        .read(|reads| Ok::<_, StoreError>((reads.schema_state()?, reads.scheduler()?)))
        .await
        .map(|((migrations, projections), scheduler)| (migrations, projections, Some(scheduler)))
        .unwrap_or((false, false, None));
    let checks = ReadinessChecks {
        writer_alive: alive,
        database_writable: writable,
        migrations_current: migrations,
        projections_current: projections,
        writer_queue_depth: writer.queue_depth(),
        epoch: state.store.epoch().to_owned(),
        scheduler: SchedulerCheck {
            enabled: scheduler.as_ref().is_some_and(|s| s.enabled),
            worker: state.workers.scheduler.report(),
            last_error: scheduler.and_then(|s| s.last_error),
        },
        outbox_worker: state.workers.outbox.report(),
        shutting_down: state.workers.is_stopping(),
    };
    Readiness { ready: checks.failed().is_empty(), checks }
}
