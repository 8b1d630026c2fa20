//! The application error: a domain rejection (4xx with a stable code) or an internal failure
//! (sanitized 500, cause chain logged).

use serde_json::Value;

pub use crate::domain::error::{ErrorCode, Rejection, catalog};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request cannot be honoured as sent; maps to a 4xx with a stable code.
    #[error("{0}")]
    Rejected(Rejection),
    /// Something failed on our side; the cause chain is logged, never shown.
    #[error("internal error: {0}")]
    Internal(Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl AppError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        AppError::Rejected(Rejection::new(code, message))
    }

    pub fn with_details(mut self, details: Value) -> Self {
        if let AppError::Rejected(rejection) = &mut self {
            rejection.details = Some(details);
        }
        self
    }

    pub fn internal(cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        AppError::Internal(Box::new(cause))
    }

    pub fn internal_msg(message: impl Into<String>) -> Self {
        AppError::Internal(message.into().into())
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            AppError::Rejected(rejection) => rejection.code,
            AppError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The body shape shared by every error response.
    pub fn body(&self, request_id: &str) -> Value {
        let (code, message, details) = match self {
            AppError::Rejected(r) => (r.code, r.message.as_str(), r.details.clone()),
            AppError::Internal(_) => (ErrorCode::Internal, "An unexpected error occurred.", None),
        };
        let mut error = serde_json::json!({
            "code": code.as_str(),
            "message": message,
            "requestId": request_id,
        });
        if let Some(details) = details {
            error["details"] = details;
        }
        serde_json::json!({ "error": error })
    }
}

impl From<Rejection> for AppError {
    fn from(rejection: Rejection) -> Self {
        AppError::Rejected(rejection)
    }
}

/// The store's errors in the catalog: its rejections are the caller's, "unavailable" is a 503 to
/// retry, anything else is ours.
impl From<crate::store::StoreError> for AppError {
    fn from(err: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match err {
            StoreError::Rejected(rejection) => AppError::Rejected(rejection),
            StoreError::Unavailable { reason, retry_after_secs } => {
                let rejection = Rejection::new(ErrorCode::ServiceUnavailable, format!("{reason}; retry with backoff"));
                AppError::Rejected(match retry_after_secs {
                    Some(secs) => rejection.with_details(serde_json::json!({ "retryAfterSecs": secs })),
                    None => rejection,
                })
            }
            other => AppError::internal(other),
        }
    }
}

/// `outer: inner: root` for logs.
pub fn cause_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
