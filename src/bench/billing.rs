//! `callstream bench billing`: reconciliation of one window holding many usage records, and the
//! outbox's delivery rate to the internal ledger and to a local HTTP sink (signed, confirmed).
//!
//! The records are signed and appended as the server meters them (`app::billing::record_usage`),
//! in one tenant's hour; the outbox confirms them; the clock is moved past the window's lateness and
//! the run is triggered through the real HTTP route.

use std::net::TcpListener;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::app::AppState;
use crate::config::{Config, DevSecrets};
use crate::domain::metering::UsageRecord;
use crate::domain::principal::Role;
use crate::domain::time::Timestamp;
use crate::error::AppError;

#[derive(Debug, clap::Args)]
pub struct BillingArgs {
    /// Usage records in the reconciled window.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: usize,
    /// Records delivered to the local HTTP sink.
    #[arg(long, default_value_t = 20_000)]
    pub deliveries: usize,
}

pub fn run(args: BillingArgs) -> ExitCode {
    let system = actix_web::rt::System::new();
    system.block_on(async {
        match bench(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("bench billing failed: {err}");
                ExitCode::FAILURE
            }
        }
    })
}

struct Server {
    base: String,
    state: AppState,
    handle: actix_web::dev::ServerHandle,
    config: Config,
    data_dir: std::path::PathBuf,
}

impl Server {
    async fn stop(self) {
        self.handle.stop(true).await;
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

async fn start(extra: Vec<(&'static str, String)>) -> Result<Server, String> {
    let dir = std::env::temp_dir().join(format!("callstream-bench-billing-{}", uuid::Uuid::new_v4().simple()));
    let data_dir = dir.display().to_string();
    let secrets = DevSecrets::generate();
    let config = Config::load(
        |name| match name {
            "CALLSTREAM_DATA_DIR" => Some(data_dir.clone()),
            "CALLSTREAM_TEST_CLOCK" => Some("1".into()),
            "CALLSTREAM_DURABILITY" => Some("normal".into()),
            "CALLSTREAM_BILLING_POLL_MS" => Some("20".into()),
            _ => extra.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone()),
        },
        Some(&secrets),
    )
    .map_err(|e| e.to_string())?;
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let app = crate::Application::build_with_listener(config.clone(), listener).map_err(|e| e.to_string())?;
    let server = Server {
        base: format!("http://127.0.0.1:{}", app.port()),
        state: app.state().clone(),
        handle: app.server_handle(),
        config,
        data_dir: dir,
    };
    actix_web::rt::spawn(app.run_until_stopped());
    Ok(server)
}

/// Append `count` signed action usage records of tenant `bench`, all in the hour of `at`, over 100
/// streams, a few thousand per transaction. Answers the elapsed time.
async fn meter(state: &AppState, count: usize, at: Timestamp, offset: usize) -> Result<Duration, String> {
    const PER_UNIT: usize = 2_000;
    let started = Instant::now();
    let mut written = 0;
    while written < count {
        let chunk = PER_UNIT.min(count - written);
        let metering = state.metering.clone();
        let first = offset + written;
        state
            .store
            .writer
            .execute(move |tx| -> Result<(), AppError> {
                for n in first..first + chunk {
                    let stream = format!("cs_bench_{:03}", n % 100);
                    let record = UsageRecord::action_executed("bench", &stream, &format!("act-{n}"), at, at);
                    crate::app::billing::record_usage(tx, &metering, record)?;
                }
                Ok(())
            })
            .await
            .map_err(|e| e.to_string())?;
        written += chunk;
    }
    state.billing_work.notify_one();
    Ok(started.elapsed())
}

/// Wait until the outbox holds nothing pending; answers the time it took.
async fn drain(state: &AppState, started: Instant) -> Result<Duration, String> {
    loop {
        let backlog = state.store.read(|reads| reads.billing_backlog()).await.map_err(|e| e.to_string())?;
        let (pending, dead) = (backlog.outbox_pending, backlog.dead_letters_open);
        if dead > 0 {
            return Err(format!("{dead} items were dead-lettered"));
        }
        if pending == 0 {
            return Ok(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn rate(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

async fn bench(args: BillingArgs) -> Result<(), String> {
    let server = start(Vec::new()).await?;
    let now = server.state.clock.now();
    eprintln!("metering {} signed usage records in one hour …", args.records);
    let started = Instant::now();
    let metered = meter(&server.state, args.records, now, 0).await?;
    println!(
        "metering: {} records signed and appended in {:.2} s = {:.0} records/s (2,000 per transaction)",
        args.records,
        metered.as_secs_f64(),
        rate(args.records, metered)
    );
    let total = drain(&server.state, started).await?;
    println!(
        "outbox → internal ledger: all {} confirmed {:.2} s after the first was metered = {:.0} confirmations/s",
        args.records,
        total.as_secs_f64(),
        rate(args.records, total)
    );

    let operator =
        crate::app::auth::mint(&server.config.jwt, server.state.clock.now(), "ops", "bench", &[Role::Operator], 86_400)
            .map_err(|e| e.to_string())?;
    server.state.clock.advance(2 * 3600);
    let window = crate::domain::billing::Window::containing(now);
    let client = reqwest::Client::new();
    let started = Instant::now();
    let response = client
        .post(format!("{}/v1/billing/reconciliation/hourly-trigger", server.base))
        .bearer_auth(&operator)
        .json(&json!({ "windowStart": window.start }))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let elapsed = started.elapsed();
    let status = response.status();
    let run: Value = response.json().await.map_err(|e| e.to_string())?;
    if status.as_u16() != 201 || run["mismatches"] != 0 || run["lines"][0]["metered"] != json!(args.records) {
        return Err(format!("unexpected run ({status}): {run}"));
    }
    println!(
        "reconciliation: {} usage records (and {} confirmed charges) in one window, run through HTTP in {:.3} s; {} mismatches",
        args.records,
        run["lines"][0]["charged"],
        elapsed.as_secs_f64(),
        run["mismatches"]
    );
    server.stop().await;

    let (sink_url, received) = start_sink()?;
    let server = start(vec![
        ("CALLSTREAM_BILLING_SINK_URL", sink_url),
        ("CALLSTREAM_BILLING_SINK_SECRET", "bench-sink-secret-0123456789abcdef".into()),
    ])
    .await?;
    let now = server.state.clock.now();
    let started = Instant::now();
    meter(&server.state, args.deliveries, now, 0).await?;
    let elapsed = drain(&server.state, started).await?;
    let got = received.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "outbox → local HTTP sink: {} records metered, delivered (signed, one POST each; the sink received {got}) and confirmed in {:.2} s = {:.0} deliveries/s",
        args.deliveries,
        elapsed.as_secs_f64(),
        rate(args.deliveries, elapsed)
    );
    server.stop().await;
    Ok(())
}

/// A billing sink on loopback that accepts everything at once.
fn start_sink() -> Result<(String, std::sync::Arc<std::sync::atomic::AtomicUsize>), String> {
    use actix_web::{App, HttpResponse, HttpServer, web};
    let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = received.clone();
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let url = format!("http://127.0.0.1:{}/billing", listener.local_addr().map_err(|e| e.to_string())?.port());
    let server = HttpServer::new(move || {
        let counter = counter.clone();
        App::new().route(
            "/billing",
            web::post().to(move || {
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                async { HttpResponse::Ok().finish() }
            }),
        )
    })
    .workers(1)
    .listen(listener)
    .map_err(|e| e.to_string())?
    .run();
    actix_web::rt::spawn(server);
    Ok((url, received))
}
