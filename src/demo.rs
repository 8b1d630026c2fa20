//! `callstream demo`: an in-process server on a temporary database, driven through the public API
//! like a real call, printing a timeline. Every step checks its answer; any surprise exits 1.

use std::net::TcpListener;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use livekit_api::access_token::AccessToken;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_tungstenite::tungstenite::Message;

use crate::config::{Config, DevSecrets};
use crate::domain::principal::Role;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub fn run() -> ExitCode {
    let system = actix_web::rt::System::new();
    system.block_on(async {
        match drive().await {
            Ok(()) => {
                println!("\ndemo finished: every step answered as expected");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("\ndemo failed: {err}");
                ExitCode::FAILURE
            }
        }
    })
}

struct Demo {
    base: String,
    client: reqwest::Client,
    started: Instant,
    /// Messages the demo's message sink received: `(webhook-id, body)`.
    delivered: Delivered,
}

type Delivered = std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>;

/// A stand-in for an SMS provider: accepts `message.send` deliveries on loopback.
fn start_message_sink() -> Result<(String, Delivered), String> {
    use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
    let delivered: Delivered = Default::default();
    let log = delivered.clone();
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let url = format!("http://{}/messages", listener.local_addr().map_err(|e| e.to_string())?);
    let server = HttpServer::new(move || {
        let log = log.clone();
        App::new().route(
            "/messages",
            web::post().to(move |req: HttpRequest, body: web::Bytes| {
                let id = req.headers().get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                log.lock().unwrap_or_else(|p| p.into_inner()).push((id, String::from_utf8_lossy(&body).into_owned()));
                async { HttpResponse::Ok().json(json!({"delivered": true})) }
            }),
        )
    })
    .workers(1)
    .listen(listener)
    .map_err(|e| e.to_string())?
    .run();
    actix_web::rt::spawn(server);
    Ok((url, delivered))
}

impl Demo {
    fn step(&self, what: &str) {
        println!("[{:>6.3}s] {what}", self.started.elapsed().as_secs_f64());
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        let mut request = self.client.request(method, format!("{}{path}", self.base)).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    async fn expect(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
        status: u16,
    ) -> Result<Value, String> {
        let (got, body) = self.call(method.clone(), path, token, body).await?;
        if got != status {
            return Err(format!("{method} {path}: expected {status}, got {got}: {body}"));
        }
        Ok(body)
    }
}

async fn next_frame(socket: &mut Socket) -> Result<Value, String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
            Err(_) => return Err("no frame within 5 s".into()),
            Ok(Some(Ok(Message::Text(text)))) => return serde_json::from_str(&text).map_err(|e| e.to_string()),
            Ok(Some(Ok(Message::Close(frame)))) => return Err(format!("socket closed: {frame:?}")),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(err))) => return Err(err.to_string()),
            Ok(None) => return Err("socket ended".into()),
        }
    }
}

async fn next_event(socket: &mut Socket) -> Result<Value, String> {
    loop {
        let frame = next_frame(socket).await?;
        if frame["op"] == "event" {
            return Ok(frame["event"].clone());
        }
    }
}

async fn drive() -> Result<(), String> {
    let data_dir = std::env::temp_dir().join(format!("callstream-demo-{}", uuid::Uuid::new_v4().simple()));
    let secrets = DevSecrets::generate();
    let dir = data_dir.display().to_string();
    let (sink_url, delivered) = start_message_sink()?;
    let config = Config::load(
        |name| match name {
            "CALLSTREAM_DATA_DIR" => Some(dir.clone()),
            "CALLSTREAM_MESSAGE_SINK_URL" => Some(sink_url.clone()),
            // The demo moves time forward to close a billing window instead of waiting an hour.
            "CALLSTREAM_TEST_CLOCK" => Some("1".into()),
            "CALLSTREAM_BILLING_POLL_MS" => Some("20".into()),
            _ => None,
        },
        Some(&secrets),
    )
    .map_err(|e| e.to_string())?;
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let app = crate::Application::build_with_listener(config.clone(), listener).map_err(|e| e.to_string())?;
    let base = format!("http://127.0.0.1:{}", app.port());
    let server = app.server_handle();
    actix_web::rt::spawn(app.run_until_stopped());
    let demo = Demo { base: base.clone(), client: reqwest::Client::new(), started: Instant::now(), delivered };
    let result = script(&demo, &config).await;
    server.stop(true).await;
    let verified = crate::store::verify(&config.database, &config.master_key).map_err(|e| e.to_string())?;
    println!(
        "[{:>6.3}s] callstream verify: {} events in {} streams, hash chain {}, projections {}",
        demo.started.elapsed().as_secs_f64(),
        verified.events,
        verified.streams,
        if verified.first_broken.is_none() { "intact" } else { "BROKEN" },
        if verified.projection_differences.is_empty() { "equal to a rebuild" } else { "DIFFER" }
    );
    let _ = std::fs::remove_dir_all(&data_dir);
    result?;
    if !verified.is_ok() {
        return Err("verify failed".into());
    }
    Ok(())
}

async fn script(demo: &Demo, config: &Config) -> Result<(), String> {
    use reqwest::Method;
    let mint = |sub: &str, roles: &[Role]| {
        // Valid for a day: the demo moves its clock forward by more than an hour.
        crate::app::auth::mint(&config.jwt, crate::clock::Clock::system().now(), sub, "demo", roles, 86_400)
            .map_err(|e| e.to_string())
    };
    let (ada, agent) = (mint("ada", &[Role::User])?, mint("stt-agent", &[Role::Service])?);
    let ops = mint("ops", &[Role::Operator])?;
    println!("callstream demo — server on {}", demo.base);

    let session =
        demo.expect(Method::POST, "/v1/call/sessions", &ada, Some(json!({"title": "Weekly sync"})), 201).await?;
    let id = session["sessionId"].as_str().ok_or("no session id")?.to_owned();
    demo.step(&format!("ada creates call session {id} (state {})", session["state"]));

    let lk =
        demo.expect(Method::POST, &format!("/v1/call/sessions/{id}/livekit-token"), &ada, Some(json!({})), 200).await?;
    demo.step(&format!(
        "ada gets a LiveKit token for room {} (identity {}, expires {})",
        lk["room"], lk["identity"], lk["expiresAt"]
    ));
    let room = lk["room"].as_str().ok_or("no room")?.to_owned();
    demo.expect(Method::POST, &format!("/v1/call/sessions/{id}/state"), &ada, Some(json!({"to": "connecting"})), 200)
        .await?;
    demo.step("session → connecting");

    let ws_url = format!("{}/v1/realtime/sessions/{id}/ws?access_token={ada}", demo.base.replacen("http", "ws", 1));
    let (mut socket, _) = tokio_tungstenite::connect_async(&ws_url).await.map_err(|e| e.to_string())?;
    let welcome = next_frame(&mut socket).await?;
    let resume_token = welcome["resumeToken"].as_str().ok_or("no resume token")?.to_owned();
    demo.step(&format!(
        "ada's UI opens the WebSocket: welcome (connection {}, head {})",
        welcome["connectionId"], welcome["headSeq"]
    ));

    // The demo plays LiveKit: its webhooks carry LiveKit's (the machine's) clock.
    let now = crate::clock::Clock::system().now().unix_seconds().to_string();
    for (event_id, event, extra) in [
        ("EV_demo_1", "room_started", json!({})),
        (
            "EV_demo_2",
            "participant_joined",
            json!({"participant": {"identity": "ada", "sid": "PA_ada", "name": "Ada"}}),
        ),
    ] {
        let mut body =
            json!({"event": event, "id": event_id, "createdAt": now, "room": {"name": room, "sid": "RM_demo"}});
        if let (Value::Object(target), Value::Object(more)) = (&mut body, extra) {
            target.extend(more);
        }
        let body = body.to_string();
        let digest = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body.as_bytes()));
        let signature = AccessToken::with_api_key(&config.livekit.api_key, config.livekit.api_secret.expose())
            .with_sha256(&digest)
            .to_jwt()
            .map_err(|e| e.to_string())?;
        let response = demo
            .client
            .post(format!("{}/v1/webhooks/livekit", demo.base))
            .header("Authorization", signature)
            .header("Content-Type", "application/webhook+json")
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let answer: Value = response.json().await.map_err(|e| e.to_string())?;
        demo.step(&format!("LiveKit webhook {event} (signed) → {} seq {}", answer["type"], answer["seq"]));
    }
    demo.expect(Method::POST, &format!("/v1/call/sessions/{id}/state"), &ada, Some(json!({"to": "active"})), 200)
        .await?;
    demo.step("session → active");

    let mut seen = Vec::new();
    while seen.len() < 6 {
        let event = next_event(&mut socket).await?;
        seen.push(event["seq"].as_u64().unwrap_or_default());
    }
    demo.step(&format!("the socket delivered seqs {seen:?} in order"));
    socket.send(Message::Text(json!({"op": "ack", "seq": 6}).to_string().into())).await.map_err(|e| e.to_string())?;
    socket.send(Message::Text(json!({"op": "ping"}).to_string().into())).await.map_err(|e| e.to_string())?;
    while next_frame(&mut socket).await?["op"] != "pong" {}
    demo.step("ada's UI acknowledges seq 6 (checkpoint kept on the server)");

    drop(socket);
    demo.step("ada's network drops: the socket is cut without a close frame");
    for (n, (kind, text)) in
        [("partial", "let's look at the"), ("final", "Let's look at the roadmap.")].into_iter().enumerate()
    {
        let event = json!({"eventId": format!("stt-{n}"), "sessionId": id, "ts": crate::clock::Clock::system().now().to_rfc3339(),
            "type": format!("transcript.segment.{kind}"), "payload": {"segmentId": "seg-1", "revision": n + 1, "text": text, "speaker": "ada"},
            "schemaVersion": 1});
        demo.expect(
            Method::POST,
            &format!("/v1/realtime/sessions/{id}/events"),
            &agent,
            Some(json!({"events": [event]})),
            200,
        )
        .await?;
        demo.step(&format!("the STT agent publishes a {kind} transcript: \"{text}\""));
    }

    let answer = demo
        .expect(
            Method::POST,
            &format!("/v1/call/sessions/{id}/reconnect"),
            &ada,
            Some(json!({"resumeToken": resume_token})),
            200,
        )
        .await?;
    demo.step(&format!("ada reconnects: replay from seq {} (token rotated)", answer["replayFrom"]));
    let resume_url = format!(
        "{}{}&access_token={ada}",
        demo.base.replacen("http", "ws", 1),
        answer["wsUrl"].as_str().ok_or("no wsUrl")?
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(&resume_url).await.map_err(|e| e.to_string())?;
    let welcome = next_frame(&mut socket).await?;
    let mut replayed = Vec::new();
    while replayed.len() < 3 {
        let event = next_event(&mut socket).await?;
        replayed.push(format!("{}:{}", event["seq"], event["type"].as_str().unwrap_or_default()));
    }
    demo.step(&format!("resumed from {}: {}", welcome["replayFrom"], replayed.join(", ")));

    let conversation = [
        ("seg-2", "ben", 4_000, 9_500, "Um, sure. So, the, uh, billing work is kind of behind."),
        ("seg-3", "ada", 9_200, 13_000, "Okay. What do you need from me?"),
        ("seg-4", "ben", 16_500, 22_000, "I mean, mostly, you know, a decision on the pricing page."),
        ("seg-5", "ada", 22_400, 25_000, "Let's decide it on Friday."),
    ];
    let events: Vec<Value> = conversation
        .iter()
        .map(|(segment, speaker, start, end, text)| {
            json!({"eventId": format!("stt-{segment}"), "sessionId": id, "ts": crate::clock::Clock::system().now().to_rfc3339(),
                "type": "transcript.segment.final", "schemaVersion": 1,
                "payload": {"segmentId": segment, "revision": 1, "text": text, "speaker": speaker, "startMs": start, "endMs": end}})
        })
        .collect();
    demo.expect(
        Method::POST,
        &format!("/v1/realtime/sessions/{id}/events"),
        &agent,
        Some(json!({"events": events})),
        200,
    )
    .await?;
    demo.step("the STT agent publishes four more finals, from ada and ben, with their timing");
    let transcript =
        demo.expect(Method::GET, &format!("/v1/realtime/sessions/{id}/transcript"), &ada, None, 200).await?;
    demo.step(&format!("transcript: \"{}\"", transcript["text"].as_str().unwrap_or_default()));

    let mut action = json!({"actionId": "send-roadmap", "sessionId": id, "type": "message.send",
                            "params": {"to": "+15550100", "text": "Here is the roadmap link"}});
    let pending =
        demo.expect(Method::POST, "/v1/orchestration/actions/execute", &agent, Some(action.clone()), 200).await?;
    demo.step(&format!("the agent asks to send an SMS (sensitive) → {}", pending["ack"]));
    let approval = demo
        .expect(
            Method::POST,
            "/v1/actions/decision",
            &ada,
            Some(json!({"actionId": "send-roadmap", "decision": "approve"})),
            200,
        )
        .await?;
    demo.step(&format!(
        "ada approves mid-call → a single-use confirmation token, valid until {}",
        approval["expiresAt"]
    ));
    action["confirmationToken"] = approval["confirmationToken"].clone();
    let executed =
        demo.expect(Method::POST, "/v1/orchestration/actions/execute", &agent, Some(action.clone()), 200).await?;
    let again = demo.expect(Method::POST, "/v1/orchestration/actions/execute", &agent, Some(action), 200).await?;
    let deliveries = demo.delivered.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if executed != again || deliveries.len() != 1 {
        return Err(format!("the action should run once: {executed} / {again}, {} deliveries", deliveries.len()));
    }
    demo.step(&format!(
        "the agent retries with the token → {}; the SMS sink got {} signed delivery (webhook-id {}); a second retry answers the same",
        executed["ack"],
        deliveries.len(),
        deliveries[0].0
    ));

    let clock =
        demo.expect(Method::POST, "/v1/operator/clock", &ops, Some(json!({"advanceSeconds": 125})), 200).await?;
    demo.step(&format!("two minutes of conversation later (test clock: {})", clock["now"]));
    demo.expect(
        Method::POST,
        &format!("/v1/call/sessions/{id}/state"),
        &ada,
        Some(json!({"to": "ended", "reason": "done"})),
        200,
    )
    .await?;
    let mut last = next_event(&mut socket).await?;
    while last["type"] != "call.session.state_changed" {
        last = next_event(&mut socket).await?;
    }
    demo.step(&format!("session → ended; the socket receives seq {} ({}) and closes", last["seq"], last["type"]));
    let final_view = demo.expect(Method::GET, &format!("/v1/call/sessions/{id}"), &ada, None, 200).await?;
    demo.step(&format!(
        "final session: state {}, version {}, {} events, participants {}",
        final_view["state"],
        final_view["version"],
        final_view["eventCount"],
        final_view["participants"].as_array().map(Vec::len).unwrap_or(0)
    ));
    billing(demo, &ops, &id).await?;
    insights(demo, &ada, &id).await
}

/// The call's insights, as its owner sees them after the call.
async fn insights(demo: &Demo, token: &str, id: &str) -> Result<(), String> {
    let view = demo.expect(reqwest::Method::GET, &format!("/v1/call/sessions/{id}/insights"), token, None, 200).await?;
    if view["final"] != true {
        return Err(format!("the ended call's insights are not final: {view}"));
    }
    let call = &view["call"];
    demo.step(&format!(
        "insights (final, revision {}): {} s, {} words, {} turns, {} interruptions, {} % silence",
        view["revision"],
        call["durationMs"].as_i64().unwrap_or_default() / 1000,
        call["words"],
        call["turnCount"],
        call["interruptions"],
        (call["silenceShare"].as_f64().unwrap_or_default() * 100.0).round()
    ));
    for speaker in view["speakers"].as_array().into_iter().flatten() {
        demo.step(&format!(
            "  {}: {} words, {} words/min, talk share {} %, fillers {} {}, pauses {}, interruptions {}",
            speaker["speaker"].as_str().unwrap_or("(no speaker)"),
            speaker["words"],
            speaker["wordsPerMinute"],
            (speaker["talkShare"].as_f64().unwrap_or_default() * 100.0).round(),
            speaker["fillers"]["count"],
            speaker["fillers"]["byFiller"],
            speaker["pauses"]["count"],
            speaker["interruptions"]
        ));
    }
    Ok(())
}

/// Metering, billing and reconciliation of the call that just ended.
async fn billing(demo: &Demo, ops: &str, id: &str) -> Result<(), String> {
    use reqwest::Method;
    let events_path = format!("/v1/billing/sessions/{id}/events");
    let of_type = |events: &Value, wanted: &str| -> Vec<Value> {
        events["events"].as_array().into_iter().flatten().filter(|e| e["type"] == wanted).cloned().collect()
    };
    let mut events = demo.expect(Method::GET, &events_path, ops, None, 200).await?;
    for _ in 0..500 {
        if of_type(&events, "billing.charge.confirmed").len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        events = demo.expect(Method::GET, &events_path, ops, None, 200).await?;
    }
    let usage = of_type(&events, "billing.usage.recorded");
    if usage.len() != 2 || of_type(&events, "billing.charge.confirmed").len() != 2 {
        return Err(format!("expected two usage records, each confirmed once: {events}"));
    }
    for record in &usage {
        let usage_id = record["payload"]["usageId"].as_str().unwrap_or_default();
        let view = demo.expect(Method::GET, &format!("/v1/billing/usage/{usage_id}"), ops, None, 200).await?;
        demo.step(&format!(
            "metered {} × {} of {} ({}), signed by key {} → verification {}, {} {}; the ledger confirmed it",
            view["quantity"],
            view["unit"].as_str().unwrap_or_default(),
            view["meter"].as_str().unwrap_or_default(),
            usage_id,
            view["keyId"].as_str().unwrap_or_default(),
            view["verification"]["verdict"].as_str().unwrap_or_default(),
            view["amount"]["value"].as_str().unwrap_or_default(),
            view["amount"]["currency"].as_str().unwrap_or_default(),
        ));
    }
    let window =
        usage[0]["payload"]["occurredAt"].as_str().map(|at| format!("{}:00:00Z", &at[..13])).unwrap_or_default();
    let early = demo
        .expect(
            Method::POST,
            "/v1/billing/reconciliation/hourly-trigger",
            ops,
            Some(json!({"windowStart": window})),
            409,
        )
        .await?;
    demo.step(&format!("reconciling {window} now is refused: {}", early["error"]["code"]));
    let clock =
        demo.expect(Method::POST, "/v1/operator/clock", ops, Some(json!({"advanceSeconds": 3600 + 900})), 200).await?;
    demo.step(&format!("the window and its 15-minute lateness allowance pass (test clock: {})", clock["now"]));
    let trigger = || {
        demo.expect(
            Method::POST,
            "/v1/billing/reconciliation/hourly-trigger",
            ops,
            Some(json!({"windowStart": window})),
            201,
        )
    };
    let run = trigger().await?;
    let lines: Vec<String> = run["lines"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            format!(
                "{} metered {} / charged {} (delta {})",
                l["meter"].as_str().unwrap_or_default(),
                l["metered"],
                l["charged"],
                l["delta"]
            )
        })
        .collect();
    demo.step(&format!(
        "reconciliation run {} (revision {}): {}; {} mismatches",
        run["runId"],
        run["revision"],
        lines.join(", "),
        run["mismatches"]
    ));
    let repeat = demo
        .expect(
            Method::POST,
            "/v1/billing/reconciliation/hourly-trigger",
            ops,
            Some(json!({"windowStart": window})),
            200,
        )
        .await?;
    if repeat["runId"] != run["runId"] || run["mismatches"] != 0 {
        return Err(format!("the window should reconcile once and cleanly: {run} / {repeat}"));
    }
    demo.step("triggering the same window again answers the same run");
    let window_end = run["windowEnd"].as_str().unwrap_or_default();
    let summary_path = format!("/v1/billing/accounts/demo/usage-summary?from={window}&to={window_end}");
    let summary = demo.expect(Method::GET, &summary_path, ops, None, 200).await?;
    demo.step(&format!(
        "usage summary for tenant demo over that hour: {} {}",
        summary["total"]["value"].as_str().unwrap_or_default(),
        summary["total"]["currency"].as_str().unwrap_or_default()
    ));
    Ok(())
}
