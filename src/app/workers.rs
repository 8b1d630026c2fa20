//! The background workers' state, as readiness reports it, and the shutdown signal every
//! long-running task watches (docs/operations.md "Shutdown").

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use serde::Serialize;
use tokio::sync::watch;

use crate::domain::time::Timestamp;

pub struct Workers {
    pub outbox: WorkerState,
    pub scheduler: WorkerState,
    stop: watch::Sender<bool>,
}

impl Default for Workers {
    fn default() -> Self {
        Workers { outbox: WorkerState::default(), scheduler: WorkerState::default(), stop: watch::channel(false).0 }
    }
}

impl Workers {
    /// Ask every worker and socket to finish: workers after their current item, sockets with 1012.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    pub fn is_stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// A receiver that turns `true` when the process is stopping.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }
}

/// One worker: whether its loop runs, and when it last finished a pass.
#[derive(Default)]
pub struct WorkerState {
    running: AtomicBool,
    last_pass_millis: AtomicI64,
}

/// Marks a worker running while alive; dropped when its loop ends, however it ends (a panic too).
pub struct Running<'a>(&'a WorkerState);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::SeqCst);
    }
}

impl WorkerState {
    /// Counted as running from the moment its task is spawned, so readiness does not flap at start.
    pub fn spawned(&self) {
        self.running.store(true, Ordering::SeqCst);
    }

    pub fn enter(&self) -> Running<'_> {
        self.running.store(true, Ordering::SeqCst);
        Running(self)
    }

    pub fn passed(&self, at: Timestamp) {
        self.last_pass_millis.store(at.unix_millis(), Ordering::Relaxed);
    }

    pub fn report(&self) -> WorkerReport {
        let millis = self.last_pass_millis.load(Ordering::Relaxed);
        WorkerReport {
            running: self.running.load(Ordering::SeqCst),
            last_pass_at: (millis > 0).then(|| Timestamp::from_unix_millis(millis)).flatten(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerReport {
    pub running: bool,
    pub last_pass_at: Option<Timestamp>,
}
