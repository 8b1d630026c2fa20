//! The machine-readable contract: registered types, their schemas, the envelope and error codes.

use serde::Serialize;
use serde_json::Value;

use crate::domain::event_types::{EventType, SCHEMAS};

pub const ENVELOPE_SCHEMA: &str = include_str!("../../schemas/envelope.v1.json");
pub const SCHEMA_BASE: &str = "/v1/contract/schemas";

/// `GET /v1/contract`: the envelope, every registered type with its writers and schema versions,
/// and the error catalog.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Contract {
    pub version: u32,
    pub envelope: SchemaRef,
    pub types: Vec<TypeEntry>,
    pub error_codes: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchemaRef {
    pub schema_url: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct TypeEntry {
    #[serde(rename = "type")]
    pub event_type: &'static str,
    pub family: &'static str,
    pub writers: &'static str,
    pub versions: Vec<TypeVersion>,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TypeVersion {
    pub schema_version: u32,
    pub schema_url: String,
}

pub fn catalog() -> Contract {
    let types = EventType::all()
        .map(|t| TypeEntry {
            event_type: t.as_str(),
            family: t.family(),
            writers: t.writers().as_str(),
            versions: t
                .versions()
                .map(|v| TypeVersion {
                    schema_version: v,
                    schema_url: format!("{SCHEMA_BASE}/{}.v{v}.json", t.as_str()),
                })
                .collect(),
        })
        .collect();
    Contract {
        version: 1,
        envelope: SchemaRef { schema_url: format!("{SCHEMA_BASE}/envelope.v1.json") },
        types,
        error_codes: crate::error::catalog()["codes"].clone(),
    }
}

/// A schema file by name (`<type>.v<n>.json` or `envelope.v1.json`).
pub fn schema(file: &str) -> Option<&'static str> {
    if file == "envelope.v1.json" {
        return Some(ENVELOPE_SCHEMA);
    }
    SCHEMAS.iter().find(|(name, version, _)| format!("{name}.v{version}.json") == file).map(|(_, _, source)| *source)
}
