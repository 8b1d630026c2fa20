//! Executors behind a small registry. `note.create` is internal (its effect is an event in the
//! session); `webhook.post` and `message.send` are outbound HTTP with a timeout, bounded retries
//! with exponential backoff and jitter, failure classification into stable codes, and Standard
//! Webhooks signatures (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC>`).

use std::time::{Duration, Instant};

use base64::Engine;
use hmac::{Hmac, Mac};
use rand::Rng;
use serde_json::{Value, json};
use sha2::Sha256;

use super::outbound::{Outbound, is_address_forbidden};
use crate::clock::Clock;
use crate::config::OrchestrationConfig;
use crate::domain::error::ErrorCode;

pub use crate::domain::action::Outcome;

/// How an action type is carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Executor {
    /// Runs inside the write transaction: appends `orchestration.note.created`.
    Note,
    /// An HTTP POST to the `url` param (allowlisted by policy).
    Webhook,
    /// An HTTP POST of `{to, text}` to the configured message sink.
    Message,
    /// The session's insights and transcript posted to the configured evaluator, falling back to
    /// the rule-based evaluation (docs/insights.md). Runs after the call too.
    Evaluate,
}

impl Executor {
    /// Whether the action may run on a terminal session: post-call work.
    pub fn runs_after_the_call(self) -> bool {
        self == Executor::Evaluate
    }
}

/// The registry: action types that have an executor.
pub fn executor_for(action_type: &str) -> Option<Executor> {
    match action_type {
        "note.create" => Some(Executor::Note),
        "webhook.post" => Some(Executor::Webhook),
        "message.send" => Some(Executor::Message),
        "insights.evaluate" => Some(Executor::Evaluate),
        _ => None,
    }
}

/// Check an action's params before anything is appended; the message names what is wrong.
pub fn validate_params(executor: Executor, params: &Value) -> Result<(), String> {
    let text = |key: &str, max: usize| match params.get(key).and_then(Value::as_str) {
        Some(value) if !value.is_empty() && value.chars().count() <= max => Ok(()),
        _ => Err(format!("`params.{key}` must be a string of 1–{max} characters")),
    };
    match executor {
        Executor::Note => text("text", 10_000),
        Executor::Webhook => {
            text("url", 2_000)?;
            match params.get("body") {
                None | Some(Value::Object(_)) => Ok(()),
                Some(_) => Err("`params.body` must be an object".into()),
            }
        }
        Executor::Message => {
            text("to", 256)?;
            text("text", 4_000)
        }
        Executor::Evaluate => match params.as_object() {
            Some(params) if params.keys().all(|k| k == "instructions") => match params.get("instructions") {
                None => Ok(()),
                Some(_) => text("instructions", 2_000),
            },
            _ => Err("`params` may hold only `instructions` (a string of 1–2000 characters)".into()),
        },
    }
}

/// The pause before retry number `retry` (1 = the second attempt): 100 ms, 200 ms, 400 ms … up to
/// 6.4 s, plus `jitter` (0..=1) of as much again, so receivers are not hit in lockstep.
pub fn backoff(retry: u64, jitter: f64) -> Duration {
    let base = 100u64 << (retry.max(1) - 1).min(6);
    Duration::from_millis(base + (base as f64 * jitter.clamp(0.0, 1.0)) as u64)
}

/// The longest an outbound delivery can take with this config: every attempt timing out after the
/// longest backoff. A claim's lease outlasts it.
pub fn longest_delivery(config: &OrchestrationConfig) -> Duration {
    let attempts = config.executor_attempts.max(1);
    let waits: Duration = (1..attempts).map(|retry| backoff(retry, 1.0)).sum();
    Duration::from_millis(config.executor_timeout_ms * attempts) + waits
}

/// Sign like Standard Webhooks: HMAC-SHA256 over `id.timestamp.body`, base64, versioned `v1,`.
pub fn sign(secret: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

/// Deliver an outbound action. `id` is the action id: the same for every attempt, so a receiver
/// can de-duplicate. A `webhook.post` URL is admitted by the policy's allowlist again here (the
/// URL the client is handed is the one that was checked) and goes out on the guarded client; the
/// configured message sink goes out on the trusted one.
pub async fn deliver(
    config: &OrchestrationConfig,
    outbound: &Outbound,
    clock: &Clock,
    executor: Executor,
    id: &str,
    params: &Value,
) -> Outcome {
    let (client, url, body) = match executor {
        Executor::Webhook => {
            let raw = params.get("url").and_then(Value::as_str).unwrap_or_default();
            match config.policy.allowlist.admit(raw) {
                Ok(target) => (
                    &outbound.guarded,
                    target.url.to_string(),
                    params.get("body").cloned().unwrap_or_else(|| json!({})),
                ),
                Err((error_code, message)) => return Outcome::Failed { error_code, attempts: 0, message },
            }
        }
        Executor::Message => match &config.message_sink_url {
            Some(url) => {
                (&outbound.trusted, url.clone(), json!({"to": params["to"], "text": params["text"], "actionId": id}))
            }
            None => {
                return Outcome::Failed {
                    error_code: ErrorCode::MessageSinkNotConfigured,
                    attempts: 0,
                    message: "CALLSTREAM_MESSAGE_SINK_URL is not set".into(),
                };
            }
        },
        Executor::Note | Executor::Evaluate => {
            return Outcome::Failed {
                error_code: ErrorCode::Internal,
                attempts: 0,
                message: "not delivered by `deliver`".into(),
            };
        }
    };
    match post_signed(config, client, clock, &url, id, &body.to_string()).await {
        Ok(delivered) => Outcome::Executed {
            outcome_ref: format!("{url}#{id}"),
            attempts: delivered.attempts,
            result: json!({ "status": delivered.status, "elapsedMs": delivered.elapsed_ms }),
        },
        Err(failed) => {
            Outcome::Failed { error_code: failed.error_code, attempts: failed.attempts, message: failed.message }
        }
    }
}

/// A 2xx answer to a signed POST.
pub struct Delivered {
    pub status: u16,
    pub body: String,
    pub attempts: u64,
    /// The successful attempt's time to answer.
    pub elapsed_ms: u64,
}

/// Why a signed POST gave up.
pub struct Undelivered {
    pub error_code: ErrorCode,
    pub attempts: u64,
    pub message: String,
}

/// The most of an answer's body read (an evaluator's verdict is small).
const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// POST `body` to `url`, signed, with the configured timeout and bounded retries (backoff with
/// jitter): 5xx, 429, timeouts and refused connections are retried; other answers are final.
pub async fn post_signed(
    config: &OrchestrationConfig,
    client: &reqwest::Client,
    clock: &Clock,
    url: &str,
    id: &str,
    body: &str,
) -> Result<Delivered, Undelivered> {
    let timeout = Duration::from_millis(config.executor_timeout_ms);
    let mut attempts = 0;
    let mut last = (ErrorCode::TargetUnreachable, String::new());
    while attempts < config.executor_attempts {
        if attempts > 0 {
            tokio::time::sleep(backoff(attempts, rand::rng().random_range(0.0..=1.0))).await;
        }
        attempts += 1;
        let timestamp = clock.now().unix_seconds();
        let started = Instant::now();
        let mut request = client.post(url).timeout(timeout).header("x-request-id", crate::context::current());
        if let Some(traceparent) = crate::context::outbound_traceparent() {
            request = request.header("traceparent", traceparent);
        }
        let response = request
            .header("Content-Type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", sign(config.signing_secret.expose().as_bytes(), id, timestamp, body))
            .body(body.to_owned())
            .send()
            .await;
        match response {
            Ok(response) if response.status().is_success() => {
                let status = response.status().as_u16();
                let body = match read_limited(response).await {
                    Ok(body) => body,
                    Err(err) if err.is_timeout() => {
                        last = (ErrorCode::TargetTimeout, format!("no answer within {} ms", timeout.as_millis()));
                        continue;
                    }
                    Err(_) => {
                        last = (ErrorCode::TargetUnreachable, "the target dropped the connection".into());
                        continue;
                    }
                };
                let elapsed_ms = started.elapsed().as_millis() as u64;
                return Ok(Delivered { status, body, attempts, elapsed_ms });
            }
            Ok(response) => {
                let elapsed_ms = started.elapsed().as_millis() as u64;
                let status = response.status().as_u16();
                let (code, retry) = match status {
                    300..=399 => (ErrorCode::TargetRedirected, false),
                    429 => (ErrorCode::TargetRateLimited, true),
                    500..=599 => (ErrorCode::Target5xx, true),
                    _ => (ErrorCode::TargetRejected, false),
                };
                last = (code, format!("HTTP {status} after {elapsed_ms} ms"));
                if !retry {
                    break;
                }
            }
            Err(err) if is_address_forbidden(&err) => {
                last = (ErrorCode::TargetAddressForbidden, err.to_string());
                break;
            }
            Err(err) if err.is_timeout() => {
                last = (ErrorCode::TargetTimeout, format!("no answer within {} ms", timeout.as_millis()))
            }
            Err(_) => last = (ErrorCode::TargetUnreachable, "the target refused or dropped the connection".into()),
        }
    }
    Err(Undelivered { error_code: last.0, attempts, message: last.1 })
}

/// The answer's body, up to `MAX_ANSWER_BYTES` (the rest is not read).
async fn read_limited(mut response: reqwest::Response) -> Result<String, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = MAX_ANSWER_BYTES - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_ANSWER_BYTES {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_100_ms_caps_at_6_4_s_and_jitters_up_to_as_much_again() {
        assert_eq!(backoff(1, 0.0), Duration::from_millis(100));
        assert_eq!(backoff(2, 0.0), Duration::from_millis(200));
        assert_eq!(backoff(3, 1.0), Duration::from_millis(800));
        assert_eq!(backoff(7, 0.0), Duration::from_millis(6_400));
        assert_eq!(backoff(50, 0.5), Duration::from_millis(9_600));
        for jitter in [0.0, 0.3, 0.99, 1.0, 7.0, -1.0] {
            let pause = backoff(2, jitter);
            assert!(pause >= Duration::from_millis(200) && pause <= Duration::from_millis(400), "{pause:?}");
        }
    }

    #[test]
    fn signatures_follow_standard_webhooks() {
        let signature = sign(b"secret", "msg_1", 1_700_000_000, r#"{"a":1}"#);
        assert!(signature.starts_with("v1,"));
        assert_eq!(signature, sign(b"secret", "msg_1", 1_700_000_000, r#"{"a":1}"#));
        assert_ne!(signature, sign(b"secret", "msg_1", 1_700_000_001, r#"{"a":1}"#));
    }

    #[test]
    fn params_are_checked_per_executor() {
        assert!(validate_params(Executor::Note, &json!({"text": "x"})).is_ok());
        assert!(validate_params(Executor::Note, &json!({})).is_err());
        assert!(validate_params(Executor::Webhook, &json!({"url": "http://x", "body": []})).is_err());
        assert!(validate_params(Executor::Message, &json!({"to": "a", "text": "b"})).is_ok());
    }
}
