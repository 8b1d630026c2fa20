//! `callstream bench pg-ingest`: HTTP batch ingest into PostgreSQL through one node and through
//! two (child `serve` processes on one scratch database, batches spread over the nodes in turn),
//! and in the same run the baseline: the very rows written, inserted by a bare loop into a fresh
//! database with the same table, indexes and triggers, one `UNNEST` statement per batch.

use std::process::ExitCode;

use super::harness::{ChildServer, block_on, percentile};
use super::ingest::{IngestArgs, fill};
use crate::store::postgres::log::{raw_insert_rate, read_after};
use crate::store::postgres::off_async;
use crate::store::postgres::scratch::ScratchDatabase;

#[derive(Debug, clap::Args)]
pub struct PgIngestArgs {
    /// A PostgreSQL server to create scratch databases on.
    #[arg(long, env = "CALLSTREAM_TEST_POSTGRES_URL", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub url: String,
    /// Events per measurement.
    #[arg(long, default_value_t = 50_000)]
    pub events: usize,
    /// Events per HTTP batch (max 500).
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Sessions the events are spread over.
    #[arg(long, default_value_t = 64)]
    pub sessions: usize,
}

pub fn run(args: PgIngestArgs) -> ExitCode {
    block_on("pg-ingest", bench(args))
}

async fn bench(args: PgIngestArgs) -> Result<(), String> {
    println!(
        "PostgreSQL ingest benchmark (batch {}, {} clients, {} sessions, {} events per measurement)",
        args.batch, args.concurrency, args.sessions, args.events
    );
    let ingest = IngestArgs {
        events: args.events,
        batch: args.batch,
        concurrency: args.concurrency,
        sessions: args.sessions,
        durability: "full".into(),
        rounds: 1,
    };
    for nodes in [1, 2] {
        let database = ScratchDatabase::create(&args.url).map_err(|e| e.to_string())?;
        let first = ChildServer::start_node("full", Some(&database.url), None).await?;
        let mut servers = vec![first];
        for _ in 1..nodes {
            let node = ChildServer::start_node("full", Some(&database.url), Some(&servers[0])).await?;
            servers.push(node);
        }
        let refs: Vec<&ChildServer> = servers.iter().collect();
        let (elapsed, mut latencies) = fill(&refs, &ingest).await?;
        for server in &mut servers {
            server.stop();
        }
        latencies.sort_unstable();
        let rate = args.events as f64 / elapsed.as_secs_f64();
        let (url, admin, batch) = (database.url.clone(), args.url.clone(), args.batch);
        let baseline = off_async(move || -> Result<f64, String> {
            let mut client = crate::store::postgres::connect(&url).map_err(|e| e.to_string())?;
            let rows = read_after(&mut client, 0, u64::MAX >> 1).map_err(|e| e.to_string())?;
            let fresh = ScratchDatabase::create(&admin).map_err(|e| e.to_string())?;
            let mut fresh_client = fresh.connect().map_err(|e| e.to_string())?;
            raw_insert_rate(&mut fresh_client, &rows, batch).map_err(|e| e.to_string())
        })?;
        println!(
            "  {nodes} node{}: HTTP {rate:.0} events/s ({:.2} s, batch p50 {:.1} ms, p99 {:.1} ms); raw insert loop {baseline:.0} events/s; ratio {:.0} %",
            if nodes == 1 { "" } else { "s" },
            elapsed.as_secs_f64(),
            percentile(&latencies, 50.0).as_secs_f64() * 1e3,
            percentile(&latencies, 99.0).as_secs_f64() * 1e3,
            rate / baseline * 100.0
        );
    }
    Ok(())
}
