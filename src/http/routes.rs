//! Every route, in one table: the router is built from it, and so are the OpenAPI document
//! (`GET /openapi.json`) and the auth matrix test, so a route cannot exist undescribed.

use actix_web::http::Method;
use actix_web::web;

use schemars::{JsonSchema, Schema, SchemaGenerator};

use super::body::BodyLimit;
use super::handlers::{
    self, billing, console, contract, events, health, livekit, operator, orchestration, realtime, sessions,
};
use crate::app::billing::{
    AccountDeadLetters, AccountEvents, AdjustmentRequest, AdjustmentView, BillingEvents, DeadLetterList, ReplayAnswer,
    SummaryQuery, Trace, UsageSummary, UsageView,
};
use crate::app::contract::Contract;
use crate::app::events::{IngestAnswer, ReplayPage};
use crate::app::governance::{EraseTenant, ErasureAnswer};
use crate::app::health::HealthAnswer;
use crate::app::insights::InsightsView;
use crate::app::livekit::{JoinToken, TokenRequest, WebhookAnswer};
use crate::app::orchestration::{ActionAnswer, ActionView, DecisionAnswer, DecisionRequest, ExecuteRequest};
use crate::app::outbox::{AlertDelivery, DeliverAlerts};
use crate::app::realtime::Reconnect;
use crate::app::reconciliation::{
    RunPage, RunView, RunsQuery, SchedulerChange, SchedulerView, TriggerAnswer, TriggerRequest,
};
use crate::app::sessions::{CreateSession, ProviderRequest, SessionPage, SessionView, TransitionRequest};
use crate::app::tenants::{AdvanceClock, AuditPage, ClockAnswer, CreateTenant, TenantList, TenantView, UpdateTenant};
use crate::app::transcripts::{CompactRequest, CompactionAnswer, SnapshotPage, TranscriptView};
use crate::error::{AppError, ErrorCode};

/// Batch ingest bodies: SPEC §4.
pub const INGEST_BODY_LIMIT: usize = 1024 * 1024;
/// LiveKit webhook bodies are small; participant metadata can make them a few KiB.
pub const WEBHOOK_BODY_LIMIT: usize = 256 * 1024;

/// Who may call a route, as documented (the use case enforces it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credentials (health, metrics, the API description).
    Public,
    /// No bearer token: LiveKit's signature over the raw body.
    LiveKitSignature,
    /// Any valid bearer token; the use case decides by owner, tenant and role.
    Bearer,
    /// A bearer token with the `operator` role; other roles get 403 `FORBIDDEN_ROLE`.
    Operator,
}

/// The JSON Schema of a type the handler reads or answers, generated from the type itself.
pub type SchemaOf = fn(&mut SchemaGenerator) -> Schema;

fn schema_of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// One operation: what the OpenAPI document says about it.
#[derive(Debug, Clone, Copy)]
pub struct Doc {
    pub summary: &'static str,
    pub tag: &'static str,
    pub access: Access,
    /// The status of a successful answer.
    pub success: u16,
    /// The successful answer's body (the type the handler serializes).
    pub response: Option<SchemaOf>,
    /// The query string (the type the handler deserializes it into).
    pub query: Option<SchemaOf>,
    /// The JSON request body, with an example of a valid one.
    pub body: Option<(SchemaOf, &'static str)>,
}

/// A route: method, path template, its description and its handler.
pub struct Endpoint {
    pub method: Method,
    pub path: &'static str,
    pub doc: Doc,
    route: Option<actix_web::Route>,
}

const fn doc(summary: &'static str, tag: &'static str, access: Access) -> Doc {
    Doc { summary, tag, access, success: 200, response: None, query: None, body: None }
}

impl Doc {
    const fn status(mut self, success: u16) -> Doc {
        self.success = success;
        self
    }

    fn returns<T: JsonSchema>(mut self) -> Doc {
        self.response = Some(schema_of::<T>);
        self
    }

    fn query<T: JsonSchema>(mut self) -> Doc {
        self.query = Some(schema_of::<T>);
        self
    }

    fn accepts<T: JsonSchema>(mut self, example: &'static str) -> Doc {
        self.body = Some((schema_of::<T>, example));
        self
    }
}

/// Every route of the API. `test_clock`: also `POST /v1/operator/clock` (otherwise it does not
/// exist: 404).
pub fn endpoints(test_clock: bool) -> Vec<Endpoint> {
    use Access::*;
    let e = |method: Method, path: &'static str, doc: Doc, route: actix_web::Route| Endpoint {
        method,
        path,
        doc,
        route: Some(route),
    };
    let get = web::get;
    let post = web::post;
    let mut all = vec![
        e(Method::GET, "/health/live", doc("The process answers", "operations", Public).returns::<HealthAnswer>(), get().to(health::live)),
        e(
            Method::GET,
            "/health/ready",
            doc("Readiness, check by check (503 names what failed)", "operations", Public).returns::<HealthAnswer>(),
            get().to(health::ready),
        ),
        e(Method::GET, "/metrics", doc("Prometheus metrics", "operations", Public), get().to(health::metrics)),
        e(Method::GET, "/console", doc("The operator console (a page on this API)", "console", Public), get().to(console::index)),
        e(Method::GET, "/console/{file}", doc("A file of the operator console", "console", Public), get().to(console::asset)),
        e(
            Method::GET,
            "/openapi.json",
            doc("This OpenAPI 3.1 description", "operations", Public),
            get().to(handlers::openapi::document),
        ),
        e(
            Method::GET,
            "/v1/contract",
            doc("The event contract: types, versions, writers", "contract", Bearer).returns::<Contract>(),
            get().to(contract::catalog),
        ),
        e(
            Method::GET,
            "/v1/contract/schemas/{file}",
            doc("One JSON Schema of the contract", "contract", Bearer),
            get().to(contract::schema),
        ),
        e(
            Method::POST,
            "/v1/call/sessions",
            doc("Create a session (honours Idempotency-Key)", "sessions", Bearer).returns::<SessionView>()
                .status(201)
                .accepts::<CreateSession>(r#"{"title":"Weekly sync","metadata":{}}"#),
            post().to(sessions::create),
        ),
        e(
            Method::GET,
            "/v1/call/sessions",
            doc("The caller's sessions, newest first", "sessions", Bearer).returns::<SessionPage>().query::<sessions::ListQuery>(),
            get().to(sessions::list),
        ),
        e(
            Method::GET,
            "/v1/call/sessions/{id}",
            doc("A session with participants and recordings", "sessions", Bearer).returns::<SessionView>(),
            get().to(sessions::get),
        ),
        e(
            Method::POST,
            "/v1/call/sessions/{id}/state",
            doc("Transition a session", "sessions", Bearer).returns::<SessionView>().accepts::<TransitionRequest>(r#"{"to":"connecting"}"#),
            post().to(sessions::transition),
        ),
        e(
            Method::POST,
            "/v1/call/sessions/{id}/provider",
            doc("Set the provider correlation", "sessions", Bearer).returns::<SessionView>().accepts::<ProviderRequest>(r#"{"provider":"livekit"}"#),
            post().to(sessions::link_provider),
        ),
        e(
            Method::POST,
            "/v1/call/sessions/{id}/livekit-token",
            doc("Issue a LiveKit access token for the session's room", "livekit", Bearer).returns::<JoinToken>().accepts::<TokenRequest>("{}"),
            post().to(livekit::token),
        ),
        e(
            Method::GET,
            "/v1/call/sessions/{id}/insights",
            doc("Speech insights: per speaker and per call; final once the session is terminal", "sessions", Bearer).returns::<InsightsView>(),
            get().to(sessions::insights),
        ),
        e(
            Method::POST,
            "/v1/call/sessions/{id}/reconnect",
            doc("Exchange a resume token for a fresh one", "realtime", Bearer).returns::<Reconnect>().accepts::<realtime::ReconnectBody>(r#"{"resumeToken":"rt"}"#),
            post().to(realtime::reconnect),
        ),
        e(
            Method::GET,
            "/v1/realtime/sessions/{id}/ws",
            doc("The realtime WebSocket (upgrade; 426 without one)", "realtime", Bearer)
                .status(101)
                .query::<realtime::WsQuery>(),
            get().to(realtime::connect),
        ),
        e(
            Method::GET,
            "/v1/realtime/sessions/{id}/transcript",
            doc("The current transcript", "realtime", Bearer).returns::<TranscriptView>(),
            get().to(realtime::transcript),
        ),
        e(
            Method::GET,
            "/v1/realtime/sessions/{id}/transcript-snapshots",
            doc("The transcript's snapshot history", "realtime", Bearer).returns::<SnapshotPage>().query::<realtime::SnapshotQuery>(),
            get().to(realtime::snapshots),
        ),
        e(
            Method::POST,
            "/v1/realtime/sessions/{id}/transcript-snapshots/compact",
            doc("Compact superseded snapshots (never events)", "realtime", Bearer).returns::<CompactionAnswer>().accepts::<CompactRequest>("{}"),
            post().to(realtime::compact),
        ),
        e(
            Method::POST,
            "/v1/realtime/sessions/{id}/events",
            doc("Ingest a batch of events (atomic, ≤ 500, ≤ 1 MiB)", "realtime", Bearer).returns::<IngestAnswer>().accepts::<events::IngestBody>(r#"{"events":[]}"#),
            post().to(events::ingest),
        ),
        e(
            Method::GET,
            "/v1/realtime/sessions/{id}/events",
            doc("Replay a session's events after a seq", "realtime", Bearer).returns::<ReplayPage>().query::<events::ReplayQuery>(),
            get().to(events::replay),
        ),
        e(
            Method::POST,
            "/v1/orchestration/actions/execute",
            doc("Request and execute an action (retries return the same ack)", "orchestration", Bearer).returns::<ActionAnswer>()
                .accepts::<ExecuteRequest>(r#"{"actionId":"a1","sessionId":"cs_x","type":"note.create","params":{"text":"x"}}"#),
            post().to(orchestration::execute),
        ),
        e(
            Method::GET,
            "/v1/orchestration/actions/{actionId}",
            doc("An action with its history", "orchestration", Bearer).returns::<ActionView>(),
            get().to(orchestration::get),
        ),
        e(
            Method::POST,
            "/v1/actions/decision",
            doc("Approve or reject a pending action", "orchestration", Bearer).returns::<DecisionAnswer>()
                .accepts::<DecisionRequest>(r#"{"actionId":"a1","decision":"approve"}"#),
            post().to(orchestration::decision),
        ),
        e(Method::GET, "/v1/operator/tenants", doc("List tenants", "operator", Operator).returns::<TenantList>(), get().to(operator::list)),
        e(
            Method::POST,
            "/v1/operator/tenants",
            doc("Create a tenant", "operator", Operator).returns::<TenantView>().status(201).accepts::<CreateTenant>(r#"{"tenantId":"t-new"}"#),
            post().to(operator::create),
        ),
        e(Method::GET, "/v1/operator/tenants/{id}", doc("A tenant", "operator", Operator).returns::<TenantView>(), get().to(operator::get)),
        e(
            Method::PATCH,
            "/v1/operator/tenants/{id}",
            doc("Change a tenant's status or quotas", "operator", Operator).returns::<TenantView>().accepts::<UpdateTenant>(r#"{"status":"active"}"#),
            web::patch().to(operator::update),
        ),
        e(
            Method::GET,
            "/v1/operator/audit",
            doc("The audit trail (same as /v1/governance/audit)", "governance", Operator).returns::<AuditPage>().query::<operator::AuditQuery>(),
            get().to(operator::audit),
        ),
        e(
            Method::GET,
            "/v1/governance/audit",
            doc("The append-only audit trail of operator and governance actions", "governance", Operator).returns::<AuditPage>()
                .query::<operator::AuditQuery>(),
            get().to(operator::audit),
        ),
        e(
            Method::GET,
            "/v1/governance/data-map",
            doc("Every table, its personal data, retention and deletion", "governance", Operator),
            get().to(operator::data_map),
        ),
        e(
            Method::POST,
            "/v1/governance/tenants/{id}/erase",
            doc("Erase a tenant by crypto-shredding (operators of that tenant)", "governance", Operator).returns::<ErasureAnswer>()
                .accepts::<EraseTenant>(r#"{"confirm":"<tenantId>"}"#),
            post().to(operator::erase),
        ),
        e(
            Method::GET,
            "/v1/billing/usage/{usageId}",
            doc("A usage record, its signature verdict, price and delivery", "billing", Bearer).returns::<UsageView>(),
            get().to(billing::usage),
        ),
        e(
            Method::GET,
            "/v1/billing/accounts/{tenantId}/usage-summary",
            doc("Usage per meter (or per meter and hour)", "billing", Bearer).returns::<UsageSummary>().query::<SummaryQuery>(),
            get().to(billing::usage_summary),
        ),
        e(
            Method::GET,
            "/v1/billing/accounts/{tenantId}/events",
            doc("A tenant's account-level billing events", "billing", Bearer).returns::<AccountEvents>(),
            get().to(billing::account_events),
        ),
        e(
            Method::GET,
            "/v1/billing/accounts/{tenantId}/dead-letters",
            doc("A tenant's dead letters, newest first, open ones first", "billing", Bearer).returns::<AccountDeadLetters>(),
            get().to(billing::account_dead_letters),
        ),
        e(
            Method::POST,
            "/v1/billing/adjustments",
            doc("Create a billing adjustment (honours Idempotency-Key)", "billing", Operator).returns::<AdjustmentView>().status(201).accepts::<AdjustmentRequest>(
                r#"{"tenantId":"t1","meter":"call.seconds","quantity":-30,"reason":"goodwill","occurredAt":"2026-11-24T10:00:00Z"}"#,
            ),
            post().to(billing::adjust),
        ),
        e(
            Method::GET,
            "/v1/billing/sessions/{id}/events",
            doc("A session's billing events", "billing", Bearer).returns::<BillingEvents>(),
            get().to(billing::session_events),
        ),
        e(
            Method::GET,
            "/v1/billing/sessions/{id}/dead-letters",
            doc("A session's dead-lettered billing deliveries", "billing", Bearer).returns::<DeadLetterList>(),
            get().to(billing::session_dead_letters),
        ),
        e(
            Method::POST,
            "/v1/billing/dead-letters/{id}/replay",
            doc("Replay a dead letter (once)", "billing", Bearer).returns::<ReplayAnswer>(),
            post().to(billing::replay),
        ),
        e(
            Method::GET,
            "/v1/billing/trace/{usageId}",
            doc("Usage → billing events → deliveries → runs → mismatches", "billing", Bearer).returns::<Trace>(),
            get().to(billing::trace),
        ),
        e(
            Method::POST,
            "/v1/billing/reconciliation/hourly-trigger",
            doc("Reconcile one closed window (idempotent per window)", "billing", Bearer).returns::<TriggerAnswer>().accepts::<TriggerRequest>("{}"),
            post().to(billing::trigger),
        ),
        e(
            Method::GET,
            "/v1/billing/reconciliation/runs",
            doc("Reconciliation runs, newest first", "billing", Bearer).returns::<RunPage>().query::<RunsQuery>(),
            get().to(billing::runs),
        ),
        e(
            Method::GET,
            "/v1/billing/reconciliation/runs/{id}",
            doc("A run with its mismatches and alerts", "billing", Bearer).returns::<RunView>(),
            get().to(billing::run),
        ),
        e(
            Method::POST,
            "/v1/billing/reconciliation/alerts/deliver",
            doc("Deliver pending alerts now", "billing", Bearer).returns::<AlertDelivery>().accepts::<DeliverAlerts>("{}"),
            post().to(billing::deliver_alerts),
        ),
        e(
            Method::GET,
            "/v1/billing/reconciliation/scheduler",
            doc("The reconciliation scheduler", "billing", Bearer).returns::<SchedulerView>(),
            get().to(billing::scheduler),
        ),
        e(
            Method::PUT,
            "/v1/billing/reconciliation/scheduler",
            doc("Switch the scheduler on or off (audited)", "billing", Operator).returns::<SchedulerView>().accepts::<SchedulerChange>(r#"{"enabled":false}"#),
            web::put().to(billing::set_scheduler),
        ),
        e(
            Method::POST,
            "/v1/webhooks/livekit",
            doc("LiveKit webhooks (signed, replay-guarded)", "livekit", LiveKitSignature).returns::<WebhookAnswer>(),
            post().to(livekit::webhook),
        ),
    ];
    if test_clock {
        all.push(e(
            Method::POST,
            "/v1/operator/clock",
            doc("Move the test clock forward (CALLSTREAM_TEST_CLOCK=1 only)", "operator", Operator)
                .returns::<ClockAnswer>()
                .accepts::<AdvanceClock>(r#"{"advanceSeconds":1}"#),
            post().to(operator::advance_clock),
        ));
    }
    all
}

/// `(method, path)` of every route the router serves.
pub fn route_list(test_clock: bool) -> Vec<(Method, &'static str)> {
    endpoints(test_clock).into_iter().map(|e| (e.method, e.path)).collect()
}

fn body_limit(path: &str) -> Option<usize> {
    match path {
        "/v1/realtime/sessions/{id}/events" => Some(INGEST_BODY_LIMIT),
        "/v1/webhooks/livekit" => Some(WEBHOOK_BODY_LIMIT),
        _ => None,
    }
}

pub fn configure(cfg: &mut web::ServiceConfig, test_clock: bool) {
    cfg.app_data(BodyLimit::DEFAULT)
        .app_data(web::QueryConfig::default().error_handler(|err, _| {
            AppError::new(ErrorCode::QueryInvalid, format!("invalid query string: {err}")).into()
        }))
        .app_data(
            web::PathConfig::default()
                .error_handler(|err, _| AppError::new(ErrorCode::RouteNotFound, format!("invalid path: {err}")).into()),
        );
    // One resource per path, its methods together, in table order (actix matches in order).
    let mut endpoints = endpoints(test_clock);
    let mut paths: Vec<&'static str> = Vec::new();
    for endpoint in &endpoints {
        if !paths.contains(&endpoint.path) {
            paths.push(endpoint.path);
        }
    }
    for path in paths {
        let mut resource = web::resource(path).default_service(web::to(handlers::method_not_allowed));
        if let Some(limit) = body_limit(path) {
            resource = resource.app_data(BodyLimit(limit));
        }
        for endpoint in endpoints.iter_mut().filter(|e| e.path == path) {
            if let Some(route) = endpoint.route.take() {
                resource = resource.route(route);
            }
        }
        cfg.service(resource);
    }
}
