//! LiveKit webhooks: verification over the raw body, lenient parsing, and translation into
//! canonical `call.*` events.
//!
//! LiveKit signs a webhook with a JWT (HS256, `iss` = API key) whose `sha256` claim is the base64
//! sha256 of the body. We verify the JWT with `livekit-api`'s `TokenVerifier`, hash the raw bytes we
//! received and compare in constant time — and only then parse the body, leniently, because the
//! crate's strict protobuf parse rejects enum values newer than it (LiveKit adds them over time).

use base64::Engine;
use livekit_api::access_token::TokenVerifier;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::error::{AppError, ErrorCode};

/// A verified, parsed webhook.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// LiveKit's event id, or `sha256:<hex of the body>` when a sender leaves it out.
    pub id: String,
    pub event: String,
    /// Unix seconds from the LiveKit node's clock.
    pub created_at: i64,
    pub body: Value,
}

fn signature_invalid(message: &str) -> AppError {
    AppError::new(ErrorCode::WebhookSignatureInvalid, message)
}

/// The token from the `Authorization` header: the bare JWT, or with a `Bearer ` prefix.
pub fn token_from_header(header: Option<&str>) -> Result<&str, AppError> {
    let value = header
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| signature_invalid("the Authorization header is missing"))?;
    let token = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => value,
    };
    Ok(token)
}

/// Verify the JWT and its `sha256` claim against the raw body, then parse the body leniently.
pub fn verify(verifier: &TokenVerifier, token: &str, raw_body: &[u8]) -> Result<Webhook, AppError> {
    let claims = verifier
        .verify(token)
        .map_err(|_| signature_invalid("the webhook token does not verify with the configured LiveKit key"))?;
    let claimed = base64::engine::general_purpose::STANDARD
        .decode(claims.sha256.trim())
        .map_err(|_| signature_invalid("the token's sha256 claim is not base64"))?;
    let actual: [u8; 32] = Sha256::digest(raw_body).into();
    if !constant_time_eq(&claimed, &actual) {
        return Err(signature_invalid("the body does not match the token's sha256 claim"));
    }
    parse(raw_body, &actual)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

fn parse(raw_body: &[u8], body_hash: &[u8; 32]) -> Result<Webhook, AppError> {
    let invalid = |message: &str| AppError::new(ErrorCode::WebhookInvalid, message);
    let body: Value = serde_json::from_slice(raw_body).map_err(|_| invalid("the webhook body is not JSON"))?;
    let event = body
        .get("event")
        .and_then(Value::as_str)
        .filter(|e| !e.is_empty())
        .ok_or_else(|| invalid("the webhook has no `event`"))?
        .to_owned();
    // protobuf JSON encodes int64 as a string; accept both.
    let created_at = match body.get("createdAt") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| invalid("the webhook has no numeric `createdAt`"))?;
    let id = body
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty() && id.len() <= 120)
        .map(str::to_owned)
        .unwrap_or_else(|| format!("sha256:{}", hex::encode(body_hash)));
    Ok(Webhook { id, event, created_at, body })
}

/// Whether `created_at` lies within `tolerance` seconds of `now`, either way.
pub fn is_fresh(created_at: i64, now: i64, tolerance_secs: u64) -> bool {
    created_at.abs_diff(now) <= tolerance_secs
}

/// The canonical event a webhook becomes: `(type, payload)`, and the room it is about.
#[derive(Debug, Clone, PartialEq)]
pub struct Translation {
    pub room_name: Option<String>,
    pub event_type: &'static str,
    pub payload: Value,
}

fn text(value: &Value, pointer: &str) -> Option<String> {
    value.pointer(pointer).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned)
}

/// Put only the present fields into a payload.
fn payload(fields: &[(&str, Option<String>)]) -> Value {
    let mut map = serde_json::Map::new();
    for (key, value) in fields {
        if let Some(value) = value {
            map.insert((*key).to_owned(), json!(value));
        }
    }
    Value::Object(map)
}

/// Map a track type as LiveKit sends it (`AUDIO`, `VIDEO`, `DATA` or the enum number) to ours.
/// protobuf JSON leaves out enum defaults, so a track without `type` is `AUDIO` (0).
fn track_kind(value: Option<&Value>) -> Option<String> {
    let kind = match value.unwrap_or(&Value::Null) {
        Value::Null => "audio".into(),
        Value::String(s) => s.to_ascii_lowercase(),
        Value::Number(n) => match n.as_u64()? {
            0 => "audio".into(),
            1 => "video".into(),
            2 => "data".into(),
            _ => return None,
        },
        _ => return None,
    };
    ["audio", "video", "data"].contains(&kind.as_str()).then_some(kind)
}

/// Translate every LiveKit event type we know; `None` for types we do not (kept as a receipt).
pub fn translate(webhook: &Webhook) -> Option<Translation> {
    let b = &webhook.body;
    let room = text(b, "/room/name");
    let participant = || text(b, "/participant/identity");
    let participant_sid = || text(b, "/participant/sid");
    let (room_name, event_type, payload) = match webhook.event.as_str() {
        "room_started" => {
            (room.clone(), "call.room.started", payload(&[("roomName", room), ("roomSid", text(b, "/room/sid"))]))
        }
        "room_finished" => {
            (room.clone(), "call.room.finished", payload(&[("roomName", room), ("roomSid", text(b, "/room/sid"))]))
        }
        "participant_joined" => (
            room,
            "call.participant.joined",
            payload(&[
                ("participantId", participant()),
                ("participantSid", participant_sid()),
                ("name", text(b, "/participant/name")),
                ("kind", b.pointer("/participant/kind").and_then(|k| k.as_str().map(str::to_ascii_lowercase))),
            ]),
        ),
        "participant_left" | "participant_connection_aborted" => {
            let reason = if webhook.event == "participant_connection_aborted" {
                Some("CONNECTION_ABORTED".to_owned())
            } else {
                text(b, "/participant/disconnectReason")
            };
            (
                room,
                "call.participant.left",
                payload(&[("participantId", participant()), ("participantSid", participant_sid()), ("reason", reason)]),
            )
        }
        "track_published" | "track_unpublished" => {
            let mut fields = payload(&[("trackSid", text(b, "/track/sid")), ("participantId", participant())]);
            if webhook.event == "track_published" {
                if let Some(kind) = b.pointer("/track").and_then(|_| track_kind(b.pointer("/track/type"))) {
                    fields["kind"] = json!(kind);
                }
                if let Some(source) = text(b, "/track/source") {
                    fields["source"] = json!(source);
                }
            }
            let event_type =
                if webhook.event == "track_published" { "call.track.published" } else { "call.track.unpublished" };
            (room, event_type, fields)
        }
        "egress_started" | "egress_updated" | "egress_ended" => {
            let egress_room = text(b, "/egressInfo/roomName").or(room);
            let id = ("recordingId", text(b, "/egressInfo/egressId"));
            let status = ("status", text(b, "/egressInfo/status"));
            match webhook.event.as_str() {
                "egress_started" => {
                    (egress_room.clone(), "call.recording.started", payload(&[id, ("roomName", egress_room)]))
                }
                "egress_updated" => (egress_room, "call.recording.updated", payload(&[id, status])),
                _ => {
                    let location = text(b, "/egressInfo/fileResults/0/location")
                        .or_else(|| text(b, "/egressInfo/file/location"))
                        .or_else(|| text(b, "/egressInfo/segmentResults/0/playlistLocation"));
                    let error = text(b, "/egressInfo/error");
                    (
                        egress_room,
                        "call.recording.ended",
                        payload(&[id, status, ("error", error), ("location", location)]),
                    )
                }
            }
        }
        "ingress_started" | "ingress_ended" => {
            let ingress_room = text(b, "/ingressInfo/roomName").or(room);
            let id = ("ingressId", text(b, "/ingressInfo/ingressId"));
            if webhook.event == "ingress_started" {
                let input = b.pointer("/ingressInfo/inputType").map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                });
                let fields = payload(&[
                    id,
                    ("roomName", ingress_room.clone()),
                    ("inputType", input),
                    ("participantId", text(b, "/ingressInfo/participantIdentity")),
                ]);
                (ingress_room, "call.ingress.started", fields)
            } else {
                let error = text(b, "/ingressInfo/state/error");
                (
                    ingress_room.clone(),
                    "call.ingress.ended",
                    payload(&[id, ("roomName", ingress_room), ("error", error)]),
                )
            }
        }
        _ => return None,
    };
    Some(Translation { room_name, event_type, payload })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook(event: &str, body: Value) -> Webhook {
        Webhook { id: "EV_1".into(), event: event.into(), created_at: 0, body }
    }

    #[test]
    fn every_livekit_event_type_translates() {
        let room = json!({"name": "cs_1", "sid": "RM_1"});
        let participant = json!({"identity": "alice", "sid": "PA_1", "name": "Alice"});
        let cases = [
            ("room_started", json!({"room": room}), "call.room.started"),
            ("room_finished", json!({"room": room}), "call.room.finished"),
            ("participant_joined", json!({"room": room, "participant": participant}), "call.participant.joined"),
            ("participant_left", json!({"room": room, "participant": participant}), "call.participant.left"),
            (
                "participant_connection_aborted",
                json!({"room": room, "participant": participant}),
                "call.participant.left",
            ),
            (
                "track_published",
                json!({"room": room, "participant": participant, "track": {"sid": "TR_1", "type": "AUDIO", "source": "MICROPHONE"}}),
                "call.track.published",
            ),
            (
                "track_unpublished",
                json!({"room": room, "participant": participant, "track": {"sid": "TR_1"}}),
                "call.track.unpublished",
            ),
            (
                "egress_started",
                json!({"egressInfo": {"egressId": "EG_1", "roomName": "cs_1", "status": "EGRESS_STARTING"}}),
                "call.recording.started",
            ),
            (
                "egress_updated",
                json!({"egressInfo": {"egressId": "EG_1", "roomName": "cs_1", "status": "EGRESS_ACTIVE"}}),
                "call.recording.updated",
            ),
            (
                "egress_ended",
                json!({"egressInfo": {"egressId": "EG_1", "roomName": "cs_1", "status": "EGRESS_COMPLETE", "fileResults": [{"location": "s3://b/x.mp4"}]}}),
                "call.recording.ended",
            ),
            (
                "ingress_started",
                json!({"ingressInfo": {"ingressId": "IN_1", "roomName": "cs_1", "inputType": "RTMP_INPUT"}}),
                "call.ingress.started",
            ),
            ("ingress_ended", json!({"ingressInfo": {"ingressId": "IN_1", "roomName": "cs_1"}}), "call.ingress.ended"),
        ];
        for (event, body, expected) in cases {
            let translation = translate(&webhook(event, body)).unwrap_or_else(|| panic!("{event} translates"));
            assert_eq!(translation.event_type, expected, "{event}");
            assert_eq!(translation.room_name.as_deref(), Some("cs_1"), "{event}");
            let schema = crate::domain::event_types::EventType::lookup(expected).expect("registered");
            let validator = crate::domain::event_types::validator(schema, 1).expect("validator");
            assert!(validator.is_valid(&translation.payload), "{event}: {}", translation.payload);
        }
        assert!(translate(&webhook("room_exploded", json!({}))).is_none());
    }

    #[test]
    fn unknown_enum_values_do_not_break_parsing() {
        let body = br#"{"event":"track_published","createdAt":"1795430000","id":"EV_9",
            "room":{"name":"cs_1"},"participant":{"identity":"a","kind":"FUTURE_KIND"},
            "track":{"sid":"TR_1","type":"HOLOGRAM","source":"NEW_SOURCE"}}"#;
        let parsed = parse(body, &[0; 32]).expect("lenient parse");
        assert_eq!(parsed.created_at, 1_795_430_000);
        let translation = translate(&parsed).expect("translated");
        assert!(translation.payload.get("kind").is_none(), "an unknown track type is left out, not guessed");
    }

    #[test]
    fn freshness_is_symmetric() {
        assert!(is_fresh(1000, 1300, 300));
        assert!(is_fresh(1300, 1000, 300));
        assert!(!is_fresh(1000, 1301, 300));
        assert!(!is_fresh(1301, 1000, 300));
    }
}
