//! The HTTP edge: routes, handlers, auth, request ids. Never touches the database driver.

pub mod auth;
pub mod body;
pub mod edge;
mod error;
pub mod handlers;
pub mod openapi;
pub mod request_id;
pub mod routes;
