//! Governance: erasing a tenant by crypto-shredding (docs/governance.md). The erasure destroys the
//! tenant's data keys and purges its projections in one transaction, audited in the same one; the
//! log itself is never updated or deleted.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::AppState;
use super::tenants::audit_entry;
use crate::domain::principal::{Principal, Role};
use crate::domain::time::Timestamp;
use crate::error::{AppError, ErrorCode};
use crate::store::ErasureReport;

/// `POST /v1/governance/tenants/{id}/erase` body: the tenant id again, typed by a human.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EraseTenant {
    pub confirm: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErasureAnswer {
    pub tenant_id: String,
    pub erased_at: Timestamp,
    #[serde(flatten)]
    pub report: ErasureReport,
    /// The audit trail entry that records it.
    pub audit_id: u64,
}

/// Destroy the tenant's data keys: every personal field it ever wrote becomes unreadable for good.
/// Only an operator of that tenant, naming it twice. Repeating it is harmless (nothing left to
/// destroy: `keysDestroyed: 0`), and audited again.
pub async fn erase(
    state: &AppState,
    principal: &Principal,
    tenant_id: String,
    request: EraseTenant,
    request_id: String,
) -> Result<ErasureAnswer, AppError> {
    if !principal.has(Role::Operator) {
        return Err(AppError::new(ErrorCode::ForbiddenRole, "only operators erase tenants"));
    }
    if principal.tenant_id.as_str() != tenant_id {
        return Err(AppError::new(
            ErrorCode::ForbiddenRole,
            format!("only an operator of tenant `{tenant_id}` may erase it"),
        ));
    }
    if request.confirm != tenant_id {
        return Err(AppError::new(
            ErrorCode::ErasureNotConfirmed,
            format!("`confirm` must repeat the tenant id `{tenant_id}`; nothing was erased"),
        ));
    }
    let principal = principal.clone();
    let answer = state
        .store
        .writer
        .execute(move |tx| {
            let erased_at = tx.recorded_at();
            let report = tx.erase_tenant(&tenant_id)?;
            let details = json!({ "report": report });
            let entry =
                audit_entry(&principal, &erased_at.to_rfc3339(), "tenant.erased", &tenant_id, details, &request_id);
            let audit_id = tx.audit(&entry)?;
            Ok::<_, AppError>(ErasureAnswer { tenant_id, erased_at, report, audit_id })
        })
        .await?;
    state.metrics.tenant_erased(answer.report.keys_destroyed);
    tracing::warn!(
        tenant = %answer.tenant_id,
        keys_destroyed = answer.report.keys_destroyed,
        audit_id = answer.audit_id,
        "tenant erased: its data keys are destroyed"
    );
    Ok(answer)
}
