pub mod billing;
pub mod console;
pub mod contract;
pub mod events;
pub mod health;
pub mod livekit;
pub mod openapi;
pub mod operator;
pub mod orchestration;
pub mod realtime;
pub mod sessions;

use actix_web::HttpResponse;

use crate::error::{AppError, ErrorCode};

/// Unknown routes.
pub async fn route_not_found() -> Result<HttpResponse, AppError> {
    Err(AppError::new(ErrorCode::RouteNotFound, "no route matches this path"))
}

/// Known routes, wrong method.
pub async fn method_not_allowed() -> Result<HttpResponse, AppError> {
    Err(AppError::new(ErrorCode::MethodNotAllowed, "this route does not accept that HTTP method"))
}
