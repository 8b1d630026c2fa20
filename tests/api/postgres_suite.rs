//! The HTTP and WebSocket suite, run again with every server on PostgreSQL: this test starts this
//! very test binary as a child with `CALLSTREAM_TEST_SCRATCH_PREFIX` set (`helpers::test_env`
//! then gives each server a database of its own), waits for it, and drops the databases it made.
//! Without a PostgreSQL server it says so and passes, unless CI requires one.

use std::process::Command;

use callstream::store::postgres::scratch::ScratchDatabase;

use crate::helpers::{SCRATCH_PREFIX, on_postgres, postgres_admin_url};

/// What does not run again here, and why; everything else runs on both backends.
const NOT_ON_POSTGRES: &[&str] = &[
    // Each runs its PostgreSQL cases itself (or is this test).
    "pg_log::",
    "store_contract::",
    "postgres_suite::",
    "nodes::",
    // The whole-API fuzzer is about the HTTP layer, which does not depend on the backend.
    "openapi::",
    // About SQLite's WAL file.
    "ingest::the_wal_is_checkpointed_into_the_database_while_ingest_runs",
];

#[test]
fn the_http_and_websocket_suite_passes_on_postgres() {
    if on_postgres() {
        return;
    }
    if crate::pg_log::database("postgres_suite::the_http_and_websocket_suite_passes_on_postgres").is_none() {
        return;
    }
    let prefix = format!("cs_suite_{}", uuid::Uuid::new_v4().simple());
    let mut command = Command::new(std::env::current_exe().expect("this test binary"));
    command.env(SCRATCH_PREFIX, &prefix).arg("--test-threads=4");
    for skipped in NOT_ON_POSTGRES {
        command.args(["--skip", skipped]);
    }
    let output = command.output().expect("run the suite on PostgreSQL");
    let dropped = ScratchDatabase::drop_all(&postgres_admin_url(), &prefix).expect("drop the run's databases");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary = stdout.lines().filter(|line| line.starts_with("test result:")).collect::<Vec<_>>().join("\n");
    assert!(
        output.status.success(),
        "the suite failed on PostgreSQL:\n{}\n{}",
        // Each failure with its message (the line after "panicked").
        stdout
            .lines()
            .zip(stdout.lines().skip(1).chain([""]))
            .filter(|(line, _)| line.contains("FAILED") || line.contains("panicked"))
            .map(|(line, next)| if line.contains("panicked") { format!("{line}\n    {next}") } else { line.to_owned() })
            .collect::<Vec<_>>()
            .join("\n"),
        String::from_utf8_lossy(&output.stderr).lines().rev().take(60).collect::<Vec<_>>().join("\n"),
    );
    assert!(dropped > 20, "{summary}: only {dropped} databases were made, so few servers ran on PostgreSQL");
    println!("on PostgreSQL: {summary} ({dropped} databases)");
}
