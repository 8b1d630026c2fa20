use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{error_code, spawn_app};

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
    assert_ne!(generated, "bad id");
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
    for check in ["writerAlive", "databaseWritable", "migrationsCurrent"] {
        assert_eq!(body["checks"][check], true, "{check}");
    }
}
