//! Hourly reconciliation: per tenant × meter × UTC hour, what was metered against what the billing
//! sink confirmed, once the window and its lateness allowance have passed. A window's run is
//! idempotent (a repeat answers the same run); `rerun` makes a new revision that sees late data.
//! The scheduler triggers each newly closed window and delivers alerts.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::AppState;
use super::billing::append_fact;
use super::tenants::audit_entry;
use crate::domain::billing::{self, MismatchDetected, ReconciliationCompleted, Window};
use crate::domain::principal::{Principal, Role};
use crate::domain::time::Timestamp;
use crate::error::{AppError, ErrorCode};
use crate::store::log::Actor;
use crate::store::{MismatchRow, RunRow, SchedulerRow, WriteUnit};

/// The most windows one scheduler pass catches up on after being off or down.
const MAX_CATCH_UP_WINDOWS: i64 = 48;

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TriggerRequest {
    pub window_start: Option<String>,
    pub tenant_id: Option<String>,
    pub rerun: Option<bool>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunView {
    #[serde(flatten)]
    pub run: RunRow,
    /// Each disagreeing meter and the state of the alert it raised.
    pub mismatch_details: Vec<MismatchRow>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerAnswer {
    /// False when the window's run already existed and is answered again.
    pub created: bool,
    #[serde(flatten)]
    pub run: RunView,
}

fn run_reader(principal: &Principal) -> Result<(), AppError> {
    if principal.has(Role::Operator) || principal.has(Role::Service) {
        Ok(())
    } else {
        Err(AppError::new(ErrorCode::ForbiddenRole, "reconciliation is for operators and services"))
    }
}

fn run_not_found(run_id: &str) -> AppError {
    AppError::new(ErrorCode::RunNotFound, format!("reconciliation run `{run_id}` was not found"))
}

/// `POST /v1/billing/reconciliation/hourly-trigger {windowStart?, tenantId?, rerun?}`: reconcile the
/// caller's tenant over `windowStart` (default: the newest closed window).
pub async fn trigger(
    state: &AppState,
    principal: &Principal,
    request: TriggerRequest,
) -> Result<TriggerAnswer, AppError> {
    run_reader(principal)?;
    let tenant_id = principal.tenant_id.as_str().to_owned();
    if let Some(requested) = &request.tenant_id
        && *requested != tenant_id
    {
        return Err(AppError::new(ErrorCode::TenantNotFound, format!("tenant `{requested}` was not found")));
    }
    let lateness = state.config.billing.lateness_secs;
    let now = state.clock.now();
    let window = match &request.window_start {
        Some(raw) => Window::starting_at(raw).map_err(|why| AppError::new(ErrorCode::ValidationFailed, why))?,
        None => Window::latest_closed(now, lateness),
    };
    if !window.is_closed(now, lateness) {
        let closes_at = window.closes_at(lateness);
        let wait = (closes_at.millis_since(now) + 999) / 1000;
        return Err(AppError::new(
            ErrorCode::WindowNotClosed,
            format!("the window {window} can be reconciled from {closes_at} (its end plus {lateness} s of lateness)"),
        )
        .with_details(json!({ "windowStart": window.start, "closesAt": closes_at, "retryAfterSecs": wait })));
    }
    let trigger = if principal.has(Role::Operator) { "operator" } else { "service" };
    let rerun = request.rerun.unwrap_or(false);
    let answer = state
        .store
        .writer
        .execute(move |tx| {
            let (run, created) = reconcile_window(tx, &tenant_id, window, rerun, trigger)?;
            let mismatches = tx.mismatches(&run.run_id)?;
            Ok::<_, AppError>(TriggerAnswer { created, run: RunView { run, mismatch_details: mismatches } })
        })
        .await?;
    Ok(answer)
}

/// Reconcile one tenant's window in the open transaction: the existing run unless `rerun`, else a
/// new revision with a mismatch event (and its alert) per disagreeing meter.
pub fn reconcile_window(
    tx: &mut dyn WriteUnit,
    tenant_id: &str,
    window: Window,
    rerun: bool,
    trigger: &str,
) -> Result<(RunRow, bool), AppError> {
    let latest = tx.latest_run(tenant_id, window)?;
    if let Some(run) = latest.as_ref().filter(|_| !rerun) {
        return Ok((run.clone(), false));
    }
    let revision = latest.map_or(1, |run| run.revision + 1);
    let run_id = billing::run_id(tenant_id, window, revision);
    let lines = billing::reconcile(&tx.window_totals(tenant_id, window)?);
    let stream = billing::reconciliation_stream(tenant_id, window);
    let actor = Actor::system();
    let mut mismatches = 0;
    for line in lines.iter().filter(|line| line.delta != 0) {
        mismatches += 1;
        let mismatch = MismatchDetected {
            run_id: run_id.clone(),
            alert_id: billing::alert_id(&run_id, line.meter),
            tenant_id: tenant_id.to_owned(),
            window_start: window.start,
            meter: line.meter,
            metered: line.metered,
            charged: line.charged,
            adjusted: line.adjusted,
            delta: line.delta,
        };
        let event_id = format!("mismatch:{}", mismatch.alert_id);
        append_fact(tx, tenant_id, &stream, &actor, "billing.reconciliation.mismatch_detected", &event_id, &mismatch)?;
    }
    let completed = ReconciliationCompleted {
        run_id: run_id.clone(),
        tenant_id: tenant_id.to_owned(),
        window_start: window.start,
        window_end: window.end(),
        revision,
        trigger: trigger.to_owned(),
        comparisons: lines.len() as u32,
        mismatches,
        lines,
    };
    append_fact(
        tx,
        tenant_id,
        &stream,
        &actor,
        "billing.reconciliation.completed",
        &format!("run:{run_id}"),
        &completed,
    )?;
    let run = tx.run(&run_id)?.ok_or_else(|| AppError::internal_msg("the run vanished"))?;
    Ok((run, true))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunsQuery {
    pub window_start: Option<String>,
    pub limit: Option<u64>,
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunPage {
    pub runs: Vec<RunRow>,
    pub next_cursor: Option<String>,
}

/// `GET /v1/billing/reconciliation/runs?windowStart=&limit=&cursor=`: the tenant's runs, newest first.
pub async fn runs(state: &AppState, principal: &Principal, query: RunsQuery) -> Result<RunPage, AppError> {
    run_reader(principal)?;
    let invalid = |message: &str| AppError::new(ErrorCode::QueryInvalid, message.to_owned());
    let window = query
        .window_start
        .as_deref()
        .map(Window::starting_at)
        .transpose()
        .map_err(|why| AppError::new(ErrorCode::QueryInvalid, why))?;
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(invalid("`limit` must be between 1 and 100"));
    }
    let before = match &query.cursor {
        None => u64::MAX,
        Some(raw) => raw.parse::<u64>().map_err(|_| invalid("`cursor` is not a cursor from a previous page"))?,
    };
    let tenant = principal.tenant_id.as_str().to_owned();
    let runs = state.store.read(move |reads| reads.runs(&tenant, window, before, limit)).await?;
    let next_cursor = (runs.len() as u64 == limit).then(|| runs.last().map(|r| r.position.to_string())).flatten();
    Ok(RunPage { runs, next_cursor })
}

/// `GET /v1/billing/reconciliation/runs/{id}`: the run with its mismatches and their alerts.
pub async fn run(state: &AppState, principal: &Principal, run_id: String) -> Result<RunView, AppError> {
    run_reader(principal)?;
    let id = run_id.clone();
    let (run, mismatches) =
        state.store.read(move |reads| -> Result<_, AppError> { Ok((reads.run(&id)?, reads.mismatches(&id)?)) }).await?;
    let run = run.filter(|r| r.tenant_id == principal.tenant_id.as_str()).ok_or_else(|| run_not_found(&run_id))?;
    Ok(RunView { run, mismatch_details: mismatches })
}

// ---- Scheduler ----------------------------------------------------------------------------------

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulerView {
    pub enabled: bool,
    pub last_run_at: Option<Timestamp>,
    /// The newest window the scheduler reconciled.
    pub last_window: Option<Timestamp>,
    /// The window it triggers next.
    pub next_window: Timestamp,
    /// When it triggers next (only while enabled).
    pub next_run_at: Option<Timestamp>,
    pub last_error: Option<String>,
    pub lateness_secs: u64,
    pub poll_ms: u64,
}

fn next_window(row: &SchedulerRow, now: Timestamp, lateness: u64) -> Window {
    let latest = Window::latest_closed(now, lateness);
    let earliest = Window { start: latest.start.plus_seconds(-3600 * (MAX_CATCH_UP_WINDOWS - 1)) };
    match row.last_window {
        Some(last) => Window { start: last }.next().max(earliest),
        None => latest,
    }
}

fn scheduler_view(state: &AppState, row: SchedulerRow) -> SchedulerView {
    let lateness = state.config.billing.lateness_secs;
    let now = state.clock.now();
    let next = next_window(&row, now, lateness);
    SchedulerView {
        enabled: row.enabled,
        last_run_at: row.last_run_at,
        last_window: row.last_window,
        next_window: next.start,
        next_run_at: row.enabled.then(|| next.closes_at(lateness).max(now)),
        last_error: row.last_error,
        lateness_secs: lateness,
        poll_ms: state.config.billing.poll_ms,
    }
}

/// `GET /v1/billing/reconciliation/scheduler`
pub async fn scheduler(state: &AppState, principal: &Principal) -> Result<SchedulerView, AppError> {
    run_reader(principal)?;
    let row = state.store.read(|reads| reads.scheduler()).await?;
    Ok(scheduler_view(state, row))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SchedulerChange {
    pub enabled: bool,
}

/// `PUT /v1/billing/reconciliation/scheduler {enabled}` (operators; audited).
pub async fn set_scheduler(
    state: &AppState,
    principal: &Principal,
    change: SchedulerChange,
    request_id: String,
) -> Result<SchedulerView, AppError> {
    if !principal.has(Role::Operator) {
        return Err(AppError::new(ErrorCode::ForbiddenRole, "only operators switch the scheduler"));
    }
    let principal = principal.clone();
    let lateness = state.config.billing.lateness_secs;
    let row = state
        .store
        .writer
        .execute(move |tx| {
            let mut row = tx.scheduler()?;
            if row.enabled != change.enabled {
                row.enabled = change.enabled;
                if row.last_window.is_none() {
                    // Switched on for the first time: windows that close from now on are its work;
                    // older ones are reconciled by hand if needed.
                    row.last_window = Some(Window::latest_closed(tx.recorded_at(), lateness).start);
                }
                tx.save_scheduler(&row)?;
                let at = tx.recorded_at().to_rfc3339();
                let details = json!({ "enabled": change.enabled });
                let action = if change.enabled { "scheduler.enabled" } else { "scheduler.disabled" };
                tx.audit(&audit_entry(&principal, &at, action, "reconciliation-scheduler", details, &request_id))?;
            }
            Ok::<_, AppError>(row)
        })
        .await?;
    Ok(scheduler_view(state, row))
}

/// Run the scheduler until the process stops: while enabled, reconcile every billed tenant over
/// each window that closed since the last one, then deliver due alerts.
pub async fn run_scheduler(state: AppState) {
    let poll = Duration::from_millis(state.config.billing.poll_ms);
    let workers = state.workers.clone();
    let _running = workers.scheduler.enter();
    let mut stopping = workers.stopping();
    while !workers.is_stopping() {
        let result = scheduler_pass(&state).await;
        workers.scheduler.passed(state.clock.now());
        if let Err(err) = result {
            tracing::warn!(error = %err, "reconciliation scheduler pass failed");
            let message = err.to_string();
            let _ = state
                .store
                .writer
                .execute(move |tx| {
                    let mut row = tx.scheduler()?;
                    row.last_error = Some(message);
                    tx.save_scheduler(&row)
                })
                .await;
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = stopping.wait_for(|stop| *stop) => {}
        }
    }
    tracing::info!("reconciliation scheduler stopped");
}

/// One pass; answers the windows it reconciled.
pub async fn scheduler_pass(state: &AppState) -> Result<u32, AppError> {
    let row = state.store.read(|reads| reads.scheduler()).await?;
    if !row.enabled {
        return Ok(0);
    }
    let lateness = state.config.billing.lateness_secs;
    let now = state.clock.now();
    let latest = Window::latest_closed(now, lateness);
    let mut window = next_window(&row, now, lateness);
    let mut reconciled = 0;
    while window <= latest {
        let tenants = state.store.read(move |reads| reads.billed_tenants(window)).await?;
        // Each window in one transaction with the scheduler's progress: a restart resumes after the
        // last window it recorded, and a window's runs are idempotent besides.
        state
            .store
            .writer
            .execute(move |tx| {
                for tenant in &tenants {
                    reconcile_window(tx, tenant, window, false, "scheduler")?;
                }
                let mut row = tx.scheduler()?;
                row.last_window = Some(window.start);
                row.last_run_at = Some(tx.recorded_at());
                row.last_error = None;
                tx.save_scheduler(&row)?;
                Ok::<_, AppError>(())
            })
            .await?;
        reconciled += 1;
        window = window.next();
    }
    super::outbox::deliver_alerts(state, None, false).await?;
    Ok(reconciled)
}
