//! `callstream bench insights`: the insights of a one-hour, two-speaker call (about 10,000 words
//! in 1,500 segments), computed by the domain function alone, and through a child server: the
//! live answer computed on read, the transaction that ends the call (and appends
//! `insights.computed`), and the final answer.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use super::harness::{ChildServer, block_on, percentile};
use crate::domain::insights::{self, Lexicon, Segment, Settings};
use crate::domain::principal::Role;

#[derive(Debug, clap::Args)]
pub struct InsightsArgs {
    /// Segments of the call (two speakers taking turns).
    #[arg(long, default_value_t = 1_500)]
    pub segments: usize,
    /// Length of the call in minutes.
    #[arg(long, default_value_t = 60)]
    pub minutes: i64,
    /// Timed repetitions of each measurement.
    #[arg(long, default_value_t = 50)]
    pub runs: usize,
}

pub fn run(args: InsightsArgs) -> ExitCode {
    block_on("insights", bench(args))
}

const WORDS: &[&str] = &[
    "the",
    "pipeline",
    "we",
    "should",
    "ship",
    "customer",
    "budget",
    "quarter",
    "really",
    "think",
    "numbers",
    "team",
    "plan",
    "next",
    "week",
    "that's",
    "fair",
    "deal",
    "pricing",
    "onboarding",
    "support",
    "question",
    "about",
    "it",
];
const FILLERS: &[&str] = &["um,", "uh,", "you know,", "like,", "I mean,", "sort of", "so,"];

/// A deterministic call: speakers alternate, each segment 4–9 words (a filler in about one in
/// four), with short gaps, a few long pauses and a few overlaps.
fn call(args: &InsightsArgs) -> Vec<Segment> {
    let mut rng = StdRng::seed_from_u64(14);
    let slot = args.minutes * 60_000 / args.segments as i64;
    (0..args.segments)
        .map(|i| {
            let words: Vec<&str> = (0..rng.random_range(4..=9))
                .map(|_| {
                    if rng.random_bool(0.04) {
                        FILLERS[rng.random_range(0..FILLERS.len())]
                    } else {
                        WORDS[rng.random_range(0..WORDS.len())]
                    }
                })
                .collect();
            let start = i as i64 * slot + if rng.random_bool(0.05) { -400 } else { 0 };
            let end = start + if rng.random_bool(0.03) { slot / 10 } else { slot - 300 };
            Segment {
                speaker: Some(if i % 2 == 0 { "rep" } else { "prospect" }.to_owned()),
                start_ms: Some(start.max(0)),
                end_ms: Some(end),
                text: Some(format!("{}.", words.join(" "))),
            }
        })
        .collect()
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort_unstable();
    println!(
        "  {what}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} runs)",
        percentile(&samples, 50.0).as_secs_f64() * 1e3,
        percentile(&samples, 99.0).as_secs_f64() * 1e3,
        samples.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        samples.len()
    );
}

async fn bench(args: InsightsArgs) -> Result<(), String> {
    let segments = call(&args);
    let lexicon = Lexicon::built_in();
    let settings = Settings { pause_ms: insights::DEFAULT_PAUSE_MS };
    let computed = insights::compute(&lexicon, settings, &segments, Some(args.minutes * 60_000));
    println!(
        "insights benchmark: a {}-minute call, {} segments, {} words, {} fillers, {} pauses",
        args.minutes,
        segments.len(),
        computed.call.words,
        computed.call.fillers,
        computed.speakers.iter().map(|s| s.pauses.count).sum::<u64>()
    );
    let mut samples = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        let started = Instant::now();
        std::hint::black_box(insights::compute(&lexicon, settings, std::hint::black_box(&segments), Some(3_600_000)));
        samples.push(started.elapsed());
    }
    report("domain function (words, fillers, timing)", samples);

    let server = ChildServer::start("full").await?;
    let client = reqwest::Client::new();
    let owner = server.token("bench-owner", &[Role::User])?;
    let session = server.create_sessions(&client, &owner, 1).await?.remove(0);
    let post = |path: String, body: Value| {
        let (client, owner) = (client.clone(), owner.clone());
        async move {
            let response = client.post(path).bearer_auth(owner).json(&body).send().await.map_err(|e| e.to_string())?;
            if !response.status().is_success() {
                return Err(format!("{}: {}", response.status(), response.text().await.unwrap_or_default()));
            }
            Ok::<(), String>(())
        }
    };
    let state = format!("{}/v1/call/sessions/{session}/state", server.address);
    post(state.clone(), json!({"to": "connecting"})).await?;
    post(state.clone(), json!({"to": "active"})).await?;
    for (chunk_index, chunk) in segments.chunks(500).enumerate() {
        let events: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let n = chunk_index * 500 + i;
                json!({"eventId": format!("ins-{n}"), "sessionId": session, "ts": "2026-11-23T10:00:00Z",
                       "type": "transcript.segment.final", "schemaVersion": 1,
                       "payload": {"segmentId": format!("s{n}"), "revision": 1, "speaker": s.speaker,
                                   "startMs": s.start_ms, "endMs": s.end_ms, "text": s.text}})
            })
            .collect();
        post(format!("{}/v1/realtime/sessions/{session}/events", server.address), json!({ "events": events })).await?;
    }
    let insights_url = format!("{}/v1/call/sessions/{session}/insights", server.address);
    let get = || async {
        let started = Instant::now();
        let response = client.get(&insights_url).bearer_auth(&owner).send().await.map_err(|e| e.to_string())?;
        let body: Value = response.json().await.map_err(|e| e.to_string())?;
        Ok::<(Duration, Value), String>((started.elapsed(), body))
    };
    let mut live = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        let (elapsed, body) = get().await?;
        if body["call"]["words"] != computed.call.words {
            return Err(format!("the server counted other words: {}", body["call"]));
        }
        live.push(elapsed);
    }
    report("GET …/insights while live (transcript read, opened, computed)", live);
    let started = Instant::now();
    post(state, json!({"to": "ended"})).await?;
    println!(
        "  ending the call (metering and insights.computed in its transaction): {:.2} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    let mut done = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        let (elapsed, body) = get().await?;
        if body["final"] != true {
            return Err(format!("not final after the end: {body}"));
        }
        done.push(elapsed);
    }
    report("GET …/insights once final (the latest insights.computed)", done);
    Ok(())
}
