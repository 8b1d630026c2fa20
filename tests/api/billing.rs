//! Metering, billing events, the outbox, dead letters, reconciliation, alerts, the scheduler and the
//! trace, through the real server (issue 11). Time moves with the test clock, never by sleeping;
//! the only waits are for the workers' polling interval.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use callstream::domain::principal::Role;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::helpers::{SECRET, TestApp, error_code, spawn_app_in_with, spawn_app_with};
use crate::sink;

const SINK_SECRET_BYTES: &[u8] = b"billing-sink-secret-0123456789ab";

pub fn sink_secret() -> String {
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(SINK_SECRET_BYTES))
}

const CLOCK: (&str, &str) = ("CALLSTREAM_TEST_CLOCK", "1");
const FAST_POLL: (&str, &str) = ("CALLSTREAM_BILLING_POLL_MS", "20");

/// A server delivering billing events to `url` (with the test clock and fast polling).
async fn spawn_with_billing_sink(url: &str, extra: &[(&'static str, &str)]) -> TestApp {
    let secret = sink_secret();
    let mut overrides = vec![
        CLOCK,
        FAST_POLL,
        ("CALLSTREAM_BILLING_SINK_URL", url),
        ("CALLSTREAM_BILLING_SINK_SECRET", secret.as_str()),
    ];
    overrides.extend_from_slice(extra);
    spawn_app_with(&overrides).await
}

/// Tokens that outlive the hours these tests move the clock by.
const TTL: i64 = 7 * 86_400;

fn operator(app: &TestApp) -> String {
    app.token_for("ops1", "t1", &[Role::Operator], TTL)
}

fn alice(app: &TestApp) -> String {
    app.token_for("alice", "t1", &[Role::User], TTL)
}

async fn transition(app: &TestApp, token: &str, session: &str, to: &str) {
    let response = app.post(&format!("/v1/call/sessions/{session}/state"), token, &json!({ "to": to })).await;
    assert_eq!(response.status(), StatusCode::OK, "→ {to}");
}

/// A call that is active for `seconds` (on the test clock) and then ends; answers its id.
async fn call_lasting(app: &TestApp, token: &str, seconds: i64) -> String {
    let session = app.create_session(token).await;
    transition(app, token, &session, "connecting").await;
    transition(app, token, &session, "active").await;
    app.advance_clock(seconds).await;
    transition(app, token, &session, "ended").await;
    session
}

async fn billing_events(app: &TestApp, token: &str, session: &str) -> Vec<Value> {
    let response = app.get(&format!("/v1/billing/sessions/{session}/events"), token).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    body["events"].as_array().expect("events").clone()
}

fn of_type<'a>(events: &'a [Value], event_type: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == event_type).collect()
}

/// Poll (bounded, at the workers' pace) until the session's billing events satisfy `done`.
async fn wait_for_events(app: &TestApp, token: &str, session: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    for _ in 0..500 {
        let events = billing_events(app, token, session).await;
        if done(&events) {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the billing events of {session} never got there: {:#?}", billing_events(app, token, session).await);
}

fn confirmed(events: &[Value]) -> bool {
    !of_type(events, "billing.charge.confirmed").is_empty()
}

/// What an outsider does with the served record: drop the signature fields, serialize as JCS (for
/// these ASCII keys and integers: sorted keys, no whitespace) and compute the HMAC.
fn verify_independently(record: &Value, secret: &[u8]) -> bool {
    let mut unsigned: BTreeMap<String, Value> = serde_json::from_value(record.clone()).expect("object");
    let signature = unsigned.remove("signature").and_then(|s| s.as_str().map(str::to_owned)).expect("signature");
    unsigned.remove("sigAlg");
    unsigned.remove("keyId");
    let canonical = serde_json::to_string(&unsigned).expect("json");
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("key");
    mac.update(canonical.as_bytes());
    hex::encode(mac.finalize().into_bytes()) == signature
}

#[tokio::test]
async fn an_ended_call_is_metered_once_signed_and_confirmed_by_the_internal_ledger() {
    let app = spawn_app_with(&[CLOCK, FAST_POLL]).await;
    let alice = alice(&app);
    let ops = operator(&app);
    let session = call_lasting(&app, &alice, 61).await;

    let events = wait_for_events(&app, &ops, &session, confirmed).await;
    let recorded = of_type(&events, "billing.usage.recorded");
    assert_eq!(recorded.len(), 1, "exactly one usage record per call: {events:#?}");
    let usage = &recorded[0]["payload"];
    assert_eq!(recorded[0]["actor"]["kind"], "system");
    assert_eq!((usage["meter"].as_str(), usage["unit"].as_str()), (Some("call.duration"), Some("second")));
    let seconds = usage["quantity"].as_i64().expect("quantity");
    assert!((61..=62).contains(&seconds), "active → ended, rounded up to the second: {seconds}");
    assert_eq!((usage["sigAlg"].as_str(), usage["keyId"].as_str()), (Some("hs256.v1"), Some("k1")));
    assert!(verify_independently(usage, SECRET.as_bytes()), "the signature verifies without callstream's code");
    let charge = &of_type(&events, "billing.charge.confirmed")[0]["payload"];
    assert_eq!(
        (charge["outboxId"].clone(), charge["sink"].as_str(), charge["quantity"].as_i64()),
        (usage["usageId"].clone(), Some("ledger"), Some(seconds))
    );

    let usage_id = usage["usageId"].as_str().expect("usageId");
    let view: Value = app.get(&format!("/v1/billing/usage/{usage_id}"), &ops).await.json().await.expect("json");
    assert_eq!(view["verification"], json!({"verdict": "valid", "keyId": "k1"}));
    assert_eq!(view["delivery"]["state"], "confirmed");
    assert_eq!(view["amount"]["micros"], json!(seconds * 400), "the default price table: $0.0004 a second");

    // The owner sees the billing events of their call; the usage record itself is for operators.
    assert_eq!(billing_events(&app, &alice, &session).await.len(), events.len());
    assert_eq!(error_code(app.get(&format!("/v1/billing/usage/{usage_id}"), &alice).await).await, "FORBIDDEN_ROLE");
    let stranger = app.token("ops9", "t9", &[Role::Operator]);
    let hidden = app.get(&format!("/v1/billing/usage/{usage_id}"), &stranger).await;
    assert_eq!(hidden.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(hidden).await, "USAGE_NOT_FOUND");

    // The trace links the record to its events and delivery.
    let trace: Value = app.get(&format!("/v1/billing/trace/{usage_id}"), &ops).await.json().await.expect("json");
    let traced: Vec<&str> =
        trace["events"].as_array().expect("events").iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(traced, ["billing.usage.recorded", "billing.charge.confirmed"]);
    assert_eq!(trace["usage"]["delivery"]["chargeId"], charge["chargeId"]);
}

#[tokio::test]
async fn a_call_that_never_became_active_and_each_executed_action_are_metered_as_they_should_be() {
    let app = spawn_app_with(&[FAST_POLL]).await;
    let alice = alice(&app);
    let ops = operator(&app);
    let never_active = app.create_session(&alice).await;
    transition(&app, &alice, &never_active, "failed").await;

    let session = app.create_session(&alice).await;
    let action =
        json!({"actionId": "bill-note-1", "sessionId": session, "type": "note.create", "params": {"text": "x"}});
    let executed = app.post("/v1/orchestration/actions/execute", &alice, &action).await;
    assert_eq!(executed.status(), StatusCode::OK);
    let events = wait_for_events(&app, &ops, &session, confirmed).await;
    let recorded = of_type(&events, "billing.usage.recorded");
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        (recorded[0]["payload"]["meter"].as_str(), recorded[0]["payload"]["quantity"].as_i64()),
        (Some("action.executed"), Some(1))
    );
    assert_eq!(recorded[0]["payload"]["source"], "bill-note-1");
    // A retry of the same action is answered from its record and meters nothing more.
    assert_eq!(app.post("/v1/orchestration/actions/execute", &alice, &action).await.status(), StatusCode::OK);
    assert!(billing_events(&app, &ops, &never_active).await.is_empty(), "no active time, nothing billed");
    let again = billing_events(&app, &ops, &session).await;
    assert_eq!(of_type(&again, "billing.usage.recorded").len(), 1);
}

#[tokio::test]
async fn a_sink_that_fails_twice_then_recovers_is_retried_on_the_persisted_schedule_with_one_webhook_id() {
    let sink = sink::start(vec![503, 503, 200]).await;
    let app = spawn_with_billing_sink(&sink.url, &[("CALLSTREAM_BILLING_RETRY_BASE_SECS", "30")]).await;
    let alice = alice(&app);
    let ops = operator(&app);
    let session = call_lasting(&app, &alice, 10).await;
    wait_until(|| sink.count() == 1).await;
    let usage = of_type(&billing_events(&app, &ops, &session).await, "billing.usage.recorded")[0]["payload"].clone();
    let usage_id = usage["usageId"].as_str().expect("usageId").to_owned();
    let trace: Value = app.get(&format!("/v1/billing/trace/{usage_id}"), &ops).await.json().await.expect("json");
    assert_eq!(trace["pendingAttempts"]["attempts"], 1);
    assert_eq!(trace["pendingAttempts"]["lastErrorCode"], "TARGET_5XX");
    // The retry waits for the clock: several polls later, still one request.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sink.count(), 1, "a retry is not due before its next_attempt_at");
    app.advance_clock(60).await;
    wait_until(|| sink.count() == 2).await;
    app.advance_clock(120).await;
    let events = wait_for_events(&app, &ops, &session, confirmed).await;
    assert_eq!(sink.count(), 3);
    let charge = &of_type(&events, "billing.charge.confirmed")[0]["payload"];
    assert_eq!((charge["sink"].as_str(), charge["attempts"].as_u64()), (Some("http"), Some(3)));

    let received = sink.received.lock().expect("lock").clone();
    for request in &received {
        assert_eq!(request.headers["webhook-id"], usage_id, "the same id on every attempt");
        let expected = {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(SINK_SECRET_BYTES).expect("key");
            mac.update(format!("{}.{}.{}", usage_id, request.headers["webhook-timestamp"], request.body).as_bytes());
            format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
        };
        assert_eq!(request.headers["webhook-signature"], expected, "Standard Webhooks signature");
        let body: Value = serde_json::from_str(&request.body).expect("json body");
        assert_eq!((body["type"].as_str(), &body["data"]), (Some("billing.usage.recorded"), &usage));
    }
}

async fn wait_until(done: impl Fn() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition never held");
}

#[tokio::test]
async fn a_sink_that_never_recovers_dead_letters_and_a_replay_delivers_once() {
    let sink = sink::start(vec![503, 503, 200]).await;
    let app = spawn_with_billing_sink(&sink.url, &[("CALLSTREAM_BILLING_MAX_ATTEMPTS", "2")]).await;
    let alice = alice(&app);
    let ops = operator(&app);
    let session = call_lasting(&app, &alice, 5).await;
    wait_until(|| sink.count() == 1).await;
    app.advance_clock(3600).await;
    let events =
        wait_for_events(&app, &ops, &session, |e| !of_type(e, "billing.publish.dead_lettered").is_empty()).await;
    let dead = &of_type(&events, "billing.publish.dead_lettered")[0]["payload"];
    assert_eq!(
        (dead["stage"].as_str(), dead["errorCode"].as_str(), dead["attempts"].as_u64()),
        (Some("exhausted"), Some("TARGET_5XX"), Some(2))
    );

    let listed: Value =
        app.get(&format!("/v1/billing/sessions/{session}/dead-letters"), &ops).await.json().await.expect("json");
    let letter = &listed["deadLetters"][0];
    assert_eq!(
        (letter["deadLetterId"].clone(), letter["outboxState"].as_str()),
        (dead["deadLetterId"].clone(), Some("dead_lettered"))
    );
    assert_eq!(
        error_code(app.get(&format!("/v1/billing/sessions/{session}/dead-letters"), &alice).await).await,
        "FORBIDDEN_ROLE"
    );

    let id = dead["deadLetterId"].as_str().expect("id");
    let replay = |token: String| {
        let path = format!("/v1/billing/dead-letters/{id}/replay");
        let app = &app;
        async move { app.post(&path, &token, &json!({})).await }
    };
    assert_eq!(error_code(replay(alice.clone()).await).await, "FORBIDDEN_ROLE");
    let first: Value = replay(ops.clone()).await.json().await.expect("json");
    assert_eq!(first["replayed"], true);
    let second: Value = replay(ops.clone()).await.json().await.expect("json");
    assert_eq!(second["replayed"], false, "replaying twice replays once");
    let events = wait_for_events(&app, &ops, &session, confirmed).await;
    assert_eq!(sink.count(), 3);
    assert_eq!(of_type(&events, "billing.publish.replayed").len(), 1);
    assert_eq!(of_type(&events, "billing.charge.confirmed").len(), 1);
    let missing = app.post("/v1/billing/dead-letters/dlq_nope/replay", &ops, &json!({})).await;
    assert_eq!(error_code(missing).await, "DEAD_LETTER_NOT_FOUND");
    // Dead letters and replays are projections of the log like every other billing table.
    assert_eq!(callstream::store::diff_against_rebuild(app.database(), &app.config.master_key).expect("diff"), vec![]);
}

#[tokio::test]
async fn a_sink_that_refuses_an_item_dead_letters_it_at_once() {
    let sink = sink::start(vec![422]).await;
    let app = spawn_with_billing_sink(&sink.url, &[]).await;
    let alice = alice(&app);
    let ops = operator(&app);
    let session = app.create_session(&alice).await;
    let action = json!({"actionId": "refused-1", "sessionId": session, "type": "note.create", "params": {"text": "x"}});
    assert_eq!(app.post("/v1/orchestration/actions/execute", &alice, &action).await.status(), StatusCode::OK);
    let events =
        wait_for_events(&app, &ops, &session, |e| !of_type(e, "billing.publish.dead_lettered").is_empty()).await;
    let dead = &of_type(&events, "billing.publish.dead_lettered")[0]["payload"];
    assert_eq!(
        (dead["stage"].as_str(), dead["errorCode"].as_str(), dead["attempts"].as_u64()),
        (Some("rejected"), Some("TARGET_REJECTED"), Some(1))
    );
    assert_eq!(sink.count(), 1);
}

async fn account_events(app: &TestApp, token: &str) -> Vec<Value> {
    let response = app.get("/v1/billing/accounts/t1/events", token).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    body["events"].as_array().expect("events").clone()
}

async fn trigger(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    app.post("/v1/billing/reconciliation/hourly-trigger", token, &body).await
}

/// The start of the UTC hour of an RFC 3339 time.
fn hour_of(at: &str) -> String {
    format!("{}:00:00.000Z", &at[..13])
}

#[tokio::test]
async fn reconciliation_is_idempotent_per_window_and_a_rerun_picks_up_late_adjustments() {
    let app = spawn_app_with(&[CLOCK, FAST_POLL]).await;
    let alice = alice(&app);
    let ops = operator(&app);
    let session = call_lasting(&app, &alice, 30).await;
    let events = wait_for_events(&app, &ops, &session, confirmed).await;
    let usage = &of_type(&events, "billing.usage.recorded")[0]["payload"];
    let occurred_at = usage["occurredAt"].as_str().expect("occurredAt").to_owned();
    let window = hour_of(&occurred_at);

    let early = trigger(&app, &ops, json!({ "windowStart": window })).await;
    assert_eq!(early.status(), StatusCode::CONFLICT);
    assert!(early.headers().get("retry-after").is_some());
    assert_eq!(error_code(early).await, "WINDOW_NOT_CLOSED");
    let misaligned = trigger(&app, &ops, json!({ "windowStart": occurred_at })).await;
    assert_eq!(error_code(misaligned).await, "VALIDATION_FAILED");
    assert_eq!(error_code(trigger(&app, &alice, json!({})).await).await, "FORBIDDEN_ROLE");
    assert_eq!(error_code(trigger(&app, &ops, json!({"tenantId": "t9"})).await).await, "TENANT_NOT_FOUND");

    app.advance_clock(3600 + 900).await;
    let first = trigger(&app, &ops, json!({ "windowStart": window })).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.expect("json");
    assert_eq!((first["revision"].as_u64(), first["mismatches"].as_u64()), (Some(1), Some(0)));
    let line = &first["lines"][0];
    assert_eq!(
        (line["meter"].as_str(), &line["metered"], &line["charged"]),
        (Some("call.duration"), &usage["quantity"], &usage["quantity"])
    );
    let repeat = trigger(&app, &ops, json!({ "windowStart": window })).await;
    assert_eq!(repeat.status(), StatusCode::OK);
    let repeat: Value = repeat.json().await.expect("json");
    assert_eq!(repeat["runId"], first["runId"], "a repeat answers the same run");

    // Late data: a credit in that window, created after the run.
    let credit = json!({"tenantId": "t1", "meter": "call.duration", "quantity": -10, "occurredAt": occurred_at, "reason": "dropped audio"});
    let created = app.post("/v1/billing/adjustments", &ops, &credit).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let adjustment: Value = created.json().await.expect("json");
    assert_eq!(adjustment["windowStart"].as_str(), Some(window.as_str()));
    // Wait for the ledger to confirm the adjustment, then rerun.
    for _ in 0..500 {
        if account_events(&app, &ops).await.iter().any(|e| e["type"] == "billing.charge.confirmed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rerun: Value =
        trigger(&app, &ops, json!({ "windowStart": window, "rerun": true })).await.json().await.expect("json");
    assert_eq!((rerun["revision"].as_u64(), rerun["mismatches"].as_u64()), (Some(2), Some(0)));
    assert_eq!(rerun["lines"][0]["adjusted"], -10);
    assert_eq!(rerun["lines"][0]["charged"].as_i64(), usage["quantity"].as_i64().map(|q| q - 10));

    let runs: Value = app
        .get(&format!("/v1/billing/reconciliation/runs?windowStart={window}"), &ops)
        .await
        .json()
        .await
        .expect("json");
    let revisions: Vec<u64> =
        runs["runs"].as_array().expect("runs").iter().filter_map(|r| r["revision"].as_u64()).collect();
    assert_eq!(revisions, [2, 1], "newest first");
    let one: Value = app
        .get(&format!("/v1/billing/reconciliation/runs/{}", first["runId"].as_str().expect("id")), &ops)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(one["runId"], first["runId"]);
    let stranger = app.token("ops9", "t9", &[Role::Operator]);
    let hidden =
        app.get(&format!("/v1/billing/reconciliation/runs/{}", first["runId"].as_str().expect("id")), &stranger).await;
    assert_eq!(error_code(hidden).await, "RUN_NOT_FOUND");
}

#[tokio::test]
async fn unconfirmed_usage_is_a_mismatch_whose_alert_is_delivered_signed() {
    let billing_sink = sink::start(vec![503]).await;
    let alert_sink = sink::start(vec![200]).await;
    let secret = sink_secret();
    let app = spawn_with_billing_sink(
        &billing_sink.url,
        &[("CALLSTREAM_ALERT_SINK_URL", &alert_sink.url), ("CALLSTREAM_ALERT_SINK_SECRET", &secret)],
    )
    .await;
    let alice = alice(&app);
    let ops = operator(&app);
    let session = call_lasting(&app, &alice, 20).await;
    wait_until(|| billing_sink.count() >= 1).await;
    let usage = of_type(&billing_events(&app, &ops, &session).await, "billing.usage.recorded")[0]["payload"].clone();
    app.advance_clock(3600 + 900).await;
    let run: Value = trigger(&app, &ops, json!({})).await.json().await.expect("json");
    assert_eq!(
        run["windowStart"].as_str(),
        Some(hour_of(usage["occurredAt"].as_str().expect("at")).as_str()),
        "the newest closed window by default"
    );
    assert_eq!(run["mismatches"], 1);
    assert_eq!(run["mismatchDetails"][0]["alertState"], "pending");
    let alert = &run["lines"][0];
    assert_eq!(
        (alert["metered"].clone(), alert["charged"].as_i64(), alert["delta"].as_i64()),
        (usage["quantity"].clone(), Some(0), usage["quantity"].as_i64().map(|q| -q))
    );

    let dry: Value = app
        .post("/v1/billing/reconciliation/alerts/deliver", &ops, &json!({"dryRun": true}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!((dry["due"].as_array().map(Vec::len), dry["delivered"].as_u64()), (Some(1), Some(0)));
    assert_eq!(alert_sink.count(), 0, "a dry run sends nothing");
    let sent: Value =
        app.post("/v1/billing/reconciliation/alerts/deliver", &ops, &json!({})).await.json().await.expect("json");
    assert_eq!(sent["delivered"], 1);
    assert_eq!(alert_sink.count(), 1);
    let request = alert_sink.received.lock().expect("lock")[0].clone();
    let body: Value = serde_json::from_str(&request.body).expect("json");
    assert_eq!(
        (body["type"].as_str(), body["data"]["meter"].as_str()),
        (Some("billing.reconciliation.mismatch_detected"), Some("call.duration"))
    );
    let view: Value = app
        .get(&format!("/v1/billing/reconciliation/runs/{}", run["runId"].as_str().expect("id")), &ops)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(view["mismatchDetails"][0]["alertState"], "delivered");
    let again: Value =
        app.post("/v1/billing/reconciliation/alerts/deliver", &ops, &json!({})).await.json().await.expect("json");
    assert_eq!(again["delivered"], 0, "a delivered alert is not sent again");

    let trace: Value = app
        .get(&format!("/v1/billing/trace/{}", usage["usageId"].as_str().expect("id")), &ops)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(trace["runs"][0]["mismatchDetails"][0]["alertState"], "delivered", "usage → run → mismatch → alert");
}

#[tokio::test]
async fn the_scheduler_reconciles_each_closed_window_once_and_keeps_its_place_across_a_restart() {
    let overrides = [CLOCK, FAST_POLL];
    let app = spawn_app_with(&overrides).await;
    let alice = alice(&app);
    let ops = operator(&app);
    let off: Value = app.get("/v1/billing/reconciliation/scheduler", &ops).await.json().await.expect("json");
    assert_eq!(off["enabled"], false, "off by default");
    assert_eq!(
        error_code(
            app.client
                .put(format!("{}/v1/billing/reconciliation/scheduler", app.address))
                .bearer_auth(&alice)
                .json(&json!({"enabled": true}))
                .send()
                .await
                .expect("put")
        )
        .await,
        "FORBIDDEN_ROLE"
    );
    let session = call_lasting(&app, &alice, 15).await;
    let events = wait_for_events(&app, &ops, &session, confirmed).await;
    let window = hour_of(of_type(&events, "billing.usage.recorded")[0]["payload"]["occurredAt"].as_str().expect("at"));
    let on = app
        .client
        .put(format!("{}/v1/billing/reconciliation/scheduler", app.address))
        .bearer_auth(&ops)
        .json(&json!({"enabled": true}))
        .send()
        .await
        .expect("put");
    assert_eq!(on.status(), StatusCode::OK);
    app.advance_clock(2 * 3600).await;
    let mut runs = Vec::new();
    for _ in 0..500 {
        runs = runs_of(&app, &ops, &window).await;
        if !runs.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(runs.len(), 1, "the scheduler ran the closed window");
    assert_eq!(runs[0]["trigger"], "scheduler");
    let state: Value = app.get("/v1/billing/reconciliation/scheduler", &ops).await.json().await.expect("json");
    assert!(state["lastWindow"].as_str().is_some_and(|w| w >= window.as_str()), "{state}");
    let now_before = app.clock.now();

    let data_dir = app.stop().await;
    let app = spawn_app_in_with(data_dir, &overrides).await;
    assert!(app.clock.now() >= now_before, "the test clock's offset survives the restart");
    let after: Value = app.get("/v1/billing/reconciliation/scheduler", &ops).await.json().await.expect("json");
    assert_eq!(after["enabled"], true, "{after}");
    // The scheduler may have reached a later window since `state` was read, never an earlier one.
    assert!(after["lastWindow"].as_str() >= state["lastWindow"].as_str(), "{after} / {state}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(runs_of(&app, &ops, &window).await.len(), 1, "the window is not run again after the restart");
}

#[tokio::test]
async fn adjustments_are_validated_idempotent_and_operator_only() {
    let app = spawn_app_with(&[FAST_POLL]).await;
    let ops = operator(&app);
    let now = app.clock.now().to_rfc3339();
    let valid =
        json!({"tenantId": "t1", "meter": "action.executed", "quantity": 3, "occurredAt": now, "reason": "goodwill"});
    let post = |body: Value, key: Option<&str>| {
        let mut request =
            app.client.post(format!("{}/v1/billing/adjustments", app.address)).bearer_auth(&ops).json(&body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        request.send()
    };
    for (field, value) in [
        ("quantity", json!(0)),
        ("quantity", json!(1.5)),
        ("meter", json!("minutes")),
        ("occurredAt", json!("yesterday")),
        ("occurredAt", json!("2999-01-01T00:00:00Z")),
        ("reason", json!("")),
    ] {
        let mut body = valid.clone();
        body[field] = value.clone();
        let code = error_code(post(body, None).await.expect("post")).await;
        assert!(code == "VALIDATION_FAILED" || code == "INVALID_JSON", "{field} = {value}: {code}");
    }
    let mut other_tenant = valid.clone();
    other_tenant["tenantId"] = json!("t9");
    assert_eq!(error_code(post(other_tenant, None).await.expect("post")).await, "TENANT_NOT_FOUND");
    let user = app.user("alice");
    let by_user = app.post("/v1/billing/adjustments", &user, &valid).await;
    assert_eq!(error_code(by_user).await, "FORBIDDEN_ROLE");
    assert!(account_events(&app, &ops).await.is_empty(), "nothing appended");

    let first = post(valid.clone(), Some("adj-key-1")).await.expect("post");
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.expect("json");
    let again: Value = post(valid.clone(), Some("adj-key-1")).await.expect("post").json().await.expect("json");
    assert_eq!(again, first, "the same key and body answer the same adjustment");
    let mut changed = valid.clone();
    changed["quantity"] = json!(4);
    assert_eq!(error_code(post(changed, Some("adj-key-1")).await.expect("post")).await, "IDEMPOTENCY_KEY_REUSED");
    let created = account_events(&app, &ops).await.iter().filter(|e| e["type"] == "billing.adjustment.created").count();
    assert_eq!(created, 1);
}

#[tokio::test]
async fn rotated_keys_sign_new_records_and_still_verify_old_ones() {
    let old_key = format!("k1:{SECRET}");
    let app = spawn_app_with(&[FAST_POLL, ("CALLSTREAM_METER_SIGNING_KEYS", &old_key)]).await;
    let alice = alice(&app);
    let ops = operator(&app);
    let session = app.create_session(&alice).await;
    execute(&app, &alice, &session, "rot-1").await;
    let events = wait_for_events(&app, &ops, &session, confirmed).await;
    let old_id = of_type(&events, "billing.usage.recorded")[0]["payload"]["usageId"].as_str().expect("id").to_owned();

    let new_secret = "rotated-secret-0123456789abcdef0123456789";
    let ring = format!("k2:{new_secret},k1:{SECRET}");
    let app = spawn_app_in_with(app.stop().await, &[FAST_POLL, ("CALLSTREAM_METER_SIGNING_KEYS", &ring)]).await;
    execute(&app, &alice, &session, "rot-2").await;
    let events = wait_for_events(&app, &ops, &session, |e| of_type(e, "billing.charge.confirmed").len() == 2).await;
    let new = of_type(&events, "billing.usage.recorded")[1]["payload"].clone();
    assert_eq!(new["keyId"], "k2", "the first key signs new records");
    assert!(verify_independently(&new, new_secret.as_bytes()));
    assert_eq!(verdict(&app, &ops, &old_id).await, json!({"verdict": "valid", "keyId": "k1"}));

    let retired = format!("k2:{new_secret}");
    let app = spawn_app_in_with(app.stop().await, &[FAST_POLL, ("CALLSTREAM_METER_SIGNING_KEYS", &retired)]).await;
    assert_eq!(
        verdict(&app, &ops, &old_id).await,
        json!({"verdict": "unknown_key", "keyId": "k1"}),
        "retired, not forged"
    );
}

#[tokio::test]
async fn a_randomized_workload_summarizes_to_what_the_log_says() {
    use rand::{Rng, SeedableRng};
    let seed: u64 = rand::rng().random();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let app = spawn_app_with(&[CLOCK, FAST_POLL]).await;
    let alice = alice(&app);
    let ops = operator(&app);
    let start = app.clock.now();
    let mut sessions = Vec::new();
    for round in 0..6 {
        let session = app.create_session(&alice).await;
        transition(&app, &alice, &session, "connecting").await;
        if rng.random_bool(0.8) {
            transition(&app, &alice, &session, "active").await;
            for n in 0..rng.random_range(0..3) {
                let body = json!({"actionId": format!("rnd-{round}-{n}"), "sessionId": session, "type": "note.create", "params": {"text": "x"}});
                assert_eq!(app.post("/v1/orchestration/actions/execute", &alice, &body).await.status(), StatusCode::OK);
            }
            app.advance_clock(rng.random_range(1..2400)).await;
            transition(&app, &alice, &session, if rng.random_bool(0.8) { "ended" } else { "failed" }).await;
        } else {
            transition(&app, &alice, &session, "failed").await;
        }
        if rng.random_bool(0.5) {
            let adjustment = json!({"tenantId": "t1", "meter": "call.duration", "quantity": rng.random_range(-50..50i64).max(1), "occurredAt": app.clock.now().to_rfc3339(), "reason": "random"});
            assert_eq!(app.post("/v1/billing/adjustments", &ops, &adjustment).await.status(), StatusCode::CREATED);
        }
        sessions.push(session);
    }
    // Recompute from the log: every usage record on the session streams, every adjustment on the account.
    let mut expected: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for session in &sessions {
        for event in app.replay(&ops, session, 0, 1000).await["events"].as_array().expect("events") {
            if event["type"] == "billing.usage.recorded" {
                let meter = event["payload"]["meter"].as_str().expect("meter").to_owned();
                expected.entry(meter).or_default().0 += event["payload"]["quantity"].as_i64().expect("quantity");
            }
        }
    }
    for event in &account_events(&app, &ops).await {
        if event["type"] == "billing.adjustment.created" {
            let meter = event["payload"]["meter"].as_str().expect("meter").to_owned();
            expected.entry(meter).or_default().1 += event["payload"]["quantity"].as_i64().expect("quantity");
        }
    }
    let range =
        format!("from={}&to={}", start.plus_seconds(-1).to_rfc3339(), app.clock.now().plus_seconds(1).to_rfc3339());
    let summary: Value =
        app.get(&format!("/v1/billing/accounts/t1/usage-summary?{range}"), &ops).await.json().await.expect("json");
    let by_meter: BTreeMap<String, (i64, i64)> = summary["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| {
            (
                l["meter"].as_str().expect("meter").to_owned(),
                (l["quantity"].as_i64().expect("q"), l["adjusted"].as_i64().expect("a")),
            )
        })
        .collect();
    assert_eq!(by_meter, expected, "seed {seed}");
    let hourly: Value = app
        .get(&format!("/v1/billing/accounts/t1/usage-summary?{range}&groupBy=hour"), &ops)
        .await
        .json()
        .await
        .expect("json");
    let mut folded: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for line in hourly["lines"].as_array().expect("lines") {
        assert!(line["windowStart"].as_str().is_some_and(|w| w.ends_with(":00:00.000Z")));
        let entry = folded.entry(line["meter"].as_str().expect("meter").to_owned()).or_default();
        entry.0 += line["quantity"].as_i64().expect("q");
        entry.1 += line["adjusted"].as_i64().expect("a");
    }
    assert_eq!(folded, expected, "hours add up to the meters (seed {seed})");
    assert_eq!(
        summary["total"]["micros"].as_i64(),
        Some(
            summary["lines"]
                .as_array()
                .expect("lines")
                .iter()
                .map(|l| l["amount"]["micros"].as_i64().expect("m"))
                .sum()
        )
    );
    let bad = app.get("/v1/billing/accounts/t1/usage-summary?groupBy=day", &ops).await;
    assert_eq!(error_code(bad).await, "QUERY_INVALID");
    let stranger = app.token("ops9", "t9", &[Role::Operator]);
    assert_eq!(error_code(app.get("/v1/billing/accounts/t1/usage-summary", &stranger).await).await, "TENANT_NOT_FOUND");
}

async fn runs_of(app: &TestApp, token: &str, window: &str) -> Vec<Value> {
    let body: Value = app
        .get(&format!("/v1/billing/reconciliation/runs?windowStart={window}"), token)
        .await
        .json()
        .await
        .expect("json");
    body["runs"].as_array().expect("runs").clone()
}

async fn execute(app: &TestApp, token: &str, session: &str, action_id: &str) {
    let body = json!({"actionId": action_id, "sessionId": session, "type": "note.create", "params": {"text": "x"}});
    assert_eq!(app.post("/v1/orchestration/actions/execute", token, &body).await.status(), StatusCode::OK);
}

async fn verdict(app: &TestApp, token: &str, usage_id: &str) -> Value {
    let body: Value = app.get(&format!("/v1/billing/usage/{usage_id}"), token).await.json().await.expect("json");
    body["verification"].clone()
}
