//! `callstream bench pg-log`: the PostgreSQL log's append rate with one node and with two, each
//! node a thread with its own connection committing groups of batches under the append lock, and
//! in the same run the baseline: the very rows written, inserted by a bare loop into a fresh
//! database with the same table, indexes and triggers, one transaction per batch. No HTTP: this
//! measures the log's core, the part every node shares (docs/scaling.md).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use crate::domain::envelope::server_event;
use crate::domain::event_types::EventType;
use crate::domain::ids::SessionId;
use crate::store::log::{Actor, NewEvent};
use crate::store::postgres::log::{Append, append_group, raw_insert_rate, read_after, verify};
use crate::store::postgres::scratch::ScratchDatabase;

#[derive(Debug, clap::Args)]
pub struct PgLogArgs {
    /// A PostgreSQL server to create scratch databases on.
    #[arg(long, env = "CALLSTREAM_TEST_POSTGRES_URL", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub url: String,
    /// Events per measurement.
    #[arg(long, default_value_t = 200_000)]
    pub events: usize,
    /// Events per append (one client batch).
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Appends per group commit.
    #[arg(long, default_value_t = 4)]
    pub group: usize,
    /// Sessions the events are spread over.
    #[arg(long, default_value_t = 64)]
    pub sessions: usize,
}

pub fn run(args: PgLogArgs) -> ExitCode {
    match bench(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bench pg-log failed: {err}");
            ExitCode::FAILURE
        }
    }
}

fn batches(args: &PgLogArgs, node: usize, count: usize) -> Result<Vec<Append>, String> {
    let event_type = EventType::lookup("transcript.segment.final").ok_or("unregistered type")?;
    (0..count)
        .map(|b| {
            let session = format!("cs_pgbench_{}", (node * count + b) % args.sessions);
            let id = SessionId::parse(&session).map_err(|e| format!("{e:?}"))?;
            let events = (0..args.batch)
                .map(|n| {
                    let payload = serde_json::json!({
                        "segmentId": format!("n{node}-b{b}-e{n}"), "revision": 1, "speaker": "agent",
                        "text": "thanks for calling, let me look that up for you", "startMs": n * 1000, "endMs": n * 1000 + 900
                    });
                    let mut event: NewEvent =
                        server_event(&id, event_type, payload, "2026-11-25T10:00:00.000Z").map_err(|e| e.message)?.into();
                    event.event_id = format!("n{node}-b{b}-e{n}");
                    Ok(event)
                })
                .collect::<Result<Vec<_>, String>>()?;
            Ok(Append { tenant_id: "bench".into(), stream_id: session, actor: Actor::system(), events })
        })
        .collect()
}

fn bench(args: &PgLogArgs) -> Result<(), String> {
    println!(
        "PostgreSQL log benchmark: {} events per run, batches of {}, {} batches per group commit, {} sessions",
        args.events, args.batch, args.group, args.sessions
    );
    for nodes in [1, 2] {
        let database = Arc::new(ScratchDatabase::create(&args.url).map_err(|e| e.to_string())?);
        let per_node = args.events / args.batch / nodes;
        let work: Vec<Vec<Append>> = (0..nodes).map(|node| batches(args, node, per_node)).collect::<Result<_, _>>()?;
        let started = Instant::now();
        let threads: Vec<_> = work
            .into_iter()
            .map(|mut appends| {
                let (database, group) = (database.clone(), args.group.max(1));
                std::thread::spawn(move || -> Result<(), String> {
                    let mut client = database.connect().map_err(|e| e.to_string())?;
                    while !appends.is_empty() {
                        let rest = appends.split_off(group.min(appends.len()));
                        let answers = append_group(&mut client, appends, "2026-11-25T10:00:00.000Z")
                            .map_err(|e| e.to_string())?;
                        answers.into_iter().try_for_each(|a| a.map(|_| ()).map_err(|e| e.to_string()))?;
                        appends = rest;
                    }
                    Ok(())
                })
            })
            .collect();
        for thread in threads {
            thread.join().map_err(|_| "a node panicked".to_owned())??;
        }
        let elapsed = started.elapsed();
        let written = (per_node * nodes * args.batch) as f64;
        let mut client = database.connect().map_err(|e| e.to_string())?;
        if let Some((position, reason)) = verify(&mut client).map_err(|e| e.to_string())? {
            return Err(format!("the log does not verify at {position}: {reason}"));
        }
        let rows = read_after(&mut client, 0, written as u64).map_err(|e| e.to_string())?;
        let baseline_database = ScratchDatabase::create(&args.url).map_err(|e| e.to_string())?;
        let mut baseline_client = baseline_database.connect().map_err(|e| e.to_string())?;
        let baseline = raw_insert_rate(&mut baseline_client, &rows, args.batch).map_err(|e| e.to_string())?;
        let rate = written / elapsed.as_secs_f64();
        println!(
            "  {nodes} node{}: {rate:.0} events/s ({written:.0} in {:.2} s); raw insert loop {baseline:.0} events/s; ratio {:.0} %",
            if nodes == 1 { "" } else { "s" },
            elapsed.as_secs_f64(),
            100.0 * rate / baseline
        );
    }
    Ok(())
}
