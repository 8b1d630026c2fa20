//! Per-session fan-out of keys: the writer broadcasts each commit's new stream heads; the hub keeps
//! one `watch` per watched session, so a connection learns "head is now N" (coalesced) and reads
//! what it has not sent from the store. Also the registry that lets a resumed connection supersede
//! its old socket.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, oneshot, watch};

use crate::store::{Appended, Store, queries};

#[derive(Default)]
struct Registry {
    sessions: HashMap<String, watch::Sender<u64>>,
    /// connection id → (registration number, signal to the socket currently holding it)
    sockets: HashMap<String, (u64, oneshot::Sender<()>)>,
    next_registration: u64,
}

#[derive(Clone, Default)]
pub struct Hub {
    registry: Arc<Mutex<Registry>>,
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Follow a session's head.
    pub fn watch(&self, session_id: &str) -> watch::Receiver<u64> {
        let mut registry = self.lock();
        registry.sessions.entry(session_id.to_owned()).or_insert_with(|| watch::channel(0).0).subscribe()
    }

    fn publish(&self, session_id: &str, head: u64) {
        let mut registry = self.lock();
        let Some(sender) = registry.sessions.get(session_id) else { return };
        if sender.receiver_count() == 0 {
            registry.sessions.remove(session_id);
            return;
        }
        sender.send_if_modified(|current| {
            let advanced = head > *current;
            *current = (*current).max(head);
            advanced
        });
    }

    /// Take over `connection_id`: an older socket holding it is told to close (4001).
    pub fn register(&self, connection_id: &str) -> (u64, oneshot::Receiver<()>) {
        let (signal, superseded) = oneshot::channel();
        let mut registry = self.lock();
        registry.next_registration += 1;
        let registration = registry.next_registration;
        if let Some((_, previous)) = registry.sockets.insert(connection_id.to_owned(), (registration, signal)) {
            let _ = previous.send(());
        }
        (registration, superseded)
    }

    pub fn unregister(&self, connection_id: &str, registration: u64) {
        let mut registry = self.lock();
        if registry.sockets.get(connection_id).is_some_and(|(current, _)| *current == registration) {
            registry.sockets.remove(connection_id);
        }
    }

    pub fn connections(&self) -> usize {
        self.lock().sockets.len()
    }

    /// Forward the writer's commits until it stops. If we lag behind the broadcast, re-read the
    /// head of every watched session so nobody misses a wake-up.
    pub async fn run(self, store: Store, mut commits: broadcast::Receiver<Appended>) {
        loop {
            match commits.recv().await {
                Ok(Appended { heads }) => {
                    for (session_id, head) in heads.iter() {
                        self.publish(session_id, *head);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "realtime hub lagged behind the writer; refreshing heads");
                    let watched: Vec<String> = self.lock().sessions.keys().cloned().collect();
                    let heads = store
                        .read(move |conn| {
                            watched.into_iter().map(|s| Ok((queries::stream_head(conn, &s)?, s))).collect::<Result<
                                Vec<_>,
                                crate::error::AppError,
                            >>(
                            )
                        })
                        .await;
                    for (head, session_id) in heads.unwrap_or_default() {
                        self.publish(&session_id, head);
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}
