//! A real local HTTP server that outbound executors talk to: it answers with scripted statuses and
//! records every request (headers and body).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HashMap<String, String>,
    pub body: String,
}

pub struct Sink {
    pub url: String,
    pub received: Arc<Mutex<Vec<Received>>>,
}

/// Answer the n-th request with `statuses[n]` (the last one repeats); status 0 never answers
/// (the connection is held open).
pub async fn start(statuses: Vec<u16>) -> Sink {
    start_answering(statuses.into_iter().map(|status| (status, "{}".to_owned())).collect()).await
}

/// As `start`, answering the n-th request with `answers[n]`: a status and a body.
pub async fn start_answering(answers: Vec<(u16, String)>) -> Sink {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://127.0.0.1:{}/hook", listener.local_addr().expect("addr").port());
    let received: Arc<Mutex<Vec<Received>>> = Arc::default();
    let log = received.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let log = log.clone();
            let answers = answers.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head_end, content_length) = loop {
                    let n = stream.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buffer.extend_from_slice(&chunk[..n]);
                    if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buffer[..end]).to_string();
                        let length = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        break (end + 4, length);
                    }
                };
                while buffer.len() < head_end + content_length {
                    let n = stream.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buffer.extend_from_slice(&chunk[..n]);
                }
                let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
                let headers = head
                    .lines()
                    .skip(1)
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                    .collect();
                let body = String::from_utf8_lossy(&buffer[head_end..]).to_string();
                let index = {
                    let mut log = log.lock().expect("lock");
                    log.push(Received { headers, body });
                    log.len() - 1
                };
                let (status, body) = answers.get(index).or(answers.last()).cloned().unwrap_or((200, "{}".to_owned()));
                if status == 0 {
                    tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                    return;
                }
                // A redirect points somewhere else entirely; callstream must not follow it.
                let location =
                    if (300..400).contains(&status) { "location: http://127.0.0.1:9/elsewhere\r\n" } else { "" };
                let response = format!(
                    "HTTP/1.1 {status} X\r\n{location}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    Sink { url, received }
}

impl Sink {
    pub fn count(&self) -> usize {
        self.received.lock().expect("lock").len()
    }
}
