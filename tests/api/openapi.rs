//! The OpenAPI document against the live server, checked by an independent fuzzer: schemathesis
//! (from PyPI, in the test environment of `python.rs`) reads `/openapi.json` from a real
//! `callstream serve` child and sends a bounded number of generated requests, valid and invalid,
//! with a valid token of every role. No answer may be a 5xx, and every answer's status, content
//! type and body must match the document (so every error has the catalog shape). Afterwards the
//! server drains on SIGTERM and its log verifies.

use std::process::Command;
use std::time::Duration;

use callstream::clock::Clock;
use callstream::domain::principal::Role;
use serde_json::Value;

use crate::crash::{start_with, wait_ready};
use crate::helpers::test_config;

/// Generated cases per operation and phase: enough to reach every operation's error paths, few
/// enough to keep the suite's time (about 15 s on 2 cores).
const MAX_EXAMPLES: &str = "25";
/// A fixed seed: a failure reproduces with the same command.
const SEED: &str = "20261125";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_every_answer_matches_the_document() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let config = test_config(data_dir.path());
    let unlimited = "1000000";
    let mut server = start_with(
        data_dir.path(),
        &[
            ("CALLSTREAM_RATE_LIMIT_READ_PER_SEC", unlimited),
            ("CALLSTREAM_RATE_LIMIT_WRITE_PER_SEC", unlimited),
            ("CALLSTREAM_RATE_LIMIT_INGEST_PER_SEC", unlimited),
        ],
    );
    let client = crate::helpers::client();
    wait_ready(&client, &server).await;
    let roles = [Role::User, Role::Operator, Role::Service];
    let token =
        callstream::app::auth::mint(&config.jwt, Clock::system().now(), "fuzzer", "t1", &roles, 3600).expect("mint");

    let document: Value = client
        .get(format!("{}/openapi.json", server.address))
        .send()
        .await
        .expect("document")
        .json()
        .await
        .expect("json");
    // Schemathesis does not fuzz the document it reads; every other operation must be tested.
    let mut expected: Vec<String> = document["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object().expect("item").keys().map(move |m| format!("{} {path}", m.to_uppercase()))
        })
        .filter(|operation| operation != "GET /openapi.json")
        .collect();
    expected.sort();
    let junit = data_dir.path().join("schemathesis.xml");

    let python = crate::python::interpreter();
    let schemathesis = python.with_file_name("schemathesis");
    let address = server.address.clone();
    let junit_path = junit.clone();
    let work_dir = data_dir.path().to_path_buf();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(&schemathesis)
            .arg("run")
            .arg(format!("{address}/openapi.json"))
            .args(["--header", &format!("Authorization: Bearer {token}")])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            ])
            .args(["--max-examples", MAX_EXAMPLES, "--seed", SEED, "--workers", "2"])
            .args(["--suppress-health-check", "all", "--request-timeout", "10"])
            .args(["--report", "junit", "--report-junit-path"])
            .arg(&junit_path)
            .env("NO_COLOR", "1")
            // Its failure cache goes to the working directory: keep it out of the checkout.
            .current_dir(&work_dir)
            .output()
            .expect("run schemathesis")
    })
    .await
    .expect("join");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let junit = std::fs::read_to_string(&junit).expect("junit report");
    let mut tested: Vec<String> = junit
        .split("<testcase name=\"")
        .skip(1)
        .filter_map(|case| case.split('"').next())
        // Operations only, not the stateful phase's own test case.
        .filter(|name| name.contains(" /"))
        .map(str::to_owned)
        .collect();
    tested.sort();
    tested.dedup();
    assert_eq!(tested, expected, "every documented operation was tested");

    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill -TERM").success());
    let mut exited = None;
    for _ in 0..300 {
        if let Some(status) = server.child.try_wait().expect("wait") {
            exited = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(exited.expect("the server exits after SIGTERM").success(), "exit 0 after SIGTERM");
    let verified = callstream::store::verify(&config.database, &config.master_key).expect("verify");
    assert!(verified.is_ok(), "the log written during fuzzing verifies: {verified:?}");
}
