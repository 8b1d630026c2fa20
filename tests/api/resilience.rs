//! Back-pressure, limits and start-up behaviour that only show under unusual conditions.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{RawDb, error_code, spawn_app_in, spawn_app_with, transcript};

/// A writer that cannot commit (another process holds SQLite's write lock, or PostgreSQL's
/// append lock that every node's writer takes) fills its bounded
/// queue; the next command is told 503 with `Retry-After` at once, and the queued ones commit as
/// soon as the lock is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_writer_queue_answers_503_with_retry_after() {
    let app = spawn_app_with(&[("CALLSTREAM_WRITER_QUEUE_CAPACITY", "2")]).await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    let mut blocker = RawDb::open(&app.database());
    let take = format!("BEGIN; SELECT pg_advisory_xact_lock({})", callstream::store::postgres::APPEND_LOCK);
    blocker.execute(blocker.pick("BEGIN IMMEDIATE", &take)).expect("take the write lock");

    // Commands go in one at a time until the queue is full: the first group the writer takes
    // blocks on the lock, every later command waits in the queue (capacity 2).
    let metrics = format!("{}/metrics", app.address);
    let mut queued = Vec::new();
    let mut full = false;
    for n in 0..10 {
        let (client, url, token) =
            (app.client.clone(), format!("{}/v1/realtime/sessions/{session}/events", app.address), alice.clone());
        let event = transcript(&session, &format!("q{n}"), "waiting");
        queued.push(tokio::spawn(async move {
            client.post(url).bearer_auth(token).json(&json!({"events": [event]})).send().await.expect("send")
        }));
        for _ in 0..50 {
            let text = app.client.get(&metrics).send().await.expect("metrics").text().await.expect("text");
            if text.lines().any(|line| line == "callstream_writer_queue_depth 2") {
                full = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if full {
            break;
        }
    }
    assert!(full, "the writer's queue filled up while the lock was held");
    let refused = app.ingest(&alice, &session, vec![transcript(&session, "overflow", "no room")]).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(error_code(refused).await, "SERVICE_UNAVAILABLE");

    blocker.execute("COMMIT").expect("release");
    let mut committed = 0;
    for request in queued {
        let response = request.await.expect("task");
        if response.status() == StatusCode::OK {
            committed += 1;
        } else {
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        }
    }
    let head = app.replay(&alice, &session, 0, 1).await["diagnostics"]["headSeq"].as_u64().expect("head");
    assert_eq!(head, 1 + committed, "exactly the acknowledged commands committed");
    assert!(committed >= 2, "the queued commands went through once the lock was released");
}

/// A chunked body (no Content-Length) is cut off at the route's limit while it streams.
#[tokio::test]
async fn a_chunked_body_over_the_limit_is_413_while_streaming() {
    let app = spawn_app_with(&[]).await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.expect("connect");
    let head = format!(
        "POST /v1/realtime/sessions/{session}/events HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {alice}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    // Up to 4 MiB; the server answers (and stops reading) once 1 MiB has arrived.
    while sent < 4 * 1024 * 1024 {
        let framed = [format!("{:x}\r\n", chunk.len()).into_bytes(), chunk.clone(), b"\r\n".to_vec()].concat();
        if stream.write_all(&framed).await.is_err() {
            break;
        }
        sent += chunk.len();
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let read_answer = async {
        let mut buffer = [0u8; 4096];
        while !String::from_utf8_lossy(&answer).contains("PAYLOAD_TOO_LARGE") {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), read_answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{}", answer.lines().next().unwrap_or_default());
    assert!(answer.contains("PAYLOAD_TOO_LARGE"));
    assert_eq!(app.replay(&alice, &session, 0, 1).await["diagnostics"]["headSeq"], 1);
}

/// A database whose projections were built by another version is rebuilt from the log at
/// start-up: a damaged projection row comes back as the log says.
#[tokio::test]
async fn projections_of_another_version_are_rebuilt_at_start_up() {
    let app = spawn_app_with(&[]).await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    let database = app.database();
    let data_dir = app.stop().await;
    RawDb::open(&database)
        .execute(
            "UPDATE sessions SET title = 'damaged', state = 'ended'; \
             UPDATE meta SET value = '0' WHERE key = 'projection_version'",
        )
        .expect("damage, and an old version");
    let app = spawn_app_in(data_dir).await;
    let view: Value = app.get(&format!("/v1/call/sessions/{session}"), &alice).await.json().await.expect("json");
    assert_eq!((view["title"].as_str(), view["state"].as_str()), (Some("test call"), Some("created")));
    let version = RawDb::open(&database).value("SELECT value FROM meta WHERE key = 'projection_version'");
    assert_eq!(version, Some(callstream::store::PROJECTION_VERSION.to_string()));
}

/// A resume token from another database history (epoch) is refused with EPOCH_CHANGED: the
/// client must reload rather than trust its checkpoint.
#[tokio::test]
async fn a_resume_token_from_another_epoch_is_refused() {
    let app = spawn_app_with(&[]).await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    let mut socket = crate::ws::connect(&app, &alice, &session, "").await;
    let welcome = socket.next().await;
    let token = welcome["resumeToken"].as_str().expect("token").to_owned();
    socket.close().await;
    let database = app.database();
    let data_dir = app.stop().await;
    // The database is replaced by one with another history (here: the same rows, a new epoch).
    RawDb::open(&database).execute("UPDATE meta SET value = 'ep_other' WHERE key = 'epoch'").expect("new epoch");
    let app = spawn_app_in(data_dir).await;
    let refused =
        app.post(&format!("/v1/call/sessions/{session}/reconnect"), &alice, &json!({"resumeToken": token})).await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], "EPOCH_CHANGED");
    assert_eq!(body["error"]["details"]["epoch"], "ep_other", "the answer names the epoch to reload from");
    assert_eq!(crate::ws::try_connect(&app, &alice, &session, &format!("resumeToken={token}")).await.err(), Some(409));
}
