//! `callstream bench ingest`: HTTP batch ingest against a child `callstream serve` (a second
//! process on loopback, durable commits), then, in the same run, the baseline: a raw SQLite loop
//! inserting the very rows the server wrote, into the same table and indexes, one transaction per
//! client batch.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::harness::{ChildServer, block_on, percentile};
use crate::domain::principal::Role;

#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// Events to send in total.
    #[arg(long, default_value_t = 500_000)]
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
    /// `full` (fsync per commit) or `normal`.
    #[arg(long, default_value = "full")]
    pub durability: String,
    /// Rounds, each on a fresh server and database; the summary is the median (a shared 2-core
    /// machine's speed drifts by ±20 % from one minute to the next).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

/// What one round measured.
struct Round {
    http_rate: f64,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
    baseline: f64,
}

pub fn run(args: IngestArgs) -> ExitCode {
    block_on("ingest", bench(args))
}

fn body_for(session: &str, batch_index: usize, size: usize) -> Vec<u8> {
    let events: Vec<Value> = (0..size)
        .map(|i| {
            json!({
                "eventId": format!("b{batch_index}-{i}"),
                "sessionId": session,
                "ts": "2026-11-23T10:00:00.000Z",
                "type": "transcript.segment.final",
                "payload": {"segmentId": format!("seg-{batch_index}-{i}"), "revision": 1,
                            "text": "the quick brown fox jumps over the lazy dog", "confidence": 0.93},
                "schemaVersion": 1
            })
        })
        .collect();
    serde_json::to_vec(&json!({ "events": events })).unwrap_or_default()
}

async fn bench(args: IngestArgs) -> Result<(), String> {
    if !(1..=500).contains(&args.batch) {
        return Err("--batch must be 1..=500".into());
    }
    if args.rounds == 0 {
        return Err("--rounds must be at least 1".into());
    }
    println!(
        "ingest benchmark ({} durability, batch {}, {} clients, {} sessions, {} events per round)",
        args.durability, args.batch, args.concurrency, args.sessions, args.events
    );
    let mut rounds = Vec::with_capacity(args.rounds);
    for number in 1..=args.rounds {
        let round = one_round(&args).await?;
        println!(
            "  round {number}: HTTP {:.0} events/s ({:.2} s, batch p50 {:.1} ms, p99 {:.1} ms); raw rusqlite loop {:.0} events/s; ratio {:.0} %",
            round.http_rate,
            round.elapsed.as_secs_f64(),
            round.p50.as_secs_f64() * 1e3,
            round.p99.as_secs_f64() * 1e3,
            round.baseline,
            round.http_rate / round.baseline * 100.0
        );
        rounds.push(round);
    }
    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    println!("median of {} rounds:", rounds.len());
    println!("  HTTP ingest:       {:.0} events/s", median(rounds.iter().map(|r| r.http_rate).collect()));
    println!(
        "  raw rusqlite loop: {:.0} events/s (same rows and indexes, one transaction per {} rows)",
        median(rounds.iter().map(|r| r.baseline).collect()),
        args.batch
    );
    println!(
        "  ratio:             {:.0} % of the baseline",
        median(rounds.iter().map(|r| r.http_rate / r.baseline).collect()) * 100.0
    );
    Ok(())
}

/// A fresh server and database: HTTP ingest, then the baseline on the rows it wrote.
async fn one_round(args: &IngestArgs) -> Result<Round, String> {
    let mut server = ChildServer::start(&args.durability).await?;
    let (elapsed, mut latencies) = fill(&[&server], args).await?;
    let http_rate = args.events as f64 / elapsed.as_secs_f64();
    server.stop();

    let baseline = baseline(&server, args)?;
    latencies.sort_unstable();
    Ok(Round { http_rate, elapsed, p50: percentile(&latencies, 50.0), p99: percentile(&latencies, 99.0), baseline })
}

/// Send `args.events` transcript events over HTTP to `servers` (batches spread over them in turn,
/// as a load balancer would); the wall time and each batch's latency.
pub(super) async fn fill(servers: &[&ChildServer], args: &IngestArgs) -> Result<(Duration, Vec<Duration>), String> {
    let server = servers.first().ok_or("no server")?;
    let user = server.token("bench-user", &[Role::User])?;
    let client =
        reqwest::Client::builder().pool_max_idle_per_host(args.concurrency).build().map_err(|e| e.to_string())?;
    let sessions = server.create_sessions(&client, &user, args.sessions).await?;
    let batches = args.events.div_ceil(args.batch);
    eprintln!("preparing {batches} request bodies …");
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..batches)
            .map(|b| body_for(&sessions[b % sessions.len()], b, args.batch.min(args.events - b * args.batch)))
            .collect(),
    );
    let paths: Arc<Vec<String>> = Arc::new(
        (0..batches)
            .map(|b| {
                let node = servers[b % servers.len()];
                format!("{}/v1/realtime/sessions/{}/events", node.address, sessions[b % sessions.len()])
            })
            .collect(),
    );

    eprintln!("sending {} events in {batches} batches with {} clients …", args.events, args.concurrency);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (client, bodies, paths, next, user) =
            (client.clone(), bodies.clone(), paths.clone(), next.clone(), user.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= bodies.len() {
                    return Ok::<Vec<Duration>, String>(latencies);
                }
                let sent = Instant::now();
                let response = client
                    .post(&paths[index])
                    .bearer_auth(&user)
                    .header("Content-Type", "application/json")
                    .body(bodies[index].clone())
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if !response.status().is_success() {
                    return Err(format!("batch {index}: HTTP {}", response.status()));
                }
                response.bytes().await.map_err(|e| e.to_string())?;
                latencies.push(sent.elapsed());
            }
        }));
    }
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.map_err(|e| e.to_string())??);
    }
    Ok((started.elapsed(), latencies))
}

/// Insert the rows the server wrote into a fresh database with the same schema, timed.
fn baseline(server: &ChildServer, args: &IngestArgs) -> Result<f64, String> {
    let durability =
        if args.durability == "normal" { crate::config::Durability::Normal } else { crate::config::Durability::Full };
    let target = server.data_dir.join("baseline.db");
    crate::store::sqlite::bench::raw_insert_rate(&server.database(), &target, durability, args.batch)
        .map_err(|e| e.to_string())
}
