//! callstream: an event-sourced realtime call backend.

pub mod app;
pub mod bench;
pub mod cli;
pub mod clock;
pub mod config;
pub mod context;
pub mod demo;
pub mod domain;
pub mod error;
pub mod http;
pub mod livekit;
pub mod metrics;
pub mod orchestration;
pub mod realtime;
pub mod store;
pub mod telemetry;

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};

use app::AppState;
use config::Config;
use store::Store;

/// A built, bound, not yet running server.
pub struct Application {
    port: u16,
    server: Server,
    state: AppState,
    writer_thread: std::thread::JoinHandle<()>,
}

/// Linux autotunes a socket's send buffer up to several MB; a fixed size keeps what a stalled
/// WebSocket reader can pin in kernel memory small and makes the slow-consumer cut-off (4008) come
/// at a predictable point (docs/realtime.md).
fn bound_send_buffer(connection: &dyn std::any::Any, bytes: usize) {
    if let Some(stream) = connection.downcast_ref::<actix_web::rt::net::TcpStream>()
        && let Err(err) = socket2::SockRef::from(stream).set_send_buffer_size(bytes)
    {
        tracing::warn!(error = %err, "could not bound the socket send buffer");
    }
}

/// How long in-flight HTTP requests may take to finish once shutdown began.
const SHUTDOWN_DRAIN_SECS: u64 = 10;

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut terminate), Ok(mut interrupt)) => {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = interrupt.recv() => {}
                }
            }
            _ => {
                tracing::error!("cannot listen for SIGTERM/SIGINT; stop the process with SIGKILL");
                std::future::pending::<()>().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

impl Application {
    /// Open the store and bind the listener (port 0 picks a free port).
    pub fn build(config: Config) -> Result<Application, Box<dyn std::error::Error + Send + Sync>> {
        let listener = TcpListener::bind(config.listen)?;
        Application::build_with_listener(config, listener)
    }

    pub fn build_with_listener(
        config: Config,
        listener: TcpListener,
    ) -> Result<Application, Box<dyn std::error::Error + Send + Sync>> {
        orchestration::outbound::install_crypto_provider();
        let port = listener.local_addr()?.port();
        let clock = if config.test_clock { clock::Clock::adjustable() } else { clock::Clock::system() };
        let (store, writer_thread) = Store::open(
            &config.database,
            config.durability,
            config.writer_queue_capacity,
            clock.clone(),
            &config.master_key,
        )?;
        if clock.is_adjustable() {
            // A restarted test server keeps the "now" it had.
            clock.restore(store.read_now(|reads| reads.clock_offset())?);
        }
        let hub = realtime::hub::Hub::default();
        let tenants = Arc::new(app::tenants::TenantDirectory::load(&store)?);
        let actions = app::orchestration::ActionRuntime::new(&config.orchestration, store.node_id())?;
        let metering = app::billing::Metering::new(&config.meter_signing_keys);
        let state = AppState {
            store: store.clone(),
            config: Arc::new(config),
            actions,
            metrics: Default::default(),
            rate_limiter: Arc::new(app::rate_limit::RateLimiter::new(clock.clone())),
            metering,
            billing_work: Arc::default(),
            workers: Arc::default(),
            clock,
            tenants,
        };
        if store.shared() {
            // Other nodes change tenants too; their notices arrive on the commit feed.
            let commits = store.writer.subscribe();
            tokio::spawn(state.tenants.clone().follow(store.clone(), commits, state.workers.stopping()));
        }
        let commits = store.writer.subscribe();
        tokio::spawn(hub.clone().run(store, commits, state.workers.stopping()));
        state.workers.outbox.spawned();
        tokio::spawn(app::outbox::run_publisher(state.clone()));
        state.workers.scheduler.spawned();
        tokio::spawn(app::reconciliation::run_scheduler(state.clone()));
        let data = web::Data::new(state.clone());
        let fan_out = web::Data::new(hub.clone());
        let send_buffer = state.config.realtime.socket_send_buffer_bytes as usize;
        let test_clock = state.clock.is_adjustable();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(fan_out.clone())
                .wrap(from_fn(http::edge::middleware))
                .wrap(from_fn(http::request_id::middleware))
                .configure(|cfg| http::routes::configure(cfg, test_clock))
                .default_service(web::to(http::handlers::route_not_found))
        })
        .on_connect(move |connection, _| bound_send_buffer(connection, send_buffer))
        .listen(listener)?
        .shutdown_timeout(SHUTDOWN_DRAIN_SECS)
        // One shutdown path (`run_until_signalled`): readiness, sockets and workers first.
        .disable_signals()
        .run();
        Ok(Application { port, server, state, writer_thread })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn server_handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serve until SIGTERM or SIGINT, then shut down in order (docs/operations.md "Shutdown"):
    /// readiness turns 503, sockets close with 1012 (resumable), workers finish their current item,
    /// the listener stops accepting and in-flight requests drain, the writer flushes.
    pub async fn run_until_signalled(self) -> std::io::Result<()> {
        let handle = self.server.handle();
        let workers = self.state.workers.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown requested: draining");
            workers.stop();
            handle.stop(true).await;
        });
        self.run_until_stopped().await
    }

    /// Serve until the server handle stops it, then drain: in-flight requests finish, workers
    /// and sockets end, the writer commits what it holds and stops once every handle is gone.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let Application { server, state, writer_thread, .. } = self;
        let result = server.await;
        tracing::info!("http server stopped");
        state.workers.stop();
        drop(state);
        // Every acknowledged write has already committed; waiting only lets queued ones finish.
        let joined = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            tokio::task::spawn_blocking(move || writer_thread.join()),
        )
        .await;
        match joined {
            Ok(Ok(Ok(()))) => tracing::info!("writer stopped"),
            Ok(_) => tracing::error!("writer thread ended abnormally"),
            Err(_) => tracing::warn!("writer still holds handles after 5 s; exiting anyway"),
        }
        result
    }
}
