//! Tenant erasure by crypto-shredding: personal fields are sealed at rest, an erasure destroys the
//! tenant's key and purges its projections, and the log is neither updated nor deleted.

use callstream::domain::principal::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{RawDb, TestApp, error_code, spawn_app, spawn_app_in};

const SECRET_WORDS: [&str; 5] = ["Ada Lovelace", "555-0199", "analytical engine", "ada@example.org", "Babbage"];

/// The log's first `through` rows, hashed: proves none of them was updated or deleted. (The
/// outbox appends billing confirmations on its own schedule, after them.)
fn log_digest(app: &TestApp, through: u64) -> (u64, String) {
    let rows = RawDb::open(&app.database()).rows(&format!(
        "SELECT position, tenant_id, stream_id, seq, event_id, type, payload, hash FROM events \
         WHERE position <= {through} ORDER BY position"
    ));
    let mut hasher = Sha256::new();
    for row in &rows {
        hasher.update(format!("{row:?}"));
    }
    (rows.len() as u64, hex::encode(hasher.finalize()))
}

fn raw_log_text(app: &TestApp) -> String {
    let rows = RawDb::open(&app.database()).rows("SELECT payload FROM events");
    rows.into_iter().flatten().flatten().collect::<Vec<_>>().join("\n")
}

/// A call of tenant `tenant` with personal data in every place the data map names.
async fn personal_call(app: &TestApp, tenant: &str) -> String {
    let user = app.token("ada", tenant, &[Role::User]);
    let agent = app.token("agent", tenant, &[Role::Service]);
    let created = app
        .post(
            "/v1/call/sessions",
            &user,
            &json!({"title": "Call with Ada Lovelace", "metadata": {"email": "ada@example.org"}}),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let session = created.json::<Value>().await.expect("json")["sessionId"].as_str().expect("id").to_owned();
    let events = vec![
        json!({"eventId": "p1", "sessionId": session, "ts": "2026-11-23T10:00:00.000Z",
               "type": "call.participant.joined", "schemaVersion": 1,
               "payload": {"participantId": "ada-identity", "name": "Ada Lovelace"}}),
        json!({"eventId": "t1", "sessionId": session, "ts": "2026-11-23T10:00:01.000Z",
               "type": "transcript.segment.final", "schemaVersion": 1,
               "payload": {"segmentId": "s1", "revision": 1, "text": "call me on 555-0199", "speaker": "Ada Lovelace",
                           "startMs": 0, "endMs": 900}}),
        json!({"eventId": "t2", "sessionId": session, "ts": "2026-11-23T10:00:02.000Z",
               "type": "transcript.segment.final", "schemaVersion": 1,
               "payload": {"segmentId": "s2", "revision": 1, "text": "about the analytical engine", "speaker": "Babbage",
                           "startMs": 1000, "endMs": 2000}}),
    ];
    assert_eq!(app.ingest(&agent, &session, events).await.status(), StatusCode::OK);
    let action = json!({"actionId": format!("note-{tenant}"), "sessionId": session, "type": "note.create",
                        "params": {"text": "write to ada@example.org"}});
    let ack = app.post("/v1/orchestration/actions/execute", &user, &action).await;
    assert_eq!(ack.status(), StatusCode::OK);
    session
}

async fn transcript(app: &TestApp, token: &str, session: &str) -> Value {
    let response = app.get(&format!("/v1/realtime/sessions/{session}/transcript"), token).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("json")
}

#[tokio::test]
async fn personal_fields_are_sealed_at_rest_and_served_in_the_clear() {
    let app = spawn_app().await;
    let session = personal_call(&app, "t-sealed").await;
    let raw = raw_log_text(&app);
    for word in SECRET_WORDS {
        assert!(!raw.contains(word), "`{word}` is stored in the clear");
    }
    assert!(raw.contains("\"$sealed\":\"x1.1."), "sealed under the tenant's first key");

    let user = app.token("ada", "t-sealed", &[Role::User]);
    let view = transcript(&app, &user, &session).await;
    assert_eq!(view["text"], "call me on 555-0199 about the analytical engine");
    assert_eq!(view["segments"][0]["speaker"], "Ada Lovelace");
    let replay = app.replay(&user, &session, 0, 100).await;
    let joined = replay["events"].as_array().expect("events").iter().find(|e| e["type"] == "call.participant.joined");
    assert_eq!(joined.expect("joined")["payload"]["name"], "Ada Lovelace");
    let got: Value = app.get(&format!("/v1/call/sessions/{session}"), &user).await.json().await.expect("json");
    assert_eq!(got["title"], "Call with Ada Lovelace");

    // Restarted with the same master key, everything still opens; the chain verifies.
    let key = app.config.master_key.clone();
    let app = spawn_app_in(app.stop().await).await;
    assert_eq!(transcript(&app, &user, &session).await["segments"][1]["text"], "about the analytical engine");
    let report = callstream::store::verify(app.database(), &key).expect("verify");
    assert!(report.is_ok(), "{report:?}");
}

#[tokio::test]
async fn an_erasure_must_be_confirmed_by_an_operator_of_the_tenant() {
    let app = spawn_app().await;
    let session = personal_call(&app, "t-keep").await;
    let before = log_digest(&app, i64::MAX as u64);
    let path = "/v1/governance/tenants/t-keep/erase";
    let operator = app.token("ops", "t-keep", &[Role::Operator]);
    let cases = [
        (
            app.token("ada", "t-keep", &[Role::User]),
            json!({"confirm": "t-keep"}),
            StatusCode::FORBIDDEN,
            "FORBIDDEN_ROLE",
        ),
        (
            app.token("ops", "t-other", &[Role::Operator]),
            json!({"confirm": "t-keep"}),
            StatusCode::FORBIDDEN,
            "FORBIDDEN_ROLE",
        ),
        (operator.clone(), json!({"confirm": "t-other"}), StatusCode::BAD_REQUEST, "ERASURE_NOT_CONFIRMED"),
        (operator.clone(), json!({"confirm": ""}), StatusCode::BAD_REQUEST, "ERASURE_NOT_CONFIRMED"),
        (operator.clone(), json!({}), StatusCode::BAD_REQUEST, "VALIDATION_FAILED"),
        (operator.clone(), json!({"confirm": "t-keep", "force": true}), StatusCode::BAD_REQUEST, "VALIDATION_FAILED"),
    ];
    for (token, body, status, code) in cases {
        let response = app.post(path, &token, &body).await;
        assert_eq!(response.status(), status, "{body}");
        assert_eq!(error_code(response).await, code, "{body}");
    }
    assert_eq!(log_digest(&app, before.0), before);
    let user = app.token("ada", "t-keep", &[Role::User]);
    assert_eq!(transcript(&app, &user, &session).await["segments"][0]["text"], "call me on 555-0199");
    let audit: Value = app.get("/v1/governance/audit", &operator).await.json().await.expect("json");
    assert!(!audit["entries"].as_array().expect("entries").iter().any(|e| e["action"] == "tenant.erased"));
}

#[tokio::test]
async fn erasing_a_tenant_shreds_its_personal_fields_everywhere_and_leaves_the_log_intact() {
    let app = spawn_app().await;
    let erased_session = personal_call(&app, "t-gone").await;
    let kept_session = personal_call(&app, "t-stays").await;
    let before = log_digest(&app, i64::MAX as u64);

    let operator = app.token("ops", "t-gone", &[Role::Operator]);
    let response = app.post("/v1/governance/tenants/t-gone/erase", &operator, &json!({"confirm": "t-gone"})).await;
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["tenantId"], "t-gone");
    assert_eq!(answer["keysDestroyed"], 1);
    assert_eq!(answer["sessions"], 1);
    assert_eq!(answer["participants"], 1);
    assert_eq!(answer["transcriptSegments"], 2);
    assert_eq!(answer["actions"], 1);

    // Not one row of the log changed, and it still verifies; projections equal a rebuild.
    assert_eq!(log_digest(&app, before.0), before);
    let report = callstream::store::verify(app.database(), &app.config.master_key).expect("verify");
    assert!(report.is_ok(), "{report:?}");

    let user = app.token("ada", "t-gone", &[Role::User]);
    let view = transcript(&app, &user, &erased_session).await;
    for segment in view["segments"].as_array().expect("segments") {
        assert_eq!(segment["text"], Value::Null);
        assert_eq!(segment["erased"], true);
        assert_eq!(segment["speaker"], Value::Null);
    }
    assert_eq!(view["text"], "");
    let replay = app.replay(&user, &erased_session, 0, 100).await;
    let served = serde_json::to_string(&replay).expect("json");
    for word in SECRET_WORDS {
        assert!(!served.contains(word), "`{word}` is still served");
    }
    let final_event =
        replay["events"].as_array().expect("events").iter().find(|e| e["eventId"] == "t1").expect("t1 is still there");
    assert_eq!(final_event["payload"]["text"], Value::Null);
    assert_eq!(final_event["payload"]["erased"], true);
    assert_eq!(final_event["payload"]["segmentId"], "s1", "what is not personal stays readable");
    let session: Value = app.get(&format!("/v1/call/sessions/{erased_session}"), &user).await.json().await.unwrap();
    assert_eq!(session["title"], Value::Null);
    assert_eq!(session["participants"], json!([]));

    // The other tenant is untouched.
    let other = app.token("ada", "t-stays", &[Role::User]);
    assert_eq!(transcript(&app, &other, &kept_session).await["segments"][0]["text"], "call me on 555-0199");

    // The erasure is in the governance audit trail (the operator route serves the same trail).
    let audit: Value = app.get("/v1/governance/audit", &operator).await.json().await.expect("json");
    let entry = audit["entries"].as_array().expect("entries").iter().find(|e| e["action"] == "tenant.erased");
    let entry = entry.expect("audited");
    assert_eq!(entry["target"], "t-gone");
    assert_eq!(entry["auditId"], answer["auditId"]);
    let operator_trail: Value = app.get("/v1/operator/audit", &operator).await.json().await.expect("json");
    assert_eq!(operator_trail, audit);

    // Erased stays erased across a restart and a rebuild; new data gets a new key and opens.
    let key = app.config.master_key.clone();
    let app = spawn_app_in(app.stop().await).await;
    assert_eq!(transcript(&app, &user, &erased_session).await["segments"][0]["erased"], true);
    let fresh = app
        .ingest(
            &app.token("agent", "t-gone", &[Role::Service]),
            &erased_session,
            vec![crate::helpers::transcript(&erased_session, "t3", "said after the erasure")],
        )
        .await;
    assert_eq!(fresh.status(), StatusCode::OK);
    let view = transcript(&app, &user, &erased_session).await;
    assert_eq!(view["text"], "said after the erasure");
    let again = app.post("/v1/governance/tenants/t-gone/erase", &operator, &json!({"confirm": "t-gone"})).await;
    assert_eq!(again.json::<Value>().await.expect("json")["keysDestroyed"], 1, "the new generation goes too");
    let database = app.database();
    let _data_dir = app.stop().await;
    callstream::store::rebuild(&database, &key).expect("rebuild");
    let differences = callstream::store::diff_against_rebuild(&database, &key).expect("diff");
    assert!(differences.is_empty(), "{differences:?}");
}
