//! The typed rows the store hands out and takes: backend-neutral, no SQL.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};

use serde::{Deserialize, Serialize};

use crate::domain::action::Action;
use crate::domain::billing::{Line, OutboxKind, UsageRecorded};
use crate::domain::metering::Meter;
use crate::domain::session::{ProviderCorrelation, Session, SessionState};
use crate::domain::time::Timestamp;

// Sessions, streams, transcripts, connections, receipts, actions.

#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    pub session_id: String,
    pub tenant_id: String,
    pub owner_id: String,
    pub title: Option<String>,
    pub metadata: Option<String>,
    pub state: SessionState,
    pub version: u64,
    pub failure_code: Option<String>,
    pub provider: Option<String>,
    pub provider_room_id: Option<String>,
    pub provider_participant_id: Option<String>,
    pub provider_call_id: Option<String>,
    pub room_sid: Option<String>,
    pub room_state: Option<String>,
    pub head_seq: u64,
    pub event_count: u64,
    pub created_at: String,
    pub updated_at: String,
    pub last_event_at: String,
}

impl SessionRecord {
    /// The session accepts no new connections, tokens or actions.
    pub fn is_terminal(&self) -> bool {
        self.state.is_terminal()
    }

    /// The lifecycle aggregate this row holds (the projection stored what `evolve` returned).
    pub fn aggregate(&self) -> Session {
        Session {
            state: self.state,
            version: self.version,
            provider: ProviderCorrelation {
                provider: self.provider.clone(),
                provider_room_id: self.provider_room_id.clone(),
                provider_participant_id: self.provider_participant_id.clone(),
                provider_call_id: self.provider_call_id.clone(),
            },
            failure_code: self.failure_code.clone(),
        }
    }
}

/// Whose Idempotency-Key this is: the caller (tenant and user) on one route.
#[derive(Debug, Clone, Copy)]
pub struct IdempotencyScope<'a> {
    pub tenant_id: &'a str,
    pub user_id: &'a str,
    pub route: &'a str,
    pub key: &'a str,
}

/// A participant of a session; served as is in the session view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantRecord {
    pub participant_id: String,
    pub participant_sid: Option<String>,
    pub name: Option<String>,
    pub kind: Option<String>,
    pub state: String,
    pub joined_at: String,
    pub left_at: Option<String>,
    pub left_reason: Option<String>,
}

/// A recording of a session; served as is in the session view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordingRecord {
    pub recording_id: String,
    pub state: String,
    pub status: Option<String>,
    pub location: Option<String>,
    pub error: Option<String>,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
}

/// Which sessions a listing covers.
#[derive(Debug, Clone)]
pub struct SessionFilter {
    pub tenant_id: String,
    /// `Some` restricts to one owner's sessions.
    pub owner_id: Option<String>,
    pub state: Option<String>,
    /// Only sessions created before this log position (the cursor).
    pub before_position: Option<u64>,
    pub limit: u64,
}

pub struct Receipt<'a> {
    pub webhook_id: &'a str,
    pub event: &'a str,
    pub room_name: Option<&'a str>,
    pub session_id: Option<&'a str>,
    pub outcome: &'a str,
    pub created_at: i64,
    pub received_at: &'a str,
}

#[derive(Debug, Clone, Copy)]
pub enum Retained {
    IdempotencyKeys,
    WebhookReceipts,
    WsConnections,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionRecord {
    pub connection_id: String,
    pub tenant_id: String,
    pub session_id: String,
    pub user_id: String,
    pub acked_seq: u64,
    pub generation: u64,
    pub disconnected_at: Option<String>,
}

/// A transcript segment's winning revision; served as is in the transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SegmentRecord {
    pub segment_id: String,
    pub seq: u64,
    pub kind: String,
    pub revision: u64,
    /// `None` once the tenant's data key was destroyed (`erased`).
    pub text: Option<String>,
    pub erased: bool,
    pub speaker: Option<String>,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub confidence: Option<f64>,
    pub language: Option<String>,
    pub edited_by: Option<String>,
    pub updated_at: String,
}

/// One transcript snapshot; served as is in the snapshot history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotRecord {
    pub segment_id: String,
    pub seq: u64,
    pub kind: String,
    pub revision: u64,
    pub text: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub erased: bool,
    pub recorded_at: String,
    pub current: bool,
}

/// An action as its projection row holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionRow {
    pub tenant_id: String,
    pub action: Action,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CompactionStats {
    pub examined: u64,
    pub deleted: u64,
    pub kept: u64,
}

// Tenants and the audit trail.

#[derive(Debug, Clone, PartialEq)]
pub struct TenantRecord {
    pub tenant_id: String,
    pub name: Option<String>,
    pub status: String,
    /// Canonical JSON of `domain::tenant::Quotas`.
    pub quotas: String,
    pub version: u64,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub audit_id: u64,
    pub at: String,
    pub actor_id: String,
    pub actor_tenant: String,
    pub action: String,
    pub target: String,
    /// Canonical JSON.
    pub details: String,
    pub request_id: String,
}

// Verification.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    pub position: u64,
    pub reason: String,
}

#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    pub events: u64,
    pub streams: u64,
    /// The first position where the chain, the positions or a stream's seq go wrong.
    pub first_broken: Option<Broken>,
    /// Projection tables that differ from a rebuild, with the number of differing rows.
    pub projection_differences: Vec<(String, u64)>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.first_broken.is_none() && self.projection_differences.is_empty()
    }
}

// The writer: append outcomes, the commit feed, counters.

/// What one group commit appended: the new head seq of every stream it touched. Broadcast after
/// COMMIT — keys, not payloads: subscribers catch up from the store. On a shared database, also
/// what other nodes changed that a node caches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Appended {
    pub heads: Arc<Vec<(String, u64)>>,
    /// Connections resumed on another node, with their new generation: a socket of an older
    /// generation held here must close (4001). Only a shared database has other nodes.
    pub taken_over: Arc<Vec<(String, u64)>>,
    /// Tenants whose record (status, quotas) another node changed.
    pub tenants_changed: Arc<Vec<String>>,
}

/// The outcome of appending one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendOutcome {
    pub event_id: String,
    pub seq: u64,
    pub position: u64,
    pub duplicate: bool,
}

/// Shared counters for health and metrics.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub alive: AtomicBool,
    pub groups_committed: AtomicU64,
    pub commands_committed: AtomicU64,
    pub last_group_size: AtomicU64,
    pub events_appended: AtomicU64,
}

// Billing: usage, the outbox, dead letters, reconciliation runs and their mismatches.

/// A signed usage record as the projection holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    pub recorded: UsageRecorded,
    /// The `billing.usage.recorded` event it came from.
    pub event_id: String,
    pub position: u64,
}

/// Where an outbox item stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutboxState {
    Pending,
    Confirmed,
    DeadLettered,
}

impl OutboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Pending => "pending",
            OutboxState::Confirmed => "confirmed",
            OutboxState::DeadLettered => "dead_lettered",
        }
    }

    pub fn parse(raw: &str) -> Option<OutboxState> {
        [OutboxState::Pending, OutboxState::Confirmed, OutboxState::DeadLettered]
            .into_iter()
            .find(|s| s.as_str() == raw)
    }
}

/// One billable item the outbox delivers: a usage record or an adjustment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutboxRow {
    pub outbox_id: String,
    pub kind: OutboxKind,
    pub tenant_id: String,
    pub stream_id: String,
    /// The eventId of the billing event delivered.
    pub event_ref: String,
    pub meter: Meter,
    pub quantity: i64,
    pub occurred_at: Timestamp,
    pub state: OutboxState,
    pub charge_id: Option<String>,
    pub sink: Option<String>,
    /// Attempts of the confirmed delivery.
    pub attempts: Option<u32>,
    pub confirmed_at: Option<String>,
    /// How often the item was dead-lettered (each replay may add one).
    pub dead_letters: u32,
}

/// A pending outbox item whose next attempt is due, with what to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueDelivery {
    pub item: OutboxRow,
    pub event_type: String,
    /// The billing event's payload, as stored in the log.
    pub payload: String,
    /// Attempts made so far (since the last replay).
    pub attempts: u32,
}

/// The two delivery workers whose retry bookkeeping lives outside the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryKind {
    Outbox,
    Alert,
}

impl DeliveryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryKind::Outbox => "outbox",
            DeliveryKind::Alert => "alert",
        }
    }
}

/// Retry bookkeeping of one item: attempts so far and when the next is due.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptRow {
    pub attempts: u32,
    pub next_attempt_at: Timestamp,
    pub last_error_code: Option<String>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterRow {
    pub dead_letter_id: String,
    pub outbox_id: String,
    pub kind: OutboxKind,
    pub tenant_id: String,
    pub stream_id: String,
    pub event_ref: String,
    pub error_code: String,
    pub stage: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub dead_lettered_at: String,
    pub replayed_at: Option<String>,
    pub replayed_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunRow {
    pub run_id: String,
    pub tenant_id: String,
    pub window_start: Timestamp,
    pub window_end: Timestamp,
    pub revision: u32,
    pub trigger: String,
    pub comparisons: u32,
    pub mismatches: u32,
    pub lines: Vec<Line>,
    pub completed_at: String,
    /// The run's place in the log: the listing's cursor.
    #[serde(skip)]
    pub position: u64,
}

/// Where a mismatch's alert stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Pending,
    Delivered,
    DeadLettered,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Pending => "pending",
            AlertState::Delivered => "delivered",
            AlertState::DeadLettered => "dead_lettered",
        }
    }

    pub fn parse(raw: &str) -> Option<AlertState> {
        [AlertState::Pending, AlertState::Delivered, AlertState::DeadLettered].into_iter().find(|s| s.as_str() == raw)
    }
}

/// A meter that disagreed in a run, and the alert it raised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MismatchRow {
    pub alert_id: String,
    pub run_id: String,
    pub tenant_id: String,
    pub window_start: Timestamp,
    pub meter: Meter,
    pub metered: i64,
    pub charged: i64,
    pub adjusted: i64,
    pub delta: i64,
    pub alert_state: AlertState,
    pub alert_attempts: Option<u32>,
    pub alert_error_code: Option<String>,
    pub raised_at: String,
    pub updated_at: String,
}

/// One row of a usage summary: a meter, or a meter in one hour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryRow {
    pub meter: Meter,
    pub window_start: Option<Timestamp>,
    pub quantity: i64,
    pub records: u64,
    pub adjusted: i64,
}

/// The reconciliation scheduler's persisted state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SchedulerRow {
    pub enabled: bool,
    pub last_run_at: Option<Timestamp>,
    /// The newest window it has reconciled.
    pub last_window: Option<Timestamp>,
    pub last_error: Option<String>,
}

/// What erasing a tenant destroyed and purged (`POST /v1/governance/tenants/{id}/erase`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErasureReport {
    /// Data keys destroyed (0 when the tenant was already erased and wrote nothing since).
    pub keys_destroyed: u64,
    /// Projection rows purged of personal fields, per table.
    pub sessions: u64,
    pub participants: u64,
    pub recordings: u64,
    pub transcript_segments: u64,
    pub actions: u64,
    pub idempotency_keys: u64,
}

/// What billing still has to do, and what it has found: the gauges of `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BillingBacklog {
    pub outbox_pending: u64,
    /// Dead letters not replayed yet.
    pub dead_letters_open: u64,
    pub alerts_pending: u64,
    pub alerts_dead_lettered: u64,
    pub reconciliation_runs: u64,
    pub mismatches: u64,
}
