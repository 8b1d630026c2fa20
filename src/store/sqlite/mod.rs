//! The embedded SQLite backend: the only module that knows rusqlite. One writer thread owns the
//! write connection (group commit, `sql::writer`); reads go to a pool of read-only connections (WAL).

pub mod bench;
mod checkpoint;
pub mod driver;
mod schema;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OpenFlags};

use crate::clock::Clock;
use crate::config::Durability;
use crate::domain::time::Timestamp;
use crate::store::sealing::Vault;
use crate::store::sql::db::Db;
use crate::store::sql::{projections, verify};
use crate::store::{StoreError, VerifyReport};

impl From<rusqlite_migration::Error> for StoreError {
    fn from(err: rusqlite_migration::Error) -> Self {
        StoreError::Backend(format!("migration: {err}"))
    }
}

/// Prepared statements kept per connection: more than the store has.
const STATEMENT_CACHE: usize = 256;

fn configure(conn: &Connection, durability: Durability) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // Every statement is prepared from rusqlite's cache by its text; a group touches far more than
    // the default 16, which would re-prepare the hot ones over and over.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
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
    if projections::stored_version(Db::Sqlite(&conn))? != Some(projections::PROJECTION_VERSION) {
        let replayed = rebuild_in(&conn, vault)?;
        tracing::info!(replayed, version = projections::PROJECTION_VERSION, "projections rebuilt");
    }
    Ok(conn)
}

/// `(migrations current, projections current)` for this build.
pub fn schema_state(conn: &Connection) -> Result<(bool, bool), StoreError> {
    let pending = schema::migrations().pending_migrations(conn)?;
    Ok((pending == 0, projections::stored_version(Db::Sqlite(conn))? == Some(projections::PROJECTION_VERSION)))
}

/// Rebuild the projections in one immediate transaction.
fn rebuild_in(conn: &Connection, vault: &Vault) -> Result<u64, StoreError> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    match projections::rebuild(Db::Sqlite(conn), vault) {
        Ok(replayed) => {
            conn.execute_batch("COMMIT")?;
            Ok(replayed)
        }
        Err(err) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(err)
        }
    }
}

/// Drop and rebuild the projections of the database at `path`.
pub fn rebuild(path: &Path, vault: &Vault) -> Result<u64, StoreError> {
    let conn = open_for_writing(path, Durability::Full, Clock::system().now(), vault)?;
    rebuild_in(&conn, vault)
}

/// Apply pending migrations and report the resulting version.
pub fn migrate(path: &Path, vault: &Vault) -> Result<i64, StoreError> {
    let conn = open_for_writing(path, Durability::Full, Clock::system().now(), vault)?;
    Ok(conn.query_row("PRAGMA user_version", [], |row| row.get(0))?)
}

/// Open the database for the writer thread; answers it with the history's epoch.
pub fn open_writer(
    path: &Path,
    durability: Durability,
    now: Timestamp,
    vault: &Vault,
) -> Result<(WriteConn, String), StoreError> {
    let conn = open_for_writing(path, durability, now, vault)?;
    let epoch: String = conn.query_row("SELECT value FROM meta WHERE key = 'epoch'", [], |row| row.get(0))?;
    conn.pragma_update(None, "wal_autocheckpoint", checkpoint::WRITER_BACKSTOP_PAGES)?;
    let checkpoints = checkpoint::start(path, durability)?;
    Ok((WriteConn { conn, checkpoints }, epoch))
}

/// The writer's connection. Checkpoints run on their own thread, nudged after every commit
/// (automatic checkpoints are only a backstop on this connection).
pub struct WriteConn {
    conn: Connection,
    checkpoints: checkpoint::Nudge,
}

impl WriteConn {
    pub fn db(&self) -> Db<'_> {
        Db::Sqlite(&self.conn)
    }

    pub fn begin(&self) -> Result<(), StoreError> {
        Ok(self.conn.execute_batch("BEGIN IMMEDIATE")?)
    }

    pub fn commit(&self) -> Result<(), StoreError> {
        Ok(self.conn.execute_batch("COMMIT")?)
    }

    pub fn committed(&self) {
        self.checkpoints.send();
    }
}

/// Idle read-only connections, opened on demand.
pub struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    const MAX_IDLE: usize = 16;

    pub fn new(path: &Path) -> ReadPool {
        ReadPool { path: path.to_path_buf(), idle: Mutex::new(Vec::new()) }
    }

    /// Run `query` on a pooled connection.
    pub fn with<T>(&self, query: impl FnOnce(Db<'_>) -> T) -> Result<T, StoreError> {
        let conn = self.take()?;
        let result = query(Db::Sqlite(&conn));
        self.give_back(conn);
        Ok(result)
    }

    fn take(&self) -> Result<Connection, StoreError> {
        if let Some(conn) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(conn);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(conn)
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < Self::MAX_IDLE {
            idle.push(conn);
        }
    }
}

/// Check the hash chain, then compare the projections with a rebuild (in memory).
pub fn verify(database: &Path, vault: &Vault) -> Result<VerifyReport, StoreError> {
    let conn = Connection::open_with_flags(database, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI)?;
    let mut report = verify::chain(Db::Sqlite(&conn))?;
    report.projection_differences = diff_against_rebuild(database, vault)?;
    Ok(report)
}

/// Tables whose live rows differ from a rebuild of the log, with the number of differing rows.
/// The rebuild happens in memory; the database file is only read.
pub fn diff_against_rebuild(database: &Path, vault: &Vault) -> Result<Vec<(String, u64)>, StoreError> {
    let memory = Connection::open_in_memory()?;
    let uri = format!("file:{}?mode=ro", database.display());
    memory.execute("ATTACH DATABASE ?1 AS disk", [uri])?;
    let db = Db::Sqlite(&memory);
    projections::create(db)?;
    // One transaction around the replay and the comparisons: the file is read from one snapshot,
    // so a database in use (the writer committing meanwhile) still gives a consistent answer.
    memory.execute_batch("BEGIN")?;
    projections::replay(db, db, "disk.events", vault)?;
    let mut differences = Vec::new();
    for table in projections::TABLES {
        let differing: u64 = memory.query_row(
            &format!(
                "SELECT (SELECT COUNT(*) FROM (SELECT * FROM main.{table} EXCEPT SELECT * FROM disk.{table})) + \
                        (SELECT COUNT(*) FROM (SELECT * FROM disk.{table} EXCEPT SELECT * FROM main.{table}))"
            ),
            [],
            |row| row.get(0),
        )?;
        if differing > 0 {
            differences.push(((*table).to_owned(), differing));
        }
    }
    memory.execute_batch("COMMIT")?;
    Ok(differences)
}
