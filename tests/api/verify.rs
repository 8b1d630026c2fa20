//! Sabotage: the log refuses edits, and `callstream verify` names the first tampered position.

use std::process::Command;

use crate::helpers::{MASTER_KEY, spawn_app, transcript};

fn verify_binary(data_dir: &std::path::Path) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_callstream"))
        .arg("verify")
        .env("CALLSTREAM_DATA_DIR", data_dir)
        .env("CALLSTREAM_MASTER_KEY", MASTER_KEY)
        .output()
        .expect("run verify");
    (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned())
}

#[tokio::test]
async fn the_event_table_rejects_update_and_delete() {
    let app = spawn_app().await;
    app.create_session(&app.user("alice")).await;
    let conn = rusqlite::Connection::open(app.database()).expect("open");
    let update = conn.execute("UPDATE events SET payload = '{}' WHERE position = 1", []);
    assert!(update.is_err_and(|e| e.to_string().contains("append-only")));
    let delete = conn.execute("DELETE FROM events", []);
    assert!(delete.is_err_and(|e| e.to_string().contains("append-only")));
}

#[tokio::test]
async fn verify_names_the_first_tampered_position() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    let events = (0..6).map(|i| transcript(&session, &format!("v{i}"), "original")).collect();
    assert!(app.ingest(&alice, &session, events).await.status().is_success());

    let (ok, output) = verify_binary(app.data_dir.path());
    assert!(ok, "{output}");
    assert!(output.contains("events: 7"), "{output}");

    // Opening the payloads to compare projections needs the master key; without it verify says so.
    let without_key = Command::new(env!("CARGO_BIN_EXE_callstream"))
        .arg("verify")
        .env("CALLSTREAM_DATA_DIR", app.data_dir.path())
        .env_remove("CALLSTREAM_MASTER_KEY")
        .output()
        .expect("run verify");
    assert!(!without_key.status.success());
    assert!(String::from_utf8_lossy(&without_key.stderr).contains("CALLSTREAM_MASTER_KEY"));

    // An attacker with file access drops the guard and rewrites one payload (the text is sealed;
    // the segment id is not).
    let conn = rusqlite::Connection::open(app.database()).expect("open");
    let changed = conn
        .execute_batch(
            "DROP TRIGGER events_are_append_only_update;
             UPDATE events SET payload = replace(payload, 'seg-v2', 'seg-vX') WHERE position = 4;",
        )
        .and_then(|()| {
            conn.query_row("SELECT instr(payload, 'seg-vX') > 0 FROM events WHERE position = 4", [], |r| {
                r.get::<_, bool>(0)
            })
        })
        .expect("tamper");
    assert!(changed, "the payload was rewritten");
    let (ok, output) = verify_binary(app.data_dir.path());
    assert!(!ok, "verify must fail: {output}");
    assert!(output.contains("BROKEN at position 4"), "{output}");
}
