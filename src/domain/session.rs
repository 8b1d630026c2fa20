//! The call session lifecycle as a pure state machine.
//!
//! `created → connecting → active → ended`, and any non-terminal state → `failed`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{ErrorCode, Rejection};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    Created,
    Connecting,
    Active,
    Ended,
    Failed,
}

impl SessionState {
    pub const ALL: [SessionState; 5] = [
        SessionState::Created,
        SessionState::Connecting,
        SessionState::Active,
        SessionState::Ended,
        SessionState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Created => "created",
            SessionState::Connecting => "connecting",
            SessionState::Active => "active",
            SessionState::Ended => "ended",
            SessionState::Failed => "failed",
        }
    }

    pub fn parse(raw: &str) -> Option<SessionState> {
        SessionState::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, SessionState::Ended | SessionState::Failed)
    }

    /// Whether the lifecycle allows moving from `self` to `to` (a repeat of the current state is
    /// not a transition; callers treat it as an idempotent no-op).
    pub fn can_transition_to(self, to: SessionState) -> bool {
        use SessionState::*;
        matches!(
            (self, to),
            (Created, Connecting)
                | (Connecting, Active)
                | (Active, Ended)
                | (Created | Connecting | Active, Failed)
        )
    }
}

/// Whether an event type belongs to the session lifecycle (and so must pass `check_lifecycle`).
pub fn is_lifecycle_type(event_type: &str) -> bool {
    event_type.starts_with("call.session.")
}

/// Check a lifecycle event against the state it applies to and return the state after it.
/// Other event types leave the state as it is.
pub fn check_lifecycle(
    state: SessionState,
    event_type: &str,
    payload: &Value,
) -> Result<SessionState, Rejection> {
    let field = |key: &str| {
        payload
            .get(key)
            .and_then(Value::as_str)
            .and_then(SessionState::parse)
    };
    let invalid = |message: String| Err(Rejection::new(ErrorCode::InvalidTransition, message));
    match event_type {
        "call.session.created" => invalid(
            "the session already exists; sessions are created with POST /v1/call/sessions".into(),
        ),
        "call.session.state_changed" => {
            let (Some(from), Some(to)) = (field("from"), field("to")) else {
                return invalid("state_changed needs `from` and `to` states".into());
            };
            if from != state {
                return invalid(format!(
                    "the session is `{}`, not `{}`",
                    state.as_str(),
                    from.as_str()
                ));
            }
            if !state.can_transition_to(to) {
                return invalid(format!(
                    "`{}` → `{}` is not a lifecycle transition",
                    state.as_str(),
                    to.as_str()
                ));
            }
            Ok(to)
        }
        "call.session.failed" => {
            if state.is_terminal() {
                return invalid(format!("the session is already `{}`", state.as_str()));
            }
            Ok(SessionState::Failed)
        }
        "call.session.provider_linked" => {
            if matches!(state, SessionState::Active) || state.is_terminal() {
                return Err(Rejection::new(
                    ErrorCode::ProviderCorrelationImmutable,
                    format!(
                        "provider correlation cannot change once the session is `{}`",
                        state.as_str()
                    ),
                ));
            }
            Ok(state)
        }
        _ => Ok(state),
    }
}

#[cfg(test)]
mod tests {
    use super::SessionState::{self, *};
    use super::check_lifecycle;
    use crate::domain::error::ErrorCode;
    use serde_json::json;

    #[test]
    fn ingested_lifecycle_events_follow_the_state_machine() {
        let change = |from: &str, to: &str| json!({"from": from, "to": to});
        assert_eq!(
            check_lifecycle(
                Created,
                "call.session.state_changed",
                &change("created", "connecting")
            ),
            Ok(Connecting)
        );
        let stale = check_lifecycle(
            Connecting,
            "call.session.state_changed",
            &change("created", "connecting"),
        );
        assert_eq!(
            stale.expect_err("stale from").code,
            ErrorCode::InvalidTransition
        );
        let skip = check_lifecycle(
            Created,
            "call.session.state_changed",
            &change("created", "ended"),
        );
        assert_eq!(skip.expect_err("skip").code, ErrorCode::InvalidTransition);
        assert_eq!(
            check_lifecycle(Active, "call.session.failed", &json!({"code": "X"})),
            Ok(Failed)
        );
        assert!(check_lifecycle(Ended, "call.session.failed", &json!({"code": "X"})).is_err());
        let linked = check_lifecycle(
            Active,
            "call.session.provider_linked",
            &json!({"provider": "livekit"}),
        );
        assert_eq!(
            linked.expect_err("immutable").code,
            ErrorCode::ProviderCorrelationImmutable
        );
        assert_eq!(
            check_lifecycle(Active, "transcript.segment.final", &json!({})),
            Ok(Active)
        );
    }

    #[test]
    fn terminal_states_go_nowhere() {
        for to in SessionState::ALL {
            assert!(!Ended.can_transition_to(to));
            assert!(!Failed.can_transition_to(to));
        }
    }

    #[test]
    fn the_happy_path_and_failure_are_allowed() {
        assert!(Created.can_transition_to(Connecting));
        assert!(Connecting.can_transition_to(Active));
        assert!(Active.can_transition_to(Ended));
        assert!(Created.can_transition_to(Failed));
        assert!(!Created.can_transition_to(Active));
        assert!(!Created.can_transition_to(Ended));
        assert!(!Active.can_transition_to(Connecting));
    }

    #[test]
    fn names_round_trip() {
        for state in SessionState::ALL {
            assert_eq!(SessionState::parse(state.as_str()), Some(state));
        }
    }
}
