//! WebSocket frames (JSON text, tagged by `op`), documented in `schemas/ws.v1.json`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Client → server.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase", deny_unknown_fields)]
pub enum ClientFrame {
    /// Checkpoint: everything up to `seq` is processed. Monotonic; persisted.
    Ack {
        seq: u64,
    },
    /// Append one event, validated exactly like HTTP ingest; answered `published` after commit.
    Publish {
        event: Value,
        #[serde(default, rename = "ref")]
        reference: Option<String>,
    },
    /// A fresh bearer token before the current one expires.
    Refresh {
        token: String,
    },
    Ping,
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

/// Close codes. All but `SESSION_TERMINATED` invite a resume with the connection's resume token.
pub mod close {
    pub const SUPERSEDED: u16 = 4001;
    pub const IDLE_TIMEOUT: u16 = 4002;
    pub const SLOW_CONSUMER: u16 = 4008;
    pub const AUTH_EXPIRED: u16 = 4401;
    /// An operator suspended the caller's tenant.
    pub const TENANT_SUSPENDED: u16 = 4403;
    pub const SESSION_TERMINATED: u16 = 4410;
    pub const INTERNAL: u16 = 1011;
}

/// Parse a client frame; the error names what is wrong without echoing the frame.
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, String> {
    serde_json::from_str(text).map_err(|err| format!("not a valid client frame: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frames_round_trip_their_shape() {
        assert_eq!(parse_client_frame(r#"{"op":"ack","seq":3}"#), Ok(ClientFrame::Ack { seq: 3 }));
        assert_eq!(parse_client_frame(r#"{"op":"ping"}"#), Ok(ClientFrame::Ping));
        assert!(parse_client_frame(r#"{"op":"ack","seq":-1}"#).is_err());
        assert!(parse_client_frame(r#"{"op":"ack","seq":1,"extra":true}"#).is_err());
        assert!(parse_client_frame(r#"{"op":"dance"}"#).is_err());
        let welcome = ServerFrame::Pong.to_text();
        assert_eq!(welcome, r#"{"op":"pong"}"#);
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,200}") {
            let _ = parse_client_frame(&text);
        }

        #[test]
        fn arbitrary_json_objects_never_panic(op in "[a-z]{0,8}", seq in any::<i64>(), extra in ".{0,20}") {
            let _ = parse_client_frame(&serde_json::json!({"op": op, "seq": seq, "token": extra}).to_string());
        }
    }
}
