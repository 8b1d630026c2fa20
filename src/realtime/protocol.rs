//! WebSocket frames (JSON text, tagged by `op`), documented in `schemas/ws.v1.json`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::error::{ErrorCode, Rejection};

/// Client → server.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase", deny_unknown_fields)]
pub enum ClientFrame {
    /// Checkpoint: everything up to `seq` is processed. Monotonic; persisted.
    Ack { seq: u64 },
    /// Append one event, validated exactly like HTTP ingest; answered `published` after commit.
    Publish {
        event: Value,
        #[serde(default, rename = "ref")]
        reference: Option<String>,
    },
    /// A fresh bearer token before the current one expires.
    Refresh { token: String },
    /// A struct variant, so that unknown keys are refused here too (`deny_unknown_fields` does
    /// not reach unit variants of an internally tagged enum).
    Ping {},
}

/// Server → client.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum ServerFrame {
    #[serde(rename_all = "camelCase")]
    Welcome {
        connection_id: String,
        epoch: String,
        head_seq: u64,
        replay_from: u64,
        resume_token: String,
        resume_expires_at: String,
        reconnect_window_secs: u64,
    },
    Event {
        event: Value,
    },
    #[serde(rename_all = "camelCase")]
    Published {
        event_id: String,
        seq: u64,
        duplicate: bool,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    },
    Error {
        code: &'static str,
        message: String,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    },
    Pong,
}

impl ServerFrame {
    pub fn to_text(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|_| r#"{"op":"error","code":"INTERNAL","message":"frame"}"#.to_owned())
    }
}

/// Why the server closes a socket: each has a close code, a catalog error code and whether the
/// client should resume (with its resume token) or start over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    Superseded,
    IdleTimeout,
    SlowConsumer,
    AuthExpired,
    /// An operator suspended the caller's tenant.
    TenantSuspended,
    SessionTerminated,
    /// The server is shutting down (SIGTERM): resume, on this or another instance.
    Restarting,
    Internal,
}

impl Close {
    pub const ALL: [Close; 8] = [
        Close::Superseded,
        Close::IdleTimeout,
        Close::SlowConsumer,
        Close::AuthExpired,
        Close::TenantSuspended,
        Close::SessionTerminated,
        Close::Restarting,
        Close::Internal,
    ];

    pub fn code(self) -> u16 {
        match self {
            Close::Superseded => 4001,
            Close::IdleTimeout => 4002,
            Close::SlowConsumer => 4008,
            Close::AuthExpired => 4401,
            Close::TenantSuspended => 4403,
            Close::SessionTerminated => 4410,
            Close::Restarting => 1012,
            Close::Internal => 1011,
        }
    }

    pub fn error_code(self) -> ErrorCode {
        match self {
            Close::Superseded => ErrorCode::WsSuperseded,
            Close::IdleTimeout => ErrorCode::WsIdleTimeout,
            Close::SlowConsumer => ErrorCode::WsSlowConsumer,
            Close::AuthExpired => ErrorCode::AuthExpired,
            Close::TenantSuspended => ErrorCode::TenantSuspended,
            Close::SessionTerminated => ErrorCode::SessionTerminated,
            Close::Restarting => ErrorCode::ServiceUnavailable,
            Close::Internal => ErrorCode::Internal,
        }
    }

    /// Whether resuming with the connection's resume token can work.
    pub fn resumable(self) -> bool {
        !matches!(self, Close::Superseded | Close::TenantSuspended | Close::SessionTerminated)
    }

    fn reason(self) -> &'static str {
        match self {
            Close::Superseded => "superseded by a newer connection",
            Close::IdleTimeout => "no traffic from the client",
            Close::SlowConsumer => "slow consumer",
            Close::AuthExpired => "token expired",
            Close::TenantSuspended => "tenant suspended",
            Close::SessionTerminated => "session terminated",
            Close::Restarting => "server restarting",
            Close::Internal => "internal",
        }
    }

    /// The close frame's reason: JSON (at most 123 bytes) with the catalog code and, when
    /// resumable, a jittered retry hint so clients do not reconnect in a stampede.
    pub fn description(self, retry_after_ms: u64) -> String {
        let (code, reason) = (self.error_code().as_str(), self.reason());
        if self.resumable() {
            format!(r#"{{"code":"{code}","reason":"{reason}","resumable":true,"retryAfterMs":{retry_after_ms}}}"#)
        } else {
            format!(r#"{{"code":"{code}","reason":"{reason}","resumable":false}}"#)
        }
    }
}

/// Parse a client frame; a rejection is always `WS_FRAME_INVALID`, its message names what is
/// wrong without echoing the frame.
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, Rejection> {
    serde_json::from_str(text)
        .map_err(|err| Rejection::new(ErrorCode::WsFrameInvalid, format!("not a valid client frame: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn close_reasons_fit_a_close_frame_and_name_a_catalog_code() {
        for close in Close::ALL {
            let description = close.description(2_249);
            assert!(description.len() <= 123, "{description}");
            let parsed: Value = serde_json::from_str(&description).expect("JSON");
            assert_eq!(parsed["code"], close.error_code().as_str());
            assert_eq!(parsed["resumable"], close.resumable());
        }
    }

    #[test]
    fn frames_round_trip_their_shape() {
        assert_eq!(parse_client_frame(r#"{"op":"ack","seq":3}"#), Ok(ClientFrame::Ack { seq: 3 }));
        assert_eq!(parse_client_frame(r#"{"op":"ping"}"#), Ok(ClientFrame::Ping {}));
        assert!(parse_client_frame(r#"{"op":"ack","seq":-1}"#).is_err());
        assert!(parse_client_frame(r#"{"op":"ack","seq":1,"extra":true}"#).is_err());
        assert!(parse_client_frame(r#"{"op":"dance"}"#).is_err());
        let welcome = ServerFrame::Pong.to_text();
        assert_eq!(welcome, r#"{"op":"pong"}"#);
    }

    /// Either a frame that serializes back to the same `op`, or `WS_FRAME_INVALID` with a message.
    fn check(text: &str) -> Result<(), TestCaseError> {
        match parse_client_frame(text) {
            Ok(frame) => {
                let op = serde_json::from_str::<Value>(text).ok().and_then(|v| v["op"].as_str().map(str::to_owned));
                let (expected, allowed): (&str, &[&str]) = match frame {
                    ClientFrame::Ack { .. } => ("ack", &["op", "seq"]),
                    ClientFrame::Publish { .. } => ("publish", &["op", "event", "ref"]),
                    ClientFrame::Refresh { .. } => ("refresh", &["op", "token"]),
                    ClientFrame::Ping {} => ("ping", &["op"]),
                };
                prop_assert_eq!(op.as_deref(), Some(expected));
                let value: Value = serde_json::from_str(text).expect("parsed, so JSON");
                let keys: Vec<&String> = value.as_object().map(|m| m.keys().collect()).unwrap_or_default();
                prop_assert!(keys.iter().all(|k| allowed.contains(&k.as_str())), "unknown keys accepted: {}", text);
            }
            Err(rejection) => {
                prop_assert_eq!(rejection.code, ErrorCode::WsFrameInvalid);
                prop_assert!(rejection.message.starts_with("not a valid client frame"));
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn arbitrary_text_gets_a_frame_or_ws_frame_invalid(text in ".{0,200}") {
            check(&text)?;
        }

        #[test]
        fn arbitrary_frames_get_a_frame_or_ws_frame_invalid(
            op in prop_oneof![Just("ack".to_owned()), Just("ping".to_owned()), Just("publish".to_owned()), Just("refresh".to_owned()), "[a-z]{0,8}"],
            seq in prop_oneof![any::<i64>().prop_map(serde_json::Value::from), any::<f64>().prop_map(serde_json::Value::from), Just(serde_json::Value::Null)],
            token in prop_oneof![".{0,20}".prop_map(serde_json::Value::from), Just(serde_json::json!(7))],
            keys in 0u8..8,
        ) {
            let mut frame = serde_json::json!({"op": op});
            if keys & 1 == 1 { frame["seq"] = seq; }
            if keys & 2 == 2 { frame["token"] = token; }
            if keys & 4 == 4 { frame["event"] = serde_json::json!({}); }
            check(&frame.to_string())?;
        }
    }

    #[test]
    fn the_invalid_frames_the_protocol_lists_are_refused() {
        for text in [
            "",
            "{",
            "[]",
            "{\"op\":\"dance\"}",
            "{\"op\":\"ack\"}",
            "{\"op\":\"ack\",\"seq\":-1}",
            "{\"op\":\"ping\",\"x\":1}",
        ] {
            assert_eq!(parse_client_frame(text).expect_err(text).code, ErrorCode::WsFrameInvalid, "{text}");
        }
    }
}
