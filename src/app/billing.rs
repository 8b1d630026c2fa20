//! Metering and billing use cases: usage derived from the log in the same transaction as the
//! event it meters, usage and summaries, adjustments, a session's billing events and dead letters,
//! replay, and the trace from a usage record to everything that followed from it.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::AppState;
use super::idempotency;
use super::sessions::{actor_of, visible_session};
use crate::config::SigningKey;
use crate::domain::action::ActionEvent;
use crate::domain::billing::{self, AdjustmentCreated, PublishReplayed, UsageRecorded, Window};
use crate::domain::canonical::to_canonical_string;
use crate::domain::envelope::server_event;
use crate::domain::event_types::EventType;
use crate::domain::ids::{EventId, SessionId};
use crate::domain::metering::{Key, Meter, UsageRecord, Verification};
use crate::domain::principal::{Principal, Role};
use crate::domain::session::{SessionEvent, SessionState};
use crate::domain::time::Timestamp;
use crate::error::{AppError, ErrorCode};
use crate::store::log::{Actor, ServedEvent, StoredEvent};
use crate::store::{
    AttemptRow, DeadLetterRow, DeliveryKind, IdempotencyScope, MismatchRow, OutboxRow, Reads, RunRow, UsageRow,
    WriteUnit,
};

/// The meter signing keys: the first signs new records, every key verifies.
#[derive(Clone)]
pub struct Metering {
    keys: Arc<Vec<SigningKey>>,
}

impl Metering {
    pub fn new(keys: &[SigningKey]) -> Metering {
        Metering { keys: Arc::new(keys.to_vec()) }
    }

    fn ring(&self) -> Vec<Key<'_>> {
        self.keys.iter().map(|k| Key { id: &k.key_id, secret: k.secret.expose().as_bytes() }).collect()
    }

    pub fn verify(&self, recorded: &UsageRecorded) -> Verification {
        recorded.record.verify(&recorded.signature, &self.ring())
    }

    fn sign(&self, record: UsageRecord) -> Result<UsageRecorded, AppError> {
        let key = self.ring().into_iter().next().ok_or_else(|| AppError::internal_msg("no meter signing key"))?;
        Ok(UsageRecorded { signature: record.sign(key), record })
    }
}

/// Append one server-written event with a deterministic id, so the same fact can never be
/// appended twice (a second attempt with other content is `EVENT_ID_CONFLICT`, not a duplicate).
pub(crate) fn append_fact(
    tx: &mut dyn WriteUnit,
    tenant_id: &str,
    stream_id: &str,
    actor: &Actor,
    type_name: &str,
    event_id: &str,
    payload: &impl Serialize,
) -> Result<StoredEvent, AppError> {
    let payload = serde_json::to_value(payload).map_err(AppError::internal)?;
    let stream = SessionId::parse(stream_id).map_err(AppError::internal_msg)?;
    let event_type =
        EventType::lookup(type_name).ok_or_else(|| AppError::internal_msg(format!("{type_name} is not registered")))?;
    let mut event = server_event(&stream, event_type, payload, &tx.recorded_at().to_rfc3339())?;
    event.event_id = EventId::parse(event_id).map_err(AppError::internal_msg)?;
    let (_, mut stored) = tx.append(tenant_id, stream_id, actor, vec![event.into()])?;
    stored.pop().ok_or_else(|| AppError::internal_msg("the append stored nothing"))
}

/// Derive the usage the freshly appended `events` produce — a call's duration when a lifecycle
/// event ends it, one unit per executed action — and append one signed `billing.usage.recorded`
/// per record, in the same transaction. Answers how many records were appended.
pub fn meter_appended(tx: &mut dyn WriteUnit, metering: &Metering, events: &[StoredEvent]) -> Result<usize, AppError> {
    let mut records = Vec::new();
    let recorded_at = tx.recorded_at();
    for event in events {
        let Some(occurred_at) = Timestamp::parse(&event.recorded_at) else { continue };
        if let Some(change) = SessionEvent::from_envelope_parts(&event.event_type, &event.payload)
            && change.ends_session()
        {
            let active_at = became_active_at(tx, &event.stream_id)?;
            records.extend(UsageRecord::call_duration(
                &event.tenant_id,
                &event.stream_id,
                active_at,
                occurred_at,
                recorded_at,
            ));
        } else if let Some(executed @ ActionEvent::Executed { .. }) =
            ActionEvent::from_envelope_parts(&event.event_type, &event.payload)
        {
            records.push(UsageRecord::action_executed(
                &event.tenant_id,
                &event.stream_id,
                executed.action_id(),
                occurred_at,
                recorded_at,
            ));
        }
    }
    let mut appended = 0;
    for record in records {
        if record_usage(tx, metering, record)? {
            appended += 1;
        }
    }
    Ok(appended)
}

/// Sign `record` and append its `billing.usage.recorded` to its session's stream, unless the log
/// already holds it. Answers whether it was appended.
pub fn record_usage(tx: &mut dyn WriteUnit, metering: &Metering, record: UsageRecord) -> Result<bool, AppError> {
    if tx.usage(&record.usage_id)?.is_some() {
        return Ok(false);
    }
    let (tenant, stream, event_id) =
        (record.tenant_id.clone(), record.session_id.clone(), format!("usage:{}", record.usage_id));
    let signed = metering.sign(record)?;
    append_fact(tx, &tenant, &stream, &Actor::system(), "billing.usage.recorded", &event_id, &signed)?;
    Ok(true)
}

/// When the session's log says it became `active` (the first time), if it did.
fn became_active_at(reads: &dyn Reads, session_id: &str) -> Result<Option<Timestamp>, AppError> {
    for event in reads.events_of_type(session_id, "call.session.state_changed")? {
        if let Some(SessionEvent::StateChanged { to: SessionState::Active, .. }) =
            SessionEvent::from_envelope_parts(&event.event_type, &event.payload)
        {
            return Ok(Timestamp::parse(&event.recorded_at));
        }
    }
    Ok(None)
}

// ---- Access -------------------------------------------------------------------------------------

/// Billing data is for the tenant's operators and services. Another tenant's data does not exist
/// for the caller (`not_found`), so ids do not leak.
fn billing_reader(
    principal: &Principal,
    tenant_id: &str,
    not_found: impl FnOnce() -> AppError,
) -> Result<(), AppError> {
    if principal.tenant_id.as_str() != tenant_id {
        return Err(not_found());
    }
    if !(principal.has(Role::Operator) || principal.has(Role::Service)) {
        return Err(AppError::new(ErrorCode::ForbiddenRole, "billing data is for operators and services"));
    }
    Ok(())
}

fn operator_of(principal: &Principal, tenant_id: &str, not_found: impl FnOnce() -> AppError) -> Result<(), AppError> {
    if principal.tenant_id.as_str() != tenant_id {
        return Err(not_found());
    }
    if !principal.has(Role::Operator) {
        return Err(AppError::new(ErrorCode::ForbiddenRole, "only operators may do this"));
    }
    Ok(())
}

fn usage_not_found(usage_id: &str) -> AppError {
    AppError::new(ErrorCode::UsageNotFound, format!("usage record `{usage_id}` was not found"))
}

fn tenant_not_found(tenant_id: &str) -> AppError {
    AppError::new(ErrorCode::TenantNotFound, format!("tenant `{tenant_id}` was not found"))
}

fn dead_letter_not_found(id: &str) -> AppError {
    AppError::new(ErrorCode::DeadLetterNotFound, format!("dead letter `{id}` was not found"))
}

// ---- Usage --------------------------------------------------------------------------------------

/// An amount of money in the price table's currency.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Amount {
    pub currency: String,
    pub micros: i64,
    /// Decimal, six places.
    pub value: String,
}

impl Amount {
    fn of(state: &AppState, meter: Meter, quantity: i64) -> Amount {
        let prices = &state.config.billing.prices;
        let micros = prices.amount_micros(meter, quantity);
        Amount { currency: prices.currency.clone(), micros, value: billing::format_micros(micros) }
    }
}

/// `GET /v1/billing/usage/{usageId}`: the signed record, the verdict of verifying it now, its
/// price and where its delivery stands.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageView {
    #[serde(flatten)]
    pub recorded: UsageRecorded,
    pub verification: Verification,
    /// The `billing.usage.recorded` event.
    pub event_id: String,
    pub window_start: Timestamp,
    pub amount: Amount,
    pub delivery: Option<OutboxRow>,
}

fn usage_view(state: &AppState, row: UsageRow, delivery: Option<OutboxRow>) -> UsageView {
    let verification = state.metering.verify(&row.recorded);
    let record = &row.recorded.record;
    UsageView {
        window_start: Window::containing(record.occurred_at).start,
        amount: Amount::of(state, record.meter, record.quantity),
        verification,
        event_id: row.event_id,
        delivery,
        recorded: row.recorded,
    }
}

pub async fn usage(state: &AppState, principal: &Principal, usage_id: String) -> Result<UsageView, AppError> {
    let id = usage_id.clone();
    let (row, delivery) = state
        .store
        .read(move |reads| -> Result<_, AppError> { Ok((reads.usage(&id)?, reads.outbox_item(&id)?)) })
        .await?;
    let row = row.ok_or_else(|| usage_not_found(&usage_id))?;
    billing_reader(principal, &row.recorded.record.tenant_id, || usage_not_found(&usage_id))?;
    Ok(usage_view(state, row, delivery))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SummaryQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    pub group_by: Option<String>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SummaryLine {
    pub meter: Meter,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_start: Option<Timestamp>,
    pub unit: &'static str,
    /// Metered usage (by event time).
    pub quantity: i64,
    pub records: u64,
    /// Adjustments (a credit is negative).
    pub adjusted: i64,
    /// `quantity + adjusted`: what the tenant is billed for.
    pub billable: i64,
    pub amount: Amount,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageSummary {
    pub tenant_id: String,
    pub from: Timestamp,
    pub to: Timestamp,
    pub group_by: &'static str,
    pub lines: Vec<SummaryLine>,
    pub total: Amount,
}

/// The longest range one summary covers.
const MAX_SUMMARY_DAYS: i64 = 366;

/// `GET /v1/billing/accounts/{tenantId}/usage-summary?from=&to=&groupBy=meter|hour`: usage by event
/// time in `[from, to)` (default: the last 24 hours), with adjustments and amounts.
pub async fn usage_summary(
    state: &AppState,
    principal: &Principal,
    tenant_id: String,
    query: SummaryQuery,
) -> Result<UsageSummary, AppError> {
    billing_reader(principal, &tenant_id, || tenant_not_found(&tenant_id))?;
    let invalid = |message: String| AppError::new(ErrorCode::QueryInvalid, message);
    let parse = |name: &str, raw: &Option<String>| -> Result<Option<Timestamp>, AppError> {
        raw.as_deref()
            .map(|r| Timestamp::parse(r).ok_or_else(|| invalid(format!("`{name}` must be an RFC 3339 timestamp"))))
            .transpose()
    };
    let to = parse("to", &query.to)?.unwrap_or_else(|| state.clock.now());
    let from = parse("from", &query.from)?.unwrap_or_else(|| to.plus_seconds(-86_400));
    if from >= to || to.millis_since(from) > MAX_SUMMARY_DAYS * 86_400_000 {
        return Err(invalid(format!("`from` must be before `to`, at most {MAX_SUMMARY_DAYS} days apart")));
    }
    let by_hour = match query.group_by.as_deref() {
        None | Some("meter") => false,
        Some("hour") => true,
        Some(other) => return Err(invalid(format!("`groupBy` must be `meter` or `hour`, not `{other}`"))),
    };
    let tenant = tenant_id.clone();
    let rows = state.store.read(move |reads| reads.usage_summary(&tenant, from, to, by_hour)).await?;
    let lines: Vec<SummaryLine> = rows
        .into_iter()
        .map(|row| {
            let billable = row.quantity + row.adjusted;
            SummaryLine {
                meter: row.meter,
                window_start: row.window_start,
                unit: row.meter.unit(),
                quantity: row.quantity,
                records: row.records,
                adjusted: row.adjusted,
                billable,
                amount: Amount::of(state, row.meter, billable),
            }
        })
        .collect();
    let micros = lines.iter().map(|l| l.amount.micros).sum();
    let currency = state.config.billing.prices.currency.clone();
    Ok(UsageSummary {
        tenant_id,
        from,
        to,
        group_by: if by_hour { "hour" } else { "meter" },
        lines,
        total: Amount { currency, micros, value: billing::format_micros(micros) },
    })
}

// ---- Adjustments --------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdjustmentRequest {
    pub tenant_id: String,
    pub meter: String,
    pub quantity: i64,
    pub occurred_at: String,
    pub reason: String,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdjustmentView {
    #[serde(flatten)]
    pub adjustment: AdjustmentCreated,
    pub window_start: Timestamp,
    pub event_id: String,
    pub stream_id: String,
}

const ADJUSTMENT_ROUTE: &str = "POST /v1/billing/adjustments";
const MAX_ADJUSTMENT: i64 = 1_000_000_000_000;

/// `POST /v1/billing/adjustments` (operators): a correction counted in the window of `occurredAt`;
/// a negative quantity is a credit. With an `Idempotency-Key`, a repeat answers the same adjustment.
pub async fn adjust(
    state: &AppState,
    principal: &Principal,
    request: AdjustmentRequest,
    idempotency_key: Option<String>,
) -> Result<AdjustmentView, AppError> {
    operator_of(principal, &request.tenant_id, || tenant_not_found(&request.tenant_id))?;
    let invalid = |message: &str| AppError::new(ErrorCode::ValidationFailed, message.to_owned());
    let meter = Meter::parse(&request.meter).ok_or_else(|| {
        let known: Vec<&str> = Meter::ALL.iter().map(|m| m.as_str()).collect();
        invalid(&format!("`meter` must be one of {known:?}"))
    })?;
    if request.quantity == 0 || request.quantity.abs() > MAX_ADJUSTMENT {
        return Err(invalid("`quantity` must be a non-zero integer within ±10^12 (negative is a credit)"));
    }
    let occurred_at =
        Timestamp::parse(&request.occurred_at).ok_or_else(|| invalid("`occurredAt` must be an RFC 3339 timestamp"))?;
    let reason = request.reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(invalid("`reason` must be 1–500 characters"));
    }
    idempotency::validate(idempotency_key.as_deref())?;
    let request_hash: [u8; 32] =
        Sha256::digest(to_canonical_string(&serde_json::to_value(&request).map_err(AppError::internal)?)).into();
    let adjustment = AdjustmentCreated {
        adjustment_id: billing::adjustment_id(
            &request.tenant_id,
            idempotency_key.as_deref(),
            &uuid::Uuid::now_v7().simple().to_string(),
        ),
        tenant_id: request.tenant_id.clone(),
        meter,
        quantity: request.quantity,
        unit: meter.unit().to_owned(),
        occurred_at,
        reason: reason.to_owned(),
        created_by: principal.user_id.as_str().to_owned(),
    };
    let principal = principal.clone();
    let retention = state.config.idempotency_retention_secs as i64;
    let answer = state
        .store
        .writer
        .execute(move |tx| -> Result<AdjustmentView, AppError> {
            let tenant = principal.tenant_id.as_str();
            let scope = |key| IdempotencyScope {
                tenant_id: tenant,
                user_id: principal.user_id.as_str(),
                route: ADJUSTMENT_ROUTE,
                key,
            };
            if let Some(key) = &idempotency_key {
                if let Some(answer) = idempotency::stored_answer(tx, scope(key), retention, &request_hash)? {
                    return Ok(answer);
                }
                // The answer expired but the adjustment the key names exists: never a second one.
                if tx.outbox_item(&adjustment.adjustment_id)?.is_some() {
                    return Err(AppError::new(
                        ErrorCode::IdempotencyKeyReused,
                        format!("this Idempotency-Key already created adjustment `{}`", adjustment.adjustment_id),
                    ));
                }
            }
            if occurred_at > tx.recorded_at() {
                return Err(AppError::new(ErrorCode::ValidationFailed, "`occurredAt` must not be in the future"));
            }
            let stream = billing::account_stream(tenant);
            let event_id = format!("adjustment:{}", adjustment.adjustment_id);
            let stored = append_fact(
                tx,
                tenant,
                &stream,
                &actor_of(&principal),
                "billing.adjustment.created",
                &event_id,
                &adjustment,
            )?;
            let view = AdjustmentView {
                window_start: Window::containing(occurred_at).start,
                event_id: stored.event_id,
                stream_id: stream,
                adjustment,
            };
            if let Some(key) = &idempotency_key {
                idempotency::store_answer(tx, scope(key), &request_hash, &view)?;
            }
            Ok(view)
        })
        .await?;
    state.billing_work.notify_one();
    Ok(answer)
}

// ---- A session's billing ------------------------------------------------------------------------

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BillingEvents {
    pub session_id: String,
    pub events: Vec<ServedEvent>,
}

/// `GET /v1/billing/sessions/{id}/events`: the session's `billing.*` events (its owner, and the
/// tenant's operators and services).
pub async fn session_events(
    state: &AppState,
    principal: &Principal,
    session_id: String,
) -> Result<BillingEvents, AppError> {
    visible_session(state, principal, session_id.clone()).await?;
    let stream = session_id.clone();
    let events = state.store.read(move |reads| reads.events_of_type(&stream, "billing.")).await?;
    Ok(BillingEvents { session_id, events: events.iter().map(StoredEvent::served).collect() })
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountEvents {
    pub tenant_id: String,
    /// The account stream (`acct:<tenantId>`) the events live on.
    pub stream_id: String,
    pub events: Vec<ServedEvent>,
}

/// `GET /v1/billing/accounts/{tenantId}/events`: the account's own billing events (adjustments and
/// their deliveries), for the tenant's operators and services.
pub async fn account_events(
    state: &AppState,
    principal: &Principal,
    tenant_id: String,
) -> Result<AccountEvents, AppError> {
    billing_reader(principal, &tenant_id, || tenant_not_found(&tenant_id))?;
    let stream_id = billing::account_stream(&tenant_id);
    let stream = stream_id.clone();
    let events = state.store.read(move |reads| reads.events_of_type(&stream, "billing.")).await?;
    Ok(AccountEvents { tenant_id, stream_id, events: events.iter().map(StoredEvent::served).collect() })
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterView {
    #[serde(flatten)]
    pub dead_letter: DeadLetterRow,
    /// Whether the item now stands delivered, pending again, or dead-lettered.
    pub outbox_state: Option<crate::store::OutboxState>,
}

/// `GET /v1/billing/accounts/{tenantId}/dead-letters`: the tenant's newest 200, open ones first.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountDeadLetters {
    pub tenant_id: String,
    pub dead_letters: Vec<DeadLetterView>,
}

pub async fn account_dead_letters(
    state: &AppState,
    principal: &Principal,
    tenant_id: String,
) -> Result<AccountDeadLetters, AppError> {
    billing_reader(principal, &tenant_id, || tenant_not_found(&tenant_id))?;
    let tenant = tenant_id.clone();
    let dead_letters = state
        .store
        .read(move |reads| -> Result<_, AppError> {
            reads.tenant_dead_letters(&tenant, 200)?.into_iter().map(|d| dead_letter_view(reads, d)).collect()
        })
        .await?;
    Ok(AccountDeadLetters { tenant_id, dead_letters })
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterList {
    pub session_id: String,
    pub dead_letters: Vec<DeadLetterView>,
}

fn dead_letter_view(reads: &dyn Reads, dead_letter: DeadLetterRow) -> Result<DeadLetterView, AppError> {
    let outbox_state = reads.outbox_item(&dead_letter.outbox_id)?.map(|o| o.state);
    Ok(DeadLetterView { dead_letter, outbox_state })
}

/// `GET /v1/billing/sessions/{id}/dead-letters` (the tenant's operators and services).
pub async fn session_dead_letters(
    state: &AppState,
    principal: &Principal,
    session_id: String,
) -> Result<DeadLetterList, AppError> {
    let record = visible_session(state, principal, session_id.clone()).await?;
    billing_reader(principal, &record.tenant_id, || super::session_not_found(&session_id))?;
    let stream = session_id.clone();
    let dead_letters = state
        .store
        .read(move |reads| -> Result<_, AppError> {
            reads.dead_letters(&stream)?.into_iter().map(|d| dead_letter_view(reads, d)).collect()
        })
        .await?;
    Ok(DeadLetterList { session_id, dead_letters })
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplayAnswer {
    #[serde(flatten)]
    pub dead_letter: DeadLetterView,
    /// False when the dead letter had already been replayed (nothing was done again).
    pub replayed: bool,
}

/// `POST /v1/billing/dead-letters/{id}/replay` (operators): send the item back to the outbox with a
/// fresh attempt budget. Replaying twice replays once.
pub async fn replay_dead_letter(
    state: &AppState,
    principal: &Principal,
    dead_letter_id: String,
) -> Result<ReplayAnswer, AppError> {
    let principal = principal.clone();
    let answer = state
        .store
        .writer
        .execute(move |tx| -> Result<ReplayAnswer, AppError> {
            let found = tx.dead_letter(&dead_letter_id)?.ok_or_else(|| dead_letter_not_found(&dead_letter_id))?;
            operator_of(&principal, &found.tenant_id, || dead_letter_not_found(&dead_letter_id))?;
            if found.replayed_at.is_some() {
                return Ok(ReplayAnswer { dead_letter: dead_letter_view(tx, found)?, replayed: false });
            }
            let replayed = PublishReplayed {
                dead_letter_id: found.dead_letter_id.clone(),
                outbox_id: found.outbox_id.clone(),
                replayed_by: principal.user_id.as_str().to_owned(),
            };
            let event_id = format!("replay:{}", found.dead_letter_id);
            append_fact(
                tx,
                &found.tenant_id,
                &found.stream_id,
                &actor_of(&principal),
                "billing.publish.replayed",
                &event_id,
                &replayed,
            )?;
            tx.clear_attempts(DeliveryKind::Outbox, &found.outbox_id)?;
            let now = tx.dead_letter(&dead_letter_id)?.ok_or_else(|| dead_letter_not_found(&dead_letter_id))?;
            Ok(ReplayAnswer { dead_letter: dead_letter_view(tx, now)?, replayed: true })
        })
        .await?;
    state.billing_work.notify_one();
    Ok(answer)
}

// ---- Trace --------------------------------------------------------------------------------------

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TracedRun {
    #[serde(flatten)]
    pub run: RunRow,
    /// The mismatch of the record's meter, if the run found one, with its alert.
    pub mismatch_details: Vec<MismatchRow>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Trace {
    pub usage: UsageView,
    /// Every billing event about this record, in log order: recorded, confirmed, dead-lettered,
    /// replayed.
    pub events: Vec<ServedEvent>,
    /// The outbox's retry bookkeeping while a delivery is pending.
    pub pending_attempts: Option<AttemptRow>,
    pub dead_letters: Vec<DeadLetterRow>,
    /// The runs over the record's window, newest first, each with its mismatches and alerts.
    pub runs: Vec<TracedRun>,
}

/// `GET /v1/billing/trace/{usageId}`: usage → billing events → deliveries → reconciliation runs →
/// mismatches and alerts.
pub async fn trace(state: &AppState, principal: &Principal, usage_id: String) -> Result<Trace, AppError> {
    let id = usage_id.clone();
    let row = state.store.read(move |reads| reads.usage(&id)).await?.ok_or_else(|| usage_not_found(&usage_id))?;
    let record = row.recorded.record.clone();
    billing_reader(principal, &record.tenant_id, || usage_not_found(&usage_id))?;
    let window = Window::containing(record.occurred_at);
    let (events, delivery, pending_attempts, dead_letters, runs) = state
        .store
        .read(move |reads| -> Result<_, AppError> {
            let about = |event: &StoredEvent| {
                let payload: Value = serde_json::from_str(&event.payload).unwrap_or(Value::Null);
                [payload.get("usageId"), payload.get("outboxId")].into_iter().flatten().any(|v| v == &record.usage_id)
            };
            let events: Vec<ServedEvent> = reads
                .events_of_type(&record.session_id, "billing.")?
                .iter()
                .filter(|e| about(e))
                .map(StoredEvent::served)
                .collect();
            let dead_letters: Vec<DeadLetterRow> = reads
                .dead_letters(&record.session_id)?
                .into_iter()
                .filter(|d| d.outbox_id == record.usage_id)
                .collect();
            let mut runs = Vec::new();
            for run in reads.runs(&record.tenant_id, Some(window), u64::MAX, 100)? {
                let mismatches =
                    reads.mismatches(&run.run_id)?.into_iter().filter(|m| m.meter == record.meter).collect();
                runs.push(TracedRun { run, mismatch_details: mismatches });
            }
            Ok((
                events,
                reads.outbox_item(&record.usage_id)?,
                reads.attempts(DeliveryKind::Outbox, &record.usage_id)?,
                dead_letters,
                runs,
            ))
        })
        .await?;
    Ok(Trace { usage: usage_view(state, row, delivery), events, pending_attempts, dead_letters, runs })
}

/// What a sink receives for a billing event or an alert (Standard Webhooks' `type`, `timestamp`,
/// `data`).
#[derive(Serialize, schemars::JsonSchema)]
struct SinkMessage<'a> {
    #[serde(rename = "type")]
    event_type: &'a str,
    timestamp: Timestamp,
    data: &'a Value,
}

pub fn sink_body(event_type: &str, timestamp: Timestamp, data: &Value) -> String {
    serde_json::to_string(&SinkMessage { event_type, timestamp, data }).unwrap_or_default()
}
