//! The registry of event types, their supported schema versions and JSON Schemas.
//!
//! A type is registered here and nowhere else, with the versions it supports and who may write it.
//! Its schema file `schemas/<type>.v<n>.json` is compiled in, so a type without a schema does not
//! build; `tests/api/contract.rs` fails when a registered type has no fixtures, or when a schema's
//! `x-callstream-writers` disagrees with the registry.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value;

/// Who may append events of a type (SPEC §2 "writers").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Writers {
    /// The session's owner or a `service` (ingest, WebSocket publish), and callstream itself.
    Client,
    /// A `service` (an agent or a media bridge) and callstream itself (e.g. the LiveKit adapter).
    Service,
    /// Callstream only, from its own commands, adapters and workers: facts clients must not forge.
    Server,
}

impl Writers {
    pub fn as_str(self) -> &'static str {
        match self {
            Writers::Client => "client",
            Writers::Service => "service",
            Writers::Server => "server",
        }
    }

    /// Whether a caller with this class of write access may append such an event.
    pub fn admit(self, caller: Writers) -> bool {
        match self {
            Writers::Client => true,
            Writers::Service => matches!(caller, Writers::Service | Writers::Server),
            Writers::Server => caller == Writers::Server,
        }
    }
}

macro_rules! registry {
    ($($name:literal => [$($version:literal),+] $writers:ident,)*) => {
        /// `(type, schemaVersion, schema source)` for every registered type and version.
        pub const SCHEMAS: &[(&str, u32, &str)] = &[
            $($(($name, $version, include_str!(concat!("../../schemas/", $name, ".v", $version, ".json"))),)+)*
        ];

        /// `(type, writers)` for every registered type.
        const WRITERS: &[(&str, Writers)] = &[$(($name, Writers::$writers),)*];
    };
}

// LiveKit-derived facts (participants, tracks, rooms, recordings, ingress) are `Service`: the
// webhook adapter writes them, and so may a service bridging another media provider; a session's
// owner may not claim who joined or what was recorded. docs/security.md explains each class.
registry! {
    "call.session.created" => [1] Server,
    "call.session.state_changed" => [1] Server,
    "call.session.provider_linked" => [1] Server,
    "call.session.failed" => [1] Server,
    "call.participant.joined" => [1] Service,
    "call.participant.left" => [1] Service,
    "call.track.published" => [1] Service,
    "call.track.unpublished" => [1] Service,
    "call.room.started" => [1] Service,
    "call.room.finished" => [1] Service,
    "call.recording.started" => [1] Service,
    "call.recording.updated" => [1] Service,
    "call.recording.ended" => [1] Service,
    "call.ingress.started" => [1] Service,
    "call.ingress.ended" => [1] Service,
    "call.connection.resumed" => [1] Server,
    "transcript.segment.partial" => [1] Client,
    "transcript.segment.final" => [1] Client,
    "transcript.segment.edited" => [1] Client,
    "orchestration.action.requested" => [1] Server,
    "orchestration.action.decided" => [1] Server,
    "orchestration.action.started" => [1] Server,
    "orchestration.action.executed" => [1] Server,
    "orchestration.action.failed" => [1] Server,
    "orchestration.note.created" => [1] Server,
    "safety.confirmation.issued" => [1] Server,
    "safety.approved" => [1] Server,
    "safety.blocked" => [1] Server,
    "billing.usage.recorded" => [1] Server,
    "billing.adjustment.created" => [1] Server,
    "billing.charge.confirmed" => [1] Server,
    "billing.publish.dead_lettered" => [1] Server,
    "billing.publish.replayed" => [1] Server,
    "billing.reconciliation.completed" => [1] Server,
    "billing.reconciliation.mismatch_detected" => [1] Server,
    "billing.alert.delivered" => [1] Server,
    "billing.alert.dead_lettered" => [1] Server,
    "insights.computed" => [1] Server,
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

    pub fn writers(self) -> Writers {
        // Every name in SCHEMAS is in WRITERS: both come from one macro invocation.
        WRITERS.iter().find(|(n, _)| *n == self.0).map_or(Writers::Server, |(_, w)| *w)
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

    /// The payload fields its schemas mark `"x-callstream-personal": true`: sealed at rest with the
    /// tenant's data key, so erasing the tenant makes them unreadable (docs/governance.md).
    pub fn personal_fields(self) -> &'static [String] {
        static PERSONAL: OnceLock<HashMap<&'static str, Vec<String>>> = OnceLock::new();
        PERSONAL
            .get_or_init(|| {
                let mut fields: HashMap<&'static str, Vec<String>> = HashMap::new();
                for (name, version, source) in SCHEMAS {
                    let schema: Value = serde_json::from_str(source)
                        .unwrap_or_else(|e| panic!("schemas/{name}.v{version}.json is not JSON: {e}"));
                    let entry = fields.entry(name).or_default();
                    for (field, definition) in schema["properties"].as_object().into_iter().flatten() {
                        if definition["x-callstream-personal"] == Value::Bool(true) && !entry.contains(field) {
                            entry.push(field.clone());
                        }
                    }
                }
                fields.values_mut().for_each(|names| names.sort());
                fields
            })
            .get(self.0)
            .map_or(&[], Vec::as_slice)
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
    fn server_facts_are_server_only() {
        for event_type in EventType::all() {
            let server_only = ["safety.", "orchestration.", "billing.", "call.session.", "insights."]
                .iter()
                .any(|family| event_type.as_str().starts_with(family))
                || event_type.as_str() == "call.connection.resumed";
            if server_only {
                assert_eq!(event_type.writers(), Writers::Server, "{}", event_type.as_str());
            }
            assert!(event_type.writers().admit(Writers::Server), "callstream writes every type");
        }
        assert!(!Writers::Server.admit(Writers::Client));
        assert!(!Writers::Server.admit(Writers::Service));
        assert!(!Writers::Service.admit(Writers::Client));
        assert!(Writers::Service.admit(Writers::Service));
        assert!(Writers::Client.admit(Writers::Client));
    }

    #[test]
    fn personal_fields_come_from_the_schemas() {
        let final_segment = EventType::lookup("transcript.segment.final").expect("registered");
        assert_eq!(final_segment.personal_fields(), ["speaker", "text"]);
        let usage = EventType::lookup("billing.usage.recorded").expect("registered");
        assert!(usage.personal_fields().is_empty());
    }

    #[test]
    fn lookup_rejects_unregistered_names() {
        assert!(EventType::lookup("call.session.created").is_some());
        assert!(EventType::lookup("call.session").is_none());
    }
}
