//! Every route, in one place.

use actix_web::web;

use super::body::BodyLimit;
use super::handlers::{self, billing, contract, events, health, livekit, operator, orchestration, realtime, sessions};
use crate::error::{AppError, ErrorCode};

/// Batch ingest bodies: SPEC §4.
pub const INGEST_BODY_LIMIT: usize = 1024 * 1024;
/// LiveKit webhook bodies are small; participant metadata can make them a few KiB.
pub const WEBHOOK_BODY_LIMIT: usize = 256 * 1024;

fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(handlers::method_not_allowed))
}

/// `test_clock`: also route `POST /v1/operator/clock` (otherwise it does not exist: 404).
pub fn configure(cfg: &mut web::ServiceConfig, test_clock: bool) {
    if test_clock {
        cfg.service(resource("/v1/operator/clock").route(web::post().to(operator::advance_clock)));
    }
    cfg.app_data(BodyLimit::DEFAULT)
        .app_data(web::QueryConfig::default().error_handler(|err, _| {
            AppError::new(ErrorCode::QueryInvalid, format!("invalid query string: {err}")).into()
        }))
        .app_data(
            web::PathConfig::default()
                .error_handler(|err, _| AppError::new(ErrorCode::RouteNotFound, format!("invalid path: {err}")).into()),
        )
        .service(resource("/health/live").route(web::get().to(health::live)))
        .service(resource("/health/ready").route(web::get().to(health::ready)))
        .service(resource("/metrics").route(web::get().to(health::metrics)))
        .service(resource("/v1/contract").route(web::get().to(contract::catalog)))
        .service(resource("/v1/contract/schemas/{file}").route(web::get().to(contract::schema)))
        .service(
            resource("/v1/call/sessions").route(web::post().to(sessions::create)).route(web::get().to(sessions::list)),
        )
        .service(resource("/v1/call/sessions/{id}").route(web::get().to(sessions::get)))
        .service(resource("/v1/call/sessions/{id}/state").route(web::post().to(sessions::transition)))
        .service(resource("/v1/call/sessions/{id}/provider").route(web::post().to(sessions::link_provider)))
        .service(resource("/v1/call/sessions/{id}/livekit-token").route(web::post().to(livekit::token)))
        .service(resource("/v1/call/sessions/{id}/reconnect").route(web::post().to(realtime::reconnect)))
        .service(resource("/v1/realtime/sessions/{id}/ws").route(web::get().to(realtime::connect)))
        .service(resource("/v1/realtime/sessions/{id}/transcript").route(web::get().to(realtime::transcript)))
        .service(resource("/v1/realtime/sessions/{id}/transcript-snapshots").route(web::get().to(realtime::snapshots)))
        .service(
            resource("/v1/realtime/sessions/{id}/transcript-snapshots/compact")
                .route(web::post().to(realtime::compact)),
        )
        .service(resource("/v1/orchestration/actions/execute").route(web::post().to(orchestration::execute)))
        .service(resource("/v1/orchestration/actions/{actionId}").route(web::get().to(orchestration::get)))
        .service(resource("/v1/actions/decision").route(web::post().to(orchestration::decision)))
        .service(
            resource("/v1/operator/tenants")
                .route(web::get().to(operator::list))
                .route(web::post().to(operator::create)),
        )
        .service(
            resource("/v1/operator/tenants/{id}")
                .route(web::get().to(operator::get))
                .route(web::patch().to(operator::update)),
        )
        .service(resource("/v1/operator/audit").route(web::get().to(operator::audit)))
        .service(resource("/v1/governance/audit").route(web::get().to(operator::audit)))
        .service(resource("/v1/governance/data-map").route(web::get().to(operator::data_map)))
        .service(resource("/v1/governance/tenants/{id}/erase").route(web::post().to(operator::erase)))
        .service(resource("/v1/billing/usage/{usageId}").route(web::get().to(billing::usage)))
        .service(resource("/v1/billing/accounts/{tenantId}/usage-summary").route(web::get().to(billing::usage_summary)))
        .service(resource("/v1/billing/accounts/{tenantId}/events").route(web::get().to(billing::account_events)))
        .service(resource("/v1/billing/adjustments").route(web::post().to(billing::adjust)))
        .service(resource("/v1/billing/sessions/{id}/events").route(web::get().to(billing::session_events)))
        .service(resource("/v1/billing/sessions/{id}/dead-letters").route(web::get().to(billing::session_dead_letters)))
        .service(resource("/v1/billing/dead-letters/{id}/replay").route(web::post().to(billing::replay)))
        .service(resource("/v1/billing/trace/{usageId}").route(web::get().to(billing::trace)))
        .service(resource("/v1/billing/reconciliation/hourly-trigger").route(web::post().to(billing::trigger)))
        .service(resource("/v1/billing/reconciliation/runs").route(web::get().to(billing::runs)))
        .service(resource("/v1/billing/reconciliation/runs/{id}").route(web::get().to(billing::run)))
        .service(resource("/v1/billing/reconciliation/alerts/deliver").route(web::post().to(billing::deliver_alerts)))
        .service(
            resource("/v1/billing/reconciliation/scheduler")
                .route(web::get().to(billing::scheduler))
                .route(web::put().to(billing::set_scheduler)),
        )
        .service(
            resource("/v1/webhooks/livekit")
                .app_data(BodyLimit(WEBHOOK_BODY_LIMIT))
                .route(web::post().to(livekit::webhook)),
        )
        .service(
            resource("/v1/realtime/sessions/{id}/events")
                .app_data(BodyLimit(INGEST_BODY_LIMIT))
                .route(web::post().to(events::ingest))
                .route(web::get().to(events::replay)),
        );
}
