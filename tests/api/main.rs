//! All integration tests, in one binary, against the real server and real SQLite files.

mod auth;
mod billing;
mod contract;
mod crash;
mod demo;
mod fuzz;
mod governance;
mod helpers;
mod http_edges;
mod ingest;
mod layering;
mod lifecycle;
mod livekit;
mod metrics;
mod operator;
mod orchestration;
mod python;
mod realtime;
mod rebuild;
mod resilience;
mod sessions;
mod sink;
mod store_contract;
mod verify;
mod ws;
