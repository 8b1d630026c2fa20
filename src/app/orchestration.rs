//! In-call actions: request → policy → (confirmation) → executor → outcome, every step an event.
//!
//! The decisions are `domain::action`'s; this module loads the action, asks the domain, appends what
//! it decided and runs the executor under the claim (`orchestration.action.started`) that the
//! domain appended. Concurrent requests for one actionId inside this process wait for the first
//! and then read its ack; one on another node finds the claim (409 `ACTION_IN_PROGRESS` while
//! that node still runs and its lease lasts). An action whose claimant is gone is never run again:
//! `EXECUTION_INTERRUPTED`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use super::sessions::actor_of;
use super::{AppState, session_denied, session_not_found};
use crate::config::OrchestrationConfig;
use crate::domain::action::{
    Ack, Action, ActionEvent, ActionState, Node, PolicyRef, PresentedConfirmation, Request, Step,
};
use crate::domain::envelope::server_event;
use crate::domain::event_types::EventType;
use crate::domain::ids::{EventId, SessionId};
use crate::domain::policy::{Usage, Verdict};
use crate::domain::principal::{Ownership, Principal, SessionAccess};
use crate::domain::time::Timestamp;
use crate::error::{AppError, ErrorCode};
use crate::orchestration::confirm::{self, Confirmation};
use crate::orchestration::executors::{self, Executor, Outcome};
use crate::store::StoreError;
use crate::store::WriteUnit;

/// This node's identity for claims, the outbound clients, and the requests for one actionId that
/// wait here for the one running it (the claim in the log is what excludes other nodes).
#[derive(Clone)]
pub struct ActionRuntime {
    in_flight: Arc<Mutex<HashMap<String, watch::Receiver<bool>>>>,
    outbound: crate::orchestration::outbound::Outbound,
    node: Arc<Node>,
}

impl ActionRuntime {
    /// The HTTP client for operator-configured targets (sinks), which need no allowlist.
    pub fn trusted_client(&self) -> reqwest::Client {
        self.outbound.trusted.clone()
    }

    /// The HTTP client for allowlisted targets (private addresses only where the allowlist names them).
    pub fn guarded_client(&self) -> reqwest::Client {
        self.outbound.guarded.clone()
    }

    /// `node_id`: this process among the nodes of its store (`Store::node_id`).
    pub fn new(config: &OrchestrationConfig, node_id: &str) -> Result<ActionRuntime, reqwest::Error> {
        // The lease outlasts the slowest delivery by a margin, so a live claim is never taken over.
        let lease_secs = executors::longest_delivery(config).as_secs() as i64 + 30;
        Ok(ActionRuntime {
            in_flight: Arc::default(),
            outbound: crate::orchestration::outbound::Outbound::new(&config.policy.allowlist)?,
            node: Arc::new(Node { id: node_id.to_owned(), lease_secs }),
        })
    }
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExecuteRequest {
    pub action_id: String,
    pub session_id: String,
    #[serde(rename = "type")]
    pub action_type: String,
    pub params: Map<String, Value>,
    pub confirmation_token: Option<String>,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DecisionRequest {
    pub action_id: String,
    pub decision: String,
}

/// What `execute` answers (SPEC §4).
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionAnswer {
    pub action_id: String,
    pub ack: Ack,
}

fn answer(action_id: &str, ack: &Ack) -> ActionAnswer {
    ActionAnswer { action_id: action_id.to_owned(), ack: ack.clone() }
}

/// What the owner's decision answers: a confirmation token to run the action with, or the
/// blocked ack.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(tag = "decision", rename_all = "camelCase")]
pub enum DecisionAnswer {
    #[serde(rename = "approve", rename_all = "camelCase")]
    Approved { action_id: String, confirmation_token: String, expires_at: String },
    #[serde(rename = "reject", rename_all = "camelCase")]
    Rejected { action_id: String, ack: Ack },
}

/// `GET /v1/orchestration/actions/{actionId}`.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionView {
    pub action_id: String,
    pub session_id: String,
    #[serde(rename = "type")]
    pub action_type: String,
    pub params: Map<String, Value>,
    pub status: ActionState,
    /// Present once there is an answer: pending, or final.
    pub ack: Option<Ack>,
    pub requested_by: String,
    pub created_at: String,
    pub updated_at: String,
    /// Every orchestration and safety event about the action, in log order.
    pub history: Vec<crate::store::log::ServedEvent>,
}

/// Removes the in-flight entry and wakes waiters however the leader ends (even if cancelled).
struct Lead {
    runtime: ActionRuntime,
    key: String,
    done: watch::Sender<bool>,
}

impl Drop for Lead {
    fn drop(&mut self) {
        self.runtime.in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.key);
        let _ = self.done.send(true);
    }
}

/// `POST /v1/orchestration/actions/execute`.
#[tracing::instrument(skip_all, fields(action_id = %request.action_id), err)]
pub async fn execute(
    state: &AppState,
    principal: &Principal,
    request: ExecuteRequest,
) -> Result<ActionAnswer, AppError> {
    EventId::parse(&request.action_id)
        .map_err(|why| AppError::new(ErrorCode::ValidationFailed, format!("`actionId` {why}")))?;
    SessionId::parse(&request.session_id).map_err(|_| session_not_found(&request.session_id))?;
    let well_formed_type = !request.action_type.is_empty()
        && request.action_type.len() <= 64
        && request.action_type.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '_');
    if !well_formed_type {
        return Err(AppError::new(ErrorCode::ValidationFailed, "`type` must be 1–64 characters of [a-z0-9._]"));
    }
    let key = format!("{}/{}", principal.tenant_id, request.action_id);
    loop {
        // Either follow the request already running this actionId, or become its leader.
        let claim = {
            let mut in_flight = state.actions.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            match in_flight.get(&key) {
                Some(receiver) => Err(receiver.clone()),
                None => {
                    let (done, receiver) = watch::channel(false);
                    in_flight.insert(key.clone(), receiver);
                    Ok(Lead { runtime: state.actions.clone(), key: key.clone(), done })
                }
            }
        };
        match claim {
            Ok(lead) => {
                // The leader runs to completion even if its caller goes away.
                let (state, principal, request) = (state.clone(), principal.clone(), request.clone());
                let handle = actix_web::rt::spawn(crate::context::carry(async move {
                    let _lead = lead;
                    run(&state, &principal, request).await
                }));
                return handle.await.map_err(AppError::internal)?;
            }
            Err(mut receiver) => {
                let _ = receiver.wait_for(|done| *done).await;
            }
        }
    }
}

/// What the first write transaction leaves the request to do.
enum Began {
    Done(Ack),
    /// This node holds the claim: run the executor, then record the outcome.
    Run(Executor),
}

async fn run(state: &AppState, principal: &Principal, request: ExecuteRequest) -> Result<ActionAnswer, AppError> {
    let presented = match &request.confirmation_token {
        None => None,
        Some(token) => {
            let verified = confirm::verify(state.config.orchestration.signing_secret.expose(), token);
            let presented = verified.and_then(|c| {
                Some(PresentedConfirmation {
                    expires_at: Timestamp::from_unix_seconds(c.expires_at)?,
                    action_id: c.action_id,
                    params_hash: c.params_hash,
                    id: c.nonce,
                })
            });
            Some(presented.ok_or_else(|| {
                AppError::new(
                    ErrorCode::ConfirmationTokenInvalid,
                    "the confirmation token is not one this server issued",
                )
            })?)
        }
    };
    let context = Arc::new(Context {
        principal: principal.clone(),
        request: Request {
            action_id: request.action_id.clone(),
            session_id: request.session_id.clone(),
            action_type: request.action_type.clone(),
            params: request.params,
            requested_by: principal.user_id.as_str().to_owned(),
        },
        policy: state.config.orchestration.policy.clone(),
        node: state.actions.node.clone(),
        metering: state.metering.clone(),
    });
    let begin_context = context.clone();
    let began = state.store.writer.execute(move |tx| begin(tx, &begin_context, presented.as_ref())).await?;
    let outcome = match began {
        Began::Done(ack) => return Ok(answer(&request.action_id, &ack)),
        Began::Run(Executor::Note) => None,
        Began::Run(Executor::Evaluate) => {
            let instructions = context.request.params.get("instructions").and_then(Value::as_str).map(str::to_owned);
            Some(super::insights::evaluate(state, &request.action_id, &request.session_id, instructions).await)
        }
        Began::Run(executor) => Some(
            executors::deliver(
                &state.config.orchestration,
                &state.actions.outbound,
                &state.clock,
                executor,
                &request.action_id,
                &Value::Object(context.request.params.clone()),
            )
            .await,
        ),
    };
    let finish_context = context.clone();
    let ack = state.store.writer.execute(move |tx| finish(tx, &finish_context, outcome)).await?;
    state.billing_work.notify_one();
    Ok(answer(&request.action_id, &ack))
}

struct Context {
    principal: Principal,
    request: Request,
    policy: crate::domain::policy::Policy,
    node: Arc<Node>,
    metering: super::billing::Metering,
}

impl Context {
    fn policy_ref(&self) -> PolicyRef {
        PolicyRef { id: self.policy.id.clone(), version: self.policy.version }
    }
}

/// Append an action's events to its session.
fn append(
    tx: &mut dyn WriteUnit,
    tenant_id: &str,
    session_id: &str,
    principal: &Principal,
    events: &[ActionEvent],
) -> Result<Vec<crate::store::log::StoredEvent>, AppError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let id = SessionId::parse(session_id).map_err(AppError::internal_msg)?;
    let now = tx.recorded_at().to_rfc3339();
    let mut new_events = Vec::with_capacity(events.len());
    for event in events {
        let (type_name, payload) = event.to_envelope_parts();
        let event_type = EventType::lookup(type_name)
            .ok_or_else(|| AppError::internal_msg(format!("{type_name} is not registered")))?;
        new_events.push(server_event(&id, event_type, payload, &now)?.into());
    }
    let (_, appended) = tx.append(tenant_id, session_id, &actor_of(principal), new_events)?;
    Ok(appended)
}

/// The action as the projection holds it after this transaction's appends.
fn current(tx: &dyn WriteUnit, tenant: &str, action_id: &str) -> Result<Action, AppError> {
    Ok(tx.action(tenant, action_id)?.ok_or_else(|| AppError::internal_msg("action vanished"))?.action)
}

fn begin(tx: &mut dyn WriteUnit, c: &Context, presented: Option<&PresentedConfirmation>) -> Result<Began, AppError> {
    let tenant = c.principal.tenant_id.as_str();
    let request = &c.request;
    let now = tx.recorded_at();
    // Only callers who may act on the session learn anything about its actions.
    let session = tx.session(&request.session_id)?.ok_or_else(|| session_not_found(&request.session_id))?;
    c.principal
        .session_writer(Ownership { tenant_id: &session.tenant_id, owner_id: &session.owner_id })
        .map_err(|denied| session_denied(denied, &request.session_id))?;
    let terminal = session.is_terminal();
    let step = match tx.action(tenant, &request.action_id)? {
        Some(row) => {
            let claimant_running = match row.action.claimant_elsewhere(&c.node) {
                Some(claimant) => tx.node_is_running(claimant)?,
                None => false,
            };
            request.again(&row.action, presented, &c.policy_ref(), terminal, &c.node, claimant_running, now)?
        }
        None => {
            if presented.is_some() {
                return Err(AppError::new(
                    ErrorCode::ConfirmationTokenMismatch,
                    "there is no pending action this token could confirm",
                ));
            }
            let executor = executors::executor_for(&request.action_type);
            if terminal && !executor.is_some_and(Executor::runs_after_the_call) {
                return Err(AppError::new(
                    ErrorCode::SessionTerminated,
                    format!("session `{}` is {}; it takes no actions", request.session_id, session.state),
                ));
            }
            let (in_session, last_minute) = tx.action_usage(&request.session_id, now.plus_seconds(-60))?;
            let usage = Usage { actions_in_session: in_session, actions_last_minute: last_minute };
            let params = Value::Object(request.params.clone());
            let mut verdict =
                c.policy.evaluate(&c.principal.roles, &request.action_type, &params, usage, executor.is_some());
            if let (Some(executor), Verdict::Approved { .. } | Verdict::NeedsConfirmation) = (executor, &verdict)
                && let Err(reason) = executors::validate_params(executor, &params)
            {
                verdict = Verdict::Blocked { code: ErrorCode::ParamsInvalid, reason };
            }
            let events = request.first(verdict, &c.policy_ref(), executor.is_some(), &c.node, now);
            let run = matches!(events.last(), Some(ActionEvent::Started { .. }));
            Step::Append { events, run }
        }
    };
    match step {
        Step::Answer(ack) => Ok(Began::Done(ack)),
        Step::Append { events, run } => {
            append(tx, tenant, &request.session_id, &c.principal, &events)?;
            let action = current(tx, tenant, &request.action_id)?;
            match executors::executor_for(&action.action_type) {
                Some(executor) if run => Ok(Began::Run(executor)),
                _ => Ok(Began::Done(action.ack)),
            }
        }
    }
}

/// Record the outcome under this node's claim. `None` means: the internal note executor, which
/// runs here, in the transaction that records it.
fn finish(tx: &mut dyn WriteUnit, c: &Context, outcome: Option<Outcome>) -> Result<Ack, AppError> {
    let tenant = c.principal.tenant_id.as_str();
    let action = current(tx, tenant, &c.request.action_id)?;
    let mut events = Vec::new();
    let outcome = outcome.unwrap_or_else(|| {
        let note_id = format!("note-{}", action.action_id);
        let text = action.params.get("text").and_then(Value::as_str).unwrap_or_default().to_owned();
        events.push(ActionEvent::NoteCreated { action_id: action.action_id.clone(), note_id: note_id.clone(), text });
        Outcome::Executed { outcome_ref: note_id.clone(), attempts: 1, result: json!({ "noteId": note_id }) }
    });
    let recorded = action.finish(&c.node, outcome);
    if recorded.is_empty() {
        tracing::warn!(action_id = %action.action_id, state = action.state.as_str(), "the claim was lost before the outcome was recorded");
        return Ok(action.ack);
    }
    events.extend(recorded);
    let appended = append(tx, tenant, &action.session_id, &c.principal, &events)?;
    super::billing::meter_appended(tx, &c.metering, &appended)?;
    Ok(current(tx, tenant, &action.action_id)?.ack)
}

/// `POST /v1/actions/decision`: the session owner approves (→ a single-use confirmation token) or
/// rejects (→ blocked for good).
#[tracing::instrument(skip_all, fields(action_id = %request.action_id), err)]
pub async fn decide(
    state: &AppState,
    principal: &Principal,
    request: DecisionRequest,
) -> Result<DecisionAnswer, AppError> {
    let approve = match request.decision.as_str() {
        "approve" => true,
        "reject" => false,
        _ => return Err(AppError::new(ErrorCode::ValidationFailed, "`decision` must be `approve` or `reject`")),
    };
    let principal = principal.clone();
    let secret = state.config.orchestration.signing_secret.expose().to_owned();
    let policy = state.config.orchestration.policy.clone();
    state
        .store
        .writer
        .execute(move |tx| {
            let tenant = principal.tenant_id.as_str().to_owned();
            let not_found =
                || AppError::new(ErrorCode::ActionNotFound, format!("action `{}` was not found", request.action_id));
            let action = tx.action(&tenant, &request.action_id)?.ok_or_else(not_found)?.action;
            let session = tx.session(&action.session_id)?.ok_or_else(not_found)?;
            match principal.session_access(Ownership { tenant_id: &session.tenant_id, owner_id: &session.owner_id }) {
                Ok(SessionAccess::Owner) => {}
                Ok(_) => {
                    return Err(AppError::new(
                        ErrorCode::ForbiddenRole,
                        "only the session's owner decides on its actions",
                    ));
                }
                Err(_) => return Err(not_found()),
            }
            let policy_ref = PolicyRef { id: policy.id.clone(), version: policy.version };
            let confirmation_id = format!("cf_{}", uuid::Uuid::new_v4().simple());
            let ttl = policy.confirmation_ttl_secs as i64;
            let events = action.decide_owner(approve, confirmation_id, ttl, &policy_ref, tx.recorded_at())?;
            append(tx, &tenant, &action.session_id, &principal, &events)?;
            let decided = current(tx, &tenant, &action.action_id)?;
            match (&decided.confirmation, approve) {
                (Some(confirmation), true) => {
                    let token = confirm::sign(
                        &secret,
                        &Confirmation {
                            action_id: decided.action_id.clone(),
                            params_hash: decided.params_hash.clone(),
                            expires_at: confirmation.expires_at.unix_seconds(),
                            nonce: confirmation.id.clone(),
                        },
                    );
                    Ok(DecisionAnswer::Approved {
                        action_id: decided.action_id.clone(),
                        confirmation_token: token,
                        expires_at: confirmation.expires_at.to_rfc3339_seconds(),
                    })
                }
                (None, true) => Err(AppError::internal_msg("an approval without a confirmation")),
                (_, false) => Ok(DecisionAnswer::Rejected { action_id: decided.action_id, ack: decided.ack }),
            }
        })
        .await
}

/// `GET /v1/orchestration/actions/{actionId}`: the action and its whole history.
#[tracing::instrument(skip_all, fields(action_id = %action_id), err)]
pub async fn get(state: &AppState, principal: &Principal, action_id: String) -> Result<ActionView, AppError> {
    let tenant = principal.tenant_id.as_str().to_owned();
    let lookup = action_id.clone();
    let found = state
        .store
        .read(move |conn| -> Result<_, StoreError> {
            let Some(row) = conn.action(&tenant, &lookup)? else { return Ok(None) };
            let session = conn.session(&row.action.session_id)?;
            let history = conn.action_history(&row.action.session_id, &lookup)?;
            Ok(Some((row, session, history)))
        })
        .await?;
    let not_found = || AppError::new(ErrorCode::ActionNotFound, format!("action `{action_id}` was not found"));
    let (row, session, history) = found.ok_or_else(not_found)?;
    let session = session.ok_or_else(not_found)?;
    principal
        .session_access(Ownership { tenant_id: &session.tenant_id, owner_id: &session.owner_id })
        .map_err(|_| not_found())?;
    let action = row.action;
    // While running there is no answer yet.
    let answered = action.state.is_final() || action.state == ActionState::PendingConfirmation;
    Ok(ActionView {
        ack: answered.then_some(action.ack),
        action_id: action.action_id,
        session_id: action.session_id,
        action_type: action.action_type,
        params: action.params,
        status: action.state,
        requested_by: action.requested_by,
        created_at: row.created_at,
        updated_at: row.updated_at,
        history: history.iter().map(crate::store::log::StoredEvent::served).collect(),
    })
}
