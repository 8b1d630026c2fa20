//! Resume tokens: `base64url(connectionId.generation.epoch).base64url(HMAC-SHA256)` with
//! `CALLSTREAM_RESUME_SECRET`. Stateless to verify; single use because the generation it names is
//! rotated (in the database, atomically) by every resume.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeClaim {
    pub connection_id: String,
    pub generation: u64,
    pub epoch: String,
}

fn mac(secret: &str, payload: &[u8]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| {
        // HMAC accepts keys of any length; this branch cannot be reached.
        <Hmac<Sha256> as Mac>::new_from_slice(b"callstream").unwrap_or_else(|_| unreachable!())
    });
    mac.update(payload);
    mac
}

pub fn sign(secret: &str, claim: &ResumeClaim) -> String {
    let payload = format!("{}.{}.{}", claim.connection_id, claim.generation, claim.epoch);
    let signature = mac(secret, payload.as_bytes()).finalize().into_bytes();
    format!("{}.{}", URL_SAFE_NO_PAD.encode(payload), URL_SAFE_NO_PAD.encode(signature))
}

/// `None` for anything not signed by us (constant-time MAC check).
pub fn verify(secret: &str, token: &str) -> Option<ResumeClaim> {
    let (payload, signature) = token.split_once('.')?;
    let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
    mac(secret, &payload).verify_slice(&signature).ok()?;
    let payload = String::from_utf8(payload).ok()?;
    let mut parts = payload.splitn(3, '.');
    let connection_id = parts.next()?.to_owned();
    let generation = parts.next()?.parse().ok()?;
    let epoch = parts.next()?.to_owned();
    Some(ResumeClaim { connection_id, generation, epoch })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "resume-secret-0123456789abcdef0123";

    #[test]
    fn tokens_verify_and_resist_tampering() {
        let claim = ResumeClaim { connection_id: "wc_1".into(), generation: 3, epoch: "ep_x".into() };
        let token = sign(SECRET, &claim);
        assert_eq!(verify(SECRET, &token), Some(claim));
        assert_eq!(verify("another-secret-0123456789abcdef0123", &token), None);
        let (payload, signature) = token.split_once('.').expect("two parts");
        let forged = URL_SAFE_NO_PAD.encode("wc_1.4.ep_x");
        assert_eq!(verify(SECRET, &format!("{forged}.{signature}")), None);
        assert_eq!(verify(SECRET, payload), None);
        assert_eq!(verify(SECRET, "garbage"), None);
    }
}
