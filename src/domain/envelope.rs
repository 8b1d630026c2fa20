//! The canonical envelope (SPEC §2): parsing, legacy normalization and validation of the ingest form.
//!
//! Checks run in a fixed order so the same input always yields the same code: shape → unsupported
//! keys → legacy conflicts → missing keys → field formats → type → version → payload schema.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::canonical::to_canonical_string;
use super::error::{ErrorCode, Rejection};
use super::event_types::{EventType, validator};
use super::ids::{EventId, SessionId};

const REQUIRED: [&str; 6] = ["eventId", "sessionId", "ts", "type", "payload", "schemaVersion"];
/// Legacy key → canonical key.
const LEGACY: [(&str, &str); 2] = [("timestamp", "ts"), ("version", "schemaVersion")];
/// Assigned by the server; a client that sends them is told so by name.
const SERVER_ASSIGNED: [&str; 4] = ["seq", "position", "recordedAt", "actor"];

/// An envelope that passed every check, normalized to the canonical keys.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestEvent {
    pub event_id: EventId,
    pub session_id: SessionId,
    pub ts: String,
    pub event_type: EventType,
    pub schema_version: u32,
    /// The payload as canonical JSON text (sorted keys, no whitespace).
    pub payload: String,
    /// sha256 over the normalized content: equal for an idempotent repeat, different for a conflict.
    pub content_hash: [u8; 32],
}

fn reject(code: ErrorCode, message: impl Into<String>) -> Rejection {
    Rejection::new(code, message)
}

/// Validate one ingest envelope.
pub fn parse_envelope(raw: Value) -> Result<IngestEvent, Rejection> {
    let Value::Object(mut fields) = raw else {
        return Err(reject(ErrorCode::EnvelopeNotObject, "the event envelope must be a JSON object"));
    };
    reject_unsupported_keys(&fields)?;
    normalize_legacy_keys(&mut fields)?;
    if let Some(missing) = REQUIRED.iter().find(|key| !fields.contains_key(**key)) {
        return Err(reject(ErrorCode::EnvelopeMissingKey, format!("the envelope key `{missing}` is required"))
            .with_details(serde_json::json!({ "key": missing })));
    }

    let event_id = string_field(&fields, "eventId")
        .and_then(|raw| EventId::parse(raw).map_err(|why| invalid_field("eventId", &why)))?;
    let session_id = string_field(&fields, "sessionId")
        .and_then(|raw| SessionId::parse(raw).map_err(|why| invalid_field("sessionId", &why)))?;
    let ts = string_field(&fields, "ts")?;
    chrono::DateTime::parse_from_rfc3339(ts).map_err(|_| {
        invalid_field("ts", "must be an RFC 3339 timestamp with an offset, e.g. 2026-11-23T10:00:00.123Z")
    })?;
    let ts = ts.to_owned();
    let schema_version = fields
        .get("schemaVersion")
        .and_then(Value::as_u64)
        .filter(|v| *v >= 1)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| invalid_field("schemaVersion", "must be a positive integer"))?;
    let type_name = string_field(&fields, "type")?;
    let event_type = EventType::lookup(type_name).ok_or_else(|| {
        reject(ErrorCode::EventTypeUnknown, format!("the event type `{type_name}` is not registered"))
    })?;
    if !event_type.supports(schema_version) {
        let supported: Vec<String> = event_type.versions().map(|v| v.to_string()).collect();
        return Err(reject(
            ErrorCode::SchemaVersionUnsupported,
            format!(
                "`{}` does not support schemaVersion {schema_version} (supported: {})",
                event_type.as_str(),
                supported.join(", ")
            ),
        ));
    }
    let payload = fields.remove("payload").unwrap_or(Value::Null);
    if !payload.is_object() {
        return Err(invalid_field("payload", "must be a JSON object"));
    }
    validate_payload(event_type, schema_version, &payload)?;

    let payload = to_canonical_string(&payload);
    let content_hash = content_hash(&session_id, event_type, schema_version, &ts, &payload);
    Ok(IngestEvent { event_id, session_id, ts, event_type, schema_version, payload, content_hash })
}

fn reject_unsupported_keys(fields: &Map<String, Value>) -> Result<(), Rejection> {
    for key in fields.keys() {
        let known = REQUIRED.contains(&key.as_str()) || LEGACY.iter().any(|(legacy, _)| legacy == key);
        if known {
            continue;
        }
        let message = if SERVER_ASSIGNED.contains(&key.as_str()) {
            format!("the envelope key `{key}` is assigned by the server and must not be sent")
        } else {
            format!("the envelope key `{key}` is not supported")
        };
        return Err(reject(ErrorCode::EnvelopeUnsupportedKey, message).with_details(serde_json::json!({ "key": key })));
    }
    Ok(())
}

fn normalize_legacy_keys(fields: &mut Map<String, Value>) -> Result<(), Rejection> {
    for (legacy, canonical) in LEGACY {
        let Some(legacy_value) = fields.remove(legacy) else {
            continue;
        };
        match fields.get(canonical) {
            Some(value) if *value != legacy_value => {
                return Err(reject(
                    ErrorCode::EnvelopeConflictingKeys,
                    format!("`{legacy}` (legacy) and `{canonical}` are both present with different values"),
                )
                .with_details(serde_json::json!({ "keys": [legacy, canonical] })));
            }
            Some(_) => {}
            None => {
                fields.insert(canonical.to_owned(), legacy_value);
            }
        }
    }
    Ok(())
}

fn string_field<'a>(fields: &'a Map<String, Value>, key: &str) -> Result<&'a str, Rejection> {
    fields.get(key).and_then(Value::as_str).ok_or_else(|| invalid_field(key, "must be a string"))
}

fn invalid_field(key: &str, why: &str) -> Rejection {
    reject(ErrorCode::EnvelopeInvalidField, format!("`{key}` {why}")).with_details(serde_json::json!({ "key": key }))
}

fn validate_payload(event_type: EventType, version: u32, payload: &Value) -> Result<(), Rejection> {
    let Some(validator) = validator(event_type, version) else {
        return Err(reject(ErrorCode::Internal, format!("no validator for {} v{version}", event_type.as_str())));
    };
    match validator.iter_errors(payload).next() {
        None => Ok(()),
        Some(error) => {
            let pointer = error.instance_path().to_string();
            let shown = if pointer.is_empty() { "/".to_owned() } else { pointer.clone() };
            Err(reject(
                ErrorCode::PayloadInvalid,
                format!("payload at `{shown}` does not match {}: {error}", event_type.schema_path(version)),
            )
            .with_details(serde_json::json!({ "pointer": pointer })))
        }
    }
}

/// An event the server itself emits (lifecycle, translations). It passes the same schema check as
/// ingest, so the log never holds an event that its contract would reject.
pub fn server_event(
    session_id: &SessionId,
    event_type: EventType,
    payload: Value,
    ts: &str,
) -> Result<IngestEvent, Rejection> {
    let version = event_type.versions().max().unwrap_or(1);
    validate_payload(event_type, version, &payload)?;
    let payload = to_canonical_string(&payload);
    let event_id = EventId::parse(&format!("evt_{}", uuid::Uuid::now_v7().simple()))
        .map_err(|why| reject(ErrorCode::Internal, why))?;
    let content_hash = content_hash(session_id, event_type, version, ts, &payload);
    Ok(IngestEvent {
        event_id,
        session_id: session_id.clone(),
        ts: ts.to_owned(),
        event_type,
        schema_version: version,
        payload,
        content_hash,
    })
}

/// Length-prefixed so no two different contents can produce the same bytes.
fn content_hash(session: &SessionId, event_type: EventType, version: u32, ts: &str, payload: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in [session.as_str(), event_type.as_str(), &version.to_string(), ts, payload] {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn valid() -> Value {
        json!({"eventId": "e1", "sessionId": "cs_1", "ts": "2026-11-23T10:00:00.123Z",
               "type": "transcript.segment.final", "payload": {"segmentId": "s", "revision": 1, "text": "hi"},
               "schemaVersion": 1})
    }

    fn code(value: Value) -> ErrorCode {
        parse_envelope(value).expect_err("must reject").code
    }

    #[test]
    fn accepts_the_canonical_form() {
        let event = parse_envelope(valid()).expect("valid");
        assert_eq!(event.payload, r#"{"revision":1,"segmentId":"s","text":"hi"}"#);
    }

    #[test]
    fn legacy_keys_normalize_to_the_same_content() {
        let mut legacy = valid();
        let map = legacy.as_object_mut().expect("object");
        let ts = map.remove("ts").expect("ts");
        let version = map.remove("schemaVersion").expect("version");
        map.insert("timestamp".into(), ts);
        map.insert("version".into(), version);
        assert_eq!(
            parse_envelope(legacy).expect("legacy").content_hash,
            parse_envelope(valid()).expect("canonical").content_hash
        );
    }

    #[test]
    fn rejections_have_stable_codes() {
        let mut v = valid();
        v["timestamp"] = json!("2026-11-23T11:00:00Z");
        assert_eq!(code(v), ErrorCode::EnvelopeConflictingKeys);
        let mut v = valid();
        v["seq"] = json!(3);
        assert_eq!(code(v), ErrorCode::EnvelopeUnsupportedKey);
        let mut v = valid();
        v["payload"]["revision"] = json!("one");
        let err = parse_envelope(v).expect_err("bad payload");
        assert_eq!(err.code, ErrorCode::PayloadInvalid);
        assert!(err.to_string().contains("/revision"), "{err}");
        let mut v = valid();
        v["schemaVersion"] = json!(7);
        assert_eq!(code(v), ErrorCode::SchemaVersionUnsupported);
        assert_eq!(code(json!("x")), ErrorCode::EnvelopeNotObject);
    }

    #[test]
    fn payload_key_order_does_not_change_content() {
        let mut a = valid();
        a["payload"] = serde_json::from_str(r#"{"text":"hi","revision":1,"segmentId":"s"}"#).expect("json");
        assert_eq!(parse_envelope(a).expect("a").content_hash, parse_envelope(valid()).expect("b").content_hash);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn any_json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
                ".{0,12}".prop_map(Value::from),
            ];
            leaf.prop_recursive(3, 24, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                    prop::collection::btree_map("[a-zA-Z]{1,10}", inner, 0..6)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        const KEYS: [&str; 13] = [
            "eventId",
            "sessionId",
            "ts",
            "type",
            "payload",
            "schemaVersion",
            "timestamp",
            "version",
            "seq",
            "position",
            "recordedAt",
            "actor",
            "extra",
        ];

        /// A valid envelope with random keys removed, added or replaced by random JSON.
        fn mutated_envelope() -> impl Strategy<Value = Value> {
            (prop::collection::vec((0..KEYS.len(), any_json(), any::<bool>()), 0..4)).prop_map(|edits| {
                let mut envelope = valid();
                for (key, value, remove) in edits {
                    let map = envelope.as_object_mut().expect("object");
                    if remove {
                        map.remove(KEYS[key]);
                    } else {
                        map.insert(KEYS[key].to_owned(), value);
                    }
                }
                envelope
            })
        }

        fn check(value: Value) {
            match parse_envelope(value) {
                Ok(event) => assert!(event.schema_version >= 1),
                Err(rejection) => {
                    assert_ne!(rejection.code, ErrorCode::Internal, "{rejection}");
                    assert_eq!(rejection.code.category(), "envelope", "{rejection}");
                    assert!(!rejection.message.is_empty());
                }
            }
        }

        proptest! {
            #[test]
            fn arbitrary_json_never_panics_and_gets_an_envelope_code(value in any_json()) {
                check(value);
            }

            #[test]
            fn mutated_envelopes_never_panic_and_get_an_envelope_code(value in mutated_envelope()) {
                check(value);
            }

            #[test]
            fn validation_is_deterministic(value in mutated_envelope()) {
                let first = parse_envelope(value.clone()).map(|e| e.content_hash).map_err(|r| r.code);
                let second = parse_envelope(value).map(|e| e.content_hash).map_err(|r| r.code);
                prop_assert_eq!(first, second);
            }
        }
    }
}
