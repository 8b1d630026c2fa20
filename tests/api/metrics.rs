//! `GET /metrics`: Prometheus text that moves with what the server does.

use std::collections::HashMap;

use reqwest::StatusCode;

use crate::helpers::{TestApp, spawn_app, transcript};
use crate::ws::connect;

/// Every sample line as `name{labels}` → value; panics on a line that is not the text format.
async fn scrape(app: &TestApp) -> HashMap<String, f64> {
    let response = app.client.get(format!("{}/metrics", app.address)).send().await.expect("scrape");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().expect("ascii").to_owned();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    let text = response.text().await.expect("text");
    let mut samples = HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix("# ") {
            assert!(comment.starts_with("HELP ") || comment.starts_with("TYPE "), "{line}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value: {line}"));
        assert!(series.chars().next().is_some_and(|c| c.is_ascii_alphabetic()), "{line}");
        assert!(samples.insert(series.to_owned(), value).is_none(), "duplicate series: {line}");
    }
    samples
}

#[tokio::test]
async fn metrics_count_requests_events_sockets_and_webhooks() {
    let app = spawn_app().await;
    let before = scrape(&app).await;
    assert_eq!(before["callstream_writer_alive"], 1.0);
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    let events = (0..3).map(|i| transcript(&session, &format!("m{i}"), "hello")).collect();
    assert_eq!(app.ingest(&alice, &session, events).await.status(), StatusCode::OK);
    let mut socket = connect(&app, &alice, &session, "").await;
    socket.next().await;
    let unsigned = app
        .client
        .post(format!("{}/v1/webhooks/livekit", app.address))
        .header("Content-Type", "application/webhook+json")
        .body("{}")
        .send()
        .await
        .expect("webhook");
    assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);

    let after = scrape(&app).await;
    let appended = after["callstream_events_appended_total"] - before["callstream_events_appended_total"];
    assert_eq!(appended, 4.0, "session created + 3 transcript events");
    assert_eq!(
        after[r#"callstream_http_requests_total{method="POST",route="/v1/realtime/sessions/{id}/events",status="200"}"#],
        1.0
    );
    assert_eq!(
        after[r#"callstream_http_request_duration_seconds_count{method="POST",route="/v1/call/sessions",status="201"}"#],
        1.0
    );
    assert_eq!(after["callstream_ws_connections"], 1.0);
    let rejected = after.iter().find(|(k, _)| k.starts_with(r#"callstream_livekit_webhooks_total{verdict="rejected""#));
    assert_eq!(rejected.map(|(_, v)| *v), Some(1.0), "{after:?}");
    assert!(after.keys().all(|k| !k.contains(&session)), "no session ids in labels");
    for gauge in [
        "callstream_billing_outbox_backlog",
        "callstream_billing_dead_letters",
        "callstream_billing_alert_backlog",
        "callstream_billing_alerts_dead_lettered",
        "callstream_reconciliation_runs",
        "callstream_reconciliation_mismatches",
        "callstream_tenant_erasures_total",
    ] {
        assert!(after.contains_key(gauge), "{gauge} in {after:?}");
    }
    assert!(after.keys().any(|k| k.starts_with("callstream_build_info{")), "build info");

    drop(socket);
    let mut open = 1.0;
    for _ in 0..50 {
        open = scrape(&app).await["callstream_ws_connections"];
        if open == 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(open, 0.0, "the gauge follows a closed socket");
}
