//! The LiveKit bridge: access tokens for rooms, and signed webhooks turned into canonical events.

pub mod token;
pub mod webhook;
