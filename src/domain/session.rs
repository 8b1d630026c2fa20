//! The call session lifecycle as a pure state machine.
//!
//! `created → connecting → active → ended`, and any non-terminal state → `failed`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{ErrorCode, Rejection};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
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

    /// The one definition of "over": a terminal session accepts no connections, tokens, actions
    /// or transitions. Everything else asks this.
    pub fn is_terminal(self) -> bool {
        matches!(self, SessionState::Ended | SessionState::Failed)
    }

    /// The terminal states, for queries that must filter on them.
    pub fn terminal() -> impl Iterator<Item = SessionState> {
        SessionState::ALL.into_iter().filter(|s| s.is_terminal())
    }

    /// Whether the lifecycle allows moving from `self` to `to` (a repeat of the current state is
    /// not a transition; callers treat it as an idempotent no-op).
    pub fn can_transition_to(self, to: SessionState) -> bool {
        use SessionState::*;
        matches!(
            (self, to),
            (Created, Connecting) | (Connecting, Active) | (Active, Ended) | (Created | Connecting | Active, Failed)
        )
    }
}

/// Provider correlation: immutable once the session is active.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderCorrelation {
    pub provider: Option<String>,
    pub provider_room_id: Option<String>,
    pub provider_participant_id: Option<String>,
    pub provider_call_id: Option<String>,
}

impl ProviderCorrelation {
    /// Fields of `update` that would change `self` (unset fields of `update` change nothing).
    fn changes(&self, update: &ProviderCorrelation) -> bool {
        let differs = |current: &Option<String>, new: &Option<String>| new.is_some() && new != current;
        differs(&self.provider, &update.provider)
            || differs(&self.provider_room_id, &update.provider_room_id)
            || differs(&self.provider_participant_id, &update.provider_participant_id)
            || differs(&self.provider_call_id, &update.provider_call_id)
    }
}

impl std::fmt::Display for SessionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The aggregate: what decisions about a session need to know, and exactly what the `sessions`
/// projection stores of its lifecycle (it stores what `evolve` returns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub state: SessionState,
    pub version: u64,
    pub provider: ProviderCorrelation,
    /// The code a `failed` session recorded.
    pub failure_code: Option<String>,
}

impl Session {
    /// A session as `call.session.created` starts it.
    pub fn new() -> Session {
        Session {
            state: SessionState::Created,
            version: 1,
            provider: ProviderCorrelation::default(),
            failure_code: None,
        }
    }
}

impl Default for Session {
    fn default() -> Self {
        Session::new()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionCommand {
    /// Move to `to`. A `failed` target records `code` (default `CLIENT_REPORTED_FAILURE`).
    /// `provider` may set correlation at activation, in the same step.
    Transition {
        to: SessionState,
        reason: Option<String>,
        code: Option<String>,
        expected_version: Option<u64>,
        provider: Option<ProviderCorrelation>,
    },
    LinkProvider {
        correlation: ProviderCorrelation,
        expected_version: Option<u64>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    StateChanged { from: SessionState, to: SessionState, reason: Option<String> },
    Failed { from: SessionState, code: String, reason: Option<String> },
    ProviderLinked(ProviderCorrelation),
}

pub const DEFAULT_FAILURE_CODE: ErrorCode = ErrorCode::ClientReportedFailure;

fn check_version(session: &Session, expected: Option<u64>) -> Result<(), Rejection> {
    match expected {
        Some(expected) if expected != session.version => Err(Rejection::new(
            ErrorCode::VersionConflict,
            format!("expectedVersion {expected} does not match the session's version {}", session.version),
        )
        .with_details(serde_json::json!({ "currentVersion": session.version }))),
        _ => Ok(()),
    }
}

/// Decide what a command changes. An empty result is an idempotent repeat: nothing to append.
pub fn decide(session: &Session, command: SessionCommand) -> Result<Vec<SessionEvent>, Rejection> {
    match command {
        SessionCommand::Transition { to, reason, code, expected_version, provider } => {
            if to == session.state {
                return Ok(Vec::new());
            }
            check_version(session, expected_version)?;
            if !session.state.can_transition_to(to) {
                return Err(Rejection::new(
                    ErrorCode::InvalidTransition,
                    format!("`{}` → `{}` is not a lifecycle transition", session.state.as_str(), to.as_str()),
                )
                .with_details(serde_json::json!({ "state": session.state.as_str() })));
            }
            let mut events = Vec::new();
            if let Some(correlation) = provider.filter(|c| session.provider.changes(c)) {
                if to != SessionState::Active {
                    return Err(Rejection::new(
                        ErrorCode::ValidationFailed,
                        "provider correlation can only accompany a transition to `active`",
                    ));
                }
                events.push(SessionEvent::ProviderLinked(correlation));
            }
            events.push(match to {
                SessionState::Failed => SessionEvent::Failed {
                    from: session.state,
                    code: code.unwrap_or_else(|| DEFAULT_FAILURE_CODE.as_str().to_owned()),
                    reason,
                },
                _ => SessionEvent::StateChanged { from: session.state, to, reason },
            });
            Ok(events)
        }
        SessionCommand::LinkProvider { correlation, expected_version } => {
            if !session.provider.changes(&correlation) {
                return Ok(Vec::new());
            }
            check_version(session, expected_version)?;
            if session.state == SessionState::Active || session.state.is_terminal() {
                return Err(Rejection::new(
                    ErrorCode::ProviderCorrelationImmutable,
                    format!("provider correlation cannot change once the session is `{}`", session.state.as_str()),
                ));
            }
            Ok(vec![SessionEvent::ProviderLinked(correlation)])
        }
    }
}

/// Fold one event into the aggregate. Mirrors what the projection does with the same event.
pub fn evolve(mut session: Session, event: &SessionEvent) -> Session {
    match event {
        SessionEvent::StateChanged { to, .. } => session.state = *to,
        SessionEvent::Failed { code, .. } => {
            session.state = SessionState::Failed;
            session.failure_code = Some(code.clone());
        }
        SessionEvent::ProviderLinked(update) => {
            let merge = |current: &mut Option<String>, new: &Option<String>| {
                if new.is_some() {
                    current.clone_from(new);
                }
            };
            merge(&mut session.provider.provider, &update.provider);
            merge(&mut session.provider.provider_room_id, &update.provider_room_id);
            merge(&mut session.provider.provider_participant_id, &update.provider_participant_id);
            merge(&mut session.provider.provider_call_id, &update.provider_call_id);
        }
    }
    session.version += 1;
    session
}

#[derive(Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
struct StateChangedPayload {
    from: SessionState,
    to: SessionState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

#[derive(Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
struct FailedPayload {
    from: SessionState,
    code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// `call.session.created`: who owns the session and what they called it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedPayload {
    pub owner_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

impl SessionEvent {
    /// The canonical event type and payload this event is logged as.
    pub fn to_envelope_parts(&self) -> (&'static str, Value) {
        let value = |payload: Result<Value, serde_json::Error>| payload.unwrap_or(Value::Null);
        match self.clone() {
            SessionEvent::StateChanged { from, to, reason } => {
                ("call.session.state_changed", value(serde_json::to_value(StateChangedPayload { from, to, reason })))
            }
            SessionEvent::Failed { from, code, reason } => {
                ("call.session.failed", value(serde_json::to_value(FailedPayload { from, code, reason })))
            }
            SessionEvent::ProviderLinked(correlation) => {
                let mut payload = value(serde_json::to_value(correlation));
                if let Value::Object(map) = &mut payload {
                    map.retain(|_, v| !v.is_null());
                }
                ("call.session.provider_linked", payload)
            }
        }
    }

    /// Read a logged lifecycle event back; `None` for other types (`call.session.created` starts
    /// a session rather than changing one) or a payload this fold cannot read.
    pub fn from_envelope_parts(event_type: &str, payload: &str) -> Option<SessionEvent> {
        match event_type {
            "call.session.state_changed" => {
                let p: StateChangedPayload = serde_json::from_str(payload).ok()?;
                Some(SessionEvent::StateChanged { from: p.from, to: p.to, reason: p.reason })
            }
            "call.session.failed" => {
                let p: FailedPayload = serde_json::from_str(payload).ok()?;
                Some(SessionEvent::Failed { from: p.from, code: p.code, reason: p.reason })
            }
            "call.session.provider_linked" => serde_json::from_str(payload).ok().map(SessionEvent::ProviderLinked),
            _ => None,
        }
    }

    /// Whether this event ends the session (connected clients are closed after it).
    pub fn ends_session(&self) -> bool {
        match self {
            SessionEvent::StateChanged { to, .. } => to.is_terminal(),
            SessionEvent::Failed { .. } => true,
            SessionEvent::ProviderLinked(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SessionState::{self, *};

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

    mod given_when_then {
        use super::super::*;
        use crate::domain::error::ErrorCode;
        use SessionState::*;

        struct Given(Session);

        fn given(events: &[SessionEvent]) -> Given {
            Given(events.iter().fold(Session::new(), evolve))
        }

        impl Given {
            fn when(self, command: SessionCommand) -> (Session, Result<Vec<SessionEvent>, Rejection>) {
                let outcome = decide(&self.0, command);
                (self.0, outcome)
            }
        }

        trait Then {
            fn then_expect(self, events: Vec<SessionEvent>);
            fn then_reject(self, code: ErrorCode);
        }

        impl Then for (Session, Result<Vec<SessionEvent>, Rejection>) {
            fn then_expect(self, expected: Vec<SessionEvent>) {
                assert_eq!(self.1, Ok(expected));
            }
            fn then_reject(self, code: ErrorCode) {
                assert_eq!(self.1.expect_err("expected a rejection").code, code);
            }
        }

        fn to(state: SessionState) -> SessionCommand {
            SessionCommand::Transition { to: state, reason: None, code: None, expected_version: None, provider: None }
        }

        fn changed(from: SessionState, to: SessionState) -> SessionEvent {
            SessionEvent::StateChanged { from, to, reason: None }
        }

        fn livekit(room: &str) -> ProviderCorrelation {
            ProviderCorrelation {
                provider: Some("livekit".into()),
                provider_room_id: Some(room.into()),
                ..Default::default()
            }
        }

        #[test]
        fn a_new_session_starts_connecting() {
            given(&[]).when(to(Connecting)).then_expect(vec![changed(Created, Connecting)]);
        }

        #[test]
        fn repeating_the_current_state_appends_nothing() {
            given(&[changed(Created, Connecting)]).when(to(Connecting)).then_expect(vec![]);
        }

        #[test]
        fn skipping_a_state_is_rejected() {
            given(&[]).when(to(Active)).then_reject(ErrorCode::InvalidTransition);
            given(&[]).when(to(Ended)).then_reject(ErrorCode::InvalidTransition);
        }

        #[test]
        fn terminal_states_are_final() {
            let ended = [changed(Created, Connecting), changed(Connecting, Active), changed(Active, Ended)];
            given(&ended).when(to(Failed)).then_reject(ErrorCode::InvalidTransition);
            given(&ended).when(to(Active)).then_reject(ErrorCode::InvalidTransition);
        }

        #[test]
        fn failure_records_a_code() {
            let command = SessionCommand::Transition {
                to: Failed,
                reason: Some("no media".into()),
                code: Some("MEDIA_TIMEOUT".into()),
                expected_version: None,
                provider: None,
            };
            given(&[changed(Created, Connecting)]).when(command).then_expect(vec![SessionEvent::Failed {
                from: Connecting,
                code: "MEDIA_TIMEOUT".into(),
                reason: Some("no media".into()),
            }]);
            given(&[]).when(to(Failed)).then_expect(vec![SessionEvent::Failed {
                from: Created,
                code: DEFAULT_FAILURE_CODE.as_str().into(),
                reason: None,
            }]);
        }

        #[test]
        fn a_stale_expected_version_conflicts() {
            let command = SessionCommand::Transition {
                to: Active,
                reason: None,
                code: None,
                expected_version: Some(1),
                provider: None,
            };
            given(&[changed(Created, Connecting)]).when(command).then_reject(ErrorCode::VersionConflict);
        }

        #[test]
        fn provider_correlation_is_immutable_once_active() {
            let link = |room: &str| SessionCommand::LinkProvider { correlation: livekit(room), expected_version: None };
            given(&[]).when(link("r1")).then_expect(vec![SessionEvent::ProviderLinked(livekit("r1"))]);
            let active = [
                SessionEvent::ProviderLinked(livekit("r1")),
                changed(Created, Connecting),
                changed(Connecting, Active),
            ];
            given(&active).when(link("r2")).then_reject(ErrorCode::ProviderCorrelationImmutable);
            given(&active).when(link("r1")).then_expect(vec![]);
        }

        #[test]
        fn correlation_can_be_set_at_activation() {
            let command = SessionCommand::Transition {
                to: Active,
                reason: None,
                code: None,
                expected_version: Some(2),
                provider: Some(livekit("r9")),
            };
            given(&[changed(Created, Connecting)])
                .when(command)
                .then_expect(vec![SessionEvent::ProviderLinked(livekit("r9")), changed(Connecting, Active)]);
        }

        use proptest::prelude::*;

        fn any_command() -> impl Strategy<Value = SessionCommand> {
            let state = prop::sample::select(SessionState::ALL.to_vec());
            prop_oneof![
                (state, prop::option::of(0u64..6)).prop_map(|(to, expected_version)| SessionCommand::Transition {
                    to,
                    reason: None,
                    code: None,
                    expected_version,
                    provider: None,
                }),
                ("[a-c]", prop::option::of(0u64..6)).prop_map(|(room, expected_version)| {
                    SessionCommand::LinkProvider { correlation: livekit(&room), expected_version }
                }),
            ]
        }

        proptest! {
            #[test]
            fn any_command_sequence_keeps_the_invariants(commands in prop::collection::vec(any_command(), 0..30)) {
                let mut session = Session::new();
                for command in commands {
                    let before = session.clone();
                    if let Ok(events) = decide(&session, command) {
                        for event in &events {
                            session = evolve(session, event);
                        }
                        prop_assert_eq!(session.version, before.version + events.len() as u64);
                        if before.state.is_terminal() {
                            prop_assert_eq!(session.state, before.state);
                        }
                        if before.state == Active || before.state.is_terminal() {
                            prop_assert_eq!(&session.provider, &before.provider);
                        }
                    } else {
                        prop_assert_eq!(&session, &before);
                    }
                }
            }
        }
    }
}
