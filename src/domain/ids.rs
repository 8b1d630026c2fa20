//! Typed identifiers. Each is parsed once at the edge and cannot hold an invalid value.

use std::fmt;

use serde::{Deserialize, Serialize};

/// `[A-Za-z0-9._:-]`, the id alphabet of SPEC §2.
fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')
}

/// Principals may also carry `@` (e-mail-like subjects).
fn is_principal_char(c: char) -> bool {
    is_id_char(c) || c == '@'
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $allowed:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const MAX_LEN: usize = 128;

            pub fn parse(raw: &str) -> Result<Self, String> {
                if raw.is_empty() || raw.len() > Self::MAX_LEN {
                    return Err(format!("must be 1–{} characters long", Self::MAX_LEN));
                }
                match raw.chars().find(|c| !$allowed(*c)) {
                    Some(bad) => Err(format!("contains the character {bad:?}, outside [A-Za-z0-9._:-]")),
                    None => Ok(Self(raw.to_owned())),
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                Self::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(
    /// A producer-chosen event id, unique per tenant.
    EventId, is_id_char
);
string_id!(
    /// A stream name: a call session id (`cs_…`) or a named stream such as `acct:<tenant>`.
    SessionId, is_id_char
);
string_id!(TenantId, is_principal_char);
string_id!(UserId, is_principal_char);

impl SessionId {
    /// A fresh, time-ordered call session id.
    pub fn generate() -> Self {
        Self(format!("cs_{}", uuid::Uuid::now_v7().simple()))
    }
}

/// Per-stream sequence number: 1-based and gapless.
pub type Seq = u64;
/// Global log position: strictly increasing.
pub type Position = u64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_reject_bad_characters_and_lengths() {
        assert!(EventId::parse("01J.abc:def_g-h").is_ok());
        assert!(EventId::parse("").is_err());
        assert!(EventId::parse("has space").is_err());
        assert!(EventId::parse("a@b").is_err());
        assert!(UserId::parse("a@b").is_ok());
        assert!(EventId::parse(&"x".repeat(129)).is_err());
        assert!(EventId::parse(&"x".repeat(128)).is_ok());
    }

    #[test]
    fn generated_session_ids_parse() {
        let id = SessionId::generate();
        assert_eq!(SessionId::parse(id.as_str()), Ok(id));
    }
}
