//! Per-session fan-out of keys: the writer broadcasts each commit's new stream heads; the hub keeps
//! one `watch` per watched session, so a connection learns "head is now N" (coalesced) and reads
//! what it has not sent from the store. Also the registry that lets a resumed connection supersede
//! its old socket.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, oneshot, watch};

use super::protocol::ServerFrame;
use crate::domain::session::SessionEvent;
use crate::error::AppError;
use crate::store::StoreError;
use crate::store::{Appended, Store};

/// One event, serialized once as its `event` frame, shared by every connection of the session.
#[derive(Debug)]
pub struct EventFrame {
    pub seq: u64,
    pub text: Arc<str>,
    /// The session ends with this event (`call.session.failed`, or a transition to `ended`).
    pub terminal: bool,
}

/// The recent events of one session, read from the store once for all its subscribers.
#[derive(Default)]
pub struct Feed {
    recent: tokio::sync::Mutex<VecDeque<Arc<EventFrame>>>,
}

/// Recent events kept per watched session.
const FEED_CAPACITY: usize = 1024;

impl Feed {
    /// Up to `limit` events with `seq > after`, in order, knowing the session reached `head`.
    /// Served from the shared window when it covers `after` (the store is read only for what the
    /// window lacks, once for all subscribers); a connection further behind reads the store itself.
    pub async fn after(
        &self,
        store: &Store,
        session_id: &str,
        after: u64,
        head: u64,
        limit: u64,
    ) -> Result<Vec<Arc<EventFrame>>, AppError> {
        let mut recent = self.recent.lock().await;
        let covered = recent.front().is_some_and(|first| first.seq <= after + 1) || recent.is_empty();
        if !covered {
            drop(recent);
            return read(store, session_id, after, limit).await;
        }
        let cached_to = recent.back().map(|last| last.seq).unwrap_or(after).max(after);
        let fresh = if cached_to < head { read(store, session_id, cached_to, limit).await? } else { Vec::new() };
        if recent.back().is_some_and(|last| fresh.first().is_some_and(|f| f.seq != last.seq + 1)) {
            recent.clear();
        }
        recent.extend(fresh);
        while recent.len() > FEED_CAPACITY {
            recent.pop_front();
        }
        Ok(recent.iter().filter(|e| e.seq > after).take(limit as usize).cloned().collect())
    }
}

async fn read(store: &Store, session_id: &str, after: u64, limit: u64) -> Result<Vec<Arc<EventFrame>>, AppError> {
    let session_id = session_id.to_owned();
    store
        .read(move |conn| -> Result<_, StoreError> {
            Ok(conn
                .stream_events(&session_id, after, limit)?
                .into_iter()
                .map(|event| {
                    let terminal = SessionEvent::from_envelope_parts(&event.event_type, &event.payload)
                        .is_some_and(|change| change.ends_session());
                    let text = ServerFrame::Event { event: event.to_json() }.to_text();
                    Arc::new(EventFrame { seq: event.seq, text: text.into(), terminal })
                })
                .collect())
        })
        .await
        .map_err(AppError::from)
}

#[derive(Default)]
struct Registry {
    sessions: HashMap<String, (watch::Sender<u64>, Arc<Feed>)>,
    /// connection id → (registration number, its resume generation, signal to the socket
    /// currently holding it)
    sockets: HashMap<String, (u64, u64, oneshot::Sender<()>)>,
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

    /// Follow a session's head, and share its recent events.
    pub fn watch(&self, session_id: &str) -> (watch::Receiver<u64>, Arc<Feed>) {
        let mut registry = self.lock();
        let (sender, feed) =
            registry.sessions.entry(session_id.to_owned()).or_insert_with(|| (watch::channel(0).0, Arc::default()));
        (sender.subscribe(), feed.clone())
    }

    fn publish(&self, session_id: &str, head: u64) {
        let mut registry = self.lock();
        let Some((sender, _)) = registry.sessions.get(session_id) else { return };
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

    /// Take over `connection_id` at resume generation `generation`: an older socket holding it
    /// here is told to close (4001).
    pub fn register(&self, connection_id: &str, generation: u64) -> (u64, oneshot::Receiver<()>) {
        let (signal, superseded) = oneshot::channel();
        let mut registry = self.lock();
        registry.next_registration += 1;
        let registration = registry.next_registration;
        if let Some((_, _, previous)) =
            registry.sockets.insert(connection_id.to_owned(), (registration, generation, signal))
        {
            let _ = previous.send(());
        }
        (registration, superseded)
    }

    /// Another node resumed `connection_id` at `generation`: a socket of an older generation
    /// held here closes (4001).
    fn taken_over(&self, connection_id: &str, generation: u64) {
        let mut registry = self.lock();
        if registry.sockets.get(connection_id).is_some_and(|(_, held, _)| *held < generation)
            && let Some((_, _, signal)) = registry.sockets.remove(connection_id)
        {
            let _ = signal.send(());
        }
    }

    pub fn unregister(&self, connection_id: &str, registration: u64) {
        let mut registry = self.lock();
        if registry.sockets.get(connection_id).is_some_and(|(current, ..)| *current == registration) {
            registry.sockets.remove(connection_id);
        }
    }

    /// Forward the writer's commits until it stops. If we lag behind the broadcast, re-read the
    /// head of every watched session so nobody misses a wake-up.
    /// Ends when the writer stops or `stopping` turns true (its store handle must go for the
    /// writer to flush and stop).
    pub async fn run(
        self,
        store: Store,
        mut commits: broadcast::Receiver<Appended>,
        mut stopping: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            let received = tokio::select! {
                received = commits.recv() => received,
                _ = stopping.wait_for(|stop| *stop) => return,
            };
            match received {
                Ok(Appended { heads, taken_over, .. }) => {
                    for (session_id, head) in heads.iter() {
                        self.publish(session_id, *head);
                    }
                    for (connection_id, generation) in taken_over.iter() {
                        self.taken_over(connection_id, *generation);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "realtime hub lagged behind the writer; refreshing heads");
                    let watched: Vec<String> = self.lock().sessions.keys().cloned().collect();
                    let heads = store
                        .read(move |conn| -> Result<_, StoreError> {
                            watched.into_iter().map(|s| Ok((conn.stream_head(&s)?, s))).collect::<Result<Vec<_>, _>>()
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
