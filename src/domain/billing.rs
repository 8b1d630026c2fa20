//! Billing: the facts the billing events record, the hourly windows usage is reconciled in, the
//! price table, and the pure decisions of the outbox (when to retry, when to give up) and of
//! reconciliation (which meters disagree).
//!
//! Every `billing.*` event is written by callstream; its payload is one of the types below, so the
//! projections read exactly what the writers wrote.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::ErrorCode;
use super::metering::{Meter, Signature, UsageRecord};
use super::time::Timestamp;

const HOUR_SECS: i64 = 3600;

/// One UTC hour, `[start, start + 1 h)`: the unit usage is reconciled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    pub start: Timestamp,
}

impl Window {
    /// The hour `at` falls in.
    pub fn containing(at: Timestamp) -> Window {
        let start = at.unix_seconds().div_euclid(HOUR_SECS) * HOUR_SECS;
        Window { start: Timestamp::from_unix_seconds(start).unwrap_or(at) }
    }

    /// A window named by its start, which must be on the hour.
    pub fn starting_at(raw: &str) -> Result<Window, String> {
        let start = Timestamp::parse(raw).ok_or_else(|| format!("`{raw}` is not an RFC 3339 timestamp"))?;
        if start.unix_millis().rem_euclid(HOUR_SECS * 1000) != 0 {
            return Err(format!("`{raw}` is not the start of a UTC hour (e.g. 2026-11-24T10:00:00Z)"));
        }
        Ok(Window { start })
    }

    pub fn end(self) -> Timestamp {
        self.start.plus_seconds(HOUR_SECS)
    }

    pub fn next(self) -> Window {
        Window { start: self.end() }
    }

    /// When the window may be reconciled: its end plus the lateness allowance.
    pub fn closes_at(self, lateness_secs: u64) -> Timestamp {
        self.end().plus_seconds(lateness_secs as i64)
    }

    pub fn is_closed(self, now: Timestamp, lateness_secs: u64) -> bool {
        now >= self.closes_at(lateness_secs)
    }

    /// The newest window that is closed at `now`.
    pub fn latest_closed(now: Timestamp, lateness_secs: u64) -> Window {
        let open = Window::containing(now.plus_seconds(-(lateness_secs as i64)));
        Window { start: open.start.plus_seconds(-HOUR_SECS) }
    }

    /// `20261124T10`: the window in stream names and ids.
    pub fn key(self) -> String {
        self.start.as_datetime().format("%Y%m%dT%H").to_string()
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.start.to_rfc3339())
    }
}

fn digest_id(prefix: &str, parts: &[&str]) -> String {
    let digest = Sha256::digest(parts.join("\u{0}"));
    format!("{prefix}_{}", &hex::encode(digest)[..32])
}

/// The stream a tenant's account-level billing events (adjustments) live on.
pub fn account_stream(tenant_id: &str) -> String {
    format!("acct:{tenant_id}")
}

/// The stream a tenant's reconciliation runs of one window live on.
pub fn reconciliation_stream(tenant_id: &str, window: Window) -> String {
    format!("billing:{tenant_id}:{}", window.key())
}

/// A run's id: the same window, tenant and revision always name the same run.
pub fn run_id(tenant_id: &str, window: Window, revision: u32) -> String {
    digest_id("rec", &[tenant_id, &window.to_string(), &revision.to_string()])
}

/// The alert a mismatch raises (one per run and meter).
pub fn alert_id(run_id: &str, meter: Meter) -> String {
    digest_id("alr", &[run_id, meter.as_str()])
}

/// The dead letter of an outbox item's `generation`-th exhaustion (a replayed item that fails
/// again is a new dead letter).
pub fn dead_letter_id(outbox_id: &str, generation: u32) -> String {
    digest_id("dlq", &[outbox_id, &generation.to_string()])
}

/// The charge id the internal ledger assigns.
pub fn ledger_charge_id(outbox_id: &str) -> String {
    digest_id("chg", &[outbox_id])
}

/// The adjustment an Idempotency-Key (or, without one, a fresh id) names.
pub fn adjustment_id(tenant_id: &str, idempotency_key: Option<&str>, fresh: &str) -> String {
    match idempotency_key {
        Some(key) => digest_id("adj", &[tenant_id, key]),
        None => format!("adj_{fresh}"),
    }
}

// ---- Event payloads -------------------------------------------------------------------------

/// `billing.usage.recorded`: a usage record and its signature, everything a verifier needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UsageRecorded {
    #[serde(flatten)]
    pub record: UsageRecord,
    #[serde(flatten)]
    pub signature: Signature,
}

/// `billing.adjustment.created`: an operator's correction of a window; negative is a credit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdjustmentCreated {
    pub adjustment_id: String,
    pub tenant_id: String,
    pub meter: Meter,
    pub quantity: i64,
    pub unit: String,
    /// The window the adjustment counts in.
    pub occurred_at: Timestamp,
    pub reason: String,
    pub created_by: String,
}

/// What the outbox delivers: a usage record or an adjustment, named by its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutboxKind {
    Usage,
    Adjustment,
}

impl OutboxKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxKind::Usage => "usage",
            OutboxKind::Adjustment => "adjustment",
        }
    }

    pub fn parse(raw: &str) -> Option<OutboxKind> {
        match raw {
            "usage" => Some(OutboxKind::Usage),
            "adjustment" => Some(OutboxKind::Adjustment),
            _ => None,
        }
    }
}

/// `billing.charge.confirmed`: the billing sink accepted an outbox item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChargeConfirmed {
    pub charge_id: String,
    /// The usage or adjustment id.
    pub outbox_id: String,
    pub kind: OutboxKind,
    pub tenant_id: String,
    pub meter: Meter,
    pub quantity: i64,
    /// The source's event time: the window the charge counts in.
    pub occurred_at: Timestamp,
    /// `ledger` (the internal default) or `http`.
    pub sink: String,
    pub attempts: u32,
}

/// `billing.publish.dead_lettered`: an outbox item the sink never accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublishDeadLettered {
    pub dead_letter_id: String,
    pub outbox_id: String,
    pub kind: OutboxKind,
    /// The eventId of the billing event that was being delivered.
    pub event_ref: String,
    pub error_code: String,
    /// `rejected` (the sink refused it: not retried) or `exhausted` (every attempt failed).
    pub stage: String,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// `billing.publish.replayed`: an operator sent a dead letter back to the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublishReplayed {
    pub dead_letter_id: String,
    pub outbox_id: String,
    pub replayed_by: String,
}

/// One meter's comparison in a window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Line {
    pub meter: Meter,
    /// Usage whose event time falls in the window.
    pub metered: i64,
    /// Confirmed charges (usage and adjustments) whose event time falls in the window.
    pub charged: i64,
    /// Adjustments in the window (already part of `charged` once confirmed), for the reader.
    pub adjusted: i64,
    /// Usage in the window not (yet) confirmed by the sink.
    pub unconfirmed: i64,
    /// `charged − metered − adjusted`: zero when every unit is charged exactly once.
    pub delta: i64,
}

/// What a window holds, per meter: the input of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub metered: i64,
    pub adjusted: i64,
    pub charged: i64,
}

/// Compare each meter that has anything in the window; meters in `Meter::ALL` order.
pub fn reconcile(totals: &BTreeMap<Meter, Totals>) -> Vec<Line> {
    Meter::ALL
        .iter()
        .filter_map(|meter| {
            let t = totals.get(meter)?;
            let expected = t.metered + t.adjusted;
            Some(Line {
                meter: *meter,
                metered: t.metered,
                charged: t.charged,
                adjusted: t.adjusted,
                unconfirmed: (expected - t.charged).max(0),
                delta: t.charged - expected,
            })
        })
        .collect()
}

/// `billing.reconciliation.mismatch_detected`: one meter disagreed in a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MismatchDetected {
    pub run_id: String,
    pub alert_id: String,
    pub tenant_id: String,
    pub window_start: Timestamp,
    pub meter: Meter,
    pub metered: i64,
    pub charged: i64,
    pub adjusted: i64,
    pub delta: i64,
}

/// `billing.reconciliation.completed`: a run over one tenant's window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReconciliationCompleted {
    pub run_id: String,
    pub tenant_id: String,
    pub window_start: Timestamp,
    pub window_end: Timestamp,
    /// 1 for the first run of the window; each rerun adds one.
    pub revision: u32,
    /// `operator`, `service` or `scheduler`.
    pub trigger: String,
    pub comparisons: u32,
    pub mismatches: u32,
    pub lines: Vec<Line>,
}

/// `billing.alert.delivered`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertDelivered {
    pub alert_id: String,
    pub run_id: String,
    pub attempts: u32,
}

/// `billing.alert.dead_lettered`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertDeadLettered {
    pub alert_id: String,
    pub run_id: String,
    pub attempts: u32,
    pub error_code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

// ---- Delivery ---------------------------------------------------------------------------------

/// How one delivery attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The sink accepted it, under this charge id.
    Accepted { charge_id: String },
    /// The sink refused it for good (a 4xx other than 408/429): retrying cannot help.
    Refused { error_code: ErrorCode, message: String },
    /// A timeout, a refused connection, a 5xx, 408 or 429: worth another try.
    Failed { error_code: ErrorCode, message: String },
}

/// What the outbox does after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextStep {
    Confirm {
        charge_id: String,
    },
    /// Try again at `at` (the attempt count so far is kept with it).
    RetryAt {
        at: Timestamp,
        error_code: ErrorCode,
        message: String,
    },
    DeadLetter {
        stage: &'static str,
        error_code: ErrorCode,
        message: String,
    },
}

/// Retries of outbox items and alerts: exponential from `base_secs`, capped, with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_secs: u64,
    pub max_delay_secs: u64,
}

impl RetryPolicy {
    /// The pause after failed attempt number `attempt` (1-based): `base · 2^(attempt−1)`, capped,
    /// plus `jitter` (0..=1) of up to half as much again so a recovering sink is not hit in step.
    pub fn delay_secs(&self, attempt: u32, jitter: f64) -> i64 {
        let exponential = self.base_secs.saturating_mul(1u64 << (attempt.max(1) - 1).min(30));
        let capped = exponential.min(self.max_delay_secs);
        (capped + (capped as f64 * 0.5 * jitter.clamp(0.0, 1.0)) as u64) as i64
    }

    /// Decide after attempt number `attempt` ended as `result` at `now`.
    pub fn next_step(&self, attempt: u32, result: Attempt, now: Timestamp, jitter: f64) -> NextStep {
        match result {
            Attempt::Accepted { charge_id } => NextStep::Confirm { charge_id },
            Attempt::Refused { error_code, message } => NextStep::DeadLetter { stage: "rejected", error_code, message },
            Attempt::Failed { error_code, message } if attempt >= self.max_attempts => {
                NextStep::DeadLetter { stage: "exhausted", error_code, message }
            }
            Attempt::Failed { error_code, message } => {
                NextStep::RetryAt { at: now.plus_seconds(self.delay_secs(attempt, jitter)), error_code, message }
            }
        }
    }
}

// ---- Prices -----------------------------------------------------------------------------------

/// Prices per unit in millionths of the currency unit, so amounts add up exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceTable {
    pub currency: String,
    pub micros_per_unit: BTreeMap<Meter, i64>,
}

impl Default for PriceTable {
    /// $0.0004 per call second ($0.024 a minute) and $0.002 per executed action.
    fn default() -> PriceTable {
        PriceTable {
            currency: "USD".into(),
            micros_per_unit: BTreeMap::from([(Meter::CallDuration, 400), (Meter::ActionExecuted, 2_000)]),
        }
    }
}

impl PriceTable {
    /// `call.duration=0.0004,action.executed=0.002`: decimal prices per unit, at most 6 decimals.
    pub fn parse(currency: &str, raw: &str) -> Result<PriceTable, String> {
        if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_uppercase()) {
            return Err("the currency must be an ISO 4217 code such as USD".into());
        }
        let mut micros_per_unit = BTreeMap::new();
        for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (meter, price) = entry.split_once('=').ok_or_else(|| format!("`{entry}` is not `meter=price`"))?;
            let meter = Meter::parse(meter.trim()).ok_or_else(|| format!("`{}` is not a meter", meter.trim()))?;
            micros_per_unit.insert(meter, parse_micros(price.trim())?);
        }
        Ok(PriceTable { currency: currency.to_owned(), micros_per_unit })
    }

    /// The amount for `quantity` units, in micros (a meter without a price costs nothing).
    pub fn amount_micros(&self, meter: Meter, quantity: i64) -> i64 {
        self.micros_per_unit.get(&meter).copied().unwrap_or(0).saturating_mul(quantity)
    }
}

fn parse_micros(raw: &str) -> Result<i64, String> {
    let invalid = || format!("`{raw}` is not a price with at most 6 decimals");
    let (whole, fraction) = raw.split_once('.').unwrap_or((raw, ""));
    if whole.is_empty() || fraction.len() > 6 || !whole.chars().chain(fraction.chars()).all(|c| c.is_ascii_digit()) {
        return Err(invalid());
    }
    let whole: i64 = whole.parse().map_err(|_| invalid())?;
    let fraction: i64 = format!("{fraction:0<6}").parse().map_err(|_| invalid())?;
    whole.checked_mul(1_000_000).and_then(|w| w.checked_add(fraction)).ok_or_else(invalid)
}

/// `1234567` micros → `"1.234567"`.
pub fn format_micros(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let abs = micros.unsigned_abs();
    format!("{sign}{}.{:06}", abs / 1_000_000, abs % 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(raw: &str) -> Timestamp {
        Timestamp::parse(raw).expect("timestamp")
    }

    #[test]
    fn windows_are_utc_hours_that_close_after_the_lateness_allowance() {
        let window = Window::containing(at("2026-11-24T10:59:59.999Z"));
        assert_eq!(window.start, at("2026-11-24T10:00:00Z"));
        assert_eq!(window.end(), at("2026-11-24T11:00:00Z"));
        assert_eq!(window.key(), "20261124T10");
        assert!(!window.is_closed(at("2026-11-24T11:14:59.999Z"), 900));
        assert!(window.is_closed(at("2026-11-24T11:15:00Z"), 900));
        assert_eq!(Window::latest_closed(at("2026-11-24T11:15:00Z"), 900), window);
        assert_eq!(Window::latest_closed(at("2026-11-24T11:14:59Z"), 900).start, at("2026-11-24T09:00:00Z"));
        assert_eq!(Window::starting_at("2026-11-24T10:00:00+00:00"), Ok(window));
        assert!(Window::starting_at("2026-11-24T10:30:00Z").is_err());
        assert!(Window::starting_at("yesterday").is_err());
        assert_eq!(Window::containing(at("1969-12-31T23:30:00Z")).start, at("1969-12-31T23:00:00Z"));
    }

    #[test]
    fn reconciliation_flags_unconfirmed_and_double_charged_units_per_meter() {
        let totals = BTreeMap::from([
            (Meter::CallDuration, Totals { metered: 120, adjusted: -20, charged: 100 }),
            (Meter::ActionExecuted, Totals { metered: 3, adjusted: 0, charged: 2 }),
        ]);
        let lines = reconcile(&totals);
        assert_eq!(
            lines.iter().map(|l| (l.meter, l.delta, l.unconfirmed)).collect::<Vec<_>>(),
            [(Meter::CallDuration, 0, 0), (Meter::ActionExecuted, -1, 1)]
        );
        let double = BTreeMap::from([(Meter::ActionExecuted, Totals { metered: 1, adjusted: 0, charged: 2 })]);
        assert_eq!(reconcile(&double)[0].delta, 1, "a unit charged twice shows as a positive delta");
        assert!(reconcile(&BTreeMap::new()).is_empty());
    }

    #[test]
    fn the_outbox_retries_with_capped_backoff_then_dead_letters() {
        let policy = RetryPolicy { max_attempts: 4, base_secs: 2, max_delay_secs: 5 };
        let now = at("2026-11-24T10:00:00Z");
        let failed = || Attempt::Failed { error_code: ErrorCode::Target5xx, message: "503".into() };
        assert_eq!(policy.delay_secs(1, 0.0), 2);
        assert_eq!(policy.delay_secs(2, 0.0), 4);
        assert_eq!(policy.delay_secs(3, 0.0), 5, "capped");
        assert_eq!(policy.delay_secs(3, 1.0), 7, "jitter adds up to half");
        assert_eq!(policy.delay_secs(40, 0.0), 5, "no overflow");
        assert!(
            matches!(policy.next_step(1, failed(), now, 0.0), NextStep::RetryAt { at, .. } if at == now.plus_seconds(2))
        );
        assert!(matches!(policy.next_step(4, failed(), now, 0.0), NextStep::DeadLetter { stage: "exhausted", .. }));
        let refused = Attempt::Refused { error_code: ErrorCode::TargetRejected, message: "400".into() };
        assert!(matches!(policy.next_step(1, refused, now, 0.0), NextStep::DeadLetter { stage: "rejected", .. }));
        let accepted = Attempt::Accepted { charge_id: "chg_1".into() };
        assert_eq!(policy.next_step(4, accepted, now, 0.0), NextStep::Confirm { charge_id: "chg_1".into() });
    }

    #[test]
    fn prices_are_exact_decimals() {
        let table = PriceTable::parse("EUR", "call.duration=0.0004, action.executed=1.5").expect("valid");
        assert_eq!(table.amount_micros(Meter::CallDuration, 61), 24_400);
        assert_eq!(table.amount_micros(Meter::ActionExecuted, -2), -3_000_000);
        assert_eq!(format_micros(24_400), "0.024400");
        assert_eq!(format_micros(-3_000_000), "-3.000000");
        assert!(PriceTable::parse("EUR", "call.duration=0.00000001").is_err());
        assert!(PriceTable::parse("EUR", "minutes=1").is_err());
        assert!(PriceTable::parse("EUR", "call.duration=-1").is_err());
        assert!(PriceTable::parse("euro", "").is_err());
    }

    #[test]
    fn ids_are_deterministic_and_distinct() {
        let window = Window::containing(at("2026-11-24T10:20:00Z"));
        assert_eq!(run_id("t1", window, 1), run_id("t1", window, 1));
        assert_ne!(run_id("t1", window, 1), run_id("t1", window, 2));
        assert_ne!(run_id("t1", window, 1), run_id("t2", window, 1));
        assert_eq!(adjustment_id("t1", Some("k"), "x"), adjustment_id("t1", Some("k"), "y"));
        assert_ne!(adjustment_id("t1", Some("k"), "x"), adjustment_id("t2", Some("k"), "x"));
        assert_ne!(dead_letter_id("usg_1", 1), dead_letter_id("usg_1", 2));
        assert_eq!(reconciliation_stream("t1", window), "billing:t1:20261124T10");
    }
}
