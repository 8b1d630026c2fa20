//! The single writer: one thread owns the write connection and commits many commands per
//! transaction (group commit), on either backend. Each command runs inside its own savepoint, so a rejected command
//! changes nothing while its neighbours in the group still commit. Callers hear back only after
//! COMMIT returned.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{broadcast, mpsc, oneshot};

use super::db::Db;
use super::log;
use super::projections;
use crate::clock::Clock;
use crate::domain::error::{ErrorCode, Rejection};
use crate::domain::time::Timestamp;
use crate::store::log::chain_hash;
use crate::store::log::{Actor, NewEvent, StoredEvent};
use crate::store::sealing::{self, KeyRow, Vault};
use crate::store::{AppendOutcome, Appended, ErasureReport, StoreError, WriteUnit, WriterStats};

/// Most commands folded into one transaction.
const MAX_GROUP: usize = 1024;

type Completion = Box<dyn FnOnce(bool) + Send>;
type Job = Box<dyn FnOnce(&mut WriteTx<'_>) -> (bool, Completion) + Send>;

/// Where the chain continues.
#[derive(Debug, Clone, Copy)]
struct Tip {
    position: u64,
    hash: [u8; 32],
}

/// The view a command gets of the open transaction.
pub struct WriteTx<'a> {
    db: Db<'a>,
    tip: Tip,
    recorded_at: Timestamp,
    /// `recorded_at` as the log stores it.
    recorded_at_text: String,
    /// Streams this command appended to, with their new heads.
    heads: Vec<(String, u64)>,
    vault: &'a Vault,
    /// Effects on the vault once (and only if) this command commits.
    keys: KeyChanges,
    /// Tenants erased by earlier commands of this group.
    erased_in_group: &'a [String],
}

/// Key rows a command read or wrote (the vault learns them after the commit) and tenants it erased
/// (the vault forgets them after the commit).
#[derive(Default)]
struct KeyChanges {
    learned: Vec<(String, Vec<KeyRow>)>,
    erased: Vec<(String, u32)>,
}

impl WriteTx<'_> {
    /// Read access to the transaction's state (including this group's earlier, uncommitted commands).
    pub fn db(&self) -> Db<'_> {
        self.db
    }

    pub fn vault(&self) -> &Vault {
        self.vault
    }

    /// Destroy the tenant's data keys and purge its projections (`WriteUnit::erase_tenant`).
    pub fn erase_tenant(&mut self, tenant_id: &str) -> Result<ErasureReport, StoreError> {
        let (report, through) = super::keys::erase(self.db, tenant_id, &self.recorded_at_text)?;
        self.keys.erased.push((tenant_id.to_owned(), through));
        Ok(report)
    }

    /// The key new events of the tenant are sealed with. The vault's cached key is stale for a
    /// tenant erased earlier in this group (the vault forgets it only after the commit), so
    /// then the key rows are read again and a new generation is made.
    fn active_key(&mut self, tenant_id: &str) -> Result<Arc<sealing::DataKey>, StoreError> {
        let erased = self.erased_in_group.iter().chain(self.keys.erased.iter().map(|(t, _)| t)).any(|t| t == tenant_id);
        let (active, rows) = super::keys::active_key(self.db, self.vault, tenant_id, &self.recorded_at_text, !erased)?;
        if let Some(rows) = rows {
            self.keys.learned.push((tenant_id.to_owned(), rows));
        }
        Ok(active)
    }

    /// The group's one "now": every event and row this transaction writes carries it.
    pub fn recorded_at(&self) -> Timestamp {
        self.recorded_at
    }

    /// Append events to one stream, in order. An eventId already in the tenant's log with the same
    /// content is an idempotent success (its original seq, nothing written); with other content it
    /// is `EVENT_ID_CONFLICT` and the caller's savepoint discards everything.
    pub fn append(
        &mut self,
        tenant_id: &str,
        stream_id: &str,
        actor: &Actor,
        events: Vec<NewEvent>,
    ) -> Result<(Vec<AppendOutcome>, Vec<StoredEvent>), StoreError> {
        let head = log::stream_head(self.db, stream_id)?;
        let mut key = None;
        let mut pending = Vec::with_capacity(events.len());
        for mut event in events {
            // Personal fields go to the log sealed; the chain covers what is stored.
            let personal = sealing::personal_fields(event.event_type);
            let sealed = if !personal.is_empty() {
                let key = match &key {
                    Some(key) => key,
                    None => key.insert(self.active_key(tenant_id)?),
                };
                match event.presealed.take() {
                    Some(pre) if pre.tenant_id == tenant_id && pre.generation == key.generation => Some(pre.payload),
                    _ => sealing::seal(key, tenant_id, &event.event_id, personal, &event.payload)?,
                }
            } else {
                None
            };
            let opened = sealed.map(|sealed| std::mem::replace(&mut event.payload, sealed));
            let row = StoredEvent {
                position: 0,
                tenant_id: tenant_id.to_owned(),
                stream_id: stream_id.to_owned(),
                seq: 0,
                event_id: event.event_id,
                event_type: event.event_type.to_owned(),
                schema_version: event.schema_version,
                ts: event.ts,
                recorded_at: self.recorded_at_text.clone(),
                actor: actor.clone(),
                payload: event.payload,
                content_hash: event.content_hash,
                prev_hash: [0; 32],
                hash: [0; 32],
            };
            pending.push(Pending { row, opened });
        }
        let (outcomes, stored) = match self.insert_in_bulk(head, pending)? {
            Ok(inserted) => inserted,
            Err(pending) => self.insert_one_by_one(head, pending)?,
        };
        projections::apply(self.db, &stored, projections::Mode::Live)?;
        if let Some(last) = stored.last() {
            match self.heads.iter_mut().find(|(stream, _)| stream == stream_id) {
                Some(entry) => entry.1 = last.seq,
                None => self.heads.push((stream_id.to_owned(), last.seq)),
            }
        }
        Ok((outcomes, stored))
    }

    /// PostgreSQL: every row in one statement (a round trip per row is what bounds a remote
    /// database), placed as if none were a repeat. Retries are rare; when the database skipped a
    /// row (its eventId is taken), the attempt is undone and the rows come back to be sent one by
    /// one.
    #[allow(clippy::type_complexity)]
    fn insert_in_bulk(
        &mut self,
        head: u64,
        mut pending: Vec<Pending>,
    ) -> Result<Result<(Vec<AppendOutcome>, Vec<StoredEvent>), Vec<Pending>>, StoreError> {
        let Db::Postgres(conn) = self.db else { return Ok(Err(pending)) };
        if pending.len() < 2 {
            return Ok(Err(pending));
        }
        let mut tip = self.tip;
        for (offset, entry) in pending.iter_mut().enumerate() {
            entry.row.place(head + 1 + offset as u64, tip);
            tip = Tip { position: entry.row.position, hash: entry.row.hash };
        }
        let (rows, openings): (Vec<StoredEvent>, Vec<Option<String>>) =
            pending.into_iter().map(|entry| (entry.row, entry.opened)).unzip();
        self.db.batch("SAVEPOINT bulk_append")?;
        let insert = conn.statement(&crate::store::postgres::log::insert_rows_sql(true))?;
        let inserted = crate::store::postgres::log::insert_rows_with(&mut *conn.client(), &insert, &rows)?;
        if inserted < rows.len() as u64 {
            self.db.batch("ROLLBACK TO bulk_append; RELEASE bulk_append")?;
            return Ok(Err(rows.into_iter().zip(openings).map(|(row, opened)| Pending { row, opened }).collect()));
        }
        self.db.batch("RELEASE bulk_append")?;
        self.tip = tip;
        let outcomes = rows
            .iter()
            .map(|row| AppendOutcome {
                event_id: row.event_id.clone(),
                seq: row.seq,
                position: row.position,
                duplicate: false,
            })
            .collect();
        let stored = rows.into_iter().zip(openings).map(|(row, opened)| Pending { row, opened }.served()).collect();
        Ok(Ok((outcomes, stored)))
    }

    /// One row at a time: a repeat is answered with its original place and the rows after it
    /// close up, so positions and seqs stay dense.
    fn insert_one_by_one(
        &mut self,
        mut head: u64,
        pending: Vec<Pending>,
    ) -> Result<(Vec<AppendOutcome>, Vec<StoredEvent>), StoreError> {
        let mut insert = self.db.prepare(log::INSERT)?;
        let mut outcomes = Vec::with_capacity(pending.len());
        let mut stored = Vec::with_capacity(pending.len());
        for (index, mut entry) in pending.into_iter().enumerate() {
            entry.row.place(head + 1, self.tip);
            if log::insert(&mut insert, &entry.row)? {
                head = entry.row.seq;
                self.tip = Tip { position: entry.row.position, hash: entry.row.hash };
                outcomes.push(AppendOutcome {
                    event_id: entry.row.event_id.clone(),
                    seq: entry.row.seq,
                    position: entry.row.position,
                    duplicate: false,
                });
                stored.push(entry.served());
            } else {
                let (tenant_id, stream_id) = (entry.row.tenant_id.clone(), entry.row.stream_id.clone());
                outcomes.push(self.resolve_repeat(&tenant_id, &stream_id, index, &entry.row)?);
            }
        }
        Ok((outcomes, stored))
    }

    fn resolve_repeat(
        &self,
        tenant_id: &str,
        stream_id: &str,
        index: usize,
        candidate: &StoredEvent,
    ) -> Result<AppendOutcome, StoreError> {
        let Some((stream, seq, content_hash)) = log::find_by_event_id(self.db, tenant_id, &candidate.event_id)? else {
            return Err(StoreError::Backend(
                "an event's position or seq was taken, not its eventId: a writer without the append lock?".into(),
            ));
        };
        if stream == stream_id && content_hash == candidate.content_hash {
            let position = self.db.query_row(
                "SELECT position FROM events WHERE stream_id = ?1 AND seq = ?2",
                super::db::params![stream, seq],
                |row| row.get(0),
            )?;
            return Ok(AppendOutcome { event_id: candidate.event_id.clone(), seq, position, duplicate: true });
        }
        Err(StoreError::Rejected(
            Rejection::new(
                ErrorCode::EventIdConflict,
                format!("eventId `{}` was already used in this tenant for different content", candidate.event_id),
            )
            .with_details(serde_json::json!({ "index": index, "eventId": candidate.event_id })),
        ))
    }
}

/// A row on its way into the log: its payload as stored, and as it came when that is sealed.
struct Pending {
    row: StoredEvent,
    opened: Option<String>,
}

impl Pending {
    /// The row as the projections and the caller see it: opened.
    fn served(self) -> StoredEvent {
        let mut row = self.row;
        if let Some(opened) = self.opened {
            row.payload = opened;
        }
        row
    }
}

impl StoredEvent {
    /// Give the row its place: `seq` in its stream, the position after `tip`, linked to it.
    fn place(&mut self, seq: u64, tip: Tip) {
        self.seq = seq;
        self.position = tip.position + 1;
        self.prev_hash = tip.hash;
        self.hash = chain_hash(self);
    }
}

/// A cheap, cloneable handle to the writer thread.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
    capacity: usize,
    appended: broadcast::Sender<Appended>,
    pub stats: Arc<WriterStats>,
}

impl Writer {
    /// Start the writer thread on `conn`, continuing the chain from the log's current tip.
    pub fn start(
        conn: WriteConn,
        capacity: usize,
        clock: Clock,
        vault: Arc<Vault>,
    ) -> Result<(Writer, std::thread::JoinHandle<()>), StoreError> {
        let (jobs, receiver) = mpsc::channel(capacity.max(1));
        let (appended, _) = broadcast::channel(4096);
        let stats = Arc::new(WriterStats::default());
        stats.alive.store(true, Ordering::SeqCst);
        // The connection lives and dies on the writer thread (PostgreSQL's synchronous client
        // must not be used on an async thread), so the tip is read there too.
        let (ready, started) = std::sync::mpsc::sync_channel(1);
        let (feed, worker_stats) = (appended.clone(), stats.clone());
        let handle = std::thread::Builder::new()
            .name("callstream-writer".into())
            .spawn(move || {
                let (position, hash) = match log::tip(conn.db()) {
                    Ok(tip) => tip,
                    Err(err) => {
                        worker_stats.alive.store(false, Ordering::SeqCst);
                        let _ = ready.send(Err(err));
                        return;
                    }
                };
                let _ = ready.send(Ok(()));
                let worker = WriterLoop {
                    conn,
                    tip: Tip { position, hash },
                    appended: feed,
                    stats: worker_stats,
                    clock,
                    last_recorded_at: Timestamp::MIN,
                    vault,
                };
                worker.run(receiver)
            })
            .map_err(|e| StoreError::Backend(format!("cannot start the writer thread: {e}")))?;
        started.recv().map_err(|_| StoreError::Backend("the writer thread stopped while starting".into()))??;
        Ok((Writer { jobs, capacity: capacity.max(1), appended, stats }, handle))
    }

    /// Run `command` inside the next group's transaction and answer after it committed.
    /// An `Err` from the command rolls back only that command.
    pub async fn execute<T, E, F>(&self, command: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&mut dyn WriteUnit) -> Result<T, E> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel::<Result<T, E>>();
        let job: Job = Box::new(move |tx| {
            let result = command(tx);
            let ok = result.is_ok();
            let completion: Completion = Box::new(move |committed| {
                let outcome = match result {
                    Ok(value) if committed => Ok(value),
                    Ok(_) => Err(StoreError::Unavailable {
                        reason: "the write could not be committed",
                        retry_after_secs: None,
                    }
                    .into()),
                    Err(err) => Err(err),
                };
                let _ = reply.send(outcome);
            });
            (ok, completion)
        });
        let stopped = || StoreError::Unavailable { reason: "the writer has stopped", retry_after_secs: None };
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Err(
                    StoreError::Unavailable { reason: "the writer queue is full", retry_after_secs: Some(1) }.into()
                );
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(stopped().into()),
        }
        answer.await.unwrap_or_else(|_| Err(stopped().into()))
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Appended> {
        self.appended.subscribe()
    }

    /// Where commits are announced, for a backend that also learns of other nodes' commits.
    pub(crate) fn announcer(&self) -> broadcast::Sender<Appended> {
        self.appended.clone()
    }

    pub fn queue_depth(&self) -> usize {
        self.capacity - self.jobs.capacity()
    }
}

/// The write connection of either backend, with what each does around a group's transaction.
/// One lives per process, so the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub enum WriteConn {
    Sqlite(crate::store::sqlite::WriteConn),
    Postgres(crate::store::postgres::WriteConn),
}

impl WriteConn {
    fn db(&self) -> Db<'_> {
        match self {
            WriteConn::Sqlite(conn) => conn.db(),
            WriteConn::Postgres(conn) => conn.db(),
        }
    }

    /// Open the group's transaction. Answers the log's tip when other nodes may have moved it.
    fn begin(&self) -> Result<Option<(u64, [u8; 32])>, StoreError> {
        match self {
            WriteConn::Sqlite(conn) => conn.begin().map(|()| None),
            WriteConn::Postgres(conn) => conn.begin().map(Some),
        }
    }

    /// Commit the group that advanced `heads`.
    fn commit(&self, heads: &[(String, u64)], tip: u64) -> Result<(), StoreError> {
        match self {
            WriteConn::Sqlite(conn) => conn.commit(),
            WriteConn::Postgres(conn) => conn.commit(heads, tip),
        }
    }

    fn rollback(&self) {
        let _ = self.db().batch("ROLLBACK");
    }
}

struct WriterLoop {
    conn: WriteConn,
    tip: Tip,
    appended: broadcast::Sender<Appended>,
    stats: Arc<WriterStats>,
    clock: Clock,
    last_recorded_at: Timestamp,
    vault: Arc<Vault>,
}

impl WriterLoop {
    fn run(mut self, mut receiver: mpsc::Receiver<Job>) {
        while let Some(first) = receiver.blocking_recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match receiver.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            self.commit_group(group);
        }
        self.stats.alive.store(false, Ordering::SeqCst);
        tracing::info!("writer stopped: all handles dropped");
    }

    fn commit_group(&mut self, group: Vec<Job>) {
        let size = group.len() as u64;
        let start_tip = self.tip;
        // Where this group's appends start (another node may have moved the tip since).
        let mut appended_from = start_tip.position;
        let mut completions = Vec::with_capacity(group.len());
        let mut heads: Vec<(String, u64)> = Vec::new();
        let mut key_changes = KeyChanges::default();
        let mut erased_in_group: Vec<String> = Vec::new();
        let committed = match self.conn.begin() {
            Err(err) => {
                tracing::error!(error = %err, "writer could not begin a transaction");
                for job in group {
                    // Never run a command outside a transaction; fail it instead.
                    drop(job);
                }
                false
            }
            Ok(moved) => {
                if let Some((position, hash)) = moved {
                    self.tip = Tip { position, hash };
                }
                let group_start = self.tip.position;
                // Never earlier than the previous group, even if the system clock steps back.
                let recorded_at = self.clock.now().max(self.last_recorded_at);
                self.last_recorded_at = recorded_at;
                let mut healthy = true;
                for job in group {
                    let (completion, settled, job_heads, job_keys) = self.run_job(job, recorded_at, &erased_in_group);
                    healthy &= settled;
                    erased_in_group.extend(job_keys.erased.iter().map(|(tenant, _)| tenant.clone()));
                    key_changes.learned.extend(job_keys.learned);
                    key_changes.erased.extend(job_keys.erased);
                    completions.push(completion);
                    for (stream, head) in job_heads {
                        match heads.iter_mut().find(|(s, _)| *s == stream) {
                            Some(entry) => entry.1 = entry.1.max(head),
                            None => heads.push((stream, head)),
                        }
                    }
                }
                let commit = if healthy {
                    self.conn.commit(&heads, self.tip.position)
                } else {
                    Err(StoreError::Backend("a command's savepoint could not be settled".into()))
                };
                match commit {
                    Ok(()) => {
                        appended_from = group_start;
                        true
                    }
                    Err(err) => {
                        tracing::error!(error = %err, "group commit failed; rolling back the whole group");
                        self.conn.rollback();
                        false
                    }
                }
            }
        };
        if !committed {
            self.tip = match log::tip(self.conn.db()) {
                Ok((position, hash)) => Tip { position, hash },
                Err(_) => start_tip,
            };
        }
        if committed {
            // Erasures first: a key row read before an erasure in this group is not learned.
            for (tenant, through) in key_changes.erased {
                self.vault.forget(&tenant, through);
            }
            for (tenant, rows) in key_changes.learned {
                if let Err(err) = self.vault.learn(&tenant, &rows) {
                    tracing::error!(error = %err, tenant = %tenant, "could not cache a committed data key");
                }
            }
        }
        for completion in completions {
            completion(committed);
        }
        if committed {
            if let WriteConn::Sqlite(conn) = &self.conn {
                conn.committed();
            }
            self.stats.groups_committed.fetch_add(1, Ordering::Relaxed);
            self.stats.commands_committed.fetch_add(size, Ordering::Relaxed);
            // Positions are gapless, so the tip's advance is the number of events appended.
            self.stats.events_appended.fetch_add(self.tip.position - appended_from, Ordering::Relaxed);
            self.stats.last_group_size.store(size, Ordering::Relaxed);
            // On a shared database every node (this one included) hears commits from the log's
            // follower instead, in commit order across nodes, so none is announced twice.
            if !heads.is_empty() && matches!(self.conn, WriteConn::Sqlite(_)) {
                let _ = self.appended.send(Appended { heads: Arc::new(heads), ..Appended::default() });
            }
        }
    }

    /// Run one command in its own savepoint. Returns its completion and whether the savepoint was
    /// settled; an unsettled one poisons the group, which is then rolled back as a whole.
    fn run_job(
        &mut self,
        job: Job,
        recorded_at: Timestamp,
        erased_in_group: &[String],
    ) -> (Completion, bool, Vec<(String, u64)>, KeyChanges) {
        let db = self.conn.db();
        let opened = db.batch("SAVEPOINT command");
        let mut tx = WriteTx {
            db,
            tip: self.tip,
            recorded_at,
            recorded_at_text: recorded_at.to_rfc3339(),
            heads: Vec::new(),
            vault: &self.vault,
            keys: KeyChanges::default(),
            erased_in_group,
        };
        let (ok, completion) = job(&mut tx);
        let tip_after = tx.tip;
        let (heads, keys) = if ok { (tx.heads, tx.keys) } else { (Vec::new(), KeyChanges::default()) };
        let settled = opened.and_then(|()| {
            if ok { db.batch("RELEASE command") } else { db.batch("ROLLBACK TO command; RELEASE command") }
        });
        match settled {
            Ok(()) => {
                if ok {
                    self.tip = tip_after;
                }
                (completion, true, heads, keys)
            }
            Err(err) => {
                tracing::error!(error = %err, "could not settle a command's savepoint");
                (completion, false, Vec::new(), KeyChanges::default())
            }
        }
    }
}
