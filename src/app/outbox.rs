//! The billing outbox publisher and the alert worker: at-least-once delivery of what the log
//! holds, with the retry schedule persisted outside the log and every outcome appended as an event.
//!
//! A batch is claimed, delivered concurrently (the same `webhook-id` on every attempt of an item,
//! so a sink de-duplicates), and its outcomes are written in one transaction that first checks each
//! item is still pending: a replay or a concurrent worker never makes an item count twice.
//!
//! Every node runs these workers. The claim is a write: it pushes each item's next attempt past a
//! lease, in a transaction serialized with every other node's (the append lock on PostgreSQL), so
//! no two nodes attempt one item at once, and a node that dies mid-pass leaves its items to the
//! others when the lease ends.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::task::JoinSet;

use super::AppState;
use super::billing::{append_fact, sink_body};
use crate::domain::billing::{
    self, AlertDeadLettered, AlertDelivered, Attempt, ChargeConfirmed, NextStep, PublishDeadLettered, RetryPolicy,
    Window,
};
use crate::domain::principal::{Principal, Role};
use crate::error::{AppError, ErrorCode};
use crate::store::log::Actor;
use crate::store::{AttemptRow, DeliveryKind, DueDelivery, MismatchRow, OutboxState, WriteUnit};

/// Items delivered per batch (and per transaction recording their outcomes).
const BATCH: u64 = 256;
/// Deliveries in flight at once to an HTTP sink.
const CONCURRENCY: usize = 32;

/// What one pass over the outbox did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pass {
    pub confirmed: u32,
    pub retrying: u32,
    pub dead_lettered: u32,
}

impl Pass {
    fn total(self) -> u32 {
        self.confirmed + self.retrying + self.dead_lettered
    }
}

/// Run the publisher until the process stops: deliver what is due, then sleep until woken or the
/// poll interval passes (a retry comes due on the clock, which a test may move).
pub async fn run_publisher(state: AppState) {
    let poll = Duration::from_millis(state.config.billing.poll_ms);
    let workers = state.workers.clone();
    let _running = workers.outbox.enter();
    let mut stopping = workers.stopping();
    // A pass in flight is finished (its outcomes recorded) before the loop looks at `stopping`.
    while !workers.is_stopping() {
        let result = publish_due(&state).await;
        workers.outbox.passed(state.clock.now());
        match result {
            Ok(pass) if pass.total() as u64 >= BATCH => continue,
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "billing outbox pass failed; retrying at the next poll"),
        }
        tokio::select! {
            _ = state.billing_work.notified() => {}
            _ = tokio::time::sleep(poll) => {}
            _ = stopping.wait_for(|stop| *stop) => {}
        }
    }
    tracing::info!("billing outbox stopped");
}

/// How long claimed items are left to the node that claimed them: twice the longest its attempts
/// can take (`rounds` of one timeout each), and at least a minute.
fn claim_lease(timeout_ms: u64, rounds: usize) -> i64 {
    let longest = timeout_ms.saturating_mul(rounds.max(1) as u64);
    longest.saturating_mul(2).max(60_000).min(i64::MAX as u64) as i64
}

/// Give the deliveries claimed by nodes that have ended back to the queue, so they are attempted
/// now rather than when their lease runs out (`store::postgres::liveness`). A read first, so a
/// pass writes only when another node holds claims; the liveness check errs towards "running".
async fn release_claims_of_ended_nodes(state: &AppState) -> Result<(), AppError> {
    let now = state.clock.now();
    let this_node = state.store.node_id().to_owned();
    let mut claimants = state.store.read(move |reads| reads.delivery_claimants(now)).await?;
    claimants.retain(|node| *node != this_node);
    if claimants.is_empty() {
        return Ok(());
    }
    let released = state
        .store
        .writer
        .execute(move |tx| {
            let mut released = Vec::new();
            for node in claimants {
                if !tx.node_is_running(&node)? {
                    let items = tx.release_delivery_claims(&node)?;
                    released.push((node, items));
                }
            }
            Ok::<_, AppError>(released)
        })
        .await?;
    for (node, items) in released.into_iter().filter(|(_, items)| *items > 0) {
        tracing::info!(node = %node, items, "released the delivery claims of a node that has ended");
    }
    Ok(())
}

/// Deliver one batch of due outbox items and record the outcomes.
pub async fn publish_due(state: &AppState) -> Result<Pass, AppError> {
    release_claims_of_ended_nodes(state).await?;
    let now = state.clock.now();
    // A read first, so an idle worker does not write.
    if state.store.read(move |reads| reads.outbox_due(now, 1)).await?.is_empty() {
        return Ok(Pass::default());
    }
    let lease = claim_lease(state.config.billing.timeout_ms, (BATCH as usize).div_ceil(CONCURRENCY));
    let node = state.store.node_id().to_owned();
    let due = state
        .store
        .writer
        .execute(move |tx| {
            let now = tx.recorded_at();
            let due = tx.outbox_due(now, BATCH)?;
            for item in &due {
                tx.claim_delivery(DeliveryKind::Outbox, &item.item.outbox_id, now.plus_millis(lease), &node)?;
            }
            Ok::<_, AppError>(due)
        })
        .await?;
    if due.is_empty() {
        return Ok(Pass::default());
    }
    let attempts = deliver_all(state, due).await;
    let policy = state.config.billing.retry;
    state
        .store
        .writer
        .execute(move |tx| {
            let mut pass = Pass::default();
            for (due, sink, attempt) in attempts {
                if let Some(settled) = record_delivery(tx, &policy, &due, sink, attempt)? {
                    pass.count(settled);
                }
            }
            Ok::<_, AppError>(pass)
        })
        .await
}

async fn deliver_all(state: &AppState, due: Vec<DueDelivery>) -> Vec<(DueDelivery, &'static str, Attempt)> {
    let Some(sink) = state.config.billing.sink.clone() else {
        // The internal ledger: the charge is confirmed as it is handed over.
        return due
            .into_iter()
            .map(|d| {
                let charge_id = billing::ledger_charge_id(&d.item.outbox_id);
                (d, "ledger", Attempt::Accepted { charge_id })
            })
            .collect();
    };
    let mut results = Vec::with_capacity(due.len());
    let mut pending = due.into_iter();
    let mut running = JoinSet::new();
    loop {
        while running.len() < CONCURRENCY {
            let Some(item) = pending.next() else { break };
            let (client, sink, clock) = (state.actions.trusted_client(), sink.clone(), state.clock.clone());
            let timeout_ms = state.config.billing.timeout_ms;
            running.spawn(async move {
                let data: Value = serde_json::from_str(&item.payload).unwrap_or(Value::Null);
                let body = sink_body(&item.event_type, clock.now(), &data);
                let attempt =
                    crate::orchestration::sink::post(&client, &sink, &clock, timeout_ms, &item.item.outbox_id, &body)
                        .await;
                (item, "http", attempt)
            });
        }
        match running.join_next().await {
            Some(Ok(result)) => results.push(result),
            Some(Err(err)) => tracing::error!(error = %err, "a billing delivery task failed"),
            None => break,
        }
    }
    results
}

fn jitter() -> f64 {
    rand::rng().random_range(0.0..=1.0)
}

/// How an attempt left its item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    Confirmed,
    Retrying,
    DeadLettered,
}

impl Pass {
    fn count(&mut self, settled: Settled) {
        match settled {
            Settled::Confirmed => self.confirmed += 1,
            Settled::Retrying => self.retrying += 1,
            Settled::DeadLettered => self.dead_lettered += 1,
        }
    }
}

/// Carry out the retry policy's step for attempt `number` of a delivery item: append its outcome
/// (`confirm` or `dead_letter`) and end its bookkeeping, or persist when it is due again.
fn settle(
    tx: &mut dyn WriteUnit,
    kind: DeliveryKind,
    item_id: &str,
    number: u32,
    step: NextStep,
    confirm: impl FnOnce(&mut dyn WriteUnit, String) -> Result<(), AppError>,
    dead_letter: impl FnOnce(&mut dyn WriteUnit, &'static str, ErrorCode, String) -> Result<(), AppError>,
) -> Result<Settled, AppError> {
    match step {
        NextStep::Confirm { charge_id } => {
            confirm(tx, charge_id)?;
            tx.clear_attempts(kind, item_id)?;
            Ok(Settled::Confirmed)
        }
        NextStep::RetryAt { at, error_code, message } => {
            let row = AttemptRow {
                attempts: number,
                next_attempt_at: at,
                last_error_code: Some(error_code.as_str().to_owned()),
                last_error: Some(message),
            };
            tx.save_attempts(kind, item_id, &row)?;
            Ok(Settled::Retrying)
        }
        NextStep::DeadLetter { stage, error_code, message } => {
            dead_letter(tx, stage, error_code, message)?;
            tx.clear_attempts(kind, item_id)?;
            Ok(Settled::DeadLettered)
        }
    }
}

fn record_delivery(
    tx: &mut dyn WriteUnit,
    policy: &RetryPolicy,
    due: &DueDelivery,
    sink: &str,
    attempt: Attempt,
) -> Result<Option<Settled>, AppError> {
    let item = &due.item;
    let Some(current) = tx.outbox_item(&item.outbox_id)? else { return Ok(None) };
    if current.state != OutboxState::Pending {
        return Ok(None);
    }
    let number = due.attempts + 1;
    // One delivery generation per dead letter: a replayed item's events get new ids.
    let generation = current.dead_letters;
    let step = policy.next_step(number, attempt, tx.recorded_at(), jitter());
    let (tenant, stream, actor) = (&item.tenant_id, &item.stream_id, Actor::system());
    let settled = settle(
        tx,
        DeliveryKind::Outbox,
        &item.outbox_id,
        number,
        step,
        |tx, charge_id| {
            let confirmed = ChargeConfirmed {
                charge_id,
                outbox_id: item.outbox_id.clone(),
                kind: item.kind,
                tenant_id: item.tenant_id.clone(),
                meter: item.meter,
                quantity: item.quantity,
                occurred_at: item.occurred_at,
                sink: sink.to_owned(),
                attempts: number,
            };
            let event_id = format!("charge:{}:{generation}", item.outbox_id);
            append_fact(tx, tenant, stream, &actor, "billing.charge.confirmed", &event_id, &confirmed).map(drop)
        },
        |tx, stage, error_code, message| {
            let dead = PublishDeadLettered {
                dead_letter_id: billing::dead_letter_id(&item.outbox_id, generation + 1),
                outbox_id: item.outbox_id.clone(),
                kind: item.kind,
                event_ref: item.event_ref.clone(),
                error_code: error_code.as_str().to_owned(),
                stage: stage.to_owned(),
                attempts: number,
                last_error: Some(message),
            };
            let event_id = format!("dead-letter:{}", dead.dead_letter_id);
            append_fact(tx, tenant, stream, &actor, "billing.publish.dead_lettered", &event_id, &dead).map(drop)
        },
    )?;
    Ok(Some(settled))
}

// ---- Alerts -------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeliverAlerts {
    pub dry_run: Option<bool>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertDelivery {
    pub dry_run: bool,
    /// False when CALLSTREAM_ALERT_SINK_URL is not set: alerts stay pending on their runs.
    pub sink_configured: bool,
    /// The alerts that were due (all of them on a dry run).
    pub due: Vec<MismatchRow>,
    pub delivered: u32,
    pub retrying: u32,
    pub dead_lettered: u32,
}

/// `POST /v1/billing/reconciliation/alerts/deliver {dryRun?}` (operators and services): deliver the
/// due alerts of the caller's tenant now; a dry run only lists them.
pub async fn deliver_alerts_now(
    state: &AppState,
    principal: &Principal,
    request: DeliverAlerts,
) -> Result<AlertDelivery, AppError> {
    if !(principal.has(Role::Operator) || principal.has(Role::Service)) {
        return Err(AppError::new(ErrorCode::ForbiddenRole, "alerts are delivered by operators and services"));
    }
    deliver_alerts(state, Some(principal.tenant_id.as_str()), request.dry_run.unwrap_or(false)).await
}

/// Deliver the due alerts (of one tenant, or of all for the scheduler).
pub async fn deliver_alerts(
    state: &AppState,
    tenant_id: Option<&str>,
    dry_run: bool,
) -> Result<AlertDelivery, AppError> {
    if !dry_run {
        release_claims_of_ended_nodes(state).await?;
    }
    let now = state.clock.now();
    let mut due = state.store.read(move |reads| reads.alerts_due(now, BATCH)).await?;
    due.retain(|(alert, _)| tenant_id.is_none_or(|t| alert.tenant_id == t));
    let sink = state.config.billing.alert_sink.clone();
    if sink.is_some() && !dry_run && !due.is_empty() {
        // Claimed, as the outbox's items are; alerts go one at a time.
        let lease = claim_lease(state.config.billing.timeout_ms, due.len());
        let tenant_id = tenant_id.map(str::to_owned);
        let node = state.store.node_id().to_owned();
        due = state
            .store
            .writer
            .execute(move |tx| {
                let now = tx.recorded_at();
                let mut due = tx.alerts_due(now, BATCH)?;
                due.retain(|(alert, _)| tenant_id.as_deref().is_none_or(|t| alert.tenant_id == t));
                for (alert, _) in &due {
                    tx.claim_delivery(DeliveryKind::Alert, &alert.alert_id, now.plus_millis(lease), &node)?;
                }
                Ok::<_, AppError>(due)
            })
            .await?;
    }
    let mut answer = AlertDelivery {
        dry_run,
        sink_configured: sink.is_some(),
        due: due.iter().map(|(alert, _)| alert.clone()).collect(),
        delivered: 0,
        retrying: 0,
        dead_lettered: 0,
    };
    let Some(sink) = sink.filter(|_| !dry_run && !due.is_empty()) else { return Ok(answer) };
    let client = state.actions.trusted_client();
    let mut outcomes = Vec::with_capacity(due.len());
    for (alert, attempts) in due {
        let data = serde_json::to_value(&alert).map_err(AppError::internal)?;
        let body = sink_body("billing.reconciliation.mismatch_detected", state.clock.now(), &data);
        let attempt = crate::orchestration::sink::post(
            &client,
            &sink,
            &state.clock,
            state.config.billing.timeout_ms,
            &alert.alert_id,
            &body,
        )
        .await;
        outcomes.push((alert, attempts, attempt));
    }
    let policy = state.config.billing.retry;
    let pass = state
        .store
        .writer
        .execute(move |tx| {
            let mut pass = Pass::default();
            for (alert, attempts, attempt) in outcomes {
                if let Some(settled) = record_alert(tx, &policy, &alert, attempts, attempt)? {
                    pass.count(settled);
                }
            }
            Ok::<_, AppError>(pass)
        })
        .await?;
    answer.delivered = pass.confirmed;
    answer.retrying = pass.retrying;
    answer.dead_lettered = pass.dead_lettered;
    Ok(answer)
}

fn record_alert(
    tx: &mut dyn WriteUnit,
    policy: &RetryPolicy,
    alert: &MismatchRow,
    attempts: u32,
    attempt: Attempt,
) -> Result<Option<Settled>, AppError> {
    let still_pending = tx
        .mismatches(&alert.run_id)?
        .into_iter()
        .any(|m| m.alert_id == alert.alert_id && m.alert_state == crate::store::AlertState::Pending);
    if !still_pending {
        return Ok(None);
    }
    let number = attempts + 1;
    let stream = billing::reconciliation_stream(&alert.tenant_id, Window { start: alert.window_start });
    let (tenant, actor) = (&alert.tenant_id, Actor::system());
    let step = policy.next_step(number, attempt, tx.recorded_at(), jitter());
    let settled = settle(
        tx,
        DeliveryKind::Alert,
        &alert.alert_id,
        number,
        step,
        |tx, _| {
            let delivered =
                AlertDelivered { alert_id: alert.alert_id.clone(), run_id: alert.run_id.clone(), attempts: number };
            let event_id = format!("alert-delivered:{}", alert.alert_id);
            append_fact(tx, tenant, &stream, &actor, "billing.alert.delivered", &event_id, &delivered).map(drop)
        },
        |tx, _, error_code, message| {
            let dead = AlertDeadLettered {
                alert_id: alert.alert_id.clone(),
                run_id: alert.run_id.clone(),
                attempts: number,
                error_code: error_code.as_str().to_owned(),
                last_error: Some(message),
            };
            let event_id = format!("alert-dead-letter:{}", alert.alert_id);
            append_fact(tx, tenant, &stream, &actor, "billing.alert.dead_lettered", &event_id, &dead).map(drop)
        },
    )?;
    Ok(Some(settled))
}
