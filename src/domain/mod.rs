//! Pure domain rules: no I/O, no async, no actix, no database.

pub mod action;
pub mod actor;
pub mod billing;
pub mod canonical;
pub mod envelope;
pub mod error;
pub mod event_types;
pub mod ids;
pub mod insights;
pub mod jcs;
pub mod metering;
pub mod outbound;
pub mod policy;
pub mod principal;
pub mod session;
pub mod time;
