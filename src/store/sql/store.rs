//! The running store of either backend: one writer (group commit) and a pool of read connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::db::Db;
use super::reads::ReadView;
use super::writer::{WriteConn, Writer};
use crate::clock::Clock;
use crate::config::{Durability, MasterKey};
use crate::store::sealing::Vault;
use crate::store::{Database, Reads, StoreError, sqlite};

/// Read connections of either backend.
enum ReadPool {
    Sqlite(sqlite::ReadPool),
    Postgres(crate::store::postgres::ReadPool),
}

impl ReadPool {
    fn with<T>(&self, query: impl FnOnce(Db<'_>) -> T) -> Result<T, StoreError> {
        match self {
            ReadPool::Sqlite(pool) => pool.with(query),
            ReadPool::Postgres(pool) => pool.with(query),
        }
    }
}

#[derive(Clone)]
pub struct Store {
    pub writer: Writer,
    readers: Arc<ReadPool>,
    epoch: Arc<str>,
    vault: Arc<Vault>,
    shared: bool,
    /// This process among the nodes of its database (`store::postgres::liveness`).
    node_id: Arc<str>,
    /// Keeps the follower of other nodes' commits running while any handle lives.
    _following: Option<Arc<Following>>,
}

/// Stops the follower, and lets go of the node's liveness lock, when the last store handle goes.
struct Following(Arc<AtomicBool>);

impl Drop for Following {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl Store {
    /// Open (creating and migrating if needed) the database and start the writer thread.
    pub fn open(
        database: impl Into<Database>,
        durability: Durability,
        queue_capacity: usize,
        clock: Clock,
        master_key: &MasterKey,
    ) -> Result<(Store, std::thread::JoinHandle<()>), StoreError> {
        let vault = Arc::new(Vault::new(master_key));
        let database = database.into();
        let (conn, readers, epoch) = match &database {
            Database::Sqlite(path) => {
                let (conn, epoch) = sqlite::open_writer(path, durability, clock.now(), &vault)?;
                (WriteConn::Sqlite(conn), ReadPool::Sqlite(sqlite::ReadPool::new(path)), epoch)
            }
            Database::Postgres(url) => {
                let (conn, epoch) = crate::store::postgres::open_writer(url, &vault)?;
                (WriteConn::Postgres(conn), ReadPool::Postgres(crate::store::postgres::ReadPool::new(url)), epoch)
            }
        };
        let shared = matches!(database, Database::Postgres(_));
        let (writer, handle) = Writer::start(conn, queue_capacity, clock, vault.clone())?;
        let node_id: Arc<str> = format!("node_{}", uuid::Uuid::new_v4().simple()).into();
        let store =
            Store { writer, readers: Arc::new(readers), epoch: epoch.into(), vault, shared, node_id, _following: None };
        let store = match &database {
            Database::Sqlite(_) => store,
            // Every node hears every node's commits, its own included, from the log: a socket on
            // any node follows a session written through any other.
            Database::Postgres(url) => {
                let tip = store.read_now(|reads| reads.tip())?;
                let running = Arc::new(AtomicBool::new(true));
                let node_id = crate::store::postgres::liveness::hold(url, running.clone())?.into();
                crate::store::postgres::feed::announce_heads(
                    url.clone(),
                    tip,
                    store.writer.announcer(),
                    store.vault.clone(),
                    running.clone(),
                )?;
                Store { node_id, _following: Some(Arc::new(Following(running))), ..store }
            }
        };
        Ok((store, handle))
    }

    /// Whether other processes (nodes) write to the same database; embedded SQLite serves one.
    pub fn shared(&self) -> bool {
        self.shared
    }

    /// This process's id among the nodes writing to its database, held alive while it runs.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The tenants' data keys, for sealing on the request's thread (`NewEvent::preseal`).
    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    /// Run a query now, on the calling thread (start-up only).
    pub fn read_now<T: Send>(
        &self,
        query: impl FnOnce(&dyn Reads) -> Result<T, StoreError> + Send,
    ) -> Result<T, StoreError> {
        let run = || self.readers.with(|db| query(&ReadView { db, vault: &self.vault }))?;
        match &*self.readers {
            ReadPool::Sqlite(_) => run(),
            ReadPool::Postgres(_) => crate::store::postgres::off_async(run),
        }
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
            readers.with(|db| query(&ReadView { db, vault: &vault }))?
        })
        .await
        .map_err(|e| StoreError::Backend(format!("a read task failed: {e}")))?
    }
}
