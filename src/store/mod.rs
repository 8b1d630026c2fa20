//! The store interface: what the use cases may ask of storage, and nothing more.
//!
//! A command runs in a *write unit* (`WriteUnit`): typed appends and typed row operations inside
//! one transaction, answered after it committed. Queries run on a *read view* (`Reads`). Both hand
//! out typed rows (`records`), never a connection or SQL. Commits are announced on a feed
//! (`Appended`) for fan-out. Errors are `StoreError`; the application maps them to its catalog.
//!
//! `sql` holds what both backends share, written once on a portable SQL surface: the writer,
//! the projections, the queries. `sqlite` is the embedded backend (the default); `postgres` serves
//! several nodes on one database. No other module names either driver.

pub mod log;
pub mod postgres;
mod records;
pub mod sealing;
pub mod sql;
pub mod sqlite;

use std::collections::BTreeMap;

pub use crate::config::Database;
pub use records::*;
pub use sql::store::Store;
pub use sql::writer::Writer;

use crate::config::MasterKey;
use crate::domain::billing::{Totals, Window};
use crate::domain::error::Rejection;
use crate::domain::metering::Meter;
use crate::domain::time::Timestamp;
use log::{Actor, NewEvent, StoredEvent};

/// Bumped when what the projections hold changes; a database with another version is rebuilt
/// from the log at start-up.
pub use sql::projections::PROJECTION_VERSION;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A rule the log itself enforces (an eventId reused for other content): the caller's fault.
    #[error("{0}")]
    Rejected(Rejection),
    /// The store cannot take the command now (queue full, stopping, commit failed): retry.
    #[error("the store is unavailable: {reason}")]
    Unavailable { reason: &'static str, retry_after_secs: Option<u64> },
    #[error("cannot create the data directory {path}: {source}")]
    DataDir { path: std::path::PathBuf, source: std::io::Error },
    /// Anything else the backend reports; not the caller's fault.
    #[error("{0}")]
    Backend(String),
}

/// Read-side queries, on a read view or inside a write unit (where they see its own writes).
pub trait Reads {
    fn session(&self, session_id: &str) -> Result<Option<SessionRecord>, StoreError>;
    fn session_by_room(&self, provider: &str, room: &str) -> Result<Option<SessionRecord>, StoreError>;
    /// Newest first, with each row's cursor.
    fn list_sessions(&self, filter: &SessionFilter) -> Result<Vec<(SessionRecord, u64)>, StoreError>;
    fn participants(&self, session_id: &str) -> Result<Vec<ParticipantRecord>, StoreError>;
    fn recordings(&self, session_id: &str) -> Result<Vec<RecordingRecord>, StoreError>;
    /// Sessions of the tenant that are not over.
    fn open_sessions(&self, tenant_id: &str) -> Result<u64, StoreError>;

    fn stream_head(&self, stream_id: &str) -> Result<u64, StoreError>;
    /// The log's last position (0 when empty).
    fn tip(&self) -> Result<u64, StoreError>;
    fn stream_events(&self, stream_id: &str, after: u64, limit: u64) -> Result<Vec<StoredEvent>, StoreError>;

    fn transcript(&self, session_id: &str) -> Result<Vec<SegmentRecord>, StoreError>;
    fn transcript_snapshots(
        &self,
        session_id: &str,
        after_seq: u64,
        limit: u64,
    ) -> Result<Vec<SnapshotRecord>, StoreError>;
    /// `(snapshots, distinct segments)` of the session.
    fn snapshot_stats(&self, session_id: &str) -> Result<(u64, u64), StoreError>;

    fn action(&self, tenant_id: &str, action_id: &str) -> Result<Option<ActionRow>, StoreError>;
    /// The server-written orchestration and safety events of one action, in log order.
    fn action_history(&self, session_id: &str, action_id: &str) -> Result<Vec<StoredEvent>, StoreError>;
    /// `(actions of the session, actions requested since `since`)`.
    fn action_usage(&self, session_id: &str, since: Timestamp) -> Result<(u64, u64), StoreError>;

    fn connection(&self, connection_id: &str) -> Result<Option<ConnectionRecord>, StoreError>;
    fn webhook_receipt_exists(&self, webhook_id: &str) -> Result<bool, StoreError>;

    fn tenant(&self, tenant_id: &str) -> Result<Option<TenantRecord>, StoreError>;
    fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError>;
    fn audit_after(&self, after: u64, limit: u64) -> Result<Vec<AuditEntry>, StoreError>;

    /// `(migrations current, projections current)` for this build.
    fn schema_state(&self) -> Result<(bool, bool), StoreError>;

    // Billing.
    fn usage(&self, usage_id: &str) -> Result<Option<UsageRow>, StoreError>;
    /// Usage (by event time in `[from, to)`) and adjustments of a tenant, per meter or per meter
    /// and hour.
    fn usage_summary(
        &self,
        tenant_id: &str,
        from: Timestamp,
        to: Timestamp,
        by_hour: bool,
    ) -> Result<Vec<SummaryRow>, StoreError>;
    /// The events of one stream whose type starts with `type_prefix`, in order.
    fn events_of_type(&self, stream_id: &str, type_prefix: &str) -> Result<Vec<StoredEvent>, StoreError>;
    fn outbox_item(&self, outbox_id: &str) -> Result<Option<OutboxRow>, StoreError>;
    /// Pending items whose next attempt is due at `now`, oldest first.
    fn outbox_due(&self, now: Timestamp, limit: u64) -> Result<Vec<DueDelivery>, StoreError>;
    fn billing_backlog(&self) -> Result<BillingBacklog, StoreError>;
    fn attempts(&self, kind: DeliveryKind, item_id: &str) -> Result<Option<AttemptRow>, StoreError>;
    /// The nodes holding a delivery claim whose lease has not ended at `now`.
    fn delivery_claimants(&self, now: Timestamp) -> Result<Vec<String>, StoreError>;
    fn dead_letter(&self, dead_letter_id: &str) -> Result<Option<DeadLetterRow>, StoreError>;
    fn dead_letters(&self, stream_id: &str) -> Result<Vec<DeadLetterRow>, StoreError>;
    /// The tenant's newest dead letters, open ones first.
    fn tenant_dead_letters(&self, tenant_id: &str, limit: u64) -> Result<Vec<DeadLetterRow>, StoreError>;
    /// Per meter: metered, adjusted and confirmed quantities of a tenant's window.
    fn window_totals(&self, tenant_id: &str, window: Window) -> Result<BTreeMap<Meter, Totals>, StoreError>;
    /// Tenants with usage, adjustments or charges in the window.
    fn billed_tenants(&self, window: Window) -> Result<Vec<String>, StoreError>;
    fn run(&self, run_id: &str) -> Result<Option<RunRow>, StoreError>;
    /// The newest revision of the tenant's run over `window`.
    fn latest_run(&self, tenant_id: &str, window: Window) -> Result<Option<RunRow>, StoreError>;
    /// A tenant's runs, newest first, before the log position `before`, optionally of one window.
    fn runs(&self, tenant_id: &str, window: Option<Window>, before: u64, limit: u64)
    -> Result<Vec<RunRow>, StoreError>;
    fn mismatches(&self, run_id: &str) -> Result<Vec<MismatchRow>, StoreError>;
    /// Pending alerts whose next attempt is due at `now`, with the attempts made so far.
    fn alerts_due(&self, now: Timestamp, limit: u64) -> Result<Vec<(MismatchRow, u32)>, StoreError>;
    fn scheduler(&self) -> Result<SchedulerRow, StoreError>;
    /// The persisted offset of a test clock, in milliseconds.
    fn clock_offset(&self) -> Result<i64, StoreError>;
}

/// One command's view of the open transaction. Everything it does commits or rolls back together;
/// an `Err` from the command rolls back only that command.
pub trait WriteUnit: Reads {
    /// The group's one "now": every event and row this transaction writes carries it.
    fn recorded_at(&self) -> Timestamp;

    /// Append events to one stream, in order, and update every projection in the same
    /// transaction. An eventId already in the tenant's log with the same content is an idempotent
    /// success (its original seq); with other content it is `EVENT_ID_CONFLICT`.
    fn append(
        &mut self,
        tenant_id: &str,
        stream_id: &str,
        actor: &Actor,
        events: Vec<NewEvent>,
    ) -> Result<(Vec<AppendOutcome>, Vec<StoredEvent>), StoreError>;

    /// A stored answer for the key, forgetting it first if it was stored before `not_before`.
    fn idempotent_response(
        &self,
        scope: IdempotencyScope<'_>,
        not_before: Timestamp,
    ) -> Result<Option<(Vec<u8>, u16, String)>, StoreError>;
    fn store_idempotent_response(
        &self,
        scope: IdempotencyScope<'_>,
        request_hash: &[u8],
        status: u16,
        response: &str,
    ) -> Result<(), StoreError>;

    fn store_webhook_receipt(&self, receipt: &Receipt<'_>) -> Result<(), StoreError>;
    /// Forget a bounded number of rows recorded before `cutoff`.
    fn prune_expired(&self, table: Retained, cutoff: Timestamp) -> Result<usize, StoreError>;

    fn insert_connection(&self, record: &ConnectionRecord) -> Result<(), StoreError>;
    /// Whether the node `node_id` (another than this one) still runs, as far as the database can
    /// tell; errs towards yes (`store::postgres::liveness`).
    fn node_is_running(&self, node_id: &str) -> Result<bool, StoreError>;
    /// Rotate the resume generation if it is still `expected`; false when another resume won.
    fn rotate_connection(&self, connection_id: &str, expected: u64) -> Result<bool, StoreError>;
    /// Monotonic: lower or repeated acks change nothing.
    fn record_ack(&self, connection_id: &str, seq: u64) -> Result<(), StoreError>;
    fn mark_disconnected(&self, connection_id: &str, generation: u64) -> Result<(), StoreError>;

    /// Delete superseded snapshots of the session recorded before `before`.
    fn compact_snapshots(&self, session_id: &str, before: Timestamp) -> Result<CompactionStats, StoreError>;

    fn insert_tenant(&self, record: &TenantRecord) -> Result<(), StoreError>;
    fn update_tenant(&self, record: &TenantRecord) -> Result<(), StoreError>;
    /// Append to the audit trail; answers the entry's id.
    fn audit(&self, entry: &AuditEntry) -> Result<u64, StoreError>;

    /// Retry bookkeeping of a delivery (outside the log: only the outcomes are events).
    fn save_attempts(&self, kind: DeliveryKind, item_id: &str, row: &AttemptRow) -> Result<(), StoreError>;
    /// Claim a due delivery for one attempt by `node_id`: no node picks it up again before `until`
    /// (unless its outcome is recorded first, or the claims of that node are released). Its
    /// attempt count and last error stay as they were.
    fn claim_delivery(
        &self,
        kind: DeliveryKind,
        item_id: &str,
        until: Timestamp,
        node_id: &str,
    ) -> Result<(), StoreError>;
    /// Make every delivery claimed by `node_id` (a node that has ended) due now; answers how many.
    fn release_delivery_claims(&self, node_id: &str) -> Result<usize, StoreError>;
    fn clear_attempts(&self, kind: DeliveryKind, item_id: &str) -> Result<(), StoreError>;
    fn save_scheduler(&self, row: &SchedulerRow) -> Result<(), StoreError>;
    fn save_clock_offset(&self, offset_millis: i64) -> Result<(), StoreError>;

    /// Destroy the tenant's data keys (its sealed payload fields become unreadable for good) and
    /// purge its projections of personal fields. The log is not touched.
    fn erase_tenant(&mut self, tenant_id: &str) -> Result<ErasureReport, StoreError>;
}

// The maintenance commands open sealed payloads to rebuild projections: they need the master key.

/// Check the hash chain and the projections.
pub fn verify(database: impl Into<Database>, master_key: &MasterKey) -> Result<VerifyReport, StoreError> {
    let vault = sealing::Vault::new(master_key);
    match database.into() {
        Database::Sqlite(path) => sqlite::verify(&path, &vault),
        Database::Postgres(url) => crate::store::postgres::verify(&url, &vault),
    }
}

/// Drop and rebuild the projections from the log.
pub fn rebuild(database: impl Into<Database>, master_key: &MasterKey) -> Result<u64, StoreError> {
    let vault = sealing::Vault::new(master_key);
    match database.into() {
        Database::Sqlite(path) => sqlite::rebuild(&path, &vault),
        Database::Postgres(url) => crate::store::postgres::rebuild(&url, &vault),
    }
}

/// Apply pending migrations and report the resulting version.
pub fn migrate(database: impl Into<Database>, master_key: &MasterKey) -> Result<i64, StoreError> {
    let vault = sealing::Vault::new(master_key);
    match database.into() {
        Database::Sqlite(path) => sqlite::migrate(&path, &vault),
        Database::Postgres(url) => crate::store::postgres::migrate(&url, &vault),
    }
}

/// Projection tables whose live rows differ from a rebuild of the log, with the number of
/// differing rows (the database is only read).
pub fn diff_against_rebuild(
    database: impl Into<Database>,
    master_key: &MasterKey,
) -> Result<Vec<(String, u64)>, StoreError> {
    let vault = sealing::Vault::new(master_key);
    match database.into() {
        Database::Sqlite(path) => sqlite::diff_against_rebuild(&path, &vault),
        Database::Postgres(url) => crate::store::postgres::diff_against_rebuild(&url, &vault),
    }
}
