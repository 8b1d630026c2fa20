//! The `Principal` extractor: the bearer token of the request, verified (`app::auth`), then
//! admitted for its tenant (suspension, rate limit).

use std::future::{Ready, ready};

use crate::app::AppState;
pub use crate::app::auth::{authenticate, authenticate_with_expiry, invalid};
use crate::app::rate_limit::RouteClass;
use crate::domain::principal::{Principal, Role};
use crate::error::{AppError, ErrorCode};
use actix_web::http::Method;
use actix_web::{FromRequest, HttpRequest, web};

/// The bearer token of a request: the `Authorization` header.
pub fn bearer_token(req: &HttpRequest) -> Result<&str, AppError> {
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .ok_or_else(|| AppError::new(ErrorCode::AuthMissing, "send `Authorization: Bearer <token>`"))?;
    let value = header.to_str().map_err(|_| invalid("the Authorization header is not ASCII"))?;
    let (scheme, token) =
        value.split_once(' ').ok_or_else(|| invalid("the Authorization header must be `Bearer <token>`"))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(invalid("the Authorization header must be `Bearer <token>`"));
    }
    Ok(token.trim())
}

/// Admit the request for the caller's tenant: refused while the tenant is suspended (operators
/// excepted, so they can lift it), then charged to its rate limit (docs/operations.md).
pub fn admit(state: &AppState, req: &HttpRequest, principal: &Principal) -> Result<(), AppError> {
    let tenant = principal.tenant_id.as_str();
    let admission = state.tenants.admission(tenant);
    if admission.suspended && !principal.has(Role::Operator) {
        return Err(AppError::new(ErrorCode::TenantSuspended, "your tenant is suspended; contact the operator"));
    }
    let class = route_class(req.method(), req.match_pattern().as_deref());
    state.rate_limiter.check(tenant, class, &admission.quotas.rate_limits(&state.config.edge.rate_limits))
}

/// Which rate-limit class a request is charged to; `pattern` is the matched route template.
pub fn route_class(method: &Method, pattern: Option<&str>) -> RouteClass {
    match (method, pattern) {
        (&Method::POST, Some("/v1/realtime/sessions/{id}/events")) => RouteClass::Ingest,
        (&Method::GET | &Method::HEAD, _) => RouteClass::Read,
        _ => RouteClass::Write,
    }
}

impl FromRequest for Principal {
    type Error = AppError;
    type Future = Ready<Result<Principal, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let result = (|| {
            let state = req
                .app_data::<web::Data<AppState>>()
                .ok_or_else(|| AppError::internal_msg("application state missing"))?;
            let principal = authenticate(&state.config.jwt, bearer_token(req)?, state.clock.now())?;
            admit(state, req, &principal)?;
            Ok(principal)
        })();
        ready(result)
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::Method;

    use super::route_class;
    use crate::app::rate_limit::RouteClass;

    #[test]
    fn route_classes() {
        assert_eq!(route_class(&Method::POST, Some("/v1/realtime/sessions/{id}/events")), RouteClass::Ingest);
        assert_eq!(route_class(&Method::GET, Some("/v1/realtime/sessions/{id}/events")), RouteClass::Read);
        assert_eq!(route_class(&Method::POST, Some("/v1/call/sessions")), RouteClass::Write);
    }
}
