//! The command line: `serve`, `serve --dev`, `migrate`, `verify`, `rebuild`, `token`, `bench`.

use std::path::Path;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, Database, DevSecrets, MasterKey};
use crate::domain::principal::Role;

#[derive(Debug, Parser)]
#[command(name = "callstream", version, about = "Event-sourced realtime call backend")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server. Production needs every secret in the environment; `--dev` generates them.
    Serve {
        /// Embedded default: SQLite under CALLSTREAM_DATA_DIR (./data), dev secrets kept there,
        /// ready-to-use tokens printed.
        #[arg(long)]
        dev: bool,
    },
    /// Start an in-process server on a temporary database and drive a whole call through the
    /// public API, printing a timeline.
    Demo,
    /// Apply pending migrations to the database and exit.
    Migrate,
    /// Recompute the hash chain and compare projections with a rebuild; exit 1 on the first problem.
    Verify,
    /// Drop the projections and rebuild them from the log.
    Rebuild,
    /// Mint a JWT from the configured secret (or the dev secrets with `--dev`).
    Token {
        #[arg(long)]
        sub: String,
        #[arg(long)]
        tenant: String,
        /// user, operator or service; repeat for several.
        #[arg(long = "role", default_value = "user")]
        roles: Vec<String>,
        #[arg(long, default_value_t = 3600)]
        ttl_secs: i64,
        #[arg(long)]
        dev: bool,
    },
    /// Load generators for the benchmarks in docs/performance.md.
    #[command(subcommand)]
    Bench(crate::bench::BenchCommand),
}

pub fn run(cli: Cli) -> ExitCode {
    crate::orchestration::outbound::install_crypto_provider();
    match cli.command {
        Command::Serve { dev } => serve(dev),
        Command::Demo => crate::demo::run(),
        Command::Migrate => migrate(),
        Command::Verify => verify(),
        Command::Rebuild => rebuild(),
        Command::Token { sub, tenant, roles, ttl_secs, dev } => token(&sub, &tenant, &roles, ttl_secs, dev),
        Command::Bench(command) => crate::bench::run(command),
    }
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("callstream: {message}");
    ExitCode::FAILURE
}

const DEV_SECRETS_FILE: &str = "dev-secrets.json";

/// Load the dev secrets kept in the data dir, generating them on first use.
pub fn dev_secrets(data_dir: &Path) -> Result<DevSecrets, String> {
    let path = data_dir.join(DEV_SECRETS_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let mut secrets: DevSecrets =
            serde_json::from_str(&text).map_err(|e| format!("{} is not valid: {e}", path.display()))?;
        if secrets.master_key.is_none() {
            // Written before crypto-shredding: add a master key once, never a new one per start.
            secrets.master_key = DevSecrets::generate().master_key;
            let text = serde_json::to_string_pretty(&secrets).map_err(|e| e.to_string())?;
            let staged = path.with_extension("json.new");
            let _ = std::fs::remove_file(&staged);
            write_private(&staged, &text).map_err(|e| format!("cannot write {}: {e}", staged.display()))?;
            std::fs::rename(&staged, &path).map_err(|e| format!("cannot replace {}: {e}", path.display()))?;
        }
        return Ok(secrets);
    }
    std::fs::create_dir_all(data_dir).map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let secrets = DevSecrets::generate();
    let text = serde_json::to_string_pretty(&secrets).map_err(|e| e.to_string())?;
    write_private(&path, &text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(secrets)
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(text.as_bytes())
}

fn load_config(dev: bool) -> Result<Config, String> {
    let secrets = if dev { Some(dev_secrets(&Config::data_dir_from_env())?) } else { None };
    Config::from_env(secrets.as_ref()).map_err(|e| e.to_string())
}

fn serve(dev: bool) -> ExitCode {
    crate::telemetry::init("info");
    let config = match load_config(dev) {
        Ok(config) => config,
        Err(err) => return fail(err),
    };
    // A movable clock would let anyone holding an operator token rewrite when things happened.
    if config.test_clock && !dev && std::env::var(crate::config::ALLOW_TEST_CLOCK).as_deref() != Ok("1") {
        return fail(format!(
            "{} is for tests and demos: use `serve --dev`, or also set {}=1 if you really mean it",
            crate::config::TEST_CLOCK,
            crate::config::ALLOW_TEST_CLOCK
        ));
    }
    if dev {
        print_dev_banner(&config);
    }
    let runtime = actix_web::rt::System::new();
    runtime.block_on(async move {
        let app = match crate::Application::build(config) {
            Ok(app) => app,
            Err(err) => return fail(format!("cannot start: {err}")),
        };
        tracing::info!(port = app.port(), "callstream listening");
        match app.run_until_signalled().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => fail(format!("server stopped with an error: {err}")),
        }
    })
}

fn print_dev_banner(config: &Config) {
    let mint = |sub: &str, roles: &[Role]| {
        crate::app::auth::mint(&config.jwt, crate::clock::Clock::system().now(), sub, "dev", roles, 24 * 3600)
            .unwrap_or_else(|e| format!("<{e}>"))
    };
    println!("callstream dev mode");
    println!("  listening on   http://{}", config.listen);
    println!("  database       {}", config.database);
    println!("  user token     {}", mint("dev-user", &[Role::User]));
    let operator = mint("dev-operator", &[Role::Operator]);
    println!("  operator token {operator}");
    println!("  service token  {}", mint("dev-agent", &[Role::Service]));
    println!(
        "  try: curl -s -X POST http://{}/v1/call/sessions -H \"Authorization: Bearer $USER_TOKEN\" \\",
        config.listen
    );
    println!("         -H 'Content-Type: application/json' -d '{{\"title\":\"hello\"}}'");
    // The token rides in the fragment, which browsers never send; the page keeps it in memory and
    // takes it out of the address bar.
    println!("  console        http://{}/console#token={operator}", config.listen);
}

/// The database the maintenance commands work on; a SQLite file must already exist for `verify`
/// and `rebuild` (they never create one).
fn database(must_exist: bool) -> Result<Database, String> {
    let database = Config::database_from_env().map_err(|e| e.to_string())?;
    if let Database::Sqlite(path) = &database
        && must_exist
        && !path.exists()
    {
        return Err(format!("no database at {}", path.display()));
    }
    Ok(database)
}

/// The maintenance commands open sealed payloads: `CALLSTREAM_MASTER_KEY`, or the key `serve
/// --dev` keeps in the data dir.
fn master_key() -> Result<MasterKey, String> {
    if let Some(encoded) = std::env::var(MasterKey::VARIABLE).ok().filter(|v| !v.trim().is_empty()) {
        return MasterKey::parse(&encoded).map_err(|e| e.to_string());
    }
    let dev_file = Config::data_dir_from_env().join(DEV_SECRETS_FILE);
    if dev_file.exists()
        && let Some(encoded) = dev_secrets(&Config::data_dir_from_env())?.master_key
    {
        return MasterKey::parse(encoded.expose()).map_err(|e| e.to_string());
    }
    Err(format!("{}: is required but not set (and there are no dev secrets in the data dir)", MasterKey::VARIABLE))
}

fn migrate() -> ExitCode {
    let master_key = match master_key() {
        Ok(key) => key,
        Err(err) => return fail(err),
    };
    let database = match database(false) {
        Ok(database) => database,
        Err(err) => return fail(err),
    };
    match crate::store::migrate(&database, &master_key) {
        Ok(version) => {
            println!("database {database} at schema version {version}");
            ExitCode::SUCCESS
        }
        Err(err) => fail(err),
    }
}

fn verify() -> ExitCode {
    let path = match database(true) {
        Ok(database) => database,
        Err(err) => return fail(err),
    };
    let master_key = match master_key() {
        Ok(key) => key,
        Err(err) => return fail(err),
    };
    match crate::store::verify(&path, &master_key) {
        Err(err) => fail(format!("verify could not read the database: {err}")),
        Ok(report) => {
            println!("events: {}  streams: {}", report.events, report.streams);
            if let Some(broken) = &report.first_broken {
                println!("BROKEN at position {}: {}", broken.position, broken.reason);
            } else {
                println!("hash chain: ok");
            }
            for (table, rows) in &report.projection_differences {
                println!("PROJECTION MISMATCH: {table} differs from a rebuild in {rows} rows");
            }
            if report.projection_differences.is_empty() {
                println!("projections: equal to a rebuild from the log");
            }
            if report.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
    }
}

fn rebuild() -> ExitCode {
    let path = match database(true) {
        Ok(database) => database,
        Err(err) => return fail(err),
    };
    let master_key = match master_key() {
        Ok(key) => key,
        Err(err) => return fail(err),
    };
    match crate::store::rebuild(&path, &master_key) {
        Ok(replayed) => {
            println!("rebuilt projections from {replayed} events");
            ExitCode::SUCCESS
        }
        Err(err) => fail(format!("rebuild failed: {err}")),
    }
}

fn token(sub: &str, tenant: &str, roles: &[String], ttl_secs: i64, dev: bool) -> ExitCode {
    let roles: Result<Vec<Role>, String> = roles
        .iter()
        .map(|r| Role::parse(r).ok_or_else(|| format!("unknown role `{r}` (user, operator, service)")))
        .collect();
    let roles = match roles {
        Ok(roles) => roles,
        Err(err) => return fail(err),
    };
    if !(1..=30 * 24 * 3600).contains(&ttl_secs) {
        return fail("--ttl-secs must be between 1 and 2592000");
    }
    let config = match load_config(dev) {
        Ok(config) => config,
        Err(err) => return fail(err),
    };
    match crate::app::auth::mint(&config.jwt, crate::clock::Clock::system().now(), sub, tenant, &roles, ttl_secs) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(err) => fail(err),
    }
}
