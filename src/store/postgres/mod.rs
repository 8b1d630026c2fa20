//! The PostgreSQL backend (issue 13), built up in slices. This slice is the log's core with
//! several writers, one per node, on one database:
//!
//! - **Dense positions, never a visible gap.** Sequences and identity columns hand out numbers in
//!   one order and commit in another, so a reader can see position 8 before 7 commits and skip it
//!   for good. Here every append transaction first takes one transaction-scoped advisory lock
//!   (`APPEND_LOCK`), then reads the tip and assigns positions under it. The next writer gets the
//!   lock only after the previous transaction has committed or rolled back. So commits happen in
//!   position order, and a reader reading `position > n` always sees a gapless prefix.
//! - Per-stream `seq` is assigned under the same lock, and `UNIQUE (stream_id, seq)` backs it.
//! - `UNIQUE (tenant_id, event_id)` gives idempotency: a repeat with the same content is answered
//!   with its original place, and other content is `EVENT_ID_CONFLICT`.
//! - The hash chain is extended under the lock, with the same `chain_hash` as SQLite.
//! - Triggers refuse UPDATE, DELETE and TRUNCATE on `events`.
//!
//! Each node still commits appends in groups: one transaction and one lock acquisition per group
//! (`append_group`). Every node can follow what all nodes commit (`feed::Follower`: NOTIFY on
//! commit, events read from the log). Projections, reads, billing and keys are not on PostgreSQL yet, and the
//! application runs on SQLite only (docs/scaling.md, BACKLOG §15).

pub mod feed;
pub mod log;
pub mod schema;
pub mod scratch;

use crate::store::StoreError;

/// The advisory lock every append transaction of every node takes first (`"callstre"` as an i64).
pub const APPEND_LOCK: i64 = 0x6361_6c6c_7374_7265;

pub fn connect(url: &str) -> Result<postgres::Client, StoreError> {
    postgres::Client::connect(url, postgres::NoTls)
        .map_err(|e| StoreError::Backend(format!("cannot connect to PostgreSQL at {}: {e}", redact(url))))
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

impl From<postgres::Error> for StoreError {
    fn from(err: postgres::Error) -> Self {
        StoreError::Backend(format!("PostgreSQL: {err}"))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(super::redact("postgres://app:s3cret@db:5432/x"), "postgres://app:***@db:5432/x");
        assert_eq!(super::redact("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(super::redact("host=db user=app"), "host=db user=app");
    }
}
