//! In-call actions: request → policy → (confirmation) → executor → outcome, every step an event.
//!
//! Idempotency: an actionId is claimed once per tenant. Concurrent retries inside this process
//! wait for the first to finish and then read its stored ack; a retry after a restart reads the
//! stored ack too. An action found half-done after a restart is never run again: it fails with
//! `EXECUTION_INTERRUPTED`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::sessions::actor_of;
use super::{AppState, session_denied, session_not_found};
use crate::domain::canonical::to_canonical_string;
use crate::domain::envelope::server_event;
use crate::domain::event_types::EventType;
use crate::domain::ids::{EventId, SessionId};
use crate::domain::policy::{Usage, Verdict};
use crate::domain::principal::{Ownership, Principal, SessionAccess};
use crate::error::{AppError, ErrorCode};
use crate::orchestration::confirm::{self, Confirmation};
use crate::orchestration::executors::{self, Executor, Outcome};
use crate::store::WriteTx;
use crate::store::queries::{self, ActionRecord};

/// Per-process coordination of concurrent requests for one actionId, and the outbound clients.
#[derive(Clone)]
pub struct ActionRuntime {
    in_flight: Arc<Mutex<HashMap<String, watch::Receiver<bool>>>>,
    outbound: crate::orchestration::outbound::Outbound,
}

impl ActionRuntime {
    pub fn new(policy: &crate::domain::policy::Policy) -> Result<ActionRuntime, reqwest::Error> {
        Ok(ActionRuntime {
            in_flight: Arc::default(),
            outbound: crate::orchestration::outbound::Outbound::new(&policy.allowlist)?,
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExecuteRequest {
    pub action_id: String,
    pub session_id: String,
    #[serde(rename = "type")]
    pub action_type: String,
    pub params: Map<String, Value>,
    pub confirmation_token: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DecisionRequest {
    pub action_id: String,
    pub decision: String,
}

fn ack(status: &str, outcome_ref: Option<&str>, error_code: Option<ErrorCode>) -> Value {
    let mut ack = json!({ "status": status });
    if let Some(outcome_ref) = outcome_ref {
        ack["outcomeRef"] = json!(outcome_ref);
    }
    if let Some(code) = error_code {
        ack["errorCode"] = json!(code);
    }
    ack
}

fn answer(action_id: &str, ack: Value) -> Value {
    json!({ "actionId": action_id, "ack": ack })
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
pub async fn execute(state: &AppState, principal: &Principal, request: ExecuteRequest) -> Result<Value, AppError> {
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
                let handle = actix_web::rt::spawn(crate::http::request_id::carry(async move {
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

enum Begin {
    Done(Value),
    Interrupted,
    Run { executor: Executor, params: Value },
}

async fn run(state: &AppState, principal: &Principal, request: ExecuteRequest) -> Result<Value, AppError> {
    let params = Value::Object(request.params.clone());
    let params_hash = hex::encode(Sha256::digest(to_canonical_string(&params)));
    let request_hash: [u8; 32] = Sha256::digest(to_canonical_string(
        &json!({"sessionId": request.session_id, "type": request.action_type, "params": params}),
    ))
    .into();
    let confirmation = match &request.confirmation_token {
        None => None,
        Some(token) => {
            Some(confirm::verify(state.config.orchestration.signing_secret.expose(), token).ok_or_else(|| {
                AppError::new(
                    ErrorCode::ConfirmationTokenInvalid,
                    "the confirmation token is not one this server issued",
                )
            })?)
        }
    };
    let context = Context {
        principal: principal.clone(),
        action_id: request.action_id.clone(),
        session_id: request.session_id.clone(),
        action_type: request.action_type.clone(),
        params,
        params_hash,
        request_hash,
        policy: state.config.orchestration.policy.clone(),
    };
    let shared = Arc::new(context);
    let begin_context = shared.clone();
    let begin = state.store.writer.execute(move |tx| begin(tx, &begin_context, confirmation)).await?;
    let (outcome, interrupted) = match begin {
        Begin::Done(ack) => return Ok(answer(&request.action_id, ack)),
        Begin::Interrupted => (None, true),
        Begin::Run { executor: Executor::Note, .. } => (None, false),
        Begin::Run { executor, params } => (
            Some(
                executors::deliver(
                    &state.config.orchestration,
                    &state.actions.outbound,
                    executor,
                    &request.action_id,
                    &params,
                )
                .await,
            ),
            false,
        ),
    };
    let finish_context = shared.clone();
    let ack = state.store.writer.execute(move |tx| finish(tx, &finish_context, outcome, interrupted)).await?;
    Ok(answer(&request.action_id, ack))
}

struct Context {
    principal: Principal,
    action_id: String,
    session_id: String,
    action_type: String,
    params: Value,
    params_hash: String,
    request_hash: [u8; 32],
    policy: crate::domain::policy::Policy,
}

/// Append orchestration/safety events to the action's session.
fn append(
    tx: &mut WriteTx<'_>,
    tenant_id: &str,
    session_id: &str,
    principal: &Principal,
    events: Vec<(&str, Value)>,
) -> Result<(), AppError> {
    let id = SessionId::parse(session_id).map_err(AppError::internal_msg)?;
    let now = tx.recorded_at().to_owned();
    let mut new_events = Vec::with_capacity(events.len());
    for (type_name, payload) in events {
        let event_type = EventType::lookup(type_name)
            .ok_or_else(|| AppError::internal_msg(format!("{type_name} is not registered")))?;
        new_events.push(server_event(&id, event_type, payload, &now)?.into());
    }
    tx.append(tenant_id, session_id, &actor_of(principal), new_events)?;
    Ok(())
}

fn begin(tx: &mut WriteTx<'_>, c: &Context, confirmation: Option<Confirmation>) -> Result<Begin, AppError> {
    let tenant = c.principal.tenant_id.as_str();
    let now = tx.recorded_at().to_owned();
    let policy_fields = json!({ "actionId": c.action_id, "policyId": c.policy.id, "policyVersion": c.policy.version });
    // Only callers who may act on the session learn anything about its actions.
    let session = queries::session(tx.conn(), &c.session_id)?.ok_or_else(|| session_not_found(&c.session_id))?;
    c.principal
        .session_writer(Ownership { tenant_id: &session.tenant_id, owner_id: &session.owner_id })
        .map_err(|denied| session_denied(denied, &c.session_id))?;
    let terminal = session.is_terminal();
    let terminated = || {
        AppError::new(
            ErrorCode::SessionTerminated,
            format!("session `{}` is {}; it takes no actions", c.session_id, session.state),
        )
    };
    if let Some(row) = queries::action(tx.conn(), tenant, &c.action_id)? {
        if row.request_hash != c.request_hash {
            return Err(AppError::new(
                ErrorCode::ActionIdConflict,
                "this actionId was already used for another session, type or params",
            ));
        }
        let stored_ack =
            || row.ack.as_deref().and_then(|a| serde_json::from_str::<Value>(a).ok()).unwrap_or(Value::Null);
        return match (row.status.as_str(), confirmation) {
            ("executing", _) => Ok(Begin::Interrupted),
            ("pending_confirmation", Some(_)) if terminal => Err(terminated()),
            ("pending_confirmation", Some(confirmation)) => {
                check_confirmation(&row, &confirmation, &now)?;
                queries::spend_confirmation(tx.conn(), tenant, &c.action_id)?;
                let mut decided = policy_fields.clone();
                decided["decision"] = json!("approved");
                decided["reason"] = json!("confirmed by the session owner");
                append(tx, tenant, &row.session_id, &c.principal, vec![("orchestration.action.decided", decided)])?;
                queries::set_action_status(tx.conn(), tenant, &c.action_id, "executing", None, &now)?;
                let executor =
                    executors::executor_for(&row.action_type).ok_or_else(|| AppError::internal_msg("no executor"))?;
                Ok(Begin::Run { executor, params: c.params.clone() })
            }
            _ => Ok(Begin::Done(stored_ack())),
        };
    }
    if confirmation.is_some() {
        return Err(AppError::new(
            ErrorCode::ConfirmationTokenMismatch,
            "there is no pending action this token could confirm",
        ));
    }
    if terminal {
        return Err(terminated());
    }
    let minute_ago =
        chrono::DateTime::parse_from_rfc3339(&now).map_err(AppError::internal)? - chrono::Duration::seconds(60);
    let (in_session, last_minute) = queries::action_usage(
        tx.conn(),
        &c.session_id,
        &minute_ago.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    )?;
    let executor = executors::executor_for(&c.action_type);
    let usage = Usage { actions_in_session: in_session, actions_last_minute: last_minute };
    let mut verdict = c.policy.evaluate(&c.principal.roles, &c.action_type, &c.params, usage, executor.is_some());
    if let (Some(executor), Verdict::Approved { .. } | Verdict::NeedsConfirmation) = (executor, &verdict)
        && let Err(reason) = executors::validate_params(executor, &c.params)
    {
        verdict = Verdict::Blocked { code: ErrorCode::ParamsInvalid, reason };
    }
    let requested = json!({ "actionId": c.action_id, "type": c.action_type, "params": c.params, "requestedBy": c.principal.user_id.as_str() });
    let decided = |decision: &str, reason: Option<&str>| {
        let mut payload = policy_fields.clone();
        payload["decision"] = json!(decision);
        if let Some(reason) = reason {
            payload["reason"] = json!(reason);
        }
        payload
    };
    let (status, stored_ack, events, outcome) = match verdict {
        Verdict::Unsupported => {
            let failed = json!({ "actionId": c.action_id, "errorCode": ErrorCode::ActionTypeUnsupported, "attempts": 0,
                                  "message": format!("no executor runs `{}`", c.action_type) });
            (
                "failed",
                Some(ack("failed", None, Some(ErrorCode::ActionTypeUnsupported))),
                vec![("orchestration.action.failed", failed)],
                None,
            )
        }
        Verdict::Blocked { code, reason } => {
            let mut blocked = policy_fields.clone();
            blocked["code"] = json!(code);
            blocked["reason"] = json!(reason);
            (
                "blocked",
                Some(ack("blocked", None, Some(code))),
                vec![("safety.blocked", blocked), ("orchestration.action.decided", decided("blocked", Some(&reason)))],
                None,
            )
        }
        Verdict::NeedsConfirmation => (
            "pending_confirmation",
            Some(ack("pending_confirmation", None, None)),
            vec![
                ("safety.confirmation.issued", json!({ "actionId": c.action_id, "paramsHash": c.params_hash })),
                (
                    "orchestration.action.decided",
                    decided("pending_confirmation", Some("sensitive: the session owner must confirm")),
                ),
            ],
            None,
        ),
        Verdict::Approved { rule } => {
            let mut approved = policy_fields.clone();
            approved["rule"] = json!(rule);
            (
                "executing",
                None,
                vec![("safety.approved", approved), ("orchestration.action.decided", decided("approved", None))],
                executor,
            )
        }
    };
    let mut all = vec![("orchestration.action.requested", requested)];
    all.extend(events);
    append(tx, tenant, &c.session_id, &c.principal, all)?;
    let stored = stored_ack.as_ref().map(to_canonical_string);
    queries::insert_action(
        tx.conn(),
        &ActionRecord {
            tenant_id: tenant.to_owned(),
            action_id: c.action_id.clone(),
            session_id: c.session_id.clone(),
            action_type: c.action_type.clone(),
            params: to_canonical_string(&c.params),
            params_hash: c.params_hash.clone(),
            request_hash: c.request_hash.to_vec(),
            requested_by: c.principal.user_id.as_str().to_owned(),
            status: status.to_owned(),
            ack: stored,
            confirm_nonce: None,
            confirm_used: false,
            created_at: now.clone(),
            updated_at: now,
        },
    )?;
    Ok(match (outcome, stored_ack) {
        (Some(executor), _) => Begin::Run { executor, params: c.params.clone() },
        (None, Some(ack)) => Begin::Done(ack),
        (None, None) => return Err(AppError::internal_msg("approved action without executor")),
    })
}

fn check_confirmation(row: &ActionRecord, confirmation: &Confirmation, now: &str) -> Result<(), AppError> {
    if confirmation.action_id != row.action_id || confirmation.params_hash != row.params_hash {
        return Err(AppError::new(
            ErrorCode::ConfirmationTokenMismatch,
            "the confirmation token is for another action or other params",
        ));
    }
    if row.confirm_nonce.as_deref() != Some(confirmation.nonce.as_str()) || row.confirm_used {
        return Err(AppError::new(
            ErrorCode::ConfirmationTokenUsed,
            "the confirmation token was already used or replaced",
        ));
    }
    let now = chrono::DateTime::parse_from_rfc3339(now).map_err(AppError::internal)?.timestamp();
    if now > confirmation.expires_at {
        return Err(AppError::new(
            ErrorCode::ConfirmationTokenExpired,
            "the confirmation token has expired; ask the owner again",
        ));
    }
    Ok(())
}

/// Record the outcome. `None` means: run the internal note executor here, or — when `interrupted`
/// — fail the action that a previous process left half-done.
fn finish(tx: &mut WriteTx<'_>, c: &Context, outcome: Option<Outcome>, interrupted: bool) -> Result<Value, AppError> {
    let tenant = c.principal.tenant_id.as_str();
    let row =
        queries::action(tx.conn(), tenant, &c.action_id)?.ok_or_else(|| AppError::internal_msg("action vanished"))?;
    if row.status != "executing" {
        return Ok(row.ack.as_deref().and_then(|a| serde_json::from_str(a).ok()).unwrap_or(Value::Null));
    }
    let mut events = Vec::new();
    let outcome = match (outcome, executors::executor_for(&row.action_type)) {
        (Some(outcome), _) => outcome,
        (None, Some(Executor::Note)) if !interrupted => {
            let note_id = format!("note-{}", c.action_id);
            let text = c.params.get("text").and_then(Value::as_str).unwrap_or_default();
            events.push((
                "orchestration.note.created",
                json!({ "actionId": c.action_id, "noteId": note_id, "text": text }),
            ));
            Outcome::Executed { outcome_ref: note_id.clone(), attempts: 1, result: json!({ "noteId": note_id }) }
        }
        (None, _) => Outcome::Failed {
            error_code: ErrorCode::ExecutionInterrupted,
            attempts: 0,
            message: "the server stopped while the action was running; it is not run again".into(),
        },
    };
    let final_ack = match &outcome {
        Outcome::Executed { outcome_ref, attempts, result } => {
            events.push((
                "orchestration.action.executed",
                json!({ "actionId": c.action_id, "outcomeRef": outcome_ref, "attempts": attempts, "result": result }),
            ));
            ack("executed", Some(outcome_ref), None)
        }
        Outcome::Failed { error_code, attempts, message } => {
            let mut failed = json!({ "actionId": c.action_id, "errorCode": error_code, "attempts": attempts });
            if !message.is_empty() {
                failed["message"] = json!(message);
            }
            events.push(("orchestration.action.failed", failed));
            ack("failed", None, Some(*error_code))
        }
    };
    append(tx, tenant, &row.session_id, &c.principal, events)?;
    let status = final_ack["status"].as_str().unwrap_or("failed").to_owned();
    let now = tx.recorded_at().to_owned();
    queries::set_action_status(tx.conn(), tenant, &c.action_id, &status, Some(&to_canonical_string(&final_ack)), &now)?;
    Ok(final_ack)
}

/// `POST /v1/actions/decision`: the session owner approves (→ a single-use confirmation token) or
/// rejects (→ blocked for good).
#[tracing::instrument(skip_all, fields(action_id = %request.action_id), err)]
pub async fn decide(state: &AppState, principal: &Principal, request: DecisionRequest) -> Result<Value, AppError> {
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
            let row = queries::action(tx.conn(), &tenant, &request.action_id)?.ok_or_else(not_found)?;
            let session = queries::session(tx.conn(), &row.session_id)?.ok_or_else(not_found)?;
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
            if row.status != "pending_confirmation" {
                return Err(AppError::new(
                    ErrorCode::ActionNotPending,
                    format!("the action is `{}`, not waiting for a decision", row.status),
                )
                .with_details(json!({ "status": row.status })));
            }
            let now = tx.recorded_at().to_owned();
            let policy_fields =
                json!({ "actionId": row.action_id, "policyId": policy.id, "policyVersion": policy.version });
            if approve {
                let nonce = uuid::Uuid::new_v4().simple().to_string();
                let expires_at = chrono::DateTime::parse_from_rfc3339(&now).map_err(AppError::internal)?.timestamp()
                    + policy.confirmation_ttl_secs as i64;
                queries::set_confirmation(tx.conn(), &tenant, &row.action_id, &nonce, &now)?;
                let mut approved = policy_fields;
                approved["rule"] = json!("confirmed-by-owner");
                append(tx, &tenant, &row.session_id, &principal, vec![("safety.approved", approved)])?;
                let token = confirm::sign(
                    &secret,
                    &Confirmation {
                        action_id: row.action_id.clone(),
                        params_hash: row.params_hash.clone(),
                        expires_at,
                        nonce,
                    },
                );
                let expires = chrono::DateTime::from_timestamp(expires_at, 0).unwrap_or_default();
                Ok(json!({
                    "actionId": row.action_id,
                    "decision": "approve",
                    "confirmationToken": token,
                    "expiresAt": expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                }))
            } else {
                let mut blocked = policy_fields.clone();
                blocked["code"] = json!(ErrorCode::ActionRejected);
                blocked["reason"] = json!("rejected by the session owner");
                let mut decided = policy_fields;
                decided["decision"] = json!("blocked");
                decided["reason"] = json!("rejected by the session owner");
                append(
                    tx,
                    &tenant,
                    &row.session_id,
                    &principal,
                    vec![("safety.blocked", blocked), ("orchestration.action.decided", decided)],
                )?;
                let final_ack = ack("blocked", None, Some(ErrorCode::ActionRejected));
                queries::set_action_status(
                    tx.conn(),
                    &tenant,
                    &row.action_id,
                    "blocked",
                    Some(&to_canonical_string(&final_ack)),
                    &now,
                )?;
                Ok(json!({ "actionId": row.action_id, "decision": "reject", "ack": final_ack }))
            }
        })
        .await
}

/// `GET /v1/orchestration/actions/{actionId}`: the action and its whole history.
#[tracing::instrument(skip_all, fields(action_id = %action_id), err)]
pub async fn get(state: &AppState, principal: &Principal, action_id: String) -> Result<Value, AppError> {
    let tenant = principal.tenant_id.as_str().to_owned();
    let lookup = action_id.clone();
    let found = state
        .store
        .read(move |conn| {
            let Some(row) = queries::action(conn, &tenant, &lookup)? else { return Ok(None) };
            let session = queries::session(conn, &row.session_id)?;
            let history = queries::action_history(conn, &row.session_id, &lookup)?;
            Ok(Some((row, session, history)))
        })
        .await?;
    let not_found = || AppError::new(ErrorCode::ActionNotFound, format!("action `{action_id}` was not found"));
    let (row, session, history) = found.ok_or_else(not_found)?;
    let session = session.ok_or_else(not_found)?;
    principal
        .session_access(Ownership { tenant_id: &session.tenant_id, owner_id: &session.owner_id })
        .map_err(|_| not_found())?;
    Ok(json!({
        "actionId": row.action_id,
        "sessionId": row.session_id,
        "type": row.action_type,
        "params": serde_json::from_str::<Value>(&row.params).unwrap_or(Value::Null),
        "status": row.status,
        "ack": row.ack.as_deref().and_then(|a| serde_json::from_str::<Value>(a).ok()),
        "requestedBy": row.requested_by,
        "createdAt": row.created_at,
        "updatedAt": row.updated_at,
        "history": history.iter().map(|e| e.to_json()).collect::<Vec<_>>(),
    }))
}
