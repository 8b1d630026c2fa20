//! A real browser for the console's end-to-end tests: Debian's Chromium, headless, driven over the
//! W3C WebDriver protocol by its ChromeDriver (plain HTTP, so no driver library is needed), and a
//! TCP proxy between it and the server whose connections the test can cut.
//!
//! Without Chromium and ChromeDriver the console suite says so and passes; CI sets
//! `CALLSTREAM_REQUIRE_BROWSER=1` (after installing Debian's `chromium` and `chromium-driver`),
//! which makes a missing browser a failure. `CALLSTREAM_TEST_CHROMIUM` and
//! `CALLSTREAM_TEST_CHROMEDRIVER` name other binaries.

use std::io::Write;
use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn binary(variable: &str, default: &str) -> Option<PathBuf> {
    let path = std::env::var(variable).map(PathBuf::from).unwrap_or_else(|_| PathBuf::from(default));
    path.exists().then_some(path)
}

pub struct Browser {
    driver: Child,
    url: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    /// A headless Chromium at 1280 × 900, or `None` (after saying so) when there is none.
    pub async fn start(test: &str) -> Option<Browser> {
        let (Some(chromium), Some(chromedriver)) = (
            binary("CALLSTREAM_TEST_CHROMIUM", "/usr/bin/chromium"),
            binary("CALLSTREAM_TEST_CHROMEDRIVER", "/usr/bin/chromedriver"),
        ) else {
            let why = "Chromium or ChromeDriver is not installed (Debian: apt install chromium chromium-driver)";
            if std::env::var("CALLSTREAM_REQUIRE_BROWSER").as_deref() == Ok("1") {
                panic!("CALLSTREAM_REQUIRE_BROWSER=1 but {why}");
            }
            let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}; the console's browser tests did not run.");
            return None;
        };
        let port = StdListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let http = crate::helpers::client();
        for _ in 0..200 {
            if http.get(format!("{url}/status")).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let profile = tempfile::tempdir().expect("profile dir");
        // As the machine's notes say: without the background-networking flags Chromium keeps
        // trying this closed network.
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,900",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let created: Value = http
            .post(format!("{url}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("json");
        let session = created["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {created}"));
        Some(Browser { url: format!("{url}/session/{session}"), driver, http, _profile: profile })
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.expect("webdriver").json().await.expect("json");
        answer["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({ "url": url }))).await;
    }

    /// Run `script` (a function body; `arguments` holds `args`) in the page; answers its return.
    pub async fn run(&self, script: &str, args: Value) -> Value {
        self.command(reqwest::Method::POST, "/execute/sync", Some(json!({"script": script, "args": args}))).await
    }

    /// Wait (up to 15 s) until `script` returns something truthy; answers it.
    pub async fn until(&self, what: &str, script: &str) -> Value {
        for _ in 0..300 {
            let value = self.run(script, json!([])).await;
            if !matches!(&value, Value::Null | Value::Bool(false)) && value != json!(0) && value != json!("") {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let status = self.run("return document.getElementById('status')?.textContent", json!([])).await;
        self.screenshot(&format!("failed-{}", what.replace(|c: char| !c.is_ascii_alphanumeric(), "-"))).await;
        panic!("{what}: not within 15 s (status bar: {status}; screenshot in target/console-screenshots/)");
    }

    /// The first element matching `css`, waited for.
    async fn element(&self, css: &str) -> String {
        for _ in 0..300 {
            let found = self
                .command(reqwest::Method::POST, "/element", Some(json!({"using": "css selector", "value": css})))
                .await;
            if let Some(id) = found[ELEMENT].as_str() {
                return id.to_owned();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no element `{css}` within 15 s");
    }

    /// A real click (the browser's pointer, on the element's centre).
    pub async fn click(&self, css: &str) {
        let id = self.element(css).await;
        let answer = self.command(reqwest::Method::POST, &format!("/element/{id}/click"), Some(json!({}))).await;
        assert!(answer.is_null(), "click on `{css}`: {answer}");
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.command(reqwest::Method::POST, &format!("/element/{id}/value"), Some(json!({ "text": text }))).await;
    }

    /// Press keys one after another on whatever has the focus (WebDriver key codes, e.g.
    /// "\u{E004}" for Tab, "\u{E007}" for Enter).
    pub async fn keys(&self, keys: &str) {
        for key in keys.chars() {
            self.chord(&[key]).await;
        }
    }

    /// Hold `keys` down together, then let go (e.g. Shift+Tab: `['\u{E008}', '\u{E004}']`).
    pub async fn chord(&self, keys: &[char]) {
        let down = keys.iter().map(|k| json!({"type": "keyDown", "value": k.to_string()}));
        let up = keys.iter().rev().map(|k| json!({"type": "keyUp", "value": k.to_string()}));
        let actions: Vec<Value> = down.chain(up).collect();
        self.command(
            reqwest::Method::POST,
            "/actions",
            Some(json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]})),
        )
        .await;
    }

    pub async fn resize(&self, width: u32, height: u32) {
        self.command(reqwest::Method::POST, "/window/rect", Some(json!({"width": width, "height": height}))).await;
    }

    /// A PNG of the viewport under `target/console-screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) {
        let data = self.command(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD.decode(data.as_str().expect("base64")).expect("png");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target").join("console-screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
    }
}

/// A TCP proxy to a server: the page talks to the server through it, and `cut` drops every
/// connection and refuses new ones until `restore`, as a network that went away would.
pub struct Proxy {
    pub address: String,
    state: Arc<Mutex<ProxyState>>,
}

#[derive(Default)]
struct ProxyState {
    cut: bool,
    pipes: Vec<AbortHandle>,
}

impl Proxy {
    pub async fn start(target: &str) -> Proxy {
        let target = target.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = format!("http://{}", listener.local_addr().expect("addr"));
        let state: Arc<Mutex<ProxyState>> = Arc::default();
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if shared.lock().expect("lock").cut {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let pipe = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                let mut state = shared.lock().expect("lock");
                state.pipes.retain(|p| !p.is_finished());
                state.pipes.push(pipe.abort_handle());
            }
        });
        Proxy { address, state }
    }

    pub fn cut(&self) {
        let mut state = self.state.lock().expect("lock");
        state.cut = true;
        for pipe in state.pipes.drain(..) {
            pipe.abort();
        }
    }

    pub fn restore(&self) {
        self.state.lock().expect("lock").cut = false;
    }
}
