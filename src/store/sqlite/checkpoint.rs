//! WAL checkpoints on their own thread. SQLite's default runs a checkpoint inside whichever commit
//! pushes the WAL past 1,000 pages, which put the copy back into the database file (and its fsync)
//! on the single writer's critical path. Here the writer nudges this thread after each commit; it
//! runs PASSIVE checkpoints, which never block the writer or readers, at most every `INTERVAL`.
//!
//! A checkpoint running beside a busy writer never quite catches up (new frames land while it
//! copies), and the WAL is only restarted from the top once one has, so under sustained load the
//! file would grow without bound. The writer therefore keeps SQLite's automatic checkpoint as a
//! backstop at `WRITER_BACKSTOP_PAGES`: by then this thread has already copied nearly every frame,
//! so the writer's own checkpoint is short, completes, and lets the next transaction restart the WAL.

use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::StoreError;
use crate::config::Durability;

const INTERVAL: Duration = Duration::from_millis(100);
/// WAL size (pages of 4 KiB) at which the writer checkpoints inline: bounds the WAL near 64 MiB
/// (70 MB seen under `bench ingest`; without the backstop it reached 433 MB).
pub const WRITER_BACKSTOP_PAGES: i64 = 16_384;

/// The writer's side: a nudge that never blocks.
pub struct Nudge(SyncSender<()>);

impl Nudge {
    pub fn send(&self) {
        match self.0.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) => {}
            Err(TrySendError::Disconnected(())) => tracing::warn!("the checkpointer has stopped"),
        }
    }
}

/// Start the checkpointer on its own connection; it stops (after a last checkpoint) when the
/// `Nudge` is dropped.
pub fn start(path: &Path, durability: Durability) -> Result<Nudge, StoreError> {
    let conn = Connection::open(path)?;
    super::configure(&conn, durability)?;
    let (nudge, nudges) = sync_channel(1);
    std::thread::Builder::new()
        .name("callstream-checkpoint".into())
        .spawn(move || run(&conn, &nudges))
        .map_err(|e| StoreError::Backend(format!("cannot start the checkpointer: {e}")))?;
    Ok(Nudge(nudge))
}

fn run(conn: &Connection, nudges: &Receiver<()>) {
    let mut last = Instant::now() - INTERVAL;
    while nudges.recv().is_ok() {
        std::thread::sleep(INTERVAL.saturating_sub(last.elapsed()));
        checkpoint(conn);
        last = Instant::now();
    }
    checkpoint(conn);
}

fn checkpoint(conn: &Connection) {
    if let Err(err) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
        tracing::warn!(error = %err, "WAL checkpoint failed; the next nudge retries");
    }
}
