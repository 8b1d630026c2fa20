//! Operator tenant management: status and quotas enforced on every route, an audit trail of each
//! change, all of it surviving a restart.

use callstream::domain::principal::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{RawDb, TestApp, error_code, spawn_app, spawn_app_in, transcript};
use crate::ws::try_connect;

async fn patch(app: &TestApp, token: &str, tenant: &str, body: Value) -> reqwest::Response {
    app.client
        .patch(format!("{}/v1/operator/tenants/{tenant}", app.address))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("patch")
}

#[tokio::test]
async fn operators_create_list_and_get_tenants_and_others_may_not() {
    let app = spawn_app().await;
    let ops = app.token("ops", "platform", &[Role::Operator]);
    let alice = app.user("alice");

    let created = app.post("/v1/operator/tenants", &ops, &json!({"tenantId": "acme", "name": "Acme"})).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.expect("json");
    assert_eq!(created["status"], "active");
    assert_eq!(created["version"], 1);
    assert_eq!(created["quotas"], json!({}));

    let again = app.post("/v1/operator/tenants", &ops, &json!({"tenantId": "acme"})).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(again).await, "TENANT_EXISTS");
    let bad_id = app.post("/v1/operator/tenants", &ops, &json!({"tenantId": "a b"})).await;
    assert_eq!(error_code(bad_id).await, "VALIDATION_FAILED");
    let bad_quota =
        app.post("/v1/operator/tenants", &ops, &json!({"tenantId": "zero", "quotas": {"maxOpenSessions": 0}})).await;
    assert_eq!(error_code(bad_quota).await, "VALIDATION_FAILED");
    let unknown_quota =
        app.post("/v1/operator/tenants", &ops, &json!({"tenantId": "odd", "quotas": {"maxApples": 3}})).await;
    assert_eq!(error_code(unknown_quota).await, "VALIDATION_FAILED");

    let fetched: Value = app.get("/v1/operator/tenants/acme", &ops).await.json().await.expect("json");
    assert_eq!(fetched, created);
    let missing = app.get("/v1/operator/tenants/nobody", &ops).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(missing).await, "TENANT_NOT_FOUND");
    let listed: Value = app.get("/v1/operator/tenants", &ops).await.json().await.expect("json");
    assert_eq!(listed["tenants"], json!([created]));

    for response in [
        app.get("/v1/operator/tenants", &alice).await,
        app.post("/v1/operator/tenants", &alice, &json!({"tenantId": "mine"})).await,
        app.get("/v1/operator/tenants/acme", &alice).await,
        patch(&app, &alice, "acme", json!({"status": "suspended"})).await,
        app.get("/v1/operator/audit", &alice).await,
    ] {
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(error_code(response).await, "FORBIDDEN_ROLE");
    }
}

#[tokio::test]
async fn a_suspended_tenant_is_refused_everywhere_until_reactivated_even_after_a_restart() {
    let app = spawn_app().await;
    let ops = app.token("ops", "platform", &[Role::Operator]);
    let carol = app.token("carol", "acme", &[Role::User]);
    let alice = app.user("alice");
    let session = app.create_session(&carol).await;
    assert_eq!(
        app.post("/v1/operator/tenants", &ops, &json!({"tenantId": "acme"})).await.status(),
        StatusCode::CREATED
    );

    let suspended = patch(&app, &ops, "acme", json!({"status": "suspended"})).await;
    assert_eq!(suspended.status(), StatusCode::OK);
    assert_eq!(suspended.json::<Value>().await.expect("json")["version"], 2);
    let refused = [
        app.post("/v1/call/sessions", &carol, &json!({})).await,
        app.get(&format!("/v1/call/sessions/{session}"), &carol).await,
        app.ingest(&carol, &session, vec![transcript(&session, "s-1", "hello")]).await,
    ];
    for response in refused {
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(error_code(response).await, "TENANT_SUSPENDED");
    }
    assert_eq!(try_connect(&app, &carol, &session, "").await.err(), Some(403));
    assert_eq!(
        app.post("/v1/call/sessions", &alice, &json!({})).await.status(),
        StatusCode::CREATED,
        "others unaffected"
    );
    let acme_ops = app.token("acme-ops", "acme", &[Role::Operator]);
    assert_eq!(app.get(&format!("/v1/call/sessions/{session}"), &acme_ops).await.status(), StatusCode::OK);

    let data_dir = app.stop().await;
    let app = spawn_app_in(data_dir).await;
    let carol = app.token("carol", "acme", &[Role::User]);
    let ops = app.token("ops", "platform", &[Role::Operator]);
    let still = app.get(&format!("/v1/call/sessions/{session}"), &carol).await;
    assert_eq!(error_code(still).await, "TENANT_SUSPENDED", "the suspension survives a restart");
    assert_eq!(patch(&app, &ops, "acme", json!({"status": "active"})).await.status(), StatusCode::OK);
    assert_eq!(app.get(&format!("/v1/call/sessions/{session}"), &carol).await.status(), StatusCode::OK);
    assert_eq!(app.replay(&carol, &session, 0, 10).await["diagnostics"]["headSeq"], 1, "nothing was appended");

    let audit: Value = app.get("/v1/operator/audit", &ops).await.json().await.expect("json");
    let actions: Vec<&str> =
        audit["entries"].as_array().expect("entries").iter().map(|e| e["action"].as_str().expect("action")).collect();
    assert_eq!(actions, ["tenant.created", "tenant.suspended", "tenant.reactivated"]);
    let suspension = &audit["entries"][1];
    assert_eq!(suspension["actor"], json!({"userId": "ops", "tenantId": "platform"}));
    assert_eq!(suspension["target"], "acme");
    assert_eq!(suspension["details"]["before"]["status"], "active");
    assert_eq!(suspension["details"]["after"]["status"], "suspended");
    assert!(suspension["requestId"].as_str().is_some_and(|id| !id.is_empty()));
    let page: Value = app.get("/v1/operator/audit?after=2&limit=5", &ops).await.json().await.expect("json");
    assert_eq!(page["entries"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["nextAfter"], 3);
}

#[tokio::test]
async fn quotas_cap_open_sessions_and_replace_the_rate_limits() {
    let app = spawn_app().await;
    let ops = app.token("ops", "platform", &[Role::Operator]);
    let quotas = json!({"tenantId": "small", "quotas": {"maxOpenSessions": 2}});
    assert_eq!(app.post("/v1/operator/tenants", &ops, &quotas).await.status(), StatusCode::CREATED);
    let dan = app.token("dan", "small", &[Role::User]);
    for _ in 0..2 {
        assert_eq!(app.post("/v1/call/sessions", &dan, &json!({})).await.status(), StatusCode::CREATED);
    }
    let third = app.post("/v1/call/sessions", &dan, &json!({})).await;
    assert_eq!(third.status(), StatusCode::FORBIDDEN);
    let body: Value = third.json().await.expect("json");
    assert_eq!(body["error"]["code"], "QUOTA_EXCEEDED", "{body}");
    assert_eq!(body["error"]["details"]["limit"], 2, "{body}");
    let listed: Value = app.get("/v1/call/sessions", &dan).await.json().await.expect("json");
    assert_eq!(listed["sessions"].as_array().map(Vec::len), Some(2), "the refused create appended nothing");

    let rates = json!({"quotas": {"rateLimits": {"readPerSec": 2}}});
    assert_eq!(patch(&app, &ops, "small", rates).await.status(), StatusCode::OK);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(app.get("/v1/call/sessions", &dan).await.status());
    }
    assert!(statuses.contains(&StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
}

#[tokio::test]
async fn the_audit_trail_cannot_be_rewritten() {
    let app = spawn_app().await;
    let ops = app.token("ops", "platform", &[Role::Operator]);
    assert_eq!(
        app.post("/v1/operator/tenants", &ops, &json!({"tenantId": "acme"})).await.status(),
        StatusCode::CREATED
    );
    let mut db = RawDb::open(&app.database());
    assert!(db.execute("UPDATE audit_log SET actor_id = 'someone-else'").is_err());
    assert!(db.execute("DELETE FROM audit_log").is_err());
    assert_eq!(db.value("SELECT actor_id FROM audit_log").as_deref(), Some("ops"));
}

#[tokio::test]
async fn open_sockets_of_a_suspended_tenant_stop_publishing_and_are_closed() {
    let app = crate::helpers::spawn_app_with(&[("CALLSTREAM_WS_HEARTBEAT_SECS", "1")]).await;
    let ops = app.token("ops", "platform", &[Role::Operator]);
    let carol = app.token("carol", "acme", &[Role::User]);
    let session = app.create_session(&carol).await;
    let mut socket = crate::ws::connect(&app, &carol, &session, "").await;
    socket.next().await;
    assert_eq!(
        app.post("/v1/operator/tenants", &ops, &json!({"tenantId": "acme"})).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(patch(&app, &ops, "acme", json!({"status": "suspended"})).await.status(), StatusCode::OK);

    socket.send(json!({"op": "publish", "event": transcript(&session, "ws-1", "hi"), "ref": "r1"})).await;
    let (frames, ended) = socket.drain().await;
    let refused = frames.iter().find(|f| f["op"] == "error").expect("an error frame");
    assert_eq!(refused["code"], "TENANT_SUSPENDED");
    assert_eq!(refused["ref"], "r1");
    match ended {
        crate::ws::Ended::Closed(4403, reason) => {
            assert!(reason.contains(r#""resumable":false"#), "{reason}");
        }
        other => panic!("expected close 4403, got {other:?}"),
    }
    let acme_ops = app.token("acme-ops", "acme", &[Role::Operator]);
    assert_eq!(app.replay(&acme_ops, &session, 0, 10).await["diagnostics"]["headSeq"], 1, "nothing was published");
}

#[tokio::test]
async fn the_data_map_describes_exactly_the_tables_that_exist() {
    let app = spawn_app().await;
    let ops = app.token("ops", "platform", &[Role::Operator]);
    let map: Value = app.get("/v1/governance/data-map", &ops).await.json().await.expect("json");
    let mut described: Vec<String> = map["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .map(|t| {
            for key in ["kind", "purpose", "retention", "deletion"] {
                assert!(t[key].as_str().is_some_and(|v| !v.is_empty()), "{t}: {key}");
            }
            assert!(t["personalData"].is_array(), "{t}");
            t["table"].as_str().expect("table").to_owned()
        })
        .collect();
    described.sort();
    let mut db = RawDb::open(&app.database());
    let tables = db.pick(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        // The migration ledger is PostgreSQL's own bookkeeping, like SQLite's user_version.
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_migrations'",
    );
    let mut existing: Vec<String> = db.rows(tables).into_iter().flatten().flatten().collect();
    existing.sort();
    assert_eq!(described, existing, "every table has exactly one data-map entry");
    let refused = app.get("/v1/governance/data-map", &app.user("alice")).await;
    assert_eq!(error_code(refused).await, "FORBIDDEN_ROLE");
}

#[tokio::test]
async fn the_test_clock_moves_forward_for_operators_only_and_is_audited() {
    let app = crate::helpers::spawn_app_with(&[("CALLSTREAM_TEST_CLOCK", "1")]).await;
    let operator = app.token("ops", "t-ops", &[Role::Operator]);
    let alice = app.user("alice");
    let before = app.clock.now();
    let advance = |token: &str, body: Value| {
        let (app, token) = (&app, token.to_owned());
        async move { app.post("/v1/operator/clock", &token, &body).await }
    };
    assert_eq!(advance(&alice, json!({"advanceSeconds": 60})).await.status(), StatusCode::FORBIDDEN);
    for bad in [json!({"advanceSeconds": 0}), json!({"advanceSeconds": -5}), json!({"advanceSeconds": 1e9}), json!({})]
    {
        let response = advance(&operator, bad.clone()).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    assert!(app.clock.now().millis_since(before) < 60_000, "refused requests moved nothing");

    let moved: Value = advance(&operator, json!({"advanceSeconds": 3600})).await.json().await.expect("json");
    let now = callstream::domain::time::Timestamp::parse(moved["now"].as_str().expect("now")).expect("RFC 3339");
    assert!(now.millis_since(before) >= 3_600_000, "{moved}");
    assert_eq!(moved["offsetSeconds"], 3600);
    // Every layer reads the one clock: tokens minted before have expired, and the next event is
    // recorded an hour on.
    let stale = app.get("/v1/call/sessions", &alice).await;
    assert_eq!(crate::helpers::error_code(stale).await, "AUTH_EXPIRED");
    let alice = app.user("alice");
    let operator = app.token("ops", "t-ops", &[Role::Operator]);
    let session = app.create_session(&alice).await;
    let created: Value = app.get(&format!("/v1/call/sessions/{session}"), &alice).await.json().await.expect("json");
    let created_at =
        callstream::domain::time::Timestamp::parse(created["createdAt"].as_str().expect("at")).expect("time");
    assert!(created_at.millis_since(before) >= 3_600_000, "{created}");
    let audit: Value = app.get("/v1/operator/audit", &operator).await.json().await.expect("json");
    let entries = audit["entries"].as_array().expect("entries");
    assert!(
        entries.iter().any(|e| e["action"] == "clock.advanced" && e["details"]["advanceSeconds"] == 3600),
        "{audit}"
    );
}

#[tokio::test]
async fn without_the_test_clock_the_route_does_not_exist() {
    let app = crate::helpers::spawn_app().await;
    let operator = app.token("ops", "t-ops", &[Role::Operator]);
    let response = app.post("/v1/operator/clock", &operator, &json!({"advanceSeconds": 60})).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(crate::helpers::error_code(response).await, "ROUTE_NOT_FOUND");
}
