//! `callstream bench rebuild`: fill a database through the real server, then time dropping and
//! rebuilding every projection from the log (`callstream rebuild`'s code path).

use std::process::ExitCode;
use std::time::Instant;

use super::harness::{ChildServer, block_on};
use super::ingest::{IngestArgs, fill};

#[derive(Debug, clap::Args)]
pub struct RebuildArgs {
    /// Events in the log to rebuild from.
    #[arg(long, default_value_t = 500_000)]
    pub events: usize,
    /// Sessions the events are spread over.
    #[arg(long, default_value_t = 64)]
    pub sessions: usize,
}

pub fn run(args: RebuildArgs) -> ExitCode {
    block_on("rebuild", bench(args))
}

async fn bench(args: RebuildArgs) -> Result<(), String> {
    let fill_args = IngestArgs {
        events: args.events,
        batch: 500,
        concurrency: 16,
        sessions: args.sessions,
        durability: "normal".into(),
        rounds: 1,
    };
    let mut server = ChildServer::start(&fill_args.durability).await?;
    eprintln!("filling the log with {} events over {} sessions …", args.events, args.sessions);
    fill(&[&server], &fill_args).await?;
    server.stop();

    let database = server.database();
    let started = Instant::now();
    let replayed = crate::store::rebuild(&database, &server.master_key).map_err(|e| e.to_string())?;
    let elapsed = started.elapsed();
    let differences = crate::store::diff_against_rebuild(&database, &server.master_key).map_err(|e| e.to_string())?;
    if !differences.is_empty() {
        return Err(format!("the rebuilt projections differ from a fresh replay: {differences:?}"));
    }
    println!("projection rebuild: {replayed} events (every session's creation included, transcript events otherwise)");
    println!(
        "  dropped, recreated and replayed in {:.2} s = {:.0} events/s (one transaction, durable commit)",
        elapsed.as_secs_f64(),
        replayed as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}
