use callstream::domain::principal::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, error_code, spawn_app};

async fn transition(app: &TestApp, token: &str, session: &str, body: Value) -> reqwest::Response {
    app.post(&format!("/v1/call/sessions/{session}/state"), token, &body).await
}

async fn head(app: &TestApp, token: &str, session: &str) -> u64 {
    app.replay(token, session, 0, 1).await["diagnostics"]["headSeq"].as_u64().expect("head")
}

#[tokio::test]
async fn a_call_goes_from_created_to_ended() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    let connecting: Value = transition(&app, &alice, &session, json!({"to": "connecting", "expectedVersion": 1}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!((connecting["state"].as_str(), connecting["version"].as_u64()), (Some("connecting"), Some(2)));

    let activation =
        json!({"to": "active", "expectedVersion": 2, "provider": {"provider": "livekit", "providerRoomId": "room-7"}});
    let active: Value = transition(&app, &alice, &session, activation).await.json().await.expect("json");
    assert_eq!(active["state"], "active");
    assert_eq!(active["provider"]["providerRoomId"], "room-7");
    assert_eq!(active["version"], 4, "provider_linked and state_changed are two events");

    let ended = transition(&app, &alice, &session, json!({"to": "ended", "reason": "hung up"})).await;
    assert_eq!(ended.status(), StatusCode::OK);
    let types: Vec<String> = app.replay(&alice, &session, 0, 100).await["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["type"].as_str().expect("type").to_owned())
        .filter(|t| t.starts_with("call."))
        .collect();
    assert_eq!(
        types,
        [
            "call.session.created",
            "call.session.state_changed",
            "call.session.provider_linked",
            "call.session.state_changed",
            "call.session.state_changed"
        ]
    );
}

#[tokio::test]
async fn repeating_the_current_state_appends_nothing() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    assert_eq!(transition(&app, &alice, &session, json!({"to": "connecting"})).await.status(), StatusCode::OK);
    let before = head(&app, &alice, &session).await;
    // Even with the expectedVersion of the first attempt: the outcome it asked for holds.
    let again = transition(&app, &alice, &session, json!({"to": "connecting", "expectedVersion": 1})).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.json::<Value>().await.expect("json")["version"], 2);
    assert_eq!(head(&app, &alice, &session).await, before);
}

#[tokio::test]
async fn illegal_and_stale_transitions_are_conflicts() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    let skip = transition(&app, &alice, &session, json!({"to": "ended"})).await;
    assert_eq!(skip.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(skip).await, "INVALID_TRANSITION");
    let stale = transition(&app, &alice, &session, json!({"to": "connecting", "expectedVersion": 7})).await;
    assert_eq!(stale.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(stale).await, "VERSION_CONFLICT");
    let unknown = transition(&app, &alice, &session, json!({"to": "paused"})).await;
    assert_eq!(error_code(unknown).await, "VALIDATION_FAILED");
    assert_eq!(head(&app, &alice, &session).await, 1, "nothing appended");
}

#[tokio::test]
async fn failure_is_terminal_and_keeps_its_code() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    let failed: Value =
        transition(&app, &alice, &session, json!({"to": "failed", "code": "MEDIA_TIMEOUT", "reason": "no audio"}))
            .await
            .json()
            .await
            .expect("json");
    assert_eq!((failed["state"].as_str(), failed["failureCode"].as_str()), (Some("failed"), Some("MEDIA_TIMEOUT")));
    let revive = transition(&app, &alice, &session, json!({"to": "connecting"})).await;
    assert_eq!(error_code(revive).await, "INVALID_TRANSITION");
    let lower = transition(&app, &alice, &session, json!({"to": "failed", "code": "lower-case"})).await;
    assert_eq!(error_code(lower).await, "VALIDATION_FAILED");
}

#[tokio::test]
async fn provider_correlation_is_immutable_once_active() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    let path = format!("/v1/call/sessions/{session}/provider");
    let linked =
        app.post(&path, &alice, &json!({"provider": "livekit", "providerRoomId": "r1", "providerCallId": "c1"})).await;
    assert_eq!(linked.status(), StatusCode::OK);
    let relinked = app.post(&path, &alice, &json!({"provider": "livekit", "providerRoomId": "r2"})).await;
    assert_eq!(relinked.status(), StatusCode::OK, "changeable before activation");
    transition(&app, &alice, &session, json!({"to": "connecting"})).await;
    transition(&app, &alice, &session, json!({"to": "active"})).await;
    let changed = app.post(&path, &alice, &json!({"provider": "livekit", "providerRoomId": "r3"})).await;
    assert_eq!(changed.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(changed).await, "PROVIDER_CORRELATION_IMMUTABLE");
    let same = app.post(&path, &alice, &json!({"provider": "livekit", "providerRoomId": "r2"})).await;
    assert_eq!(same.status(), StatusCode::OK, "repeating the current correlation is idempotent");
    let view: Value = same.json().await.expect("json");
    assert_eq!(view["provider"]["providerCallId"], "c1");
}

#[tokio::test]
async fn racing_transitions_have_exactly_one_winner() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    for _ in 0..10 {
        let session = app.create_session(&alice).await;
        let url = format!("{}/v1/call/sessions/{session}/state", app.address);
        let race =
            |to: &str| app.client.post(&url).bearer_auth(&alice).json(&json!({"to": to, "expectedVersion": 1})).send();
        let (a, b) = tokio::join!(race("connecting"), race("failed"));
        let mut statuses = [a.expect("a").status(), b.expect("b").status()];
        statuses.sort();
        assert_eq!(statuses, [StatusCode::OK, StatusCode::CONFLICT]);
        assert_eq!(head(&app, &alice, &session).await, 2, "exactly one event appended");
    }
}

#[tokio::test]
async fn listing_is_scoped_paginated_and_filterable() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let bob = app.user("bob");
    let mut mine = Vec::new();
    for _ in 0..25 {
        mine.push(app.create_session(&alice).await);
    }
    app.create_session(&bob).await;
    transition(&app, &alice, &mine[3], json!({"to": "connecting"})).await;

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/call/sessions?limit=10&cursor={c}"),
            None => "/v1/call/sessions?limit=10".to_owned(),
        };
        let page: Value = app.get(&path, &alice).await.json().await.expect("json");
        seen.extend(
            page["sessions"]
                .as_array()
                .expect("sessions")
                .iter()
                .map(|s| s["sessionId"].as_str().expect("id").to_owned()),
        );
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    mine.reverse();
    assert_eq!(seen, mine, "all of alice's, newest first, none of bob's");

    let connecting: Value = app.get("/v1/call/sessions?state=connecting", &alice).await.json().await.expect("json");
    assert_eq!(connecting["sessions"].as_array().expect("sessions").len(), 1);
    let operator: Value = app
        .get("/v1/call/sessions?limit=100", &app.token("ops", "t1", &[Role::Operator]))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(operator["sessions"].as_array().expect("sessions").len(), 26, "operators see the tenant");
    let other_tenant: Value =
        app.get("/v1/call/sessions", &app.token("alice", "t2", &[Role::User])).await.json().await.expect("json");
    assert_eq!(other_tenant["sessions"].as_array().expect("sessions").len(), 0);

    for bad in ["limit=0", "limit=101", "limit=x", "state=paused", "cursor=garbage", "sort=asc"] {
        let response = app.get(&format!("/v1/call/sessions?{bad}"), &alice).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(error_code(response).await, "QUERY_INVALID", "{bad}");
    }
}

/// One step of a random history: a lifecycle command, or an event some writer ingests.
#[derive(Debug, Clone)]
enum Step {
    Transition { to: &'static str, code: Option<&'static str>, expected_version: Option<u64>, room: Option<u8> },
    Link { room: u8, expected_version: Option<u64> },
    Ingest(&'static str),
}

fn any_step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    let state = prop::sample::select(vec!["created", "connecting", "active", "ended", "failed"]);
    let version = prop::option::of(1u64..8);
    prop_oneof![
        4 => (state, prop::option::of(prop::sample::select(vec!["MEDIA_TIMEOUT", "CARRIER_DROPPED"])), version.clone(), prop::option::of(0u8..3))
            .prop_map(|(to, code, expected_version, room)| Step::Transition { to, code, expected_version, room }),
        1 => (0u8..3, version).prop_map(|(room, expected_version)| Step::Link { room, expected_version }),
        2 => prop::sample::select(vec!["call.participant.joined", "call.room.finished", "call.room.started", "transcript.segment.final"])
            .prop_map(Step::Ingest),
    ]
}

async fn run_history(app: &TestApp, owner: &str, agent: &str, steps: &[Step]) -> Result<(), String> {
    let session = app.create_session(owner).await;
    for (n, step) in steps.iter().enumerate() {
        let response = match step {
            Step::Transition { to, code, expected_version, room } => {
                let mut body = json!({ "to": to, "code": code, "expectedVersion": expected_version });
                if let Some(room) = room {
                    body["provider"] = json!({ "provider": "livekit", "providerRoomId": format!("room-{room}") });
                }
                transition(app, owner, &session, body).await
            }
            Step::Link { room, expected_version } => {
                let body = json!({ "provider": "livekit", "providerRoomId": format!("room-{room}"), "expectedVersion": expected_version });
                app.post(&format!("/v1/call/sessions/{session}/provider"), owner, &body).await
            }
            Step::Ingest(event_type) => {
                let payload = match *event_type {
                    "call.participant.joined" => json!({ "participantId": format!("p{n}") }),
                    "transcript.segment.final" => json!({ "segmentId": format!("s{n}"), "revision": 1, "text": "hi" }),
                    _ => json!({ "roomSid": format!("RM_{n}") }),
                };
                let event = json!({ "eventId": format!("h{n}"), "sessionId": session, "ts": "2026-11-23T10:00:00Z",
                                    "type": event_type, "payload": payload, "schemaVersion": 1 });
                let writer = if event_type.starts_with("transcript.") { owner } else { agent };
                app.ingest(writer, &session, vec![event]).await
            }
        };
        // A refused command is a domain rejection with a catalog code, never a server fault.
        if response.status().is_server_error() {
            return Err(format!("step {n} {step:?}: {}", response.status()));
        }
    }
    // The fold of `evolve` over the lifecycle events the log holds…
    let log = app.replay(owner, &session, 0, 1000).await;
    let folded = log["events"].as_array().expect("events").iter().fold(Session::new(), |session, event| {
        let payload = event["payload"].to_string();
        match SessionEvent::from_envelope_parts(event["type"].as_str().expect("type"), &payload) {
            Some(change) => evolve(session, &change),
            None => session,
        }
    });
    // …is what the projection answers.
    let row: Value = app.get(&format!("/v1/call/sessions/{session}"), owner).await.json().await.expect("json");
    let projected = (
        row["state"].as_str().map(str::to_owned),
        row["version"].as_u64(),
        row["failureCode"].as_str().map(str::to_owned),
        row["provider"]["provider"].as_str().map(str::to_owned),
        row["provider"]["providerRoomId"].as_str().map(str::to_owned),
    );
    let expected = (
        Some(folded.state.as_str().to_owned()),
        Some(folded.version),
        folded.failure_code.clone(),
        folded.provider.provider.clone(),
        folded.provider.provider_room_id.clone(),
    );
    if projected != expected {
        return Err(format!("projection {projected:?} != fold {expected:?} after {steps:?}"));
    }
    Ok(())
}

use callstream::domain::session::{Session, SessionEvent, evolve};

/// The `sessions` row is the fold of `evolve` over the session's log, whatever the history:
/// random commands (accepted or refused) interleaved with events other writers ingest.
#[test]
fn the_projection_is_the_fold_of_evolve_over_random_histories() {
    use proptest::test_runner::{Config, TestCaseError, TestRunner};
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let app = runtime.block_on(spawn_app());
    let owner = app.user("alice");
    let agent = app.token("media-bridge", "t1", &[Role::Service]);
    let mut runner = TestRunner::new(Config { cases: 48, failure_persistence: None, ..Config::default() });
    let histories = proptest::collection::vec(any_step(), 1..24);
    let result = runner.run(&histories, |steps| {
        runtime.block_on(run_history(&app, &owner, &agent, &steps)).map_err(TestCaseError::fail)
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}
