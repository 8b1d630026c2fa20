//! Body extractors whose every failure is one of our stable codes: wrong content type (415), too
//! large (413, checked while streaming, not after), malformed (400 `INVALID_JSON`), wrong shape
//! (400 `VALIDATION_FAILED`).

use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::web::{Bytes, BytesMut};
use actix_web::{FromRequest, HttpRequest};
use futures_util::StreamExt;
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;

use crate::error::{AppError, ErrorCode};

/// Body size limit for a scope or resource, as app data. Routes without one get `DEFAULT`.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

impl BodyLimit {
    pub const DEFAULT: BodyLimit = BodyLimit(64 * 1024);
}

fn too_large(limit: usize) -> AppError {
    AppError::new(ErrorCode::PayloadTooLarge, format!("the body exceeds this route's limit of {limit} bytes"))
}

/// The raw body bytes, within the route's limit.
pub struct RawBody(pub Bytes);

impl FromRequest for RawBody {
    type Error = AppError;
    type Future = LocalBoxFuture<'static, Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = req.app_data::<BodyLimit>().copied().unwrap_or(BodyLimit::DEFAULT).0;
        let declared = req
            .headers()
            .get(actix_web::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let mut payload = payload.take();
        Box::pin(async move {
            if declared.is_some_and(|len| len > limit) {
                return Err(too_large(limit));
            }
            let mut body = BytesMut::with_capacity(declared.unwrap_or(0).min(limit));
            while let Some(chunk) = Pin::new(&mut payload).next().await {
                let chunk = chunk.map_err(|_| AppError::new(ErrorCode::InvalidJson, "the body could not be read"))?;
                if body.len() + chunk.len() > limit {
                    return Err(too_large(limit));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(RawBody(body.freeze()))
        })
    }
}

fn is_json(req: &HttpRequest) -> bool {
    req.headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
        .unwrap_or(false)
}

/// Read the body, then parse it as JSON; with `optional`, an empty body is `None`.
fn json_body<T: DeserializeOwned + 'static>(
    req: &HttpRequest,
    payload: &mut Payload,
    optional: bool,
) -> LocalBoxFuture<'static, Result<Option<T>, AppError>> {
    let json = is_json(req);
    let raw = RawBody::from_request(req, payload);
    Box::pin(async move {
        let RawBody(body) = raw.await?;
        if optional && body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        if !json {
            return Err(AppError::new(
                ErrorCode::UnsupportedMediaType,
                "send the body with `Content-Type: application/json`",
            ));
        }
        parse(&body).map(Some)
    })
}

/// A JSON body of type `T`.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = AppError;
    type Future = LocalBoxFuture<'static, Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let body = json_body::<T>(req, payload, false);
        Box::pin(async move {
            body.await?.map(Json).ok_or_else(|| AppError::new(ErrorCode::InvalidJson, "the body is empty"))
        })
    }
}

/// A JSON body that may be left out entirely (no bytes): `T::default()` then.
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default + 'static> FromRequest for OptionalJson<T> {
    type Error = AppError;
    type Future = LocalBoxFuture<'static, Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let body = json_body::<T>(req, payload, true);
        Box::pin(async move { Ok(OptionalJson(body.await?.unwrap_or_default())) })
    }
}

pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, AppError> {
    serde_json::from_slice(body).map_err(|err| {
        use serde_json::error::Category;
        match err.classify() {
            Category::Data => {
                AppError::new(ErrorCode::ValidationFailed, format!("the body has the wrong shape: {err}"))
            }
            _ => AppError::new(ErrorCode::InvalidJson, format!("the body is not valid JSON: {err}")),
        }
    })
}
