//! Crypto-shredding: the personal fields of a payload (those its schema marks
//! `x-callstream-personal`) are sealed at rest with the tenant's data key; erasing the tenant
//! destroys the key, and with it every copy of those fields in the log, without touching a row.
//!
//! - A data key is 32 random bytes per tenant and *generation*, stored only wrapped by the master
//!   key (XChaCha20-Poly1305, the tenant and generation as associated data).
//! - A sealed payload keeps its other fields in the clear and carries the personal ones under
//!   `"$sealed": "x1.<generation>.<base64url(nonce ‖ ciphertext)>"`, bound to the tenant and the
//!   eventId as associated data, so a ciphertext cannot be moved to another event. Schemas forbid
//!   unknown properties, so no client payload can carry that key.
//! - The hash chain covers the sealed text: the log verifies with or without the keys.
//! - Opening an event whose key was destroyed gives its personal fields as `null` and
//!   `"erased": true`.
//!
//! The vault caches unwrapped keys of *committed* key rows only (the writer hands it the keys of a
//! command after the group committed), and never again a generation at or below an erasure.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde_json::{Map, Value};

use crate::config::MasterKey;
use crate::domain::event_types::EventType;
use crate::store::StoreError;

/// The payload key under which the sealed fields travel.
pub const SEALED: &str = "$sealed";
/// The key an opened payload carries when its personal fields were erased.
pub const ERASED: &str = "erased";
const FORMAT: &str = "x1";
const NONCE_LEN: usize = 24;

/// One unwrapped data key.
pub struct DataKey {
    pub generation: u32,
    cipher: XChaCha20Poly1305,
}

/// A tenant's key as the store keeps it: wrapped, or destroyed (`None`).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRow {
    pub generation: u32,
    pub wrapped: Option<Vec<u8>>,
}

/// What the vault knows of one generation of a tenant's key.
pub enum KeyState {
    Known(Arc<DataKey>),
    Erased,
    /// Not loaded yet: read the tenant's key rows and `learn` them.
    Unknown,
}

#[derive(Default)]
struct TenantKeys {
    /// Every generation up to this one was destroyed.
    erased_through: u32,
    keys: Vec<Arc<DataKey>>,
}

pub struct Vault {
    master: XChaCha20Poly1305,
    tenants: RwLock<HashMap<String, TenantKeys>>,
}

fn wrap_aad(tenant_id: &str, generation: u32) -> Vec<u8> {
    format!("callstream/data-key/v1\n{tenant_id}\n{generation}").into_bytes()
}

fn seal_aad(tenant_id: &str, event_id: &str) -> Vec<u8> {
    format!("callstream/payload/v1\n{tenant_id}\n{event_id}").into_bytes()
}

fn random_nonce() -> [u8; NONCE_LEN] {
    use rand::Rng;
    rand::rng().random()
}

impl Vault {
    pub fn new(master: &MasterKey) -> Vault {
        Vault { master: XChaCha20Poly1305::new(master.expose().into()), tenants: RwLock::new(HashMap::new()) }
    }

    /// A vault with the same master key and nothing cached: unwraps what must not be cached yet.
    pub fn scratch(&self) -> Vault {
        Vault { master: self.master.clone(), tenants: RwLock::new(HashMap::new()) }
    }

    /// A fresh data key for `generation`, and its wrapped form to store.
    pub fn new_key(&self, tenant_id: &str, generation: u32) -> Result<(Arc<DataKey>, Vec<u8>), StoreError> {
        use rand::Rng;
        let key: [u8; 32] = rand::rng().random();
        let nonce = random_nonce();
        let aad = wrap_aad(tenant_id, generation);
        let ciphertext = self
            .master
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: &key, aad: &aad })
            .map_err(|_| StoreError::Backend("cannot wrap a data key".into()))?;
        let mut wrapped = nonce.to_vec();
        wrapped.extend_from_slice(&ciphertext);
        Ok((Arc::new(DataKey { generation, cipher: XChaCha20Poly1305::new((&key).into()) }), wrapped))
    }

    fn unwrap(&self, tenant_id: &str, generation: u32, wrapped: &[u8]) -> Result<Arc<DataKey>, StoreError> {
        let failed = || {
            StoreError::Backend(format!(
                "the data key of tenant `{tenant_id}` (generation {generation}) does not open with this \
                 {}: is it the key this database was written with?",
                MasterKey::VARIABLE
            ))
        };
        if wrapped.len() <= NONCE_LEN {
            return Err(failed());
        }
        let (nonce, ciphertext) = wrapped.split_at(NONCE_LEN);
        let aad = wrap_aad(tenant_id, generation);
        let key = self
            .master
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad: &aad })
            .map_err(|_| failed())?;
        let key: [u8; 32] = key.try_into().map_err(|_| failed())?;
        Ok(Arc::new(DataKey { generation, cipher: XChaCha20Poly1305::new((&key).into()) }))
    }

    /// A usable key for new events; `None` when none is loaded (look it up, or make one).
    pub fn active(&self, tenant_id: &str) -> Option<Arc<DataKey>> {
        let tenants = self.tenants.read().unwrap_or_else(|p| p.into_inner());
        tenants.get(tenant_id).and_then(|t| t.keys.last().cloned())
    }

    pub fn key(&self, tenant_id: &str, generation: u32) -> KeyState {
        let tenants = self.tenants.read().unwrap_or_else(|p| p.into_inner());
        let Some(tenant) = tenants.get(tenant_id) else { return KeyState::Unknown };
        if generation <= tenant.erased_through {
            return KeyState::Erased;
        }
        match tenant.keys.iter().find(|k| k.generation == generation) {
            Some(key) => KeyState::Known(key.clone()),
            None => KeyState::Unknown,
        }
    }

    /// Unwrap the live keys among `rows` (a tenant's committed key rows) and keep them, except
    /// generations already known to be erased. Answers the newest live key.
    pub fn learn(&self, tenant_id: &str, rows: &[KeyRow]) -> Result<Option<Arc<DataKey>>, StoreError> {
        let erased_in_rows = rows.iter().filter(|r| r.wrapped.is_none()).map(|r| r.generation).max().unwrap_or(0);
        let mut unwrapped = Vec::new();
        for row in rows {
            if let Some(wrapped) = &row.wrapped
                && row.generation > erased_in_rows
            {
                unwrapped.push(self.unwrap(tenant_id, row.generation, wrapped)?);
            }
        }
        let mut tenants = self.tenants.write().unwrap_or_else(|p| p.into_inner());
        let tenant = tenants.entry(tenant_id.to_owned()).or_default();
        tenant.erased_through = tenant.erased_through.max(erased_in_rows);
        let floor = tenant.erased_through;
        tenant.keys.retain(|k| k.generation > floor);
        for key in unwrapped {
            if key.generation > floor && !tenant.keys.iter().any(|k| k.generation == key.generation) {
                tenant.keys.push(key);
            }
        }
        tenant.keys.sort_by_key(|k| k.generation);
        Ok(tenant.keys.last().cloned())
    }

    /// Forget every key of the tenant up to `generation`, for good.
    pub fn forget(&self, tenant_id: &str, generation: u32) {
        let mut tenants = self.tenants.write().unwrap_or_else(|p| p.into_inner());
        let tenant = tenants.entry(tenant_id.to_owned()).or_default();
        tenant.erased_through = tenant.erased_through.max(generation);
        let floor = tenant.erased_through;
        tenant.keys.retain(|k| k.generation > floor);
    }
}

/// Whether the stored payload text carries sealed fields (a cheap test before parsing).
pub fn is_sealed(payload: &str) -> bool {
    payload.contains("\"$sealed\"")
}

/// The personal fields of an event type (none for an unknown one).
pub fn personal_fields(event_type: &str) -> &'static [String] {
    EventType::lookup(event_type).map_or(&[], EventType::personal_fields)
}

/// The payload with its `personal` fields (`personal_fields` of its type) sealed under `key`, as
/// canonical JSON text; `None` when it carries none of them (it is stored as it came).
pub fn seal(
    key: &DataKey,
    tenant_id: &str,
    event_id: &str,
    personal: &[String],
    payload: &str,
) -> Result<Option<String>, StoreError> {
    let Ok(Value::Object(mut fields)) = serde_json::from_str::<Value>(payload) else { return Ok(None) };
    let mut secret = Map::new();
    for name in personal {
        if let Some(value) = fields.remove(name) {
            secret.insert(name.clone(), value);
        }
    }
    if secret.is_empty() {
        return Ok(None);
    }
    let plaintext = crate::domain::canonical::to_canonical_string(&Value::Object(secret));
    let nonce = random_nonce();
    let aad = seal_aad(tenant_id, event_id);
    let ciphertext = key
        .cipher
        .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext.as_bytes(), aad: &aad })
        .map_err(|_| StoreError::Backend("cannot seal a payload".into()))?;
    let mut sealed = nonce.to_vec();
    sealed.extend_from_slice(&ciphertext);
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed);
    fields.insert(SEALED.to_owned(), Value::String(format!("{FORMAT}.{}.{encoded}", key.generation)));
    Ok(Some(crate::domain::canonical::to_canonical_string(&Value::Object(fields))))
}

fn parse_sealed(sealed: &str) -> Option<(u32, &str)> {
    let mut parts = sealed.splitn(3, '.');
    if parts.next()? != FORMAT {
        return None;
    }
    let generation = parts.next()?.parse().ok()?;
    Some((generation, parts.next()?))
}

/// A sealed payload's fields, opened with the key `key_for` finds for its generation (`None`:
/// the key was destroyed, so each personal field of the type is `null` and `"erased": true`).
/// Answers the fields and whether they were erased; a payload without a seal comes back as it is.
pub fn open_fields(
    tenant_id: &str,
    event_id: &str,
    event_type: &str,
    payload: &str,
    key_for: impl FnOnce(u32) -> Result<Option<Arc<DataKey>>, StoreError>,
) -> Result<(Map<String, Value>, bool), StoreError> {
    let corrupt = |what: &str| StoreError::Backend(format!("event `{event_id}` of tenant `{tenant_id}`: {what}"));
    let Ok(Value::Object(mut fields)) = serde_json::from_str::<Value>(payload) else {
        return Err(corrupt("a payload that is not a JSON object"));
    };
    let Some(Value::String(sealed)) = fields.remove(SEALED) else { return Ok((fields, false)) };
    let (generation, encoded) = parse_sealed(&sealed).ok_or_else(|| corrupt("a malformed seal"))?;
    let Some(key) = key_for(generation)? else {
        for name in personal_fields(event_type) {
            fields.insert(name.clone(), Value::Null);
        }
        fields.insert(ERASED.to_owned(), Value::Bool(true));
        return Ok((fields, true));
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| corrupt("a seal that is not base64url"))?;
    if bytes.len() <= NONCE_LEN {
        return Err(corrupt("a truncated seal"));
    }
    let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
    let aad = seal_aad(tenant_id, event_id);
    let plaintext = key
        .cipher
        .decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad: &aad })
        .map_err(|_| corrupt("a seal that does not open with its key"))?;
    let Ok(Value::Object(secret)) = serde_json::from_slice::<Value>(&plaintext) else {
        return Err(corrupt("sealed fields that are not a JSON object"));
    };
    fields.extend(secret);
    Ok((fields, false))
}

/// The payload as the API serves it (`open_fields`), as canonical JSON text.
pub fn open(
    tenant_id: &str,
    event_id: &str,
    event_type: &str,
    payload: &str,
    key_for: impl FnOnce(u32) -> Result<Option<Arc<DataKey>>, StoreError>,
) -> Result<String, StoreError> {
    let (fields, _) = open_fields(tenant_id, event_id, event_type, payload, key_for)?;
    Ok(crate::domain::canonical::to_canonical_string(&Value::Object(fields)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault() -> Vault {
        Vault::new(&MasterKey::generate())
    }

    const FINAL: &str = "transcript.segment.final";

    #[test]
    fn sealing_hides_personal_fields_and_opening_restores_them() {
        let vault = vault();
        let (key, _) = vault.new_key("t1", 1).expect("key");
        let payload = r#"{"revision":0,"segmentId":"s1","speaker":"Ada","text":"call me at 555"}"#;
        let sealed = seal(&key, "t1", "e1", personal_fields(FINAL), payload).expect("seal").expect("personal fields");
        assert!(!sealed.contains("555") && !sealed.contains("Ada"), "{sealed}");
        assert!(sealed.contains(r#""segmentId":"s1""#), "the rest stays readable: {sealed}");
        assert!(is_sealed(&sealed));
        let mut asked = None;
        let opened = open("t1", "e1", FINAL, &sealed, |generation| {
            asked = Some(generation);
            Ok(Some(key.clone()))
        });
        assert_eq!(opened.expect("open"), payload);
        assert_eq!(asked, Some(1), "the seal names its key generation");
        // Bound to its event: the same ciphertext under another eventId does not open.
        assert!(open("t1", "e2", FINAL, &sealed, |_| Ok(Some(key.clone()))).is_err());
        let (other, _) = vault.new_key("t1", 2).expect("key");
        assert!(open("t1", "e1", FINAL, &sealed, |_| Ok(Some(other.clone()))).is_err());
    }

    #[test]
    fn without_its_key_a_payload_opens_as_erased() {
        let vault = vault();
        let (key, _) = vault.new_key("t1", 1).expect("key");
        let payload = r#"{"revision":0,"segmentId":"s1","text":"secret"}"#;
        let sealed = seal(&key, "t1", "e1", personal_fields(FINAL), payload).expect("seal").expect("sealed");
        let erased: Value =
            serde_json::from_str(&open("t1", "e1", FINAL, &sealed, |_| Ok(None)).expect("open")).unwrap();
        assert_eq!(erased["text"], Value::Null);
        assert_eq!(erased["speaker"], Value::Null);
        assert_eq!(erased["erased"], Value::Bool(true));
        assert_eq!(erased["segmentId"], "s1");
    }

    #[test]
    fn payloads_without_personal_fields_are_stored_as_they_came() {
        let vault = vault();
        let (key, _) = vault.new_key("t1", 1).expect("key");
        assert!(
            seal(
                &key,
                "t1",
                "e1",
                personal_fields("call.session.state_changed"),
                r#"{"from":"created","to":"active"}"#
            )
            .expect("seal")
            .is_none()
        );
        assert!(
            seal(&key, "t1", "e1", personal_fields(FINAL), r#"{"revision":0,"segmentId":"s1"}"#)
                .expect("seal")
                .is_none()
        );
    }

    #[test]
    fn wrapped_keys_open_only_with_their_master_tenant_and_generation() {
        let vault = vault();
        let (key, wrapped) = vault.new_key("t1", 3).expect("key");
        let sealed = seal(&key, "t1", "e1", personal_fields(FINAL), r#"{"revision":0,"segmentId":"s","text":"x"}"#)
            .unwrap()
            .unwrap();
        let learned = vault.learn("t1", &[KeyRow { generation: 3, wrapped: Some(wrapped.clone()) }]).unwrap();
        assert_eq!(
            open("t1", "e1", FINAL, &sealed, |_| Ok(learned)).unwrap(),
            r#"{"revision":0,"segmentId":"s","text":"x"}"#
        );
        assert!(vault.learn("t2", &[KeyRow { generation: 3, wrapped: Some(wrapped.clone()) }]).is_err());
        assert!(vault.learn("t1", &[KeyRow { generation: 4, wrapped: Some(wrapped.clone()) }]).is_err());
        assert!(
            Vault::new(&MasterKey::generate())
                .learn("t1", &[KeyRow { generation: 3, wrapped: Some(wrapped) }])
                .is_err()
        );
    }

    #[test]
    fn a_forgotten_generation_is_never_learned_again() {
        let vault = vault();
        let (_, wrapped) = vault.new_key("t1", 1).expect("key");
        let rows = [KeyRow { generation: 1, wrapped: Some(wrapped) }];
        assert!(vault.learn("t1", &rows).unwrap().is_some());
        vault.forget("t1", 1);
        assert!(matches!(vault.key("t1", 1), KeyState::Erased));
        // A reader that loaded the rows before the erasure committed cannot bring the key back.
        assert!(vault.learn("t1", &rows).unwrap().is_none());
        assert!(vault.active("t1").is_none());
        assert!(matches!(vault.key("t1", 2), KeyState::Unknown));
    }
}
