//! Bearer tokens (SPEC §3): minting and verifying callstream's HS256 JWTs against the injected
//! clock. The HTTP extractor and the WebSocket's in-band refresh both verify through here.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::JwtConfig;
use crate::domain::ids::{TenantId, UserId};
use crate::domain::principal::{Principal, Role};
use crate::domain::time::Timestamp;
use crate::error::{AppError, ErrorCode};

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: i64 = 30;

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub tenant: String,
    #[serde(default)]
    pub roles: Vec<String>,
    pub iss: String,
    pub aud: String,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Informational only: SPEC §3 requires `iss`, `aud` and `exp`, so a token without it is fine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
}

/// Mint a token the way `callstream token` and `serve --dev` do.
pub fn mint(
    config: &JwtConfig,
    now: Timestamp,
    sub: &str,
    tenant: &str,
    roles: &[Role],
    ttl_secs: i64,
) -> Result<String, AppError> {
    let now = now.unix_seconds();
    let roles = roles
        .iter()
        .map(|r| serde_json::to_value(r).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default())
        .collect();
    let claims = Claims {
        sub: sub.to_owned(),
        tenant: tenant.to_owned(),
        roles,
        iss: config.issuer.clone(),
        aud: config.audience.clone(),
        exp: now + ttl_secs,
        nbf: None,
        iat: Some(now),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(config.secret.expose().as_bytes()),
    )
    .map_err(AppError::internal)
}

/// Verify a bearer token and turn its claims into a principal.
pub fn authenticate(config: &JwtConfig, token: &str, now: Timestamp) -> Result<Principal, AppError> {
    authenticate_with_expiry(config, token, now).map(|(principal, _)| principal)
}

/// As `authenticate`, also returning the token's `exp` (Unix seconds), for long-lived connections.
pub fn authenticate_with_expiry(config: &JwtConfig, token: &str, now: Timestamp) -> Result<(Principal, i64), AppError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_issuer(&[&config.issuer]);
    validation.set_audience(&[&config.audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    // Expiry and not-before are checked below against the injected clock, not the system time.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    let data = jsonwebtoken::decode::<Claims>(
        token,
        &DecodingKey::from_secret(config.secret.expose().as_bytes()),
        &validation,
    )
    .map_err(|err| match err.kind() {
        ErrorKind::InvalidIssuer => invalid("the token's issuer is not accepted"),
        ErrorKind::InvalidAudience => invalid("the token's audience is not accepted"),
        ErrorKind::InvalidSignature => invalid("the token's signature does not verify"),
        ErrorKind::MissingRequiredClaim(claim) => invalid(&format!("the token lacks the `{claim}` claim")),
        _ => invalid("the bearer token is malformed"),
    })?;
    let claims = data.claims;
    let now = now.unix_seconds();
    if claims.exp + LEEWAY_SECS < now {
        return Err(AppError::new(ErrorCode::AuthExpired, "the bearer token has expired"));
    }
    if claims.nbf.is_some_and(|nbf| nbf - LEEWAY_SECS > now) {
        return Err(invalid("the token is not valid yet (nbf)"));
    }
    let user_id = UserId::parse(&claims.sub).map_err(|why| invalid(&format!("the `sub` claim {why}")))?;
    let tenant_id = TenantId::parse(&claims.tenant).map_err(|why| invalid(&format!("the `tenant` claim {why}")))?;
    let roles = claims
        .roles
        .iter()
        .map(|raw| Role::parse(raw).ok_or_else(|| invalid(&format!("unknown role `{raw}`"))))
        .collect::<Result<Vec<Role>, AppError>>()?;
    if roles.is_empty() {
        return Err(invalid("the token carries no roles"));
    }
    Ok((Principal { user_id, tenant_id, roles }, claims.exp))
}

/// `AUTH_INVALID` with a message naming what is wrong with the credentials.
pub fn invalid(message: &str) -> AppError {
    AppError::new(ErrorCode::AuthInvalid, message)
}
