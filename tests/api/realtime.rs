//! The realtime protocol against the real server: replay + live, acks, resume, supersede,
//! terminal sessions, publishing, slow consumers, restarts, token expiry and transcripts.

use std::time::Duration;

use callstream::domain::principal::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{RawDb, TestApp, error_code, spawn_app, spawn_app_in, spawn_app_with, transcript};
use crate::ws::{Ended, connect, seqs, try_connect};

async fn ingest_n(app: &TestApp, token: &str, session: &str, prefix: &str, n: usize) {
    let events = (0..n).map(|i| transcript(session, &format!("{prefix}-{i}"), "words")).collect();
    assert_eq!(app.ingest(token, session, events).await.status(), StatusCode::OK);
}

async fn reconnect(app: &TestApp, token: &str, session: &str, resume_token: &str) -> reqwest::Response {
    app.post(&format!("/v1/call/sessions/{session}/reconnect"), token, &json!({"resumeToken": resume_token})).await
}

#[tokio::test]
async fn replay_then_live_events_arrive_in_order_without_gaps() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    ingest_n(&app, &alice, &session, "before", 3).await;

    let mut ws = connect(&app, &alice, &session, "").await;
    let welcome = ws.next().await;
    assert_eq!(welcome["op"], "welcome");
    assert_eq!((welcome["headSeq"].as_u64(), welcome["replayFrom"].as_u64()), (Some(4), Some(0)));
    assert!(welcome["epoch"].as_str().is_some_and(|e| e.starts_with("ep_")));
    assert!(welcome["resumeToken"].as_str().is_some());
    assert_eq!(seqs(&ws.events(4).await), vec![1, 2, 3, 4]);

    ingest_n(&app, &alice, &session, "live", 2).await;
    let live = ws.events(2).await;
    assert_eq!(seqs(&live), vec![5, 6]);
    assert_eq!(live[0]["eventId"], "live-0");

    let mut late = connect(&app, &alice, &session, "after=5").await;
    assert_eq!(late.next().await["replayFrom"], 5);
    assert_eq!(seqs(&late.events(1).await), vec![6]);
}

#[tokio::test]
async fn a_resume_replays_exactly_what_was_not_acknowledged() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    ingest_n(&app, &alice, &session, "a", 5).await;
    let mut ws = connect(&app, &alice, &session, "").await;
    let token = ws.next().await["resumeToken"].as_str().expect("token").to_owned();
    ws.events(6).await;
    ws.send(json!({"op": "ack", "seq": 4})).await;
    ws.send(json!({"op": "ack", "seq": 2})).await; // lower: ignored
    ws.send(json!({"op": "ping"})).await;
    assert_eq!(ws.next().await["op"], "pong", "acks are processed in order before the ping");
    ws.close().await;
    ingest_n(&app, &alice, &session, "missed", 2).await;

    let answer: Value = reconnect(&app, &alice, &session, &token).await.json().await.expect("json");
    assert_eq!(answer["replayFrom"], 4);
    let next_token = answer["resumeToken"].as_str().expect("token");
    assert_ne!(next_token, token, "every resume rotates the token");
    assert!(answer["wsUrl"].as_str().is_some_and(|u| u.contains("resumeToken=")));
    let reused = reconnect(&app, &alice, &session, &token).await;
    assert_eq!(reused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(reused).await, "RESUME_TOKEN_INVALID");

    let mut resumed = connect(&app, &alice, &session, &format!("resumeToken={next_token}")).await;
    let welcome = resumed.next().await;
    assert_eq!(welcome["replayFrom"], 4);
    let events = resumed.events(5).await;
    assert_eq!(seqs(&events), vec![5, 6, 7, 8, 9]);
    assert_eq!(events[4]["type"], "call.connection.resumed");
    assert_eq!(events[4]["payload"]["replayFrom"], 4);
}

#[tokio::test]
async fn two_resumes_with_one_token_have_one_winner() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    let mut ws = connect(&app, &alice, &session, "").await;
    let token = ws.next().await["resumeToken"].as_str().expect("token").to_owned();
    ws.close().await;
    let (a, b) = tokio::join!(reconnect(&app, &alice, &session, &token), reconnect(&app, &alice, &session, &token));
    let mut statuses = [a.status(), b.status()];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::UNAUTHORIZED]);
}

#[tokio::test]
async fn a_resumed_connection_supersedes_the_old_socket() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    let mut old = connect(&app, &alice, &session, "").await;
    let token = old.next().await["resumeToken"].as_str().expect("token").to_owned();
    old.events(1).await;
    let mut new = connect(&app, &alice, &session, &format!("resumeToken={token}")).await;
    assert_eq!(new.next().await["op"], "welcome");
    let (_, ended) = old.drain().await;
    assert!(matches!(ended, Ended::Closed(4001, _)), "{ended:?}");
    // Stolen tokens are useless to others.
    let bob = app.user("bob");
    let refused = reconnect(&app, &bob, &session, &token).await;
    assert_eq!(refused.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_frames_get_error_frames_and_the_connection_stays_open() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    let mut ws = connect(&app, &alice, &session, "").await;
    ws.next().await;
    ws.events(1).await;
    ws.send(json!({"op": "ack", "seq": 99})).await;
    assert_eq!(ws.next().await["code"], "ACK_BEYOND_HEAD");
    ws.send(json!({"op": "dance"})).await;
    assert_eq!(ws.next().await["code"], "WS_FRAME_INVALID");
    ws.socket.send(tokio_tungstenite::tungstenite::Message::Text("{not json".into())).await.expect("send");
    assert_eq!(ws.next().await["code"], "WS_FRAME_INVALID");
    ws.send(json!({"op": "publish", "event": {"eventId": "x"}, "ref": "r1"})).await;
    let rejected = ws.next().await;
    assert_eq!((rejected["code"].as_str(), rejected["ref"].as_str()), (Some("ENVELOPE_MISSING_KEY"), Some("r1")));
    ws.send(json!({"op": "ping"})).await;
    assert_eq!(ws.next().await["op"], "pong");
}

use futures_util::SinkExt;

#[tokio::test]
async fn publishing_over_the_socket_is_acknowledged_after_commit_and_fanned_out() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    let agent = app.token("agent", "t1", &[Role::Service]);
    let mut watcher = connect(&app, &alice, &session, "").await;
    watcher.next().await;
    watcher.events(1).await;
    let mut publisher = connect(&app, &agent, &session, "after=1").await;
    publisher.next().await;

    publisher.send(json!({"op": "publish", "event": transcript(&session, "ws-1", "hello")})).await;
    let published = publisher.next().await;
    assert_eq!(published, json!({"op": "published", "eventId": "ws-1", "seq": 2, "duplicate": false, "ref": "ws-1"}));
    assert_eq!(publisher.events(1).await[0]["seq"], 2, "the publisher's own stream carries it too");
    publisher.send(json!({"op": "publish", "event": transcript(&session, "ws-1", "hello")})).await;
    let again = publisher.next().await;
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["seq"], 2);

    let seen = watcher.events(1).await;
    assert_eq!((seen[0]["eventId"].as_str(), seen[0]["actor"]["kind"].as_str()), (Some("ws-1"), Some("service")));
    let replay = app.replay(&alice, &session, 0, 10).await;
    assert_eq!(replay["diagnostics"]["headSeq"], 2, "published means committed, once");
}

#[tokio::test]
async fn a_failed_session_closes_its_sockets_with_4410() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    let mut ws = connect(&app, &alice, &session, "").await;
    let token = ws.next().await["resumeToken"].as_str().expect("token").to_owned();
    ws.events(1).await;
    app.post(&format!("/v1/call/sessions/{session}/state"), &alice, &json!({"to": "failed", "code": "MEDIA_LOST"}))
        .await;
    let (frames, ended) = ws.drain().await;
    assert_eq!(frames.last().map(|f| f["event"]["type"].clone()), Some(json!("call.session.failed")));
    assert_eq!(frames.last().map(|f| f["event"]["payload"]["code"].clone()), Some(json!("MEDIA_LOST")));
    assert!(matches!(ended, Ended::Closed(4410, _)), "{ended:?}");
    let refused = reconnect(&app, &alice, &session, &token).await;
    assert_eq!(refused.status(), StatusCode::GONE);
    assert_eq!(error_code(refused).await, "SESSION_TERMINATED");
    assert_eq!(try_connect(&app, &alice, &session, "").await.err(), Some(410));
}

#[tokio::test]
async fn resume_works_across_a_server_restart() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    ingest_n(&app, &alice, &session, "r", 3).await;
    let mut ws = connect(&app, &alice, &session, "").await;
    let token = ws.next().await["resumeToken"].as_str().expect("token").to_owned();
    ws.events(4).await;
    ws.send(json!({"op": "ack", "seq": 3})).await;
    ws.send(json!({"op": "ping"})).await;
    ws.next().await;
    let data_dir = app.stop().await;
    drop(ws);

    let app = spawn_app_in(data_dir).await;
    let answer: Value = reconnect(&app, &alice, &session, &token).await.json().await.expect("json");
    assert_eq!(answer["replayFrom"], 3, "the checkpoint is on the server");
    let mut resumed =
        connect(&app, &alice, &session, &format!("resumeToken={}", answer["resumeToken"].as_str().expect("t"))).await;
    resumed.next().await;
    assert_eq!(seqs(&resumed.events(2).await), vec![4, 5]);
}

#[tokio::test]
async fn resume_after_the_window_is_refused() {
    let app = spawn_app_with(&[("CALLSTREAM_RECONNECT_WINDOW_SECS", "60"), ("CALLSTREAM_TEST_CLOCK", "1")]).await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    let mut ws = connect(&app, &alice, &session, "").await;
    let token = ws.next().await["resumeToken"].as_str().expect("token").to_owned();
    ws.close().await;
    app.wait_for_metric("callstream_ws_connections 0").await;
    app.advance_clock(61).await;
    let expired = reconnect(&app, &alice, &session, &token).await;
    assert_eq!(expired.status(), StatusCode::GONE);
    assert_eq!(error_code(expired).await, "RESUME_WINDOW_EXPIRED");
}

#[tokio::test]
async fn a_slow_consumer_is_closed_with_4008_never_holds_up_others_and_resumes_without_loss() {
    let send_timeout_ms = 300;
    let app = spawn_app_with(&[
        ("CALLSTREAM_WS_SEND_TIMEOUT_MS", &send_timeout_ms.to_string()),
        ("CALLSTREAM_SOCKET_SEND_BUFFER_BYTES", "65536"),
    ])
    .await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    // A small receive window on our side and a bounded send buffer on the server's: about half a
    // megabyte fits on the path, the test sends eight.
    let mut slow = crate::ws::connect_with_receive_buffer(&app, &alice, &session, 16 * 1024).await;
    let token = slow.next().await["resumeToken"].as_str().expect("token").to_owned();
    let mut fast = connect(&app, &alice, &session, "").await;
    fast.next().await;
    // The fast reader keeps reading while the slow one reads nothing.
    let fast_reader = tokio::spawn(async move { seqs(&fast.events(1001).await) });
    let text = "x".repeat(8_000);
    let ingest = |batch: usize| {
        let events = (0..100).map(|i| transcript(&session, &format!("s{batch}-{i}"), &text)).collect();
        app.ingest(&alice, &session, events)
    };
    // Two batches (1.6 MB) overflow the path. Stalling well past the send timeout gets the slow
    // consumer cut off; the server then holds its 4008 behind the data in flight for 10 s
    // (`CLOSE_LINGER`), so the slow reader reads from here on while the rest is ingested.
    for batch in 0..2 {
        assert_eq!(ingest(batch).await.status(), StatusCode::OK);
    }
    tokio::time::sleep(Duration::from_millis(3 * send_timeout_ms).max(Duration::from_secs(2))).await;
    let slow_reader = tokio::spawn(async move {
        tokio::time::timeout(Duration::from_secs(15), slow.drain()).await.expect("closed in time")
    });
    for batch in 2..10 {
        assert_eq!(ingest(batch).await.status(), StatusCode::OK);
    }
    assert_eq!(
        fast_reader.await.expect("fast reader"),
        (1..=1001).collect::<Vec<u64>>(),
        "other subscribers are unaffected"
    );
    let (frames, ended) = slow_reader.await.expect("slow reader");
    let events: Vec<u64> =
        frames.iter().filter(|f| f["op"] == "event").map(|f| f["event"]["seq"].as_u64().expect("seq")).collect();
    assert!(events.len() < 200, "the cut-off came within the first two batches ({} events)", events.len());
    assert_eq!(events, (1..=events.len() as u64).collect::<Vec<u64>>(), "what the slow consumer got is gapless");
    match ended {
        Ended::Closed(4008, reason) => {
            let reason: Value = serde_json::from_str(&reason).expect("the close reason is JSON");
            assert_eq!(reason["resumable"], true, "{reason}");
            assert!(reason["retryAfterMs"].as_u64().is_some(), "{reason}");
        }
        other => panic!("expected close 4008 after the data in flight, got {other:?}"),
    }

    let answer: Value = reconnect(&app, &alice, &session, &token).await.json().await.expect("json");
    let mut resumed =
        connect(&app, &alice, &session, &format!("resumeToken={}", answer["resumeToken"].as_str().expect("t"))).await;
    assert_eq!(resumed.next().await["replayFrom"], 0);
    let replayed = resumed.events(1002).await;
    assert_eq!(seqs(&replayed), (1..=1002).collect::<Vec<u64>>(), "nothing lost, nothing twice");
}

#[tokio::test]
async fn an_expired_token_closes_the_socket_unless_refreshed() {
    let app = spawn_app().await;
    let session = app.create_session(&app.user("alice")).await;
    let short = app.token_for("alice", "t1", &[Role::User], 2);
    let mut refreshed = connect(&app, &short, &session, "").await;
    refreshed.next().await;
    refreshed.send(json!({"op": "refresh", "token": app.user("alice")})).await;
    let mut expiring = connect(&app, &short, &session, "").await;
    expiring.next().await;
    let (frames, ended) = expiring.drain().await;
    assert!(frames.iter().any(|f| f["code"] == "AUTH_EXPIRED"), "{frames:?}");
    assert!(matches!(ended, Ended::Closed(4401, _)), "{ended:?}");
    refreshed.send(json!({"op": "ping"})).await;
    let mut frame = refreshed.next().await;
    while frame["op"] == "event" {
        frame = refreshed.next().await;
    }
    assert_eq!(frame["op"], "pong", "the refreshed connection outlives the first token");
}

#[tokio::test]
async fn the_socket_enforces_auth_and_ownership() {
    let app = spawn_app().await;
    let session = app.create_session(&app.user("alice")).await;
    let url = format!("{}/v1/realtime/sessions/{session}/ws", app.address.replacen("http", "ws", 1));
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status().as_u16(), 401),
        other => panic!("expected 401, got {other:?}"),
    }
    assert_eq!(try_connect(&app, &app.user("bob"), &session, "").await.err(), Some(404));
    assert_eq!(try_connect(&app, &app.user("alice"), &session, "resumeToken=forged").await.err(), Some(401));
    let plain = app.get(&format!("/v1/realtime/sessions/{session}/ws"), &app.user("alice")).await;
    assert_eq!(error_code(plain).await, "WS_UPGRADE_REQUIRED");
}

#[tokio::test]
async fn transcripts_follow_the_supersession_rules() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    let segment = |id: &str, kind: &str, revision: u64, text: &str| {
        let mut payload = json!({"segmentId": "seg-1", "revision": revision, "text": text});
        if kind != "edited" {
            payload["startMs"] = json!(0);
        }
        json!({"eventId": id, "sessionId": session, "ts": "2026-11-23T10:00:00Z", "type": format!("transcript.segment.{kind}"),
               "payload": payload, "schemaVersion": 1})
    };
    let other = json!({"eventId": "o1", "sessionId": session, "ts": "2026-11-23T10:00:01Z", "type": "transcript.segment.final",
                       "payload": {"segmentId": "seg-2", "revision": 1, "text": "second", "startMs": 2000}, "schemaVersion": 1});
    let sequence = vec![
        segment("p1", "partial", 1, "helo"),
        segment("p2", "partial", 2, "hello wor"),
        segment("p0", "partial", 1, "stale partial"),
        segment("f3", "final", 3, "hello world"),
        segment("p4", "partial", 4, "late partial after final"),
        segment("f2", "final", 2, "stale final"),
        other,
        segment("e1", "edited", 1, "Hello, world!"),
        segment("f9", "final", 9, "a later final cannot undo an edit"),
    ];
    for event in sequence {
        assert_eq!(app.ingest(&alice, &session, vec![event]).await.status(), StatusCode::OK);
    }
    let current: Value =
        app.get(&format!("/v1/realtime/sessions/{session}/transcript"), &alice).await.json().await.expect("json");
    assert_eq!(current["text"], "Hello, world! second");
    assert_eq!(current["segments"][0]["kind"], "edited");

    let path = format!("/v1/realtime/sessions/{session}/transcript-snapshots");
    let snapshots: Value = app.get(&path, &alice).await.json().await.expect("json");
    let texts: Vec<&str> =
        snapshots["snapshots"].as_array().expect("rows").iter().map(|s| s["text"].as_str().expect("text")).collect();
    assert_eq!(
        texts,
        ["helo", "hello wor", "hello world", "second", "Hello, world!"],
        "stale revisions leave no snapshot"
    );
    assert_eq!(snapshots["stats"], json!({"snapshots": 5, "superseded": 3, "current": 2}));

    let compacted: Value = app.post(&format!("{path}/compact"), &alice, &json!({})).await.json().await.expect("json");
    assert_eq!(compacted, json!({"examined": 5, "deleted": 3, "kept": 2}));
    let after: Value = app.get(&path, &alice).await.json().await.expect("json");
    assert_eq!(after["stats"], json!({"snapshots": 2, "superseded": 0, "current": 2}));
    assert_eq!(
        app.replay(&alice, &session, 0, 100).await["diagnostics"]["headSeq"],
        10,
        "compaction never touches events"
    );
    let unchanged: Value =
        app.get(&format!("/v1/realtime/sessions/{session}/transcript"), &alice).await.json().await.expect("json");
    assert_eq!(unchanged["text"], current["text"]);
}

/// Resolves `https://callstream.dev/schemas/<file>` from `schemas/` (no network).
struct LocalSchemas;

impl jsonschema::Retrieve for LocalSchemas {
    fn retrieve(&self, uri: &jsonschema::Uri<String>) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let file = uri.path().as_str().rsplit('/').next().unwrap_or_default().to_owned();
        let path = format!("{}/schemas/{file}", env!("CARGO_MANIFEST_DIR"));
        Ok(serde_json::from_str(&std::fs::read_to_string(path)?)?)
    }
}

#[tokio::test]
async fn every_frame_matches_the_ws_schema() {
    let schema: Value = serde_json::from_str(include_str!("../../schemas/ws.v1.json")).expect("schema");
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .with_retriever(LocalSchemas)
        .build(&schema)
        .expect("ws.v1.json compiles");
    let app = spawn_app().await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    let mut ws = connect(&app, &alice, &session, "").await;
    let client_frames = [
        json!({"op": "ack", "seq": 1}),
        json!({"op": "ping"}),
        json!({"op": "publish", "event": transcript(&session, "schema-1", "hi"), "ref": "p1"}),
        json!({"op": "ack", "seq": 9}),
    ];
    for frame in &client_frames {
        assert!(validator.is_valid(frame), "client frame {frame}");
    }
    let mut frames = vec![ws.next().await];
    for frame in client_frames {
        ws.send(frame).await;
    }
    for _ in 0..5 {
        frames.push(ws.next().await);
    }
    let ops: Vec<&str> = frames.iter().map(|f| f["op"].as_str().expect("op")).collect();
    for op in ["welcome", "event", "pong", "published", "error"] {
        assert!(ops.contains(&op), "{op} seen in {ops:?}");
    }
    for frame in &frames {
        assert!(
            validator.is_valid(frame),
            "server frame {frame}: {:?}",
            validator.iter_errors(frame).map(|e| e.to_string()).collect::<Vec<_>>()
        );
    }
}

#[tokio::test]
async fn a_silent_client_is_closed_after_the_idle_timeout() {
    let app = spawn_app_with(&[("CALLSTREAM_WS_HEARTBEAT_SECS", "1"), ("CALLSTREAM_WS_IDLE_TIMEOUT_SECS", "2")]).await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    let mut ws = connect(&app, &alice, &session, "").await;
    ws.next().await;
    // Not reading means not answering the server's pings.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let (_, ended) = ws.drain().await;
    assert!(matches!(ended, Ended::Closed(4002, _)), "{ended:?}");
}

#[tokio::test]
async fn connections_closed_long_ago_are_pruned_and_recent_ones_kept() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    let mut db = RawDb::open(&app.database());
    let mut row = |id: &str, disconnected: Option<&str>| {
        let disconnected = disconnected.map_or("NULL".to_owned(), |at| format!("'{at}'"));
        db.execute(&format!(
            "INSERT INTO ws_connections (connection_id, tenant_id, session_id, user_id, acked_seq, generation, \
             created_at, connected_at, disconnected_at) VALUES ('{id}', 't1', '{session}', 'alice', 0, 1, \
             '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z', {disconnected})"
        ))
        .expect("insert");
    };
    row("wc_ancient", Some("2026-01-02T00:00:00.000Z"));
    let yesterday =
        (chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    row("wc_yesterday", Some(&yesterday));
    row("wc_open", None);

    let mut socket = connect(&app, &alice, &session, "").await;
    socket.next().await;
    let mut remaining: Vec<String> = RawDb::open(&app.database())
        .rows(
            "SELECT connection_id FROM ws_connections WHERE connection_id IN ('wc_ancient', 'wc_yesterday', 'wc_open')",
        )
        .into_iter()
        .flatten()
        .flatten()
        .collect();
    remaining.sort();
    assert_eq!(remaining, ["wc_open", "wc_yesterday"], "only the row closed > 7 days ago is gone");
}
