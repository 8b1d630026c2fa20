//! The store interface (`Reads`, `WriteUnit`) over a connection of either backend: each method is one typed
//! query or statement of `queries`, `tenants` or `snapshots`.

use std::collections::BTreeMap;

use super::db::Db;
use super::{billing, keys, queries, snapshots, tenants};
use crate::domain::billing::{Totals, Window};
use crate::domain::metering::Meter;
use crate::domain::time::Timestamp;
use crate::store::log::{Actor, NewEvent, StoredEvent};
use crate::store::sealing::Vault;
use crate::store::{
    ActionRow, AppendOutcome, AttemptRow, AuditEntry, BillingBacklog, CompactionStats, ConnectionRecord, DeadLetterRow,
    DeliveryKind, DueDelivery, ErasureReport, IdempotencyScope, MismatchRow, OutboxRow, ParticipantRecord, Reads,
    Receipt, RecordingRecord, Retained, RunRow, SchedulerRow, SegmentRecord, SessionFilter, SessionRecord,
    SnapshotRecord, StoreError, SummaryRow, TenantRecord, UsageRow, WriteUnit,
};

/// Something holding a connection: a read view, or the writer's open transaction.
pub trait HasConnection {
    fn db(&self) -> Db<'_>;
    /// Where sealed payloads find their keys.
    fn vault(&self) -> &Vault;
    /// Whether the connection sees only committed rows (key rows read there may be cached).
    fn committed(&self) -> bool;

    /// Events as the API serves them: sealed payloads opened (or marked erased).
    fn opened(&self, mut events: Vec<StoredEvent>) -> Result<Vec<StoredEvent>, StoreError> {
        keys::open_all(self.db(), self.vault(), &mut events, self.committed())?;
        Ok(events)
    }
}

/// A pooled read connection, seen through the interface.
pub struct ReadView<'c> {
    pub db: Db<'c>,
    pub vault: &'c Vault,
}

impl HasConnection for ReadView<'_> {
    fn db(&self) -> Db<'_> {
        self.db
    }

    fn vault(&self) -> &Vault {
        self.vault
    }

    fn committed(&self) -> bool {
        true
    }
}

impl<T: HasConnection> Reads for T {
    fn session(&self, session_id: &str) -> Result<Option<SessionRecord>, StoreError> {
        queries::session(self.db(), session_id)
    }

    fn session_by_room(&self, provider: &str, room: &str) -> Result<Option<SessionRecord>, StoreError> {
        queries::session_by_room(self.db(), provider, room)
    }

    fn list_sessions(&self, filter: &SessionFilter) -> Result<Vec<(SessionRecord, u64)>, StoreError> {
        queries::list_sessions(self.db(), filter)
    }

    fn participants(&self, session_id: &str) -> Result<Vec<ParticipantRecord>, StoreError> {
        queries::participants(self.db(), session_id)
    }

    fn recordings(&self, session_id: &str) -> Result<Vec<RecordingRecord>, StoreError> {
        queries::recordings(self.db(), session_id)
    }

    fn open_sessions(&self, tenant_id: &str) -> Result<u64, StoreError> {
        tenants::open_sessions(self.db(), tenant_id)
    }

    fn tip(&self) -> Result<u64, StoreError> {
        Ok(super::log::tip(self.db())?.0)
    }

    fn stream_head(&self, stream_id: &str) -> Result<u64, StoreError> {
        queries::stream_head(self.db(), stream_id)
    }

    fn stream_events(&self, stream_id: &str, after: u64, limit: u64) -> Result<Vec<StoredEvent>, StoreError> {
        self.opened(queries::stream_events(self.db(), stream_id, after, limit)?)
    }

    fn transcript(&self, session_id: &str) -> Result<Vec<SegmentRecord>, StoreError> {
        let rows = queries::transcript(self.db(), session_id)?;
        rows.into_iter()
            .map(|(mut segment, sealed)| {
                if let Some(sealed) = sealed {
                    (segment.text, segment.erased) =
                        keys::open_text(self.db(), self.vault(), &sealed, self.committed())?;
                }
                Ok(segment)
            })
            .collect()
    }

    fn transcript_snapshots(
        &self,
        session_id: &str,
        after_seq: u64,
        limit: u64,
    ) -> Result<Vec<SnapshotRecord>, StoreError> {
        let rows = queries::transcript_snapshots(self.db(), session_id, after_seq, limit)?;
        rows.into_iter()
            .map(|(mut snapshot, sealed)| {
                if let Some(sealed) = sealed {
                    (snapshot.text, snapshot.erased) =
                        keys::open_text(self.db(), self.vault(), &sealed, self.committed())?;
                }
                Ok(snapshot)
            })
            .collect()
    }

    fn snapshot_stats(&self, session_id: &str) -> Result<(u64, u64), StoreError> {
        queries::snapshot_stats(self.db(), session_id)
    }

    fn action(&self, tenant_id: &str, action_id: &str) -> Result<Option<ActionRow>, StoreError> {
        queries::action(self.db(), tenant_id, action_id)
    }

    fn action_history(&self, session_id: &str, action_id: &str) -> Result<Vec<StoredEvent>, StoreError> {
        self.opened(queries::action_history(self.db(), session_id, action_id)?)
    }

    fn action_usage(&self, session_id: &str, since: Timestamp) -> Result<(u64, u64), StoreError> {
        queries::action_usage(self.db(), session_id, &since.to_rfc3339())
    }

    fn connection(&self, connection_id: &str) -> Result<Option<ConnectionRecord>, StoreError> {
        queries::connection(self.db(), connection_id)
    }

    fn webhook_receipt_exists(&self, webhook_id: &str) -> Result<bool, StoreError> {
        queries::webhook_receipt_exists(self.db(), webhook_id)
    }

    fn tenant(&self, tenant_id: &str) -> Result<Option<TenantRecord>, StoreError> {
        tenants::get(self.db(), tenant_id)
    }

    fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        tenants::list(self.db())
    }

    fn audit_after(&self, after: u64, limit: u64) -> Result<Vec<AuditEntry>, StoreError> {
        tenants::audit_after(self.db(), after, limit)
    }

    fn schema_state(&self) -> Result<(bool, bool), StoreError> {
        match self.db() {
            Db::Sqlite(conn) => crate::store::sqlite::schema_state(conn),
            Db::Postgres(conn) => crate::store::postgres::schema_state(conn),
        }
    }

    fn usage(&self, usage_id: &str) -> Result<Option<UsageRow>, StoreError> {
        billing::usage(self.db(), usage_id)
    }

    fn usage_summary(
        &self,
        tenant_id: &str,
        from: Timestamp,
        to: Timestamp,
        by_hour: bool,
    ) -> Result<Vec<SummaryRow>, StoreError> {
        billing::usage_summary(self.db(), tenant_id, from, to, by_hour)
    }

    fn events_of_type(&self, stream_id: &str, type_prefix: &str) -> Result<Vec<StoredEvent>, StoreError> {
        self.opened(queries::events_of_type(self.db(), stream_id, type_prefix)?)
    }

    fn outbox_item(&self, outbox_id: &str) -> Result<Option<OutboxRow>, StoreError> {
        billing::outbox_item(self.db(), outbox_id)
    }

    fn outbox_due(&self, now: Timestamp, limit: u64) -> Result<Vec<DueDelivery>, StoreError> {
        billing::outbox_due(self.db(), now, limit)
    }

    fn billing_backlog(&self) -> Result<BillingBacklog, StoreError> {
        billing::backlog(self.db())
    }

    fn attempts(&self, kind: DeliveryKind, item_id: &str) -> Result<Option<AttemptRow>, StoreError> {
        billing::attempts(self.db(), kind, item_id)
    }

    fn dead_letter(&self, dead_letter_id: &str) -> Result<Option<DeadLetterRow>, StoreError> {
        billing::dead_letter(self.db(), dead_letter_id)
    }

    fn dead_letters(&self, stream_id: &str) -> Result<Vec<DeadLetterRow>, StoreError> {
        billing::dead_letters(self.db(), stream_id)
    }

    fn tenant_dead_letters(&self, tenant_id: &str, limit: u64) -> Result<Vec<DeadLetterRow>, StoreError> {
        billing::tenant_dead_letters(self.db(), tenant_id, limit)
    }

    fn window_totals(&self, tenant_id: &str, window: Window) -> Result<BTreeMap<Meter, Totals>, StoreError> {
        billing::window_totals(self.db(), tenant_id, window)
    }

    fn billed_tenants(&self, window: Window) -> Result<Vec<String>, StoreError> {
        billing::billed_tenants(self.db(), window)
    }

    fn run(&self, run_id: &str) -> Result<Option<RunRow>, StoreError> {
        billing::run(self.db(), run_id)
    }

    fn latest_run(&self, tenant_id: &str, window: Window) -> Result<Option<RunRow>, StoreError> {
        billing::latest_run(self.db(), tenant_id, window)
    }

    fn runs(
        &self,
        tenant_id: &str,
        window: Option<Window>,
        before: u64,
        limit: u64,
    ) -> Result<Vec<RunRow>, StoreError> {
        billing::runs(self.db(), tenant_id, window, before, limit)
    }

    fn mismatches(&self, run_id: &str) -> Result<Vec<MismatchRow>, StoreError> {
        billing::mismatches(self.db(), run_id)
    }

    fn alerts_due(&self, now: Timestamp, limit: u64) -> Result<Vec<(MismatchRow, u32)>, StoreError> {
        billing::alerts_due(self.db(), now, limit)
    }

    fn delivery_claimants(&self, now: Timestamp) -> Result<Vec<String>, StoreError> {
        billing::delivery_claimants(self.db(), now)
    }

    fn scheduler(&self) -> Result<SchedulerRow, StoreError> {
        billing::scheduler(self.db())
    }

    fn clock_offset(&self) -> Result<i64, StoreError> {
        billing::clock_offset(self.db())
    }
}

impl HasConnection for super::writer::WriteTx<'_> {
    fn db(&self) -> Db<'_> {
        super::writer::WriteTx::db(self)
    }

    fn vault(&self) -> &Vault {
        super::writer::WriteTx::vault(self)
    }

    fn committed(&self) -> bool {
        false
    }
}

impl WriteUnit for super::writer::WriteTx<'_> {
    fn recorded_at(&self) -> Timestamp {
        super::writer::WriteTx::recorded_at(self)
    }

    fn append(
        &mut self,
        tenant_id: &str,
        stream_id: &str,
        actor: &Actor,
        events: Vec<NewEvent>,
    ) -> Result<(Vec<AppendOutcome>, Vec<StoredEvent>), StoreError> {
        super::writer::WriteTx::append(self, tenant_id, stream_id, actor, events)
    }

    fn idempotent_response(
        &self,
        scope: IdempotencyScope<'_>,
        not_before: Timestamp,
    ) -> Result<Option<(Vec<u8>, u16, String)>, StoreError> {
        queries::idempotent_response(self.db(), scope, &not_before.to_rfc3339())
    }

    fn store_idempotent_response(
        &self,
        scope: IdempotencyScope<'_>,
        request_hash: &[u8],
        status: u16,
        response: &str,
    ) -> Result<(), StoreError> {
        let now = self.recorded_at().to_rfc3339();
        queries::store_idempotent_response(self.db(), scope, request_hash, status, response, &now)
    }

    fn store_webhook_receipt(&self, receipt: &Receipt<'_>) -> Result<(), StoreError> {
        queries::store_webhook_receipt(self.db(), receipt)
    }

    fn prune_expired(&self, table: Retained, cutoff: Timestamp) -> Result<usize, StoreError> {
        queries::prune_expired(self.db(), table, &cutoff.to_rfc3339())
    }

    fn insert_connection(&self, record: &ConnectionRecord) -> Result<(), StoreError> {
        queries::insert_connection(self.db(), record, &self.recorded_at().to_rfc3339())
    }

    fn node_is_running(&self, node_id: &str) -> Result<bool, StoreError> {
        queries::node_is_running(self.db(), node_id)
    }

    fn rotate_connection(&self, connection_id: &str, expected: u64) -> Result<bool, StoreError> {
        queries::rotate_connection(self.db(), connection_id, expected, &self.recorded_at().to_rfc3339())
    }

    fn record_ack(&self, connection_id: &str, seq: u64) -> Result<(), StoreError> {
        queries::record_ack(self.db(), connection_id, seq)
    }

    fn mark_disconnected(&self, connection_id: &str, generation: u64) -> Result<(), StoreError> {
        queries::mark_disconnected(self.db(), connection_id, generation, &self.recorded_at().to_rfc3339())
    }

    fn compact_snapshots(&self, session_id: &str, before: Timestamp) -> Result<CompactionStats, StoreError> {
        snapshots::compact(self.db(), session_id, &before.to_rfc3339())
    }

    fn insert_tenant(&self, record: &TenantRecord) -> Result<(), StoreError> {
        tenants::insert(self.db(), record)
    }

    fn update_tenant(&self, record: &TenantRecord) -> Result<(), StoreError> {
        tenants::update(self.db(), record)
    }

    fn audit(&self, entry: &AuditEntry) -> Result<u64, StoreError> {
        tenants::audit(self.db(), entry)
    }

    fn save_attempts(&self, kind: DeliveryKind, item_id: &str, row: &AttemptRow) -> Result<(), StoreError> {
        billing::save_attempts(self.db(), kind, item_id, row)
    }

    fn claim_delivery(
        &self,
        kind: DeliveryKind,
        item_id: &str,
        until: Timestamp,
        node_id: &str,
    ) -> Result<(), StoreError> {
        billing::claim_delivery(self.db(), kind, item_id, until, node_id)
    }

    fn release_delivery_claims(&self, node_id: &str) -> Result<usize, StoreError> {
        billing::release_delivery_claims(self.db(), node_id, self.recorded_at())
    }

    fn clear_attempts(&self, kind: DeliveryKind, item_id: &str) -> Result<(), StoreError> {
        billing::clear_attempts(self.db(), kind, item_id)
    }

    fn save_scheduler(&self, row: &SchedulerRow) -> Result<(), StoreError> {
        billing::save_scheduler(self.db(), row, self.recorded_at())
    }

    fn save_clock_offset(&self, offset_millis: i64) -> Result<(), StoreError> {
        billing::save_clock_offset(self.db(), offset_millis)
    }

    fn erase_tenant(&mut self, tenant_id: &str) -> Result<ErasureReport, StoreError> {
        super::writer::WriteTx::erase_tenant(self, tenant_id)
    }
}
