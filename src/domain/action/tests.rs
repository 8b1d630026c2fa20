//! Given the events so far, when a request or decision arrives, then these events (or this
//! rejection). The fold is the one the projection uses.

use serde_json::{Map, Value, json};

use super::*;

const SESSION: &str = "cs_1";

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_unix_seconds(1_800_000_000 + seconds).expect("in range")
}

fn node(id: &str) -> Node {
    Node { id: id.into(), lease_secs: 60 }
}

fn policy() -> PolicyRef {
    PolicyRef { id: "default".into(), version: 1 }
}

fn params(text: &str) -> Map<String, Value> {
    json!({ "to": "+15550100", "text": text }).as_object().cloned().expect("object")
}

fn request(text: &str) -> Request {
    Request {
        action_id: "act-1".into(),
        session_id: SESSION.into(),
        action_type: "message.send".into(),
        params: params(text),
        requested_by: "alice".into(),
    }
}

/// Fold events the way the projection does, through their logged form.
fn given(events: &[ActionEvent]) -> Action {
    events
        .iter()
        .map(|event| {
            let (event_type, payload) = event.to_envelope_parts();
            ActionEvent::from_envelope_parts(event_type, &payload.to_string()).expect("reads back")
        })
        .fold(None, |action, event| evolve(action, SESSION, &event))
        .expect("requested")
}

fn pending() -> Vec<ActionEvent> {
    request("hi").first(Verdict::NeedsConfirmation, &policy(), true, &node("a"), at(0))
}

fn presented(action: &Action) -> PresentedConfirmation {
    let confirmation = action.confirmation.clone().expect("issued");
    PresentedConfirmation {
        action_id: action.action_id.clone(),
        params_hash: action.params_hash.clone(),
        id: confirmation.id,
        expires_at: confirmation.expires_at,
    }
}

fn approved_by_owner() -> Vec<ActionEvent> {
    let mut events = pending();
    events.extend(given(&events).decide_owner(true, "cf_1".into(), 300, &policy(), at(10)).expect("pending"));
    events
}

#[test]
fn an_approved_request_is_claimed_by_this_node_in_the_same_step() {
    let events = request("hi").first(Verdict::Approved { rule: "r" }, &policy(), true, &node("a"), at(0));
    let kinds: Vec<_> = events.iter().map(|e| e.to_envelope_parts().0).collect();
    assert_eq!(
        kinds,
        [
            "orchestration.action.requested",
            "safety.approved",
            "orchestration.action.decided",
            "orchestration.action.started"
        ]
    );
    let action = given(&events);
    assert_eq!(action.state, ActionState::Executing);
    assert_eq!(action.claim, Some(Claim { node: "a".into(), lease_expires_at: at(60) }));
}

#[test]
fn blocked_unsupported_and_pending_requests_answer_without_a_claim() {
    let blocked = Verdict::Blocked { code: ErrorCode::RoleNotAllowed, reason: "no".into() };
    let action = given(&request("hi").first(blocked, &policy(), true, &node("a"), at(0)));
    assert_eq!(
        action.ack,
        Ack { status: ActionState::Blocked, outcome_ref: None, error_code: Some(ErrorCode::RoleNotAllowed) }
    );
    let action = given(&request("hi").first(Verdict::Unsupported, &policy(), false, &node("a"), at(0)));
    assert_eq!(action.ack.error_code, Some(ErrorCode::ActionTypeUnsupported));
    let action = given(&pending());
    assert_eq!(action.state, ActionState::PendingConfirmation);
    assert_eq!(action.claim, None);
}

#[test]
fn a_retry_answers_the_identical_ack_and_appends_nothing() {
    let mut events = request("hi").first(Verdict::Approved { rule: "r" }, &policy(), true, &node("a"), at(0));
    let executing = given(&events);
    events.extend(
        executing.finish(&node("a"), Outcome::Executed { outcome_ref: "m-1".into(), attempts: 2, result: json!({}) }),
    );
    let done = given(&events);
    let step = request("hi").again(&done, None, &policy(), false, &node("a"), false, at(5)).expect("retry");
    assert_eq!(
        step,
        Step::Answer(Ack { status: ActionState::Executed, outcome_ref: Some("m-1".into()), error_code: None })
    );
    // Even after the session ended, and with a token that is now pointless.
    let step = request("hi").again(&done, None, &policy(), true, &node("b"), false, at(5)).expect("retry");
    assert!(matches!(step, Step::Answer(_)));
}

#[test]
fn the_same_action_id_with_other_params_is_a_conflict() {
    let action = given(&pending());
    let err = request("other").again(&action, None, &policy(), false, &node("a"), false, at(1)).expect_err("conflict");
    assert_eq!(err.code, ErrorCode::ActionIdConflict);
}

#[test]
fn the_owners_confirmation_is_spent_once_and_claims_the_run() {
    let events = approved_by_owner();
    let action = given(&events);
    let confirmation = action.confirmation.clone().expect("issued");
    assert_eq!((confirmation.id.as_str(), confirmation.expires_at, confirmation.spent), ("cf_1", at(310), false));
    let token = presented(&action);
    let Step::Append { events: confirmed, run: true } =
        request("hi").again(&action, Some(&token), &policy(), false, &node("a"), false, at(20)).expect("confirmed")
    else {
        panic!("a confirmed run")
    };
    let mut all = events.clone();
    all.extend(confirmed);
    let running = given(&all);
    assert_eq!(running.state, ActionState::Executing);
    assert!(running.confirmation.as_ref().is_some_and(|c| c.spent));
}

#[test]
fn a_confirmation_is_refused_when_expired_replaced_mismatched_or_the_session_ended() {
    let action = given(&approved_by_owner());
    let token = presented(&action);
    let again = |token: &PresentedConfirmation, terminal, now| {
        request("hi")
            .again(&action, Some(token), &policy(), terminal, &node("a"), false, now)
            .expect_err("refused")
            .code
    };
    assert_eq!(again(&token, false, at(311)), ErrorCode::ConfirmationTokenExpired);
    assert_eq!(
        again(&PresentedConfirmation { id: "cf_0".into(), ..token.clone() }, false, at(20)),
        ErrorCode::ConfirmationTokenUsed
    );
    assert_eq!(
        again(&PresentedConfirmation { params_hash: "00".repeat(32), ..token.clone() }, false, at(20)),
        ErrorCode::ConfirmationTokenMismatch
    );
    assert_eq!(again(&token, true, at(20)), ErrorCode::SessionTerminated);
}

#[test]
fn a_second_approval_replaces_the_first_confirmation() {
    let mut events = approved_by_owner();
    let first = presented(&given(&events));
    events.extend(given(&events).decide_owner(true, "cf_2".into(), 300, &policy(), at(30)).expect("still pending"));
    let action = given(&events);
    let err =
        request("hi").again(&action, Some(&first), &policy(), false, &node("a"), false, at(40)).expect_err("replaced");
    assert_eq!(err.code, ErrorCode::ConfirmationTokenUsed);
}

#[test]
fn rejecting_blocks_for_good_and_only_pending_actions_take_decisions() {
    let mut events = pending();
    events.extend(given(&events).decide_owner(false, "unused".into(), 300, &policy(), at(10)).expect("pending"));
    let action = given(&events);
    assert_eq!(action.ack.error_code, Some(ErrorCode::ActionRejected));
    let err = action.decide_owner(true, "cf".into(), 300, &policy(), at(11)).expect_err("not pending");
    assert_eq!(err.code, ErrorCode::ActionNotPending);
}

#[test]
fn a_claim_of_another_node_that_still_runs_holds_retries_off_until_its_lease_ends() {
    let events = request("hi").first(Verdict::Approved { rule: "r" }, &policy(), true, &node("a"), at(0));
    let action = given(&events);
    assert_eq!(action.claimant_elsewhere(&node("b")), Some("a"));
    let err = request("hi").again(&action, None, &policy(), false, &node("b"), true, at(30)).expect_err("in progress");
    assert_eq!(err.code, ErrorCode::ActionInProgress);
    assert_eq!(err.details.expect("details")["retryAfterSecs"], 30);
    // Once the lease ran out, the claimant is presumed gone: the run is interrupted, never repeated.
    let step = request("hi").again(&action, None, &policy(), false, &node("b"), true, at(61)).expect("interrupted");
    let Step::Append { events: failed, run: false } = step else { panic!("no second run") };
    let mut all = events.clone();
    all.extend(failed);
    assert_eq!(given(&all).ack.error_code, Some(ErrorCode::ExecutionInterrupted));
}

#[test]
fn a_claim_of_a_node_that_is_gone_or_of_this_node_is_an_interrupted_run_at_once() {
    let action = given(&request("hi").first(Verdict::Approved { rule: "r" }, &policy(), true, &node("a"), at(0)));
    assert_eq!(
        action.claimant_elsewhere(&node("a")),
        None,
        "this node's requests for one actionId wait for each other"
    );
    for (finder, claimant_running) in [("b", false), ("a", false), ("a", true)] {
        let step = request("hi")
            .again(&action, None, &policy(), false, &node(finder), claimant_running, at(1))
            .expect("interrupted");
        let Step::Append { events, run: false } = step else { panic!("no second run: {finder}") };
        assert!(matches!(&events[..], [ActionEvent::Failed { error_code: ErrorCode::ExecutionInterrupted, .. }]));
    }
}

#[test]
fn an_outcome_is_recorded_only_under_the_claim_that_ran_it() {
    let mut events = request("hi").first(Verdict::Approved { rule: "r" }, &policy(), true, &node("a"), at(0));
    let outcome = Outcome::Failed { error_code: ErrorCode::Target5xx, attempts: 3, message: "503".into() };
    assert!(given(&events).finish(&node("b"), outcome.clone()).is_empty());
    let interrupted = request("hi").again(&given(&events), None, &policy(), false, &node("b"), true, at(61));
    let Ok(Step::Append { events: failed, .. }) = interrupted else { panic!("interrupted") };
    events.extend(failed);
    assert!(given(&events).finish(&node("a"), outcome).is_empty(), "too late: the run was declared interrupted");
}

#[test]
fn nothing_moves_a_final_action() {
    let mut events = pending();
    events.extend(given(&events).decide_owner(false, "x".into(), 300, &policy(), at(1)).expect("pending"));
    let blocked = given(&events);
    let late = ActionEvent::Started { action_id: "act-1".into(), node: "a".into(), lease_expires_at: at(99) };
    assert_eq!(evolve(Some(blocked.clone()), SESSION, &late), Some(blocked));
}

#[test]
fn every_event_reads_back_as_logged() {
    let mut events = approved_by_owner();
    let action = given(&events);
    if let Ok(Step::Append { events: more, .. }) =
        request("hi").again(&action, Some(&presented(&action)), &policy(), false, &node("a"), false, at(20))
    {
        events.extend(more);
    }
    events.push(ActionEvent::NoteCreated { action_id: "act-1".into(), note_id: "n".into(), text: "t".into() });
    events.extend(
        given(&events)
            .finish(&node("a"), Outcome::Executed { outcome_ref: "r".into(), attempts: 1, result: json!({"k": 1}) }),
    );
    for event in events {
        let (event_type, payload) = event.to_envelope_parts();
        assert_eq!(ActionEvent::from_envelope_parts(event_type, &payload.to_string()), Some(event), "{event_type}");
    }
}
