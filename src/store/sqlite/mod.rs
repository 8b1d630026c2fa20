//! The embedded SQLite backend: the only module that knows rusqlite. One writer thread owns the
//! write connection (group commit); reads go to a pool of read-only connections (WAL).

pub mod bench;
mod billing;
mod checkpoint;
mod keys;
pub mod log;
pub mod projections;
pub mod queries;
mod reads;
mod schema;
pub mod snapshots;
pub mod tenants;
pub mod verify;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};

use crate::clock::Clock;
use crate::config::{Durability, MasterKey};
use crate::domain::time::Timestamp;
use crate::store::sealing::Vault;
pub use writer::{WriteTx, Writer};

use crate::store::{Reads, StoreError};

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        StoreError::Backend(format!("sqlite: {err}"))
    }
}

impl From<rusqlite_migration::Error> for StoreError {
    fn from(err: rusqlite_migration::Error) -> Self {
        StoreError::Backend(format!("migration: {err}"))
    }
}

fn configure(conn: &Connection, durability: Durability) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let synchronous = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// Open (creating if needed) and migrate the database; rebuild projections whose version changed.
/// Returns the write connection.
pub fn open_for_writing(
    path: &Path,
    durability: Durability,
    now: Timestamp,
    vault: &Vault,
) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::DataDir { path: dir.to_path_buf(), source })?;
    }
    let mut conn = Connection::open(path)?;
    configure(&conn, durability)?;
    // The writer touches every live session's pages in the log indexes and projections; a 64 MiB
    // cache (SQLite's default is 2 MiB) keeps them in memory instead of re-reading the file.
    conn.pragma_update(None, "cache_size", -64 * 1024)?;
    schema::migrations().to_latest(&mut conn)?;
    let epoch = format!("ep_{}", uuid::Uuid::new_v4().simple());
    conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('epoch', ?1)", [epoch])?;
    // Sockets do not survive a restart: their reconnect windows start now.
    conn.execute("UPDATE ws_connections SET disconnected_at = ?1 WHERE disconnected_at IS NULL", [now.to_rfc3339()])?;
    if projections::stored_version(&conn)? != Some(projections::PROJECTION_VERSION) {
        let replayed = projections::rebuild(&mut conn, vault)?;
        tracing::info!(replayed, version = projections::PROJECTION_VERSION, "projections rebuilt");
    }
    Ok(conn)
}

/// `(migrations current, projections current)` for this build.
pub fn schema_state(conn: &Connection) -> Result<(bool, bool), StoreError> {
    let pending = schema::migrations().pending_migrations(conn)?;
    Ok((pending == 0, projections::stored_version(conn)? == Some(projections::PROJECTION_VERSION)))
}

/// Drop and rebuild the projections of the database at `path`.
pub fn rebuild(path: &Path, vault: &Vault) -> Result<u64, StoreError> {
    let mut conn = open_for_writing(path, Durability::Full, Clock::system().now(), vault)?;
    projections::rebuild(&mut conn, vault)
}

/// Apply pending migrations and report the resulting version.
pub fn migrate(path: &Path, vault: &Vault) -> Result<i64, StoreError> {
    let conn = open_for_writing(path, Durability::Full, Clock::system().now(), vault)?;
    Ok(conn.query_row("PRAGMA user_version", [], |row| row.get(0))?)
}

/// The running store: one writer, a pool of read-only connections.
#[derive(Clone)]
pub struct Store {
    pub writer: Writer,
    readers: Arc<ReadPool>,
    epoch: Arc<str>,
    vault: Arc<Vault>,
}

impl Store {
    /// Embedded SQLite serves one process: a claim by any other node is from a process that is gone.
    pub const EXCLUSIVE: bool = true;

    pub fn open(
        path: &Path,
        durability: Durability,
        queue_capacity: usize,
        clock: Clock,
        master_key: &MasterKey,
    ) -> Result<(Store, std::thread::JoinHandle<()>), StoreError> {
        let vault = Arc::new(Vault::new(master_key));
        let conn = open_for_writing(path, durability, clock.now(), &vault)?;
        let epoch: String = conn.query_row("SELECT value FROM meta WHERE key = 'epoch'", [], |row| row.get(0))?;
        conn.pragma_update(None, "wal_autocheckpoint", checkpoint::WRITER_BACKSTOP_PAGES)?;
        let checkpoints = checkpoint::start(path, durability)?;
        let (writer, handle) = Writer::start(conn, checkpoints, queue_capacity, clock, vault.clone())?;
        let readers = Arc::new(ReadPool { path: path.to_path_buf(), idle: Mutex::new(Vec::new()) });
        Ok((Store { writer, readers, epoch: epoch.into(), vault }, handle))
    }

    /// The tenants' data keys, for sealing on the request's thread (`NewEvent::preseal`).
    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    /// Run a query now, on the calling thread (start-up only).
    pub fn read_now<T>(&self, query: impl FnOnce(&dyn Reads) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let conn = self.readers.take()?;
        let result = query(&reads::ReadView { conn: &conn, vault: &self.vault });
        self.readers.give_back(conn);
        result
    }

    /// Identifies this database's history; a client holding another epoch must reload.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Run a read-only query off the async threads, keeping the caller's tracing span.
    pub async fn read<T, E, F>(&self, query: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&dyn Reads) -> Result<T, E> + Send + 'static,
    {
        let readers = self.readers.clone();
        let vault = self.vault.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let conn = readers.take()?;
            let result = query(&reads::ReadView { conn: &conn, vault: &vault });
            readers.give_back(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Backend(format!("a read task failed: {e}")))?
    }
}

struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    const MAX_IDLE: usize = 16;

    fn take(&self) -> Result<Connection, StoreError> {
        if let Some(conn) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(conn);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(conn)
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < Self::MAX_IDLE {
            idle.push(conn);
        }
    }
}
