//! Fuzzing the real ingest and WebSocket paths: every registered type's valid fixture with each
//! payload value replaced by extreme and boundary values, wrong types and malformed bodies. The
//! server never answers 5xx, every 4xx carries a catalog code, and a rejected request appends
//! nothing.

use std::collections::BTreeSet;

use futures_util::SinkExt;

use callstream::domain::event_types::{EventType, Writers};
use callstream::domain::principal::Role;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};
use crate::ws;

fn catalog() -> BTreeSet<String> {
    callstream::error::catalog()["codes"]
        .as_array()
        .expect("codes")
        .iter()
        .map(|c| c["code"].as_str().expect("code").to_owned())
        .collect()
}

/// Values at and beyond the edges of what the schemas and the store hold.
fn extremes() -> Vec<Value> {
    vec![
        json!(0),
        json!(-1),
        json!(1),
        json!(1.0),
        json!(1.5),
        json!(-0.0),
        json!(9_007_199_254_740_991_i64),
        json!(9_007_199_254_740_992_i64),
        json!(i64::MAX),
        json!(9_223_372_036_854_775_808_u64),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(1e308),
        json!(-1e308),
        json!(1e-308),
        json!(""),
        json!("x".repeat(20_000)),
        json!("\u{0}\u{1}💥\u{202e}"),
        json!(null),
        json!(true),
        json!([]),
        json!({}),
        json!([1, "two", null]),
    ]
}

/// Every `(pointer, value)` replacement of one leaf of `payload`, plus extra and missing keys.
fn mutations(payload: &Value) -> Vec<Value> {
    fn leaves(value: &Value, pointer: String, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => map.iter().for_each(|(k, v)| leaves(v, format!("{pointer}/{k}"), out)),
            Value::Array(items) => items.iter().enumerate().for_each(|(i, v)| leaves(v, format!("{pointer}/{i}"), out)),
            _ => out.push(pointer),
        }
    }
    let mut pointers = Vec::new();
    leaves(payload, String::new(), &mut pointers);
    let mut out = Vec::new();
    for pointer in &pointers {
        for extreme in extremes() {
            let mut mutated = payload.clone();
            if let Some(slot) = mutated.pointer_mut(pointer) {
                *slot = extreme;
            }
            out.push(mutated);
        }
    }
    for extreme in extremes() {
        out.push(extreme.clone());
        let mut extra = payload.clone();
        if let Some(map) = extra.as_object_mut() {
            map.insert("unexpected".into(), extreme);
        }
        out.push(extra);
    }
    if let Some(map) = payload.as_object() {
        for key in map.keys() {
            let mut missing = payload.clone();
            missing.as_object_mut().expect("object").remove(key);
            out.push(missing);
        }
    }
    out
}

fn valid_envelopes() -> Vec<(EventType, Value)> {
    let fixtures: Value =
        serde_json::from_str(include_str!("../../fixtures/realtime-event-contract.v1.json")).expect("fixtures");
    EventType::all().map(|t| (t, fixtures["types"][t.as_str()]["valid"][0]["envelope"].clone())).collect()
}

/// `envelope` for `session`, as `event_id`, carrying `payload`.
fn with_payload(envelope: &Value, session: &str, event_id: &str, payload: Value) -> Value {
    let mut event = envelope.clone();
    event["sessionId"] = json!(session);
    event["eventId"] = json!(event_id);
    event["payload"] = payload;
    event
}

async fn head(app: &TestApp, token: &str, session: &str) -> u64 {
    app.replay(token, session, 0, 1).await["diagnostics"]["headSeq"].as_u64().expect("head")
}

#[tokio::test]
async fn ingest_never_fails_with_5xx_and_rejections_change_nothing() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let agent = app.token("agent", "t1", &[Role::Service]);
    let codes = catalog();
    let seed: u64 = std::env::var("FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("FUZZ_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut sent, mut accepted) = (0, 0);
    for (event_type, envelope) in valid_envelopes() {
        let token = if event_type.writers() == Writers::Client && rng.random_bool(0.5) { &alice } else { &agent };
        let session = app.create_session(&alice).await;
        for (n, payload) in mutations(&envelope["payload"]).into_iter().enumerate() {
            let event = with_payload(&envelope, &session, &format!("fz-{}-{n}", event_type.as_str()), payload);
            let before = head(&app, &alice, &session).await;
            let response = app.ingest(token, &session, vec![event.clone()]).await;
            let status = response.status();
            let body: Value = response.json().await.expect("every answer is JSON");
            sent += 1;
            assert!(status.as_u16() < 500, "seed {seed}: {status} for {event}: {body}");
            let after = head(&app, &alice, &session).await;
            if status.is_success() {
                accepted += 1;
                assert_eq!(after, before + 1, "seed {seed}: {event}");
            } else {
                let code = body["error"]["code"].as_str().expect("code");
                assert!(codes.contains(code), "seed {seed}: {code} is not in the catalog");
                assert_eq!(after, before, "seed {seed}: a rejection appended something: {event}");
            }
        }
    }
    // Bodies that are not an ingest batch at all.
    let session = app.create_session(&alice).await;
    let url = format!("{}/v1/realtime/sessions/{session}/events", app.address);
    for body in ["", "{", "[]", "null", "{\"events\": {}}", "{\"events\": [1, 2]}", "{\"events\": \"x\"}", "\u{0}"] {
        let response = app
            .client
            .post(&url)
            .bearer_auth(&alice)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .expect("send");
        assert!(response.status().is_client_error(), "{body:?}: {}", response.status());
        let answer: Value = response.json().await.expect("json");
        assert!(codes.contains(answer["error"]["code"].as_str().expect("code")), "{body:?}: {answer}");
    }
    assert_eq!(head(&app, &alice, &session).await, 1);
    assert!(sent > 1000 && accepted > 0, "the fuzz ran {sent} requests, {accepted} accepted");
}

#[tokio::test]
async fn websocket_publish_never_fails_with_internal_errors() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let agent = app.token("agent", "t1", &[Role::Service]);
    let codes = catalog();
    let session = app.create_session(&alice).await;
    let mut socket = ws::connect(&app, &agent, &session, "").await;
    assert_eq!(socket.next().await["op"], "welcome");
    let mut expected_head = 1;
    for (event_type, envelope) in valid_envelopes() {
        for (n, payload) in mutations(&envelope["payload"]).into_iter().enumerate().step_by(3) {
            let event = with_payload(&envelope, &session, &format!("wz-{}-{n}", event_type.as_str()), payload);
            socket.send(json!({"op": "publish", "event": event, "ref": format!("r{n}")})).await;
            let reply = loop {
                let frame = socket.next().await;
                if frame["op"] != "event" {
                    break frame;
                }
            };
            match reply["op"].as_str() {
                Some("published") => expected_head += 1,
                Some("error") => {
                    let code = reply["code"].as_str().expect("code");
                    assert!(codes.contains(code) && code != "INTERNAL", "{code} for {event}");
                }
                _ => panic!("unexpected reply {reply}"),
            }
        }
    }
    for frame in
        ["{", "[]", "null", "{\"op\":\"publish\"}", "{\"op\":\"ack\",\"seq\":-1}", "{\"op\":\"ack\",\"seq\":1e308}"]
    {
        socket.socket.send(tokio_tungstenite::tungstenite::Message::Text(frame.into())).await.expect("send");
        let reply = socket.next().await;
        assert_eq!(reply["code"], "WS_FRAME_INVALID", "{frame}: {reply}");
    }
    socket.send(json!({"op": "ping"})).await;
    assert_eq!(socket.next().await["op"], "pong", "the connection stays open");
    assert_eq!(head(&app, &alice, &session).await, expected_head, "exactly the published events were appended");
}
