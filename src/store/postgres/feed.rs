//! The commit feed across nodes. Every append transaction sends `NOTIFY callstream_appended`
//! with its new tip position; PostgreSQL delivers it only on commit, in commit order. A node
//! follows the log by waiting for a notice and then reading every event after the last one it
//! has seen, from the log itself and never from the notice. A lost, merged or late notice
//! therefore costs latency and never an event. A timeout re-reads even without a notice, which
//! covers a listener that reconnected.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;

use super::log::read_after;
use crate::store::log::StoredEvent;
use crate::store::sealing::Vault;
use crate::store::{Appended, StoreError};

pub const CHANNEL: &str = "callstream_appended";
/// `"<generation> <connection id>"` when a resume took a connection over (`rotate_connection`).
pub const TAKEN_OVER: &str = "callstream_taken_over";
/// `"tenant <id>"` when a tenant's record changed; `"erased <generation> <id>"` when its data keys
/// were destroyed through that generation. Every node drops what it cached.
pub const CHANGED: &str = "callstream_changed";

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

/// How long a follower waits for a notice before reading anyway.
const POLL: Duration = Duration::from_millis(500);

/// Announce every node's commits on this node: from `position`, each batch of new events becomes
/// one `Appended` with the new head of every stream it touched (heads only: the hub reads the
/// events it sends from the store). Runs on its own thread until `running` turns false;
/// reconnects (and re-reads from the last position) when the connection drops.
pub fn announce_heads(
    url: String,
    mut position: u64,
    announce: tokio::sync::broadcast::Sender<Appended>,
    vault: Arc<Vault>,
    running: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, StoreError> {
    std::thread::Builder::new()
        .name("callstream-follower".into())
        .spawn(move || {
            while running.load(Ordering::SeqCst) {
                if let Err(err) = follow(&url, &mut position, &announce, &vault, &running) {
                    tracing::warn!(error = %err, position, "following the log failed; reconnecting");
                    std::thread::sleep(POLL);
                }
            }
        })
        .map_err(|e| StoreError::Backend(format!("cannot start the log follower: {e}")))
}

fn follow(
    url: &str,
    position: &mut u64,
    announce: &tokio::sync::broadcast::Sender<Appended>,
    vault: &Vault,
    running: &AtomicBool,
) -> Result<(), StoreError> {
    let mut client = super::connect(url)?;
    client.batch_execute(&format!("LISTEN {CHANNEL}; LISTEN {TAKEN_OVER}; LISTEN {CHANGED}"))?;
    let heads = client.prepare(
        "SELECT stream_id, MAX(seq), MAX(position) FROM \
         (SELECT stream_id, seq, position FROM events WHERE position > $1 ORDER BY position LIMIT $2) batch \
         GROUP BY stream_id",
    )?;
    let mut changes = Changes::default();
    while running.load(Ordering::SeqCst) {
        {
            let mut notices = client.notifications();
            let mut pending = notices.iter();
            while let Some(notice) = pending.next()? {
                changes.note(&notice, vault);
            }
        }
        let after = i64::try_from(*position).map_err(|_| StoreError::Backend("position beyond i64".into()))?;
        let page = i64::try_from(PAGE).unwrap_or(i64::MAX);
        let rows = client.query(&heads, &[&after, &page])?;
        if rows.is_empty() {
            if !changes.is_empty() {
                let _ = announce.send(changes.take(Vec::new()));
            }
            let mut notices = client.notifications();
            if let Some(notice) = notices.timeout_iter(POLL).next()? {
                changes.note(&notice, vault);
            }
            continue;
        }
        let mut streams = Vec::with_capacity(rows.len());
        for row in &rows {
            let (stream, head, last): (String, i64, i64) = (row.get(0), row.get(1), row.get(2));
            *position = (*position).max(u64::try_from(last).unwrap_or(0));
            streams.push((stream, u64::try_from(head).unwrap_or(0)));
        }
        let _ = announce.send(changes.take(streams));
    }
    Ok(())
}

/// What other nodes' notices said since the last announcement.
#[derive(Default)]
struct Changes {
    taken_over: Vec<(String, u64)>,
    tenants: Vec<String>,
}

impl Changes {
    /// Take in one notice. An erasure is applied to the vault at once, before anything is
    /// announced: no key it destroyed opens a payload here after this returns.
    fn note(&mut self, notice: &postgres::Notification, vault: &Vault) {
        let payload = notice.payload();
        match notice.channel() {
            TAKEN_OVER => {
                if let Some((generation, connection_id)) = payload.split_once(' ')
                    && let Ok(generation) = generation.parse()
                {
                    self.taken_over.push((connection_id.to_owned(), generation));
                }
            }
            CHANGED => match payload.split_once(' ') {
                Some(("tenant", tenant_id)) => self.tenants.push(tenant_id.to_owned()),
                Some(("erased", rest)) => {
                    if let Some((through, tenant_id)) = rest.split_once(' ')
                        && let Ok(through) = through.parse()
                    {
                        vault.forget(tenant_id, through);
                    }
                }
                _ => tracing::warn!(payload, "an unknown change notice"),
            },
            _ => {}
        }
    }

    fn is_empty(&self) -> bool {
        self.taken_over.is_empty() && self.tenants.is_empty()
    }

    fn take(&mut self, heads: Vec<(String, u64)>) -> Appended {
        Appended {
            heads: Arc::new(heads),
            taken_over: Arc::new(std::mem::take(&mut self.taken_over)),
            tenants_changed: Arc::new(std::mem::take(&mut self.tenants)),
        }
    }
}
