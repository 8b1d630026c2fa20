//! In-call actions as a pure state machine:
//! `requested → (pending_confirmation →) approved → executing → executed | failed`, or `blocked`.
//!
//! Every fact an action needs is in its events (the `actions` table is their projection), so
//! `decide` and `evolve` are all there is: the same fold serves decisions and the projection.
//! The confirmation *token* is never logged; its id, params hash and expiry are.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::canonical::to_canonical_string;
use super::error::{ErrorCode, Rejection};
use super::policy::Verdict;
use super::time::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActionState {
    /// Requested, waiting for the session owner's decision.
    PendingConfirmation,
    /// Approved but not yet claimed: only seen in logs written before claims were events, or
    /// if a claim was never appended. Nobody runs it; it is interrupted.
    Approved,
    /// Claimed by one node, which is running its executor.
    Executing,
    Executed,
    Failed,
    Blocked,
}

impl ActionState {
    pub const ALL: [ActionState; 6] = [
        ActionState::PendingConfirmation,
        ActionState::Approved,
        ActionState::Executing,
        ActionState::Executed,
        ActionState::Failed,
        ActionState::Blocked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActionState::PendingConfirmation => "pending_confirmation",
            ActionState::Approved => "approved",
            ActionState::Executing => "executing",
            ActionState::Executed => "executed",
            ActionState::Failed => "failed",
            ActionState::Blocked => "blocked",
        }
    }

    pub fn parse(raw: &str) -> Option<ActionState> {
        ActionState::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// Nothing changes an action in a final state; its ack is answered to every retry.
    pub fn is_final(self) -> bool {
        matches!(self, ActionState::Executed | ActionState::Failed | ActionState::Blocked)
    }
}

/// What `execute` answers: SPEC's `{status, outcomeRef?, errorCode?}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Ack {
    pub status: ActionState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome_ref: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<ErrorCode>,
}

/// The owner's approval, as logged: enough to check a presented token, never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmation {
    pub id: String,
    pub expires_at: Timestamp,
    pub spent: bool,
}

/// Which node runs the executor, and until when the others must leave it alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub node: String,
    pub lease_expires_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    pub action_id: String,
    pub session_id: String,
    pub action_type: String,
    pub params: Map<String, Value>,
    pub params_hash: String,
    pub request_hash: String,
    pub requested_by: String,
    pub state: ActionState,
    pub ack: Ack,
    pub confirmation: Option<Confirmation>,
    pub claim: Option<Claim>,
}

/// SHA-256 of the canonical params: what a confirmation is bound to.
pub fn params_hash(params: &Map<String, Value>) -> String {
    hex::encode(Sha256::digest(to_canonical_string(&Value::Object(params.clone()))))
}

/// SHA-256 of what an actionId stands for; a retry must match it. Built on the params' hash, not
/// the params, so that it survives the erasure of the params (they are personal data).
pub fn request_hash(session_id: &str, action_type: &str, params_hash: &str) -> String {
    hex::encode(Sha256::digest(to_canonical_string(
        &json!({ "sessionId": session_id, "type": action_type, "paramsHash": params_hash }),
    )))
}

/// The policy that decided, named in every decision event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRef {
    pub id: String,
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ActionEvent {
    Requested {
        action_id: String,
        action_type: String,
        params: Map<String, Value>,
        params_hash: String,
        requested_by: String,
    },
    /// Policy approved (`confirmation: None`), or the owner approved and a token was issued.
    Approved {
        action_id: String,
        policy: PolicyRef,
        rule: String,
        confirmation: Option<(String, Timestamp)>,
    },
    Blocked {
        action_id: String,
        policy: PolicyRef,
        code: ErrorCode,
        reason: String,
    },
    ConfirmationRequired {
        action_id: String,
        params_hash: String,
    },
    Decided {
        action_id: String,
        policy: PolicyRef,
        decision: Decision,
        reason: Option<String>,
        confirmation_id: Option<String>,
    },
    Started {
        action_id: String,
        node: String,
        lease_expires_at: Timestamp,
    },
    NoteCreated {
        action_id: String,
        note_id: String,
        text: String,
    },
    Executed {
        action_id: String,
        outcome_ref: String,
        attempts: u64,
        result: Value,
    },
    Failed {
        action_id: String,
        error_code: ErrorCode,
        attempts: u64,
        message: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Approved,
    Blocked,
    PendingConfirmation,
}

/// Where this request runs and how long its claims protect an execution.
#[derive(Debug, Clone)]
pub struct Node {
    pub id: String,
    /// How long a claim protects an execution: longer than an executor can take.
    pub lease_secs: i64,
}

/// A confirmation token's contents, once its signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentedConfirmation {
    pub action_id: String,
    pub params_hash: String,
    pub id: String,
    pub expires_at: Timestamp,
}

/// An execute request, after its fields were validated.
#[derive(Debug, Clone)]
pub struct Request {
    pub action_id: String,
    pub session_id: String,
    pub action_type: String,
    pub params: Map<String, Value>,
    pub requested_by: String,
}

/// What to do with an execute request.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Nothing to append: answer this ack (a retry gets the identical one).
    Answer(Ack),
    /// Append these events; when `run` is set they hold this node's claim and the caller runs
    /// the executor next.
    Append { events: Vec<ActionEvent>, run: bool },
}

fn reject(code: ErrorCode, message: &str) -> Rejection {
    Rejection::new(code, message)
}

impl Request {
    /// A request for an actionId the log does not know yet. `verdict` is the policy's, with
    /// params already checked against the executor.
    pub fn first(
        &self,
        verdict: Verdict,
        policy: &PolicyRef,
        executable: bool,
        node: &Node,
        now: Timestamp,
    ) -> Vec<ActionEvent> {
        let action_id = &self.action_id;
        let params_hash = params_hash(&self.params);
        let mut events = vec![ActionEvent::Requested {
            action_id: action_id.clone(),
            action_type: self.action_type.clone(),
            params: self.params.clone(),
            params_hash: params_hash.clone(),
            requested_by: self.requested_by.clone(),
        }];
        let decided = |decision, reason: Option<&str>| ActionEvent::Decided {
            action_id: action_id.clone(),
            policy: policy.clone(),
            decision,
            reason: reason.map(str::to_owned),
            confirmation_id: None,
        };
        match verdict {
            Verdict::Blocked { code, reason } => {
                events.push(ActionEvent::Blocked {
                    action_id: action_id.clone(),
                    policy: policy.clone(),
                    code,
                    reason: reason.clone(),
                });
                events.push(decided(Decision::Blocked, Some(&reason)));
            }
            Verdict::NeedsConfirmation => {
                events.push(ActionEvent::ConfirmationRequired { action_id: action_id.clone(), params_hash });
                events.push(decided(Decision::PendingConfirmation, Some("sensitive: the session owner must confirm")));
            }
            Verdict::Approved { rule } if executable => {
                events.push(ActionEvent::Approved {
                    action_id: action_id.clone(),
                    policy: policy.clone(),
                    rule: rule.to_owned(),
                    confirmation: None,
                });
                events.push(decided(Decision::Approved, None));
                events.push(node.claim(action_id, now));
            }
            Verdict::Unsupported | Verdict::Approved { .. } => events.push(ActionEvent::Failed {
                action_id: action_id.clone(),
                error_code: ErrorCode::ActionTypeUnsupported,
                attempts: 0,
                message: format!("no executor runs `{}`", self.action_type),
            }),
        }
        events
    }

    /// A request for an actionId the log knows (a retry, or the owner-confirmed run).
    /// `session_terminal` refuses confirmed runs on a session that has ended. `claimant_running`:
    /// the node named by `action.claimant_elsewhere(node)` still runs, as far as the store can
    /// tell; its claim then holds retries off until its lease ends. A claim of a node that is gone,
    /// or of this node (whose requests for one actionId wait for each other), means the run was
    /// interrupted.
    #[allow(clippy::too_many_arguments)]
    pub fn again(
        &self,
        action: &Action,
        presented: Option<&PresentedConfirmation>,
        policy: &PolicyRef,
        session_terminal: bool,
        node: &Node,
        claimant_running: bool,
        now: Timestamp,
    ) -> Result<Step, Rejection> {
        if action.request_hash != request_hash(&self.session_id, &self.action_type, &params_hash(&self.params)) {
            return Err(reject(
                ErrorCode::ActionIdConflict,
                "this actionId was already used for another session, type or params",
            ));
        }
        match (action.state, presented) {
            (ActionState::Executing, _) => match &action.claim {
                Some(claim) if claim.node != node.id && claimant_running && now < claim.lease_expires_at => {
                    let retry_secs = (claim.lease_expires_at.millis_since(now) / 1000).clamp(1, 60);
                    Err(reject(ErrorCode::ActionInProgress, "another node is running this action; retry for its ack")
                        .with_details(json!({ "retryAfterSecs": retry_secs })))
                }
                _ => Ok(Step::Append { events: vec![interrupted(&action.action_id)], run: false }),
            },
            (ActionState::Approved, _) => Ok(Step::Append { events: vec![interrupted(&action.action_id)], run: false }),
            (ActionState::PendingConfirmation, Some(_)) if session_terminal => {
                Err(reject(ErrorCode::SessionTerminated, "the session has ended; it takes no actions"))
            }
            (ActionState::PendingConfirmation, Some(presented)) => {
                let confirmation = action.check(presented, now)?;
                Ok(Step::Append {
                    events: vec![
                        ActionEvent::Decided {
                            action_id: action.action_id.clone(),
                            policy: policy.clone(),
                            decision: Decision::Approved,
                            reason: Some("confirmed by the session owner".into()),
                            confirmation_id: Some(confirmation.id.clone()),
                        },
                        node.claim(&action.action_id, now),
                    ],
                    run: true,
                })
            }
            _ => Ok(Step::Answer(action.ack.clone())),
        }
    }
}

fn interrupted(action_id: &str) -> ActionEvent {
    ActionEvent::Failed {
        action_id: action_id.to_owned(),
        error_code: ErrorCode::ExecutionInterrupted,
        attempts: 0,
        message: "the server stopped while the action was running; it is not run again".into(),
    }
}

impl Node {
    fn claim(&self, action_id: &str, now: Timestamp) -> ActionEvent {
        ActionEvent::Started {
            action_id: action_id.to_owned(),
            node: self.id.clone(),
            lease_expires_at: now.plus_seconds(self.lease_secs),
        }
    }
}

impl Action {
    /// The confirmation a presented token stands for, if it may still be spent.
    fn check(&self, presented: &PresentedConfirmation, now: Timestamp) -> Result<&Confirmation, Rejection> {
        if presented.action_id != self.action_id || presented.params_hash != self.params_hash {
            return Err(reject(
                ErrorCode::ConfirmationTokenMismatch,
                "the confirmation token is for another action or other params",
            ));
        }
        let confirmation =
            self.confirmation.as_ref().filter(|c| c.id == presented.id && !c.spent).ok_or_else(|| {
                reject(ErrorCode::ConfirmationTokenUsed, "the confirmation token was already used or replaced")
            })?;
        if now > confirmation.expires_at {
            return Err(reject(
                ErrorCode::ConfirmationTokenExpired,
                "the confirmation token has expired; ask the owner again",
            ));
        }
        Ok(confirmation)
    }

    /// The owner's decision on a pending action. Approving issues a confirmation `id` (which
    /// replaces any earlier one) valid for `ttl_secs`.
    pub fn decide_owner(
        &self,
        approve: bool,
        id: String,
        ttl_secs: i64,
        policy: &PolicyRef,
        now: Timestamp,
    ) -> Result<Vec<ActionEvent>, Rejection> {
        if self.state != ActionState::PendingConfirmation {
            return Err(reject(
                ErrorCode::ActionNotPending,
                &format!("the action is `{}`, not waiting for a decision", self.state.as_str()),
            )
            .with_details(json!({ "status": self.state.as_str() })));
        }
        let action_id = self.action_id.clone();
        if approve {
            return Ok(vec![ActionEvent::Approved {
                action_id,
                policy: policy.clone(),
                rule: "confirmed-by-owner".into(),
                // Whole seconds: the token carries its expiry in Unix seconds.
                confirmation: Some((id, Timestamp::from_unix_seconds(now.unix_seconds() + ttl_secs).unwrap_or(now))),
            }]);
        }
        let reason = "rejected by the session owner".to_owned();
        Ok(vec![
            ActionEvent::Blocked {
                action_id: action_id.clone(),
                policy: policy.clone(),
                code: ErrorCode::ActionRejected,
                reason: reason.clone(),
            },
            ActionEvent::Decided {
                action_id,
                policy: policy.clone(),
                decision: Decision::Blocked,
                reason: Some(reason),
                confirmation_id: None,
            },
        ])
    }

    /// The node running this action's executor, if that is another node than `node`: whether it
    /// still runs is for the store to tell (`Request::again`'s `claimant_running`).
    pub fn claimant_elsewhere(&self, node: &Node) -> Option<&str> {
        match &self.claim {
            Some(claim) if self.state == ActionState::Executing && claim.node != node.id => Some(&claim.node),
            _ => None,
        }
    }

    /// What to append once this node's executor finished: nothing if the claim is no longer
    /// ours (another node declared the run interrupted: it found this node gone, or the lease
    /// ran out).
    pub fn finish(&self, node: &Node, outcome: Outcome) -> Vec<ActionEvent> {
        let ours = self.state == ActionState::Executing && self.claim.as_ref().is_some_and(|c| c.node == node.id);
        if !ours {
            return Vec::new();
        }
        let action_id = self.action_id.clone();
        match outcome {
            Outcome::Executed { outcome_ref, attempts, result } => {
                vec![ActionEvent::Executed { action_id, outcome_ref, attempts, result }]
            }
            Outcome::Failed { error_code, attempts, message } => {
                vec![ActionEvent::Failed { action_id, error_code, attempts, message }]
            }
        }
    }
}

/// What an executor produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Executed { outcome_ref: String, attempts: u64, result: Value },
    Failed { error_code: ErrorCode, attempts: u64, message: String },
}

/// Fold one event into the action. `Requested` starts it (from `None`); other events before a
/// `Requested` are ignored, as is a `Requested` for an action that exists.
pub fn evolve(action: Option<Action>, session_id: &str, event: &ActionEvent) -> Option<Action> {
    let Some(mut action) = action else {
        return match event {
            ActionEvent::Requested { action_id, action_type, params, params_hash, requested_by } => Some(Action {
                action_id: action_id.clone(),
                session_id: session_id.to_owned(),
                action_type: action_type.clone(),
                params: params.clone(),
                params_hash: params_hash.clone(),
                request_hash: request_hash(session_id, action_type, params_hash),
                requested_by: requested_by.clone(),
                // An action is only ever answered after its decision; this is never seen.
                state: ActionState::Approved,
                ack: Ack { status: ActionState::Approved, outcome_ref: None, error_code: None },
                confirmation: None,
                claim: None,
            }),
            _ => None,
        };
    };
    if action.state.is_final() {
        return Some(action);
    }
    let ack = |status, outcome_ref: Option<&String>, error_code| Ack {
        status,
        outcome_ref: outcome_ref.cloned(),
        error_code,
    };
    match event {
        ActionEvent::Requested { .. } | ActionEvent::NoteCreated { .. } => {}
        ActionEvent::Approved { confirmation: Some((id, expires_at)), .. } => {
            action.confirmation = Some(Confirmation { id: id.clone(), expires_at: *expires_at, spent: false });
        }
        ActionEvent::Approved { confirmation: None, .. } => {}
        ActionEvent::Blocked { code, .. } => {
            action.state = ActionState::Blocked;
            action.ack = ack(ActionState::Blocked, None, Some(*code));
        }
        ActionEvent::ConfirmationRequired { .. } => {
            action.state = ActionState::PendingConfirmation;
            action.ack = ack(ActionState::PendingConfirmation, None, None);
        }
        ActionEvent::Decided { decision, confirmation_id, .. } => match decision {
            Decision::Approved => {
                action.state = ActionState::Approved;
                if let (Some(id), Some(confirmation)) = (confirmation_id, &mut action.confirmation)
                    && *id == confirmation.id
                {
                    confirmation.spent = true;
                }
            }
            Decision::PendingConfirmation => {
                action.state = ActionState::PendingConfirmation;
                action.ack = ack(ActionState::PendingConfirmation, None, None);
            }
            // The preceding `Blocked` carried the code.
            Decision::Blocked => action.state = ActionState::Blocked,
        },
        ActionEvent::Started { node, lease_expires_at, .. } => {
            action.state = ActionState::Executing;
            action.claim = Some(Claim { node: node.clone(), lease_expires_at: *lease_expires_at });
        }
        ActionEvent::Executed { outcome_ref, .. } => {
            action.state = ActionState::Executed;
            action.ack = ack(ActionState::Executed, Some(outcome_ref), None);
        }
        ActionEvent::Failed { error_code, .. } => {
            action.state = ActionState::Failed;
            action.ack = ack(ActionState::Failed, None, Some(*error_code));
        }
    }
    Some(action)
}

// ---------------------------------------------------------------------------------------------
// The events as the log holds them.

/// Erased params read as none: the action keeps its hash, status and history.
fn erasable_params<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Map<String, Value>, D::Error> {
    Ok(Option::<Map<String, Value>>::deserialize(deserializer)?.unwrap_or_default())
}

#[derive(Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
struct RequestedPayload {
    action_id: String,
    #[serde(rename = "type")]
    action_type: String,
    /// `null` once the tenant's data key is destroyed (the params are personal data).
    #[serde(deserialize_with = "erasable_params")]
    params: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    params_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    requested_by: Option<String>,
}

#[derive(Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
struct ApprovedPayload {
    action_id: String,
    policy_id: String,
    policy_version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    confirmation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<Timestamp>,
}

#[derive(Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
struct BlockedPayload {
    action_id: String,
    policy_id: String,
    policy_version: u64,
    code: ErrorCode,
    reason: String,
}

#[derive(Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
struct ConfirmationIssuedPayload {
    action_id: String,
    params_hash: String,
}

#[derive(Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
struct DecidedPayload {
    action_id: String,
    decision: Decision,
    policy_id: String,
    policy_version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    confirmation_id: Option<String>,
}

#[derive(Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
struct StartedPayload {
    action_id: String,
    node: String,
    lease_expires_at: Timestamp,
}

#[derive(Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
struct NotePayload {
    action_id: String,
    note_id: String,
    text: String,
}

#[derive(Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
struct ExecutedPayload {
    action_id: String,
    #[serde(default)]
    outcome_ref: String,
    attempts: u64,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    result: Value,
}

#[derive(Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
struct FailedPayload {
    action_id: String,
    error_code: ErrorCode,
    attempts: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    message: String,
}

/// The event types an action's fold reads.
pub const EVENT_TYPES: [&str; 9] = [
    "orchestration.action.requested",
    "safety.approved",
    "safety.blocked",
    "safety.confirmation.issued",
    "orchestration.action.decided",
    "orchestration.action.started",
    "orchestration.note.created",
    "orchestration.action.executed",
    "orchestration.action.failed",
];

impl ActionEvent {
    pub fn action_id(&self) -> &str {
        match self {
            ActionEvent::Requested { action_id, .. }
            | ActionEvent::Approved { action_id, .. }
            | ActionEvent::Blocked { action_id, .. }
            | ActionEvent::ConfirmationRequired { action_id, .. }
            | ActionEvent::Decided { action_id, .. }
            | ActionEvent::Started { action_id, .. }
            | ActionEvent::NoteCreated { action_id, .. }
            | ActionEvent::Executed { action_id, .. }
            | ActionEvent::Failed { action_id, .. } => action_id,
        }
    }

    /// The canonical event type and payload this event is logged as.
    pub fn to_envelope_parts(&self) -> (&'static str, Value) {
        let value = |payload: Result<Value, serde_json::Error>| payload.unwrap_or(Value::Null);
        match self.clone() {
            ActionEvent::Requested { action_id, action_type, params, params_hash, requested_by } => (
                "orchestration.action.requested",
                value(serde_json::to_value(RequestedPayload {
                    action_id,
                    action_type,
                    params,
                    params_hash: Some(params_hash),
                    requested_by: Some(requested_by),
                })),
            ),
            ActionEvent::Approved { action_id, policy, rule, confirmation } => {
                let (confirmation_id, expires_at) = confirmation.map_or((None, None), |(id, at)| (Some(id), Some(at)));
                (
                    "safety.approved",
                    value(serde_json::to_value(ApprovedPayload {
                        action_id,
                        policy_id: policy.id,
                        policy_version: policy.version,
                        rule: Some(rule),
                        confirmation_id,
                        expires_at,
                    })),
                )
            }
            ActionEvent::Blocked { action_id, policy, code, reason } => (
                "safety.blocked",
                value(serde_json::to_value(BlockedPayload {
                    action_id,
                    policy_id: policy.id,
                    policy_version: policy.version,
                    code,
                    reason,
                })),
            ),
            ActionEvent::ConfirmationRequired { action_id, params_hash } => (
                "safety.confirmation.issued",
                value(serde_json::to_value(ConfirmationIssuedPayload { action_id, params_hash })),
            ),
            ActionEvent::Decided { action_id, policy, decision, reason, confirmation_id } => (
                "orchestration.action.decided",
                value(serde_json::to_value(DecidedPayload {
                    action_id,
                    decision,
                    policy_id: policy.id,
                    policy_version: policy.version,
                    reason,
                    confirmation_id,
                })),
            ),
            ActionEvent::Started { action_id, node, lease_expires_at } => (
                "orchestration.action.started",
                value(serde_json::to_value(StartedPayload { action_id, node, lease_expires_at })),
            ),
            ActionEvent::NoteCreated { action_id, note_id, text } => {
                ("orchestration.note.created", value(serde_json::to_value(NotePayload { action_id, note_id, text })))
            }
            ActionEvent::Executed { action_id, outcome_ref, attempts, result } => (
                "orchestration.action.executed",
                value(serde_json::to_value(ExecutedPayload { action_id, outcome_ref, attempts, result })),
            ),
            ActionEvent::Failed { action_id, error_code, attempts, message } => (
                "orchestration.action.failed",
                value(serde_json::to_value(FailedPayload { action_id, error_code, attempts, message })),
            ),
        }
    }

    /// Read a logged event back; `None` for other types or a payload this fold cannot read.
    pub fn from_envelope_parts(event_type: &str, payload: &str) -> Option<ActionEvent> {
        fn read<'a, T: Deserialize<'a>>(payload: &'a str) -> Option<T> {
            serde_json::from_str(payload).ok()
        }
        let policy = |id: String, version: u64| PolicyRef { id, version };
        Some(match event_type {
            "orchestration.action.requested" => {
                let p: RequestedPayload = read(payload)?;
                let params_hash = p.params_hash.unwrap_or_else(|| params_hash(&p.params));
                ActionEvent::Requested {
                    action_id: p.action_id,
                    action_type: p.action_type,
                    params: p.params,
                    params_hash,
                    requested_by: p.requested_by.unwrap_or_default(),
                }
            }
            "safety.approved" => {
                let p: ApprovedPayload = read(payload)?;
                ActionEvent::Approved {
                    action_id: p.action_id,
                    policy: policy(p.policy_id, p.policy_version),
                    rule: p.rule.unwrap_or_default(),
                    confirmation: p.confirmation_id.zip(p.expires_at),
                }
            }
            "safety.blocked" => {
                let p: BlockedPayload = read(payload)?;
                ActionEvent::Blocked {
                    action_id: p.action_id,
                    policy: policy(p.policy_id, p.policy_version),
                    code: p.code,
                    reason: p.reason,
                }
            }
            "safety.confirmation.issued" => {
                let p: ConfirmationIssuedPayload = read(payload)?;
                ActionEvent::ConfirmationRequired { action_id: p.action_id, params_hash: p.params_hash }
            }
            "orchestration.action.decided" => {
                let p: DecidedPayload = read(payload)?;
                ActionEvent::Decided {
                    action_id: p.action_id,
                    policy: policy(p.policy_id, p.policy_version),
                    decision: p.decision,
                    reason: p.reason,
                    confirmation_id: p.confirmation_id,
                }
            }
            "orchestration.action.started" => {
                let p: StartedPayload = read(payload)?;
                ActionEvent::Started { action_id: p.action_id, node: p.node, lease_expires_at: p.lease_expires_at }
            }
            "orchestration.note.created" => {
                let p: NotePayload = read(payload)?;
                ActionEvent::NoteCreated { action_id: p.action_id, note_id: p.note_id, text: p.text }
            }
            "orchestration.action.executed" => {
                let p: ExecutedPayload = read(payload)?;
                ActionEvent::Executed {
                    action_id: p.action_id,
                    outcome_ref: p.outcome_ref,
                    attempts: p.attempts,
                    result: p.result,
                }
            }
            "orchestration.action.failed" => {
                let p: FailedPayload = read(payload)?;
                ActionEvent::Failed {
                    action_id: p.action_id,
                    error_code: p.error_code,
                    attempts: p.attempts,
                    message: p.message,
                }
            }
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests;
