//! `Idempotency-Key` on the commands that honour it (session creation, billing adjustments): the
//! same key and body answer the stored result; the same key with another body is refused.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::domain::time::Timestamp;
use crate::error::{AppError, ErrorCode};
use crate::store::{IdempotencyScope, WriteUnit};

/// A key is 1–255 visible ASCII characters.
pub fn validate(key: Option<&str>) -> Result<(), AppError> {
    match key {
        Some(key) if key.is_empty() || key.len() > 255 || !key.chars().all(|c| c.is_ascii_graphic()) => {
            Err(AppError::new(ErrorCode::ValidationFailed, "Idempotency-Key must be 1–255 visible ASCII characters"))
        }
        _ => Ok(()),
    }
}

/// The oldest `recorded_at` still inside a retention period.
pub fn not_before(tx: &dyn WriteUnit, retention_secs: i64) -> Timestamp {
    tx.recorded_at().plus_seconds(-retention_secs)
}

/// The answer stored for `scope` within the retention period, if any; `IDEMPOTENCY_KEY_REUSED`
/// when the key answered a request with another hash.
pub fn stored_answer<T: DeserializeOwned>(
    tx: &dyn WriteUnit,
    scope: IdempotencyScope<'_>,
    retention_secs: i64,
    request_hash: &[u8],
) -> Result<Option<T>, AppError> {
    let Some((stored_hash, _status, body)) = tx.idempotent_response(scope, not_before(tx, retention_secs))? else {
        return Ok(None);
    };
    if stored_hash != request_hash {
        return Err(AppError::new(
            ErrorCode::IdempotencyKeyReused,
            "this Idempotency-Key was already used with a different request body",
        ));
    }
    // Only 201 answers are stored; the status is the HTTP edge's to choose.
    serde_json::from_str(&body).map(Some).map_err(AppError::internal)
}

/// Keep `answer` (a 201) for `scope`.
pub fn store_answer(
    tx: &dyn WriteUnit,
    scope: IdempotencyScope<'_>,
    request_hash: &[u8],
    answer: &impl Serialize,
) -> Result<(), AppError> {
    let body = serde_json::to_string(answer).map_err(AppError::internal)?;
    Ok(tx.store_idempotent_response(scope, request_hash, 201, &body)?)
}
