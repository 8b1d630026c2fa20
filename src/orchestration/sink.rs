//! Deliveries to the operator's own sinks (billing events, reconciliation alerts): one signed HTTP
//! POST per attempt, classified into the domain's `Attempt`. Retrying is the caller's business: its
//! schedule is persisted (`next_attempt_at`), so it survives restarts and follows the one clock.

use std::time::Duration;

use crate::clock::Clock;
use crate::config::Sink;
use crate::domain::billing::Attempt;
use crate::domain::error::ErrorCode;

/// The charge id a sink may answer with (`{"chargeId": "…"}`); anything else is ignored.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct SinkAnswer {
    charge_id: Option<String>,
}

/// POST `body` to the sink, signed like Standard Webhooks with `id` as the message id (the same for
/// every attempt, so the sink can de-duplicate). A 2xx answer is `Accepted` under the sink's charge
/// id, or `id` when it names none.
pub async fn post(
    client: &reqwest::Client,
    sink: &Sink,
    clock: &Clock,
    timeout_ms: u64,
    id: &str,
    body: &str,
) -> Attempt {
    let timestamp = clock.now().unix_seconds();
    let mut request = client
        .post(&sink.url)
        .timeout(Duration::from_millis(timeout_ms))
        .header("Content-Type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", super::executors::sign(&sink.secret, id, timestamp, body))
        .header("x-request-id", crate::context::current());
    if let Some(traceparent) = crate::context::outbound_traceparent() {
        request = request.header("traceparent", traceparent);
    }
    match request.body(body.to_owned()).send().await {
        Ok(response) if response.status().is_success() => {
            let answer = response.json::<SinkAnswer>().await.ok().and_then(|a| a.charge_id);
            let charge_id = answer.filter(|c| !c.is_empty() && c.len() <= 256).unwrap_or_else(|| id.to_owned());
            Attempt::Accepted { charge_id }
        }
        Ok(response) => {
            let status = response.status().as_u16();
            let message = format!("HTTP {status}");
            match status {
                408 => Attempt::Failed { error_code: ErrorCode::TargetTimeout, message },
                429 => Attempt::Failed { error_code: ErrorCode::TargetRateLimited, message },
                500..=599 => Attempt::Failed { error_code: ErrorCode::Target5xx, message },
                300..=399 => Attempt::Refused { error_code: ErrorCode::TargetRedirected, message },
                _ => Attempt::Refused { error_code: ErrorCode::TargetRejected, message },
            }
        }
        Err(err) if err.is_timeout() => Attempt::Failed {
            error_code: ErrorCode::TargetTimeout,
            message: format!("no answer within {timeout_ms} ms"),
        },
        Err(_) => Attempt::Failed {
            error_code: ErrorCode::TargetUnreachable,
            message: "the sink refused or dropped the connection".into(),
        },
    }
}
