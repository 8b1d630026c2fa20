//! Confirmation tokens: `base64url(actionId|paramsHash|expiresAt|nonce).base64url(HMAC)`. Bound to
//! one action and one params hash; single use because the action row remembers the current nonce
//! and whether it was spent.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmation {
    pub action_id: String,
    pub params_hash: String,
    /// Unix seconds.
    pub expires_at: i64,
    pub nonce: String,
}

fn mac(secret: &str) -> Hmac<Sha256> {
    // HMAC accepts keys of every length.
    <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!())
}

pub fn sign(secret: &str, confirmation: &Confirmation) -> String {
    let payload = format!(
        "{}|{}|{}|{}",
        confirmation.action_id, confirmation.params_hash, confirmation.expires_at, confirmation.nonce
    );
    let mut mac = mac(secret);
    mac.update(payload.as_bytes());
    format!("{}.{}", URL_SAFE_NO_PAD.encode(payload), URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

pub fn verify(secret: &str, token: &str) -> Option<Confirmation> {
    let (payload, signature) = token.split_once('.')?;
    let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
    let mut mac = mac(secret);
    mac.update(&payload);
    mac.verify_slice(&signature).ok()?;
    let payload = String::from_utf8(payload).ok()?;
    let mut parts = payload.split('|');
    let confirmation = Confirmation {
        action_id: parts.next()?.to_owned(),
        params_hash: parts.next()?.to_owned(),
        expires_at: parts.next()?.parse().ok()?,
        nonce: parts.next()?.to_owned(),
    };
    parts.next().is_none().then_some(confirmation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_and_resist_tampering() {
        let secret = "confirm-secret-0123456789abcdef0123";
        let confirmation =
            Confirmation { action_id: "a1".into(), params_hash: "ff".into(), expires_at: 10, nonce: "n".into() };
        let token = sign(secret, &confirmation);
        assert_eq!(verify(secret, &token), Some(confirmation));
        assert_eq!(verify("other-secret-0123456789abcdef012345", &token), None);
        let (_, signature) = token.split_once('.').expect("dot");
        assert_eq!(verify(secret, &format!("{}.{signature}", URL_SAFE_NO_PAD.encode("a2|ff|10|n"))), None);
        assert_eq!(verify(secret, "nonsense"), None);
    }
}
