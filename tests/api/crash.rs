//! Crash test: the real binary under concurrent ingest is `kill -9`ed at random moments, 20 times.
//! Every acknowledged event must be present exactly once, retries of unacknowledged batches must be
//! safe, and `verify` (hash chain + projections == rebuild) must pass at the end.

use std::collections::HashSet;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use callstream::domain::principal::Role;
use rand::Rng;
use serde_json::{Value, json};

use crate::helpers::{test_config, test_env, transcript};

const CYCLES: usize = 20;
const PRODUCERS: usize = 4;

struct Server {
    child: Child,
    address: String,
}

fn start(data_dir: &std::path::Path) -> Server {
    let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let mut env = test_env(data_dir);
    env.insert("CALLSTREAM_LISTEN", format!("127.0.0.1:{port}"));
    env.insert("CALLSTREAM_DURABILITY", "full".to_owned());
    let child = Command::new(env!("CARGO_BIN_EXE_callstream"))
        .arg("serve")
        .envs(env)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn callstream");
    Server { child, address: format!("http://127.0.0.1:{port}") }
}

async fn wait_ready(client: &reqwest::Client, server: &Server) {
    for _ in 0..500 {
        if let Ok(response) = client.get(format!("{}/health/ready", server.address)).send().await
            && response.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("server did not become ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_events_survive_repeated_kill_9() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let config = test_config(data_dir.path());
    let token = callstream::http::auth::mint(&config.jwt, "crash-user", "t1", &[Role::User], 3600).expect("mint");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut sessions = Vec::new();
    // Each producer's batch that was in flight when the server died, retried after the restart.
    let mut pending: Vec<Option<Vec<Value>>> = vec![None; PRODUCERS];
    let mut next_batch = 0usize;

    for cycle in 0..CYCLES {
        let mut server = start(data_dir.path());
        wait_ready(&client, &server).await;
        while sessions.len() < PRODUCERS {
            let response = client
                .post(format!("{}/v1/call/sessions", server.address))
                .bearer_auth(&token)
                .json(&json!({"title": "crash"}))
                .send()
                .await
                .expect("create");
            let body: Value = response.json().await.expect("json");
            sessions.push(body["sessionId"].as_str().expect("id").to_owned());
        }
        let mut producers = Vec::new();
        for (producer, retry) in pending.iter_mut().enumerate() {
            let (client, address, token, acked, session) =
                (client.clone(), server.address.clone(), token.clone(), acked.clone(), sessions[producer].clone());
            let mut batch = retry.take();
            let first_batch = next_batch + producer * 10_000;
            producers.push(tokio::spawn(async move {
                for n in 0.. {
                    let events = batch.take().unwrap_or_else(|| {
                        (0..10)
                            .map(|i| transcript(&session, &format!("c{cycle}-b{}-{i}", first_batch + n), "x"))
                            .collect()
                    });
                    let sent = client
                        .post(format!("{address}/v1/realtime/sessions/{session}/events"))
                        .bearer_auth(&token)
                        .json(&json!({ "events": events }))
                        .send()
                        .await;
                    match sent {
                        Ok(response) if response.status().is_success() => {
                            let body: Value = response.json().await.expect("json");
                            let mut acked = acked.lock().expect("lock");
                            for result in body["results"].as_array().expect("results") {
                                acked.insert(result["eventId"].as_str().expect("id").to_owned());
                            }
                        }
                        Ok(response) => panic!("cycle {cycle}: unexpected {}", response.status()),
                        Err(_) => return Some(events),
                    }
                }
                None
            }));
        }
        next_batch += 100_000;
        let lifetime = rand::rng().random_range(50..400);
        tokio::time::sleep(Duration::from_millis(lifetime)).await;
        server.child.kill().expect("kill -9");
        server.child.wait().expect("reap");
        for (producer, handle) in producers.into_iter().enumerate() {
            pending[producer] = handle.await.expect("producer");
        }
    }

    // Retry what was in flight at the last kill, then check the log.
    let mut server = start(data_dir.path());
    wait_ready(&client, &server).await;
    for (producer, batch) in pending.into_iter().enumerate() {
        if let Some(events) = batch {
            let response = client
                .post(format!("{}/v1/realtime/sessions/{}/events", server.address, sessions[producer]))
                .bearer_auth(&token)
                .json(&json!({ "events": events }))
                .send()
                .await
                .expect("retry");
            assert!(response.status().is_success(), "a retry after a crash is safe");
        }
    }
    server.child.kill().expect("kill");
    server.child.wait().expect("reap");

    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() > 1000, "the test ingested too little to mean anything: {}", acked.len());
    let conn = rusqlite::Connection::open(config.database_path()).expect("open");
    let mut count =
        conn.prepare("SELECT COUNT(*) FROM events WHERE tenant_id = 't1' AND event_id = ?1").expect("prepare");
    for event_id in &acked {
        let n: i64 = count.query_row([event_id], |row| row.get(0)).expect("count");
        assert_eq!(n, 1, "acknowledged event {event_id} present exactly once");
    }
    let report = callstream::store::verify::verify(&config.database_path()).expect("verify");
    assert!(report.is_ok(), "{report:?}");
    println!("crash test: {} acknowledged events over {CYCLES} kills, {} in the log", acked.len(), report.events);
}
