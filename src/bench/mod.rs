//! Load generators for the benchmarks recorded in docs/performance.md.

pub mod billing;
mod harness;
pub mod ingest;
pub mod insights;
pub mod pg_ingest;
pub mod pg_log;
pub mod realtime;
pub mod rebuild;
pub mod webhooks;

use std::process::ExitCode;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// HTTP batch ingest with durable commit against a child `callstream serve`, and in the same run
    /// a raw SQLite insert loop writing the same rows and indexes (the baseline).
    Ingest(ingest::IngestArgs),
    /// The PostgreSQL log's core with one and two writer nodes, and a bare insert loop (the baseline).
    PgLog(pg_log::PgLogArgs),
    /// HTTP ingest into PostgreSQL through one node and through two, and a bare insert loop.
    PgIngest(pg_ingest::PgIngestArgs),
    /// Signed LiveKit webhooks through the real endpoint: new ones, then the same again as replays.
    Webhooks(webhooks::WebhookArgs),
    /// WebSocket fan-out: subscribers per session, a steady ingest rate, ingest→receive latency.
    Fanout(realtime::FanoutArgs),
    /// Many clients resuming at once after missing events; time until all replayed gaplessly.
    Reconnect(realtime::ReconnectArgs),
    /// Resident memory of the server holding many idle WebSocket connections.
    Idle(realtime::IdleArgs),
    /// Insights of a one-hour two-speaker call: the domain function, and live, at the end and final
    /// through a child server.
    Insights(insights::InsightsArgs),
    /// Drop and rebuild every projection from a log filled through the server.
    Rebuild(rebuild::RebuildArgs),
    /// Reconciliation of one window holding many usage records; outbox delivery to the internal
    /// ledger and to a local HTTP sink.
    Billing(billing::BillingArgs),
}

pub fn run(command: BenchCommand) -> ExitCode {
    match command {
        BenchCommand::Ingest(args) => ingest::run(args),
        BenchCommand::PgLog(args) => pg_log::run(args),
        BenchCommand::PgIngest(args) => pg_ingest::run(args),
        BenchCommand::Webhooks(args) => webhooks::run(args),
        BenchCommand::Fanout(args) => realtime::fanout(args),
        BenchCommand::Reconnect(args) => realtime::reconnect(args),
        BenchCommand::Idle(args) => realtime::idle(args),
        BenchCommand::Insights(args) => insights::run(args),
        BenchCommand::Rebuild(args) => rebuild::run(args),
        BenchCommand::Billing(args) => billing::run(args),
    }
}
