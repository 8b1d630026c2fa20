//! Two callstream nodes on one PostgreSQL database, as behind a load balancer: what a client does
//! through one node holds on the other. Each test makes a database of its own; without a
//! PostgreSQL server they say so and pass (unless CI requires one).

use callstream::domain::principal::Role;
use callstream::store::postgres::scratch::ScratchDatabase;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, eventually, spawn_app_in_with, transcript};
use crate::ws::{Ended, connect, seqs};

/// Two nodes (and the database they share, dropped last).
struct Nodes {
    a: TestApp,
    b: TestApp,
    _database: ScratchDatabase,
}

async fn two_nodes(test: &str) -> Option<Nodes> {
    two_nodes_with(test, &[]).await
}

async fn two_nodes_with(test: &str, extra: &[(&'static str, &str)]) -> Option<Nodes> {
    let database = crate::pg_log::database(&format!("nodes::{test}"))?;
    let url = database.url.clone();
    let mut overrides = vec![(callstream::config::DATABASE_URL, url.as_str()), ("CALLSTREAM_TEST_CLOCK", "1")];
    overrides.extend_from_slice(extra);
    let a = spawn_app_in_with(tempfile::tempdir().expect("dir"), &overrides).await;
    let b = spawn_app_in_with(tempfile::tempdir().expect("dir"), &overrides).await;
    Some(Nodes { a, b, _database: database })
}

/// A user token of tenant `t1` for a child server started with `config`'s secrets.
fn user_of_child(config: &callstream::config::Config, sub: &str) -> String {
    callstream::app::auth::mint(&config.jwt, callstream::clock::Clock::system().now(), sub, "t1", &[Role::User], 3600)
        .expect("mint")
}

async fn ingest(node: &TestApp, token: &str, session: &str, prefix: &str, n: usize) {
    let events = (0..n).map(|i| transcript(session, &format!("{prefix}-{i}"), "words")).collect();
    assert_eq!(node.ingest(token, session, events).await.status(), StatusCode::OK);
}

async fn reconnect(node: &TestApp, token: &str, session: &str, resume_token: &str) -> reqwest::Response {
    node.post(&format!("/v1/call/sessions/{session}/reconnect"), token, &json!({"resumeToken": resume_token})).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscriber_on_one_node_receives_what_the_other_ingests_in_order_without_gaps() {
    let Some(Nodes { a, b, _database }) = two_nodes("a_subscriber_on_one_node").await else { return };
    let alice = a.user("alice");
    let session = a.create_session(&alice).await;
    let mut socket = connect(&b, &alice, &session, "").await;
    assert_eq!(socket.next().await["op"], "welcome");
    for round in 0..5 {
        ingest(&a, &alice, &session, &format!("a{round}"), 10).await;
        // Writes through the subscriber's own node interleave with the other node's.
        ingest(&b, &alice, &session, &format!("b{round}"), 2).await;
    }
    let events = socket.events(61).await;
    assert_eq!(seqs(&events), (1..=61).collect::<Vec<u64>>(), "every event once, in seq order");
    let positions: Vec<u64> = events.iter().map(|e| e["position"].as_u64().expect("position")).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "in log order: {positions:?}");
    assert_eq!(events[60]["eventId"], "b4-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_resumes_on_the_other_node_and_its_token_is_single_use_everywhere() {
    let Some(Nodes { a, b, _database }) = two_nodes("a_client_resumes_on_the_other_node").await else { return };
    let alice = a.user("alice");
    let session = a.create_session(&alice).await;
    ingest(&a, &alice, &session, "before", 4).await;
    let mut socket = connect(&a, &alice, &session, "").await;
    let token = socket.next().await["resumeToken"].as_str().expect("token").to_owned();
    socket.events(5).await;
    socket.send(json!({"op": "ack", "seq": 3})).await;
    socket.send(json!({"op": "ping"})).await;
    assert_eq!(socket.next().await["op"], "pong", "the ack is recorded before the pong");
    socket.close().await;
    ingest(&a, &alice, &session, "missed", 2).await;

    let answer = reconnect(&b, &alice, &session, &token).await;
    assert_eq!(answer.status(), StatusCode::OK);
    let answer: Value = answer.json().await.expect("json");
    assert_eq!(answer["replayFrom"], 3, "node B knows what node A's client acknowledged");
    let reused = reconnect(&a, &alice, &session, &token).await;
    assert_eq!(reused.status(), StatusCode::UNAUTHORIZED, "the token was spent on the other node");

    let next = answer["resumeToken"].as_str().expect("token");
    let mut resumed = connect(&b, &alice, &session, &format!("resumeToken={next}")).await;
    assert_eq!(resumed.next().await["replayFrom"], 3);
    let events = resumed.events(5).await;
    assert_eq!(seqs(&events), vec![4, 5, 6, 7, 8], "no gap, nothing twice");
    assert_eq!(events[4]["type"], "call.connection.resumed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_token_resumed_on_both_nodes_at_once_has_one_winner() {
    let Some(Nodes { a, b, _database }) = two_nodes("one_token_resumed_on_both_nodes").await else { return };
    let alice = a.user("alice");
    let session = a.create_session(&alice).await;
    let mut socket = connect(&a, &alice, &session, "").await;
    let token = socket.next().await["resumeToken"].as_str().expect("token").to_owned();
    socket.close().await;
    for _ in 0..5 {
        let (first, second) =
            tokio::join!(reconnect(&a, &alice, &session, &token), reconnect(&b, &alice, &session, &token));
        let mut statuses = [first.status(), second.status()];
        statuses.sort();
        assert!(
            statuses == [StatusCode::OK, StatusCode::UNAUTHORIZED] || statuses == [StatusCode::UNAUTHORIZED; 2],
            "{statuses:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resume_on_the_other_node_supersedes_the_old_socket() {
    let Some(Nodes { a, b, _database }) = two_nodes("a_resume_on_the_other_node_supersedes").await else { return };
    let alice = a.user("alice");
    let session = a.create_session(&alice).await;
    let mut old = connect(&a, &alice, &session, "").await;
    let token = old.next().await["resumeToken"].as_str().expect("token").to_owned();
    old.events(1).await;
    let mut new = connect(&b, &alice, &session, &format!("resumeToken={token}")).await;
    assert_eq!(new.next().await["op"], "welcome");
    let (_, ended) = old.drain().await;
    assert!(matches!(ended, Ended::Closed(4001, _)), "{ended:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_reconciliation_window_triggered_on_both_nodes_runs_once() {
    let Some(Nodes { a, b, _database }) = two_nodes("one_reconciliation_window").await else { return };
    // Each node has its clock (the test clock is per process): both move past the window.
    a.advance_clock(2 * 3600).await;
    b.advance_clock(2 * 3600).await;
    let ops = a.token("ops", "t1", &[Role::Operator]);
    let path = "/v1/billing/reconciliation/hourly-trigger";
    let body = json!({});
    let (first, second) = tokio::join!(a.post(path, &ops, &body), b.post(path, &ops, &body));
    let mut statuses = [first.status(), second.status()];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::CREATED], "one run made, the other answered with it");
    let (first, second): (Value, Value) = (first.json().await.expect("json"), second.json().await.expect("json"));
    assert_eq!(first["runId"], second["runId"]);
    let runs: Value = b.get("/v1/billing/reconciliation/runs", &ops).await.json().await.expect("json");
    assert_eq!(runs["runs"].as_array().map(Vec::len), Some(1), "{runs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_suspension_and_an_erasure_through_one_node_hold_on_the_other() {
    let Some(Nodes { a, b, _database }) = two_nodes("a_suspension_and_an_erasure").await else { return };
    let ops = a.token("ops", "platform", &[Role::Operator]);
    let carol = a.token("carol", "acme", &[Role::User]);
    assert_eq!(a.post("/v1/operator/tenants", &ops, &json!({"tenantId": "acme"})).await.status(), StatusCode::CREATED);
    let session = b.create_session(&carol).await;
    ingest(&b, &carol, &session, "said", 1).await;
    let text = |node: &TestApp| {
        let (client, url, carol) =
            (node.client.clone(), format!("{}/v1/realtime/sessions/{session}/transcript", node.address), carol.clone());
        async move {
            let view: Value =
                client.get(url).bearer_auth(carol).send().await.expect("send").json().await.expect("json");
            view["segments"][0]["text"].clone()
        }
    };
    assert_eq!(text(&b).await, "words", "node B opened the sealed text (and cached the key)");

    let suspended = a
        .client
        .patch(format!("{}/v1/operator/tenants/acme", a.address))
        .bearer_auth(&ops)
        .json(&json!({"status": "suspended"}))
        .send()
        .await
        .expect("send");
    assert_eq!(suspended.status(), StatusCode::OK);
    eventually("node B refuses the suspended tenant", || async {
        b.post("/v1/call/sessions", &carol, &json!({})).await.status() == StatusCode::FORBIDDEN
    })
    .await;
    let reactivated = a
        .client
        .patch(format!("{}/v1/operator/tenants/acme", a.address))
        .bearer_auth(&ops)
        .json(&json!({"status": "active"}))
        .send()
        .await
        .expect("send");
    assert_eq!(reactivated.status(), StatusCode::OK);
    eventually("node B admits the reactivated tenant", || async {
        b.post("/v1/call/sessions", &carol, &json!({})).await.status() == StatusCode::CREATED
    })
    .await;

    let acme_ops = a.token("acme-ops", "acme", &[Role::Operator]);
    let erased = a.post("/v1/governance/tenants/acme/erase", &acme_ops, &json!({"confirm": "acme"})).await;
    assert_eq!(erased.status(), StatusCode::OK);
    eventually("node B no longer opens the erased text", || async { text(&b).await.is_null() }).await;
    // New data through node B is sealed with a new key, never the destroyed one.
    ingest(&b, &carol, &session, "after", 1).await;
    let view: Value =
        a.get(&format!("/v1/realtime/sessions/{session}/transcript"), &carol).await.json().await.expect("json");
    let texts: Vec<&Value> = view["segments"].as_array().expect("segments").iter().map(|s| &s["text"]).collect();
    assert_eq!(texts, [&Value::Null, &json!("words")], "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_carries_on_after_its_database_connections_are_cut() {
    let Some(Nodes { a, b, _database }) = two_nodes("a_node_carries_on_after").await else { return };
    let alice = a.user("alice");
    let session = a.create_session(&alice).await;
    ingest(&a, &alice, &session, "before", 3).await;
    // What a database restart or a failover does to every node's connections.
    let mut admin = crate::helpers::RawDb::open(&a.database());
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .expect("cut the connections");
    let mut acknowledged = 0;
    for attempt in 0..20 {
        let events = vec![transcript(&session, &format!("after-{attempt}"), "words")];
        let status = a.ingest(&alice, &session, events).await.status();
        if status == StatusCode::OK {
            acknowledged += 1;
            if acknowledged == 3 {
                break;
            }
        } else {
            assert!(status.is_server_error(), "a lost connection is the server's problem: {status}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    assert_eq!(acknowledged, 3, "the writer reconnected");
    // The other node's follower reconnected too: its subscribers see everything. A read that hit
    // a connection lost under it is answered 503; a client retries.
    let mut socket = None;
    for _ in 0..20 {
        match crate::ws::try_connect(&b, &alice, &session, "").await {
            Ok(connected) => {
                socket = Some(connected);
                break;
            }
            Err(status) => assert_eq!(status, 503),
        }
    }
    let mut socket = socket.expect("node B serves the socket");
    assert_eq!(socket.next().await["op"], "welcome");
    assert_eq!(seqs(&socket.events(7).await), (1..=7).collect::<Vec<u64>>());
    let report = callstream::store::verify(a.database(), &a.config.master_key).expect("verify");
    assert!(report.is_ok(), "{report:?}");
}

/// `kill -9` of node A, ten times, while producers write through both nodes: a batch in flight at
/// a kill is retried through node B (the survivor), a socket on A resumes on B from what it
/// acknowledged, and in the end every acknowledged event is in the log exactly once and it verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_one_node_under_load_from_both_loses_nothing_and_clients_resume_on_the_other() {
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};

    use crate::crash::{start_with, wait_ready};

    let Some(database) = crate::pg_log::database("nodes::kill_9_of_one_node") else { return };
    let overrides = [(callstream::config::DATABASE_URL, database.url.as_str())];
    let (dir_a, dir_b) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let config = crate::helpers::test_config_with(dir_b.path(), &overrides);
    let token = user_of_child(&config, "crash-user");
    let client = crate::helpers::client_builder().timeout(std::time::Duration::from_secs(10)).build().expect("client");
    let mut b = start_with(dir_b.path(), &overrides);
    wait_ready(&client, &b).await;
    let create = |address: String| {
        let (client, token) = (client.clone(), token.clone());
        async move {
            let created: Value = client
                .post(format!("{address}/v1/call/sessions"))
                .bearer_auth(&token)
                .json(&json!({}))
                .send()
                .await
                .expect("create")
                .json()
                .await
                .expect("json");
            created["sessionId"].as_str().expect("id").to_owned()
        }
    };
    let sessions = [create(b.address.clone()).await, create(b.address.clone()).await];
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let send = {
        let (client, token, acked) = (client.clone(), token.clone(), acked.clone());
        move |address: String, session: String, events: Vec<Value>| {
            let (client, token, acked) = (client.clone(), token.clone(), acked.clone());
            async move {
                let response = client
                    .post(format!("{address}/v1/realtime/sessions/{session}/events"))
                    .bearer_auth(&token)
                    .json(&json!({ "events": events }))
                    .send()
                    .await
                    .ok()?;
                let status = response.status();
                assert!(status.is_success(), "{status}: {}", response.text().await.unwrap_or_default());
                let body: Value = response.json().await.ok()?;
                let mut acked = acked.lock().expect("lock");
                for result in body["results"].as_array().expect("results") {
                    acked.insert(result["eventId"].as_str().expect("id").to_owned());
                }
                Some(())
            }
        }
    };

    for cycle in 0..10 {
        let mut a = start_with(dir_a.path(), &overrides);
        wait_ready(&client, &a).await;
        // A subscriber on A, following from the head, that acknowledges what it reads.
        let page: Value = client
            .get(format!("{}/v1/realtime/sessions/{}/events?after=0&limit=1", a.address, sessions[0]))
            .bearer_auth(&token)
            .send()
            .await
            .expect("replay")
            .json()
            .await
            .expect("json");
        let start = page["diagnostics"]["headSeq"].as_u64().expect("head");
        let mut socket = crate::ws::try_connect_at(&a.address, &token, &sessions[0], &format!("after={start}"))
            .await
            .expect("socket on A");
        let resume_token = socket.next().await["resumeToken"].as_str().expect("token").to_owned();
        let killed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut producers = Vec::new();
        for (n, address) in [a.address.clone(), b.address.clone()].into_iter().enumerate() {
            let (send, session, survivor) = (send.clone(), sessions[n].clone(), b.address.clone());
            let killed = killed.clone();
            producers.push(tokio::spawn(async move {
                let mut batches_after_the_kill = 0;
                for batch in 0..400 {
                    let events: Vec<Value> =
                        (0..10).map(|i| transcript(&session, &format!("k{cycle}-n{n}-b{batch}-{i}"), "x")).collect();
                    if send(address.clone(), session.clone(), events.clone()).await.is_none() {
                        // The node died under the request: the client retries through the survivor.
                        send(survivor, session, events).await.expect("the retry through the survivor");
                        return;
                    }
                    // The survivor's producer goes on a little past the kill, then the cycle ends.
                    if killed.load(std::sync::atomic::Ordering::Relaxed) {
                        batches_after_the_kill += 1;
                        if batches_after_the_kill == 5 {
                            return;
                        }
                    }
                }
            }));
        }
        // Kill A once it has taken 30 new events on the session it is writing, with both producers
        // still sending.
        let mut seen = start;
        while seen < start + 30 {
            let frame = socket.next().await;
            if frame["op"] == "event" {
                seen = frame["event"]["seq"].as_u64().expect("seq");
            }
        }
        socket.send(json!({"op": "ack", "seq": seen})).await;
        socket.send(json!({"op": "ping"})).await;
        while socket.next().await["op"] != "pong" {}
        a.child.kill().expect("kill -9");
        a.child.wait().expect("reap");
        killed.store(true, std::sync::atomic::Ordering::Relaxed);
        for producer in producers {
            producer.await.expect("producer");
        }
        // The subscriber resumes on the survivor from what it acknowledged, without a gap.
        let resumed: Value = client
            .post(format!("{}/v1/call/sessions/{}/reconnect", b.address, sessions[0]))
            .bearer_auth(&token)
            .json(&json!({ "resumeToken": resume_token }))
            .send()
            .await
            .expect("reconnect")
            .json()
            .await
            .expect("json");
        assert_eq!(resumed["replayFrom"], seen, "cycle {cycle}: {resumed}");
        let next = resumed["resumeToken"].as_str().expect("token");
        let mut socket = crate::ws::try_connect_at(&b.address, &token, &sessions[0], &format!("resumeToken={next}"))
            .await
            .expect("on B");
        let welcome = socket.next().await;
        assert_eq!(welcome["replayFrom"], seen);
        let head = welcome["headSeq"].as_u64().expect("head");
        assert!(head > seen, "cycle {cycle}: {welcome}");
        let count = (head - seen).min(20);
        let replayed = seqs(&socket.events(count as usize).await);
        assert_eq!(
            replayed,
            (seen + 1..=seen + count).collect::<Vec<u64>>(),
            "cycle {cycle}: no gap after the checkpoint"
        );
    }
    b.child.kill().expect("kill");
    b.child.wait().expect("reap");

    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() > 1000, "too little was ingested to mean anything: {}", acked.len());
    let counts: std::collections::HashMap<String, String> = crate::helpers::RawDb::open(&config.database)
        .rows("SELECT event_id, COUNT(*) FROM events WHERE tenant_id = 't1' GROUP BY event_id")
        .into_iter()
        .map(|row| (row[0].clone().expect("id"), row[1].clone().expect("count")))
        .collect();
    for event_id in &acked {
        assert_eq!(counts.get(event_id).map(String::as_str), Some("1"), "{event_id} present exactly once");
    }
    let report = callstream::store::verify(&config.database, &config.master_key).expect("verify");
    assert!(report.is_ok(), "{report:?}");
}

/// When the node's outbox worker last finished a pass.
async fn outbox_pass(node: &TestApp) -> Value {
    let ready: Value = crate::helpers::client()
        .get(format!("{}/health/ready", node.address))
        .send()
        .await
        .expect("ready")
        .json()
        .await
        .expect("json");
    ready["checks"]["outboxWorker"]["lastPassAt"].clone()
}

/// Both nodes run the billing outbox against one HTTP sink: every item is claimed by one node for
/// its attempt, so the sink receives each webhook id once (it would de-duplicate, but it should
/// not have to).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_nodes_publish_the_billing_outbox_and_the_sink_gets_each_item_once() {
    let sink = crate::sink::start(vec![200]).await;
    let secret = crate::billing::sink_secret();
    let extra = [
        ("CALLSTREAM_BILLING_POLL_MS", "10"),
        ("CALLSTREAM_BILLING_SINK_URL", sink.url.as_str()),
        ("CALLSTREAM_BILLING_SINK_SECRET", secret.as_str()),
    ];
    let Some(Nodes { a, b, _database }) = two_nodes_with("both_nodes_publish_the_billing_outbox", &extra).await else {
        return;
    };
    let alice = a.user("alice");
    const CALLS: usize = 40;
    let mut sessions = Vec::new();
    for call in 0..CALLS {
        let node = if call % 2 == 0 { &a } else { &b };
        let session = node.create_session(&alice).await;
        for to in ["connecting", "active", "ended"] {
            let response = node.post(&format!("/v1/call/sessions/{session}/state"), &alice, &json!({ "to": to })).await;
            assert_eq!(response.status(), StatusCode::OK, "→ {to}");
        }
        sessions.push(session);
    }
    let ops = a.token("ops", "t1", &[Role::Operator]);
    let confirmations = |session: String| {
        let (b, ops) = (&b, &ops);
        async move {
            let events: Value =
                b.get(&format!("/v1/billing/sessions/{session}/events"), ops).await.json().await.expect("json");
            events["events"]
                .as_array()
                .expect("events")
                .iter()
                .filter(|e| e["type"] == "billing.charge.confirmed")
                .count()
        }
    };
    for session in &sessions {
        eventually("the call's charge is confirmed", || async { confirmations(session.clone()).await > 0 }).await;
    }
    // A pass that began before the last confirmation may still post: wait until each node has
    // finished two more.
    for node in [&a, &b] {
        for _ in 0..2 {
            let before = outbox_pass(node).await;
            eventually("an outbox pass", || async { outbox_pass(node).await != before }).await;
        }
    }
    let received = sink.received.lock().expect("lock").clone();
    let mut per_id = std::collections::BTreeMap::<String, usize>::new();
    for request in &received {
        *per_id.entry(request.headers["webhook-id"].clone()).or_default() += 1;
    }
    assert_eq!(per_id.len(), CALLS, "{per_id:?}");
    let twice: Vec<_> = per_id.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    for session in sessions {
        assert_eq!(confirmations(session).await, 1, "one confirmation per charge");
    }
}

/// A node killed in the middle of an attempt leaves the item claimed for a lease of a minute; the
/// other node finds that node's liveness lock free and delivers the item at once, with the same
/// webhook id, and confirms it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_item_claimed_by_a_node_that_died_is_delivered_by_the_other_at_once() {
    use crate::crash::{create_session, end_call, start_with, wait_ready};

    let Some(database) = crate::pg_log::database("nodes::an_item_claimed_by_a_node_that_died") else { return };
    // The first attempt hangs (the node dies under it); the next is accepted.
    let sink = crate::sink::start(vec![0, 200]).await;
    let secret = crate::billing::sink_secret();
    let overrides = [
        (callstream::config::DATABASE_URL, database.url.as_str()),
        ("CALLSTREAM_BILLING_POLL_MS", "10"),
        // Short enough that the lease is its minimum, a minute.
        ("CALLSTREAM_BILLING_TIMEOUT_MS", "1000"),
        ("CALLSTREAM_BILLING_SINK_URL", sink.url.as_str()),
        ("CALLSTREAM_BILLING_SINK_SECRET", secret.as_str()),
    ];
    let dir_a = tempfile::tempdir().expect("dir");
    let config = crate::helpers::test_config_with(dir_a.path(), &overrides);
    let alice = user_of_child(&config, "alice");
    let client = crate::helpers::client();
    let mut a = start_with(dir_a.path(), &overrides);
    wait_ready(&client, &a).await;
    let session = create_session(&client, &a, &alice).await;
    end_call(&client, &a, &alice, &session).await;
    eventually("node A's attempt reaches the sink", || async { sink.count() == 1 }).await;
    a.child.kill().expect("kill -9");
    a.child.wait().expect("reap");

    let b = spawn_app_in_with(tempfile::tempdir().expect("dir"), &overrides).await;
    // Within 5 s where the lease is a minute: only the release of the dead node's claim does that.
    eventually("node B attempts the item", || async { sink.count() == 2 }).await;
    let ops = b.token("ops", "t1", &[Role::Operator]);
    let charges = || async {
        let events: Value =
            b.get(&format!("/v1/billing/sessions/{session}/events"), &ops).await.json().await.expect("json");
        let events = events["events"].as_array().expect("events").clone();
        events.into_iter().filter(|e| e["type"] == "billing.charge.confirmed").collect::<Vec<_>>()
    };
    eventually("the charge is confirmed", || async { !charges().await.is_empty() }).await;
    let charges = charges().await;
    assert_eq!(charges.len(), 1, "{charges:#?}");
    let received = sink.received.lock().expect("lock").clone();
    assert_eq!(received[0].headers["webhook-id"], received[1].headers["webhook-id"], "one item, one webhook id");
}

/// One actionId sent ten times through each node at once: the outbound call is made once; every
/// answer is the executed ack or, on the node that lost the claim while it ran, 409
/// `ACTION_IN_PROGRESS`; afterwards both nodes answer the identical ack.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_action_retried_concurrently_on_both_nodes_executes_once() {
    let sink = crate::sink::start(vec![200]).await;
    let dir = tempfile::tempdir().expect("dir");
    let policy = crate::orchestration::open_policy(dir.path(), 300);
    let extra = [("CALLSTREAM_POLICY_FILE", policy.as_str())];
    let Some(Nodes { a, b, _database }) = two_nodes_with("one_action_retried_concurrently", &extra).await else {
        return;
    };
    let alice = a.user("alice");
    let session = a.create_session(&alice).await;
    for round in 0..5 {
        let action_id = format!("race-{round}");
        let request = json!({"actionId": action_id, "sessionId": session, "type": "webhook.post", "params": {"url": sink.url, "body": {"round": round}}});
        let mut calls = Vec::new();
        for n in 0..20 {
            let node = if n % 2 == 0 { &a } else { &b };
            let call = node
                .client
                .post(format!("{}/v1/orchestration/actions/execute", node.address))
                .bearer_auth(&alice)
                .json(&request);
            calls.push(tokio::spawn(async move {
                let response = call.send().await.expect("send");
                (response.status(), response.json::<Value>().await.expect("json"))
            }));
        }
        let mut executed = Vec::new();
        for call in calls {
            let (status, body) = call.await.expect("task");
            match status {
                StatusCode::OK => executed.push(body),
                StatusCode::CONFLICT => assert_eq!(body["error"]["code"], "ACTION_IN_PROGRESS", "{body}"),
                other => panic!("{other}: {body}"),
            }
        }
        assert!(!executed.is_empty());
        assert!(executed.iter().all(|e| *e == executed[0] && e["ack"]["status"] == "executed"), "{executed:?}");
        assert_eq!(sink.count(), round + 1, "round {round}: executed exactly once");
        for node in [&a, &b] {
            let retry: Value =
                node.post("/v1/orchestration/actions/execute", &alice, &request).await.json().await.expect("json");
            assert_eq!(retry, executed[0], "a later retry on either node gets the identical ack");
        }
    }
}

/// A node killed while its executor runs: a retry on the other node is held off while the
/// claimant lives, and answered `EXECUTION_INTERRUPTED` as soon as it is gone, long before the
/// claim's lease ends (the longest delivery, a minute here, plus 30 s). The target saw one call.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_action_of_a_killed_node_is_interrupted_at_once_on_the_other() {
    use crate::crash::{create_session, start_with, wait_ready};

    let Some(database) = crate::pg_log::database("nodes::an_action_of_a_killed_node") else { return };
    // The call never gets an answer: node A is still under it when it dies.
    let sink = crate::sink::start(vec![0]).await;
    let dir = tempfile::tempdir().expect("dir");
    let policy = crate::orchestration::open_policy(dir.path(), 300);
    let overrides = [
        (callstream::config::DATABASE_URL, database.url.as_str()),
        ("CALLSTREAM_POLICY_FILE", policy.as_str()),
        ("CALLSTREAM_EXECUTOR_TIMEOUT_MS", "60000"),
    ];
    let (dir_a, dir_b) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let alice = user_of_child(&crate::helpers::test_config_with(dir_a.path(), &overrides), "alice");
    let client = crate::helpers::client();
    let (mut a, mut b) = (start_with(dir_a.path(), &overrides), start_with(dir_b.path(), &overrides));
    wait_ready(&client, &a).await;
    wait_ready(&client, &b).await;
    let execute = |address: &str, request: &Value| {
        client.post(format!("{address}/v1/orchestration/actions/execute")).bearer_auth(&alice).json(request).send()
    };
    let session = create_session(&client, &a, &alice).await;
    let request = json!({"actionId": "orphaned", "sessionId": session, "type": "webhook.post",
                         "params": {"url": sink.url, "body": {"n": 1}}});
    let in_flight = tokio::spawn(execute(&a.address, &request));
    eventually("node A's call reaches the target", || async { sink.count() == 1 }).await;

    let held_off = execute(&b.address, &request).await.expect("retry on B");
    assert_eq!(held_off.status(), StatusCode::CONFLICT, "node A runs it and is alive");
    let body: Value = held_off.json().await.expect("json");
    assert_eq!(body["error"]["code"], "ACTION_IN_PROGRESS", "{body}");

    a.child.kill().expect("kill -9");
    a.child.wait().expect("reap");
    assert!(in_flight.await.expect("task").is_err(), "node A's caller never got an answer");
    // PostgreSQL ends the dead node's session (and its lock) once it reads the closed socket.
    let mut answer = Value::Null;
    for _ in 0..200 {
        let response = execute(&b.address, &request).await.expect("retry on B");
        if response.status() != StatusCode::CONFLICT {
            assert_eq!(response.status(), StatusCode::OK);
            answer = response.json().await.expect("json");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(answer["ack"], json!({"status": "failed", "errorCode": "EXECUTION_INTERRUPTED"}), "{answer}");
    assert_eq!(sink.count(), 1, "not run again");
    b.child.kill().expect("kill");
    b.child.wait().expect("reap");
}
