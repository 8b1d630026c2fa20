use reqwest::StatusCode;
use serde_json::Value;

use callstream::domain::principal::Role;
use serde_json::json;

use crate::helpers::{error_code, spawn_app, spawn_app_with};

#[tokio::test]
async fn malformed_bodies_get_stable_codes() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let url = format!("{}/v1/call/sessions", app.address);

    let malformed = app
        .client
        .post(&url)
        .bearer_auth(&alice)
        .header("Content-Type", "application/json")
        .body("{nope")
        .send()
        .await
        .expect("send");
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(malformed).await, "INVALID_JSON");

    let text = app
        .client
        .post(&url)
        .bearer_auth(&alice)
        .header("Content-Type", "text/plain")
        .body("{}")
        .send()
        .await
        .expect("send");
    assert_eq!(text.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(error_code(text).await, "UNSUPPORTED_MEDIA_TYPE");

    let huge = app
        .client
        .post(&url)
        .bearer_auth(&alice)
        .header("Content-Type", "application/json")
        .body(vec![b' '; 70_000])
        .send()
        .await
        .expect("send");
    assert_eq!(huge.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(huge).await, "PAYLOAD_TOO_LARGE");
}

#[tokio::test]
async fn unknown_routes_and_methods_get_stable_codes() {
    let app = spawn_app().await;
    let missing = app.client.get(format!("{}/v2/nothing", app.address)).send().await.expect("send");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(missing).await, "ROUTE_NOT_FOUND");
    let wrong_method = app.client.delete(format!("{}/v1/call/sessions", app.address)).send().await.expect("send");
    assert_eq!(wrong_method.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(wrong_method).await, "METHOD_NOT_ALLOWED");
}

#[tokio::test]
async fn request_ids_are_kept_or_generated() {
    let app = spawn_app().await;
    let kept = app
        .client
        .get(format!("{}/health/live", app.address))
        .header("X-Request-Id", "req-abc.1")
        .send()
        .await
        .expect("send");
    assert_eq!(kept.headers()["x-request-id"], "req-abc.1");
    let unsafe_id = app
        .client
        .get(format!("{}/v1/contract", app.address))
        .header("X-Request-Id", "bad id with spaces")
        .send()
        .await
        .expect("send");
    let generated = unsafe_id.headers()["x-request-id"].to_str().expect("ascii").to_owned();
    assert_ne!(generated, "bad id with spaces", "an unsafe id is replaced");
    assert!(uuid::Uuid::parse_str(&generated).is_ok(), "by a generated one: {generated}");
    let body: Value = unsafe_id.json().await.expect("json");
    assert_eq!(body["error"]["requestId"], generated.as_str());
}

#[tokio::test]
async fn health_reports_live_and_ready() {
    let app = spawn_app().await;
    let live = app.client.get(format!("{}/health/live", app.address)).send().await.expect("send");
    assert_eq!(live.status(), StatusCode::OK);
    let ready = app.client.get(format!("{}/health/ready", app.address)).send().await.expect("send");
    assert_eq!(ready.status(), StatusCode::OK);
    let body: Value = ready.json().await.expect("json");
    assert_eq!(body["status"], "ready");
    for check in ["writerAlive", "databaseWritable", "migrationsCurrent", "projectionsCurrent"] {
        assert_eq!(body["checks"][check], true, "{check}");
    }
    assert_eq!(body["checks"]["shuttingDown"], false);
    assert_eq!(body["checks"]["outboxWorker"]["running"], true);
    assert_eq!(body["checks"]["scheduler"]["running"], true);
    assert_eq!(body["checks"]["scheduler"]["enabled"], false, "off by default, and that is healthy");
    assert!(body.get("failed").is_none(), "{body}");
}

#[tokio::test]
async fn every_response_carries_security_headers() {
    let app = spawn_app().await;
    for path in ["/health/live", "/v1/call/sessions", "/no/such/route"] {
        let response = app.client.get(format!("{}{path}", app.address)).send().await.expect("request");
        let headers = response.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{path}");
        assert!(headers["content-security-policy"].to_str().expect("ascii").contains("default-src 'none'"), "{path}");
        assert_eq!(headers["cache-control"], "no-store", "{path}");
    }
}

#[tokio::test]
async fn cors_allows_exactly_the_configured_origins() {
    let app = spawn_app_with(&[("CALLSTREAM_CORS_ORIGINS", "https://app.example.com")]).await;
    let url = format!("{}/v1/call/sessions", app.address);
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, &url)
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "authorization, content-type")
            .send()
    };
    let allowed = preflight("https://app.example.com").await.expect("preflight");
    assert_eq!(allowed.status(), StatusCode::NO_CONTENT);
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://app.example.com");
    assert!(allowed.headers()["access-control-allow-headers"].to_str().expect("ascii").contains("authorization"));
    assert!(allowed.headers()["access-control-allow-methods"].to_str().expect("ascii").contains("POST"));

    let denied = preflight("https://evil.example.net").await.expect("preflight");
    assert!(denied.headers().get("access-control-allow-origin").is_none());
    assert_eq!(error_code(denied).await, "CORS_ORIGIN_DENIED");

    let alice = app.user("alice");
    let from = |origin: &'static str| app.client.get(&url).bearer_auth(&alice).header("Origin", origin).send();
    let response = from("https://app.example.com").await.expect("get");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["access-control-allow-origin"], "https://app.example.com");
    assert!(response.headers()["access-control-expose-headers"].to_str().expect("ascii").contains("x-request-id"));
    let foreign = from("https://evil.example.net").await.expect("get");
    assert!(foreign.headers().get("access-control-allow-origin").is_none(), "the browser withholds the answer");
}

#[tokio::test]
async fn a_tenant_over_its_rate_is_told_when_to_retry_and_nothing_happens() {
    let app = spawn_app_with(&[("CALLSTREAM_RATE_LIMIT_WRITE_PER_SEC", "3"), ("CALLSTREAM_TEST_CLOCK", "1")]).await;
    let alice = app.user("alice");
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(app.post("/v1/call/sessions", &alice, &json!({})).await);
    }
    let limited: Vec<_> = statuses.into_iter().filter(|r| r.status() == StatusCode::TOO_MANY_REQUESTS).collect();
    assert!(limited.len() >= 2, "a burst of 3, then 429s: {} limited", limited.len());
    let first = limited.into_iter().next().expect("a 429");
    assert_eq!(first.headers()["retry-after"], "1");
    let body: Value = first.json().await.expect("json");
    assert_eq!(body["error"]["code"], "RATE_LIMITED", "{body}");
    assert_eq!(body["error"]["details"]["class"], "write", "{body}");

    let listed: Value = app.get("/v1/call/sessions", &alice).await.json().await.expect("json");
    let created = listed["sessions"].as_array().map_or(0, Vec::len);
    assert!((3..=4).contains(&created), "only admitted requests created sessions: {created}");
    // Reads are another class, other tenants another bucket.
    let bob = app.token("bob", "t2", &[Role::User]);
    assert_eq!(app.post("/v1/call/sessions", &bob, &json!({})).await.status(), StatusCode::CREATED);
    app.advance_clock(1).await;
    assert_eq!(app.post("/v1/call/sessions", &alice, &json!({})).await.status(), StatusCode::CREATED);
}
