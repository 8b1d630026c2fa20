//! Use cases: load state → decide (domain) → append → answer. One function per use case.

pub mod auth;
pub mod billing;
pub mod contract;
pub mod events;
pub mod governance;
pub mod health;
pub mod idempotency;
pub mod insights;
pub mod livekit;
pub mod orchestration;
pub mod outbox;
pub mod rate_limit;
pub mod realtime;
pub mod reconciliation;
pub mod resume_token;
pub mod sessions;
pub mod tenants;
pub mod transcripts;
pub mod workers;

use std::sync::Arc;

use crate::config::Config;
use crate::domain::principal::Denied;
use crate::error::{AppError, ErrorCode};
use crate::store::Store;

/// Everything a use case needs, shared by all workers.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub config: Arc<Config>,
    pub actions: orchestration::ActionRuntime,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub rate_limiter: Arc<rate_limit::RateLimiter>,
    pub tenants: Arc<tenants::TenantDirectory>,
    /// The one "now" (the writer holds a clone).
    pub clock: crate::clock::Clock,
    pub metering: billing::Metering,
    /// Woken when billing work (usage, adjustments, replays) may be due, so the outbox need not
    /// wait for its next poll.
    pub billing_work: Arc<tokio::sync::Notify>,
    /// Background workers' state and the shutdown signal.
    pub workers: Arc<workers::Workers>,
}

/// A session the caller may not see is reported exactly like one that does not exist.
pub(crate) fn session_denied(denied: Denied, session_id: &str) -> AppError {
    match denied {
        Denied::NotVisible => session_not_found(session_id),
        Denied::Role => AppError::new(ErrorCode::ForbiddenRole, "your roles do not allow changing this session"),
    }
}

pub(crate) fn session_not_found(session_id: &str) -> AppError {
    AppError::new(ErrorCode::SessionNotFound, format!("session `{session_id}` was not found"))
}
