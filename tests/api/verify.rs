//! Sabotage: the log refuses edits, and `callstream verify` names the first tampered position.

use std::process::Command;

use serde_json::json;

use crate::helpers::{MASTER_KEY, RawDb, TestApp, spawn_app, transcript};

/// `callstream verify` as an operator runs it, on the app's database.
fn verify_command(app: &TestApp) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_callstream"));
    command.arg("verify").env("CALLSTREAM_DATA_DIR", app.data_dir.path());
    if let callstream::store::Database::Postgres(url) = app.database() {
        command.env(callstream::config::DATABASE_URL, url);
    }
    command
}

fn verify_binary(app: &TestApp) -> (bool, String) {
    let output = verify_command(app).env("CALLSTREAM_MASTER_KEY", MASTER_KEY).output().expect("run verify");
    (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned())
}

#[tokio::test]
async fn the_event_table_rejects_update_and_delete() {
    let app = spawn_app().await;
    app.create_session(&app.user("alice")).await;
    let mut db = RawDb::open(&app.database());
    let update = db.execute("UPDATE events SET payload = '{}' WHERE position = 1");
    assert!(update.as_ref().is_err_and(|e| e.contains("append-only")), "{update:?}");
    let delete = db.execute("DELETE FROM events");
    assert!(delete.as_ref().is_err_and(|e| e.contains("append-only")), "{delete:?}");
}

#[tokio::test]
async fn verify_names_the_first_tampered_position() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    let events = (0..6).map(|i| transcript(&session, &format!("v{i}"), "original")).collect();
    assert!(app.ingest(&alice, &session, events).await.status().is_success());

    let (ok, output) = verify_binary(&app);
    assert!(ok, "{output}");
    assert!(output.contains("events: 7"), "{output}");

    // Opening the payloads to compare projections needs the master key; without it verify says so.
    let without_key = verify_command(&app).env_remove("CALLSTREAM_MASTER_KEY").output().expect("run verify");
    assert!(!without_key.status.success());
    assert!(String::from_utf8_lossy(&without_key.stderr).contains("CALLSTREAM_MASTER_KEY"));

    // An attacker with file access drops the guard and rewrites one payload (the text is sealed;
    // the segment id is not).
    let mut db = RawDb::open(&app.database());
    let drop_guard = db.pick(
        "DROP TRIGGER events_are_append_only_update;",
        "ALTER TABLE events DISABLE TRIGGER events_append_only_rows;",
    );
    db.execute(&format!(
        "{drop_guard} UPDATE events SET payload = replace(payload, 'seg-v2', 'seg-vX') WHERE position = 4;"
    ))
    .expect("tamper");
    let payload = db.value("SELECT payload FROM events WHERE position = 4").expect("payload");
    assert!(payload.contains("seg-vX"), "the payload was rewritten");
    let (ok, output) = verify_binary(&app);
    assert!(!ok, "verify must fail: {output}");
    assert!(output.contains("BROKEN at position 4"), "{output}");
}

/// `verify` on a database in use: calls are ingested into and ended (their charges then confirmed
/// by the outbox worker) all the while, and every verification still finds the projections equal
/// to a rebuild, because it reads the log and the projections from one snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verify_of_a_database_in_use_sees_one_consistent_snapshot() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    const CALLS: usize = 8;
    let app = Arc::new(spawn_app().await);
    let alice = app.user("alice");
    let (stop, calls) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let writer = tokio::spawn({
        let (app, alice, stop, calls) = (app.clone(), alice.clone(), stop.clone(), calls.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                let session = app.create_session(&alice).await;
                let state = format!("/v1/call/sessions/{session}/state");
                for to in ["connecting", "active"] {
                    assert!(app.post(&state, &alice, &json!({ "to": to })).await.status().is_success(), "→ {to}");
                }
                for batch in 0..4 {
                    let events =
                        (0..10).map(|i| transcript(&session, &format!("{session}-{batch}-{i}"), "words")).collect();
                    let response = app.ingest(&alice, &session, events).await;
                    let status = response.status();
                    assert!(status.is_success(), "{status}: {}", response.text().await.unwrap_or_default());
                }
                assert!(app.post(&state, &alice, &json!({ "to": "ended" })).await.status().is_success());
                calls.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let mut rounds = 0;
    while calls.load(Ordering::Relaxed) < CALLS {
        assert!(rounds < 1_000, "the writer ended {} calls in {rounds} rounds", calls.load(Ordering::Relaxed));
        let (database, key) = (app.database(), app.config.master_key.clone());
        let report = tokio::task::spawn_blocking(move || callstream::store::verify(database, &key))
            .await
            .expect("join")
            .expect("verify");
        assert!(report.is_ok(), "round {rounds}: {report:?}");
        rounds += 1;
    }
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("writer");
    assert!(rounds >= 2, "verify ran {rounds} times while {CALLS} calls were written");
}
