//! Tenant records (status and quotas) and the append-only audit trail of operator actions.

use super::db::{Db, Dialect, Result, Row, params};
use crate::domain::session::SessionState;
use crate::store::{AuditEntry, TenantRecord};

const COLUMNS: &str = "tenant_id, name, status, quotas, version, created_at, updated_at";

fn from_row(row: &Row<'_>) -> Result<TenantRecord> {
    Ok(TenantRecord {
        tenant_id: row.get(0)?,
        name: row.get(1)?,
        status: row.get(2)?,
        quotas: row.get(3)?,
        version: row.get(4)?,
        created_at: row.get(5)?,
        updated_at: row.get(6)?,
    })
}

pub fn get(db: Db<'_>, tenant_id: &str) -> Result<Option<TenantRecord>> {
    db.query_opt(&format!("SELECT {COLUMNS} FROM tenants WHERE tenant_id = ?1"), params![tenant_id], from_row)
}

pub fn list(db: Db<'_>) -> Result<Vec<TenantRecord>> {
    db.query_map(&format!("SELECT {COLUMNS} FROM tenants ORDER BY tenant_id"), params![], from_row)
}

pub fn insert(db: Db<'_>, record: &TenantRecord) -> Result<()> {
    db.execute(
        &format!("INSERT INTO tenants ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
        params![
            record.tenant_id,
            record.name,
            record.status,
            record.quotas,
            record.version,
            record.created_at,
            record.updated_at
        ],
    )?;
    changed(db, &record.tenant_id)?;
    Ok(())
}

pub fn update(db: Db<'_>, record: &TenantRecord) -> Result<()> {
    db.execute(
        "UPDATE tenants SET name = ?2, status = ?3, quotas = ?4, version = ?5, updated_at = ?6 WHERE tenant_id = ?1",
        params![record.tenant_id, record.name, record.status, record.quotas, record.version, record.updated_at],
    )?;
    changed(db, &record.tenant_id)
}

/// On a shared database, tell every node (at commit) that the tenant's record changed.
fn changed(db: Db<'_>, tenant_id: &str) -> Result<()> {
    if db.dialect() == Dialect::Postgres {
        let notice = format!("tenant {tenant_id}");
        db.execute("SELECT pg_notify(?1, ?2)", params![crate::store::postgres::feed::CHANGED, notice])?;
    }
    Ok(())
}

/// Sessions of `tenant_id` that have not ended or failed.
pub fn open_sessions(db: Db<'_>, tenant_id: &str) -> Result<u64> {
    let terminal: Vec<String> = SessionState::terminal().map(|state| format!("'{state}'")).collect();
    db.query_row(
        &format!("SELECT COUNT(*) FROM sessions WHERE tenant_id = ?1 AND state NOT IN ({})", terminal.join(", ")),
        params![tenant_id],
        |row| row.get(0),
    )
}

pub fn audit(db: Db<'_>, entry: &AuditEntry) -> Result<u64> {
    db.query_row(
        "INSERT INTO audit_log (at, actor_id, actor_tenant, action, target, details, request_id) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING audit_id",
        params![
            entry.at,
            entry.actor_id,
            entry.actor_tenant,
            entry.action,
            entry.target,
            entry.details,
            entry.request_id
        ],
        |row| row.get(0),
    )
}

pub fn audit_after(db: Db<'_>, after: u64, limit: u64) -> Result<Vec<AuditEntry>> {
    db.query_map(
        "SELECT audit_id, at, actor_id, actor_tenant, action, target, details, request_id FROM audit_log \
         WHERE audit_id > ?1 ORDER BY audit_id LIMIT ?2",
        params![after, limit],
        |row| {
            Ok(AuditEntry {
                audit_id: row.get(0)?,
                at: row.get(1)?,
                actor_id: row.get(2)?,
                actor_tenant: row.get(3)?,
                action: row.get(4)?,
                target: row.get(5)?,
                details: row.get(6)?,
                request_id: row.get(7)?,
            })
        },
    )
}
