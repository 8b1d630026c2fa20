use callstream::domain::principal::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{RawDb, error_code, spawn_app};

#[tokio::test]
async fn a_created_session_is_readable_by_its_owner() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let response = app.post("/v1/call/sessions", &alice, &json!({"title": "Standup", "metadata": {"team": "a"}})).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = response.json().await.expect("json");
    assert_eq!(created["state"], "created");
    assert_eq!(created["version"], 1);
    assert_eq!(created["ownerId"], "alice");
    let id = created["sessionId"].as_str().expect("id");
    assert!(id.starts_with("cs_"));

    let fetched: Value = app.get(&format!("/v1/call/sessions/{id}"), &alice).await.json().await.expect("json");
    assert_eq!(fetched, created);
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_answer() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let send = |body: Value| {
        app.client
            .post(format!("{}/v1/call/sessions", app.address))
            .bearer_auth(&alice)
            .header("Idempotency-Key", "create-1")
            .json(&body)
            .send()
    };
    let first = send(json!({"title": "a"})).await.expect("send");
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.expect("json");
    let second = send(json!({"title": "a"})).await.expect("send");
    assert_eq!(second.status(), StatusCode::CREATED);
    assert_eq!(second.json::<Value>().await.expect("json"), first);

    let other = send(json!({"title": "b"})).await.expect("send");
    assert_eq!(other.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(other).await, "IDEMPOTENCY_KEY_REUSED");

    let report = callstream::store::verify(app.database(), &app.config.master_key).expect("verify");
    assert_eq!(report.events, 1, "one session, one created event");
}

#[tokio::test]
async fn concurrent_retries_with_one_key_create_one_session() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let request = app
            .client
            .post(format!("{}/v1/call/sessions", app.address))
            .bearer_auth(&alice)
            .header("Idempotency-Key", "race")
            .json(&json!({"title": "race"}));
        tasks.push(tokio::spawn(
            async move { request.send().await.expect("send").json::<Value>().await.expect("json") },
        ));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.expect("task")["sessionId"].as_str().expect("id").to_owned());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
}

#[tokio::test]
async fn sessions_of_others_do_not_exist_for_the_caller() {
    let app = spawn_app().await;
    let session = app.create_session(&app.user("alice")).await;
    let path = format!("/v1/call/sessions/{session}");

    let bob = app.get(&path, &app.user("bob")).await;
    assert_eq!(bob.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(bob).await, "SESSION_NOT_FOUND");
    let other_tenant = app.get(&path, &app.token("alice", "t2", &[Role::User])).await;
    assert_eq!(other_tenant.status(), StatusCode::NOT_FOUND);
    let missing = app.get("/v1/call/sessions/cs_nope", &app.user("alice")).await;
    assert_eq!(error_code(missing).await, "SESSION_NOT_FOUND");

    let operator = app.get(&path, &app.token("ops", "t1", &[Role::Operator])).await;
    assert_eq!(operator.status(), StatusCode::OK);
}

#[tokio::test]
async fn bad_create_bodies_are_rejected() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    for body in [json!({"title": "x".repeat(201)}), json!({"unknown": 1}), json!({"metadata": [1]})] {
        let response = app.post("/v1/call/sessions", &alice, &body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error_code(response).await, "VALIDATION_FAILED");
    }
}

#[tokio::test]
async fn expired_idempotency_answers_are_pruned_by_later_keyed_creates() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let mut db = RawDb::open(&app.database());
    for (key, created_at) in
        [("ancient", "2026-01-01T00:00:00.000Z".to_owned()), ("fresh", chrono::Utc::now().to_rfc3339())]
    {
        let hash = db.pick("x'00'", "'\\x00'::bytea");
        db.execute(&format!(
            "INSERT INTO idempotency_keys (tenant_id, user_id, route, key, request_hash, status, response, created_at) \
             VALUES ('t1', 'alice', 'POST /v1/call/sessions', '{key}', {hash}, 201, '{{}}', '{created_at}')"
        ))
        .expect("insert");
    }
    let created = app
        .client
        .post(format!("{}/v1/call/sessions", app.address))
        .bearer_auth(&alice)
        .header("Idempotency-Key", "another")
        .json(&json!({}))
        .send()
        .await
        .expect("send");
    assert_eq!(created.status(), StatusCode::CREATED);
    let mut keys: Vec<String> = db.rows("SELECT key FROM idempotency_keys").into_iter().flatten().flatten().collect();
    keys.sort();
    assert_eq!(keys, ["another", "fresh"], "only the answer past its retention is gone");
}

#[tokio::test]
async fn an_idempotency_key_belongs_to_the_caller_not_the_tenant() {
    let app = spawn_app().await;
    let create = |token: String| {
        app.client
            .post(format!("{}/v1/call/sessions", app.address))
            .bearer_auth(token)
            .header("Idempotency-Key", "same-key")
            .json(&json!({"title": "mine"}))
            .send()
    };
    let alice: Value = create(app.user("alice")).await.expect("send").json().await.expect("json");
    let bob = create(app.user("bob")).await.expect("send");
    assert_eq!(bob.status(), StatusCode::CREATED, "another user of the tenant may pick the same key");
    let bob: Value = bob.json().await.expect("json");
    assert_ne!(alice["sessionId"], bob["sessionId"]);
    assert_eq!(bob["ownerId"], "bob");
    let again: Value = create(app.user("alice")).await.expect("send").json().await.expect("json");
    assert_eq!(again["sessionId"], alice["sessionId"], "each caller's key still replays their own answer");
}
