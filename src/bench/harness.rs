//! A child `callstream serve` on a temporary database, for load generators in another process.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use crate::config::{JwtConfig, Secret};
use crate::domain::principal::Role;

const BENCH_LIVEKIT_KEY: &str = "bench-key";

pub struct ChildServer {
    child: Child,
    pub address: String,
    pub data_dir: PathBuf,
    /// The LiveKit key and the secret every secret variable is set to.
    pub livekit_key: String,
    pub secret: String,
    pub master_key: crate::config::MasterKey,
    jwt: JwtConfig,
}

impl ChildServer {
    pub async fn start(durability: &str) -> Result<ChildServer, String> {
        Self::start_node(durability, None, None).await
    }

    /// A server on `database_url` (PostgreSQL; `None`: SQLite in its data dir), with the secrets
    /// and master key of `peer` when given: another node of the same deployment.
    pub async fn start_node(
        durability: &str,
        database_url: Option<&str>,
        peer: Option<&ChildServer>,
    ) -> Result<ChildServer, String> {
        let data_dir = std::env::temp_dir().join(format!("callstream-bench-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&data_dir).map_err(|e| e.to_string())?;
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
        let secret = peer.map_or_else(|| format!("bench-{}", uuid::Uuid::new_v4().simple()), |p| p.secret.clone());
        let jwt = JwtConfig {
            secret: Secret::new(secret.clone()),
            issuer: "callstream-bench".into(),
            audience: "callstream".into(),
        };
        let master_key = peer.map_or_else(crate::config::MasterKey::generate, |p| p.master_key.clone());
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut command = Command::new(exe);
        if let Some(url) = database_url {
            command.env(crate::config::DATABASE_URL, url);
        }
        let child = command
            .arg("serve")
            .env("CALLSTREAM_LISTEN", format!("127.0.0.1:{port}"))
            .env("CALLSTREAM_DATA_DIR", &data_dir)
            .env("CALLSTREAM_JWT_SECRET", &secret)
            .env("CALLSTREAM_JWT_ISSUER", &jwt.issuer)
            .env("CALLSTREAM_JWT_AUDIENCE", &jwt.audience)
            .env("CALLSTREAM_RESUME_SECRET", &secret)
            .env("CALLSTREAM_METER_SIGNING_KEYS", format!("bench:{secret}"))
            .env("LIVEKIT_API_KEY", BENCH_LIVEKIT_KEY)
            .env("LIVEKIT_API_SECRET", &secret)
            .env("LIVEKIT_URL", "ws://127.0.0.1:7880")
            .env(crate::config::MasterKey::VARIABLE, master_key.encode())
            .env("CALLSTREAM_DURABILITY", durability)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start callstream serve: {e}"))?;
        let server = ChildServer {
            child,
            address: format!("http://127.0.0.1:{port}"),
            data_dir,
            livekit_key: BENCH_LIVEKIT_KEY.to_owned(),
            secret,
            master_key,
            jwt,
        };
        let client = reqwest::Client::new();
        for _ in 0..1000 {
            if let Ok(response) = client.get(format!("{}/health/ready", server.address)).send().await
                && response.status().is_success()
            {
                return Ok(server);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err("the server did not become ready within 10 s".into())
    }

    /// Create `count` sessions as `token`'s owner; returns their ids.
    pub async fn create_sessions(
        &self,
        client: &reqwest::Client,
        token: &str,
        count: usize,
    ) -> Result<Vec<String>, String> {
        let mut sessions = Vec::with_capacity(count);
        for _ in 0..count {
            let created: serde_json::Value = client
                .post(format!("{}/v1/call/sessions", self.address))
                .bearer_auth(token)
                .json(&serde_json::json!({"title": "bench"}))
                .send()
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            sessions.push(created["sessionId"].as_str().ok_or("no sessionId")?.to_owned());
        }
        Ok(sessions)
    }

    pub fn token(&self, sub: &str, roles: &[Role]) -> Result<String, String> {
        crate::app::auth::mint(&self.jwt, crate::clock::Clock::system().now(), sub, "bench", roles, 3600)
            .map_err(|e| e.to_string())
    }

    pub fn database(&self) -> PathBuf {
        crate::config::database_path(&self.data_dir)
    }

    /// Resident memory of the server process, from /proc.
    pub fn rss_kib(&self) -> Result<u64, String> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).map_err(|e| e.to_string())?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| "no VmRSS in /proc status".to_owned())
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// The p-th percentile of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Run one benchmark on a 2-worker runtime; its error becomes a message and a failing exit.
pub fn block_on<F: std::future::Future<Output = Result<(), String>>>(name: &str, work: F) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => match runtime.block_on(work) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("bench {name} failed: {err}");
                ExitCode::FAILURE
            }
        },
        Err(err) => {
            eprintln!("cannot start a runtime: {err}");
            ExitCode::FAILURE
        }
    }
}
