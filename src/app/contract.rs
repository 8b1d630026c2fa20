//! The machine-readable contract: registered types, their schemas, the envelope and error codes.

use serde_json::{Value, json};

use crate::domain::event_types::{EventType, SCHEMAS};

pub const ENVELOPE_SCHEMA: &str = include_str!("../../schemas/envelope.v1.json");
pub const SCHEMA_BASE: &str = "/v1/contract/schemas";

pub fn catalog() -> Value {
    let types: Vec<Value> = EventType::all()
        .map(|t| {
            let versions: Vec<Value> = t
                .versions()
                .map(|v| json!({ "schemaVersion": v, "schemaUrl": format!("{SCHEMA_BASE}/{}.v{v}.json", t.as_str()) }))
                .collect();
            json!({ "type": t.as_str(), "family": t.family(), "writers": t.writers().as_str(), "versions": versions })
        })
        .collect();
    json!({
        "version": 1,
        "envelope": { "schemaUrl": format!("{SCHEMA_BASE}/envelope.v1.json") },
        "types": types,
        "errorCodes": crate::error::catalog()["codes"],
    })
}

/// A schema file by name (`<type>.v<n>.json` or `envelope.v1.json`).
pub fn schema(file: &str) -> Option<&'static str> {
    if file == "envelope.v1.json" {
        return Some(ENVELOPE_SCHEMA);
    }
    SCHEMAS.iter().find(|(name, version, _)| format!("{name}.v{version}.json") == file).map(|(_, _, source)| *source)
}
