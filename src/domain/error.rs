//! The catalog of stable error codes and the `Rejection` every domain rule returns.
//!
//! Every code has exactly one HTTP status and category; the catalog is served by `GET /v1/contract`
//! and mirrored in `schemas/error_codes.json` (a test keeps the two equal).

use serde::Serialize;
use serde_json::Value;

macro_rules! error_codes {
    ($($variant:ident = $code:literal => ($status:literal, $category:literal, $doc:literal),)*) => {
        /// Stable, machine-readable error codes. Never rename or remove one.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode { $($variant,)* }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code,)* }
            }

            /// The HTTP status this code is always answered with.
            pub fn status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status,)* }
            }

            pub fn category(self) -> &'static str {
                match self { $(ErrorCode::$variant => $category,)* }
            }

            pub fn description(self) -> &'static str {
                match self { $(ErrorCode::$variant => $doc,)* }
            }
        }
    };
}

error_codes! {
    // Auth
    AuthMissing = "AUTH_MISSING" => (401, "auth", "No bearer token was sent."),
    AuthInvalid = "AUTH_INVALID" => (401, "auth", "The bearer token is malformed, badly signed, or has the wrong issuer, audience or claims."),
    AuthExpired = "AUTH_EXPIRED" => (401, "auth", "The bearer token has expired."),
    ForbiddenRole = "FORBIDDEN_ROLE" => (403, "auth", "The caller's roles do not allow this operation."),
    TenantSuspended = "TENANT_SUSPENDED" => (403, "auth", "The caller's tenant is suspended."),
    // Request shape
    InvalidJson = "INVALID_JSON" => (400, "request", "The body is not valid JSON or does not have the expected shape."),
    UnsupportedMediaType = "UNSUPPORTED_MEDIA_TYPE" => (415, "request", "The body must be sent as application/json."),
    PayloadTooLarge = "PAYLOAD_TOO_LARGE" => (413, "request", "The body exceeds the size limit of this route."),
    ValidationFailed = "VALIDATION_FAILED" => (400, "request", "A request field is missing or has an invalid value."),
    QueryInvalid = "QUERY_INVALID" => (400, "request", "A query parameter is missing or has an invalid value."),
    RouteNotFound = "ROUTE_NOT_FOUND" => (404, "request", "No route matches this path."),
    MethodNotAllowed = "METHOD_NOT_ALLOWED" => (405, "request", "The route exists but not for this HTTP method."),
    CorsOriginDenied = "CORS_ORIGIN_DENIED" => (403, "request", "A CORS preflight came from an origin that is not in CALLSTREAM_CORS_ORIGINS."),
    // Envelope contract
    EnvelopeNotObject = "ENVELOPE_NOT_OBJECT" => (400, "envelope", "An event envelope must be a JSON object."),
    EnvelopeMissingKey = "ENVELOPE_MISSING_KEY" => (400, "envelope", "A required envelope key is missing; the message names it."),
    EnvelopeUnsupportedKey = "ENVELOPE_UNSUPPORTED_KEY" => (400, "envelope", "The envelope has a key that is not part of the ingest form; the message names it."),
    EnvelopeConflictingKeys = "ENVELOPE_CONFLICTING_KEYS" => (400, "envelope", "A legacy key and its canonical key are both present with different values."),
    EnvelopeInvalidField = "ENVELOPE_INVALID_FIELD" => (400, "envelope", "An envelope field has the wrong type or format; the message names it."),
    EventTypeUnknown = "EVENT_TYPE_UNKNOWN" => (400, "envelope", "The event type is not registered."),
    SchemaVersionUnsupported = "SCHEMA_VERSION_UNSUPPORTED" => (400, "envelope", "The event type does not support this schemaVersion."),
    PayloadInvalid = "PAYLOAD_INVALID" => (400, "envelope", "The payload does not match the type's JSON Schema; the message names the failing JSON pointer."),
    SessionMismatch = "SESSION_MISMATCH" => (400, "envelope", "The envelope's sessionId differs from the session in the path."),
    BatchEmpty = "BATCH_EMPTY" => (400, "envelope", "An ingest batch must hold at least one event."),
    BatchTooLarge = "BATCH_TOO_LARGE" => (400, "envelope", "An ingest batch holds more events than allowed (500)."),
    EventIdConflict = "EVENT_ID_CONFLICT" => (409, "envelope", "The eventId was already used in this tenant for different content."),
    // Sessions
    SessionNotFound = "SESSION_NOT_FOUND" => (404, "session", "No such session is visible to the caller."),
    InvalidTransition = "INVALID_TRANSITION" => (409, "session", "The session's lifecycle does not allow this change from its current state."),
    VersionConflict = "VERSION_CONFLICT" => (409, "session", "expectedVersion does not match the session's current version."),
    ProviderCorrelationImmutable = "PROVIDER_CORRELATION_IMMUTABLE" => (409, "session", "Provider correlation cannot change once the session is active."),
    SessionTerminated = "SESSION_TERMINATED" => (410, "session", "The session has ended or failed; it accepts no new connections or tokens."),
    IdempotencyKeyReused = "IDEMPOTENCY_KEY_REUSED" => (409, "session", "The Idempotency-Key was already used with a different request body."),
    // Realtime
    WsFrameInvalid = "WS_FRAME_INVALID" => (400, "realtime", "A WebSocket frame is not valid JSON or not a known `op` with the right fields; the connection stays open."),
    WsUpgradeRequired = "WS_UPGRADE_REQUIRED" => (426, "realtime", "The WebSocket route was called without a WebSocket upgrade."),
    AckBeyondHead = "ACK_BEYOND_HEAD" => (400, "realtime", "An ack names a seq the session has not reached."),
    ResumeTokenInvalid = "RESUME_TOKEN_INVALID" => (401, "realtime", "The resume token is malformed, forged, for another session or caller, or already used."),
    ResumeWindowExpired = "RESUME_WINDOW_EXPIRED" => (410, "realtime", "The reconnect window after the disconnect has passed; open a new connection."),
    EpochChanged = "EPOCH_CHANGED" => (409, "realtime", "The resume token belongs to another database history (epoch); reload from scratch."),
    // Operators
    TenantNotFound = "TENANT_NOT_FOUND" => (404, "operator", "No tenant record with this id."),
    TenantExists = "TENANT_EXISTS" => (409, "operator", "A tenant record with this id already exists; update it instead."),
    QuotaExceeded = "QUOTA_EXCEEDED" => (403, "operator", "The tenant reached a quota set by an operator (for example its open sessions)."),
    ErasureNotConfirmed = "ERASURE_NOT_CONFIRMED" => (400, "operator", "A tenant erasure must be confirmed with `{\"confirm\": \"<tenantId>\"}` naming the tenant in the path; nothing was erased."),
    // Orchestration
    ActionIdConflict = "ACTION_ID_CONFLICT" => (409, "orchestration", "The actionId was already used for another session, type or params."),
    ActionNotFound = "ACTION_NOT_FOUND" => (404, "orchestration", "No such action is visible to the caller."),
    ActionNotPending = "ACTION_NOT_PENDING" => (409, "orchestration", "The action is not waiting for a confirmation."),
    ActionInProgress = "ACTION_IN_PROGRESS" => (409, "orchestration", "Another node holds the claim on this action and is running it; retry after Retry-After for its ack."),
    ConfirmationTokenInvalid = "CONFIRMATION_TOKEN_INVALID" => (400, "orchestration", "The confirmation token is malformed or not signed by this server."),
    ConfirmationTokenMismatch = "CONFIRMATION_TOKEN_MISMATCH" => (409, "orchestration", "The confirmation token is for another action or other params."),
    ConfirmationTokenUsed = "CONFIRMATION_TOKEN_USED" => (409, "orchestration", "The confirmation token was already used or replaced by a newer one."),
    ConfirmationTokenExpired = "CONFIRMATION_TOKEN_EXPIRED" => (410, "orchestration", "The confirmation token has expired; ask the owner to approve again."),
    EventTypeReserved = "EVENT_TYPE_RESERVED" => (403, "envelope", "The caller may not write this event type (it is written by callstream itself, or by services only); the message names the type."),
    // Action outcomes: reported in an action's ack (`errorCode`) and in its `safety.blocked` or
    // `orchestration.action.failed` event inside a 200 answer, never as an HTTP error. The status
    // is the one a proxy answering for the action would use.
    ActionTypeUnsupported = "ACTION_TYPE_UNSUPPORTED" => (400, "action", "No executor runs this action type (or the policy does not list it)."),
    RoleNotAllowed = "ROLE_NOT_ALLOWED" => (403, "action", "The policy does not let the caller's roles request this action type."),
    SessionActionLimit = "SESSION_ACTION_LIMIT" => (429, "action", "The session reached the policy's limit of actions."),
    SessionActionRate = "SESSION_ACTION_RATE" => (429, "action", "The session requested more actions in the last minute than the policy allows."),
    HostNotAllowed = "HOST_NOT_ALLOWED" => (403, "action", "The action's target URL is not on the policy's outbound allowlist (scheme, host and port of the parsed URL)."),
    ParamsInvalid = "PARAMS_INVALID" => (400, "action", "The action's params do not fit its executor; the ack's event names the field."),
    ActionRejected = "ACTION_REJECTED" => (403, "action", "The session owner rejected the action; it never runs."),
    ExecutionInterrupted = "EXECUTION_INTERRUPTED" => (500, "action", "The process running the action stopped before recording its outcome; it is not run again."),
    MessageSinkNotConfigured = "MESSAGE_SINK_NOT_CONFIGURED" => (503, "action", "`message.send` has nowhere to deliver: CALLSTREAM_MESSAGE_SINK_URL is not set."),
    TargetRejected = "TARGET_REJECTED" => (502, "action", "The outbound target answered with a 4xx; not retried."),
    TargetRateLimited = "TARGET_RATE_LIMITED" => (502, "action", "The outbound target answered 429 on every attempt."),
    Target5xx = "TARGET_5XX" => (502, "action", "The outbound target answered with a 5xx on every attempt."),
    TargetTimeout = "TARGET_TIMEOUT" => (504, "action", "The outbound target did not answer within the executor timeout on every attempt."),
    TargetUnreachable = "TARGET_UNREACHABLE" => (502, "action", "The outbound target refused or dropped the connection (or its TLS handshake failed) on every attempt."),
    TargetRedirected = "TARGET_REDIRECTED" => (502, "action", "The outbound target answered with a redirect; redirects are never followed."),
    TargetAddressForbidden = "TARGET_ADDRESS_FORBIDDEN" => (403, "action", "The target resolved to a loopback, private or link-local address and that exact host is not allowlisted."),
    // Sessions, continued
    ClientReportedFailure = "CLIENT_REPORTED_FAILURE" => (409, "session", "The failure code a session records when a client moves it to `failed` without naming one."),
    // WebSocket close reasons (also sent as close codes; see docs/realtime.md)
    WsSuperseded = "WS_SUPERSEDED" => (409, "realtime", "Close 4001: a newer connection resumed this connection id."),
    WsIdleTimeout = "WS_IDLE_TIMEOUT" => (408, "realtime", "Close 4002: no traffic from the client within the idle timeout; resume."),
    WsSlowConsumer = "WS_SLOW_CONSUMER" => (429, "realtime", "Close 4008: the client did not read fast enough; resume from the last ack, nothing is lost."),
    // LiveKit webhooks
    WebhookSignatureInvalid = "WEBHOOK_SIGNATURE_INVALID" => (401, "webhook", "The webhook's Authorization JWT is missing, malformed, signed with another key, or its sha256 claim does not match the raw body."),
    WebhookStale = "WEBHOOK_STALE" => (400, "webhook", "The webhook's createdAt is outside the tolerance window (too old or too far in the future)."),
    WebhookInvalid = "WEBHOOK_INVALID" => (400, "webhook", "The signed body is not a LiveKit webhook event (not JSON, no `event`, or no `createdAt`)."),
    // Billing
    UsageNotFound = "USAGE_NOT_FOUND" => (404, "billing", "No usage record with this id is visible to the caller."),
    DeadLetterNotFound = "DEAD_LETTER_NOT_FOUND" => (404, "billing", "No dead letter with this id is visible to the caller."),
    RunNotFound = "RUN_NOT_FOUND" => (404, "billing", "No reconciliation run with this id is visible to the caller."),
    WindowNotClosed = "WINDOW_NOT_CLOSED" => (409, "billing", "The reconciliation window has not closed yet (its end plus the lateness allowance); retry after Retry-After."),
    // Operational
    RateLimited = "RATE_LIMITED" => (429, "operational", "The tenant exceeded its request rate for this route class; wait for Retry-After."),
    ServiceUnavailable = "SERVICE_UNAVAILABLE" => (503, "operational", "The service is starting, stopping or overloaded; retry with backoff."),
    Internal = "INTERNAL" => (500, "operational", "An unexpected failure; the request id identifies it in the logs."),
}

impl ErrorCode {
    pub fn parse(raw: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|code| code.as_str() == raw)
    }
}

impl<'de> serde::Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<ErrorCode, D::Error> {
        let raw = std::borrow::Cow::<str>::deserialize(deserializer)?;
        ErrorCode::parse(&raw).ok_or_else(|| serde::de::Error::custom(format!("`{raw}` is not in the error catalog")))
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl schemars::JsonSchema for ErrorCode {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ErrorCode".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        schemars::json_schema!({"type": "string", "enum": codes})
    }
}

/// A rejection: a code, a human sentence safe to show, and optional structured details.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub code: ErrorCode,
    pub message: String,
    pub details: Option<Value>,
}

impl Rejection {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Rejection { code, message: message.into(), details: None }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for Rejection {}

/// The catalog as served by `GET /v1/contract` and stored in `schemas/error_codes.json`.
pub fn catalog() -> Value {
    let codes: Vec<Value> = ErrorCode::ALL
        .iter()
        .map(|code| {
            serde_json::json!({
                "code": code.as_str(),
                "status": code.status(),
                "category": code.category(),
                "description": code.description(),
            })
        })
        .collect();
    serde_json::json!({ "version": 1, "codes": codes })
}
