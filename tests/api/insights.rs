//! Post-call insights through the real server (issue 14): live while the call runs, final as
//! `insights.computed` when it ends, new revisions on late transcript changes, the hand-counted
//! fixtures within ±5 %, access, erasure and rebuild.

use callstream::domain::principal::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, error_code, spawn_app, spawn_app_with};

#[allow(clippy::too_many_arguments)]
fn segment(
    session: &str,
    id: &str,
    kind: &str,
    revision: u64,
    speaker: &str,
    start: i64,
    end: i64,
    text: &str,
) -> Value {
    // An edit corrects the text; speaker and timing stay the segment's.
    let payload = if kind == "edited" {
        json!({"segmentId": id, "revision": revision, "text": text, "editedBy": speaker})
    } else {
        json!({"segmentId": id, "revision": revision, "speaker": speaker, "startMs": start, "endMs": end, "text": text})
    };
    json!({
        "eventId": format!("{session}-{id}-r{revision}-{kind}"), "sessionId": session, "ts": "2026-11-23T10:00:00.000Z",
        "type": format!("transcript.segment.{kind}"), "payload": payload, "schemaVersion": 1
    })
}

async fn transition(app: &TestApp, token: &str, session: &str, to: &str) {
    let response = app.post(&format!("/v1/call/sessions/{session}/state"), token, &json!({ "to": to })).await;
    assert_eq!(response.status(), StatusCode::OK, "→ {to}");
}

async fn insights(app: &TestApp, token: &str, session: &str) -> Value {
    let response = app.get(&format!("/v1/call/sessions/{session}/insights"), token).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    let schema: Value =
        serde_json::from_str(include_str!("../../schemas/api.insights.v1.json")).expect("schemas/api.insights.v1.json");
    let validator = jsonschema::draft202012::new(&schema).expect("a valid schema");
    let errors: Vec<String> = validator.iter_errors(&body).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "the answer does not match schemas/api.insights.v1.json: {errors:?}\n{body:#}");
    body
}

async fn computed_events(app: &TestApp, token: &str, session: &str) -> Vec<Value> {
    let replay = app.replay(token, session, 0, 1000).await;
    replay["events"].as_array().expect("events").iter().filter(|e| e["type"] == "insights.computed").cloned().collect()
}

fn speaker<'a>(view: &'a Value, name: &str) -> &'a Value {
    view["speakers"].as_array().expect("speakers").iter().find(|s| s["speaker"] == name).expect("speaker")
}

#[tokio::test]
async fn live_insights_count_finals_and_edits_and_the_end_appends_them_once() {
    let app = spawn_app_with(&[("CALLSTREAM_TEST_CLOCK", "1")]).await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    transition(&app, &alice, &session, "connecting").await;
    transition(&app, &alice, &session, "active").await;
    let events = vec![
        segment(&session, "s1", "partial", 0, "alice", 0, 2_000, "um so"),
        segment(&session, "s1", "final", 1, "alice", 0, 4_000, "Um, so we ship on Friday"),
        segment(&session, "s2", "final", 1, "bob", 3_500, 6_000, "Friday works, uh, for me"),
        // Still a partial: not counted until final.
        segment(&session, "s3", "partial", 0, "alice", 9_000, 10_000, "and um um um"),
    ];
    assert_eq!(app.ingest(&alice, &session, events).await.status(), StatusCode::OK);

    let live = insights(&app, &alice, &session).await;
    assert_eq!((live["final"].as_bool(), live["revision"].clone()), (Some(false), Value::Null));
    assert_eq!((live["segments"].as_u64(), live["pendingPartials"].as_u64()), (Some(2), Some(1)));
    let (a, b) = (speaker(&live, "alice"), speaker(&live, "bob"));
    assert_eq!((a["words"].as_u64(), a["fillers"]["count"].as_u64()), (Some(6), Some(1)), "{a}");
    assert_eq!(a["fillers"]["byFiller"], json!({"um": 1}), "\"so we\" is no filler");
    assert_eq!((b["words"].as_u64(), b["fillers"]["byFiller"].clone()), (Some(5), json!({"uh": 1})));
    assert_eq!(b["interruptions"], 1, "bob started before alice finished");
    assert_eq!(live["call"]["overlapMs"], 500);
    assert!(computed_events(&app, &alice, &session).await.is_empty(), "nothing final while the call runs");

    // An edit replaces the final it corrects.
    let edit = segment(&session, "s1", "edited", 2, "alice", 0, 4_000, "So we ship on Friday");
    assert_eq!(app.ingest(&alice, &session, vec![edit]).await.status(), StatusCode::OK);
    assert_eq!(speaker(&insights(&app, &alice, &session).await, "alice")["fillers"]["count"], 0);

    app.advance_clock(30).await;
    transition(&app, &alice, &session, "ended").await;
    let computed = computed_events(&app, &alice, &session).await;
    assert_eq!(computed.len(), 1, "one insights.computed when the call ends");
    assert_eq!(computed[0]["actor"]["kind"], "system");
    assert_eq!(
        (computed[0]["payload"]["revision"].as_u64(), computed[0]["payload"]["reason"].as_str()),
        (Some(1), Some("ended"))
    );
    let done = insights(&app, &alice, &session).await;
    assert_eq!((done["final"].as_bool(), done["revision"].as_u64()), (Some(true), Some(1)));
    assert_eq!(done["computedAt"], computed[0]["recordedAt"]);
    let duration = done["call"]["durationMs"].as_i64().expect("duration");
    assert!((30_000..32_000).contains(&duration), "active → ended on the clock: {duration}");

    // Repeating the end changes nothing; a late final is a new revision; a late partial is not.
    transition(&app, &alice, &session, "ended").await;
    let late = segment(&session, "s3", "final", 1, "alice", 9_000, 10_000, "and um that's it");
    assert_eq!(app.ingest(&alice, &session, vec![late]).await.status(), StatusCode::OK);
    let partial = segment(&session, "s4", "partial", 0, "bob", 11_000, 12_000, "uh");
    assert_eq!(app.ingest(&alice, &session, vec![partial]).await.status(), StatusCode::OK);
    let computed = computed_events(&app, &alice, &session).await;
    assert_eq!(computed.len(), 2, "{computed:#?}");
    assert_eq!(computed[1]["payload"]["reason"], "transcript_changed");
    let revised = insights(&app, &alice, &session).await;
    // The final numbers are revision 2's: the partial after it changed nothing they count.
    assert_eq!((revised["revision"].as_u64(), revised["pendingPartials"].as_u64()), (Some(2), Some(0)));
    assert_eq!(speaker(&revised, "alice")["fillers"]["count"], 1);
}

#[tokio::test]
async fn clients_cannot_forge_insights() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    let contract: Value =
        serde_json::from_str(include_str!("../../fixtures/realtime-event-contract.v1.json")).expect("fixtures");
    let mut forged = contract["types"]["insights.computed"]["valid"][0]["envelope"].clone();
    forged["sessionId"] = json!(session);
    let service = app.token("agent", "t1", &[Role::Service]);
    for token in [&alice, &service] {
        let response = app.ingest(token, &session, vec![forged.clone()]).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(error_code(response).await, "EVENT_TYPE_RESERVED");
    }
}

#[tokio::test]
async fn the_owner_and_the_tenants_operators_read_insights_nobody_else() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    assert_eq!(app.get(&format!("/v1/call/sessions/{session}/insights"), &alice).await.status(), StatusCode::OK);
    let operator = app.token("ops", "t1", &[Role::Operator]);
    assert_eq!(app.get(&format!("/v1/call/sessions/{session}/insights"), &operator).await.status(), StatusCode::OK);
    for stranger in [app.user("mallory"), app.token("ops", "t2", &[Role::Operator])] {
        let response = app.get(&format!("/v1/call/sessions/{session}/insights"), &stranger).await;
        assert_eq!(error_code(response).await, "SESSION_NOT_FOUND");
    }
    let unknown = app.get("/v1/call/sessions/cs_nope/insights", &alice).await;
    assert_eq!(error_code(unknown).await, "SESSION_NOT_FOUND");
}

/// Each fixture transcript in `fixtures/insights/` went through ingest as it would from a
/// speech-to-text worker; the filler count per speaker is within ±5 % of the hand count.
#[tokio::test]
async fn fixture_transcripts_agree_with_their_hand_counts_within_five_percent() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let mut checked = 0;
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/insights")).expect("fixtures") {
        let path = entry.expect("entry").path();
        let fixture: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        let session = app.create_session(&alice).await;
        transition(&app, &alice, &session, "connecting").await;
        transition(&app, &alice, &session, "active").await;
        let segments = fixture["segments"].as_array().expect("segments");
        let events = segments
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let (speaker, text) = (s["speaker"].as_str().expect("speaker"), s["text"].as_str().expect("text"));
                let (start, end) = (s["startMs"].as_i64().expect("start"), s["endMs"].as_i64().expect("end"));
                segment(&session, &format!("seg{i}"), "final", 1, speaker, start, end, text)
            })
            .collect();
        assert_eq!(app.ingest(&alice, &session, events).await.status(), StatusCode::OK);
        transition(&app, &alice, &session, "ended").await;
        let view = insights(&app, &alice, &session).await;
        for (name, hand) in fixture["handCount"].as_object().expect("handCount") {
            let hand = hand.as_u64().expect("count");
            let per_segment: u64 = segments
                .iter()
                .filter(|s| s["speaker"] == name.as_str())
                .map(|s| s["handFillers"].as_u64().expect("n"))
                .sum();
            assert_eq!(per_segment, hand, "{}: the hand count is the sum of its segments'", path.display());
            let counted = speaker(&view, name)["fillers"]["count"].as_u64().expect("count");
            let off = (counted as f64 - hand as f64).abs() / hand as f64;
            println!("{}: {name} hand {hand}, counted {counted} ({:.1} % off)", path.display(), off * 100.0);
            assert!(off <= 0.05, "{}: {name} counted {counted}, hand count {hand}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 4, "the fixtures hold at least four speakers: {checked}");
}

#[tokio::test]
async fn erased_insights_keep_their_numbers_and_lose_their_speakers() {
    let app = spawn_app().await;
    let carol = app.token("carol", "t-gone", &[Role::User]);
    let session = app.create_session(&carol).await;
    transition(&app, &carol, &session, "connecting").await;
    transition(&app, &carol, &session, "active").await;
    let events = vec![
        segment(&session, "s1", "final", 1, "Carol Jones", 0, 3_000, "um, call me on 555-0199"),
        segment(&session, "s2", "final", 1, "Dan Smith", 3_500, 5_000, "uh okay"),
    ];
    assert_eq!(app.ingest(&carol, &session, events).await.status(), StatusCode::OK);
    transition(&app, &carol, &session, "ended").await;
    let before = insights(&app, &carol, &session).await;

    let operator = app.token("ops", "t-gone", &[Role::Operator]);
    let erased = app.post("/v1/governance/tenants/t-gone/erase", &operator, &json!({"confirm": "t-gone"})).await;
    assert_eq!(erased.status(), StatusCode::OK);
    let after = insights(&app, &carol, &session).await;
    assert_eq!(after["erased"], true);
    assert_eq!(after["call"], before["call"], "the numbers survive the erasure");
    for (was, is) in before["speakers"].as_array().expect("s").iter().zip(after["speakers"].as_array().expect("s")) {
        assert_eq!(is["speaker"], Value::Null);
        assert_eq!(is["fillers"], was["fillers"]);
        assert_eq!(is["talkTimeMs"], was["talkTimeMs"]);
    }
    let served = serde_json::to_string(&after).expect("json");
    assert!(!served.contains("Carol") && !served.contains("Dan"), "{served}");
}

#[tokio::test]
async fn rebuild_reproduces_live_and_final_insights() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let (open, ended) = (app.create_session(&alice).await, app.create_session(&alice).await);
    for session in [&open, &ended] {
        transition(&app, &alice, session, "connecting").await;
        transition(&app, &alice, session, "active").await;
        let events = vec![
            segment(session, "s1", "final", 1, "alice", 0, 3_000, "So, um, hello there"),
            segment(session, "s2", "final", 1, "bob", 6_000, 8_000, "you know, hi"),
        ];
        assert_eq!(app.ingest(&alice, session, events).await.status(), StatusCode::OK);
    }
    transition(&app, &alice, &ended, "ended").await;
    let strip = |mut view: Value| {
        // Live insights are measured up to now.
        view.as_object_mut().expect("object").remove("computedAt");
        view["call"]
            .as_object_mut()
            .expect("call")
            .retain(|k, _| !["durationMs", "silenceMs", "silenceShare", "speechMs"].contains(&k.as_str()));
        view
    };
    let before = (strip(insights(&app, &alice, &open).await), insights(&app, &alice, &ended).await);
    let database = app.database();
    let dir = app.stop().await;
    callstream::store::rebuild(database, &crate::helpers::master_key()).expect("rebuild");
    let app = crate::helpers::spawn_app_in(dir).await;
    let alice = app.user("alice");
    assert_eq!(strip(insights(&app, &alice, &open).await), before.0);
    assert_eq!(insights(&app, &alice, &ended).await, before.1);
}

const VERDICT: &str = r#"{"summary": "A focused call.", "recommendations": ["Pause instead of saying um."], "scores": {"clarity": 82}, "provider": "acme-coach", "model": "coach-2"}"#;

/// A server whose `insights.evaluate` posts to a local evaluator answering `answers` in turn.
async fn with_evaluator(answers: Vec<(u16, &str)>) -> (TestApp, crate::sink::Sink, tempfile::TempDir) {
    let evaluator = crate::sink::start_answering(answers.into_iter().map(|(s, b)| (s, b.to_owned())).collect()).await;
    let dir = tempfile::tempdir().expect("dir");
    let policy = crate::orchestration::open_policy(dir.path(), 300);
    let app = spawn_app_with(&[
        ("CALLSTREAM_POLICY_FILE", &policy),
        ("CALLSTREAM_INSIGHTS_EVALUATOR_URL", &evaluator.url),
        ("CALLSTREAM_EXECUTOR_TIMEOUT_MS", "300"),
        ("CALLSTREAM_EXECUTOR_ATTEMPTS", "3"),
    ])
    .await;
    (app, evaluator, dir)
}

/// An ended call with a short transcript, evaluated; answers the ack and the outcome's result.
async fn evaluate_a_call(app: &TestApp) -> (Value, Value) {
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    transition(app, &alice, &session, "connecting").await;
    transition(app, &alice, &session, "active").await;
    let events = vec![
        segment(&session, "s1", "final", 1, "alice", 0, 3_000, "Um, so, we ship on Friday"),
        segment(&session, "s2", "final", 1, "bob", 3_500, 5_000, "Sounds good"),
    ];
    assert_eq!(app.ingest(&alice, &session, events).await.status(), StatusCode::OK);
    transition(app, &alice, &session, "ended").await;
    let request = json!({"actionId": format!("eval-{session}"), "sessionId": session, "type": "insights.evaluate",
        "params": {"instructions": "Coach the seller."}});
    let response = app.post("/v1/orchestration/actions/execute", &alice, &request).await;
    assert_eq!(response.status(), StatusCode::OK, "an evaluation runs after the call");
    let ack: Value = response.json().await.expect("json");
    let action: Value =
        app.get(&format!("/v1/orchestration/actions/eval-{session}"), &alice).await.json().await.expect("json");
    let executed = action["history"]
        .as_array()
        .expect("history")
        .iter()
        .find(|e| e["type"] == "orchestration.action.executed")
        .expect("executed")
        .clone();
    // A retry answers the same ack and evaluates nothing again.
    let again: Value =
        app.post("/v1/orchestration/actions/execute", &alice, &request).await.json().await.expect("json");
    assert_eq!(again, ack);
    (ack, executed["payload"]["result"].clone())
}

#[tokio::test]
async fn an_evaluator_that_answers_is_recorded_with_its_provider_model_latency_and_attempts() {
    let (app, evaluator, _dir) = with_evaluator(vec![(200, VERDICT)]).await;
    let (ack, result) = evaluate_a_call(&app).await;
    assert_eq!(ack["ack"]["status"], "executed");
    assert_eq!(
        (result["source"].as_str(), result["provider"].as_str(), result["model"].as_str()),
        (Some("evaluator"), Some("acme-coach"), Some("coach-2"))
    );
    assert_eq!((result["attempts"].as_u64(), result["fallbackReason"].clone()), (Some(1), Value::Null));
    assert!(result["latencyMs"].as_u64().is_some());
    assert_eq!(result["evaluation"]["scores"]["clarity"], 82.0);
    assert_eq!(evaluator.count(), 1);
    let request = evaluator.received.lock().expect("lock")[0].clone();
    let body: Value = serde_json::from_str(&request.body).expect("json body");
    assert_eq!(body["instructions"], "Coach the seller.");
    assert_eq!(body["insights"]["final"], true);
    assert_eq!(body["transcript"].as_array().map(Vec::len), Some(2));
    assert!(request.headers["webhook-signature"].starts_with("v1,"), "signed like every outbound call");
    assert_eq!(request.headers["webhook-id"], ack["actionId"]);
}

#[tokio::test]
async fn an_evaluator_that_fails_then_recovers_is_retried() {
    let (app, evaluator, _dir) = with_evaluator(vec![(503, "{}"), (503, "{}"), (200, VERDICT)]).await;
    let (_, result) = evaluate_a_call(&app).await;
    assert_eq!((result["source"].as_str(), result["attempts"].as_u64()), (Some("evaluator"), Some(3)));
    assert_eq!(evaluator.count(), 3);
}

#[tokio::test]
async fn an_evaluator_that_never_answers_falls_back_to_the_rules() {
    let (app, evaluator, _dir) = with_evaluator(vec![(0, "")]).await;
    let (ack, result) = evaluate_a_call(&app).await;
    assert_eq!(ack["ack"]["status"], "executed", "the rules still evaluate the call");
    assert_eq!((result["source"].as_str(), result["attempts"].as_u64()), (Some("rules"), Some(3)));
    assert_eq!(result["fallbackReason"]["code"], "TARGET_TIMEOUT");
    assert!(result["evaluation"]["summary"].as_str().is_some_and(|s| s.starts_with("2 speakers")), "{result}");
    assert_eq!(evaluator.count(), 3);
}

#[tokio::test]
async fn an_evaluator_answering_nonsense_falls_back_to_the_rules() {
    for nonsense in ["not json", r#"{"summary": ""}"#, r#"{"recommendations": ["x"]}"#] {
        let (app, evaluator, _dir) = with_evaluator(vec![(200, nonsense)]).await;
        let (_, result) = evaluate_a_call(&app).await;
        assert_eq!(result["source"], "rules", "{nonsense}");
        assert_eq!(result["fallbackReason"]["code"], "EVALUATOR_RESPONSE_INVALID", "{nonsense}");
        assert_eq!((result["attempts"].as_u64(), evaluator.count()), (Some(1), 1), "an answer is not retried");
    }
}

#[tokio::test]
async fn without_an_evaluator_the_rules_evaluate_and_say_so() {
    let app = spawn_app().await;
    let (_, result) = evaluate_a_call(&app).await;
    assert_eq!(
        (result["source"].as_str(), result["fallbackReason"]["code"].as_str()),
        (Some("rules"), Some("EVALUATOR_NOT_CONFIGURED"))
    );
    assert_eq!(result["basis"]["insightsRevision"], 1);
}

#[test]
fn an_evaluator_outside_the_allowlist_stops_start_up() {
    let dir = tempfile::tempdir().expect("dir");
    let mut env = crate::helpers::test_env(dir.path());
    env.insert("CALLSTREAM_INSIGHTS_EVALUATOR_URL", "https://evaluator.example.com/v1".to_owned());
    let err = callstream::config::Config::load(|name| env.get(name).cloned(), None).expect_err("refused");
    assert_eq!(err.variable, "CALLSTREAM_INSIGHTS_EVALUATOR_URL");
}
