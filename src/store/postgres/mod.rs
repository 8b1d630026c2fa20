//! The PostgreSQL backend (issue 13), built up in slices. This slice is the log's core with
//! several writers, one per node, on one database:
//!
//! - **Dense positions, never a visible gap.** Sequences and identity columns hand out numbers in
//!   one order and commit in another, so a reader can see position 8 before 7 commits and skip it
//!   for good. Here every append transaction first takes one transaction-scoped advisory lock
//!   (`APPEND_LOCK`), then reads the tip and assigns positions under it. The next writer gets the
//!   lock only after the previous transaction has committed or rolled back. So commits happen in
//!   position order, and a reader reading `position > n` always sees a gapless prefix.
//! - Per-stream `seq` is assigned under the same lock, and `UNIQUE (stream_id, seq)` backs it.
//! - `UNIQUE (tenant_id, event_id)` gives idempotency: a repeat with the same content is answered
//!   with its original place, and other content is `EVENT_ID_CONFLICT`.
//! - The hash chain is extended under the lock, with the same `chain_hash` as SQLite.
//! - Triggers refuse UPDATE, DELETE and TRUNCATE on `events`.
//!
//! Each node still commits appends in groups: one transaction and one lock acquisition per group
//! (`append_group`). Every node can follow what all nodes commit (`feed::Follower`: NOTIFY on
//! commit, events read from the log). Projections, reads, billing and keys are not on PostgreSQL yet, and the
//! application runs on SQLite only (docs/scaling.md, BACKLOG §15).

pub mod driver;
pub mod feed;
pub mod liveness;
pub mod log;
pub mod schema;
pub mod scratch;

use std::sync::Mutex;

use crate::store::sealing::Vault;
use crate::store::sql::db::{Db, params};
use crate::store::sql::{log as rows, projections, verify};
use crate::store::{StoreError, VerifyReport};

/// The advisory lock every append transaction of every node takes first (`"callstre"` as an i64).
pub const APPEND_LOCK: i64 = 0x6361_6c6c_7374_7265;

pub fn connect(url: &str) -> Result<postgres::Client, StoreError> {
    postgres::Client::connect(url, postgres::NoTls)
        .map_err(|e| StoreError::Backend(format!("cannot connect to PostgreSQL at {}: {e}", redact(url))))
}

pub use crate::config::redact_url as redact;

/// The synchronous client drives its own runtime, which must not start or stop on an async
/// thread. Run `work` on a thread of its own when the caller may be one (start-up, tools); reads
/// already run on the blocking pool.
pub fn off_async<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return work();
    }
    std::thread::scope(|scope| scope.spawn(work).join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
}

/// Connect, migrate, and rebuild projections of another version (under the append lock, so
/// nodes starting together rebuild once and no append interleaves). Answers the writer's
/// connection and the history's epoch.
pub fn open_writer(url: &str, vault: &Vault) -> Result<(WriteConn, String), StoreError> {
    off_async(|| open_writer_here(url, vault))
}

fn open_writer_here(url: &str, vault: &Vault) -> Result<(WriteConn, String), StoreError> {
    let mut client = connect(url)?;
    schema::migrate(&mut client)?;
    let conn = driver::Conn::new(client);
    let db = Db::Postgres(&conn);
    db.batch("BEGIN")?;
    let prepared = (|| {
        db.execute("SELECT pg_advisory_xact_lock(?1)", params![APPEND_LOCK])?;
        let epoch = format!("ep_{}", uuid::Uuid::new_v4().simple());
        db.execute("INSERT INTO meta (key, value) VALUES ('epoch', ?1) ON CONFLICT DO NOTHING", params![epoch])?;
        if projections::stored_version(db)? != Some(projections::PROJECTION_VERSION) {
            let replayed = projections::rebuild(db, vault)?;
            tracing::info!(replayed, version = projections::PROJECTION_VERSION, "projections rebuilt");
        }
        db.query_row("SELECT value FROM meta WHERE key = 'epoch'", params![], |row| row.get::<String>(0))
    })();
    match prepared {
        Ok(epoch) => {
            db.batch("COMMIT")?;
            Ok((WriteConn { conn, url: url.to_owned() }, epoch))
        }
        Err(err) => {
            let _ = db.batch("ROLLBACK");
            Err(err)
        }
    }
}

/// `(migrations current, projections current)` for this build.
pub fn schema_state(conn: &driver::Conn) -> Result<(bool, bool), StoreError> {
    let migrated = schema::current(&mut conn.client())?;
    Ok((migrated, projections::stored_version(Db::Postgres(conn))? == Some(projections::PROJECTION_VERSION)))
}

/// A node's writer connection. Each group's transaction first takes the append lock and reads
/// the tip there, since other nodes move it; the commit notifies every node's follower.
pub struct WriteConn {
    conn: driver::Conn,
    url: String,
}

impl WriteConn {
    pub fn db(&self) -> Db<'_> {
        Db::Postgres(&self.conn)
    }

    pub fn begin(&self) -> Result<(u64, [u8; 32]), StoreError> {
        // A lost connection is replaced here, between groups: the failed group's commands were
        // answered as not committed, and the next group starts on a fresh connection.
        if self.conn.is_closed() {
            self.conn.replace(connect(&self.url)?);
            tracing::info!("the writer reconnected to PostgreSQL");
        }
        let db = self.db();
        db.batch("BEGIN")?;
        db.execute("SELECT pg_advisory_xact_lock(?1)", params![APPEND_LOCK])?;
        rows::tip(db)
    }

    pub fn commit(&self, heads: &[(String, u64)], tip: u64) -> Result<(), StoreError> {
        let db = self.db();
        if !heads.is_empty() {
            db.execute("SELECT pg_notify(?1, ?2)", params![feed::CHANNEL, tip.to_string()])?;
        }
        db.batch("COMMIT")
    }
}

/// Idle read connections, opened on demand. Reads run in autocommit, each statement on the
/// latest committed state.
pub struct ReadPool {
    url: String,
    /// Idle connections with when each was last used.
    idle: Mutex<Vec<(driver::Conn, std::time::Instant)>>,
}

impl ReadPool {
    const MAX_IDLE: usize = 16;
    /// A connection idle longer than this is checked (one round trip) before it serves a read:
    /// the database may have restarted meanwhile. Busy connections are not checked; a read on a
    /// connection lost under it answers 503 with `Retry-After`, and the connection is dropped.
    const CHECK_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

    pub fn new(url: &str) -> ReadPool {
        ReadPool { url: url.to_owned(), idle: Mutex::new(Vec::new()) }
    }

    /// Run `query` on a pooled connection. A connection whose query failed is not kept: it may be
    /// broken, and a new one costs one connect.
    pub fn with<T>(&self, query: impl FnOnce(Db<'_>) -> T) -> Result<T, StoreError> {
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some((conn, used)) if used.elapsed() < Self::CHECK_AFTER => conn,
            Some((conn, _)) if conn.client().is_valid(Self::CHECK_AFTER).is_ok() => conn,
            _ => driver::Conn::new(connect(&self.url)?),
        };
        let result = query(Db::Postgres(&conn));
        if !conn.is_closed() {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < Self::MAX_IDLE {
                idle.push((conn, std::time::Instant::now()));
            }
        }
        Ok(result)
    }
}

impl Drop for ReadPool {
    fn drop(&mut self) {
        let idle = std::mem::take(self.idle.get_mut().unwrap_or_else(|p| p.into_inner()));
        if !idle.is_empty() {
            off_async(move || drop(idle));
        }
    }
}

/// Check the hash chain, then compare the projections with a rebuild: the rebuild runs in a
/// transaction that is rolled back, so the database is only read.
pub fn verify(url: &str, vault: &Vault) -> Result<VerifyReport, StoreError> {
    off_async(|| verify_here(url, vault))
}

fn verify_here(url: &str, vault: &Vault) -> Result<VerifyReport, StoreError> {
    let conn = driver::Conn::new(connect(url)?);
    let db = Db::Postgres(&conn);
    let mut report = verify::chain(db)?;
    report.projection_differences = diff_here(&conn, vault)?;
    Ok(report)
}

/// Tables whose live rows differ from a rebuild of the log, with the number of differing rows.
pub fn diff_against_rebuild(url: &str, vault: &Vault) -> Result<Vec<(String, u64)>, StoreError> {
    off_async(|| diff_here(&driver::Conn::new(connect(url)?), vault))
}

/// One REPEATABLE READ snapshot of the log and the live projections, so a database in use gives a
/// consistent answer. The log is replayed into temporary tables shaped like the projections
/// (they come first on the search path, so the replay's unqualified names reach them): the live
/// tables are neither locked nor written, and every node keeps serving while this runs.
fn diff_here(conn: &driver::Conn, vault: &Vault) -> Result<Vec<(String, u64)>, StoreError> {
    let db = Db::Postgres(conn);
    db.batch("BEGIN ISOLATION LEVEL REPEATABLE READ")?;
    let compared = (|| {
        let schema: String = db.query_row("SELECT quote_ident(current_schema())", params![], |row| row.get(0))?;
        for table in projections::TABLES {
            db.batch(&format!("CREATE TEMP TABLE {table} (LIKE {schema}.{table} INCLUDING ALL) ON COMMIT DROP"))?;
        }
        projections::replay(db, db, "events", vault)?;
        let mut differences = Vec::new();
        for table in projections::TABLES {
            let differing: u64 = db.query_row(
                &format!(
                    "SELECT (SELECT COUNT(*) FROM (SELECT * FROM {schema}.{table} EXCEPT ALL SELECT * FROM pg_temp.{table}) a) + \
                            (SELECT COUNT(*) FROM (SELECT * FROM pg_temp.{table} EXCEPT ALL SELECT * FROM {schema}.{table}) b)"
                ),
                params![],
                |row| row.get(0),
            )?;
            if differing > 0 {
                differences.push(((*table).to_owned(), differing));
            }
        }
        Ok(differences)
    })();
    db.batch("ROLLBACK")?;
    compared
}

/// Drop and rebuild the projections from the log, under the append lock.
pub fn rebuild(url: &str, vault: &Vault) -> Result<u64, StoreError> {
    off_async(|| rebuild_here(url, vault))
}

fn rebuild_here(url: &str, vault: &Vault) -> Result<u64, StoreError> {
    let mut client = connect(url)?;
    schema::migrate(&mut client)?;
    let conn = driver::Conn::new(client);
    let db = Db::Postgres(&conn);
    db.batch("BEGIN")?;
    let rebuilt = (|| {
        db.execute("SELECT pg_advisory_xact_lock(?1)", params![APPEND_LOCK])?;
        projections::rebuild(db, vault)
    })();
    match rebuilt {
        Ok(replayed) => db.batch("COMMIT").map(|()| replayed),
        Err(err) => {
            let _ = db.batch("ROLLBACK");
            Err(err)
        }
    }
}

/// Apply pending migrations and report the resulting version.
pub fn migrate(url: &str, vault: &Vault) -> Result<i64, StoreError> {
    let (_, _) = open_writer(url, vault)?;
    Ok(i64::try_from(schema::MIGRATIONS.len()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(super::redact("postgres://app:s3cret@db:5432/x"), "postgres://app:***@db:5432/x");
        assert_eq!(super::redact("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(super::redact("host=db user=app"), "host=db user=app");
    }
}
