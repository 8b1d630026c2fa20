//! Realtime clients over WebSocket: the protocol, per-session fan-out, and the
//! connection task (docs/realtime.md).

pub mod connection;
pub mod hub;
pub mod protocol;
