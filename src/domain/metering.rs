//! Usage metering: the billable units a call produces, derived from its events and signed, so that
//! every charge can be traced to the log and checked by anyone holding the key.
//!
//! A record's signature is HMAC-SHA256 over the RFC 8785 (JCS) form of the record without its
//! signature fields, labelled `sigAlg: "hs256.v1"` with the key's id. New records use the first key
//! of the ring; records signed with an older key still verify while that key is in the ring.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::jcs::to_jcs_string;
use super::time::Timestamp;

pub const SIG_ALG: &str = "hs256.v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Meter {
    /// Seconds a call spent between `active` and its end, rounded up to the whole second.
    #[serde(rename = "call.duration")]
    CallDuration,
    /// One per action whose executor succeeded.
    #[serde(rename = "action.executed")]
    ActionExecuted,
}

impl Meter {
    pub const ALL: [Meter; 2] = [Meter::CallDuration, Meter::ActionExecuted];

    pub fn as_str(self) -> &'static str {
        match self {
            Meter::CallDuration => "call.duration",
            Meter::ActionExecuted => "action.executed",
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Meter::CallDuration => "second",
            Meter::ActionExecuted => "action",
        }
    }

    pub fn parse(raw: &str) -> Option<Meter> {
        Meter::ALL.into_iter().find(|m| m.as_str() == raw)
    }
}

/// One billable quantity, before it is signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageRecord {
    /// Deterministic: the same source always yields the same id, so deriving twice counts once.
    pub usage_id: String,
    pub tenant_id: String,
    pub session_id: String,
    pub meter: Meter,
    pub quantity: i64,
    pub unit: String,
    /// When the usage happened (event time): the window it is reconciled in.
    pub occurred_at: Timestamp,
    /// When callstream recorded it.
    pub recorded_at: Timestamp,
    /// What it was derived from: the session for a call's duration, the action id for an action.
    pub source: String,
}

/// The signature fields a signed record carries next to the record's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Signature {
    pub sig_alg: String,
    pub key_id: String,
    /// Lowercase hex of the HMAC (64 characters).
    pub signature: String,
}

/// A signing key: the first of the ring signs, all verify.
#[derive(Debug, Clone, Copy)]
pub struct Key<'a> {
    pub id: &'a str,
    pub secret: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(tag = "verdict", rename_all = "snake_case", rename_all_fields = "camelCase")]
pub enum Verification {
    Valid {
        key_id: String,
    },
    /// The key id is not (or no longer) in the ring.
    UnknownKey {
        key_id: String,
    },
    UnsupportedAlgorithm {
        sig_alg: String,
    },
    /// The record or its signature was changed.
    Invalid,
}

fn usage_id(tenant_id: &str, meter: Meter, source: &str) -> String {
    let digest = Sha256::digest(format!("{tenant_id}\u{0}{}\u{0}{source}", meter.as_str()));
    format!("usg_{}", &hex::encode(digest)[..32])
}

impl UsageRecord {
    /// A call's duration, from the moment it became `active` to the moment it ended or failed.
    /// `None` for a call that never became active.
    pub fn call_duration(
        tenant_id: &str,
        session_id: &str,
        active_at: Option<Timestamp>,
        ended_at: Timestamp,
        recorded_at: Timestamp,
    ) -> Option<UsageRecord> {
        let active_at = active_at?;
        let millis = ended_at.millis_since(active_at).max(0);
        let meter = Meter::CallDuration;
        Some(UsageRecord {
            usage_id: usage_id(tenant_id, meter, session_id),
            tenant_id: tenant_id.to_owned(),
            session_id: session_id.to_owned(),
            meter,
            quantity: (millis + 999) / 1000,
            unit: meter.unit().to_owned(),
            occurred_at: ended_at,
            recorded_at,
            source: session_id.to_owned(),
        })
    }

    /// One executed action.
    pub fn action_executed(
        tenant_id: &str,
        session_id: &str,
        action_id: &str,
        executed_at: Timestamp,
        recorded_at: Timestamp,
    ) -> UsageRecord {
        let meter = Meter::ActionExecuted;
        UsageRecord {
            usage_id: usage_id(tenant_id, meter, action_id),
            tenant_id: tenant_id.to_owned(),
            session_id: session_id.to_owned(),
            meter,
            quantity: 1,
            unit: meter.unit().to_owned(),
            occurred_at: executed_at,
            recorded_at,
            source: action_id.to_owned(),
        }
    }

    /// The bytes the signature covers: the record's JCS form, without any signature field.
    pub fn signing_input(&self) -> String {
        to_jcs_string(&serde_json::to_value(self).unwrap_or(Value::Null))
    }

    fn mac(&self, secret: &[u8]) -> Hmac<Sha256> {
        // HMAC accepts keys of every length.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
        mac.update(self.signing_input().as_bytes());
        mac
    }

    pub fn sign(&self, key: Key<'_>) -> Signature {
        Signature {
            sig_alg: SIG_ALG.to_owned(),
            key_id: key.id.to_owned(),
            signature: hex::encode(self.mac(key.secret).finalize().into_bytes()),
        }
    }

    pub fn verify(&self, signature: &Signature, ring: &[Key<'_>]) -> Verification {
        if signature.sig_alg != SIG_ALG {
            return Verification::UnsupportedAlgorithm { sig_alg: signature.sig_alg.clone() };
        }
        let Some(key) = ring.iter().find(|k| k.id == signature.key_id) else {
            return Verification::UnknownKey { key_id: signature.key_id.clone() };
        };
        let Ok(claimed) = hex::decode(&signature.signature) else { return Verification::Invalid };
        match self.mac(key.secret).verify_slice(&claimed) {
            Ok(()) => Verification::Valid { key_id: key.id.to_owned() },
            Err(_) => Verification::Invalid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_unix_seconds(1_800_000_000 + seconds).expect("in range")
    }

    const OLD: Key<'static> = Key { id: "k1", secret: b"old-secret-0123456789abcdef0123456" };
    const NEW: Key<'static> = Key { id: "k2", secret: b"new-secret-0123456789abcdef0123456" };

    #[test]
    fn a_call_is_billed_from_active_to_its_end_rounded_up_and_never_twice() {
        let record =
            UsageRecord::call_duration("t1", "cs_1", Some(at(0)), at(61).plus_millis(1), at(62)).expect("active");
        assert_eq!((record.quantity, record.unit.as_str(), record.occurred_at), (62, "second", at(61).plus_millis(1)));
        let again =
            UsageRecord::call_duration("t1", "cs_1", Some(at(0)), at(61).plus_millis(1), at(99)).expect("active");
        assert_eq!(again.usage_id, record.usage_id, "the same source, the same id");
        assert_eq!(UsageRecord::call_duration("t1", "cs_1", None, at(5), at(6)), None, "never active, nothing billed");
        let other_tenant = UsageRecord::call_duration("t2", "cs_1", Some(at(0)), at(1), at(2)).expect("active");
        assert_ne!(other_tenant.usage_id, record.usage_id);
        let action = UsageRecord::action_executed("t1", "cs_1", "cs_1", at(3), at(3));
        assert_ne!(action.usage_id, record.usage_id, "meters do not collide on one source");
    }

    #[test]
    fn signatures_verify_across_rotation_and_catch_tampering() {
        let record = UsageRecord::action_executed("t1", "cs_1", "act-1", at(3), at(4));
        let signed_old = record.sign(OLD);
        // After rotation the new key signs first; records signed with the old key still verify.
        let ring = [NEW, OLD];
        assert_eq!(record.verify(&signed_old, &ring), Verification::Valid { key_id: "k1".into() });
        assert_eq!(record.verify(&record.sign(NEW), &ring), Verification::Valid { key_id: "k2".into() });
        // Once the old key is retired, its records are reported as such, not as forged.
        assert_eq!(record.verify(&signed_old, &[NEW]), Verification::UnknownKey { key_id: "k1".into() });
        let mut tampered = record.clone();
        tampered.quantity = 2;
        assert_eq!(tampered.verify(&signed_old, &ring), Verification::Invalid);
        let wrong_alg = Signature { sig_alg: "hs256.v0".into(), ..signed_old.clone() };
        assert_eq!(record.verify(&wrong_alg, &ring), Verification::UnsupportedAlgorithm { sig_alg: "hs256.v0".into() });
    }

    #[test]
    fn the_signature_covers_the_jcs_form_an_outsider_can_rebuild() {
        let record = UsageRecord::action_executed("t1", "cs_1", "act-1", at(3), at(4));
        // What a verifier with any JCS library rebuilds from the served record minus its signature.
        let served = serde_json::json!({
            "usageId": record.usage_id, "tenantId": "t1", "sessionId": "cs_1", "meter": "action.executed",
            "quantity": 1, "unit": "action", "occurredAt": at(3).to_rfc3339(), "recordedAt": at(4).to_rfc3339(),
            "source": "act-1",
        });
        assert_eq!(record.signing_input(), to_jcs_string(&served));
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(OLD.secret).expect("key");
        mac.update(to_jcs_string(&served).as_bytes());
        assert_eq!(record.sign(OLD).signature, hex::encode(mac.finalize().into_bytes()));
    }
}
