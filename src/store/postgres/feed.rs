//! The commit feed across nodes. Every append transaction sends `NOTIFY callstream_appended`
//! with its new tip position; PostgreSQL delivers it only on commit, in commit order. A node
//! follows the log by waiting for a notice and then reading every event after the last one it
//! has seen, from the log itself and never from the notice. A lost, merged or late notice
//! therefore costs latency and never an event. A timeout re-reads even without a notice, which
//! covers a listener that reconnected.

use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;

use super::log::read_after;
use crate::store::StoreError;
use crate::store::log::StoredEvent;

pub const CHANNEL: &str = "callstream_appended";

/// How many events one read takes at most.
const PAGE: u64 = 1000;

/// Follows the log from a position, on a connection of its own.
pub struct Follower {
    client: postgres::Client,
    last: u64,
}

impl Follower {
    /// Listen on `client` (which then serves only this follower) from after `position`.
    pub fn start(mut client: postgres::Client, position: u64) -> Result<Follower, StoreError> {
        client.batch_execute(&format!("LISTEN {CHANNEL}"))?;
        Ok(Follower { client, last: position })
    }

    /// The position of the last event handed out.
    pub fn position(&self) -> u64 {
        self.last
    }

    /// The events committed after the last one handed out, in position order, gapless. Reads at
    /// once; when there is nothing new, waits up to `wait` for a notice, then reads again.
    pub fn next(&mut self, wait: Duration) -> Result<Vec<StoredEvent>, StoreError> {
        let events = self.read()?;
        if !events.is_empty() {
            return Ok(events);
        }
        // Any notice will do: its payload is only a hint, the log is read either way. Draining
        // the rest keeps one read per burst of commits.
        {
            let mut notices = self.client.notifications();
            if notices.timeout_iter(wait).next()?.is_some() {
                while notices.iter().next()?.is_some() {}
            }
        }
        self.read()
    }

    fn read(&mut self) -> Result<Vec<StoredEvent>, StoreError> {
        let events = read_after(&mut self.client, self.last, PAGE)?;
        if let Some(last) = events.last() {
            self.last = last.position;
        }
        Ok(events)
    }
}
