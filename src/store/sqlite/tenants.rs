//! Tenant records (status and quotas) and the append-only audit trail of operator actions.

use rusqlite::{Connection, OptionalExtension, params};

use crate::domain::session::SessionState;
use crate::store::{AuditEntry, TenantRecord};

const COLUMNS: &str = "tenant_id, name, status, quotas, version, created_at, updated_at";

fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TenantRecord> {
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

pub fn get(conn: &Connection, tenant_id: &str) -> rusqlite::Result<Option<TenantRecord>> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM tenants WHERE tenant_id = ?1"))?
        .query_row([tenant_id], from_row)
        .optional()
}

pub fn list(conn: &Connection) -> rusqlite::Result<Vec<TenantRecord>> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM tenants ORDER BY tenant_id"))?
        .query_map([], from_row)?
        .collect()
}

pub fn insert(conn: &Connection, record: &TenantRecord) -> rusqlite::Result<()> {
    conn.prepare_cached(&format!("INSERT INTO tenants ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"))?.execute(
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
    Ok(())
}

pub fn update(conn: &Connection, record: &TenantRecord) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE tenants SET name = ?2, status = ?3, quotas = ?4, version = ?5, updated_at = ?6 WHERE tenant_id = ?1",
    )?
    .execute(params![
        record.tenant_id,
        record.name,
        record.status,
        record.quotas,
        record.version,
        record.updated_at
    ])?;
    Ok(())
}

/// Sessions of `tenant_id` that have not ended or failed.
pub fn open_sessions(conn: &Connection, tenant_id: &str) -> rusqlite::Result<u64> {
    let terminal: Vec<String> = SessionState::terminal().map(|state| format!("'{state}'")).collect();
    conn.prepare_cached(&format!(
        "SELECT COUNT(*) FROM sessions WHERE tenant_id = ?1 AND state NOT IN ({})",
        terminal.join(", ")
    ))?
    .query_row([tenant_id], |row| row.get(0))
}

pub fn audit(conn: &Connection, entry: &AuditEntry) -> rusqlite::Result<u64> {
    conn.prepare_cached(
        "INSERT INTO audit_log (at, actor_id, actor_tenant, action, target, details, request_id) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        entry.at,
        entry.actor_id,
        entry.actor_tenant,
        entry.action,
        entry.target,
        entry.details,
        entry.request_id
    ])?;
    Ok(conn.last_insert_rowid() as u64)
}

pub fn audit_after(conn: &Connection, after: u64, limit: u64) -> rusqlite::Result<Vec<AuditEntry>> {
    conn.prepare_cached(
        "SELECT audit_id, at, actor_id, actor_tenant, action, target, details, request_id FROM audit_log \
         WHERE audit_id > ?1 ORDER BY audit_id LIMIT ?2",
    )?
    .query_map(params![after, limit], |row| {
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
    })?
    .collect()
}
