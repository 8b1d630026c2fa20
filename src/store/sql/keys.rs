//! Tenant data keys in SQLite (`tenant_keys`), and sealing and opening the log's payloads with
//! them (`store::sealing` has the cryptography and the rules).

use super::db::{Db, Dialect, Result, params};
use std::sync::Arc;

use crate::store::log::StoredEvent;
use crate::store::sealing::{self, DataKey, KeyRow, KeyState, Vault};
use crate::store::{ErasureReport, StoreError};

pub fn rows(db: Db<'_>, tenant_id: &str) -> Result<Vec<KeyRow>> {
    db.query_map(
        "SELECT generation, wrapped FROM tenant_keys WHERE tenant_id = ?1 ORDER BY generation",
        params![tenant_id],
        |row| Ok(KeyRow { generation: row.get(0)?, wrapped: row.get(1)? }),
    )
}

/// The key new events of the tenant are sealed with, made on first use. Inside the writer's
/// transaction: the rows it read or wrote are answered for the vault to learn once committed.
/// `cached: false` ignores the vault's cache (stale after an erasure in the same transaction).
pub fn active_key(
    db: Db<'_>,
    vault: &Vault,
    tenant_id: &str,
    now: &str,
    cached: bool,
) -> Result<(Arc<DataKey>, Option<Vec<KeyRow>>), StoreError> {
    if cached && let Some(key) = vault.active(tenant_id) {
        // On a shared database another node may have erased the tenant (or made a newer key) a
        // moment ago: the writer holds the append lock, so one indexed read settles it.
        let current = match db.dialect() {
            Dialect::Sqlite => true,
            Dialect::Postgres => {
                db.query_opt(
                    "SELECT generation, wrapped IS NOT NULL FROM tenant_keys WHERE tenant_id = ?1 \
                     ORDER BY generation DESC LIMIT 1",
                    params![tenant_id],
                    |row| Ok((row.get::<u32>(0)?, row.get::<bool>(1)?)),
                )? == Some((key.generation, true))
            }
        };
        if current {
            return Ok((key, None));
        }
    }
    let mut rows = rows(db, tenant_id)?;
    let erased_through = rows.iter().filter(|r| r.wrapped.is_none()).map(|r| r.generation).max().unwrap_or(0);
    // A throwaway vault unwraps without caching what this transaction may still roll back.
    if let Some(live) = rows.iter().rev().find(|r| r.wrapped.is_some() && r.generation > erased_through) {
        let scratch = vault.scratch();
        if let Some(key) = scratch.learn(tenant_id, std::slice::from_ref(live))? {
            return Ok((key, Some(rows)));
        }
    }
    let generation = rows.iter().map(|r| r.generation).max().unwrap_or(0) + 1;
    let (key, wrapped) = vault.new_key(tenant_id, generation)?;
    db.execute(
        "INSERT INTO tenant_keys (tenant_id, generation, wrapped, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![tenant_id, generation, wrapped, now],
    )?;
    rows.push(KeyRow { generation, wrapped: Some(wrapped) });
    Ok((key, Some(rows)))
}

/// Destroy every live key of the tenant and purge its projections of the personal fields; the
/// log is not touched. Answers the report and the newest generation destroyed.
pub fn erase(db: Db<'_>, tenant_id: &str, now: &str) -> Result<(ErasureReport, u32), StoreError> {
    let through: u32 = db.query_row(
        "SELECT COALESCE(MAX(generation), 0) FROM tenant_keys WHERE tenant_id = ?1",
        params![tenant_id],
        |row| row.get(0),
    )?;
    let keys_destroyed = db.execute(
        "UPDATE tenant_keys SET wrapped = NULL, erased_at = ?2 WHERE tenant_id = ?1 AND wrapped IS NOT NULL",
        params![tenant_id, now],
    )? as u64;
    if db.dialect() == Dialect::Postgres {
        // Every other node forgets the keys when this commits (store::postgres::feed).
        let notice = format!("erased {through} {tenant_id}");
        db.execute("SELECT pg_notify(?1, ?2)", params![crate::store::postgres::feed::CHANGED, notice])?;
    }
    // Each statement leaves the row exactly as a rebuild from the sealed log would make it.
    let of_tenant = "session_id IN (SELECT session_id FROM sessions WHERE tenant_id = ?1)";
    let sessions = db.execute(
        "UPDATE sessions SET title = NULL, metadata = NULL WHERE tenant_id = ?1 AND (title IS NOT NULL OR metadata IS NOT NULL)", params![tenant_id])? as u64;
    let participants =
        db.execute(&format!("DELETE FROM session_participants WHERE {of_tenant}"), params![tenant_id])? as u64;
    let recordings = db.execute(
        &format!("UPDATE session_recordings SET location = NULL WHERE location IS NOT NULL AND {of_tenant}"),
        params![tenant_id],
    )? as u64;
    let transcript_segments = db.execute(
        &format!(
            "UPDATE transcript_segments SET speaker = NULL, edited_by = NULL \
             WHERE (speaker IS NOT NULL OR edited_by IS NOT NULL) AND {of_tenant}"
        ),
        params![tenant_id],
    )? as u64;
    let actions = db
        .execute("UPDATE actions SET params = '{}' WHERE tenant_id = ?1 AND params <> '{}'", params![tenant_id])?
        as u64;
    let idempotency_keys = db.execute("DELETE FROM idempotency_keys WHERE tenant_id = ?1", params![tenant_id])? as u64;
    Ok((
        ErasureReport {
            keys_destroyed,
            sessions,
            participants,
            recordings,
            transcript_segments,
            actions,
            idempotency_keys,
        },
        through,
    ))
}

/// The key that opens generation `generation` of the tenant's payloads, `None` if it was
/// destroyed. `committed`: `db` sees only committed rows, so what it reads may be cached.
fn key_for(
    db: Db<'_>,
    vault: &Vault,
    tenant_id: &str,
    generation: u32,
    committed: bool,
) -> Result<Option<Arc<DataKey>>, StoreError> {
    match vault.key(tenant_id, generation) {
        KeyState::Known(key) => return Ok(Some(key)),
        KeyState::Erased => return Ok(None),
        KeyState::Unknown => {}
    }
    let rows = rows(db, tenant_id)?;
    let scratch;
    let learner = if committed {
        vault
    } else {
        scratch = vault.scratch();
        &scratch
    };
    learner.learn(tenant_id, &rows)?;
    match learner.key(tenant_id, generation) {
        KeyState::Known(key) => Ok(Some(key)),
        KeyState::Erased => Ok(None),
        KeyState::Unknown => Err(StoreError::Backend(format!(
            "tenant `{tenant_id}` has no data key of generation {generation}: the database is incomplete"
        ))),
    }
}

/// Replace each sealed payload by its opened form (or its erased form).
pub fn open_all(db: Db<'_>, vault: &Vault, events: &mut [StoredEvent], committed: bool) -> Result<(), StoreError> {
    for event in events {
        if !sealing::is_sealed(&event.payload) {
            continue;
        }
        let tenant_id = &event.tenant_id;
        event.payload = sealing::open(tenant_id, &event.event_id, &event.event_type, &event.payload, |generation| {
            key_for(db, vault, tenant_id, generation, committed)
        })?;
    }
    Ok(())
}

/// The `text` of a sealed transcript payload: `(text, erased)`.
pub fn open_text(
    db: Db<'_>,
    vault: &Vault,
    sealed: &super::queries::SealedText,
    committed: bool,
) -> Result<(Option<String>, bool), StoreError> {
    let (mut fields, erased) =
        sealing::open_fields(&sealed.tenant_id, &sealed.event_id, &sealed.event_type, &sealed.payload, |generation| {
            key_for(db, vault, &sealed.tenant_id, generation, committed)
        })?;
    let text = match fields.remove("text") {
        Some(serde_json::Value::String(text)) => Some(text),
        _ => None,
    };
    Ok((text, erased))
}
