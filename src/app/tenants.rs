//! Operator tenant management: status (`active` | `suspended`) and quotas, enforced on every
//! authenticated request from an in-memory directory that is loaded at start-up and updated after
//! each committed change (per process: docs/architecture.md lists how it works across nodes).
//! Every change is recorded in the append-only audit trail in the same transaction.

use std::collections::HashMap;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::AppState;
use crate::clock::MAX_ADVANCE_SECS;
use crate::config::{MAX_LIMIT, RateLimits};
use crate::domain::canonical::to_canonical_string;
use crate::domain::principal::{Principal, Role};
use crate::domain::time::Timestamp;
use crate::error::{AppError, ErrorCode};
use crate::store::{AuditEntry, TenantRecord};

/// Limits an operator sets for one tenant; an absent field means the server default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Quotas {
    /// Sessions that have not ended or failed; creating one more is `QUOTA_EXCEEDED`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_open_sessions: Option<u64>,
    /// Per-second request rates replacing `CALLSTREAM_RATE_LIMIT_*` for this tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limits: Option<RateOverrides>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_per_sec: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_per_sec: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingest_per_sec: Option<u64>,
}

impl Quotas {
    fn validate(&self) -> Result<(), AppError> {
        let rates = self.rate_limits.unwrap_or_default();
        let out_of_range = [self.max_open_sessions, rates.read_per_sec, rates.write_per_sec, rates.ingest_per_sec]
            .into_iter()
            .flatten()
            .any(|value| !(1..=MAX_LIMIT).contains(&value));
        if out_of_range {
            return Err(AppError::new(
                ErrorCode::ValidationFailed,
                format!("every quota must be between 1 and {MAX_LIMIT}"),
            ));
        }
        Ok(())
    }

    /// The stored form: canonical JSON.
    fn to_stored(&self) -> Result<String, AppError> {
        Ok(to_canonical_string(&serde_json::to_value(self).map_err(AppError::internal)?))
    }

    pub fn rate_limits(&self, defaults: &RateLimits) -> RateLimits {
        let overrides = self.rate_limits.unwrap_or_default();
        RateLimits {
            read_per_sec: overrides.read_per_sec.unwrap_or(defaults.read_per_sec),
            write_per_sec: overrides.write_per_sec.unwrap_or(defaults.write_per_sec),
            ingest_per_sec: overrides.ingest_per_sec.unwrap_or(defaults.ingest_per_sec),
        }
    }
}

/// What admission needs to know of a tenant.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    pub suspended: bool,
    pub quotas: Quotas,
}

#[derive(Debug, Default)]
pub struct TenantDirectory {
    entries: RwLock<HashMap<String, Admission>>,
}

impl TenantDirectory {
    /// Read every tenant record of the database at `path`.
    pub fn load(store: &crate::store::Store) -> Result<TenantDirectory, AppError> {
        let directory = TenantDirectory::default();
        for record in store.read_now(|reads| reads.tenants())? {
            directory.remember(&record)?;
        }
        Ok(directory)
    }

    /// A tenant without a record is active with the defaults.
    pub fn admission(&self, tenant_id: &str) -> Admission {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).get(tenant_id).cloned().unwrap_or_default()
    }

    /// Keep the directory current with what other nodes change (a shared database announces it
    /// on the commit feed), until the workers stop.
    pub async fn follow(
        self: std::sync::Arc<Self>,
        store: crate::store::Store,
        mut commits: tokio::sync::broadcast::Receiver<crate::store::Appended>,
        mut stopping: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            // `None`: announcements were missed, so every tenant is read again.
            let changed: Option<Vec<String>> = tokio::select! {
                received = commits.recv() => match received {
                    Ok(commit) if commit.tenants_changed.is_empty() => continue,
                    Ok(commit) => Some(commit.tenants_changed.to_vec()),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => None,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = stopping.wait_for(|stop| *stop) => return,
            };
            match store.read(move |reads| reads.tenants()).await {
                Ok(records) => {
                    let wanted =
                        |record: &&TenantRecord| changed.as_ref().is_none_or(|c| c.contains(&record.tenant_id));
                    for record in records.iter().filter(wanted) {
                        if let Err(err) = self.remember(record) {
                            tracing::error!(error = %err, tenant = %record.tenant_id, "a tenant record could not be read");
                        }
                    }
                }
                Err(err) => tracing::warn!(error = %err, "tenant changes from other nodes could not be read"),
            }
        }
    }

    fn remember(&self, record: &TenantRecord) -> Result<(), AppError> {
        let quotas: Quotas = serde_json::from_str(&record.quotas).map_err(AppError::internal)?;
        let admission = Admission { suspended: record.status == "suspended", quotas };
        self.entries.write().unwrap_or_else(|p| p.into_inner()).insert(record.tenant_id.clone(), admission);
        Ok(())
    }
}

/// Operators only; their own tenant's status never locks them out of these routes.
fn operator_only(principal: &Principal) -> Result<(), AppError> {
    if principal.has(Role::Operator) {
        Ok(())
    } else {
        Err(AppError::new(ErrorCode::ForbiddenRole, "only operators manage tenants"))
    }
}

/// A tenant's record as operators see it (and as the audit trail records it before and after).
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantView {
    pub tenant_id: String,
    pub name: Option<String>,
    pub status: String,
    pub quotas: Value,
    pub version: u64,
    pub created_at: String,
    pub updated_at: String,
}

fn view(record: &TenantRecord) -> TenantView {
    TenantView {
        tenant_id: record.tenant_id.clone(),
        name: record.name.clone(),
        status: record.status.clone(),
        quotas: serde_json::from_str::<Value>(&record.quotas).unwrap_or(Value::Null),
        version: record.version,
        created_at: record.created_at.clone(),
        updated_at: record.updated_at.clone(),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct TenantList {
    pub tenants: Vec<TenantView>,
}

/// A page of the audit trail, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditPage {
    pub entries: Vec<AuditView>,
    pub next_after: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditView {
    pub audit_id: u64,
    pub at: String,
    pub actor: AuditActor,
    pub action: String,
    pub target: String,
    pub details: Value,
    pub request_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditActor {
    pub user_id: String,
    pub tenant_id: String,
}

/// Where the test clock now stands.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClockAnswer {
    pub now: Timestamp,
    pub offset_seconds: i64,
}

fn valid_tenant_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTenant {
    pub tenant_id: String,
    pub name: Option<String>,
    #[serde(default)]
    pub quotas: Quotas,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateTenant {
    pub name: Option<String>,
    pub status: Option<String>,
    pub quotas: Option<Quotas>,
}

pub(crate) fn audit_entry(
    principal: &Principal,
    at: &str,
    action: &str,
    target: &str,
    details: Value,
    request_id: &str,
) -> AuditEntry {
    AuditEntry {
        audit_id: 0,
        at: at.to_owned(),
        actor_id: principal.user_id.as_str().to_owned(),
        actor_tenant: principal.tenant_id.as_str().to_owned(),
        action: action.to_owned(),
        target: target.to_owned(),
        details: to_canonical_string(&details),
        request_id: request_id.to_owned(),
    }
}

/// `POST /v1/operator/tenants`
pub async fn create(
    state: &AppState,
    principal: &Principal,
    request: CreateTenant,
    request_id: String,
) -> Result<TenantView, AppError> {
    operator_only(principal)?;
    if !valid_tenant_id(&request.tenant_id) {
        return Err(AppError::new(
            ErrorCode::ValidationFailed,
            "`tenantId` must be 1–128 characters of letters, digits, `-`, `_` or `.`",
        ));
    }
    request.quotas.validate()?;
    let principal = principal.clone();
    let record = state
        .store
        .writer
        .execute(move |tx| {
            if tx.tenant(&request.tenant_id)?.is_some() {
                return Err(AppError::new(
                    ErrorCode::TenantExists,
                    format!("tenant `{}` already has a record", request.tenant_id),
                ));
            }
            let now = tx.recorded_at().to_rfc3339();
            let record = TenantRecord {
                tenant_id: request.tenant_id,
                name: request.name,
                status: "active".into(),
                quotas: request.quotas.to_stored()?,
                version: 1,
                created_at: now.clone(),
                updated_at: now.clone(),
            };
            tx.insert_tenant(&record)?;
            let details = json!({ "after": view(&record) });
            tx.audit(&audit_entry(&principal, &now, "tenant.created", &record.tenant_id, details, &request_id))?;
            Ok(record)
        })
        .await?;
    state.tenants.remember(&record)?;
    Ok(view(&record))
}

/// `PATCH /v1/operator/tenants/{id}`: status, name and quotas of a tenant with a record.
pub async fn update(
    state: &AppState,
    principal: &Principal,
    tenant_id: String,
    request: UpdateTenant,
    request_id: String,
) -> Result<TenantView, AppError> {
    operator_only(principal)?;
    if request.name.is_none() && request.status.is_none() && request.quotas.is_none() {
        return Err(AppError::new(ErrorCode::ValidationFailed, "send at least one of `name`, `status`, `quotas`"));
    }
    if let Some(status) = &request.status
        && status != "active"
        && status != "suspended"
    {
        return Err(AppError::new(ErrorCode::ValidationFailed, "`status` must be `active` or `suspended`"));
    }
    if let Some(quotas) = &request.quotas {
        quotas.validate()?;
    }
    let principal = principal.clone();
    let record = state
        .store
        .writer
        .execute(move |tx| -> Result<_, AppError> {
            let before = tx
                .tenant(&tenant_id)?
                .ok_or_else(|| AppError::new(ErrorCode::TenantNotFound, format!("no tenant `{tenant_id}`")))?;
            let now = tx.recorded_at().to_rfc3339();
            let mut after = before.clone();
            if let Some(name) = request.name {
                after.name = Some(name);
            }
            if let Some(status) = request.status {
                after.status = status;
            }
            if let Some(quotas) = &request.quotas {
                after.quotas = quotas.to_stored()?;
            }
            if after == before {
                return Ok(before);
            }
            after.version += 1;
            after.updated_at = now.clone();
            tx.update_tenant(&after)?;
            let action = match (before.status.as_str(), after.status.as_str()) {
                ("active", "suspended") => "tenant.suspended",
                ("suspended", "active") => "tenant.reactivated",
                _ => "tenant.updated",
            };
            let details = json!({ "before": view(&before), "after": view(&after) });
            tx.audit(&audit_entry(&principal, &now, action, &tenant_id, details, &request_id))?;
            Ok(after)
        })
        .await?;
    state.tenants.remember(&record)?;
    Ok(view(&record))
}

/// `GET /v1/operator/tenants/{id}`
pub async fn get(state: &AppState, principal: &Principal, tenant_id: String) -> Result<TenantView, AppError> {
    operator_only(principal)?;
    let record = state.store.read(move |conn| conn.tenant(&tenant_id)).await?;
    record
        .map(|record| view(&record))
        .ok_or_else(|| AppError::new(ErrorCode::TenantNotFound, "no tenant record with this id"))
}

/// `GET /v1/operator/tenants`
pub async fn list(state: &AppState, principal: &Principal) -> Result<TenantList, AppError> {
    operator_only(principal)?;
    let records = state.store.read(|conn| conn.tenants()).await?;
    Ok(TenantList { tenants: records.iter().map(view).collect() })
}

/// Every table callstream keeps, with its personal data, retention and deletion (SPEC §4
/// governance); a test holds it to the live schema.
pub const DATA_MAP: &str = include_str!("../../policy/data-map.json");

/// `GET /v1/governance/data-map`
pub fn data_map(principal: &Principal) -> Result<Value, AppError> {
    operator_only(principal)?;
    serde_json::from_str(DATA_MAP).map_err(AppError::internal)
}

/// `GET /v1/operator/audit?after=&limit=`
pub async fn audit_log(state: &AppState, principal: &Principal, after: u64, limit: u64) -> Result<AuditPage, AppError> {
    operator_only(principal)?;
    let limit = limit.clamp(1, 1000);
    let entries = state.store.read(move |conn| conn.audit_after(after, limit)).await?;
    let next_after = entries.last().map_or(after, |e| e.audit_id);
    let entries = entries
        .into_iter()
        .map(|e| AuditView {
            details: serde_json::from_str::<Value>(&e.details).unwrap_or(Value::Null),
            audit_id: e.audit_id,
            at: e.at,
            actor: AuditActor { user_id: e.actor_id, tenant_id: e.actor_tenant },
            action: e.action,
            target: e.target,
            request_id: e.request_id,
        })
        .collect();
    Ok(AuditPage { entries, next_after })
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdvanceClock {
    pub advance_seconds: i64,
}

/// `POST /v1/operator/clock` (test clock only): move "now" forward for every layer at once, and
/// answer the new now. Audited like any other operator change.
pub async fn advance_clock(
    state: &AppState,
    principal: &Principal,
    request: AdvanceClock,
    request_id: String,
) -> Result<ClockAnswer, AppError> {
    operator_only(principal)?;
    if !(1..=MAX_ADVANCE_SECS).contains(&request.advance_seconds) {
        return Err(AppError::new(
            ErrorCode::ValidationFailed,
            format!("`advanceSeconds` must be an integer between 1 and {MAX_ADVANCE_SECS}"),
        ));
    }
    let clock = state.clock.clone();
    let principal = principal.clone();
    state
        .store
        .writer
        .execute(move |tx| {
            let before = tx.recorded_at();
            let now = clock.advance(request.advance_seconds).ok_or_else(|| {
                AppError::new(ErrorCode::RouteNotFound, "the clock can only be moved with CALLSTREAM_TEST_CLOCK=1")
            })?;
            let details = json!({ "advanceSeconds": request.advance_seconds, "before": before, "now": now });
            let entry = audit_entry(&principal, &before.to_rfc3339(), "clock.advanced", "clock", details, &request_id);
            tx.audit(&entry)?;
            tx.save_clock_offset(clock.offset_millis())?;
            Ok(ClockAnswer { now, offset_seconds: clock.offset_millis() / 1000 })
        })
        .await
}
