//! PostgreSQL migrations: numbered, each applied once in its own transaction. Nodes starting at
//! the same time serialize on an advisory lock, so each migration runs exactly once.

use crate::store::StoreError;

/// Held while migrating (`"cs-migra"` as an i64).
const MIGRATE_LOCK: i64 = 0x6373_2d6d_6967_7261;

/// Every migration in order; the index + 1 is its version. Never edit one that has shipped.
const MIGRATIONS: &[&str] = &[
    // 1: the log. Text columns hold exactly what SQLite holds, so one chain hash serves both.
    r#"
    CREATE TABLE events (
        position       BIGINT PRIMARY KEY CHECK (position > 0),
        tenant_id      TEXT NOT NULL,
        stream_id      TEXT NOT NULL,
        seq            BIGINT NOT NULL CHECK (seq > 0),
        event_id       TEXT NOT NULL,
        type           TEXT NOT NULL,
        schema_version INTEGER NOT NULL,
        ts             TEXT NOT NULL,
        recorded_at    TEXT NOT NULL,
        actor_kind     TEXT NOT NULL,
        actor_id       TEXT NOT NULL,
        payload        TEXT NOT NULL,
        content_hash   BYTEA NOT NULL CHECK (length(content_hash) = 32),
        prev_hash      BYTEA NOT NULL CHECK (length(prev_hash) = 32),
        hash           BYTEA NOT NULL CHECK (length(hash) = 32),
        UNIQUE (stream_id, seq),
        UNIQUE (tenant_id, event_id)
    );
    CREATE FUNCTION callstream_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'events are append-only: % refused', TG_OP;
    END
    $$;
    CREATE TRIGGER events_append_only_rows BEFORE UPDATE OR DELETE ON events
        FOR EACH ROW EXECUTE FUNCTION callstream_events_append_only();
    CREATE TRIGGER events_append_only_truncate BEFORE TRUNCATE ON events
        FOR EACH STATEMENT EXECUTE FUNCTION callstream_events_append_only();
    "#,
];

/// Apply pending migrations; answers the schema version.
pub fn migrate(client: &mut postgres::Client) -> Result<usize, StoreError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )?;
    let applied: i32 = tx.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[])?.get(0);
    let applied = usize::try_from(applied).map_err(|_| StoreError::Backend("negative schema version".into()))?;
    if applied > MIGRATIONS.len() {
        return Err(StoreError::Backend(format!(
            "the database is at schema version {applied}, newer than this build knows ({}): upgrade callstream",
            MIGRATIONS.len()
        )));
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
        tx.batch_execute(migration)?;
        let version = i32::try_from(index + 1).map_err(|_| StoreError::Backend("too many migrations".into()))?;
        tx.execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[&version])?;
    }
    tx.commit()?;
    Ok(MIGRATIONS.len())
}
