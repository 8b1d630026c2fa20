//! Load generators for the benchmarks recorded in docs/performance.md.

mod harness;
pub mod ingest;
pub mod webhooks;

use std::process::ExitCode;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// HTTP batch ingest with durable commit against a child `callstream serve`, and in the same run
    /// a raw rusqlite insert loop writing the same rows and indexes (the baseline).
    Ingest(ingest::IngestArgs),
    /// Signed LiveKit webhooks through the real endpoint: new ones, then the same again as replays.
    Webhooks(webhooks::WebhookArgs),
}

pub fn run(command: BenchCommand) -> ExitCode {
    match command {
        BenchCommand::Ingest(args) => ingest::run(args),
        BenchCommand::Webhooks(args) => webhooks::run(args),
    }
}
