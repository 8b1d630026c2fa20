//! Billing projections (usage, adjustments, the outbox, dead letters, runs, mismatches and their
//! alerts), folded from the `billing.*` events, and their queries. The retry bookkeeping of the two
//! delivery workers (`delivery_attempts`) and the scheduler's state are the only billing rows that
//! are not a function of the log.

use super::db::{Db, Result, Row, corrupt, params};
use std::collections::BTreeMap;

use serde::de::DeserializeOwned;

use crate::domain::billing::{
    AdjustmentCreated, AlertDeadLettered, AlertDelivered, ChargeConfirmed, Line, MismatchDetected, OutboxKind,
    PublishDeadLettered, PublishReplayed, ReconciliationCompleted, Totals, UsageRecorded, Window,
};
use crate::domain::metering::{Meter, Signature, UsageRecord};
use crate::domain::time::Timestamp;
use crate::store::log::StoredEvent;
use crate::store::{
    AlertState, AttemptRow, BillingBacklog, DeadLetterRow, DeliveryKind, DueDelivery, MismatchRow, OutboxRow,
    OutboxState, RunRow, SchedulerRow, SummaryRow, UsageRow,
};

pub const DDL: &str = r#"
-- Signed usage records (billing.usage.recorded), one per usageId.
CREATE TABLE usage_records (
    usage_id     TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    session_id   TEXT NOT NULL,
    meter        TEXT NOT NULL,
    quantity     INTEGER NOT NULL,
    unit         TEXT NOT NULL,
    occurred_at  TEXT NOT NULL,
    recorded_at  TEXT NOT NULL,
    source       TEXT NOT NULL,
    sig_alg      TEXT NOT NULL,
    key_id       TEXT NOT NULL,
    signature    TEXT NOT NULL,
    window_start TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    position     INTEGER NOT NULL
) STRICT;
CREATE INDEX usage_by_window ON usage_records (tenant_id, window_start, meter, quantity);
CREATE INDEX usage_by_time ON usage_records (tenant_id, occurred_at);

-- Operator adjustments (billing.adjustment.created), counted in the window of occurred_at.
CREATE TABLE billing_adjustments (
    adjustment_id TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL,
    meter         TEXT NOT NULL,
    quantity      INTEGER NOT NULL,
    unit          TEXT NOT NULL,
    occurred_at   TEXT NOT NULL,
    window_start  TEXT NOT NULL,
    reason        TEXT NOT NULL,
    created_by    TEXT NOT NULL,
    recorded_at   TEXT NOT NULL,
    event_id      TEXT NOT NULL
) STRICT;
CREATE INDEX adjustments_by_window ON billing_adjustments (tenant_id, window_start, meter);

-- What the outbox delivers, one row per usage record or adjustment:
-- pending → confirmed (billing.charge.confirmed) | dead_lettered (billing.publish.dead_lettered);
-- a replay (billing.publish.replayed) makes a dead-lettered item pending again.
CREATE TABLE billing_outbox (
    outbox_id    TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    tenant_id    TEXT NOT NULL,
    stream_id    TEXT NOT NULL,
    event_ref    TEXT NOT NULL,
    meter        TEXT NOT NULL,
    quantity     INTEGER NOT NULL,
    occurred_at  TEXT NOT NULL,
    window_start TEXT NOT NULL,
    state        TEXT NOT NULL,
    charge_id    TEXT,
    sink         TEXT,
    attempts     INTEGER,
    confirmed_at TEXT,
    dead_letters INTEGER NOT NULL DEFAULT 0,
    position     INTEGER NOT NULL
) STRICT;
CREATE INDEX outbox_pending ON billing_outbox (position) WHERE state = 'pending';
CREATE INDEX outbox_by_window ON billing_outbox (tenant_id, window_start, meter) WHERE state = 'confirmed';

CREATE TABLE billing_dead_letters (
    dead_letter_id   TEXT PRIMARY KEY,
    outbox_id        TEXT NOT NULL,
    kind             TEXT NOT NULL,
    tenant_id        TEXT NOT NULL,
    stream_id        TEXT NOT NULL,
    event_ref        TEXT NOT NULL,
    error_code       TEXT NOT NULL,
    stage            TEXT NOT NULL,
    attempts         INTEGER NOT NULL,
    last_error       TEXT,
    dead_lettered_at TEXT NOT NULL,
    replayed_at      TEXT,
    replayed_by      TEXT
) STRICT;
CREATE INDEX dead_letters_by_stream ON billing_dead_letters (stream_id, dead_lettered_at);
CREATE INDEX dead_letters_by_outbox ON billing_dead_letters (outbox_id);

-- Hourly reconciliation runs (billing.reconciliation.completed); a rerun is a new revision.
CREATE TABLE reconciliation_runs (
    run_id       TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    window_start TEXT NOT NULL,
    window_end   TEXT NOT NULL,
    revision     INTEGER NOT NULL,
    trigger      TEXT NOT NULL,
    comparisons  INTEGER NOT NULL,
    mismatches   INTEGER NOT NULL,
    lines        TEXT NOT NULL,
    completed_at TEXT NOT NULL,
    position     INTEGER NOT NULL,
    UNIQUE (tenant_id, window_start, revision)
) STRICT;
CREATE INDEX runs_by_tenant ON reconciliation_runs (tenant_id, position);

-- One row per mismatch (billing.reconciliation.mismatch_detected) and the alert it raised:
-- pending → delivered (billing.alert.delivered) | dead_lettered (billing.alert.dead_lettered).
CREATE TABLE reconciliation_mismatches (
    alert_id         TEXT PRIMARY KEY,
    run_id           TEXT NOT NULL,
    tenant_id        TEXT NOT NULL,
    window_start     TEXT NOT NULL,
    meter            TEXT NOT NULL,
    metered          INTEGER NOT NULL,
    charged          INTEGER NOT NULL,
    adjusted         INTEGER NOT NULL,
    delta            INTEGER NOT NULL,
    alert_state      TEXT NOT NULL,
    alert_attempts   INTEGER,
    alert_error_code TEXT,
    raised_at        TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    position         INTEGER NOT NULL
) STRICT;
CREATE INDEX mismatches_by_run ON reconciliation_mismatches (run_id);
CREATE INDEX alerts_pending ON reconciliation_mismatches (position) WHERE alert_state = 'pending';
"#;

fn payload<T: DeserializeOwned>(event: &StoredEvent) -> Option<T> {
    serde_json::from_str(&event.payload).ok()
}

fn window_of(at: Timestamp) -> String {
    Window::containing(at).start.to_rfc3339()
}

/// Fold one `billing.*` event into the billing tables.
pub fn apply(db: Db<'_>, event: &StoredEvent) -> Result<()> {
    match event.event_type.as_str() {
        "billing.usage.recorded" => {
            let Some(UsageRecorded { record: r, signature: s }) = payload(event) else { return Ok(()) };
            let window = window_of(r.occurred_at);
            db.execute(
                "INSERT INTO usage_records (usage_id, tenant_id, session_id, meter, quantity, unit, \
                 occurred_at, recorded_at, source, sig_alg, key_id, signature, window_start, event_id, position) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) ON CONFLICT DO NOTHING",
                params![
                    r.usage_id,
                    r.tenant_id,
                    r.session_id,
                    r.meter.as_str(),
                    r.quantity,
                    r.unit,
                    r.occurred_at.to_rfc3339(),
                    r.recorded_at.to_rfc3339(),
                    r.source,
                    s.sig_alg,
                    s.key_id,
                    s.signature,
                    window,
                    event.event_id,
                    event.position,
                ],
            )?;
            insert_outbox(db, event, &r.usage_id, OutboxKind::Usage, r.meter, r.quantity, r.occurred_at)?;
        }
        "billing.adjustment.created" => {
            let Some(a) = payload::<AdjustmentCreated>(event) else { return Ok(()) };
            db.execute(
                "INSERT INTO billing_adjustments (adjustment_id, tenant_id, meter, quantity, unit, \
                 occurred_at, window_start, reason, created_by, recorded_at, event_id) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) ON CONFLICT DO NOTHING",
                params![
                    a.adjustment_id,
                    a.tenant_id,
                    a.meter.as_str(),
                    a.quantity,
                    a.unit,
                    a.occurred_at.to_rfc3339(),
                    window_of(a.occurred_at),
                    a.reason,
                    a.created_by,
                    event.recorded_at,
                    event.event_id,
                ],
            )?;
            insert_outbox(db, event, &a.adjustment_id, OutboxKind::Adjustment, a.meter, a.quantity, a.occurred_at)?;
        }
        "billing.charge.confirmed" => {
            let Some(c) = payload::<ChargeConfirmed>(event) else { return Ok(()) };
            // Only a pending item is confirmed: a late duplicate confirmation changes nothing.
            db.execute(
                "UPDATE billing_outbox SET state = 'confirmed', charge_id = ?2, sink = ?3, attempts = ?4, \
                 confirmed_at = ?5 WHERE outbox_id = ?1 AND state = 'pending'",
                params![c.outbox_id, c.charge_id, c.sink, c.attempts, event.recorded_at],
            )?;
        }
        "billing.publish.dead_lettered" => {
            let Some(d) = payload::<PublishDeadLettered>(event) else { return Ok(()) };
            let moved = db.execute(
                "UPDATE billing_outbox SET state = 'dead_lettered', dead_letters = dead_letters + 1 \
                     WHERE outbox_id = ?1 AND state = 'pending'",
                params![&d.outbox_id],
            )?;
            if moved == 1 {
                db.execute(
                    "INSERT INTO billing_dead_letters (dead_letter_id, outbox_id, kind, tenant_id, stream_id, \
                     event_ref, error_code, stage, attempts, last_error, dead_lettered_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) ON CONFLICT DO NOTHING",
                    params![
                        d.dead_letter_id,
                        d.outbox_id,
                        d.kind.as_str(),
                        event.tenant_id,
                        event.stream_id,
                        d.event_ref,
                        d.error_code,
                        d.stage,
                        d.attempts,
                        d.last_error,
                        event.recorded_at,
                    ],
                )?;
            }
        }
        "billing.publish.replayed" => {
            let Some(r) = payload::<PublishReplayed>(event) else { return Ok(()) };
            let reopened = db.execute(
                "UPDATE billing_dead_letters SET replayed_at = ?2, replayed_by = ?3 \
                     WHERE dead_letter_id = ?1 AND replayed_at IS NULL",
                params![r.dead_letter_id, event.recorded_at, r.replayed_by],
            )?;
            if reopened == 1 {
                db.execute(
                    "UPDATE billing_outbox SET state = 'pending' WHERE outbox_id = ?1 AND state = 'dead_lettered'",
                    params![&r.outbox_id],
                )?;
            }
        }
        "billing.reconciliation.completed" => {
            let Some(run) = payload::<ReconciliationCompleted>(event) else { return Ok(()) };
            let lines = serde_json::to_string(&run.lines).unwrap_or_else(|_| "[]".into());
            db.execute(
                "INSERT INTO reconciliation_runs (run_id, tenant_id, window_start, window_end, revision, \
                 trigger, comparisons, mismatches, lines, completed_at, position) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) ON CONFLICT DO NOTHING",
                params![
                    run.run_id,
                    run.tenant_id,
                    run.window_start.to_rfc3339(),
                    run.window_end.to_rfc3339(),
                    run.revision,
                    run.trigger,
                    run.comparisons,
                    run.mismatches,
                    lines,
                    event.recorded_at,
                    event.position,
                ],
            )?;
        }
        "billing.reconciliation.mismatch_detected" => {
            let Some(m) = payload::<MismatchDetected>(event) else { return Ok(()) };
            db.execute(
                "INSERT INTO reconciliation_mismatches (alert_id, run_id, tenant_id, window_start, meter, \
                 metered, charged, adjusted, delta, alert_state, raised_at, updated_at, position) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'pending', ?10, ?10, ?11) ON CONFLICT DO NOTHING",
                params![
                    m.alert_id,
                    m.run_id,
                    m.tenant_id,
                    m.window_start.to_rfc3339(),
                    m.meter.as_str(),
                    m.metered,
                    m.charged,
                    m.adjusted,
                    m.delta,
                    event.recorded_at,
                    event.position,
                ],
            )?;
        }
        "billing.alert.delivered" => {
            let Some(a) = payload::<AlertDelivered>(event) else { return Ok(()) };
            db.execute(
                "UPDATE reconciliation_mismatches SET alert_state = 'delivered', alert_attempts = ?2, updated_at = ?3 \
                 WHERE alert_id = ?1 AND alert_state = 'pending'",
                params![a.alert_id, a.attempts, event.recorded_at],
            )?;
        }
        "billing.alert.dead_lettered" => {
            let Some(a) = payload::<AlertDeadLettered>(event) else { return Ok(()) };
            db.execute(
                "UPDATE reconciliation_mismatches SET alert_state = 'dead_lettered', alert_attempts = ?2, \
                 alert_error_code = ?3, updated_at = ?4 WHERE alert_id = ?1 AND alert_state = 'pending'",
                params![a.alert_id, a.attempts, a.error_code, event.recorded_at],
            )?;
        }
        _ => {}
    }
    Ok(())
}

fn insert_outbox(
    db: Db<'_>,
    event: &StoredEvent,
    outbox_id: &str,
    kind: OutboxKind,
    meter: Meter,
    quantity: i64,
    occurred_at: Timestamp,
) -> Result<()> {
    db.execute("INSERT INTO billing_outbox (outbox_id, kind, tenant_id, stream_id, event_ref, meter, quantity, \
         occurred_at, window_start, state, position) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'pending', ?10) ON CONFLICT DO NOTHING", params![
        outbox_id,
        kind.as_str(),
        event.tenant_id,
        event.stream_id,
        event.event_id,
        meter.as_str(),
        quantity,
        occurred_at.to_rfc3339(),
        window_of(occurred_at),
        event.position,
    ])?;
    Ok(())
}

// ---- Reads ------------------------------------------------------------------------------------

fn timestamp(row: &Row<'_>, index: usize) -> Result<Timestamp> {
    Timestamp::parse(&row.get::<String>(index)?).ok_or_else(|| corrupt(index, "not an RFC 3339 time"))
}

fn meter(row: &Row<'_>, index: usize) -> Result<Meter> {
    Meter::parse(&row.get::<String>(index)?).ok_or_else(|| corrupt(index, "not a meter"))
}

fn kind(row: &Row<'_>, index: usize) -> Result<OutboxKind> {
    OutboxKind::parse(&row.get::<String>(index)?).ok_or_else(|| corrupt(index, "not an outbox kind"))
}

pub fn usage(db: Db<'_>, usage_id: &str) -> Result<Option<UsageRow>> {
    db.query_opt(
        "SELECT usage_id, tenant_id, session_id, meter, quantity, unit, occurred_at, recorded_at, source, sig_alg, \
         key_id, signature, event_id, position FROM usage_records WHERE usage_id = ?1",
        params![usage_id],
        |row| {
            Ok(UsageRow {
                recorded: UsageRecorded {
                    record: UsageRecord {
                        usage_id: row.get(0)?,
                        tenant_id: row.get(1)?,
                        session_id: row.get(2)?,
                        meter: meter(row, 3)?,
                        quantity: row.get(4)?,
                        unit: row.get(5)?,
                        occurred_at: timestamp(row, 6)?,
                        recorded_at: timestamp(row, 7)?,
                        source: row.get(8)?,
                    },
                    signature: Signature { sig_alg: row.get(9)?, key_id: row.get(10)?, signature: row.get(11)? },
                },
                event_id: row.get(12)?,
                position: row.get(13)?,
            })
        },
    )
}

pub fn usage_summary(
    db: Db<'_>,
    tenant_id: &str,
    from: Timestamp,
    to: Timestamp,
    by_hour: bool,
) -> Result<Vec<SummaryRow>> {
    let group = if by_hour { "meter, window_start" } else { "meter" };
    let window = if by_hour { "window_start" } else { "NULL" };
    let mut rows: BTreeMap<(Option<String>, String), SummaryRow> = BTreeMap::new();
    let (from, to) = (from.to_rfc3339(), to.to_rfc3339());
    let usage = db.query_map(
        &format!(
            "SELECT meter, {window}, CAST(SUM(quantity) AS BIGINT), COUNT(*) FROM usage_records \
             WHERE tenant_id = ?1 AND occurred_at >= ?2 AND occurred_at < ?3 GROUP BY {group}"
        ),
        params![tenant_id, from, to],
        |row| Ok((row.get::<Option<String>>(1)?, row.get::<String>(0)?, meter(row, 0)?, row.get(2)?, row.get(3)?)),
    )?;
    for (window_start, meter_name, meter, quantity, records) in usage {
        let entry = SummaryRow {
            meter,
            window_start: window_start.as_deref().and_then(Timestamp::parse),
            quantity,
            records,
            adjusted: 0,
        };
        rows.insert((window_start, meter_name), entry);
    }
    let adjustments = db.query_map(
        &format!(
            "SELECT meter, {window}, CAST(SUM(quantity) AS BIGINT) FROM billing_adjustments \
             WHERE tenant_id = ?1 AND occurred_at >= ?2 AND occurred_at < ?3 GROUP BY {group}"
        ),
        params![tenant_id, from, to],
        |row| Ok((row.get::<Option<String>>(1)?, row.get::<String>(0)?, meter(row, 0)?, row.get::<i64>(2)?)),
    )?;
    for (window_start, meter_name, meter, adjusted) in adjustments {
        rows.entry((window_start.clone(), meter_name))
            .or_insert_with(|| SummaryRow {
                meter,
                window_start: window_start.as_deref().and_then(Timestamp::parse),
                quantity: 0,
                records: 0,
                adjusted: 0,
            })
            .adjusted = adjusted;
    }
    Ok(rows.into_values().collect())
}

const OUTBOX_COLUMNS: &str = "o.outbox_id, o.kind, o.tenant_id, o.stream_id, o.event_ref, o.meter, o.quantity, \
     o.occurred_at, o.state, o.charge_id, o.sink, o.attempts, o.confirmed_at, o.dead_letters";

fn outbox_from_row(row: &Row<'_>) -> Result<OutboxRow> {
    Ok(OutboxRow {
        outbox_id: row.get(0)?,
        kind: kind(row, 1)?,
        tenant_id: row.get(2)?,
        stream_id: row.get(3)?,
        event_ref: row.get(4)?,
        meter: meter(row, 5)?,
        quantity: row.get(6)?,
        occurred_at: timestamp(row, 7)?,
        state: OutboxState::parse(&row.get::<String>(8)?).ok_or_else(|| corrupt(8, "not an outbox state"))?,
        charge_id: row.get(9)?,
        sink: row.get(10)?,
        attempts: row.get(11)?,
        confirmed_at: row.get(12)?,
        dead_letters: row.get(13)?,
    })
}

pub fn outbox_item(db: Db<'_>, outbox_id: &str) -> Result<Option<OutboxRow>> {
    db.query_opt(
        &format!("SELECT {OUTBOX_COLUMNS} FROM billing_outbox o WHERE o.outbox_id = ?1"),
        params![outbox_id],
        outbox_from_row,
    )
}

pub fn outbox_due(db: Db<'_>, now: Timestamp, limit: u64) -> Result<Vec<DueDelivery>> {
    db.query_map(
        &format!(
            "SELECT {OUTBOX_COLUMNS}, e.type, e.payload, COALESCE(a.attempts, 0) FROM billing_outbox o \
         JOIN events e ON e.tenant_id = o.tenant_id AND e.event_id = o.event_ref \
         LEFT JOIN delivery_attempts a ON a.kind = 'outbox' AND a.item_id = o.outbox_id \
         WHERE o.state = 'pending' AND (a.next_attempt_at IS NULL OR a.next_attempt_at <= ?1) \
         ORDER BY o.position LIMIT ?2"
        ),
        params![now.to_rfc3339(), limit],
        |row| {
            Ok(DueDelivery {
                item: outbox_from_row(row)?,
                event_type: row.get(14)?,
                payload: row.get(15)?,
                attempts: row.get(16)?,
            })
        },
    )
}

pub fn backlog(db: Db<'_>) -> Result<BillingBacklog> {
    db.query_row(
        "SELECT (SELECT COUNT(*) FROM billing_outbox WHERE state = 'pending'), \
                (SELECT COUNT(*) FROM billing_dead_letters WHERE replayed_at IS NULL), \
                (SELECT COUNT(*) FROM reconciliation_mismatches WHERE alert_state = 'pending'), \
                (SELECT COUNT(*) FROM reconciliation_mismatches WHERE alert_state = 'dead_lettered'), \
                (SELECT COUNT(*) FROM reconciliation_runs), \
                (SELECT COUNT(*) FROM reconciliation_mismatches)",
        params![],
        |row| {
            Ok(BillingBacklog {
                outbox_pending: row.get(0)?,
                dead_letters_open: row.get(1)?,
                alerts_pending: row.get(2)?,
                alerts_dead_lettered: row.get(3)?,
                reconciliation_runs: row.get(4)?,
                mismatches: row.get(5)?,
            })
        },
    )
}

pub fn attempts(db: Db<'_>, kind: DeliveryKind, item_id: &str) -> Result<Option<AttemptRow>> {
    db.query_opt(
        "SELECT attempts, next_attempt_at, last_error_code, last_error FROM delivery_attempts \
         WHERE kind = ?1 AND item_id = ?2",
        params![kind.as_str(), item_id],
        |row| {
            Ok(AttemptRow {
                attempts: row.get(0)?,
                next_attempt_at: timestamp(row, 1)?,
                last_error_code: row.get(2)?,
                last_error: row.get(3)?,
            })
        },
    )
}

pub fn save_attempts(db: Db<'_>, kind: DeliveryKind, item_id: &str, row: &AttemptRow) -> Result<()> {
    db.execute(
        "INSERT INTO delivery_attempts (kind, item_id, attempts, next_attempt_at, last_error_code, last_error) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (kind, item_id) DO UPDATE SET attempts = excluded.attempts, \
         next_attempt_at = excluded.next_attempt_at, last_error_code = excluded.last_error_code, \
         last_error = excluded.last_error, claimed_by = NULL",
        params![
            kind.as_str(),
            item_id,
            row.attempts,
            row.next_attempt_at.to_rfc3339(),
            row.last_error_code,
            row.last_error
        ],
    )?;
    Ok(())
}

pub fn claim_delivery(db: Db<'_>, kind: DeliveryKind, item_id: &str, until: Timestamp, node_id: &str) -> Result<()> {
    db.execute(
        "INSERT INTO delivery_attempts (kind, item_id, attempts, next_attempt_at, claimed_by) \
         VALUES (?1, ?2, 0, ?3, ?4) ON CONFLICT (kind, item_id) DO UPDATE SET \
         next_attempt_at = excluded.next_attempt_at, claimed_by = excluded.claimed_by",
        params![kind.as_str(), item_id, until.to_rfc3339(), node_id],
    )?;
    Ok(())
}

/// The nodes holding a delivery claim that is still in its lease at `now`.
pub fn delivery_claimants(db: Db<'_>, now: Timestamp) -> Result<Vec<String>> {
    db.query_map(
        "SELECT DISTINCT claimed_by FROM delivery_attempts WHERE claimed_by IS NOT NULL AND next_attempt_at > ?1 \
         ORDER BY claimed_by",
        params![now.to_rfc3339()],
        |row| row.get(0),
    )
}

/// Make every delivery claimed by `node_id` due at `now`; answers how many there were.
pub fn release_delivery_claims(db: Db<'_>, node_id: &str, now: Timestamp) -> Result<usize> {
    db.execute(
        "UPDATE delivery_attempts SET next_attempt_at = ?2, claimed_by = NULL \
         WHERE claimed_by = ?1 AND next_attempt_at > ?2",
        params![node_id, now.to_rfc3339()],
    )
}

pub fn clear_attempts(db: Db<'_>, kind: DeliveryKind, item_id: &str) -> Result<()> {
    db.execute("DELETE FROM delivery_attempts WHERE kind = ?1 AND item_id = ?2", params![kind.as_str(), item_id])?;
    Ok(())
}

const DEAD_LETTER_COLUMNS: &str = "dead_letter_id, outbox_id, kind, tenant_id, stream_id, event_ref, error_code, \
     stage, attempts, last_error, dead_lettered_at, replayed_at, replayed_by";

fn dead_letter_from_row(row: &Row<'_>) -> Result<DeadLetterRow> {
    Ok(DeadLetterRow {
        dead_letter_id: row.get(0)?,
        outbox_id: row.get(1)?,
        kind: kind(row, 2)?,
        tenant_id: row.get(3)?,
        stream_id: row.get(4)?,
        event_ref: row.get(5)?,
        error_code: row.get(6)?,
        stage: row.get(7)?,
        attempts: row.get(8)?,
        last_error: row.get(9)?,
        dead_lettered_at: row.get(10)?,
        replayed_at: row.get(11)?,
        replayed_by: row.get(12)?,
    })
}

pub fn dead_letter(db: Db<'_>, dead_letter_id: &str) -> Result<Option<DeadLetterRow>> {
    db.query_opt(
        &format!("SELECT {DEAD_LETTER_COLUMNS} FROM billing_dead_letters WHERE dead_letter_id = ?1"),
        params![dead_letter_id],
        dead_letter_from_row,
    )
}

pub fn dead_letters(db: Db<'_>, stream_id: &str) -> Result<Vec<DeadLetterRow>> {
    db.query_map(&format!(
        "SELECT {DEAD_LETTER_COLUMNS} FROM billing_dead_letters WHERE stream_id = ?1 ORDER BY dead_lettered_at, dead_letter_id"
    ), params![stream_id], dead_letter_from_row)
}

pub fn tenant_dead_letters(db: Db<'_>, tenant_id: &str, limit: u64) -> Result<Vec<DeadLetterRow>> {
    db.query_map(
        &format!(
            "SELECT {DEAD_LETTER_COLUMNS} FROM billing_dead_letters WHERE tenant_id = ?1 \
             ORDER BY replayed_at IS NOT NULL, dead_lettered_at DESC, dead_letter_id LIMIT ?2"
        ),
        params![tenant_id, limit],
        dead_letter_from_row,
    )
}

pub fn window_totals(db: Db<'_>, tenant_id: &str, window: Window) -> Result<BTreeMap<Meter, Totals>> {
    let start = window.start.to_rfc3339();
    let mut totals: BTreeMap<Meter, Totals> = BTreeMap::new();
    let sums = [
        "SELECT meter, CAST(SUM(quantity) AS BIGINT) FROM usage_records WHERE tenant_id = ?1 AND window_start = ?2 GROUP BY meter",
        "SELECT meter, CAST(SUM(quantity) AS BIGINT) FROM billing_adjustments WHERE tenant_id = ?1 AND window_start = ?2 GROUP BY meter",
        "SELECT meter, CAST(SUM(quantity) AS BIGINT) FROM billing_outbox WHERE tenant_id = ?1 AND window_start = ?2 \
         AND state = 'confirmed' GROUP BY meter",
    ];
    for (which, sql) in sums.iter().enumerate() {
        let sums = db.query_map(sql, params![tenant_id, start], |row| Ok((meter(row, 0)?, row.get::<i64>(1)?)))?;
        for (meter, sum) in sums {
            let entry = totals.entry(meter).or_default();
            match which {
                0 => entry.metered = sum,
                1 => entry.adjusted = sum,
                _ => entry.charged = sum,
            }
        }
    }
    Ok(totals)
}

pub fn billed_tenants(db: Db<'_>, window: Window) -> Result<Vec<String>> {
    db.query_map(
        "SELECT tenant_id FROM usage_records WHERE window_start = ?1 \
         UNION SELECT tenant_id FROM billing_adjustments WHERE window_start = ?1 \
         UNION SELECT tenant_id FROM billing_outbox WHERE window_start = ?1 ORDER BY 1",
        params![window.start.to_rfc3339()],
        |row| row.get(0),
    )
}

const RUN_COLUMNS: &str = "run_id, tenant_id, window_start, window_end, revision, trigger, comparisons, mismatches, \
     lines, completed_at, position";

fn run_from_row(row: &Row<'_>) -> Result<RunRow> {
    let lines: Vec<Line> =
        serde_json::from_str(&row.get::<String>(8)?).map_err(|_| corrupt(8, "not a list of lines"))?;
    Ok(RunRow {
        run_id: row.get(0)?,
        tenant_id: row.get(1)?,
        window_start: timestamp(row, 2)?,
        window_end: timestamp(row, 3)?,
        revision: row.get(4)?,
        trigger: row.get(5)?,
        comparisons: row.get(6)?,
        mismatches: row.get(7)?,
        lines,
        completed_at: row.get(9)?,
        position: row.get(10)?,
    })
}

pub fn run(db: Db<'_>, run_id: &str) -> Result<Option<RunRow>> {
    db.query_opt(
        &format!("SELECT {RUN_COLUMNS} FROM reconciliation_runs WHERE run_id = ?1"),
        params![run_id],
        run_from_row,
    )
}

pub fn latest_run(db: Db<'_>, tenant_id: &str, window: Window) -> Result<Option<RunRow>> {
    db.query_opt(
        &format!(
            "SELECT {RUN_COLUMNS} FROM reconciliation_runs WHERE tenant_id = ?1 AND window_start = ?2 \
         ORDER BY revision DESC LIMIT 1"
        ),
        params![tenant_id, window.start.to_rfc3339()],
        run_from_row,
    )
}

pub fn runs(db: Db<'_>, tenant_id: &str, window: Option<Window>, before: u64, limit: u64) -> Result<Vec<RunRow>> {
    // SQLite integers are signed: "before anything" is i64::MAX.
    let before = before.min(i64::MAX as u64);
    db.query_map(
        &format!(
            "SELECT {RUN_COLUMNS} FROM reconciliation_runs WHERE tenant_id = ?1 AND position < ?2 \
         AND (CAST(?3 AS TEXT) IS NULL OR window_start = ?3) ORDER BY position DESC LIMIT ?4"
        ),
        params![tenant_id, before, window.map(|w| w.start.to_rfc3339()), limit],
        run_from_row,
    )
}

const MISMATCH_COLUMNS: &str = "alert_id, run_id, tenant_id, window_start, meter, metered, charged, adjusted, delta, \
     alert_state, alert_attempts, alert_error_code, raised_at, updated_at";

fn mismatch_from_row(row: &Row<'_>) -> Result<MismatchRow> {
    Ok(MismatchRow {
        alert_id: row.get(0)?,
        run_id: row.get(1)?,
        tenant_id: row.get(2)?,
        window_start: timestamp(row, 3)?,
        meter: meter(row, 4)?,
        metered: row.get(5)?,
        charged: row.get(6)?,
        adjusted: row.get(7)?,
        delta: row.get(8)?,
        alert_state: AlertState::parse(&row.get::<String>(9)?).ok_or_else(|| corrupt(9, "not an alert state"))?,
        alert_attempts: row.get(10)?,
        alert_error_code: row.get(11)?,
        raised_at: row.get(12)?,
        updated_at: row.get(13)?,
    })
}

pub fn mismatches(db: Db<'_>, run_id: &str) -> Result<Vec<MismatchRow>> {
    db.query_map(
        &format!("SELECT {MISMATCH_COLUMNS} FROM reconciliation_mismatches WHERE run_id = ?1 ORDER BY position"),
        params![run_id],
        mismatch_from_row,
    )
}

pub fn alerts_due(db: Db<'_>, now: Timestamp, limit: u64) -> Result<Vec<(MismatchRow, u32)>> {
    let columns = MISMATCH_COLUMNS.split(", ").map(|c| format!("m.{c}")).collect::<Vec<_>>().join(", ");
    db.query_map(
        &format!(
            "SELECT {columns}, COALESCE(a.attempts, 0) FROM reconciliation_mismatches m \
         LEFT JOIN delivery_attempts a ON a.kind = 'alert' AND a.item_id = m.alert_id \
         WHERE m.alert_state = 'pending' AND (a.next_attempt_at IS NULL OR a.next_attempt_at <= ?1) \
         ORDER BY m.position LIMIT ?2"
        ),
        params![now.to_rfc3339(), limit],
        |row| Ok((mismatch_from_row(row)?, row.get(14)?)),
    )
}

pub fn scheduler(db: Db<'_>) -> Result<SchedulerRow> {
    let row = db.query_opt(
        "SELECT enabled, last_run_at, last_window, last_error FROM scheduler_state WHERE name = 'reconciliation'",
        params![],
        |row| {
            let at = |index: usize| -> Result<Option<Timestamp>> {
                Ok(row.get::<Option<String>>(index)?.as_deref().and_then(Timestamp::parse))
            };
            Ok(SchedulerRow { enabled: row.get(0)?, last_run_at: at(1)?, last_window: at(2)?, last_error: row.get(3)? })
        },
    )?;
    Ok(row.unwrap_or_default())
}

pub fn save_scheduler(db: Db<'_>, row: &SchedulerRow, now: Timestamp) -> Result<()> {
    db.execute(
        "INSERT INTO scheduler_state (name, enabled, last_run_at, last_window, last_error, updated_at) \
         VALUES ('reconciliation', ?1, ?2, ?3, ?4, ?5) ON CONFLICT (name) DO UPDATE SET enabled = excluded.enabled, \
         last_run_at = excluded.last_run_at, last_window = excluded.last_window, last_error = excluded.last_error, \
         updated_at = excluded.updated_at",
        params![
            row.enabled,
            row.last_run_at.map(Timestamp::to_rfc3339),
            row.last_window.map(Timestamp::to_rfc3339),
            row.last_error,
            now.to_rfc3339(),
        ],
    )?;
    Ok(())
}

pub fn clock_offset(db: Db<'_>) -> Result<i64> {
    let raw: Option<String> =
        db.query_opt("SELECT value FROM meta WHERE key = 'test_clock_offset_ms'", params![], |row| row.get(0))?;
    Ok(raw.and_then(|v| v.parse().ok()).unwrap_or(0))
}

pub fn save_clock_offset(db: Db<'_>, offset_millis: i64) -> Result<()> {
    db.execute(
        "INSERT INTO meta (key, value) VALUES ('test_clock_offset_ms', ?1) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![offset_millis.to_string()],
    )?;
    Ok(())
}
