//! A small WebSocket client for the realtime tests.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::helpers::TestApp;

pub type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Ws {
    pub socket: Socket,
}

/// What the server ended a socket with.
#[derive(Debug, PartialEq)]
pub enum Ended {
    Closed(u16, String),
    Dropped,
}

pub async fn connect(app: &TestApp, token: &str, session: &str, query: &str) -> Ws {
    try_connect(app, token, session, query).await.expect("websocket handshake")
}

pub async fn try_connect(app: &TestApp, token: &str, session: &str, query: &str) -> Result<Ws, u16> {
    try_connect_at(&app.address, token, session, query).await
}

/// As `try_connect`, to the server at `address` (`http://host:port`).
pub async fn try_connect_at(address: &str, token: &str, session: &str, query: &str) -> Result<Ws, u16> {
    let separator = if query.is_empty() { "" } else { "&" };
    let url = format!(
        "{}/v1/realtime/sessions/{session}/ws?access_token={token}{separator}{query}",
        address.replacen("http", "ws", 1)
    );
    match tokio_tungstenite::connect_async(url).await {
        Ok((socket, _)) => Ok(Ws { socket }),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(err) => panic!("connect failed: {err}"),
    }
}

/// A client whose TCP receive buffer is `bytes` small: a consumer that cannot keep up.
pub async fn connect_with_receive_buffer(app: &TestApp, token: &str, session: &str, bytes: u32) -> Ws {
    let address: std::net::SocketAddr = app.address.trim_start_matches("http://").parse().expect("address");
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
    let stream = socket.connect(address).await.expect("connect");
    let url = format!("ws://{address}/v1/realtime/sessions/{session}/ws?access_token={token}");
    let (socket, _) = tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream))
        .await
        .expect("handshake");
    Ws { socket }
}

impl Ws {
    /// The next JSON frame (pings are answered by the library); panics after 5 s.
    pub async fn next(&mut self) -> Value {
        match self.next_or_end().await {
            Ok(frame) => frame,
            Err(ended) => panic!("expected a frame, the socket ended: {ended:?}"),
        }
    }

    pub async fn next_or_end(&mut self) -> Result<Value, Ended> {
        loop {
            let message =
                tokio::time::timeout(Duration::from_secs(5), self.socket.next()).await.expect("a frame within 5 s");
            match message {
                Some(Ok(Message::Text(text))) => return Ok(serde_json::from_str(&text).expect("frames are JSON")),
                Some(Ok(Message::Close(frame))) => {
                    return Err(frame
                        .map(|f| Ended::Closed(u16::from(f.code), f.reason.to_string()))
                        .unwrap_or(Ended::Dropped));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Err(Ended::Dropped),
            }
        }
    }

    /// Read until the socket ends; returns the frames before it and how it ended.
    pub async fn drain(&mut self) -> (Vec<Value>, Ended) {
        let mut frames = Vec::new();
        loop {
            match self.next_or_end().await {
                Ok(frame) => frames.push(frame),
                Err(ended) => return (frames, ended),
            }
        }
    }

    pub async fn send(&mut self, frame: Value) {
        self.socket.send(Message::Text(frame.to_string().into())).await.expect("send");
    }

    /// Read `count` event frames and return their seqs.
    pub async fn events(&mut self, count: usize) -> Vec<Value> {
        let mut events = Vec::new();
        while events.len() < count {
            let frame = self.next().await;
            assert_eq!(frame["op"], "event", "{frame}");
            events.push(frame["event"].clone());
        }
        events
    }

    pub async fn close(mut self) {
        let _ = self
            .socket
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "bye".into(),
            }))
            .await;
        // Let the server see the close and record the disconnect.
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(2), self.socket.next()).await {}
    }
}

pub fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["seq"].as_u64().expect("seq")).collect()
}
