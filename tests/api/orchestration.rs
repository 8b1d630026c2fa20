//! In-call actions through the real server: policy, confirmation, executors against a real local
//! HTTP server, idempotency under concurrency and across a restart.

use base64::Engine;
use callstream::domain::principal::Role;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::helpers::{TestApp, error_code, spawn_app, spawn_app_in, spawn_app_with};
use crate::sink;

async fn execute(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    app.post("/v1/orchestration/actions/execute", token, &body).await
}

async fn ack_of(app: &TestApp, token: &str, body: Value) -> Value {
    let response = execute(app, token, body).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json::<Value>().await.expect("json")
}

fn history_types(action: &Value) -> Vec<String> {
    action["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|e| e["type"].as_str().expect("type").to_owned())
        .collect()
}

/// A policy that lets `webhook.post` run without confirmation, for executor tests.
pub fn open_policy(dir: &std::path::Path, ttl: u64) -> String {
    let mut policy: Value = serde_json::from_str(callstream::domain::policy::BUILT_IN).expect("policy");
    policy["id"] = json!("test-open");
    policy["sensitiveTypes"] = json!(["message.send", "email.send", "call.transfer"]);
    policy["confirmationTtlSecs"] = json!(ttl);
    policy["roles"]["webhook.post"] = json!(["user", "service"]);
    policy["allowedHosts"] = json!(["http://127.0.0.1:*"]);
    let path = dir.join("policy.json");
    std::fs::write(&path, policy.to_string()).expect("write policy");
    path.display().to_string()
}

#[tokio::test]
async fn a_note_is_executed_once_and_retries_get_the_same_ack() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    let request =
        json!({"actionId": "note-1", "sessionId": session, "type": "note.create", "params": {"text": "call finance"}});
    let first = ack_of(&app, &alice, request.clone()).await;
    assert_eq!(first, json!({"actionId": "note-1", "ack": {"status": "executed", "outcomeRef": "note-note-1"}}));
    let before = app.events_except_billing(&alice, &session).await;
    assert_eq!(ack_of(&app, &alice, request).await, first);
    assert_eq!(app.events_except_billing(&alice, &session).await, before, "a retry appends nothing");

    let action: Value = app.get("/v1/orchestration/actions/note-1", &alice).await.json().await.expect("json");
    assert_eq!(
        history_types(&action),
        [
            "orchestration.action.requested",
            "safety.approved",
            "orchestration.action.decided",
            "orchestration.action.started",
            "orchestration.note.created",
            "orchestration.action.executed"
        ]
    );
    assert_eq!(action["history"][1]["payload"]["policyId"], "default");
    let other =
        json!({"actionId": "note-1", "sessionId": session, "type": "note.create", "params": {"text": "different"}});
    let conflict = execute(&app, &alice, other).await;
    assert_eq!(conflict.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(conflict).await, "ACTION_ID_CONFLICT");
}

#[tokio::test]
async fn unsupported_and_forbidden_actions_are_decided_deterministically() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let agent = app.token("agent", "t1", &[Role::Service]);
    let session = app.create_session(&alice).await;
    for _ in 0..2 {
        let unsupported =
            ack_of(&app, &alice, json!({"actionId": "u1", "sessionId": session, "type": "teleport", "params": {}}))
                .await;
        assert_eq!(unsupported["ack"], json!({"status": "failed", "errorCode": "ACTION_TYPE_UNSUPPORTED"}));
    }
    let transfer = json!({"actionId": "t1", "sessionId": session, "type": "call.transfer", "params": {"to": "+100"}});
    assert_eq!(
        ack_of(&app, &agent, transfer).await["ack"],
        json!({"status": "failed", "errorCode": "ACTION_TYPE_UNSUPPORTED"}),
        "no executor"
    );
    let by_user = json!({"actionId": "w0", "sessionId": session, "type": "webhook.post", "params": {"url": "http://127.0.0.1/x"}});
    assert_eq!(
        ack_of(&app, &alice, by_user).await["ack"],
        json!({"status": "blocked", "errorCode": "ROLE_NOT_ALLOWED"})
    );
    let outside = json!({"actionId": "w1", "sessionId": session, "type": "webhook.post", "params": {"url": "https://example.com/x"}});
    assert_eq!(
        ack_of(&app, &agent, outside).await["ack"],
        json!({"status": "blocked", "errorCode": "HOST_NOT_ALLOWED"})
    );
    let bad_params = json!({"actionId": "n2", "sessionId": session, "type": "note.create", "params": {"text": ""}});
    assert_eq!(
        ack_of(&app, &alice, bad_params).await["ack"],
        json!({"status": "blocked", "errorCode": "PARAMS_INVALID"})
    );

    let operator = app.token("ops", "t1", &[Role::Operator]);
    let by_operator = execute(
        &app,
        &operator,
        json!({"actionId": "o1", "sessionId": session, "type": "note.create", "params": {"text": "x"}}),
    )
    .await;
    assert_eq!(error_code(by_operator).await, "FORBIDDEN_ROLE");
    let by_stranger = execute(
        &app,
        &app.user("mallory"),
        json!({"actionId": "m1", "sessionId": session, "type": "note.create", "params": {"text": "x"}}),
    )
    .await;
    assert_eq!(error_code(by_stranger).await, "SESSION_NOT_FOUND");
    app.post(&format!("/v1/call/sessions/{session}/state"), &alice, &json!({"to": "failed"})).await;
    let too_late = execute(
        &app,
        &alice,
        json!({"actionId": "late", "sessionId": session, "type": "note.create", "params": {"text": "x"}}),
    )
    .await;
    assert_eq!(error_code(too_late).await, "SESSION_TERMINATED");
}

#[tokio::test]
async fn a_sensitive_action_waits_for_the_owner_and_runs_once_confirmed() {
    let sink = sink::start(vec![200]).await;
    let app = spawn_app_with(&[
        ("CALLSTREAM_MESSAGE_SINK_URL", &sink.url),
        ("CALLSTREAM_OUTBOUND_SIGNING_SECRET", "outbound-secret-0123456789abcdef0123"),
    ])
    .await;
    let alice = app.user("alice");
    let agent = app.token("agent", "t1", &[Role::Service]);
    let session = app.create_session(&alice).await;
    let request = json!({"actionId": "msg-1", "sessionId": session, "type": "message.send", "params": {"to": "+15550100", "text": "on my way"}});
    let pending = ack_of(&app, &agent, request.clone()).await;
    assert_eq!(pending["ack"], json!({"status": "pending_confirmation"}));
    assert_eq!(ack_of(&app, &agent, request.clone()).await, pending, "a plain retry gets the same ack");
    assert_eq!(sink.count(), 0, "nothing was sent yet");

    let by_agent = app.post("/v1/actions/decision", &agent, &json!({"actionId": "msg-1", "decision": "approve"})).await;
    assert_eq!(error_code(by_agent).await, "FORBIDDEN_ROLE", "only the owner confirms");
    let approved: Value = app
        .post("/v1/actions/decision", &alice, &json!({"actionId": "msg-1", "decision": "approve"}))
        .await
        .json()
        .await
        .expect("json");
    let token = approved["confirmationToken"].as_str().expect("token").to_owned();

    let mut confirmed = request.clone();
    confirmed["confirmationToken"] = json!(token);
    let traced = app
        .client
        .post(format!("{}/v1/orchestration/actions/execute", app.address))
        .bearer_auth(&agent)
        .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .header("x-request-id", "req-trace-1")
        .json(&confirmed)
        .send()
        .await
        .expect("execute");
    assert_eq!(traced.status(), StatusCode::OK);
    let executed: Value = traced.json().await.expect("json");
    assert_eq!(executed["ack"]["status"], "executed");
    assert_eq!(sink.count(), 1);
    assert_eq!(ack_of(&app, &agent, confirmed).await, executed, "the same request again: the same ack, no second send");
    assert_eq!(ack_of(&app, &agent, request).await, executed);
    assert_eq!(sink.count(), 1);

    // The receiver can verify the Standard Webhooks signature.
    let received = sink.received.lock().expect("lock")[0].clone();
    let (id, timestamp) = (&received.headers["webhook-id"], &received.headers["webhook-timestamp"]);
    assert_eq!(id, "msg-1");
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"outbound-secret-0123456789abcdef0123").expect("key");
    mac.update(format!("{id}.{timestamp}.{}", received.body).as_bytes());
    let expected = format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()));
    assert_eq!(received.headers["webhook-signature"], expected);
    // The call carries the caller's trace (a child span of it) and request id.
    let traceparent = &received.headers["traceparent"];
    assert!(traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{traceparent}");
    assert!(!traceparent.contains("00f067aa0ba902b7"), "a new span id: {traceparent}");
    assert!(traceparent.ends_with("-01"), "{traceparent}");
    assert_eq!(received.headers["x-request-id"], "req-trace-1");
    assert_eq!(serde_json::from_str::<Value>(&received.body).expect("json")["text"], "on my way");

    let action: Value = app.get("/v1/orchestration/actions/msg-1", &alice).await.json().await.expect("json");
    assert_eq!(
        history_types(&action),
        [
            "orchestration.action.requested",
            "safety.confirmation.issued",
            "orchestration.action.decided",
            "safety.approved",
            "orchestration.action.decided",
            "orchestration.action.started",
            "orchestration.action.executed"
        ]
    );
}

#[tokio::test]
async fn confirmation_tokens_are_single_use_bound_and_expiring() {
    let dir = tempfile::tempdir().expect("dir");
    let policy = open_policy(dir.path(), 300);
    let app = spawn_app_with(&[("CALLSTREAM_POLICY_FILE", &policy), ("CALLSTREAM_TEST_CLOCK", "1")]).await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    let send = |id: &str, text: &str| json!({"actionId": id, "sessionId": session, "type": "message.send", "params": {"to": "x", "text": text}});
    for id in ["a", "b", "c"] {
        ack_of(&app, &alice, send(id, "hi")).await;
    }
    let approve = |id: &str| {
        let body = json!({"actionId": id, "decision": "approve"});
        let (app, alice) = (&app, &alice);
        async move { app.post("/v1/actions/decision", alice, &body).await }
    };
    let token_of = |v: Value| v["confirmationToken"].as_str().expect("token").to_owned();

    let first = token_of(approve("a").await.json().await.expect("json"));
    let second = token_of(approve("a").await.json().await.expect("json"));
    let mut replaced = send("a", "hi");
    replaced["confirmationToken"] = json!(first);
    assert_eq!(error_code(execute(&app, &alice, replaced).await).await, "CONFIRMATION_TOKEN_USED");

    let mut other_action = send("b", "hi");
    other_action["confirmationToken"] = json!(second);
    assert_eq!(error_code(execute(&app, &alice, other_action).await).await, "CONFIRMATION_TOKEN_MISMATCH");
    let mut forged = send("b", "hi");
    forged["confirmationToken"] = json!(format!("{second}x"));
    assert_eq!(error_code(execute(&app, &alice, forged).await).await, "CONFIRMATION_TOKEN_INVALID");

    let expiring = token_of(approve("c").await.json().await.expect("json"));
    app.advance_clock(301).await;
    let mut late = send("c", "hi");
    late["confirmationToken"] = json!(expiring);
    let expired = execute(&app, &alice, late).await;
    assert_eq!(expired.status(), StatusCode::GONE);
    assert_eq!(error_code(expired).await, "CONFIRMATION_TOKEN_EXPIRED");

    let rejected: Value = app
        .post("/v1/actions/decision", &alice, &json!({"actionId": "b", "decision": "reject"}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(rejected["ack"], json!({"status": "blocked", "errorCode": "ACTION_REJECTED"}));
    assert_eq!(ack_of(&app, &alice, send("b", "hi")).await["ack"], rejected["ack"], "rejected for good");
    assert_eq!(error_code(approve("b").await).await, "ACTION_NOT_PENDING");
}

#[tokio::test]
async fn twenty_concurrent_retries_execute_once() {
    let sink = sink::start(vec![200]).await;
    let dir = tempfile::tempdir().expect("dir");
    let policy = open_policy(dir.path(), 300);
    let app = spawn_app_with(&[("CALLSTREAM_POLICY_FILE", &policy)]).await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    let request = json!({"actionId": "race-1", "sessionId": session, "type": "webhook.post", "params": {"url": sink.url, "body": {"n": 1}}});
    let mut retries = Vec::new();
    for _ in 0..20 {
        let call = app
            .client
            .post(format!("{}/v1/orchestration/actions/execute", app.address))
            .bearer_auth(&alice)
            .json(&request);
        retries
            .push(tokio::spawn(async move { call.send().await.expect("send").json::<Value>().await.expect("json") }));
    }
    let mut acks = Vec::new();
    for retry in retries {
        acks.push(retry.await.expect("task"));
    }
    assert!(acks.iter().all(|a| *a == acks[0]), "{acks:?}");
    assert_eq!(acks[0]["ack"]["status"], "executed");
    assert_eq!(sink.count(), 1, "executed exactly once");
}

#[tokio::test]
async fn the_outbound_executor_retries_then_recovers_or_gives_up() {
    let flaky = sink::start(vec![503, 503, 200]).await;
    let dead = sink::start(vec![503]).await;
    let rejecting = sink::start(vec![400]).await;
    let dir = tempfile::tempdir().expect("dir");
    let policy = open_policy(dir.path(), 300);
    let app = spawn_app_with(&[("CALLSTREAM_POLICY_FILE", &policy)]).await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    let post = |id: &str, url: &str| json!({"actionId": id, "sessionId": session, "type": "webhook.post", "params": {"url": url, "body": {}}});

    let recovered = ack_of(&app, &alice, post("flaky", &flaky.url)).await;
    assert_eq!(recovered["ack"]["status"], "executed");
    assert_eq!(flaky.count(), 3);
    let ids: Vec<String> =
        flaky.received.lock().expect("lock").iter().map(|r| r.headers["webhook-id"].clone()).collect();
    assert!(ids.iter().all(|id| id == "flaky"), "one webhook-id across attempts");

    let gave_up = ack_of(&app, &alice, post("dead", &dead.url)).await;
    assert_eq!(gave_up["ack"], json!({"status": "failed", "errorCode": "TARGET_5XX"}));
    assert_eq!(dead.count(), 3, "bounded retries");
    let failed: Value = app.get("/v1/orchestration/actions/dead", &alice).await.json().await.expect("json");
    assert_eq!(failed["history"].as_array().expect("history").last().expect("last")["payload"]["attempts"], 3);

    let refused = ack_of(&app, &alice, post("rejecting", &rejecting.url)).await;
    assert_eq!(refused["ack"], json!({"status": "failed", "errorCode": "TARGET_REJECTED"}));
    assert_eq!(rejecting.count(), 1, "a 4xx is not retried");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let unreachable = ack_of(&app, &alice, post("nowhere", &format!("http://127.0.0.1:{closed}/x"))).await;
    assert_eq!(unreachable["ack"], json!({"status": "failed", "errorCode": "TARGET_UNREACHABLE"}));
}

#[tokio::test]
async fn acks_survive_a_restart() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    let request =
        json!({"actionId": "kept", "sessionId": session, "type": "note.create", "params": {"text": "remember"}});
    let before = ack_of(&app, &alice, request.clone()).await;
    let app = spawn_app_in(app.stop().await).await;
    assert_eq!(ack_of(&app, &alice, request).await, before);
    let missing = app.get("/v1/orchestration/actions/nope", &alice).await;
    assert_eq!(error_code(missing).await, "ACTION_NOT_FOUND");
    assert_eq!(error_code(app.get("/v1/orchestration/actions/kept", &app.user("bob")).await).await, "ACTION_NOT_FOUND");
}

/// A policy whose only outbound target is `allowed`.
fn policy_allowing(dir: &std::path::Path, allowed: &[String]) -> String {
    let path = open_policy(dir, 300);
    let mut policy: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
    policy["allowedHosts"] = json!(allowed);
    std::fs::write(&path, policy.to_string()).expect("write");
    path
}

#[tokio::test]
async fn outbound_targets_are_checked_as_the_client_reads_them() {
    let allowed = sink::start(vec![200]).await;
    let internal = sink::start(vec![200]).await;
    let port = |url: &str| url.rsplit(':').next().and_then(|p| p.split('/').next()).expect("port").to_owned();
    let (allowed_port, internal_port) = (port(&allowed.url), port(&internal.url));
    let dir = tempfile::tempdir().expect("dir");
    let policy = policy_allowing(dir.path(), &[format!("http://127.0.0.1:{allowed_port}")]);
    let app = spawn_app_with(&[("CALLSTREAM_POLICY_FILE", &policy)]).await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    let post = |id: &str, url: String| json!({"actionId": id, "sessionId": session, "type": "webhook.post", "params": {"url": url, "body": {}}});

    let attempts = [
        ("backslash", format!("http://evil.example\\@127.0.0.1:{internal_port}/"), "HOST_NOT_ALLOWED"),
        ("userinfo", format!("http://127.0.0.1:{allowed_port}@127.0.0.1:{internal_port}/"), "PARAMS_INVALID"),
        ("decimal ip", format!("http://2130706433:{internal_port}/"), "HOST_NOT_ALLOWED"),
        ("ipv6 literal", format!("http://[::1]:{allowed_port}/"), "HOST_NOT_ALLOWED"),
        ("trailing dot", format!("http://localhost.:{allowed_port}/"), "HOST_NOT_ALLOWED"),
        ("other port", format!("http://127.0.0.1:{internal_port}/"), "HOST_NOT_ALLOWED"),
    ];
    for (n, (name, url, code)) in attempts.into_iter().enumerate() {
        let ack = ack_of(&app, &alice, post(&format!("bypass-{n}"), url)).await;
        assert_eq!(ack["ack"], json!({"status": "blocked", "errorCode": code}), "{name}");
    }
    assert_eq!(internal.count(), 0, "nothing reached the host that is not allowlisted");
    // Percent-encoded dots name the allowed host itself: delivered there, and only there.
    let encoded = ack_of(&app, &alice, post("encoded", format!("http://127%2E0%2E0%2E1:{allowed_port}/hook"))).await;
    assert_eq!(encoded["ack"]["status"], "executed");
    assert_eq!((allowed.count(), internal.count()), (1, 0));
}

#[tokio::test]
async fn redirects_are_failures_and_https_speaks_tls() {
    let redirecting = sink::start(vec![302]).await;
    let tls = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let tls_port = tls.local_addr().expect("addr").port();
    let first_bytes = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let (mut stream, _) = tls.accept().await.expect("accept");
        let mut head = [0u8; 3];
        stream.read_exact(&mut head).await.expect("read");
        head
    });
    let dir = tempfile::tempdir().expect("dir");
    let policy =
        policy_allowing(dir.path(), &["http://127.0.0.1:*".to_owned(), format!("https://127.0.0.1:{tls_port}")]);
    let app = spawn_app_with(&[("CALLSTREAM_POLICY_FILE", &policy), ("CALLSTREAM_EXECUTOR_TIMEOUT_MS", "500")]).await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    let post = |id: &str, url: &str| json!({"actionId": id, "sessionId": session, "type": "webhook.post", "params": {"url": url, "body": {}}});

    let redirected = ack_of(&app, &alice, post("redirect", &redirecting.url)).await;
    assert_eq!(redirected["ack"], json!({"status": "failed", "errorCode": "TARGET_REDIRECTED"}));
    assert_eq!(redirecting.count(), 1, "a redirect is an answer: not followed, not retried");

    let secure = ack_of(&app, &alice, post("tls", &format!("https://127.0.0.1:{tls_port}/hook"))).await;
    assert_eq!(secure["ack"]["status"], "failed", "the test listener cannot finish a handshake");
    let head = first_bytes.await.expect("listener");
    assert_eq!(head[0], 0x16, "the client opened with a TLS handshake record: {head:?}");
    assert_eq!(head[1], 0x03);
}

/// A DNS name that resolves to loopback is refused unless it is named literally. The machine's
/// own hostname usually resolves to 127.0.0.1 through /etc/hosts; where it does not, this case
/// cannot be built without a DNS server and is skipped with a note.
#[tokio::test]
async fn names_resolving_inward_are_refused() {
    use std::net::ToSocketAddrs;
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_owned();
    let resolves_to_loopback = !hostname.is_empty()
        && hostname != "localhost"
        && (hostname.as_str(), 80).to_socket_addrs().is_ok_and(|mut a| a.all(|a| a.ip().is_loopback()));
    if !resolves_to_loopback {
        println!("skipped: the hostname `{hostname}` does not resolve to loopback here");
        return;
    }
    let target = sink::start(vec![200]).await;
    let port = target.url.rsplit(':').next().and_then(|p| p.split('/').next()).expect("port").to_owned();
    let dir = tempfile::tempdir().expect("dir");
    let policy =
        policy_allowing(dir.path(), &[format!("http://{hostname}:{port}"), format!("http://localhost:{port}")]);
    let app = spawn_app_with(&[("CALLSTREAM_POLICY_FILE", &policy)]).await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    let post = |id: &str, url: String| json!({"actionId": id, "sessionId": session, "type": "webhook.post", "params": {"url": url, "body": {}}});
    let inward = ack_of(&app, &alice, post("inward", format!("http://{hostname}:{port}/hook"))).await;
    assert_eq!(inward["ack"], json!({"status": "failed", "errorCode": "TARGET_ADDRESS_FORBIDDEN"}));
    assert_eq!(target.count(), 0);
    let literal = ack_of(&app, &alice, post("literal", format!("http://localhost:{port}/hook"))).await;
    assert_eq!(literal["ack"]["status"], "executed", "`localhost` named literally may be reached");
    assert_eq!(target.count(), 1);
}
