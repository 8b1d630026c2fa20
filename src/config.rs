//! Configuration: built-in defaults → dev secrets (with `--dev`) → environment (env wins).
//!
//! Loading is pure: it reads variables through a lookup function and never writes anything.
//! Errors name the variable and the problem, never the value.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A value that must never be printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// `CALLSTREAM_MASTER_KEY`: 32 bytes that wrap every tenant's data key (docs/governance.md).
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey([u8; 32]);

impl MasterKey {
    pub const VARIABLE: &'static str = "CALLSTREAM_MASTER_KEY";

    /// Standard base64 of exactly 32 bytes.
    pub fn parse(encoded: &str) -> Result<MasterKey, ConfigError> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| problem(Self::VARIABLE, "must be standard base64 (e.g. `openssl rand -base64 32`)"))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| problem(Self::VARIABLE, format!("must decode to 32 bytes, not {}", b.len())))?;
        Ok(MasterKey(key))
    }

    pub fn generate() -> MasterKey {
        use rand::Rng;
        MasterKey(rand::rng().random())
    }

    pub fn encode(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync on every commit: an acknowledged event survives power loss.
    Full,
    /// No fsync on commit: survives a process crash, not an OS crash.
    Normal,
}

#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub secret: Secret,
    pub issuer: String,
    pub audience: String,
}

#[derive(Debug, Clone)]
pub struct SigningKey {
    pub key_id: String,
    pub secret: Secret,
}

#[derive(Debug, Clone)]
pub struct LiveKitConfig {
    pub api_key: String,
    pub api_secret: Secret,
    pub url: String,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `CALLSTREAM_DATABASE_URL`, or SQLite in the data directory.
    pub database: Database,
    pub jwt: JwtConfig,
    pub resume_secret: Secret,
    /// The first key signs; all verify.
    pub meter_signing_keys: Vec<SigningKey>,
    pub livekit: LiveKitConfig,
    pub durability: Durability,
    /// Commands that may wait for the writer; one more is answered 503 with `Retry-After`.
    pub writer_queue_capacity: usize,
    /// How far a LiveKit webhook's `createdAt` may be from our clock, either way.
    pub webhook_tolerance_secs: u64,
    /// Default lifetime of LiveKit access tokens (a request may ask for less or more, up to 1 h).
    pub livekit_token_ttl_secs: u64,
    /// How long a stored Idempotency-Key answer is replayed before the key may be reused.
    pub idempotency_retention_secs: u64,
    pub realtime: RealtimeConfig,
    pub orchestration: OrchestrationConfig,
    pub edge: EdgeConfig,
    /// `CALLSTREAM_TEST_CLOCK=1`: operators may move the clock forward (tests and demos only).
    pub test_clock: bool,
    pub billing: BillingConfig,
    pub insights: InsightsConfig,
    pub master_key: MasterKey,
}

/// Post-call insights (docs/insights.md).
#[derive(Debug, Clone)]
pub struct InsightsConfig {
    /// `CALLSTREAM_FILLER_LEXICON_FILE`, or `policy/fillers.json` as built in.
    pub lexicon: std::sync::Arc<crate::domain::insights::Lexicon>,
    /// `CALLSTREAM_INSIGHTS_PAUSE_MS`: the shortest silence that counts as a pause.
    pub pause_ms: i64,
    /// `CALLSTREAM_INSIGHTS_EVALUATOR_URL`: the external evaluator `insights.evaluate` posts to
    /// (admitted by the policy's allowlist at start-up); `None`: the rule-based evaluation only.
    pub evaluator_url: Option<String>,
}

/// Metering, the billing outbox, reconciliation and its alerts (docs/billing.md).
#[derive(Debug, Clone)]
pub struct BillingConfig {
    /// Where billing events are delivered; `None`: the internal ledger, which confirms at once.
    pub sink: Option<Sink>,
    /// Where reconciliation alerts are delivered; `None`: alerts stay pending, listed on their run.
    pub alert_sink: Option<Sink>,
    /// How long after a window's end late usage is still expected before it is reconciled.
    pub lateness_secs: u64,
    pub retry: crate::domain::billing::RetryPolicy,
    /// Each HTTP attempt's timeout.
    pub timeout_ms: u64,
    /// How often the outbox, alert and scheduler workers look for due work.
    pub poll_ms: u64,
    pub prices: crate::domain::billing::PriceTable,
}

/// An HTTP endpoint callstream delivers to, signed like Standard Webhooks. Configured by the
/// operator, so trusted: it needs no allowlist entry.
#[derive(Clone)]
pub struct Sink {
    pub url: String,
    /// The HMAC key: the bytes of a `whsec_<base64>` secret, or the secret's own bytes.
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink").field("url", &self.url).field("secret", &"<redacted>").finish()
    }
}

/// What the HTTP edge enforces before a handler runs (docs/operations.md).
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Exact browser origins (`scheme://host[:port]`, lowercase) allowed cross-origin access.
    pub cors_origins: Vec<String>,
    /// Requests per second per tenant, by route class; bursts of one second's worth.
    pub rate_limits: RateLimits,
}

/// Commands that may wait for the writer: enough to absorb a burst of ingest batches while
/// bounding the memory a stalled writer can pin (`CALLSTREAM_WRITER_QUEUE_CAPACITY`).
pub const DEFAULT_WRITER_QUEUE_CAPACITY: usize = 8192;

/// The highest value a limit may have: a configured request rate or an operator's quota.
pub const MAX_LIMIT: u64 = 1_000_000;

#[derive(Debug, Clone, Copy)]
pub struct RateLimits {
    /// GET routes, WebSocket upgrades included.
    pub read_per_sec: u64,
    /// Commands: session changes, tokens, reconnects, actions.
    pub write_per_sec: u64,
    /// `POST /v1/realtime/sessions/{id}/events` (each request is a batch of up to 500 events).
    pub ingest_per_sec: u64,
}

/// In-call actions (docs/orchestration.md).
#[derive(Debug, Clone)]
pub struct OrchestrationConfig {
    pub policy: crate::domain::policy::Policy,
    /// Signs outbound requests (Standard Webhooks style) and confirmation tokens.
    pub signing_secret: Secret,
    /// Where `message.send` delivers; unset means the action fails with MESSAGE_SINK_NOT_CONFIGURED.
    pub message_sink_url: Option<String>,
    pub executor_timeout_ms: u64,
    pub executor_attempts: u64,
}

/// WebSocket behaviour (docs/realtime.md).
#[derive(Debug, Clone)]
pub struct RealtimeConfig {
    /// How long after a disconnect a resume token stays valid.
    pub reconnect_window_secs: u64,
    /// Server ping interval.
    pub heartbeat_secs: u64,
    /// Silence after which the server closes a connection (4002).
    pub idle_timeout_secs: u64,
    /// A send blocked longer than this marks a slow consumer (4008).
    pub send_timeout_ms: u64,
    /// SO_SNDBUF of every accepted socket: with actix's 32-frame queue it bounds what one
    /// connection can hold in flight, so a stalled reader blocks sends (4008) at a known size.
    pub socket_send_buffer_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration error: {variable} {problem}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub problem: String,
}

fn problem(variable: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError { variable, problem: problem.into() }
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATA_DIR: &str = "./data";
const MIN_SECRET_LEN: usize = 32;

/// Secrets generated once for `serve --dev` and kept in the data dir.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevSecrets {
    pub jwt_secret: Secret,
    pub resume_secret: Secret,
    pub meter_key: Secret,
    pub livekit_api_secret: Secret,
    /// Absent from dev secrets written before crypto-shredding; `cli::dev_secrets` adds it once.
    #[serde(default)]
    pub master_key: Option<Secret>,
}

pub const DEV_ISSUER: &str = "callstream-dev";
pub const DEV_AUDIENCE: &str = "callstream";
pub const DEV_LIVEKIT_KEY: &str = "devkey";
pub const DEV_LIVEKIT_URL: &str = "ws://127.0.0.1:7880";

impl DevSecrets {
    pub fn generate() -> Self {
        DevSecrets {
            jwt_secret: Secret(random_secret()),
            resume_secret: Secret(random_secret()),
            meter_key: Secret(random_secret()),
            livekit_api_secret: Secret(random_secret()),
            master_key: Some(Secret(MasterKey::generate().encode())),
        }
    }

    /// The defaults layer these secrets contribute, keyed by variable name.
    fn as_defaults(&self) -> HashMap<&'static str, String> {
        let mut defaults = HashMap::from([
            ("CALLSTREAM_JWT_SECRET", self.jwt_secret.0.clone()),
            ("CALLSTREAM_JWT_ISSUER", DEV_ISSUER.to_owned()),
            ("CALLSTREAM_JWT_AUDIENCE", DEV_AUDIENCE.to_owned()),
            ("CALLSTREAM_RESUME_SECRET", self.resume_secret.0.clone()),
            ("CALLSTREAM_METER_SIGNING_KEYS", format!("dev:{}", self.meter_key.0)),
            ("LIVEKIT_API_KEY", DEV_LIVEKIT_KEY.to_owned()),
            ("LIVEKIT_API_SECRET", self.livekit_api_secret.0.clone()),
            ("LIVEKIT_URL", DEV_LIVEKIT_URL.to_owned()),
        ]);
        if let Some(master_key) = &self.master_key {
            defaults.insert(MasterKey::VARIABLE, master_key.0.clone());
        }
        defaults
    }
}

/// HMAC-SHA256(secret, label) as hex: a separate key for a separate purpose.
fn derive_secret(secret: &str, label: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(label.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn random_secret() -> String {
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    hex::encode(bytes)
}

impl Config {
    /// Read configuration from the process environment (and `CALLSTREAM_CONFIG_FILE`, if set).
    pub fn from_env(dev: Option<&DevSecrets>) -> Result<Config, ConfigError> {
        Config::load_layered(|name| std::env::var(name).ok(), dev)
    }

    /// `env`, then the variables of the file named by `CALLSTREAM_CONFIG_FILE` beneath it (the
    /// environment wins), then dev secrets and defaults. A file that sets a variable callstream does
    /// not read is refused, so a typo cannot silently leave a default in place.
    pub fn load_layered(env: impl Fn(&str) -> Option<String>, dev: Option<&DevSecrets>) -> Result<Config, ConfigError> {
        let file = match env(CONFIG_FILE).filter(|v| !v.trim().is_empty()) {
            Some(path) => read_config_file(Path::new(&path))?,
            None => HashMap::new(),
        };
        let asked = std::cell::RefCell::new(std::collections::HashSet::new());
        let config = Config::load(
            |name| {
                asked.borrow_mut().insert(name.to_owned());
                env(name).filter(|v| !v.trim().is_empty()).or_else(|| file.get(name).cloned())
            },
            dev,
        )?;
        let asked = asked.into_inner();
        let mut unknown: Vec<&String> = file.keys().filter(|key| !asked.contains(*key)).collect();
        unknown.sort();
        match unknown.first() {
            Some(key) => Err(problem(CONFIG_FILE, format!("sets `{key}`, which is not a callstream variable"))),
            None => Ok(config),
        }
    }

    /// The data dir as the environment (or the config file) names it, needed before the rest (dev
    /// secrets live there). A bad file is reported by `from_env`.
    pub fn data_dir_from_env() -> PathBuf {
        let from_file = || {
            let path = std::env::var(CONFIG_FILE).ok()?;
            read_config_file(Path::new(&path)).ok()?.remove("CALLSTREAM_DATA_DIR")
        };
        std::env::var("CALLSTREAM_DATA_DIR")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .or_else(from_file)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
    }

    pub fn load(env: impl Fn(&str) -> Option<String>, dev: Option<&DevSecrets>) -> Result<Config, ConfigError> {
        let defaults = dev.map(DevSecrets::as_defaults).unwrap_or_default();
        let get = |name: &'static str| -> Option<String> {
            env(name).filter(|v| !v.trim().is_empty()).or_else(|| defaults.get(name).cloned())
        };
        let required = |name: &'static str| get(name).ok_or_else(|| problem(name, "is required but not set"));

        let listen = get("CALLSTREAM_LISTEN").unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen = listen
            .parse::<SocketAddr>()
            .map_err(|_| problem("CALLSTREAM_LISTEN", "must be host:port with a numeric IP, e.g. 127.0.0.1:8080"))?;
        let data_dir = PathBuf::from(get("CALLSTREAM_DATA_DIR").unwrap_or_else(|| DEFAULT_DATA_DIR.to_owned()));
        let database = Database::select(get(DATABASE_URL), &data_dir)?;

        let jwt = JwtConfig {
            secret: strong_secret("CALLSTREAM_JWT_SECRET", required("CALLSTREAM_JWT_SECRET")?)?,
            issuer: required("CALLSTREAM_JWT_ISSUER")?,
            audience: required("CALLSTREAM_JWT_AUDIENCE")?,
        };
        let resume_secret = strong_secret("CALLSTREAM_RESUME_SECRET", required("CALLSTREAM_RESUME_SECRET")?)?;
        let meter_signing_keys = parse_signing_keys(&required("CALLSTREAM_METER_SIGNING_KEYS")?)?;
        let livekit = LiveKitConfig {
            api_key: required("LIVEKIT_API_KEY")?,
            api_secret: strong_secret("LIVEKIT_API_SECRET", required("LIVEKIT_API_SECRET")?)?,
            url: required("LIVEKIT_URL")?,
        };
        if !(livekit.url.starts_with("ws://")
            || livekit.url.starts_with("wss://")
            || livekit.url.starts_with("http://")
            || livekit.url.starts_with("https://"))
        {
            return Err(problem("LIVEKIT_URL", "must start with ws://, wss://, http:// or https://"));
        }
        let durability = match get("CALLSTREAM_DURABILITY").as_deref() {
            None | Some("full") => Durability::Full,
            Some("normal") => Durability::Normal,
            Some(_) => {
                return Err(problem("CALLSTREAM_DURABILITY", "must be `full` or `normal`"));
            }
        };
        let writer_queue_capacity =
            bounded(&get, "CALLSTREAM_WRITER_QUEUE_CAPACITY", DEFAULT_WRITER_QUEUE_CAPACITY as u64, 1, 1_000_000)?
                as usize;
        let webhook_tolerance_secs = bounded(&get, "CALLSTREAM_WEBHOOK_TOLERANCE_SECS", 300, 1, 3600)?;
        let livekit_token_ttl_secs =
            bounded(&get, "CALLSTREAM_LIVEKIT_TOKEN_TTL_SECS", 600, 60, MAX_LIVEKIT_TOKEN_TTL_SECS)?;
        let idempotency_retention_secs =
            bounded(&get, "CALLSTREAM_IDEMPOTENCY_RETENTION_SECS", 86_400, 60, 30 * 86_400)?;
        let realtime = RealtimeConfig {
            reconnect_window_secs: bounded(&get, "CALLSTREAM_RECONNECT_WINDOW_SECS", 120, 1, 86_400)?,
            heartbeat_secs: bounded(&get, "CALLSTREAM_WS_HEARTBEAT_SECS", 15, 1, 300)?,
            idle_timeout_secs: bounded(&get, "CALLSTREAM_WS_IDLE_TIMEOUT_SECS", 30, 2, 600)?,
            send_timeout_ms: bounded(&get, "CALLSTREAM_WS_SEND_TIMEOUT_MS", 5000, 10, 60_000)?,
            socket_send_buffer_bytes: bounded(
                &get,
                "CALLSTREAM_SOCKET_SEND_BUFFER_BYTES",
                256 * 1024,
                4 * 1024,
                64 * 1024 * 1024,
            )?,
        };
        let policy = match get("CALLSTREAM_POLICY_FILE") {
            None => crate::domain::policy::Policy::built_in(),
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| problem("CALLSTREAM_POLICY_FILE", format!("cannot be read: {e}")))?;
                crate::domain::policy::Policy::parse(&text)
                    .map_err(|e| problem("CALLSTREAM_POLICY_FILE", format!("is not a valid policy: {e}")))?
            }
        };
        let signing_secret = match get("CALLSTREAM_OUTBOUND_SIGNING_SECRET") {
            Some(value) => strong_secret("CALLSTREAM_OUTBOUND_SIGNING_SECRET", value)?,
            // Derived, so a deployment that sets only the required secrets still signs with a key
            // nobody else has.
            None => Secret(derive_secret(jwt.secret.expose(), "callstream-outbound-signing")),
        };
        let message_sink_url = get("CALLSTREAM_MESSAGE_SINK_URL");
        if message_sink_url.as_ref().is_some_and(|u| !(u.starts_with("http://") || u.starts_with("https://"))) {
            return Err(problem("CALLSTREAM_MESSAGE_SINK_URL", "must be an http:// or https:// URL"));
        }
        let orchestration = OrchestrationConfig {
            policy,
            signing_secret,
            message_sink_url,
            executor_timeout_ms: bounded(&get, "CALLSTREAM_EXECUTOR_TIMEOUT_MS", 3000, 10, 60_000)?,
            executor_attempts: bounded(&get, "CALLSTREAM_EXECUTOR_ATTEMPTS", 3, 1, 10)?,
        };
        let insights = insights_config(&get, &orchestration.policy)?;
        let edge = EdgeConfig {
            cors_origins: cors_origins(get("CALLSTREAM_CORS_ORIGINS"))?,
            rate_limits: RateLimits {
                read_per_sec: bounded(&get, "CALLSTREAM_RATE_LIMIT_READ_PER_SEC", 2_000, 1, MAX_LIMIT)?,
                write_per_sec: bounded(&get, "CALLSTREAM_RATE_LIMIT_WRITE_PER_SEC", 1_000, 1, MAX_LIMIT)?,
                ingest_per_sec: bounded(&get, "CALLSTREAM_RATE_LIMIT_INGEST_PER_SEC", 2_000, 1, MAX_LIMIT)?,
            },
        };
        Ok(Config {
            listen,
            data_dir,
            database,
            jwt,
            resume_secret,
            meter_signing_keys,
            livekit,
            durability,
            writer_queue_capacity,
            webhook_tolerance_secs,
            livekit_token_ttl_secs,
            idempotency_retention_secs,
            realtime,
            orchestration,
            edge,
            test_clock: flag(&get, TEST_CLOCK)?,
            billing: billing_config(&get)?,
            insights,
            master_key: MasterKey::parse(&required(MasterKey::VARIABLE)?)?,
        })
    }

    /// The SQLite file in the data directory (the store when `database` is SQLite).
    pub fn database_path(&self) -> PathBuf {
        database_path(&self.data_dir)
    }

    /// The store's database as the environment (or the config file) names it, for the maintenance
    /// commands, which need nothing else.
    pub fn database_from_env() -> Result<Database, ConfigError> {
        let from_file = || {
            let path = std::env::var(CONFIG_FILE).ok()?;
            read_config_file(Path::new(&path)).ok()?.remove(DATABASE_URL)
        };
        let url = std::env::var(DATABASE_URL).ok().filter(|v| !v.trim().is_empty()).or_else(from_file);
        Database::select(url, &Self::data_dir_from_env())
    }
}

/// Names a file of `KEY=VALUE` lines read beneath the environment.
pub const CONFIG_FILE: &str = "CALLSTREAM_CONFIG_FILE";

/// `KEY=VALUE` per line (an `export ` prefix and quotes around the value are allowed; `#` starts a
/// comment line). Errors name the line, never its value.
fn read_config_file(path: &Path) -> Result<HashMap<String, String>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| problem(CONFIG_FILE, format!("`{}` cannot be read: {e}", path.display())))?;
    let mut values = HashMap::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            return Err(problem(CONFIG_FILE, format!("line {} is not KEY=VALUE", index + 1)));
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') {
            return Err(problem(CONFIG_FILE, format!("line {} has no valid variable name", index + 1)));
        }
        let value = value.trim();
        let unquoted = [('"', '"'), ('\'', '\'')]
            .iter()
            .find_map(|(open, close)| value.strip_prefix(*open).and_then(|v| v.strip_suffix(*close)))
            .unwrap_or(value);
        if values.insert(key.to_owned(), unquoted.to_owned()).is_some() {
            return Err(problem(CONFIG_FILE, format!("sets `{key}` twice (line {})", index + 1)));
        }
    }
    Ok(values)
}

/// A comma-separated list of exact origins; anything with a path, query or wildcard is refused so
/// that a typo cannot open the API to every site.
fn cors_origins(raw: Option<String>) -> Result<Vec<String>, ConfigError> {
    let Some(raw) = raw else { return Ok(Vec::new()) };
    raw.split(',')
        .map(str::trim)
        .filter(|origin| !origin.is_empty())
        .map(|origin| {
            let lower = origin.to_ascii_lowercase();
            let host = lower.strip_prefix("https://").or_else(|| lower.strip_prefix("http://"));
            match host {
                Some(host)
                    if !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c)) =>
                {
                    Ok(lower)
                }
                _ => Err(problem(
                    "CALLSTREAM_CORS_ORIGINS",
                    format!("`{origin}` is not an origin like https://app.example.com (no path, no wildcard)"),
                )),
            }
        })
        .collect()
}

pub fn database_path(data_dir: &Path) -> PathBuf {
    data_dir.join("callstream.db")
}

/// Names the PostgreSQL database that several nodes share; unset, the store is SQLite.
pub const DATABASE_URL: &str = "CALLSTREAM_DATABASE_URL";

/// Where the store lives: a SQLite file (the embedded default) or a PostgreSQL database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Database {
    /// PostgreSQL when `url` is set (it must be a `postgres://` URL), else SQLite in `data_dir`.
    pub fn select(url: Option<String>, data_dir: &Path) -> Result<Database, ConfigError> {
        match url {
            None => Ok(Database::Sqlite(database_path(data_dir))),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(Database::Postgres(url))
            }
            Some(_) => Err(problem(
                DATABASE_URL,
                "must be a postgres:// URL, e.g. postgres://callstream@db:5432/callstream (unset it for SQLite \
                 under the data directory)",
            )),
        }
    }
}

impl From<&Path> for Database {
    fn from(path: &Path) -> Self {
        Database::Sqlite(path.to_path_buf())
    }
}

impl From<&PathBuf> for Database {
    fn from(path: &PathBuf) -> Self {
        Database::Sqlite(path.clone())
    }
}

impl From<PathBuf> for Database {
    fn from(path: PathBuf) -> Self {
        Database::Sqlite(path)
    }
}

impl From<&Database> for Database {
    fn from(database: &Database) -> Self {
        database.clone()
    }
}

impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(path) => write!(f, "{}", path.display()),
            Database::Postgres(url) => write!(f, "{}", redact_url(url)),
        }
    }
}

/// A URL without its password, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

pub const MAX_LIVEKIT_TOKEN_TTL_SECS: u64 = 3600;

/// An optional integer variable within `[min, max]`.
/// Enables `POST /v1/operator/clock`; `serve` without `--dev` also wants `ALLOW_TEST_CLOCK`.
pub const TEST_CLOCK: &str = "CALLSTREAM_TEST_CLOCK";
pub const ALLOW_TEST_CLOCK: &str = "CALLSTREAM_ALLOW_TEST_CLOCK";

/// `1` or `0` (unset is `0`).
fn sink(
    get: &impl Fn(&'static str) -> Option<String>,
    url_variable: &'static str,
    secret_variable: &'static str,
) -> Result<Option<Sink>, ConfigError> {
    let Some(url) = get(url_variable) else { return Ok(None) };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(problem(url_variable, "must be an http:// or https:// URL"));
    }
    let raw = get(secret_variable)
        .ok_or_else(|| problem(secret_variable, format!("is required when {url_variable} is set")))?;
    let secret = match raw.strip_prefix("whsec_") {
        Some(encoded) => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()
                .filter(|bytes| bytes.len() >= 24)
                .ok_or_else(|| problem(secret_variable, "must be `whsec_` and the base64 of at least 24 bytes"))?
        }
        None => strong_secret(secret_variable, raw)?.0.into_bytes(),
    };
    Ok(Some(Sink { url, secret }))
}

fn billing_config(get: &impl Fn(&'static str) -> Option<String>) -> Result<BillingConfig, ConfigError> {
    let currency = get("CALLSTREAM_BILLING_CURRENCY").unwrap_or_else(|| "USD".into());
    let prices = match get("CALLSTREAM_BILLING_PRICES") {
        None => {
            let default = crate::domain::billing::PriceTable::default();
            crate::domain::billing::PriceTable { currency, ..default }
        }
        Some(raw) => crate::domain::billing::PriceTable::parse(&currency, &raw)
            .map_err(|why| problem("CALLSTREAM_BILLING_PRICES", why))?,
    };
    if prices.currency.len() != 3 || !prices.currency.chars().all(|c| c.is_ascii_uppercase()) {
        return Err(problem("CALLSTREAM_BILLING_CURRENCY", "must be an ISO 4217 code such as USD"));
    }
    Ok(BillingConfig {
        sink: sink(get, "CALLSTREAM_BILLING_SINK_URL", "CALLSTREAM_BILLING_SINK_SECRET")?,
        alert_sink: sink(get, "CALLSTREAM_ALERT_SINK_URL", "CALLSTREAM_ALERT_SINK_SECRET")?,
        lateness_secs: bounded(get, "CALLSTREAM_RECONCILIATION_LATENESS_SECS", 900, 0, 7 * 86_400)?,
        retry: crate::domain::billing::RetryPolicy {
            max_attempts: bounded(get, "CALLSTREAM_BILLING_MAX_ATTEMPTS", 8, 1, 100)? as u32,
            base_secs: bounded(get, "CALLSTREAM_BILLING_RETRY_BASE_SECS", 2, 1, 3600)?,
            max_delay_secs: bounded(get, "CALLSTREAM_BILLING_RETRY_MAX_SECS", 900, 1, 86_400)?,
        },
        timeout_ms: bounded(get, "CALLSTREAM_BILLING_TIMEOUT_MS", 5000, 10, 60_000)?,
        poll_ms: bounded(get, "CALLSTREAM_BILLING_POLL_MS", 500, 10, 60_000)?,
        prices,
    })
}

fn insights_config(
    get: &impl Fn(&'static str) -> Option<String>,
    policy: &crate::domain::policy::Policy,
) -> Result<InsightsConfig, ConfigError> {
    use crate::domain::insights::{DEFAULT_PAUSE_MS, Lexicon};
    const LEXICON: &str = "CALLSTREAM_FILLER_LEXICON_FILE";
    const EVALUATOR: &str = "CALLSTREAM_INSIGHTS_EVALUATOR_URL";
    let lexicon = match get(LEXICON) {
        None => Lexicon::built_in(),
        Some(path) => {
            let text = std::fs::read_to_string(&path).map_err(|e| problem(LEXICON, format!("cannot be read: {e}")))?;
            Lexicon::parse(&text).map_err(|e| problem(LEXICON, format!("is not a valid lexicon: {e}")))?
        }
    };
    let evaluator_url = get(EVALUATOR).filter(|u| !u.trim().is_empty());
    if let Some(url) = &evaluator_url
        && let Err((_, why)) = policy.allowlist.admit(url)
    {
        return Err(problem(EVALUATOR, format!("is not admitted by the policy's allowedHosts: {why}")));
    }
    Ok(InsightsConfig {
        lexicon: std::sync::Arc::new(lexicon),
        pause_ms: bounded(get, "CALLSTREAM_INSIGHTS_PAUSE_MS", DEFAULT_PAUSE_MS as u64, 200, 60_000)? as i64,
        evaluator_url,
    })
}

pub fn flag(get: &impl Fn(&'static str) -> Option<String>, variable: &'static str) -> Result<bool, ConfigError> {
    match get(variable).as_deref().map(str::trim) {
        None | Some("0") => Ok(false),
        Some("1") => Ok(true),
        Some(_) => Err(problem(variable, "must be `1` or `0`")),
    }
}

fn bounded(
    get: &impl Fn(&'static str) -> Option<String>,
    variable: &'static str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    match get(variable) {
        None => Ok(default),
        Some(raw) => raw
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|v| (min..=max).contains(v))
            .ok_or_else(|| problem(variable, format!("must be an integer between {min} and {max}"))),
    }
}

fn strong_secret(variable: &'static str, value: String) -> Result<Secret, ConfigError> {
    if value.len() < MIN_SECRET_LEN {
        return Err(problem(variable, format!("must be at least {MIN_SECRET_LEN} characters long")));
    }
    Ok(Secret(value))
}

/// `kid:secret[,kid:secret…]`; the first key signs.
fn parse_signing_keys(raw: &str) -> Result<Vec<SigningKey>, ConfigError> {
    const VAR: &str = "CALLSTREAM_METER_SIGNING_KEYS";
    let mut keys: Vec<SigningKey> = Vec::new();
    for (index, entry) in raw.split(',').enumerate() {
        let Some((key_id, secret)) = entry.trim().split_once(':') else {
            return Err(problem(VAR, format!("entry {} must be kid:secret", index + 1)));
        };
        if key_id.is_empty() || !key_id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
            return Err(problem(VAR, format!("entry {} has an empty or invalid key id", index + 1)));
        }
        if keys.iter().any(|k| k.key_id == key_id) {
            return Err(problem(VAR, format!("key id `{key_id}` appears twice")));
        }
        let secret = strong_secret(VAR, secret.to_owned()).map_err(|_| {
            problem(VAR, format!("the secret of key `{key_id}` must be at least {MIN_SECRET_LEN} characters long"))
        })?;
        keys.push(SigningKey { key_id: key_id.to_owned(), secret });
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRONG: &str = "0123456789abcdef0123456789abcdef";

    fn full_env() -> HashMap<&'static str, String> {
        HashMap::from([
            ("CALLSTREAM_JWT_SECRET", STRONG.to_owned()),
            ("CALLSTREAM_JWT_ISSUER", "iss".to_owned()),
            ("CALLSTREAM_JWT_AUDIENCE", "aud".to_owned()),
            ("CALLSTREAM_RESUME_SECRET", STRONG.to_owned()),
            ("CALLSTREAM_METER_SIGNING_KEYS", format!("k1:{STRONG},k0:{STRONG}")),
            ("LIVEKIT_API_KEY", "key".to_owned()),
            ("LIVEKIT_API_SECRET", STRONG.to_owned()),
            ("LIVEKIT_URL", "wss://lk.example".to_owned()),
            (MasterKey::VARIABLE, MASTER.to_owned()),
        ])
    }

    /// 32 bytes of 0x01, base64.
    const MASTER: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

    fn load(env: &HashMap<&'static str, String>, dev: Option<&DevSecrets>) -> Result<Config, ConfigError> {
        Config::load(|name| env.get(name).cloned(), dev)
    }

    #[test]
    fn the_database_url_selects_postgres_and_anything_else_is_refused_by_name() {
        let mut env = full_env();
        let config = load(&env, None).expect("valid");
        assert_eq!(config.database, Database::Sqlite(PathBuf::from(DEFAULT_DATA_DIR).join("callstream.db")));
        env.insert(DATABASE_URL, "postgres://app:s3cret@db:5432/calls".to_owned());
        let config = load(&env, None).expect("valid");
        assert_eq!(config.database, Database::Postgres("postgres://app:s3cret@db:5432/calls".to_owned()));
        assert_eq!(config.database.to_string(), "postgres://app:***@db:5432/calls", "never the password");
        env.insert(DATABASE_URL, "mysql://app:s3cret@db/calls".to_owned());
        let err = load(&env, None).expect_err("not postgres").to_string();
        assert!(err.contains(DATABASE_URL) && !err.contains("s3cret"), "{err}");
    }

    #[test]
    fn a_complete_environment_loads_with_defaults() {
        let config = load(&full_env(), None).expect("valid");
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.durability, Durability::Full);
        assert_eq!(config.meter_signing_keys[0].key_id, "k1");
    }

    #[test]
    fn each_missing_secret_is_named() {
        for name in full_env().keys() {
            let mut env = full_env();
            env.remove(name);
            assert_eq!(load(&env, None).expect_err("missing").variable, *name);
        }
    }

    #[test]
    fn malformed_values_are_named_without_the_value() {
        let mut env = full_env();
        env.insert("CALLSTREAM_JWT_SECRET", "short-secret-value".into());
        let err = load(&env, None).expect_err("weak");
        assert_eq!(err.variable, "CALLSTREAM_JWT_SECRET");
        assert!(!err.to_string().contains("short-secret-value"));

        let mut env = full_env();
        env.insert("CALLSTREAM_METER_SIGNING_KEYS", "nocolon".into());
        assert_eq!(load(&env, None).expect_err("bad keys").variable, "CALLSTREAM_METER_SIGNING_KEYS");
        let mut env = full_env();
        env.insert("CALLSTREAM_DURABILITY", "sometimes".into());
        assert_eq!(load(&env, None).expect_err("bad durability").variable, "CALLSTREAM_DURABILITY");
        let mut env = full_env();
        env.insert("CALLSTREAM_LIVEKIT_TOKEN_TTL_SECS", "7200".into());
        assert_eq!(load(&env, None).expect_err("ttl over 1 h").variable, "CALLSTREAM_LIVEKIT_TOKEN_TTL_SECS");
        let mut env = full_env();
        env.insert("CALLSTREAM_WEBHOOK_TOLERANCE_SECS", "soon".into());
        assert_eq!(load(&env, None).expect_err("bad tolerance").variable, "CALLSTREAM_WEBHOOK_TOLERANCE_SECS");
        let mut env = full_env();
        env.insert("CALLSTREAM_LISTEN", "nowhere".into());
        assert_eq!(load(&env, None).expect_err("bad listen").variable, "CALLSTREAM_LISTEN");
        for origin in ["*", "https://app.example.com/path", "app.example.com", "https://*.example.com"] {
            let mut env = full_env();
            env.insert("CALLSTREAM_CORS_ORIGINS", origin.into());
            assert_eq!(load(&env, None).expect_err(origin).variable, "CALLSTREAM_CORS_ORIGINS");
        }
        for malformed in ["not base64!", "AQEBAQ==", "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQ=="] {
            let mut env = full_env();
            env.insert(MasterKey::VARIABLE, malformed.into());
            let err = load(&env, None).expect_err(malformed);
            assert_eq!(err.variable, MasterKey::VARIABLE);
            assert!(!err.to_string().contains(malformed), "never the value in the message");
        }
        assert_eq!(load(&full_env(), None).expect("valid").master_key.expose(), &[1u8; 32]);
        let mut env = full_env();
        env.insert("CALLSTREAM_RATE_LIMIT_INGEST_PER_SEC", "0".into());
        assert_eq!(load(&env, None).expect_err("zero rate").variable, "CALLSTREAM_RATE_LIMIT_INGEST_PER_SEC");
    }

    #[test]
    fn cors_origins_are_exact_and_lowercased() {
        let mut env = full_env();
        env.insert("CALLSTREAM_CORS_ORIGINS", "https://App.Example.com, http://localhost:5173".into());
        let config = load(&env, None).expect("valid");
        assert_eq!(config.edge.cors_origins, vec!["https://app.example.com", "http://localhost:5173"]);
        assert!(load(&full_env(), None).expect("valid").edge.cors_origins.is_empty(), "none by default");
    }

    #[test]
    fn a_config_file_fills_in_beneath_the_environment_and_refuses_unknown_keys() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("callstream.env");
        let mut lines: Vec<String> = full_env().into_iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        lines.push("# a comment".into());
        lines.push("export CALLSTREAM_WS_HEARTBEAT_SECS=7".into());
        std::fs::write(&path, lines.join("\n")).expect("write");
        let env = HashMap::from([
            (CONFIG_FILE, path.display().to_string()),
            ("CALLSTREAM_JWT_ISSUER", "from-env".to_owned()),
        ]);
        let config = Config::load_layered(|name| env.get(name).cloned(), None).expect("file + env");
        assert_eq!(config.jwt.issuer, "from-env", "the environment wins");
        assert_eq!(config.jwt.audience, "aud", "the file fills in");
        assert_eq!(config.realtime.heartbeat_secs, 7);

        for (content, expected) in [
            ("CALLSTREAM_HEARTBEAT=5", "CALLSTREAM_HEARTBEAT"),
            ("not a line", "line 1"),
            ("CALLSTREAM_LISTEN=a\nCALLSTREAM_LISTEN=b", "twice"),
        ] {
            let mut text = lines.join("\n");
            text.push('\n');
            text.push_str(content);
            std::fs::write(&path, text).expect("write");
            let err = Config::load_layered(|name| env.get(name).cloned(), None).expect_err(content);
            assert_eq!(err.variable, CONFIG_FILE);
            assert!(err.problem.contains(expected), "{err}");
            assert!(!err.to_string().contains(STRONG), "never a secret in the message");
        }
        let missing = HashMap::from([(CONFIG_FILE, "/nonexistent/callstream.env".to_owned())]);
        assert_eq!(Config::load_layered(|n| missing.get(n).cloned(), None).expect_err("missing").variable, CONFIG_FILE);
    }

    #[test]
    fn environment_wins_over_dev_secrets() {
        let dev = DevSecrets::generate();
        let from_dev = load(&HashMap::new(), Some(&dev)).expect("dev alone is complete");
        assert_eq!(from_dev.jwt.secret, dev.jwt_secret);
        let env = HashMap::from([("CALLSTREAM_JWT_ISSUER", "prod-issuer".to_owned())]);
        assert_eq!(load(&env, Some(&dev)).expect("dev + env").jwt.issuer, "prod-issuer");
    }
}
