//! `spawn_app()`: the real server on 127.0.0.1:0 with its own SQLite file, plus typed helpers.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::LazyLock;

use callstream::app::auth::mint;
use callstream::config::Config;
use callstream::domain::principal::Role;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

pub const SECRET: &str = "test-secret-0123456789abcdef0123456789";

/// An HTTP client for tests (rustls needs its crypto provider installed first).
pub fn client() -> reqwest::Client {
    client_builder().build().expect("client")
}

pub fn client_builder() -> reqwest::ClientBuilder {
    callstream::orchestration::outbound::install_crypto_provider();
    reqwest::Client::builder()
}

static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var("TEST_LOG").is_ok() {
        callstream::telemetry::init("debug");
    }
});

/// Set by `postgres_suite` for the run of this suite it starts: every server then runs on a
/// PostgreSQL database of its own, named with this prefix (the parent drops them afterwards).
pub const SCRATCH_PREFIX: &str = "CALLSTREAM_TEST_SCRATCH_PREFIX";

/// Whether this run of the suite puts its servers on PostgreSQL.
pub fn on_postgres() -> bool {
    std::env::var(SCRATCH_PREFIX).is_ok()
}

/// The server every scratch database is created on.
pub fn postgres_admin_url() -> String {
    std::env::var("CALLSTREAM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// On PostgreSQL runs, the database that belongs to a data dir (created on first use, so a
/// restarted server finds its data again).
fn postgres_url_for(data_dir: &std::path::Path) -> Option<String> {
    static DATABASES: LazyLock<std::sync::Mutex<HashMap<PathBuf, String>>> = LazyLock::new(Default::default);
    let prefix = std::env::var(SCRATCH_PREFIX).ok()?;
    let mut databases = DATABASES.lock().unwrap_or_else(|p| p.into_inner());
    let url = databases.entry(data_dir.to_path_buf()).or_insert_with(|| {
        let scratch =
            callstream::store::postgres::scratch::ScratchDatabase::create_with_prefix(&postgres_admin_url(), &prefix)
                .expect("create a scratch database");
        let url = scratch.url.clone();
        // The parent run drops every database of the prefix.
        std::mem::forget(scratch);
        url
    });
    Some(url.clone())
}

/// The environment a test server (or the real binary in crash tests) runs with.
pub fn test_env(data_dir: &std::path::Path) -> HashMap<&'static str, String> {
    let mut env = base_env(data_dir);
    if let Some(url) = postgres_url_for(data_dir) {
        env.insert(callstream::config::DATABASE_URL, url);
    }
    env
}

fn base_env(data_dir: &std::path::Path) -> HashMap<&'static str, String> {
    HashMap::from([
        ("CALLSTREAM_LISTEN", "127.0.0.1:0".to_owned()),
        ("CALLSTREAM_DATA_DIR", data_dir.display().to_string()),
        ("CALLSTREAM_JWT_SECRET", SECRET.to_owned()),
        ("CALLSTREAM_JWT_ISSUER", "callstream-test".to_owned()),
        ("CALLSTREAM_JWT_AUDIENCE", "callstream-api".to_owned()),
        ("CALLSTREAM_RESUME_SECRET", SECRET.to_owned()),
        ("CALLSTREAM_METER_SIGNING_KEYS", format!("k1:{SECRET}")),
        ("LIVEKIT_API_KEY", "lk-test-key".to_owned()),
        ("LIVEKIT_API_SECRET", SECRET.to_owned()),
        ("LIVEKIT_URL", "ws://127.0.0.1:7880".to_owned()),
        ("CALLSTREAM_DURABILITY", "normal".to_owned()),
        ("CALLSTREAM_MASTER_KEY", MASTER_KEY.to_owned()),
    ])
}

/// The master key every test server runs with (32 bytes, base64).
pub const MASTER_KEY: &str = "Y2FsbHN0cmVhbS10ZXN0LW1hc3Rlci1rZXktMzJieXQ=";

pub fn master_key() -> callstream::config::MasterKey {
    callstream::config::MasterKey::parse(MASTER_KEY).expect("valid test master key")
}

pub fn test_config(data_dir: &std::path::Path) -> Config {
    test_config_with(data_dir, &[])
}

pub fn test_config_with(data_dir: &std::path::Path, overrides: &[(&'static str, &str)]) -> Config {
    let mut env = test_env(data_dir);
    for (name, value) in overrides {
        env.insert(name, (*value).to_owned());
    }
    Config::load(|name| env.get(name).cloned(), None).expect("test config is valid")
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub config: Config,
    pub data_dir: tempfile::TempDir,
    pub server: actix_web::dev::ServerHandle,
    /// The server's clock: tokens are minted at its now.
    pub clock: callstream::clock::Clock,
}

pub async fn spawn_app() -> TestApp {
    let data_dir = tempfile::tempdir().expect("temp dir");
    spawn_app_in(data_dir).await
}

/// Start a server on an existing data dir (e.g. to test a restart).
pub async fn spawn_app_in(data_dir: tempfile::TempDir) -> TestApp {
    spawn_configured(data_dir, &[]).await
}

/// Start a server on an existing data dir with some variables overridden.
pub async fn spawn_app_in_with(data_dir: tempfile::TempDir, overrides: &[(&'static str, &str)]) -> TestApp {
    spawn_configured(data_dir, overrides).await
}

/// Start a server with some variables overridden.
pub async fn spawn_app_with(overrides: &[(&'static str, &str)]) -> TestApp {
    spawn_configured(tempfile::tempdir().expect("temp dir"), overrides).await
}

async fn spawn_configured(data_dir: tempfile::TempDir, overrides: &[(&'static str, &str)]) -> TestApp {
    LazyLock::force(&TRACING);
    let config = test_config_with(data_dir.path(), overrides);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let app = callstream::Application::build_with_listener(config.clone(), listener).expect("build app");
    let address = format!("http://127.0.0.1:{}", app.port());
    let server = app.server_handle();
    let clock = app.state().clock.clone();
    tokio::spawn(app.run_until_stopped());
    TestApp { address, client: client(), config, data_dir, server, clock }
}

impl TestApp {
    /// Stop the server gracefully and hand back its data dir.
    pub async fn stop(self) -> tempfile::TempDir {
        self.server.stop(true).await;
        self.data_dir
    }

    /// The store's database (SQLite in the data dir, or this run's PostgreSQL database).
    pub fn database(&self) -> callstream::store::Database {
        self.config.database.clone()
    }

    pub fn token(&self, sub: &str, tenant: &str, roles: &[Role]) -> String {
        self.token_for(sub, tenant, roles, 600)
    }

    pub fn token_for(&self, sub: &str, tenant: &str, roles: &[Role], ttl_secs: i64) -> String {
        mint(&self.config.jwt, self.clock.now(), sub, tenant, roles, ttl_secs).expect("mint")
    }

    /// Wait (bounded) until `/metrics` shows `line`, e.g. `callstream_ws_connections 0`.
    pub async fn wait_for_metric(&self, line: &str) {
        for _ in 0..400 {
            let text = self.client.get(format!("{}/metrics", self.address)).send().await.expect("metrics");
            if text.text().await.expect("text").lines().any(|l| l == line) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        panic!("/metrics never showed `{line}`");
    }

    /// Move the server's clock forward through the operator route (the app must run with
    /// `CALLSTREAM_TEST_CLOCK=1`); answers the new now.
    pub async fn advance_clock(&self, seconds: i64) -> String {
        let operator = self.token("ops", "t-ops", &[Role::Operator]);
        let response = self.post("/v1/operator/clock", &operator, &json!({ "advanceSeconds": seconds })).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.expect("json");
        body["now"].as_str().expect("now").to_owned()
    }

    pub fn user(&self, sub: &str) -> String {
        self.token(sub, "t1", &[Role::User])
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> Response {
        self.client.post(format!("{}{path}", self.address)).bearer_auth(token).json(body).send().await.expect("request")
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.client.get(format!("{}{path}", self.address)).bearer_auth(token).send().await.expect("request")
    }

    /// Create a session as `token` and return its id.
    pub async fn create_session(&self, token: &str) -> String {
        let response = self.post("/v1/call/sessions", token, &json!({"title": "test call"})).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.expect("json");
        body["sessionId"].as_str().expect("sessionId").to_owned()
    }

    pub async fn ingest(&self, token: &str, session: &str, events: Vec<Value>) -> Response {
        self.post(&format!("/v1/realtime/sessions/{session}/events"), token, &json!({ "events": events })).await
    }

    /// How many of the session's events are not `billing.*`: a call's billing events are appended
    /// by the outbox on its own schedule, so "nothing appended" is checked on the others.
    pub async fn events_except_billing(&self, token: &str, session: &str) -> usize {
        let page = self.replay(token, session, 0, 1000).await;
        let events = page["events"].as_array().expect("events");
        assert!(events.len() < 1000, "a test session holds fewer than one page of events");
        events.iter().filter(|e| !e["type"].as_str().is_some_and(|t| t.starts_with("billing."))).count()
    }

    pub async fn replay(&self, token: &str, session: &str, after: u64, limit: u64) -> Value {
        let response =
            self.get(&format!("/v1/realtime/sessions/{session}/events?after={after}&limit={limit}"), token).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("json")
    }
}

/// A valid transcript event for `session`.
pub fn transcript(session: &str, event_id: &str, text: &str) -> Value {
    json!({
        "eventId": event_id, "sessionId": session, "ts": "2026-11-23T10:00:00.000Z",
        "type": "transcript.segment.final",
        "payload": {"segmentId": format!("seg-{event_id}"), "revision": 1, "text": text},
        "schemaVersion": 1
    })
}

/// Read an error body and return its code, checking the shared shape on the way.
pub async fn error_code(response: Response) -> String {
    let request_id = response.headers().get("x-request-id").map(|v| v.to_str().unwrap_or_default().to_owned());
    let body: Value = response.json().await.expect("error body is JSON");
    let error = &body["error"];
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "message in {body}");
    assert_eq!(error["requestId"].as_str().map(str::to_owned), request_id, "requestId echoes the header");
    error["code"].as_str().expect("code").to_owned()
}

/// A direct connection to a server's database, beside the server: what an operator (or an
/// attacker) with database access has. Statements are plain SQL text; rows come back as text
/// (`None` for NULL, blobs as lowercase hex).
pub enum RawDb {
    Sqlite(rusqlite::Connection),
    /// The synchronous client must not run on the test's async threads: each call runs on a
    /// thread of its own, and so does the drop.
    Postgres(Option<postgres::Client>),
}

impl RawDb {
    pub fn open(database: &callstream::store::Database) -> RawDb {
        match database {
            callstream::store::Database::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).expect("open the SQLite file");
                conn.busy_timeout(std::time::Duration::from_secs(5)).expect("busy timeout");
                RawDb::Sqlite(conn)
            }
            callstream::store::Database::Postgres(url) => RawDb::Postgres(Some(
                callstream::store::postgres::off_async(|| callstream::store::postgres::connect(url))
                    .expect("connect to PostgreSQL"),
            )),
        }
    }

    /// The statement of this backend's dialect.
    pub fn pick<'s>(&self, sqlite: &'s str, postgres: &'s str) -> &'s str {
        match self {
            RawDb::Sqlite(_) => sqlite,
            RawDb::Postgres(_) => postgres,
        }
    }

    /// Run statements (no parameters); the error's text on failure.
    pub fn execute(&mut self, sql: &str) -> Result<(), String> {
        match self {
            RawDb::Sqlite(conn) => conn.execute_batch(sql).map_err(|e| e.to_string()),
            RawDb::Postgres(client) => {
                let client = client.as_mut().expect("open");
                callstream::store::postgres::off_async(|| client.batch_execute(sql))
                    .map_err(|e| e.as_db_error().map_or_else(|| e.to_string(), |db| db.message().to_owned()))
            }
        }
    }

    /// Every row of a query, each column as text.
    pub fn rows(&mut self, sql: &str) -> Vec<Vec<Option<String>>> {
        match self {
            RawDb::Sqlite(conn) => {
                let mut statement = conn.prepare(sql).expect("prepare");
                let columns = statement.column_count();
                statement
                    .query_map([], |row| {
                        (0..columns)
                            .map(|i| {
                                Ok(match row.get::<_, rusqlite::types::Value>(i)? {
                                    rusqlite::types::Value::Null => None,
                                    rusqlite::types::Value::Integer(n) => Some(n.to_string()),
                                    rusqlite::types::Value::Real(f) => Some(f.to_string()),
                                    rusqlite::types::Value::Text(t) => Some(t),
                                    rusqlite::types::Value::Blob(b) => Some(hex::encode(b)),
                                })
                            })
                            .collect()
                    })
                    .expect("query")
                    .collect::<Result<_, _>>()
                    .expect("rows")
            }
            RawDb::Postgres(client) => {
                let client = client.as_mut().expect("open");
                let messages = callstream::store::postgres::off_async(|| client.simple_query(sql)).expect("query");
                messages
                    .iter()
                    .filter_map(|message| match message {
                        postgres::SimpleQueryMessage::Row(row) => Some(
                            (0..row.len())
                                .map(|i| row.get(i).map(|v| v.strip_prefix("\\x").unwrap_or(v).to_owned()))
                                .collect(),
                        ),
                        _ => None,
                    })
                    .collect()
            }
        }
    }

    /// The first column of the first row.
    pub fn value(&mut self, sql: &str) -> Option<String> {
        self.rows(sql).into_iter().next().and_then(|row| row.into_iter().next().flatten())
    }
}

impl Drop for RawDb {
    fn drop(&mut self) {
        if let RawDb::Postgres(client) = self
            && let Some(client) = client.take()
        {
            callstream::store::postgres::off_async(move || drop(client));
        }
    }
}

/// Wait (bounded, 5 s) until `check` holds: for what another node or process does on its own time.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("{what} within 5 s");
}
