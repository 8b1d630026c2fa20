//! `callstream bench webhooks`: LiveKit webhooks through the real endpoint of a child server —
//! each one verified (JWT + sha256 over the raw body), checked against the receipt table,
//! translated and appended — then the same deliveries again as replays.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use livekit_api::access_token::AccessToken;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::harness::{ChildServer, block_on, percentile};
use crate::domain::principal::Role;

#[derive(Debug, clap::Args)]
pub struct WebhookArgs {
    /// Webhooks to deliver.
    #[arg(long, default_value_t = 50_000)]
    pub webhooks: usize,
    /// Concurrent HTTP clients (LiveKit nodes).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Rooms (sessions) the webhooks are spread over.
    #[arg(long, default_value_t = 100)]
    pub rooms: usize,
}

pub fn run(args: WebhookArgs) -> ExitCode {
    block_on("webhooks", bench(args))
}

struct Delivery {
    body: String,
    authorization: String,
}

async fn bench(args: WebhookArgs) -> Result<(), String> {
    let mut server = ChildServer::start("full").await?;
    let user = server.token("bench-user", &[Role::User])?;
    let client =
        reqwest::Client::builder().pool_max_idle_per_host(args.concurrency).build().map_err(|e| e.to_string())?;
    let mut rooms = Vec::with_capacity(args.rooms);
    for _ in 0..args.rooms {
        let created: Value =
            post_json(&client, &format!("{}/v1/call/sessions", server.address), &user, &json!({})).await?;
        let session = created["sessionId"].as_str().ok_or("no sessionId")?;
        let issued = post_json(
            &client,
            &format!("{}/v1/call/sessions/{session}/livekit-token", server.address),
            &user,
            &json!({}),
        )
        .await?;
        rooms.push(issued["room"].as_str().ok_or("no room")?.to_owned());
    }
    eprintln!("signing {} webhooks …", args.webhooks);
    let created_at = chrono::Utc::now().timestamp().to_string();
    let deliveries: Arc<Vec<Delivery>> = Arc::new(
        (0..args.webhooks)
            .map(|i| {
                let room = &rooms[i % rooms.len()];
                let body = json!({
                    "event": "participant_joined", "id": format!("EV_{i}"), "createdAt": created_at,
                    "room": {"name": room, "sid": "RM_bench"},
                    "participant": {"identity": format!("p{i}"), "sid": format!("PA_{i}"), "name": "bench"}
                })
                .to_string();
                let digest = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body.as_bytes()));
                let authorization = AccessToken::with_api_key(&server.livekit_key, &server.secret)
                    .with_sha256(&digest)
                    .to_jwt()
                    .map_err(|e| e.to_string())?;
                Ok(Delivery { body, authorization })
            })
            .collect::<Result<_, String>>()?,
    );
    let url = format!("{}/v1/webhooks/livekit", server.address);
    let (fresh, fresh_latency) = blast(&client, &url, &deliveries, args.concurrency, 200).await?;
    let (replayed, replay_latency) = blast(&client, &url, &deliveries, args.concurrency, 200).await?;
    server.stop();
    println!(
        "webhook benchmark ({} webhooks over {} rooms, {} clients, durability full)",
        args.webhooks, args.rooms, args.concurrency
    );
    for (name, rate, latency) in [
        ("new (verified + translated + appended)", fresh, fresh_latency),
        ("replayed (verified + de-duplicated)", replayed, replay_latency),
    ] {
        println!(
            "  {name}: {rate:.0} webhooks/s, p50 {:.1} ms, p99 {:.1} ms",
            percentile(&latency, 50.0).as_secs_f64() * 1e3,
            percentile(&latency, 99.0).as_secs_f64() * 1e3
        );
    }
    Ok(())
}

async fn post_json(client: &reqwest::Client, url: &str, token: &str, body: &Value) -> Result<Value, String> {
    client
        .post(url)
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())
}

/// Send every delivery once; every answer must have `expected` status. Returns (rate, latencies).
async fn blast(
    client: &reqwest::Client,
    url: &str,
    deliveries: &Arc<Vec<Delivery>>,
    concurrency: usize,
    expected: u16,
) -> Result<(f64, Vec<Duration>), String> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (client, url, deliveries, next) = (client.clone(), url.to_owned(), deliveries.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(delivery) = deliveries.get(index) else { return Ok::<_, String>(latencies) };
                let sent = Instant::now();
                let response = client
                    .post(&url)
                    .header("Authorization", &delivery.authorization)
                    .header("Content-Type", "application/webhook+json")
                    .body(delivery.body.clone())
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if response.status().as_u16() != expected {
                    return Err(format!("webhook {index}: HTTP {}", response.status()));
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
    let rate = deliveries.len() as f64 / started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    Ok((rate, latencies))
}
