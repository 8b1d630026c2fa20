//! Realtime load generators against a child `callstream serve`: fan-out latency, a reconnect
//! storm, and the memory of idle connections. Fan-out and the storm also run across two nodes on
//! PostgreSQL (`--postgres URL`): writes through one node, sockets on the other.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

use super::harness::{ChildServer, block_on, percentile};
use crate::domain::principal::Role;
use crate::store::postgres::scratch::ScratchDatabase;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[derive(Debug, clap::Args)]
pub struct FanoutArgs {
    #[arg(long, default_value_t = 100)]
    pub sessions: usize,
    #[arg(long, default_value_t = 10)]
    pub subscribers_per_session: usize,
    /// Events per second in, over all sessions.
    #[arg(long, default_value_t = 5000)]
    pub rate: usize,
    /// Events per ingest request (one session per request).
    #[arg(long, default_value_t = 10)]
    pub batch: usize,
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// A PostgreSQL server: run two nodes on a scratch database there, ingest through the first
    /// and every subscriber on the second.
    #[arg(long)]
    pub postgres: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ReconnectArgs {
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    #[arg(long, default_value_t = 100)]
    pub sessions: usize,
    /// Events each session receives while its clients are away.
    #[arg(long, default_value_t = 20)]
    pub missed: usize,
    /// A PostgreSQL server: run two nodes on a scratch database there; clients connect, miss
    /// events and are written to through the first, and all resume on the second.
    #[arg(long)]
    pub postgres: Option<String>,
}

/// One SQLite server, or two nodes on a scratch PostgreSQL database (dropped after them).
struct Nodes {
    writer: ChildServer,
    reader: Option<ChildServer>,
    _database: Option<ScratchDatabase>,
}

impl Nodes {
    async fn start(postgres: Option<&str>) -> Result<Nodes, String> {
        let Some(admin) = postgres else {
            return Ok(Nodes { writer: ChildServer::start("full").await?, reader: None, _database: None });
        };
        let database = ScratchDatabase::create(admin).map_err(|e| e.to_string())?;
        let writer = ChildServer::start_node("full", Some(&database.url), None).await?;
        let reader = ChildServer::start_node("full", Some(&database.url), Some(&writer)).await?;
        Ok(Nodes { writer, reader: Some(reader), _database: Some(database) })
    }

    /// Where sockets connect (the node that does not ingest, when there are two).
    fn subscribed(&self) -> &ChildServer {
        self.reader.as_ref().unwrap_or(&self.writer)
    }

    fn describe(&self) -> &'static str {
        match self.reader {
            None => "one node on SQLite",
            Some(_) => "two nodes on PostgreSQL, sockets on the node that does not ingest",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct IdleArgs {
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    #[arg(long, default_value_t = 100)]
    pub sessions: usize,
}

pub fn fanout(args: FanoutArgs) -> ExitCode {
    block_on("fanout", run_fanout(args))
}

pub fn reconnect(args: ReconnectArgs) -> ExitCode {
    block_on("reconnect", run_reconnect(args))
}

pub fn idle(args: IdleArgs) -> ExitCode {
    block_on("idle", run_idle(args))
}

async fn open_socket(server: &ChildServer, token: &str, session: &str, query: &str) -> Result<(Socket, Value), String> {
    let url = format!(
        "{}/v1/realtime/sessions/{session}/ws?access_token={token}{query}",
        server.address.replacen("http", "ws", 1)
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.map_err(|e| e.to_string())?;
    let welcome = next_text(&mut socket).await?;
    Ok((socket, welcome))
}

async fn next_text(socket: &mut Socket) -> Result<Value, String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), socket.next()).await {
            Err(_) => return Err("no frame within 30 s".into()),
            Ok(Some(Ok(Message::Text(text)))) => return serde_json::from_str(&text).map_err(|e| e.to_string()),
            Ok(Some(Ok(Message::Close(frame)))) => return Err(format!("closed: {frame:?}")),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(err))) => return Err(err.to_string()),
            Ok(None) => return Err("socket ended".into()),
        }
    }
}

fn ingest_body(session: &str, ids: std::ops::Range<usize>, stamp: u128) -> String {
    let events: Vec<Value> = ids
        .map(|i| {
            json!({"eventId": format!("f{i}"), "sessionId": session, "ts": "2026-11-23T10:00:00Z",
                   "type": "transcript.segment.partial",
                   "payload": {"segmentId": format!("s{i}"), "revision": 0, "text": format!("t={stamp}")}, "schemaVersion": 1})
        })
        .collect();
    json!({ "events": events }).to_string()
}

async fn run_fanout(args: FanoutArgs) -> Result<(), String> {
    let nodes = Nodes::start(args.postgres.as_deref()).await?;
    let (server, subscribed) = (&nodes.writer, nodes.subscribed());
    let client = reqwest::Client::new();
    let owner = server.token("bench-owner", &[Role::User])?;
    let sessions = server.create_sessions(&client, &owner, args.sessions).await?;
    eprintln!("opening {} subscribers …", args.sessions * args.subscribers_per_session);
    let origin = Instant::now();
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let endings: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let mut readers = Vec::new();
    for session in &sessions {
        for _ in 0..args.subscribers_per_session {
            let (mut socket, _) = open_socket(subscribed, &owner, session, "&after=1").await?;
            let (latencies, endings) = (latencies.clone(), endings.clone());
            readers.push(tokio::spawn(async move {
                // Only the stamp is read out of each frame: the load generator shares the CPU with
                // the server, so it must stay cheap.
                let mut local = Vec::new();
                let ended = loop {
                    // Opening every subscriber may take longer than the idle limit: the limit
                    // applies once events flow.
                    let idle = if local.is_empty() { Duration::from_secs(60) } else { Duration::from_secs(3) };
                    let message = match tokio::time::timeout(idle, socket.next()).await {
                        Err(_) => break format!("idle for {} s", idle.as_secs()),
                        Ok(None) => break "stream ended".to_owned(),
                        Ok(Some(Err(err))) => break format!("error: {err}"),
                        Ok(Some(Ok(Message::Close(frame)))) => {
                            break format!("closed {}", frame.map_or(0, |f| u16::from(f.code)));
                        }
                        Ok(Some(Ok(message))) => message,
                    };
                    let Message::Text(text) = message else { continue };
                    if !text.contains("\"op\":\"event\"") {
                        break format!("frame: {}", &text[..text.len().min(120)]);
                    }
                    let Some(start) = text.find("\"t=") else { continue };
                    let digits: String = text[start + 3..].chars().take_while(char::is_ascii_digit).collect();
                    if let Ok(sent) = digits.parse::<u128>() {
                        local.push(Duration::from_nanos(origin.elapsed().as_nanos().saturating_sub(sent) as u64));
                    }
                };
                latencies.lock().await.append(&mut local);
                *endings.lock().await.entry(ended).or_default() += 1;
            }));
        }
    }
    eprintln!("sending {} events/s for {} s …", args.rate, args.seconds);
    let requests_per_sec = (args.rate / args.batch).max(1);
    let interval = Duration::from_secs_f64(1.0 / requests_per_sec as f64);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let total_requests = requests_per_sec as u64 * args.seconds;
    let started = Instant::now();
    let mut in_flight = Vec::new();
    for n in 0..total_requests as usize {
        ticker.tick().await;
        let session = &sessions[n % sessions.len()];
        let body = ingest_body(session, n * args.batch..(n + 1) * args.batch, origin.elapsed().as_nanos());
        let request = client
            .post(format!("{}/v1/realtime/sessions/{session}/events", server.address))
            .bearer_auth(&owner)
            .header("Content-Type", "application/json")
            .body(body)
            .send();
        in_flight.push(tokio::spawn(async move { request.await.map(|r| r.status().is_success()).unwrap_or(false) }));
    }
    let mut accepted = 0;
    for request in in_flight {
        accepted += usize::from(request.await.unwrap_or(false));
    }
    let sending = started.elapsed();
    for reader in readers {
        let _ = reader.await;
    }
    let mut latencies = std::mem::take(&mut *latencies.lock().await);
    latencies.sort_unstable();
    let expected = accepted * args.batch * args.subscribers_per_session;
    println!(
        "fan-out benchmark ({}): {} sessions × {} subscribers, {} events/s in batches of {} for {} s",
        nodes.describe(),
        args.sessions,
        args.subscribers_per_session,
        args.rate,
        args.batch,
        args.seconds
    );
    println!(
        "  ingested {} events in {:.1} s ({:.0}/s); deliveries {} of {} expected",
        accepted * args.batch,
        sending.as_secs_f64(),
        (accepted * args.batch) as f64 / sending.as_secs_f64(),
        latencies.len(),
        expected
    );
    println!(
        "  ingest→receive latency: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&latencies, 50.0).as_secs_f64() * 1e3,
        percentile(&latencies, 99.0).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    println!("  subscribers ended by: {:?}", endings.lock().await);
    Ok(())
}

async fn run_reconnect(args: ReconnectArgs) -> Result<(), String> {
    let nodes = Arc::new(Nodes::start(args.postgres.as_deref()).await?);
    let server = &nodes.writer;
    let client = reqwest::Client::new();
    let owner = server.token("bench-owner", &[Role::User])?;
    let sessions = server.create_sessions(&client, &owner, args.sessions).await?;
    eprintln!("connecting {} clients …", args.clients);
    let mut tokens = Vec::with_capacity(args.clients);
    for n in 0..args.clients {
        let session = &sessions[n % sessions.len()];
        let (mut socket, welcome) = open_socket(server, &owner, session, "").await?;
        next_text(&mut socket).await?; // seq 1, then checkpoint it
        socket
            .send(Message::Text(json!({"op": "ack", "seq": 1}).to_string().into()))
            .await
            .map_err(|e| e.to_string())?;
        socket.send(Message::Text(json!({"op": "ping"}).to_string().into())).await.map_err(|e| e.to_string())?;
        while next_text(&mut socket).await?["op"] != "pong" {}
        drop(socket);
        tokens.push((session.clone(), welcome["resumeToken"].as_str().ok_or("no token")?.to_owned()));
    }
    for (n, session) in sessions.iter().enumerate() {
        let body = ingest_body(session, n * args.missed..(n + 1) * args.missed, 0);
        client
            .post(format!("{}/v1/realtime/sessions/{session}/events", server.address))
            .bearer_auth(&owner)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    eprintln!("all {} clients resume at once …", args.clients);
    let started = Instant::now();
    let mut storm = Vec::new();
    for (session, token) in tokens {
        let (nodes, owner) = (nodes.clone(), owner.clone());
        storm.push(tokio::spawn(async move {
            let (mut socket, welcome) =
                open_socket(nodes.subscribed(), &owner, &session, &format!("&resumeToken={token}")).await?;
            let head = welcome["headSeq"].as_u64().unwrap_or_default();
            let mut expected = welcome["replayFrom"].as_u64().unwrap_or_default() + 1;
            while expected <= head {
                let frame = next_text(&mut socket).await?;
                let seq = frame["event"]["seq"].as_u64().ok_or("not an event")?;
                if seq != expected {
                    return Err(format!("gap: expected {expected}, got {seq}"));
                }
                expected += 1;
            }
            Ok::<(Duration, u64), String>((started.elapsed(), expected - 1))
        }));
    }
    let mut finished = Vec::new();
    let mut failures: HashMap<String, usize> = HashMap::new();
    for client in storm {
        match client.await.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok((at, _)) => finished.push(at),
            Err(err) => *failures.entry(err).or_default() += 1,
        }
    }
    finished.sort_unstable();
    println!(
        "reconnect storm ({}): {} clients over {} sessions, {} missed events each",
        nodes.describe(),
        args.clients,
        args.sessions,
        args.missed
    );
    println!(
        "  {} resumed gaplessly; all done after {:.2} s (p50 {:.2} s, p99 {:.2} s); failures: {failures:?}",
        finished.len(),
        finished.last().copied().unwrap_or_default().as_secs_f64(),
        percentile(&finished, 50.0).as_secs_f64(),
        percentile(&finished, 99.0).as_secs_f64()
    );
    Ok(())
}

async fn run_idle(args: IdleArgs) -> Result<(), String> {
    let server = ChildServer::start("full").await?;
    let client = reqwest::Client::new();
    let owner = server.token("bench-owner", &[Role::User])?;
    let sessions = server.create_sessions(&client, &owner, args.sessions).await?;
    let baseline = server.rss_kib()?;
    eprintln!("opening {} idle connections (server RSS before: {} MiB) …", args.connections, baseline / 1024);
    let mut sockets = Vec::with_capacity(args.connections);
    let started = Instant::now();
    for n in 0..args.connections {
        let session = &sessions[n % sessions.len()];
        let (socket, _) = open_socket(&server, &owner, session, "&after=1").await?;
        sockets.push(socket);
    }
    let opened = started.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss = server.rss_kib()?;
    println!("idle connections: {} open in {:.1} s", sockets.len(), opened.as_secs_f64());
    println!(
        "  server RSS {:.1} MiB (before connecting {:.1} MiB, {:.1} KiB per connection)",
        rss as f64 / 1024.0,
        baseline as f64 / 1024.0,
        (rss - baseline) as f64 / sockets.len() as f64
    );
    Ok(())
}
