//! Which nodes still run, on a shared database. Each node holds a session-level advisory lock
//! named after its id, on a connection of its own, for as long as it runs. PostgreSQL releases it
//! the moment that session ends: the process exited or was killed (its socket closes with it), or
//! its connection broke. A node that finds a claim of another node (an action's executor) asks
//! whether that node still runs by trying its lock for the length of one transaction: taking it
//! means the claimant is gone, so its run was interrupted, at once instead of after its lease.
//!
//! The answer errs towards "running": a half-open connection keeps the lock until PostgreSQL's
//! keepalive gives up, and two ids whose keys collide look alive together; either way the lease
//! still bounds the wait. A node whose own connection broke looks gone until it has reconnected,
//! so a run of it may be declared interrupted while its call is made: the action is still never
//! run twice, and its outcome is not recorded (docs/scaling.md).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::store::StoreError;

/// The first key of every node lock (`"csnd"`); the append and migration locks use the one-key
/// form, a space of its own.
pub const NODE_LOCK_CLASS: i32 = 0x6373_6e64;

/// How often the holder checks its connection, and retries after losing it.
const CHECK: Duration = Duration::from_secs(1);

/// The second key of a node's lock.
pub fn node_key(node_id: &str) -> i32 {
    let digest = Sha256::digest(node_id.as_bytes());
    i32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// Take this process's node lock under a fresh id and hold it on a thread of its own until
/// `running` turns false, reconnecting and taking it again if the connection drops. Answers the id
/// once the lock is held, so no claim of this node is ever written before it can be seen alive.
pub fn hold(url: &str, running: Arc<AtomicBool>) -> Result<String, StoreError> {
    super::off_async(|| {
        let mut client = super::connect(url)?;
        // A fresh id collides with a live node's key about once in 2^32 starts: then take another.
        let mut node_id = None;
        for _ in 0..8 {
            let id = format!("node_{}", uuid::Uuid::new_v4().simple());
            if try_lock(&mut client, &id)? {
                node_id = Some(id);
                break;
            }
        }
        let node_id = node_id.ok_or_else(|| StoreError::Backend("no free node id after 8 tries".into()))?;
        let (url, id) = (url.to_owned(), node_id.clone());
        std::thread::Builder::new()
            .name("callstream-liveness".into())
            .spawn(move || keep(client, &url, &id, &running))
            .map_err(|e| StoreError::Backend(format!("cannot start the liveness holder: {e}")))?;
        Ok(node_id)
    })
}

fn try_lock(client: &mut postgres::Client, node_id: &str) -> Result<bool, StoreError> {
    let row = client.query_one("SELECT pg_try_advisory_lock($1, $2)", &[&NODE_LOCK_CLASS, &node_key(node_id)])?;
    Ok(row.get(0))
}

/// Hold the lock while `running`; dropping the client at the end releases it.
fn keep(mut client: postgres::Client, url: &str, node_id: &str, running: &AtomicBool) {
    while running.load(Ordering::SeqCst) {
        std::thread::sleep(CHECK);
        if client.is_valid(CHECK).is_ok() {
            continue;
        }
        tracing::warn!(node_id, "the liveness connection was lost; other nodes see this node as gone until it is back");
        let retaken = super::connect(url).and_then(|mut fresh| {
            // Waits out another node's momentary check of this key.
            fresh.execute("SELECT pg_advisory_lock($1, $2)", &[&NODE_LOCK_CLASS, &node_key(node_id)])?;
            Ok(fresh)
        });
        match retaken {
            Ok(fresh) => {
                client = fresh;
                tracing::info!(node_id, "the liveness lock is held again");
            }
            Err(err) => tracing::warn!(node_id, error = %err, "cannot take the liveness lock again yet"),
        }
    }
}
