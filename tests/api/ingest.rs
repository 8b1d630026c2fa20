use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{error_code, spawn_app, transcript};

#[tokio::test]
async fn a_batch_gets_gapless_seqs_and_replays_in_order() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    let events = (0..5).map(|i| transcript(&session, &format!("e{i}"), &format!("text {i}"))).collect();
    let response = app.ingest(&alice, &session, events).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    let seqs: Vec<u64> =
        body["results"].as_array().expect("results").iter().map(|r| r["seq"].as_u64().expect("seq")).collect();
    assert_eq!(seqs, vec![2, 3, 4, 5, 6], "seq 1 is call.session.created");
    assert_eq!(body["headSeq"], 6);

    let page = app.replay(&alice, &session, 2, 2).await;
    let replayed: Vec<u64> =
        page["events"].as_array().expect("events").iter().map(|e| e["seq"].as_u64().expect("seq")).collect();
    assert_eq!(replayed, vec![3, 4]);
    assert_eq!(page["diagnostics"]["headSeq"], 6);
    assert_eq!(page["diagnostics"]["hasMore"], true);
    assert_eq!(page["diagnostics"]["nextAfter"], 4);
    assert!(page["diagnostics"]["epoch"].as_str().is_some_and(|e| e.starts_with("ep_")));
    let first = &page["events"][0];
    for key in
        ["eventId", "sessionId", "ts", "type", "payload", "schemaVersion", "seq", "position", "recordedAt", "actor"]
    {
        assert!(first.get(key).is_some(), "served event lacks {key}: {first}");
    }
    assert_eq!(first["actor"], json!({"kind": "user", "id": "alice"}));
}

#[tokio::test]
async fn repeating_an_event_id_is_idempotent_and_other_content_conflicts() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    let event = transcript(&session, "once", "hello");
    assert_eq!(app.ingest(&alice, &session, vec![event.clone()]).await.status(), StatusCode::OK);

    let again: Value = app.ingest(&alice, &session, vec![event.clone()]).await.json().await.expect("json");
    assert_eq!(again["results"][0], json!({"eventId": "once", "seq": 2, "position": 2, "duplicate": true}));

    let mut changed = event.clone();
    changed["payload"]["text"] = json!("goodbye");
    let conflict = app.ingest(&alice, &session, vec![changed]).await;
    assert_eq!(conflict.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(conflict).await, "EVENT_ID_CONFLICT");
    assert_eq!(app.replay(&alice, &session, 0, 100).await["diagnostics"]["headSeq"], 2, "nothing appended");
}

#[tokio::test]
async fn a_batch_is_all_or_nothing() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    assert_eq!(app.ingest(&alice, &session, vec![transcript(&session, "taken", "a")]).await.status(), StatusCode::OK);

    // An invalid envelope at index 2: nothing of the batch is appended, and the index is named.
    let mut bad = transcript(&session, "b2", "x");
    bad["payload"]["revision"] = json!(-1);
    let batch = vec![transcript(&session, "b0", "x"), transcript(&session, "b1", "x"), bad];
    let response = app.ingest(&alice, &session, batch).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "PAYLOAD_INVALID");
    assert_eq!(body["error"]["details"]["index"], 2);
    assert_eq!(body["error"]["details"]["pointer"], "/revision");

    // A conflict detected in the writer after earlier events of the batch were inserted.
    let mut reused = transcript(&session, "taken", "other text");
    reused["payload"]["segmentId"] = json!("zzz");
    let batch = vec![transcript(&session, "c0", "x"), reused];
    assert_eq!(app.ingest(&alice, &session, batch).await.status(), StatusCode::CONFLICT);

    let replay = app.replay(&alice, &session, 0, 100).await;
    assert_eq!(replay["diagnostics"]["headSeq"], 2);
    let verify = callstream::store::verify(app.database(), &app.config.master_key).expect("verify");
    assert!(verify.is_ok(), "{verify:?}");
}

#[tokio::test]
async fn duplicates_inside_one_batch_point_at_the_first() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    let event = transcript(&session, "twice", "same");
    let body: Value = app.ingest(&alice, &session, vec![event.clone(), event]).await.json().await.expect("json");
    assert_eq!(body["results"][0]["duplicate"], false);
    assert_eq!(body["results"][1], json!({"eventId": "twice", "seq": 2, "position": 2, "duplicate": true}));
}

/// A batch mixing new events with a repeat of a stored one (a client retrying part of what it
/// sent): the repeat keeps its place, the new events close up behind it, nothing leaves a gap.
#[tokio::test]
async fn a_repeat_among_new_events_keeps_its_place_and_the_rest_close_up() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    let stored = transcript(&session, "stored", "first");
    assert_eq!(app.ingest(&alice, &session, vec![stored.clone()]).await.status(), StatusCode::OK);
    let batch = vec![transcript(&session, "new-1", "a"), stored, transcript(&session, "new-2", "b")];
    let body: Value = app.ingest(&alice, &session, batch).await.json().await.expect("json");
    let places: Vec<(Value, Value, Value)> = body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| (r["eventId"].clone(), r["seq"].clone(), r["duplicate"].clone()))
        .collect();
    assert_eq!(
        places,
        vec![
            (json!("new-1"), json!(3), json!(false)),
            (json!("stored"), json!(2), json!(true)),
            (json!("new-2"), json!(4), json!(false)),
        ]
    );
    let replay = app.replay(&alice, &session, 0, 100).await;
    let seqs: Vec<u64> =
        replay["events"].as_array().expect("events").iter().map(|e| e["seq"].as_u64().expect("seq")).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4]);
    let verify = callstream::store::verify(app.database(), &app.config.master_key).expect("verify");
    assert!(verify.is_ok(), "{verify:?}");
}

#[tokio::test]
async fn batch_limits_and_session_mismatch_have_codes() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;

    let empty = app.ingest(&alice, &session, vec![]).await;
    assert_eq!(empty.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(empty).await, "BATCH_EMPTY");

    let many = (0..501).map(|i| transcript(&session, &format!("m{i}"), "x")).collect();
    let too_many = app.ingest(&alice, &session, many).await;
    assert_eq!(too_many.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(too_many).await, "BATCH_TOO_LARGE");

    let big_text = "x".repeat(9_000);
    let big = (0..120).map(|i| transcript(&session, &format!("big{i}"), &big_text)).collect();
    let oversized = app.ingest(&alice, &session, big).await;
    assert_eq!(oversized.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(oversized).await, "PAYLOAD_TOO_LARGE");

    let other = app.create_session(&alice).await;
    let mismatch = app.ingest(&alice, &session, vec![transcript(&other, "mm", "x")]).await;
    assert_eq!(mismatch.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(mismatch).await, "SESSION_MISMATCH");

    assert_eq!(app.replay(&alice, &session, 0, 100).await["diagnostics"]["headSeq"], 1, "nothing appended");
}

#[tokio::test]
async fn legacy_keys_are_normalized() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    let legacy = json!({"eventId": "legacy", "sessionId": session, "timestamp": "2026-11-23T10:00:00+02:00",
        "type": "transcript.segment.partial", "payload": {"segmentId": "s", "revision": 0, "text": "he"}, "version": 1});
    assert_eq!(app.ingest(&alice, &session, vec![legacy]).await.status(), StatusCode::OK);
    let stored = &app.replay(&alice, &session, 1, 1).await["events"][0];
    assert_eq!(stored["ts"], "2026-11-23T10:00:00+02:00");
    assert_eq!(stored["schemaVersion"], 1);
    assert!(stored.get("timestamp").is_none() && stored.get("version").is_none());
}

#[tokio::test]
async fn clients_cannot_forge_server_facts() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let agent = app.token("agent", "t1", &[callstream::domain::principal::Role::Service]);
    let session = app.create_session(&alice).await;
    let event = |id: &str, event_type: &str, payload: Value| {
        json!({"eventId": id, "sessionId": session, "ts": "2026-11-23T10:00:00Z", "type": event_type,
               "payload": payload, "schemaVersion": 1})
    };
    let forgeries = [
        event("f1", "call.session.state_changed", json!({"from": "created", "to": "connecting"})),
        event("f2", "safety.approved", json!({"actionId": "a1", "policyId": "default", "policyVersion": 1})),
        event("f3", "orchestration.action.executed", json!({"actionId": "a1", "outcomeRef": "x", "attempts": 1})),
        event("f4", "call.connection.resumed", json!({"connectionId": "wc_1", "replayFrom": 0})),
    ];
    for token in [&alice, &agent] {
        for forged in &forgeries {
            // A reserved event anywhere in a batch rejects the whole batch.
            let batch = vec![transcript(&session, "ok-before", "fine"), forged.clone()];
            let response = app.ingest(token, &session, batch).await;
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "{forged}");
            let body: Value = response.json().await.expect("json");
            assert_eq!(body["error"]["code"], "EVENT_TYPE_RESERVED", "{body}");
            assert_eq!(body["error"]["details"]["index"], 1);
            assert_eq!(body["error"]["details"]["type"], forged["type"]);
            assert!(
                body["error"]["message"].as_str().is_some_and(|m| m.contains(forged["type"].as_str().unwrap_or("?")))
            );
        }
    }
    // A participant joining is a service fact: an agent may say so, the owner may not.
    let joined = event("j1", "call.participant.joined", json!({"participantId": "bob"}));
    let by_owner = app.ingest(&alice, &session, vec![joined.clone()]).await;
    assert_eq!(error_code(by_owner).await, "EVENT_TYPE_RESERVED");
    assert_eq!(app.replay(&alice, &session, 0, 10).await["diagnostics"]["headSeq"], 1, "nothing was appended");
    assert_eq!(app.ingest(&agent, &session, vec![joined]).await.status(), StatusCode::OK);
    let view: Value = app.get(&format!("/v1/call/sessions/{session}"), &alice).await.json().await.expect("json");
    assert_eq!(view["state"], "created", "the lifecycle moves only through its commands");
    assert_eq!(view["participants"][0]["participantId"], "bob");
}

#[tokio::test]
async fn concurrent_producers_get_unique_gapless_seqs() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    let mut tasks = Vec::new();
    for producer in 0..8 {
        let (client, address, token, session) =
            (app.client.clone(), app.address.clone(), alice.clone(), session.clone());
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for batch in 0..10 {
                let events: Vec<Value> =
                    (0..5).map(|i| transcript(&session, &format!("p{producer}-b{batch}-{i}"), "x")).collect();
                let response = client
                    .post(format!("{address}/v1/realtime/sessions/{session}/events"))
                    .bearer_auth(&token)
                    .json(&json!({ "events": events }))
                    .send()
                    .await
                    .expect("send");
                let body: Value = response.json().await.expect("json");
                let batch_seqs: Vec<u64> = body["results"]
                    .as_array()
                    .expect("results")
                    .iter()
                    .map(|r| r["seq"].as_u64().expect("seq"))
                    .collect();
                assert!(batch_seqs.windows(2).all(|w| w[1] == w[0] + 1), "a batch is contiguous: {batch_seqs:?}");
                seqs.extend(batch_seqs);
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("task"));
    }
    all.sort_unstable();
    assert_eq!(all, (2..=401).collect::<Vec<u64>>());
}

#[tokio::test]
async fn the_wal_is_checkpointed_into_the_database_while_ingest_runs() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    let text = "x".repeat(3_000);
    for batch in 0..20 {
        let events = (0..200).map(|i| transcript(&session, &format!("w{batch}-{i}"), &text)).collect();
        assert_eq!(app.ingest(&alice, &session, events).await.status(), StatusCode::OK);
    }
    // About 12 MB of pages were written, below the writer's own checkpoint threshold: only the
    // checkpointer thread can have copied them into the database file. It runs at most every
    // 100 ms after a commit; give it a few rounds under a loaded test machine.
    let database = app.data_dir.path().join("callstream.db");
    let mut size = 0;
    for _ in 0..100 {
        size = std::fs::metadata(&database).expect("db").len();
        if size > 8 * 1024 * 1024 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(size > 8 * 1024 * 1024, "the database file holds the checkpointed pages: {size} bytes");
}
