//! LiveKit tokens and webhooks: the official Python SDK as an independent peer, plus attacks and
//! the ordering cases LiveKit produces in practice.

use std::io::Write;
use std::process::{Command, Stdio};

use base64::Engine;
use callstream::domain::principal::Role;
use livekit_api::access_token::AccessToken;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{TestApp, error_code, spawn_app};

/// Ask LiveKit's own Python SDK (`tests/interop/livekit_peer.py`).
fn python_peer(request: Value) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/livekit_peer.py");
    let mut child = Command::new(crate::python::interpreter())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the test environment's python runs");
    child.stdin.take().expect("stdin").write_all(request.to_string().as_bytes()).expect("write");
    let output = child.wait_with_output().expect("peer");
    assert!(output.status.success(), "the LiveKit Python SDK peer failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("peer answers JSON")
}

/// Sign like the LiveKit server, with the `livekit-api` crate.
fn sign(app: &TestApp, secret: &str, body: &str) -> String {
    let digest = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body.as_bytes()));
    AccessToken::with_api_key(&app.config.livekit.api_key, secret).with_sha256(&digest).to_jwt().expect("sign")
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn webhook_body(id: &str, event: &str, room: &str, extra: Value) -> String {
    let mut body =
        json!({"event": event, "id": id, "createdAt": now().to_string(), "room": {"name": room, "sid": "RM_1"}});
    if let (Value::Object(target), Value::Object(more)) = (&mut body, extra) {
        target.extend(more);
    }
    body.to_string()
}

async fn deliver(app: &TestApp, authorization: Option<&str>, body: &str) -> reqwest::Response {
    let mut request = app
        .client
        .post(format!("{}/v1/webhooks/livekit", app.address))
        .header("Content-Type", "application/webhook+json");
    if let Some(authorization) = authorization {
        request = request.header("Authorization", authorization);
    }
    request.body(body.to_owned()).send().await.expect("send")
}

async fn linked_session(app: &TestApp, token: &str) -> (String, String) {
    let session = app.create_session(token).await;
    let issued: Value = app
        .post(&format!("/v1/call/sessions/{session}/livekit-token"), token, &json!({}))
        .await
        .json()
        .await
        .expect("json");
    (session, issued["room"].as_str().expect("room").to_owned())
}

fn secret(app: &TestApp) -> String {
    app.config.livekit.api_secret.expose().to_owned()
}

#[tokio::test]
async fn issued_tokens_verify_with_the_official_sdk() {
    // Set up the peer before the server runs: a first-use pip install would stall it.
    crate::python::interpreter();
    let app = spawn_app().await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    let path = format!("/v1/call/sessions/{session}/livekit-token");
    let response = app.client.post(format!("{}{path}", app.address)).bearer_auth(&alice).send().await.expect("send");
    assert_eq!(response.status(), StatusCode::OK, "no body is fine");
    let issued: Value = response.json().await.expect("json");
    assert_eq!(issued["room"], session.as_str(), "the room is mapped to the session");
    assert_eq!(issued["identity"], "alice");
    assert_eq!(issued["url"], app.config.livekit.url.as_str());

    let claims = python_peer(
        json!({"op": "verify", "apiKey": app.config.livekit.api_key, "apiSecret": secret(&app), "token": issued["token"]}),
    );
    assert_eq!(claims["identity"], "alice");
    assert_eq!(
        claims["video"],
        json!({"roomJoin": true, "room": session, "canPublish": true, "canSubscribe": true, "roomAdmin": false})
    );

    let again: Value = app.post(&path, &alice, &json!({"ttlSecs": 3600})).await.json().await.expect("json");
    assert_eq!(again["room"], issued["room"], "the mapping is stable");
    let view: Value = app.get(&format!("/v1/call/sessions/{session}"), &alice).await.json().await.expect("json");
    assert_eq!(view["provider"]["provider"], "livekit");
    assert_eq!(view["provider"]["providerRoomId"], session.as_str());
    assert_eq!(app.replay(&alice, &session, 0, 10).await["diagnostics"]["headSeq"], 2, "one provider_linked, once");
}

#[tokio::test]
async fn tokens_are_refused_to_others_and_for_ended_calls() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    let path = format!("/v1/call/sessions/{session}/livekit-token");
    assert_eq!(error_code(app.post(&path, &app.user("bob"), &json!({})).await).await, "SESSION_NOT_FOUND");
    assert_eq!(
        error_code(app.post(&path, &app.token("ops", "t1", &[Role::Operator]), &json!({})).await).await,
        "FORBIDDEN_ROLE"
    );
    for ttl in [59, 3601] {
        assert_eq!(error_code(app.post(&path, &alice, &json!({"ttlSecs": ttl})).await).await, "VALIDATION_FAILED");
    }
    app.post(&format!("/v1/call/sessions/{session}/state"), &alice, &json!({"to": "failed"})).await;
    let refused = app.post(&path, &alice, &json!({})).await;
    assert_eq!(refused.status(), StatusCode::GONE);
    assert_eq!(error_code(refused).await, "SESSION_TERMINATED");
}

#[tokio::test]
async fn webhooks_signed_by_the_official_sdk_are_translated_once() {
    // Set up the peer before the server runs: a first-use pip install would stall it.
    crate::python::interpreter();
    let app = spawn_app().await;
    let alice = app.user("alice");
    let (session, room) = linked_session(&app, &alice).await;
    let created = now().to_string();
    let events = json!([
        {"event": "room_started", "id": "EV_r1", "createdAt": created, "room": {"name": room, "sid": "RM_1"}},
        {"event": "participant_joined", "id": "EV_p1", "createdAt": created, "room": {"name": room},
         "participant": {"identity": "alice", "sid": "PA_1", "name": "Alice"}},
        {"event": "track_published", "id": "EV_t1", "createdAt": created, "room": {"name": room},
         "participant": {"identity": "alice", "sid": "PA_1"}, "track": {"sid": "TR_1", "type": "AUDIO", "source": "MICROPHONE"}},
        {"event": "egress_started", "id": "EV_e1", "createdAt": created, "egressInfo": {"egressId": "EG_1", "roomName": room, "status": "EGRESS_STARTING"}}
    ]);
    let signed = python_peer(
        json!({"op": "sign", "apiKey": app.config.livekit.api_key, "apiSecret": secret(&app), "events": events}),
    );
    for delivery in signed.as_array().expect("signed") {
        let (body, authorization) =
            (delivery["body"].as_str().expect("body"), delivery["authorization"].as_str().expect("auth"));
        let response = deliver(&app, Some(authorization), body).await;
        assert_eq!(response.status(), StatusCode::OK, "{body}");
        assert_eq!(response.json::<Value>().await.expect("json")["duplicate"], false);
        let replayed = deliver(&app, Some(&format!("Bearer {authorization}")), body).await;
        assert_eq!(replayed.status(), StatusCode::OK);
        assert_eq!(replayed.json::<Value>().await.expect("json"), json!({"duplicate": true}));
    }
    let log = app.replay(&alice, &session, 2, 100).await;
    let types: Vec<&str> =
        log["events"].as_array().expect("events").iter().map(|e| e["type"].as_str().expect("type")).collect();
    assert_eq!(
        types,
        ["call.room.started", "call.participant.joined", "call.track.published", "call.recording.started"]
    );
    assert_eq!(log["events"][2]["payload"]["kind"], "audio");
    assert_eq!(log["events"][0]["actor"]["kind"], "livekit");
    let view: Value = app.get(&format!("/v1/call/sessions/{session}"), &alice).await.json().await.expect("json");
    assert_eq!(view["participants"][0]["state"], "joined");
    assert_eq!(view["recordings"][0]["state"], "active");
    assert_eq!(view["room"]["state"], "started");
}

#[tokio::test]
async fn webhook_attacks_are_rejected_and_append_nothing() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let (session, room) = linked_session(&app, &alice).await;
    let body = webhook_body("EV_x", "room_started", &room, json!({}));
    let good = sign(&app, &secret(&app), &body);

    let tampered = body.replace("RM_1", "RM_2");
    let cases: Vec<(&str, Option<String>, String, StatusCode, &str)> = vec![
        ("tampered body", Some(good.clone()), tampered, StatusCode::UNAUTHORIZED, "WEBHOOK_SIGNATURE_INVALID"),
        (
            "wrong key",
            Some(sign(&app, "another-secret-0123456789abcdef0123456", &body)),
            body.clone(),
            StatusCode::UNAUTHORIZED,
            "WEBHOOK_SIGNATURE_INVALID",
        ),
        ("missing header", None, body.clone(), StatusCode::UNAUTHORIZED, "WEBHOOK_SIGNATURE_INVALID"),
        (
            "garbage header",
            Some("Bearer x.y.z".into()),
            body.clone(),
            StatusCode::UNAUTHORIZED,
            "WEBHOOK_SIGNATURE_INVALID",
        ),
        ("user JWT", Some(alice.clone()), body.clone(), StatusCode::UNAUTHORIZED, "WEBHOOK_SIGNATURE_INVALID"),
    ];
    for (name, authorization, body, status, code) in cases {
        let response = deliver(&app, authorization.as_deref(), &body).await;
        assert_eq!(response.status(), status, "{name}");
        assert_eq!(error_code(response).await, code, "{name}");
    }
    // Well past the 300 s tolerance, so a loaded machine's second of delay cannot bring them in.
    for (name, created_at) in [("stale", now() - 330), ("future", now() + 330)] {
        let body = json!({"event": "room_started", "id": format!("EV_{name}"), "createdAt": created_at, "room": {"name": room}}).to_string();
        let response = deliver(&app, Some(&sign(&app, &secret(&app), &body)), &body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{name}");
        assert_eq!(error_code(response).await, "WEBHOOK_STALE", "{name}");
    }
    let not_json = "not json";
    assert_eq!(
        error_code(deliver(&app, Some(&sign(&app, &secret(&app), not_json)), not_json).await).await,
        "WEBHOOK_INVALID"
    );
    let huge = format!("{{\"event\":\"room_started\",\"pad\":\"{}\"}}", "x".repeat(300_000));
    let oversized = deliver(&app, Some(&sign(&app, &secret(&app), &huge)), &huge).await;
    assert_eq!(oversized.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(app.replay(&alice, &session, 0, 10).await["diagnostics"]["headSeq"], 2, "nothing appended");

    // The genuine one still goes through afterwards.
    assert_eq!(deliver(&app, Some(&good), &body).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn unknown_rooms_and_event_types_keep_a_receipt_only() {
    let app = spawn_app().await;
    let body = webhook_body("EV_u1", "room_started", "no-such-room", json!({}));
    let response = deliver(&app, Some(&sign(&app, &secret(&app), &body)), &body).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let again = deliver(&app, Some(&sign(&app, &secret(&app), &body)), &body).await;
    assert_eq!(
        again.json::<Value>().await.expect("json"),
        json!({"duplicate": true}),
        "the receipt is the replay guard"
    );

    let future_type = webhook_body("EV_u2", "room_teleported", "no-such-room", json!({}));
    let response = deliver(&app, Some(&sign(&app, &secret(&app), &future_type)), &future_type).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let report = callstream::store::verify(app.database(), &app.config.master_key).expect("verify");
    assert_eq!(report.events, 0);
}

#[tokio::test]
async fn out_of_order_deliveries_leave_the_right_projection() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let (session, room) = linked_session(&app, &alice).await;
    let send = |id: &str, event: &str, extra: Value| {
        let body = webhook_body(id, event, &room, extra);
        let authorization = sign(&app, &secret(&app), &body);
        let app = &app;
        async move {
            let response = deliver(app, Some(&authorization), &body).await;
            assert_eq!(response.status(), StatusCode::OK, "{body}");
        }
    };
    // A reconnect's new join arrives before the old connection's leave.
    send("EV_1", "participant_joined", json!({"participant": {"identity": "bob", "sid": "PA_old"}})).await;
    send("EV_2", "participant_joined", json!({"participant": {"identity": "bob", "sid": "PA_new"}})).await;
    send("EV_3", "participant_left", json!({"participant": {"identity": "bob", "sid": "PA_old"}})).await;
    // Egress ends after the room finished; a late room_started for the finished room.
    send("EV_4", "egress_started", json!({"egressInfo": {"egressId": "EG_1", "roomName": room}})).await;
    send("EV_5", "room_finished", json!({})).await;
    send(
        "EV_6",
        "egress_ended",
        json!({"egressInfo": {"egressId": "EG_1", "roomName": room, "status": "EGRESS_COMPLETE"}}),
    )
    .await;
    send(
        "EV_7",
        "egress_updated",
        json!({"egressInfo": {"egressId": "EG_1", "roomName": room, "status": "EGRESS_ACTIVE"}}),
    )
    .await;
    send("EV_8", "room_started", json!({})).await;

    let view: Value = app.get(&format!("/v1/call/sessions/{session}"), &alice).await.json().await.expect("json");
    assert_eq!(view["participants"][0]["participantSid"], "PA_new");
    assert_eq!(view["participants"][0]["state"], "joined", "the stale leave changes nothing");
    assert_eq!(view["recordings"][0]["state"], "ended");
    assert_eq!(view["recordings"][0]["status"], "EGRESS_COMPLETE", "a late update does not reopen it");
    assert_eq!(view["room"]["state"], "finished", "a late start of the finished room is ignored");
    assert_eq!(
        app.replay(&alice, &session, 0, 100).await["diagnostics"]["headSeq"],
        10,
        "every delivery is in the log"
    );
    let report = callstream::store::verify(app.database(), &app.config.master_key).expect("verify");
    assert!(report.is_ok(), "rebuild reproduces the same decisions: {report:?}");
}
