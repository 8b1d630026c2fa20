//! The registry of event types, their supported schema versions and JSON Schemas.
//!
//! A type is registered here and nowhere else. Its schema file `schemas/<type>.v<n>.json` is
//! compiled in, so a type without a schema does not build; `tests/api/contract.rs` fails when a
//! registered type has no fixtures.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value;

macro_rules! registry {
    ($($name:literal => [$($version:literal),+],)*) => {
        /// `(type, schemaVersion, schema source)` for every registered type and version.
        pub const SCHEMAS: &[(&str, u32, &str)] = &[
            $($(($name, $version, include_str!(concat!("../../schemas/", $name, ".v", $version, ".json"))),)+)*
        ];
    };
}

registry! {
    "call.session.created" => [1],
    "call.session.state_changed" => [1],
    "call.session.provider_linked" => [1],
    "call.session.failed" => [1],
    "call.participant.joined" => [1],
    "call.participant.left" => [1],
    "call.track.published" => [1],
    "call.track.unpublished" => [1],
    "call.room.started" => [1],
    "call.room.finished" => [1],
    "call.recording.started" => [1],
    "call.recording.updated" => [1],
    "call.recording.ended" => [1],
    "call.ingress.started" => [1],
    "call.ingress.ended" => [1],
    "call.connection.resumed" => [1],
    "transcript.segment.partial" => [1],
    "transcript.segment.final" => [1],
    "transcript.segment.edited" => [1],
    "orchestration.action.requested" => [1],
    "orchestration.action.decided" => [1],
    "orchestration.action.executed" => [1],
    "orchestration.action.failed" => [1],
    "orchestration.note.created" => [1],
    "safety.confirmation.issued" => [1],
    "safety.approved" => [1],
    "safety.blocked" => [1],
    "billing.usage.recorded" => [1],
    "billing.adjustment.created" => [1],
    "billing.charge.confirmed" => [1],
    "billing.publish.dead_lettered" => [1],
    "billing.reconciliation.completed" => [1],
    "billing.reconciliation.mismatch_detected" => [1],
    "billing.alert.delivered" => [1],
    "billing.alert.dead_lettered" => [1],
}

/// A registered event type. Holds a `'static` name so it is cheap to copy around.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventType(&'static str);

impl EventType {
    pub fn lookup(name: &str) -> Option<EventType> {
        SCHEMAS.iter().find(|(n, _, _)| *n == name).map(|(n, _, _)| EventType(n))
    }

    pub fn as_str(self) -> &'static str {
        self.0
    }

    pub fn family(self) -> &'static str {
        self.0.split('.').next().unwrap_or(self.0)
    }

    pub fn versions(self) -> impl Iterator<Item = u32> {
        SCHEMAS.iter().filter(move |(n, _, _)| *n == self.0).map(|(_, v, _)| *v)
    }

    pub fn supports(self, version: u32) -> bool {
        self.versions().any(|v| v == version)
    }

    /// Every registered type, in registry order.
    pub fn all() -> impl Iterator<Item = EventType> {
        let mut seen: Vec<&'static str> = Vec::new();
        SCHEMAS.iter().filter_map(move |(n, _, _)| {
            if seen.contains(n) {
                None
            } else {
                seen.push(n);
                Some(EventType(n))
            }
        })
    }

    pub fn schema_path(self, version: u32) -> String {
        format!("schemas/{}.v{}.json", self.0, version)
    }
}

/// Compiled payload validators, built once on first use.
pub fn validator(event_type: EventType, version: u32) -> Option<&'static jsonschema::Validator> {
    static VALIDATORS: OnceLock<HashMap<(&'static str, u32), jsonschema::Validator>> = OnceLock::new();
    VALIDATORS
        .get_or_init(|| {
            SCHEMAS
                .iter()
                .map(|(name, version, source)| {
                    // The schemas are compiled into the binary and checked by tests; a broken one is a
                    // build defect, not a runtime condition.
                    let schema: Value = serde_json::from_str(source)
                        .unwrap_or_else(|e| panic!("schemas/{name}.v{version}.json is not JSON: {e}"));
                    let validator = jsonschema::draft202012::new(&schema)
                        .unwrap_or_else(|e| panic!("schemas/{name}.v{version}.json is not a valid schema: {e}"));
                    ((*name, *version), validator)
                })
                .collect()
        })
        .get(&(event_type.0, version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_compiles() {
        for event_type in EventType::all() {
            for version in event_type.versions() {
                assert!(validator(event_type, version).is_some(), "{}", event_type.as_str());
            }
        }
    }

    #[test]
    fn lookup_rejects_unregistered_names() {
        assert!(EventType::lookup("call.session.created").is_some());
        assert!(EventType::lookup("call.session").is_none());
    }
}
