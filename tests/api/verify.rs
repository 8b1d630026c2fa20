//! Sabotage: the log refuses edits, and `callstream verify` names the first tampered position.

use std::process::Command;

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
