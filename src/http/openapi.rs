//! The OpenAPI 3.1 description of the whole HTTP API, built from the route table the router is
//! built from (`routes::endpoints`) and from the error catalog: a route cannot be served without
//! being described, and every error answer is described by the one catalog shape.

use schemars::SchemaGenerator;
use schemars::generate::{Contract, SchemaSettings};
use serde_json::{Map, Value, json};

use super::routes::{Access, Endpoint, endpoints};
use crate::domain::error::ErrorCode;

/// Answers are described as the handlers serialize them; their named types go to
/// `components/schemas`. Requests (bodies, query strings) are described as the handlers
/// deserialize them, inlined, so one type never has two different named schemas.
struct Generators {
    answers: SchemaGenerator,
    requests: SchemaGenerator,
}

impl Generators {
    fn new() -> Generators {
        let answers = SchemaSettings::draft2020_12().with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.contract = Contract::Serialize;
            s.meta_schema = None;
        });
        let requests = SchemaSettings::draft2020_12().with(|s| {
            s.inline_subschemas = true;
            s.contract = Contract::Deserialize;
            s.meta_schema = None;
        });
        Generators { answers: answers.into_generator(), requests: requests.into_generator() }
    }
}

/// The document, for a server with or without the test clock route.
pub fn document(test_clock: bool) -> Value {
    let mut generators = Generators::new();
    let mut paths = Map::new();
    for endpoint in endpoints(test_clock) {
        let item = paths.entry(endpoint.path).or_insert_with(|| json!({}));
        item[endpoint.method.as_str().to_ascii_lowercase()] = operation(&endpoint, &mut generators);
    }
    let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    let mut schemas = generators.answers.take_definitions(true);
    schemas.remove("Error");
    let mut document = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "callstream",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Event-sourced realtime call backend. The contract is SPEC.md; events are described by \
                the JSON Schemas served under /v1/contract/schemas; every error answer has the catalog shape \
                `Error` (docs/errors.md)."
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                           "description": "HS256 JWT with iss, aud, exp, sub, tenant and roles (SPEC §3)."},
                "livekit": {"type": "apiKey", "in": "header", "name": "Authorization",
                            "description": "LiveKit's webhook JWT: signed with LIVEKIT_API_SECRET, its sha256 claim is the raw body's hash."}
            },
            "schemas": schemas,
        }
    });
    document["components"]["schemas"]["Error"] = json!({
        "type": "object",
        "required": ["error"],
        "additionalProperties": false,
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "requestId"],
                "additionalProperties": false,
                "properties": {
                    "code": {"type": "string", "enum": codes},
                    "message": {"type": "string", "minLength": 1},
                    "requestId": {"type": "string"},
                    "details": {}
                }
            }
        }
    });
    document
}

fn operation_id(endpoint: &Endpoint) -> String {
    let mut id = endpoint.method.as_str().to_ascii_lowercase();
    for part in endpoint.path.split(['/', '-', '.']).filter(|p| !p.is_empty()) {
        let part = part.trim_start_matches('{').trim_end_matches('}');
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            id.push(first.to_ascii_uppercase());
            id.extend(chars);
        }
    }
    id
}

/// Query parameters from the schema of the struct the handler deserializes the query into: one
/// parameter per property, required when the struct requires it. Absent is how a query string
/// says "none", so `null` is not offered as a value.
fn query_parameters(schema: &Value) -> Vec<Value> {
    let required: Vec<&str> =
        schema["required"].as_array().map(|r| r.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    let Some(properties) = schema["properties"].as_object() else { return Vec::new() };
    properties
        .iter()
        .map(|(name, property)| {
            let mut property = property.clone();
            if let Some(types) = property.get_mut("type").and_then(Value::as_array_mut) {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    property["type"] = types[0].clone();
                }
            }
            json!({"name": name, "in": "query", "required": required.contains(&name.as_str()), "schema": property})
        })
        .collect()
}

fn operation(endpoint: &Endpoint, generators: &mut Generators) -> Value {
    let doc = &endpoint.doc;
    let mut parameters: Vec<Value> = endpoint
        .path
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    if let Some(query) = doc.query {
        parameters.extend(query_parameters(&query(&mut generators.requests).to_value()));
    }
    let answer = match doc.response {
        Some(response) => response(&mut generators.answers).to_value(),
        None => json!({"type": "object"}),
    };
    let success = match (endpoint.path, doc.success) {
        ("/metrics", _) => {
            json!({"description": "Prometheus text exposition", "content": {"text/plain": {"schema": {"type": "string"}}}})
        }
        ("/console", _) => {
            json!({"description": "The console's page", "content": {"text/html": {"schema": {"type": "string"}}}})
        }
        ("/console/{file}", _) => json!({"description": "A script or style sheet of the console",
            "content": {"text/javascript": {"schema": {"type": "string"}}, "text/css": {"schema": {"type": "string"}}}}),
        ("/v1/contract/schemas/{file}", _) => json!({"description": "A JSON Schema (2020-12)",
            "content": {"application/schema+json": {"schema": {"type": "object"}}}}),
        (_, 101) => json!({"description": "Switching protocols: the WebSocket (docs/realtime.md, schemas/ws.v1.json)"}),
        _ => json!({"description": doc.summary, "content": {"application/json": {"schema": answer}}}),
    };
    let mut responses = Map::new();
    responses.insert(doc.success.to_string(), success);
    if doc.success != 101
        && !matches!(endpoint.path, "/metrics" | "/v1/contract/schemas/{file}" | "/console" | "/console/{file}")
    {
        // The same answer under another success status: a replayed Idempotency-Key (200 after
        // 201), an already-reconciled window (200), a webhook for an unmapped room (202).
        responses.insert(
            "2XX".into(),
            json!({"description": "The same answer", "content": {"application/json": {"schema": answer}}}),
        );
    }
    if endpoint.path == "/health/ready" {
        responses.insert(
            "503".into(),
            json!({"description": "Not ready: `failed` names the checks that failed",
                   "content": {"application/json": {"schema": answer}}}),
        );
    }
    responses.insert(
        "default".into(),
        json!({"description": "An error in the catalog shape (docs/errors.md)",
               "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}),
    );
    let mut operation = json!({
        "operationId": operation_id(endpoint),
        "summary": doc.summary,
        "tags": [doc.tag],
        "parameters": parameters,
        "responses": responses,
    });
    match doc.access {
        Access::Public => operation["security"] = json!([]),
        Access::LiveKitSignature => operation["security"] = json!([{"livekit": []}]),
        Access::Bearer => operation["security"] = json!([{"bearer": []}]),
        Access::Operator => {
            operation["security"] = json!([{"bearer": []}]);
            operation["description"] = json!("Operators only (role `operator`); other roles get 403 FORBIDDEN_ROLE.");
        }
    }
    if let Some((body, example)) = doc.body {
        let example: Value = serde_json::from_str(example).unwrap_or(Value::Null);
        operation["requestBody"] = json!({
            "required": true,
            "content": {"application/json": {"schema": body(&mut generators.requests).to_value(), "example": example}}
        });
    }
    operation
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_routed_operation_is_described_once() {
        for test_clock in [false, true] {
            let document = document(test_clock);
            let routes = super::super::routes::route_list(test_clock);
            let described: usize = document["paths"]
                .as_object()
                .expect("paths")
                .values()
                .map(|item| item.as_object().expect("item").len())
                .sum();
            assert_eq!(described, routes.len(), "one operation per route");
            for (method, path) in routes {
                let operation = &document["paths"][path][method.as_str().to_ascii_lowercase()];
                assert!(operation["operationId"].is_string(), "{method} {path} is not described");
                assert!(operation["responses"]["default"].is_object(), "{method} {path} describes its errors");
            }
        }
        assert!(document(false)["paths"]["/v1/operator/clock"].is_null(), "no test clock route by default");
    }

    #[test]
    fn operation_ids_are_unique() {
        let document = document(true);
        let mut ids: Vec<&str> = document["paths"]
            .as_object()
            .expect("paths")
            .values()
            .flat_map(|item| item.as_object().expect("item").values())
            .map(|op| op["operationId"].as_str().expect("id"))
            .collect();
        let total = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), total);
    }
}
