//! Crash test: the real binary under concurrent ingest is `kill -9`ed at random moments, 20 times.
//! Every acknowledged event must be present exactly once, retries of unacknowledged batches must be
//! safe, and `verify` (hash chain + projections == rebuild) must pass at the end.

use std::collections::HashSet;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callstream::clock::Clock;
use callstream::domain::principal::Role;
use rand::Rng;
use serde_json::{Value, json};

use crate::helpers::{RawDb, eventually, test_config, test_env, transcript};

const CYCLES: usize = 20;
const PRODUCERS: usize = 4;

/// A real `callstream serve` child process (the test environment, full durability).
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) address: String,
}

fn start(data_dir: &std::path::Path) -> Server {
    start_with(data_dir, &[])
}

pub(crate) fn start_with(data_dir: &std::path::Path, overrides: &[(&'static str, &str)]) -> Server {
    let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let mut env = test_env(data_dir);
    env.insert("CALLSTREAM_LISTEN", format!("127.0.0.1:{port}"));
    env.insert("CALLSTREAM_DURABILITY", "full".to_owned());
    for (name, value) in overrides {
        env.insert(name, (*value).to_owned());
    }
    let child = Command::new(env!("CARGO_BIN_EXE_callstream"))
        .arg("serve")
        .envs(env)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn callstream");
    Server { child, address: format!("http://127.0.0.1:{port}") }
}

pub(crate) async fn wait_ready(client: &reqwest::Client, server: &Server) {
    for _ in 0..500 {
        if let Ok(response) = client.get(format!("{}/health/ready", server.address)).send().await
            && response.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("server did not become ready");
}

/// Note every eventId a successful ingest answer acknowledged.
async fn record_acknowledged(response: reqwest::Response, acked: &Mutex<HashSet<String>>) {
    let body: Value = response.json().await.expect("json");
    let mut acked = acked.lock().expect("lock");
    for result in body["results"].as_array().expect("results") {
        acked.insert(result["eventId"].as_str().expect("id").to_owned());
    }
}

/// Every acknowledged event of tenant `t1` is in the log exactly once, and the log verifies.
fn assert_each_present_once_and_verified(
    config: &callstream::config::Config,
    acknowledged: &HashSet<String>,
) -> callstream::store::VerifyReport {
    let stored = RawDb::open(&config.database)
        .rows("SELECT event_id, COUNT(*) FROM events WHERE tenant_id = 't1' GROUP BY event_id");
    let counts: std::collections::HashMap<String, String> =
        stored.into_iter().map(|row| (row[0].clone().expect("id"), row[1].clone().expect("count"))).collect();
    for event_id in acknowledged {
        assert_eq!(
            counts.get(event_id).map(String::as_str),
            Some("1"),
            "acknowledged event {event_id} present exactly once"
        );
    }
    let report = callstream::store::verify(&config.database, &config.master_key).expect("verify");
    assert!(report.is_ok(), "{report:?}");
    report
}

pub(crate) async fn create_session(client: &reqwest::Client, server: &Server, token: &str) -> String {
    let response =
        client.post(format!("{}/v1/call/sessions", server.address)).bearer_auth(token).json(&json!({})).send().await;
    let body: Value = response.expect("create").json().await.expect("json");
    body["sessionId"].as_str().expect("id").to_owned()
}

/// Take a call through to its end; its charge then goes to the billing outbox.
pub(crate) async fn end_call(client: &reqwest::Client, server: &Server, token: &str, session: &str) {
    for to in ["connecting", "active", "ended"] {
        let response = client
            .post(format!("{}/v1/call/sessions/{session}/state", server.address))
            .bearer_auth(token)
            .json(&json!({ "to": to }))
            .send()
            .await
            .expect("transition");
        assert_eq!(response.status(), reqwest::StatusCode::OK, "→ {to}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_events_survive_repeated_kill_9() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let config = test_config(data_dir.path());
    let token =
        callstream::app::auth::mint(&config.jwt, Clock::system().now(), "crash-user", "t1", &[Role::User], 3600)
            .expect("mint");
    let client = crate::helpers::client_builder().timeout(Duration::from_secs(10)).build().expect("client");
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut sessions = Vec::new();
    // Each producer's batch that was in flight when the server died, retried after the restart.
    let mut pending: Vec<Option<Vec<Value>>> = vec![None; PRODUCERS];
    let mut next_batch = 0usize;

    for cycle in 0..CYCLES {
        let mut server = start(data_dir.path());
        wait_ready(&client, &server).await;
        while sessions.len() < PRODUCERS {
            sessions.push(create_session(&client, &server, &token).await);
        }
        let mut producers = Vec::new();
        for (producer, retry) in pending.iter_mut().enumerate() {
            let (client, address, token, acked, session) =
                (client.clone(), server.address.clone(), token.clone(), acked.clone(), sessions[producer].clone());
            let mut batch = retry.take();
            let first_batch = next_batch + producer * 10_000;
            producers.push(tokio::spawn(async move {
                for n in 0.. {
                    let events = batch.take().unwrap_or_else(|| {
                        (0..10)
                            .map(|i| transcript(&session, &format!("c{cycle}-b{}-{i}", first_batch + n), "x"))
                            .collect()
                    });
                    let sent = client
                        .post(format!("{address}/v1/realtime/sessions/{session}/events"))
                        .bearer_auth(&token)
                        .json(&json!({ "events": events }))
                        .send()
                        .await;
                    match sent {
                        Ok(response) if response.status().is_success() => record_acknowledged(response, &acked).await,
                        Ok(response) => panic!("cycle {cycle}: unexpected {}", response.status()),
                        Err(_) => return Some(events),
                    }
                }
                None
            }));
        }
        next_batch += 100_000;
        let lifetime = rand::rng().random_range(50..400);
        tokio::time::sleep(Duration::from_millis(lifetime)).await;
        server.child.kill().expect("kill -9");
        server.child.wait().expect("reap");
        for (producer, handle) in producers.into_iter().enumerate() {
            pending[producer] = handle.await.expect("producer");
        }
    }

    // Retry what was in flight at the last kill, then check the log.
    let mut server = start(data_dir.path());
    wait_ready(&client, &server).await;
    for (producer, batch) in pending.into_iter().enumerate() {
        if let Some(events) = batch {
            let response = client
                .post(format!("{}/v1/realtime/sessions/{}/events", server.address, sessions[producer]))
                .bearer_auth(&token)
                .json(&json!({ "events": events }))
                .send()
                .await
                .expect("retry");
            assert!(response.status().is_success(), "a retry after a crash is safe");
        }
    }
    server.child.kill().expect("kill");
    server.child.wait().expect("reap");

    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() > 1000, "the test ingested too little to mean anything: {}", acked.len());
    let report = assert_each_present_once_and_verified(&config, &acked);
    println!("crash test: {} acknowledged events over {CYCLES} kills, {} in the log", acked.len(), report.events);
}

/// `kill -9` while WebSocket clients are connected and publishing: no publish answered `published`
/// is lost, and every subscriber resumes from its server-side checkpoint with no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn socket_clients_survive_kill_9() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    const SESSIONS: usize = 3;
    const KILLS: usize = 6;
    let data_dir = tempfile::tempdir().expect("temp dir");
    let config = test_config(data_dir.path());
    let owner = callstream::app::auth::mint(&config.jwt, Clock::system().now(), "ws-owner", "t1", &[Role::User], 3600)
        .expect("mint");
    let agent =
        callstream::app::auth::mint(&config.jwt, Clock::system().now(), "ws-agent", "t1", &[Role::Service], 3600)
            .expect("mint");
    let client = crate::helpers::client();
    let published: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut sessions = Vec::new();
    // Per session: the subscriber's newest resume token and the highest seq it has verified.
    let mut subscribers: Vec<(Option<String>, u64)> = vec![(None, 0); SESSIONS];

    for cycle in 0..=KILLS {
        let mut server = start(data_dir.path());
        wait_ready(&client, &server).await;
        while sessions.len() < SESSIONS {
            sessions.push(create_session(&client, &server, &owner).await);
        }
        let ws_base = server.address.replacen("http", "ws", 1);
        let mut tasks = Vec::new();
        for (index, session) in sessions.iter().enumerate() {
            // The subscriber: resume (or start), check the replay is contiguous, ack as it goes.
            let query = match &subscribers[index].0 {
                Some(token) => format!("resumeToken={token}"),
                None => "after=0".to_owned(),
            };
            let url = format!("{ws_base}/v1/realtime/sessions/{session}/ws?access_token={owner}&{query}");
            let (mut socket, _) =
                tokio_tungstenite::connect_async(url).await.expect("subscriber connects after a crash");
            let welcome: Value = match socket.next().await {
                Some(Ok(Message::Text(text))) => serde_json::from_str(&text).expect("json"),
                other => panic!("cycle {cycle}: expected welcome, got {other:?}"),
            };
            let replay_from = welcome["replayFrom"].as_u64().expect("replayFrom");
            assert!(
                replay_from <= subscribers[index].1,
                "cycle {cycle}: the checkpoint never runs ahead of what was seen"
            );
            subscribers[index].0 = Some(welcome["resumeToken"].as_str().expect("token").to_owned());
            tasks.push(tokio::spawn(async move {
                let mut expected = replay_from + 1;
                while let Some(Ok(message)) = socket.next().await {
                    let Message::Text(text) = message else { continue };
                    let frame: Value = serde_json::from_str(&text).expect("json");
                    if frame["op"] != "event" {
                        continue;
                    }
                    let seq = frame["event"]["seq"].as_u64().expect("seq");
                    assert_eq!(seq, expected, "cycle {cycle}: replay and live are gapless");
                    expected += 1;
                    if seq.is_multiple_of(5) {
                        let _ = socket.send(Message::Text(json!({"op": "ack", "seq": seq}).to_string().into())).await;
                    }
                }
                (index, expected - 1)
            }));
            // The publisher: one event at a time, recorded once answered `published`.
            let url = format!("{ws_base}/v1/realtime/sessions/{session}/ws?access_token={agent}&after=0");
            let (mut socket, _) = tokio_tungstenite::connect_async(url).await.expect("publisher connects");
            let (published, session) = (published.clone(), session.clone());
            tasks.push(tokio::spawn(async move {
                for n in 0.. {
                    let event_id = format!("ws-c{cycle}-s{index}-{n}");
                    let publish = json!({"op": "publish", "event": transcript(&session, &event_id, "x")});
                    if socket.send(Message::Text(publish.to_string().into())).await.is_err() {
                        break;
                    }
                    loop {
                        match socket.next().await {
                            Some(Ok(Message::Text(text))) => {
                                let frame: Value = serde_json::from_str(&text).expect("json");
                                if frame["op"] == "published" {
                                    assert_eq!(frame["eventId"], event_id.as_str());
                                    published.lock().expect("lock").insert(event_id.clone());
                                    break;
                                }
                            }
                            Some(Ok(_)) => {}
                            _ => return (usize::MAX, 0),
                        }
                    }
                }
                (usize::MAX, 0)
            }));
        }
        let lifetime = if cycle == KILLS { 300 } else { rand::rng().random_range(100..400) };
        tokio::time::sleep(Duration::from_millis(lifetime)).await;
        server.child.kill().expect("kill -9");
        server.child.wait().expect("reap");
        for task in tasks {
            let (index, seen) = task.await.expect("client task");
            if index != usize::MAX {
                subscribers[index].1 = subscribers[index].1.max(seen);
            }
        }
    }

    let published = published.lock().expect("lock").clone();
    assert!(published.len() > 100, "too little was published to mean anything: {}", published.len());
    assert_each_present_once_and_verified(&config, &published);
    println!("socket crash test: {} publishes acknowledged over {KILLS} kills", published.len());
}

/// An action whose process dies while it runs is never run again: the retry after the restart
/// records `EXECUTION_INTERRUPTED`, and the target saw one request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_interrupted_by_kill_9_is_not_run_again() {
    let sink = crate::sink::start(vec![0]).await;
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut policy: Value = serde_json::from_str(callstream::domain::policy::BUILT_IN).expect("policy");
    policy["sensitiveTypes"] = json!(["message.send"]);
    policy["roles"]["webhook.post"] = json!(["user"]);
    policy["allowedHosts"] = json!(["http://127.0.0.1:*"]);
    let policy_file = data_dir.path().join("policy.json");
    std::fs::write(&policy_file, policy.to_string()).expect("policy");
    let policy_file = policy_file.display().to_string();
    let overrides = [("CALLSTREAM_POLICY_FILE", policy_file.as_str()), ("CALLSTREAM_EXECUTOR_TIMEOUT_MS", "60000")];
    let config = test_config(data_dir.path());
    let token = callstream::app::auth::mint(&config.jwt, Clock::system().now(), "alice", "t1", &[Role::User], 3600)
        .expect("mint");
    let client = crate::helpers::client();

    let mut server = start_with(data_dir.path(), &overrides);
    wait_ready(&client, &server).await;
    let session = create_session(&client, &server, &token).await;
    let request = json!({"actionId": "doomed", "sessionId": session, "type": "webhook.post",
                         "params": {"url": sink.url, "body": {"n": 1}}});
    let in_flight = tokio::spawn({
        let (client, url, token, request) = (
            client.clone(),
            format!("{}/v1/orchestration/actions/execute", server.address),
            token.clone(),
            request.clone(),
        );
        async move { client.post(url).bearer_auth(token).json(&request).send().await }
    });
    for _ in 0..500 {
        if sink.count() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(sink.count(), 1, "the action reached its target");
    server.child.kill().expect("kill -9");
    server.child.wait().expect("reap");
    assert!(in_flight.await.expect("task").is_err(), "the caller never got an answer");

    let mut server = start_with(data_dir.path(), &overrides);
    wait_ready(&client, &server).await;
    let retry: Value = client
        .post(format!("{}/v1/orchestration/actions/execute", server.address))
        .bearer_auth(&token)
        .json(&request)
        .send()
        .await
        .expect("retry")
        .json()
        .await
        .expect("json");
    assert_eq!(retry["ack"], json!({"status": "failed", "errorCode": "EXECUTION_INTERRUPTED"}));
    assert_eq!(sink.count(), 1, "not run again");
    server.child.kill().expect("kill");
    server.child.wait().expect("reap");
}

/// A billing delivery whose process dies under its attempt is attempted again as soon as the
/// process is back, not when the claim's lease (a minute here) runs out: the claim names a node
/// that has ended. One webhook id for both attempts, one confirmed charge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_billing_delivery_interrupted_by_kill_9_is_attempted_again_at_restart() {
    // The first attempt hangs (the process dies under it); the next is accepted.
    let sink = crate::sink::start(vec![0, 200]).await;
    let secret = crate::billing::sink_secret();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let overrides = [
        ("CALLSTREAM_BILLING_POLL_MS", "10"),
        ("CALLSTREAM_BILLING_TIMEOUT_MS", "1000"),
        ("CALLSTREAM_BILLING_SINK_URL", sink.url.as_str()),
        ("CALLSTREAM_BILLING_SINK_SECRET", secret.as_str()),
    ];
    let config = test_config(data_dir.path());
    let mint = |sub: &str, role: Role| {
        callstream::app::auth::mint(&config.jwt, Clock::system().now(), sub, "t1", &[role], 3600).expect("mint")
    };
    let (alice, ops) = (mint("alice", Role::User), mint("ops", Role::Operator));
    let client = crate::helpers::client();

    let mut server = start_with(data_dir.path(), &overrides);
    wait_ready(&client, &server).await;
    let session = create_session(&client, &server, &alice).await;
    end_call(&client, &server, &alice, &session).await;
    eventually("the first attempt reaches the sink", || async { sink.count() == 1 }).await;
    server.child.kill().expect("kill -9");
    server.child.wait().expect("reap");

    let mut server = start_with(data_dir.path(), &overrides);
    wait_ready(&client, &server).await;
    let confirmed = || async {
        let events: Value = client
            .get(format!("{}/v1/billing/sessions/{session}/events", server.address))
            .bearer_auth(&ops)
            .send()
            .await
            .expect("events")
            .json()
            .await
            .expect("json");
        events["events"].as_array().expect("events").iter().filter(|e| e["type"] == "billing.charge.confirmed").count()
    };
    // Within 5 s where the lease is a minute.
    eventually("the charge is confirmed after the restart", || async { confirmed().await > 0 }).await;
    assert_eq!(confirmed().await, 1, "the charge is confirmed once");
    let received = sink.received.lock().expect("lock").clone();
    assert_eq!(received.len(), 2, "attempted twice");
    assert_eq!(received[0].headers["webhook-id"], received[1].headers["webhook-id"], "one item, one webhook id");
    server.child.kill().expect("kill");
    server.child.wait().expect("reap");
}

/// `serve --dev` as a new user runs it: nothing set, the banner's tokens work.
#[tokio::test]
async fn serve_dev_prints_tokens_that_work() {
    use std::io::BufRead;
    let data_dir = tempfile::tempdir().expect("temp dir");
    let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_callstream"))
        .args(["serve", "--dev"])
        .env("CALLSTREAM_DATA_DIR", data_dir.path())
        .env("CALLSTREAM_LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn serve --dev");
    // Read the banner on a thread that keeps draining stdout: closing the pipe would kill the
    // server with SIGPIPE at its next print.
    let stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let (lines, banner) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let mut tokens = std::collections::HashMap::new();
    while tokens.len() < 3 {
        let line = banner.recv_timeout(Duration::from_secs(10)).expect("the banner prints three tokens");
        if let Some((name, token)) = line.trim().split_once(" token") {
            tokens.insert(name.to_owned(), token.trim().to_owned());
        }
    }
    let server = Server { child, address: format!("http://127.0.0.1:{port}") };
    let client = crate::helpers::client();
    wait_ready(&client, &server).await;
    let created = client
        .post(format!("{}/v1/call/sessions", server.address))
        .bearer_auth(&tokens["user"])
        .json(&json!({"title": "first call"}))
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), reqwest::StatusCode::CREATED);
    let tenants = client
        .get(format!("{}/v1/operator/tenants", server.address))
        .bearer_auth(&tokens["operator"])
        .send()
        .await
        .expect("tenants");
    assert_eq!(tenants.status(), reqwest::StatusCode::OK);
    let mut child = server.child;
    child.kill().expect("kill");
    child.wait().expect("reap");
    assert!(data_dir.path().join("dev-secrets.json").exists(), "the dev secrets are kept for the next start");
}

/// A movable clock is for tests and demos: plain `serve` refuses it unless told twice.
#[test]
fn serve_refuses_the_test_clock_without_dev_or_an_explicit_allowance() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let output = Command::new(env!("CARGO_BIN_EXE_callstream"))
        .arg("serve")
        .envs(test_env(data_dir.path()))
        .env("CALLSTREAM_TEST_CLOCK", "1")
        .env("RUST_LOG", "error")
        .output()
        .expect("run serve");
    assert!(!output.status.success(), "serve must refuse to start");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("CALLSTREAM_ALLOW_TEST_CLOCK"), "the refusal names the way out: {stderr}");
    assert!(!data_dir.path().join("callstream.db").exists(), "nothing was opened");
}

/// With the allowance, the route exists and moves the clock.
#[tokio::test]
async fn serve_with_the_allowance_routes_the_test_clock() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let server = start_with(data_dir.path(), &[("CALLSTREAM_TEST_CLOCK", "1"), ("CALLSTREAM_ALLOW_TEST_CLOCK", "1")]);
    let config = test_config(data_dir.path());
    let operator =
        callstream::app::auth::mint(&config.jwt, Clock::system().now(), "ops", "t-ops", &[Role::Operator], 600)
            .expect("mint");
    let client = crate::helpers::client();
    wait_ready(&client, &server).await;
    let response = client
        .post(format!("{}/v1/operator/clock", server.address))
        .bearer_auth(operator)
        .json(&json!({"advanceSeconds": 60}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
}

/// SIGTERM under ingest and WebSocket load: sockets are closed with 1012 and a resumable hint, the
/// process exits 0 within the drain bound, every acknowledged event is there after the restart, and
/// every subscriber resumes without a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_and_every_client_resumes_without_a_gap() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    const SESSIONS: usize = 3;
    let data_dir = tempfile::tempdir().expect("temp dir");
    let config = test_config(data_dir.path());
    let owner =
        callstream::app::auth::mint(&config.jwt, Clock::system().now(), "term-owner", "t1", &[Role::User], 3600)
            .expect("mint");
    let client = crate::helpers::client_builder().timeout(Duration::from_secs(10)).build().expect("client");
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();

    let mut server = start(data_dir.path());
    wait_ready(&client, &server).await;
    let mut sessions = Vec::new();
    while sessions.len() < SESSIONS {
        sessions.push(create_session(&client, &server, &owner).await);
    }
    let ws_base = server.address.replacen("http", "ws", 1);
    let mut subscribers = Vec::new();
    for session in &sessions {
        let url = format!("{ws_base}/v1/realtime/sessions/{session}/ws?access_token={owner}&after=0");
        let (mut socket, _) = tokio_tungstenite::connect_async(url).await.expect("subscriber connects");
        let welcome: Value = match socket.next().await {
            Some(Ok(Message::Text(text))) => serde_json::from_str(&text).expect("json"),
            other => panic!("expected welcome, got {other:?}"),
        };
        let resume_token = welcome["resumeToken"].as_str().expect("token").to_owned();
        subscribers.push(tokio::spawn(async move {
            let (mut expected, mut close) = (1u64, None);
            while let Some(message) = socket.next().await {
                match message {
                    Ok(Message::Text(text)) => {
                        let frame: Value = serde_json::from_str(&text).expect("json");
                        if frame["op"] == "event" {
                            assert_eq!(frame["event"]["seq"].as_u64(), Some(expected), "live events are gapless");
                            if expected.is_multiple_of(4) {
                                let ack = json!({"op": "ack", "seq": expected}).to_string();
                                let _ = socket.send(Message::Text(ack.into())).await;
                            }
                            expected += 1;
                        }
                    }
                    Ok(Message::Close(frame)) => {
                        close = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            (resume_token, expected - 1, close)
        }));
    }
    let mut producers = Vec::new();
    for (producer, session) in sessions.iter().enumerate() {
        let (client, address, token, acked, session) =
            (client.clone(), server.address.clone(), owner.clone(), acked.clone(), session.clone());
        producers.push(tokio::spawn(async move {
            for n in 0.. {
                let events: Vec<Value> =
                    (0..10).map(|i| transcript(&session, &format!("term-p{producer}-b{n}-{i}"), "x")).collect();
                let sent = client
                    .post(format!("{address}/v1/realtime/sessions/{session}/events"))
                    .bearer_auth(&token)
                    .json(&json!({ "events": events }))
                    .send()
                    .await;
                match sent {
                    Ok(response) if response.status().is_success() => record_acknowledged(response, &acked).await,
                    // Refused while draining (503) or the listener is gone: not acknowledged.
                    Ok(_) | Err(_) => return,
                }
            }
        }));
    }
    // Signalled under load, once enough is acknowledged to mean something (the producers go on).
    eventually("over 100 events acknowledged", || async { acked.lock().expect("lock").len() > 100 }).await;
    let pid = server.child.id().to_string();
    let signalled = Instant::now();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill -TERM").success());
    let status = loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            break status;
        }
        assert!(signalled.elapsed() < Duration::from_secs(20), "the server did not exit within the drain bound");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "a drained shutdown exits 0: {status:?}");
    for producer in producers {
        producer.await.expect("producer");
    }
    let mut resumes = Vec::new();
    for subscriber in subscribers {
        let (token, seen, close) = subscriber.await.expect("subscriber");
        let (code, reason) = close.expect("the server closed the socket with a close frame");
        assert_eq!(code, 1012, "service restart");
        let reason: Value = serde_json::from_str(&reason).expect("the reason is JSON");
        assert_eq!(reason["resumable"], true);
        resumes.push((token, seen));
    }

    let server = start(data_dir.path());
    wait_ready(&client, &server).await;
    let ws_base = server.address.replacen("http", "ws", 1);
    for ((token, seen), session) in resumes.into_iter().zip(&sessions) {
        let url = format!("{ws_base}/v1/realtime/sessions/{session}/ws?access_token={owner}&resumeToken={token}");
        let (mut socket, _) = tokio_tungstenite::connect_async(url).await.expect("resume after SIGTERM");
        let welcome: Value = match socket.next().await {
            Some(Ok(Message::Text(text))) => serde_json::from_str(&text).expect("json"),
            other => panic!("expected welcome, got {other:?}"),
        };
        let (from, head) = (welcome["replayFrom"].as_u64().expect("from"), welcome["headSeq"].as_u64().expect("head"));
        assert!(from <= seen, "the checkpoint never runs ahead of what the client saw");
        let mut expected = from + 1;
        while expected <= head {
            match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => {
                    let frame: Value = serde_json::from_str(&text).expect("json");
                    if frame["op"] == "event" {
                        assert_eq!(frame["event"]["seq"].as_u64(), Some(expected), "the resume is gapless");
                        expected += 1;
                    }
                }
                Ok(Some(Ok(_))) => {}
                other => panic!("the replay stopped at {expected} of {head}: {other:?}"),
            }
        }
    }
    let mut server = server;
    server.child.kill().expect("kill");
    server.child.wait().expect("reap");

    let acked = acked.lock().expect("lock").clone();
    assert_each_present_once_and_verified(&config, &acked);
}
