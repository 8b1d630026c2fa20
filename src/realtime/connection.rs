//! One WebSocket connection: welcome, replay from the checkpoint, live events from the store as
//! the session's head moves, acks, publishes, token refresh, heartbeats and the close codes.
//!
//! There is one cursor, `last_sent`: replay and live traffic are the same loop reading
//! `seq > last_sent` from the store, so they merge with no gap, no duplicate and no reordering.

use std::time::Duration;

use actix_ws::{AggregatedMessage as Message, AggregatedMessageStream, CloseCode, CloseReason};
use rand::Rng;
use serde_json::Value;
use tokio::time::{Instant, sleep_until, timeout};

use super::hub::{Feed, Hub};
use super::protocol::{ClientFrame, Close, ServerFrame, parse_client_frame};
use crate::app::AppState;
use crate::app::events::{append_checked, caller_class, parse_batch};
use crate::app::realtime::{self, Opened};
use crate::domain::principal::{Principal, Role};
use crate::error::{AppError, ErrorCode};

/// Events read from the store per round trip while catching up.
const CATCH_UP_CHUNK: u64 = 256;
/// Largest client frame accepted (a publish carries one envelope).
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;
/// How long a close frame may wait behind frames the peer has not read yet. A slow consumer that
/// is still reading gets its 4008 after the data it was sent; a dead one is dropped after this.
const CLOSE_LINGER: Duration = Duration::from_secs(10);

pub struct Connection {
    state: AppState,
    hub: Hub,
    principal: Principal,
    opened: Opened,
    /// Unix seconds when the caller's bearer token expires.
    token_expires_at: i64,
    last_sent: u64,
    acked: u64,
    /// The highest head seen (from the store at welcome, then from the hub).
    known_head: u64,
}

/// Why the loop ended: a close frame to send, or the peer is already gone.
enum Ending {
    Close(Close),
    Gone,
}

impl Connection {
    pub fn new(state: AppState, hub: Hub, principal: Principal, token_expires_at: i64, opened: Opened) -> Connection {
        let start = opened.replay_from;
        Connection { state, hub, principal, opened, token_expires_at, last_sent: start, acked: start, known_head: 0 }
    }

    pub async fn run(mut self, mut socket: actix_ws::Session, mut incoming: AggregatedMessageStream) {
        let connection_id = self.opened.connection_id.clone();
        let (registration, mut superseded) = self.hub.register(&connection_id, self.opened.generation);
        let (mut heads, feed) = self.hub.watch(&self.opened.session_id);
        self.state.metrics.ws_opened(self.opened.resumed);
        let ending = self.serve(&mut socket, &mut incoming, &mut superseded, &mut heads, &feed).await;
        self.hub.unregister(&connection_id, registration);
        let close_code = match &ending {
            Ending::Close(close) => Some(close.code()),
            Ending::Gone => None,
        };
        if let Ending::Close(close) = ending {
            let code = close.code();
            let description = close.description(rand::rng().random_range(250..2_250));
            let close =
                socket.close(Some(CloseReason { code: CloseCode::Other(code), description: Some(description) }));
            if timeout(CLOSE_LINGER, close).await.is_err() {
                tracing::debug!(code, "peer did not read up to the close frame; dropped");
            }
        }
        if let Err(err) = realtime::disconnected(&self.state, connection_id, self.opened.generation).await {
            tracing::warn!(error = %err, "could not record a disconnect");
        }
        // Counted as open until its reconnect window has started.
        self.state.metrics.ws_closed(close_code);
    }

    async fn serve(
        &mut self,
        socket: &mut actix_ws::Session,
        incoming: &mut AggregatedMessageStream,
        superseded: &mut tokio::sync::oneshot::Receiver<()>,
        heads: &mut tokio::sync::watch::Receiver<u64>,
        feed: &Feed,
    ) -> Ending {
        let realtime = self.state.config.realtime.clone();
        let head = match self.head().await {
            Ok(head) => head,
            Err(_) => return Ending::Close(Close::Internal),
        };
        self.known_head = head;
        let welcome = ServerFrame::Welcome {
            connection_id: self.opened.connection_id.clone(),
            epoch: self.state.store.epoch().to_owned(),
            head_seq: head,
            replay_from: self.opened.replay_from,
            resume_token: self.opened.resume_token.clone(),
            resume_expires_at: self
                .state
                .clock
                .now()
                .plus_seconds(realtime.reconnect_window_secs as i64)
                .to_rfc3339_seconds(),
            reconnect_window_secs: realtime.reconnect_window_secs,
        };
        if socket.text(welcome.to_text()).await.is_err() {
            return Ending::Gone;
        }
        if let Some(ending) = self.catch_up(socket, heads, feed).await {
            return ending;
        }
        let mut heartbeat = tokio::time::interval(Duration::from_secs(realtime.heartbeat_secs));
        heartbeat.tick().await;
        let idle_limit = Duration::from_secs(realtime.idle_timeout_secs);
        let mut last_seen = Instant::now();
        let mut stopping = self.state.workers.stopping();
        loop {
            let expiry = sleep_until(self.token_deadline());
            tokio::select! {
                biased;
                _ = &mut *superseded => return Ending::Close(Close::Superseded),
                _ = stopping.wait_for(|stop| *stop) => return Ending::Close(Close::Restarting),
                _ = expiry => {
                    let frame = ServerFrame::Error { code: ErrorCode::AuthExpired.as_str(), message: "the bearer token expired; resume with a fresh one".into(), reference: None };
                    let _ = socket.text(frame.to_text()).await;
                    return Ending::Close(Close::AuthExpired);
                }
                message = incoming.recv() => {
                    last_seen = Instant::now();
                    match message {
                        None | Some(Err(_)) => return Ending::Gone,
                        Some(Ok(Message::Close(_))) => return Ending::Gone,
                        Some(Ok(Message::Ping(bytes))) => { if socket.pong(&bytes).await.is_err() { return Ending::Gone } }
                        Some(Ok(Message::Text(text))) => {
                            if let Some(reply) = self.handle(&text).await
                                && socket.text(reply.to_text()).await.is_err() { return Ending::Gone }
                        }
                        Some(Ok(Message::Binary(_))) => {
                            let frame = ServerFrame::Error { code: ErrorCode::WsFrameInvalid.as_str(), message: "frames are JSON text".into(), reference: None };
                            if socket.text(frame.to_text()).await.is_err() { return Ending::Gone }
                        }
                        Some(Ok(_)) => {}
                    }
                }
                changed = heads.changed() => {
                    if changed.is_err() { return Ending::Close(Close::Internal) }
                    if let Some(ending) = self.catch_up(socket, heads, feed).await { return ending }
                }
                _ = heartbeat.tick() => {
                    if self.tenant_suspended() {
                        return Ending::Close(Close::TenantSuspended);
                    }
                    if last_seen.elapsed() > idle_limit {
                        return Ending::Close(Close::IdleTimeout);
                    }
                    if socket.ping(b"").await.is_err() { return Ending::Gone }
                }
            }
        }
    }

    /// Suspension is checked on every heartbeat and before every publish; operators are exempt
    /// (as on HTTP).
    fn tenant_suspended(&self) -> bool {
        !self.principal.has(Role::Operator) && self.state.tenants.admission(self.principal.tenant_id.as_str()).suspended
    }

    fn token_deadline(&self) -> Instant {
        let remaining = self.token_expires_at - self.state.clock.now().unix_seconds();
        Instant::now() + Duration::from_secs(remaining.max(0) as u64)
    }

    async fn head(&self) -> Result<u64, AppError> {
        let session_id = self.opened.session_id.clone();
        Ok(self.state.store.read(move |conn| conn.stream_head(&session_id)).await?)
    }

    /// Send everything after `last_sent`, in seq order, until the store has no more.
    ///
    /// Nothing is buffered per connection beyond the transport (actix-ws's 32-frame queue, actix's
    /// write buffer and the socket's bounded send buffer); when all of it is full a send blocks, and
    /// one blocked longer than the send timeout is a slow consumer (4008).
    async fn catch_up(
        &mut self,
        socket: &mut actix_ws::Session,
        heads: &tokio::sync::watch::Receiver<u64>,
        feed: &Feed,
    ) -> Option<Ending> {
        let send_timeout = Duration::from_millis(self.state.config.realtime.send_timeout_ms);
        loop {
            self.known_head = self.known_head.max(*heads.borrow());
            let head = self.known_head;
            if self.last_sent >= head {
                return None;
            }
            let events = match feed
                .after(&self.state.store, &self.opened.session_id, self.last_sent, head, CATCH_UP_CHUNK)
                .await
            {
                Ok(events) => events,
                Err(_) => return Some(Ending::Close(Close::Internal)),
            };
            if events.is_empty() {
                return None;
            }
            for event in &events {
                match timeout(send_timeout, socket.text(event.text.to_string())).await {
                    Err(_) => return Some(Ending::Close(Close::SlowConsumer)),
                    Ok(Err(_)) => return Some(Ending::Gone),
                    Ok(Ok(())) => self.last_sent = event.seq,
                }
                if event.terminal {
                    return Some(Ending::Close(Close::SessionTerminated));
                }
            }
        }
    }

    /// Answer one client frame; `None` when nothing is to be said.
    async fn handle(&mut self, text: &str) -> Option<ServerFrame> {
        let error = |err: AppError, reference: Option<String>| {
            let (code, message) = match &err {
                AppError::Rejected(r) => (r.code.as_str(), r.message.clone()),
                AppError::Internal(_) => (ErrorCode::Internal.as_str(), "An unexpected error occurred.".to_owned()),
            };
            Some(ServerFrame::Error { code, message, reference })
        };
        let frame = match parse_client_frame(text) {
            Ok(frame) => frame,
            Err(rejection) => return error(rejection.into(), None),
        };
        match frame {
            ClientFrame::Ping {} => Some(ServerFrame::Pong),
            ClientFrame::Ack { seq } if seq <= self.acked => None,
            ClientFrame::Ack { seq } => {
                let (connection_id, session_id) = (self.opened.connection_id.clone(), self.opened.session_id.clone());
                match realtime::ack(&self.state, connection_id, session_id, seq).await {
                    Ok(()) => {
                        self.acked = seq;
                        None
                    }
                    Err(err) => error(err, None),
                }
            }
            ClientFrame::Publish { event, reference } => {
                let reference = reference.or_else(|| event.get("eventId").and_then(Value::as_str).map(str::to_owned));
                if self.tenant_suspended() {
                    return error(AppError::new(ErrorCode::TenantSuspended, "your tenant is suspended"), reference);
                }
                let appended = match parse_batch(&self.opened.session_id, vec![event], caller_class(&self.principal)) {
                    Ok(events) => {
                        append_checked(&self.state, &self.principal, self.opened.session_id.clone(), events).await
                    }
                    Err(err) => Err(err),
                };
                match appended.map(|mut outcomes| outcomes.pop()) {
                    Ok(Some(outcome)) => Some(ServerFrame::Published {
                        event_id: outcome.event_id,
                        seq: outcome.seq,
                        duplicate: outcome.duplicate,
                        reference,
                    }),
                    Ok(None) => error(AppError::internal_msg("publish produced no outcome"), reference),
                    Err(err) => error(err, reference),
                }
            }
            ClientFrame::Refresh { token } => {
                match crate::app::auth::authenticate_with_expiry(&self.state.config.jwt, &token, self.state.clock.now())
                {
                    Ok((principal, expires_at))
                        if principal.user_id == self.principal.user_id
                            && principal.tenant_id == self.principal.tenant_id =>
                    {
                        self.principal = principal;
                        self.token_expires_at = expires_at;
                        None
                    }
                    Ok(_) => error(
                        AppError::new(
                            ErrorCode::AuthInvalid,
                            "a refreshed token must be for the same caller and tenant",
                        ),
                        None,
                    ),
                    Err(err) => error(err, None),
                }
            }
        }
    }
}
