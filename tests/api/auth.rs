//! The auth matrix: every route × {no token, garbage, bad signature, expired, not yet valid, wrong
//! aud, wrong iss, unknown role, other tenant, wrong role} → the documented status and code.

use callstream::app::auth::Claims;
use callstream::domain::principal::Role;
use jsonwebtoken::{EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{SECRET, TestApp, error_code, spawn_app, transcript};

fn forge(app: &TestApp, edit: impl FnOnce(&mut Claims), secret: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    let mut claims = Claims {
        sub: "alice".into(),
        tenant: "t1".into(),
        roles: vec!["user".into()],
        iss: app.config.jwt.issuer.clone(),
        aud: app.config.jwt.audience.clone(),
        exp: now + 600,
        nbf: None,
        iat: Some(now),
    };
    edit(&mut claims);
    jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.as_bytes())).expect("encode")
}

struct Route {
    method: Method,
    path: String,
    body: Option<serde_json::Value>,
}

async fn call(app: &TestApp, route: &Route, token: Option<&str>) -> reqwest::Response {
    let mut request = app.client.request(route.method.clone(), format!("{}{}", app.address, route.path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = &route.body {
        request = request.json(body);
    }
    request.send().await.expect("send")
}

#[tokio::test]
async fn every_route_enforces_the_auth_matrix() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    let routes = vec![
        Route { method: Method::POST, path: "/v1/call/sessions".into(), body: Some(json!({})) },
        Route { method: Method::GET, path: format!("/v1/call/sessions/{session}"), body: None },
        Route {
            method: Method::POST,
            path: format!("/v1/realtime/sessions/{session}/events"),
            body: Some(json!({"events": [transcript(&session, "auth-e", "x")]})),
        },
        Route { method: Method::GET, path: format!("/v1/realtime/sessions/{session}/events"), body: None },
        Route { method: Method::GET, path: "/v1/contract".into(), body: None },
        Route { method: Method::GET, path: "/v1/call/sessions".into(), body: None },
        Route {
            method: Method::POST,
            path: format!("/v1/call/sessions/{session}/state"),
            body: Some(json!({"to": "connecting"})),
        },
        Route {
            method: Method::POST,
            path: format!("/v1/call/sessions/{session}/provider"),
            body: Some(json!({"provider": "livekit", "providerRoomId": "r"})),
        },
        Route {
            method: Method::POST,
            path: format!("/v1/call/sessions/{session}/livekit-token"),
            body: Some(json!({})),
        },
        Route {
            method: Method::POST,
            path: "/v1/orchestration/actions/execute".into(),
            body: Some(
                json!({"actionId": "auth-a", "sessionId": session, "type": "note.create", "params": {"text": "x"}}),
            ),
        },
        Route {
            method: Method::POST,
            path: "/v1/actions/decision".into(),
            body: Some(json!({"actionId": "auth-a", "decision": "approve"})),
        },
        Route { method: Method::GET, path: "/v1/orchestration/actions/auth-a".into(), body: None },
        Route {
            method: Method::POST,
            path: format!("/v1/call/sessions/{session}/reconnect"),
            body: Some(json!({"resumeToken": "x.y"})),
        },
        Route { method: Method::GET, path: format!("/v1/realtime/sessions/{session}/transcript"), body: None },
        Route {
            method: Method::GET,
            path: format!("/v1/realtime/sessions/{session}/transcript-snapshots"),
            body: None,
        },
        Route {
            method: Method::POST,
            path: format!("/v1/realtime/sessions/{session}/transcript-snapshots/compact"),
            body: Some(json!({})),
        },
        Route { method: Method::GET, path: "/v1/operator/tenants".into(), body: None },
        Route { method: Method::POST, path: "/v1/operator/tenants".into(), body: Some(json!({"tenantId": "t9"})) },
        Route {
            method: Method::PATCH,
            path: "/v1/operator/tenants/t1".into(),
            body: Some(json!({"status": "active"})),
        },
        Route { method: Method::GET, path: "/v1/operator/audit".into(), body: None },
        Route { method: Method::GET, path: "/v1/governance/data-map".into(), body: None },
        Route { method: Method::GET, path: "/v1/contract/schemas/transcript.segment.final.v1.json".into(), body: None },
        Route { method: Method::GET, path: "/v1/operator/tenants/t1".into(), body: None },
    ];
    // An action that exists, so the cross-tenant rows below prove it is hidden, not merely absent.
    let owner_action = call(&app, &routes[9], Some(&alice)).await;
    assert_eq!(owner_action.status(), StatusCode::OK);
    let before = app.events_except_billing(&alice, &session).await;
    let now = chrono::Utc::now().timestamp();
    let cases: Vec<(&str, Option<String>, StatusCode, &str)> = vec![
        ("no token", None, StatusCode::UNAUTHORIZED, "AUTH_MISSING"),
        ("garbage", Some("not-a-jwt".into()), StatusCode::UNAUTHORIZED, "AUTH_INVALID"),
        (
            "bad signature",
            Some(forge(&app, |_| {}, "another-secret-0123456789abcdef0123")),
            StatusCode::UNAUTHORIZED,
            "AUTH_INVALID",
        ),
        ("expired", Some(forge(&app, |c| c.exp = now - 3600, SECRET)), StatusCode::UNAUTHORIZED, "AUTH_EXPIRED"),
        (
            "not yet valid",
            Some(forge(&app, |c| c.nbf = Some(now + 3600), SECRET)),
            StatusCode::UNAUTHORIZED,
            "AUTH_INVALID",
        ),
        (
            "wrong aud",
            Some(forge(&app, |c| c.aud = "someone-else".into(), SECRET)),
            StatusCode::UNAUTHORIZED,
            "AUTH_INVALID",
        ),
        (
            "wrong iss",
            Some(forge(&app, |c| c.iss = "someone-else".into(), SECRET)),
            StatusCode::UNAUTHORIZED,
            "AUTH_INVALID",
        ),
        (
            "unknown role",
            Some(forge(&app, |c| c.roles = vec!["root".into()], SECRET)),
            StatusCode::UNAUTHORIZED,
            "AUTH_INVALID",
        ),
    ];
    for route in &routes {
        for (name, token, status, code) in &cases {
            let response = call(&app, route, token.as_deref()).await;
            assert_eq!(response.status(), *status, "{} {} with {name}", route.method, route.path);
            assert_eq!(error_code(response).await, *code, "{} {} with {name}", route.method, route.path);
        }
    }

    // Tenancy and roles, route by route.
    let other_tenant = app.token("alice", "t2", &[Role::User]);
    let operator = app.token("ops", "t1", &[Role::Operator]);
    let expectations: Vec<(&Route, &str, StatusCode, Option<&str>)> = vec![
        (&routes[0], &other_tenant, StatusCode::CREATED, None),
        (&routes[0], &operator, StatusCode::FORBIDDEN, Some("FORBIDDEN_ROLE")),
        (&routes[1], &other_tenant, StatusCode::NOT_FOUND, Some("SESSION_NOT_FOUND")),
        (&routes[1], &operator, StatusCode::OK, None),
        (&routes[2], &other_tenant, StatusCode::NOT_FOUND, Some("SESSION_NOT_FOUND")),
        (&routes[2], &operator, StatusCode::FORBIDDEN, Some("FORBIDDEN_ROLE")),
        (&routes[3], &other_tenant, StatusCode::NOT_FOUND, Some("SESSION_NOT_FOUND")),
        (&routes[3], &operator, StatusCode::OK, None),
        (&routes[4], &other_tenant, StatusCode::OK, None),
        (&routes[5], &other_tenant, StatusCode::OK, None),
        (&routes[5], &operator, StatusCode::OK, None),
        (&routes[6], &other_tenant, StatusCode::NOT_FOUND, Some("SESSION_NOT_FOUND")),
        (&routes[6], &operator, StatusCode::FORBIDDEN, Some("FORBIDDEN_ROLE")),
        (&routes[7], &other_tenant, StatusCode::NOT_FOUND, Some("SESSION_NOT_FOUND")),
        (&routes[7], &operator, StatusCode::FORBIDDEN, Some("FORBIDDEN_ROLE")),
        (&routes[8], &other_tenant, StatusCode::NOT_FOUND, Some("SESSION_NOT_FOUND")),
        (&routes[8], &operator, StatusCode::FORBIDDEN, Some("FORBIDDEN_ROLE")),
        (&routes[9], &other_tenant, StatusCode::NOT_FOUND, Some("SESSION_NOT_FOUND")),
        (&routes[9], &operator, StatusCode::FORBIDDEN, Some("FORBIDDEN_ROLE")),
        (&routes[10], &other_tenant, StatusCode::NOT_FOUND, Some("ACTION_NOT_FOUND")),
        (&routes[11], &other_tenant, StatusCode::NOT_FOUND, Some("ACTION_NOT_FOUND")),
        (&routes[12], &other_tenant, StatusCode::NOT_FOUND, Some("SESSION_NOT_FOUND")),
        (&routes[13], &other_tenant, StatusCode::NOT_FOUND, Some("SESSION_NOT_FOUND")),
        (&routes[13], &operator, StatusCode::OK, None),
        (&routes[14], &other_tenant, StatusCode::NOT_FOUND, Some("SESSION_NOT_FOUND")),
        (&routes[15], &other_tenant, StatusCode::NOT_FOUND, Some("SESSION_NOT_FOUND")),
        (&routes[15], &operator, StatusCode::OK, None),
        (&routes[16], &other_tenant, StatusCode::FORBIDDEN, Some("FORBIDDEN_ROLE")),
        (&routes[16], &operator, StatusCode::OK, None),
        (&routes[17], &other_tenant, StatusCode::FORBIDDEN, Some("FORBIDDEN_ROLE")),
        (&routes[18], &other_tenant, StatusCode::FORBIDDEN, Some("FORBIDDEN_ROLE")),
        (&routes[18], &operator, StatusCode::NOT_FOUND, Some("TENANT_NOT_FOUND")),
        (&routes[19], &other_tenant, StatusCode::FORBIDDEN, Some("FORBIDDEN_ROLE")),
        (&routes[19], &operator, StatusCode::OK, None),
        (&routes[20], &other_tenant, StatusCode::FORBIDDEN, Some("FORBIDDEN_ROLE")),
        (&routes[20], &operator, StatusCode::OK, None),
        (&routes[21], &other_tenant, StatusCode::OK, None),
        (&routes[22], &other_tenant, StatusCode::FORBIDDEN, Some("FORBIDDEN_ROLE")),
        (&routes[22], &operator, StatusCode::NOT_FOUND, Some("TENANT_NOT_FOUND")),
        (&routes[11], &alice, StatusCode::OK, None),
        (&routes[11], &operator, StatusCode::OK, None),
    ];
    for (route, token, status, code) in expectations {
        let response = call(&app, route, Some(token)).await;
        assert_eq!(response.status(), status, "{} {}", route.method, route.path);
        if let Some(code) = code {
            assert_eq!(error_code(response).await, code);
        }
    }
    assert_eq!(app.events_except_billing(&alice, &session).await, before, "no rejected call appended");
}

/// The WebSocket route refuses every principal fault before upgrading, with the HTTP status of
/// the matrix above.
#[tokio::test]
async fn the_websocket_route_enforces_the_auth_matrix() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    let now = chrono::Utc::now().timestamp();
    let faults: Vec<(&str, String, u16)> = vec![
        ("garbage", "not-a-jwt".into(), 401),
        ("bad signature", forge(&app, |_| {}, "another-secret-0123456789abcdef0123"), 401),
        ("expired", forge(&app, |c| c.exp = now - 3600, SECRET), 401),
        ("not yet valid", forge(&app, |c| c.nbf = Some(now + 3600), SECRET), 401),
        ("wrong aud", forge(&app, |c| c.aud = "someone-else".into(), SECRET), 401),
        ("wrong iss", forge(&app, |c| c.iss = "someone-else".into(), SECRET), 401),
        ("unknown role", forge(&app, |c| c.roles = vec!["root".into()], SECRET), 401),
        ("other tenant", app.token("alice", "t2", &[Role::User]), 404),
        ("other user", app.user("mallory"), 404),
    ];
    for (name, token, status) in faults {
        let refused = crate::ws::try_connect(&app, &token, &session, "").await;
        assert_eq!(refused.err(), Some(status), "{name}");
    }
    let url = format!("{}/v1/realtime/sessions/{session}/ws", app.address.replacen("http", "ws", 1));
    let missing = tokio_tungstenite::connect_async(url).await;
    assert!(
        matches!(missing, Err(tokio_tungstenite::tungstenite::Error::Http(ref r)) if r.status().as_u16() == 401),
        "no token: {missing:?}"
    );
    let mut operator = crate::ws::connect(&app, &app.token("ops", "t1", &[Role::Operator]), &session, "").await;
    assert_eq!(operator.next().await["op"], "welcome", "an operator of the tenant may watch");
}

/// Leeway on `exp` is 30 s: a token expired 20 s ago still works, one expired 40 s ago does not.
#[tokio::test]
async fn jwt_leeway_holds_at_its_edge() {
    let app = spawn_app().await;
    let now = chrono::Utc::now().timestamp();
    let within = forge(&app, |c| c.exp = now - 20, SECRET);
    assert_eq!(app.get("/v1/call/sessions", &within).await.status(), StatusCode::OK);
    let beyond = forge(&app, |c| c.exp = now - 40, SECRET);
    assert_eq!(error_code(app.get("/v1/call/sessions", &beyond).await).await, "AUTH_EXPIRED");
    let early = forge(&app, |c| c.nbf = Some(now + 20), SECRET);
    assert_eq!(app.get("/v1/call/sessions", &early).await.status(), StatusCode::OK);
    let too_early = forge(&app, |c| c.nbf = Some(now + 40), SECRET);
    assert_eq!(error_code(app.get("/v1/call/sessions", &too_early).await).await, "AUTH_INVALID");
}

#[tokio::test]
async fn a_service_may_publish_into_any_session_of_its_tenant() {
    let app = spawn_app().await;
    let session = app.create_session(&app.user("alice")).await;
    let agent = app.token("stt-worker", "t1", &[Role::Service]);
    let response = app.ingest(&agent, &session, vec![transcript(&session, "svc-1", "x")]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let stored = &app.replay(&agent, &session, 1, 1).await["events"][0];
    assert_eq!(stored["actor"], json!({"kind": "service", "id": "stt-worker"}));
}

#[tokio::test]
async fn a_token_without_iat_is_accepted() {
    let app = spawn_app().await;
    let token = forge(&app, |c| c.iat = None, SECRET);
    let claims = token.split('.').nth(1).expect("a JWT has a claims part");
    let claims = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, claims).expect("b64");
    let claims: serde_json::Value = serde_json::from_slice(&claims).expect("claims are JSON");
    assert!(claims.get("iat").is_none() && claims.get("exp").is_some(), "{claims}");
    assert_eq!(app.get("/v1/call/sessions", &token).await.status(), StatusCode::OK);
}

/// The matrix's first rows for every route the router serves, read from the router's own table:
/// a new route is covered the day it is added. Bearer routes refuse a missing, expired, wrong-aud
/// and wrong-iss token; operator routes refuse a user; public routes need nothing; the webhook
/// wants LiveKit's signature.
#[tokio::test]
async fn every_route_in_the_router_refuses_bad_tokens_and_wrong_roles() {
    use callstream::http::routes::{Access, endpoints};
    let app = spawn_app().await;
    let now = chrono::Utc::now().timestamp();
    let bad_tokens = [
        ("no token", None, "AUTH_MISSING"),
        ("expired", Some(forge(&app, |c| c.exp = now - 3600, SECRET)), "AUTH_EXPIRED"),
        ("wrong aud", Some(forge(&app, |c| c.aud = "someone-else".into(), SECRET)), "AUTH_INVALID"),
        ("wrong iss", Some(forge(&app, |c| c.iss = "someone-else".into(), SECRET)), "AUTH_INVALID"),
    ];
    let user = app.user("alice");
    let routes = endpoints(false);
    assert!(routes.len() >= 45, "the table holds every route: {}", routes.len());
    for endpoint in &routes {
        // A public file route is asked for a file it has.
        let parameter = if endpoint.path == "/console/{file}" { "app.js" } else { "t1" };
        let path: String = endpoint
            .path
            .split('/')
            .map(|s| if s.starts_with('{') { parameter } else { s })
            .collect::<Vec<_>>()
            .join("/");
        let body = endpoint
            .doc
            .body
            .map(|(_, b)| serde_json::from_str::<serde_json::Value>(&b.replace("<tenantId>", "t1")).unwrap());
        let route = Route { method: Method::from_bytes(endpoint.method.as_str().as_bytes()).unwrap(), path, body };
        let name = format!("{} {}", route.method, endpoint.path);
        match endpoint.doc.access {
            Access::Public => {
                let response = call(&app, &route, None).await;
                assert!(response.status().is_success(), "{name} is public: {}", response.status());
            }
            Access::LiveKitSignature => {
                let response = call(&app, &route, None).await;
                assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{name}");
                assert_eq!(error_code(response).await, "WEBHOOK_SIGNATURE_INVALID", "{name}");
            }
            Access::Bearer | Access::Operator => {
                for (case, token, code) in &bad_tokens {
                    let response = call(&app, &route, token.as_deref()).await;
                    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{name} with {case}");
                    assert_eq!(error_code(response).await, *code, "{name} with {case}");
                }
                if endpoint.doc.access == Access::Operator {
                    let response = call(&app, &route, Some(&user)).await;
                    assert_eq!(response.status(), StatusCode::FORBIDDEN, "{name} as a user");
                    assert_eq!(error_code(response).await, "FORBIDDEN_ROLE", "{name} as a user");
                }
            }
        }
    }
}
