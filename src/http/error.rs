//! How an `AppError` goes on the wire: the catalog's status, the one error body, `Retry-After`
//! when the rejection names a wait, and the cause chain of an internal error in the log only.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::Value;

use crate::error::{AppError, cause_chain};

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.code().status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        if let AppError::Internal(cause) = self {
            tracing::error!(error = %cause_chain(cause.as_ref()), "internal error");
        }
        let request_id = crate::context::current();
        let mut response = HttpResponse::build(self.status_code());
        if let AppError::Rejected(r) = self
            && let Some(retry) = r.details.as_ref().and_then(|d| d.get("retryAfterSecs")).and_then(Value::as_u64)
        {
            response.insert_header(("Retry-After", retry.to_string()));
        }
        response.json(self.body(&request_id))
    }
}
