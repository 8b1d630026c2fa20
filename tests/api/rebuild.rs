//! Rebuild equals live: a randomized workload through the real API, then the projections are
//! compared with a rebuild from the log (and the comparison is shown to catch a difference).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::{Value, json};

use callstream::store::Database;

use crate::helpers::{RawDb, spawn_app_with, transcript};

const STATES: [&str; 5] = ["created", "connecting", "active", "ended", "failed"];

fn dump(database: &Database, table: &str) -> Vec<Vec<Option<String>>> {
    RawDb::open(database).rows(&format!("SELECT * FROM {table} ORDER BY 1, 2"))
}

#[tokio::test]
async fn rebuild_equals_live_after_a_randomized_workload() {
    let seed: u64 = std::env::var("REBUILD_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("REBUILD_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    // The test clock lets the workload close reconciliation windows; tokens are re-minted after
    // each move.
    let app = spawn_app_with(&[("CALLSTREAM_TEST_CLOCK", "1"), ("CALLSTREAM_BILLING_POLL_MS", "20")]).await;
    let mint = |app: &crate::helpers::TestApp| {
        let users: Vec<String> = ["u1", "u2", "u3"].iter().map(|u| app.user(u)).collect();
        let agent = app.token("media-bridge", "t1", &[callstream::domain::principal::Role::Service]);
        let operator = app.token("ops", "t1", &[callstream::domain::principal::Role::Operator]);
        (users, agent, operator)
    };
    let (mut users, mut agent, mut operator) = mint(&app);
    let mut sessions: Vec<(String, usize)> = Vec::new();
    let mut sent: Vec<(usize, String, Value)> = Vec::new();
    let mut accepted = 0usize;
    let mut actions: Vec<(String, usize, Value)> = Vec::new();
    for op in 0..300 {
        let roll = rng.random_range(0..115);
        if sessions.is_empty() || roll < 10 {
            let owner = rng.random_range(0..users.len());
            sessions.push((app.create_session(&users[owner]).await, owner));
            continue;
        }
        let (session, owner) = sessions[rng.random_range(0..sessions.len())].clone();
        let token = &users[owner];
        let events: Vec<Value> = match roll {
            10..=59 => {
                (0..rng.random_range(1..20)).map(|i| transcript(&session, &format!("op{op}-{i}"), "words")).collect()
            }
            60..=69 if !sent.is_empty() => {
                let (_, _, earlier) = sent[rng.random_range(0..sent.len())].clone();
                vec![earlier]
            }
            70..=84 => {
                // The lifecycle moves through its commands only (clients cannot write call.session.*).
                let to = STATES[rng.random_range(0..5)];
                let response = app.post(&format!("/v1/call/sessions/{session}/state"), token, &json!({"to": to})).await;
                assert!(response.status().is_success() || response.status() == StatusCode::CONFLICT, "seed {seed}");
                continue;
            }
            85..=89 => {
                let response = app
                    .post(
                        &format!("/v1/call/sessions/{session}/state"),
                        token,
                        &json!({"to": "failed", "code": "RANDOM_FAILURE"}),
                    )
                    .await;
                assert!(response.status().is_success() || response.status() == StatusCode::CONFLICT, "seed {seed}");
                continue;
            }
            90..=92 => {
                let (participant, sid) =
                    (format!("p{}", rng.random_range(0..3)), format!("PA_{}", rng.random_range(0..3)));
                let event_type = if rng.random_bool(0.5) { "call.participant.joined" } else { "call.participant.left" };
                let event = json!({"eventId": format!("op{op}-pj"), "sessionId": session, "ts": "2026-11-23T10:00:00Z",
                    "type": event_type, "payload": {"participantId": participant, "participantSid": sid}, "schemaVersion": 1});
                let response = app.ingest(&agent, &session, vec![event]).await;
                assert_eq!(response.status(), StatusCode::OK, "seed {seed}");
                continue;
            }
            93..=94 => {
                let body = json!({"provider": "livekit", "providerRoomId": format!("room-{op}")});
                let response = app.post(&format!("/v1/call/sessions/{session}/provider"), token, &body).await;
                assert!(response.status().is_success() || response.status() == StatusCode::CONFLICT, "seed {seed}");
                continue;
            }
            100..=114 => {
                // Actions: new ones (executed, unsupported, pending), retries, the owner's
                // decisions and confirmed runs. Terminal sessions refuse new ones (409).
                let answer = match rng.random_range(0..5) {
                    0 | 1 if !actions.is_empty() => {
                        let (id, owner, request) = actions[rng.random_range(0..actions.len())].clone();
                        let owner_token = &users[owner];
                        let decision = if rng.random_bool(0.7) { "approve" } else { "reject" };
                        let decided = app
                            .post("/v1/actions/decision", owner_token, &json!({"actionId": id, "decision": decision}))
                            .await;
                        let decided: Value = decided.json().await.expect("json");
                        match decided["confirmationToken"].as_str() {
                            Some(token) if rng.random_bool(0.8) => {
                                let mut confirmed = request.clone();
                                confirmed["confirmationToken"] = json!(token);
                                app.post("/v1/orchestration/actions/execute", owner_token, &confirmed).await
                            }
                            _ => app.post("/v1/orchestration/actions/execute", owner_token, &request).await,
                        }
                    }
                    _ => {
                        let id = format!("act-{op}");
                        let (action_type, params) = match rng.random_range(0..3) {
                            0 => ("note.create", json!({"text": format!("note {op}")})),
                            1 => ("message.send", json!({"to": "+15550100", "text": "hi"})),
                            _ => ("fax.send", json!({})),
                        };
                        let request =
                            json!({"actionId": id, "sessionId": session, "type": action_type, "params": params});
                        actions.push((id, owner, request.clone()));
                        app.post("/v1/orchestration/actions/execute", token, &request).await
                    }
                };
                let status = answer.status();
                let refused = [StatusCode::CONFLICT, StatusCode::GONE].contains(&status);
                assert!(status.is_success() || refused, "seed {seed}: {}", answer.text().await.unwrap_or_default());
                continue;
            }
            95..=99 => {
                // Billing: adjustments, reconciliation runs and reruns, and time passing so that
                // windows close.
                match rng.random_range(0..3) {
                    0 => {
                        let meter = if rng.random_bool(0.5) { "call.duration" } else { "action.executed" };
                        let quantity = rng.random_range(1..100) * if rng.random_bool(0.3) { -1 } else { 1 };
                        let body = json!({"tenantId": "t1", "meter": meter, "quantity": quantity,
                            "occurredAt": app.clock.now().to_rfc3339(), "reason": format!("op {op}")});
                        let response = app.post("/v1/billing/adjustments", &operator, &body).await;
                        assert_eq!(response.status(), StatusCode::CREATED, "seed {seed}");
                    }
                    1 => {
                        let body = json!({"rerun": rng.random_bool(0.5)});
                        let response = app.post("/v1/billing/reconciliation/hourly-trigger", &operator, &body).await;
                        assert!(
                            response.status().is_success(),
                            "seed {seed}: {}",
                            response.text().await.unwrap_or_default()
                        );
                    }
                    _ => {
                        app.advance_clock(rng.random_range(600..3600)).await;
                        (users, agent, operator) = mint(&app);
                    }
                }
                continue;
            }
            _ => {
                let mut bad = transcript(&session, &format!("op{op}-bad"), "x");
                bad["payload"]["revision"] = json!("not a number");
                vec![bad]
            }
        };
        let response = app.ingest(token, &session, events.clone()).await;
        if response.status() == StatusCode::OK {
            accepted += 1;
            sent.extend(events.into_iter().map(|e| (owner, session.clone(), e)));
        } else {
            assert!(response.status().is_client_error(), "seed {seed}: {}", response.status());
        }
    }
    assert!(accepted > 50, "seed {seed}: the workload should mostly succeed");
    // Some seeds never roll a trigger; one run at the end keeps reconciliation in every comparison.
    let response = app.post("/v1/billing/reconciliation/hourly-trigger", &operator, &json!({})).await;
    assert!(response.status().is_success(), "seed {seed}: {}", response.text().await.unwrap_or_default());

    let report = callstream::store::verify(app.database(), &app.config.master_key).expect("verify");
    assert!(report.is_ok(), "seed {seed}: {report:?}");

    // With the server stopped (nothing appends any more), the rebuild command yields exactly the
    // live rows.
    let (database, master_key) = (app.database(), app.config.master_key.clone());
    let _data_dir = app.stop().await;
    let live = dump(&database, "sessions");
    let live_actions = dump(&database, "actions");
    let billing_tables =
        ["usage_records", "billing_adjustments", "billing_outbox", "reconciliation_runs", "reconciliation_mismatches"];
    let live_billing: Vec<_> = billing_tables.iter().map(|table| dump(&database, table)).collect();
    callstream::store::rebuild(&database, &master_key).expect("rebuild");
    assert_eq!(dump(&database, "sessions"), live, "seed {seed}");
    assert_eq!(dump(&database, "actions"), live_actions, "seed {seed}");
    for (table, rows) in billing_tables.iter().zip(&live_billing) {
        assert_eq!(&dump(&database, table), rows, "seed {seed}: {table}");
    }
    assert!(!live_billing[0].is_empty(), "seed {seed}: the workload metered usage");
    assert!(!live_billing[3].is_empty(), "seed {seed}: the workload reconciled windows");
    assert_eq!(live.len(), sessions.len());
    assert!(!live_actions.is_empty(), "seed {seed}: the workload requested actions");

    // The comparison can fail: damage one projection row and it is named.
    RawDb::open(&database)
        .execute(
            "UPDATE sessions SET version = version + 1000 WHERE session_id = (SELECT MIN(session_id) FROM sessions); \
             UPDATE actions SET status = status || '-damaged' WHERE action_id = (SELECT MIN(action_id) FROM actions)",
        )
        .expect("sabotage");
    let differences = callstream::store::diff_against_rebuild(&database, &master_key).expect("diff");
    assert_eq!(
        differences,
        vec![("sessions".to_owned(), 2), ("actions".to_owned(), 2)],
        "one row of each differs, counted from both sides"
    );
}
