//! The contract suite: every fixture through the real ingest path, plus the regression guards.

use std::collections::BTreeSet;

use callstream::domain::event_types::{EventType, Writers};
use callstream::domain::principal::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

const FIXTURES: &str = include_str!("../../fixtures/realtime-event-contract.v1.json");
const ERROR_CODES: &str = include_str!("../../schemas/error_codes.json");

fn fixtures() -> Value {
    serde_json::from_str(FIXTURES).expect("fixtures are JSON")
}

/// Send one fixture envelope, as `token`, to a fresh session of `owner`'s; returns (status, body).
async fn ingest_fixture(
    app: &TestApp,
    owner: &str,
    token: &str,
    envelope: &Value,
    unique: usize,
) -> (StatusCode, Value, String) {
    let session = app.create_session(owner).await;
    let mut envelope = envelope.clone();
    if let Some(object) = envelope.as_object_mut() {
        if object.get("sessionId").is_some() {
            object.insert("sessionId".into(), json!(session));
        }
        if object.get("eventId").and_then(Value::as_str).is_some_and(|id| id.len() <= 100) {
            let id = format!("{}-{unique}", object["eventId"].as_str().unwrap_or_default());
            object.insert("eventId".into(), json!(id));
        }
    }
    let response = app.ingest(token, &session, vec![envelope]).await;
    let status = response.status();
    (status, response.json().await.expect("json"), session)
}

#[tokio::test]
async fn every_fixture_is_accepted_or_rejected_as_written() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let agent = app.token("agent", "t1", &[Role::Service]);
    let envelope_schema: Value = serde_json::from_str(callstream::app::contract::ENVELOPE_SCHEMA).expect("schema");
    let stored_form = jsonschema::draft202012::new(&envelope_schema).expect("envelope schema compiles");
    let fixtures = fixtures();
    let mut unique = 0;
    for (type_name, cases) in fixtures["types"].as_object().expect("types") {
        let event_type = EventType::lookup(type_name).expect("registered");
        for case in cases["valid"].as_array().expect("valid") {
            unique += 1;
            let writer = match event_type.writers() {
                Writers::Client => &alice,
                Writers::Service => &agent,
                Writers::Server => {
                    // Callstream's own write path: the same validation, then no client may send it.
                    let envelope = &case["envelope"];
                    let session = callstream::domain::ids::SessionId::parse("cs_fixture").expect("id");
                    callstream::domain::envelope::server_event(
                        &session,
                        event_type,
                        envelope["payload"].clone(),
                        "2026-11-23T10:00:00Z",
                    )
                    .unwrap_or_else(|r| panic!("{type_name} / {}: {r}", case["name"]));
                    for token in [&alice, &agent] {
                        let (status, body, session) = ingest_fixture(&app, &alice, token, envelope, unique).await;
                        assert_eq!(status, StatusCode::FORBIDDEN, "{type_name} / {}: {body}", case["name"]);
                        assert_eq!(body["error"]["code"], "EVENT_TYPE_RESERVED");
                        assert_eq!(app.replay(&alice, &session, 0, 10).await["diagnostics"]["headSeq"], 1);
                    }
                    continue;
                }
            };
            let (status, body, session) = ingest_fixture(&app, &alice, writer, &case["envelope"], unique).await;
            assert_eq!(status, StatusCode::OK, "{type_name} / {}: {body}", case["name"]);
            let stored = &app.replay(&alice, &session, 1, 1).await["events"][0];
            assert_eq!(stored["type"], type_name.as_str());
            assert!(stored_form.is_valid(stored), "stored form of {type_name} matches envelope.v1.json: {stored}");
        }
        for case in cases["invalid"].as_array().expect("invalid") {
            unique += 1;
            let (status, body, session) = ingest_fixture(&app, &alice, &alice, &case["envelope"], unique).await;
            assert!(status.is_client_error(), "{type_name} / {}: {status}", case["name"]);
            assert_eq!(body["error"]["code"], case["expectedCode"], "{type_name} / {}: {body}", case["name"]);
            if let Some(pointer) = case.get("expectedPointer") {
                assert_eq!(&body["error"]["details"]["pointer"], pointer, "{type_name} / {}", case["name"]);
            }
            assert_eq!(
                app.replay(&alice, &session, 0, 10).await["diagnostics"]["headSeq"],
                1,
                "rejected appends nothing"
            );
        }
    }
    for case in fixtures["envelopeCases"].as_array().expect("envelope cases") {
        unique += 1;
        let (status, body, _) = ingest_fixture(&app, &alice, &alice, &case["envelope"], unique).await;
        match case.get("expectedCode") {
            Some(code) => assert_eq!(&body["error"]["code"], code, "{}: {body}", case["name"]),
            None => assert_eq!(status, StatusCode::OK, "{}: {body}", case["name"]),
        }
    }
}

#[tokio::test]
async fn created_events_match_their_contract() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let session = app.create_session(&alice).await;
    let created = &app.replay(&alice, &session, 0, 1).await["events"][0];
    assert_eq!(created["type"], "call.session.created");
    let schema: Value =
        serde_json::from_str(callstream::app::contract::schema("call.session.created.v1.json").expect("schema"))
            .expect("json");
    assert!(jsonschema::draft202012::new(&schema).expect("compiles").is_valid(&created["payload"]));
}

#[test]
fn every_registered_type_has_a_schema_and_fixtures() {
    let fixtures = fixtures();
    let registered: BTreeSet<String> = EventType::all().map(|t| t.as_str().to_owned()).collect();
    for name in &registered {
        let cases = &fixtures["types"][name];
        let writers = EventType::lookup(name).expect("registered").writers().as_str();
        assert_eq!(cases["writers"], writers, "{name}: the fixtures' writers match the registry");
        for version in EventType::lookup(name).expect("registered").versions() {
            let schema: Value = serde_json::from_str(
                callstream::app::contract::schema(&format!("{name}.v{version}.json")).expect("schema"),
            )
            .expect("json");
            assert_eq!(schema["x-callstream-writers"], writers, "{name} v{version}: the schema's writers match");
        }
        if writers != "client" {
            let reserved = cases["invalid"]
                .as_array()
                .expect("invalid")
                .iter()
                .any(|c| c["expectedCode"] == "EVENT_TYPE_RESERVED");
            assert!(reserved, "{name} has no fixture showing a client cannot write it");
        }
        assert!(cases["valid"].as_array().is_some_and(|v| !v.is_empty()), "{name} has no valid fixture");
        assert!(cases["invalid"].as_array().is_some_and(|v| !v.is_empty()), "{name} has no must-reject fixture");
    }
    let in_fixtures: BTreeSet<String> = fixtures["types"].as_object().expect("types").keys().cloned().collect();
    assert_eq!(in_fixtures, registered, "fixtures for unregistered types");

    let on_disk: BTreeSet<String> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/schemas"))
        .expect("schemas dir")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| {
            name != "envelope.v1.json"
                && name != "error_codes.json"
                && !name.starts_with("ws.")
                && !name.starts_with("api.")
        })
        .collect();
    let expected: BTreeSet<String> =
        EventType::all().flat_map(|t| t.versions().map(move |v| format!("{}.v{v}.json", t.as_str()))).collect();
    assert_eq!(on_disk, expected, "every schema file belongs to a registered type and version");
}

#[test]
fn no_error_code_disappears() {
    let on_file: Value = serde_json::from_str(ERROR_CODES).expect("error_codes.json");
    let live = callstream::error::catalog();
    if std::env::var("UPDATE_CONTRACT").is_ok() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/error_codes.json");
        std::fs::write(path, serde_json::to_string_pretty(&live).expect("json") + "\n").expect("write");
        return;
    }
    let codes = |v: &Value| -> BTreeSet<String> {
        v["codes"].as_array().expect("codes").iter().map(|c| c["code"].as_str().expect("code").to_owned()).collect()
    };
    let missing: Vec<_> = codes(&on_file).difference(&codes(&live)).cloned().collect();
    assert!(missing.is_empty(), "error codes removed from the catalog: {missing:?}");
    assert_eq!(on_file, live, "schemas/error_codes.json is stale: run with UPDATE_CONTRACT=1");
    let documented = include_str!("../../docs/errors.md");
    for code in codes(&live) {
        assert!(documented.contains(&format!("| `{code}` |")), "docs/errors.md does not list {code}");
    }
}

#[tokio::test]
async fn the_contract_endpoint_serves_the_catalog_and_schemas() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let catalog: Value = app.get("/v1/contract", &alice).await.json().await.expect("json");
    let types = catalog["types"].as_array().expect("types");
    assert_eq!(types.len(), EventType::all().count());
    assert_eq!(catalog["errorCodes"], callstream::error::catalog()["codes"]);
    for entry in types {
        let url = entry["versions"][0]["schemaUrl"].as_str().expect("url");
        let schema = app.get(url, &alice).await;
        assert_eq!(schema.status(), StatusCode::OK, "{url}");
        let schema: Value = schema.json().await.expect("schema json");
        assert_eq!(schema["title"], entry["type"]);
        let registered = EventType::lookup(entry["type"].as_str().expect("type")).expect("registered");
        assert_eq!(entry["writers"], registered.writers().as_str());
    }
    let envelope = app.get(catalog["envelope"]["schemaUrl"].as_str().expect("url"), &alice).await;
    assert_eq!(envelope.status(), StatusCode::OK);
}

/// Every number a schema admits fits what the store and the code hold (±(2⁵³ − 1) for integers),
/// so a schema-valid payload can never fail later with a 500.
#[test]
fn every_number_in_every_schema_is_bounded() {
    fn walk(node: &Value, path: &str, file: &str) {
        match node {
            Value::Object(map) => {
                let types: Vec<&str> = match map.get("type") {
                    Some(Value::String(t)) => vec![t.as_str()],
                    Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
                    _ => Vec::new(),
                };
                if types.iter().any(|t| *t == "integer" || *t == "number") {
                    let bounded = |keys: [&str; 2]| keys.iter().any(|k| map.get(*k).is_some_and(Value::is_number));
                    assert!(bounded(["minimum", "exclusiveMinimum"]), "{file}{path} has no lower bound");
                    assert!(bounded(["maximum", "exclusiveMaximum"]), "{file}{path} has no upper bound");
                    if types.contains(&"integer") {
                        let max = map.get("maximum").and_then(Value::as_f64).unwrap_or(f64::MAX);
                        let min = map.get("minimum").and_then(Value::as_f64).unwrap_or(f64::MIN);
                        assert!(max <= 9_007_199_254_740_991.0 && min >= -9_007_199_254_740_991.0, "{file}{path}");
                    }
                }
                map.iter().for_each(|(k, v)| walk(v, &format!("{path}/{k}"), file));
            }
            Value::Array(items) => items.iter().enumerate().for_each(|(i, v)| walk(v, &format!("{path}/{i}"), file)),
            _ => {}
        }
    }
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/schemas")).expect("schemas").flatten() {
        let file = entry.file_name().into_string().expect("name");
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(entry.path()).expect("read")).expect("json");
        walk(&schema, "", &file);
    }
}
