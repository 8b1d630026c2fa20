//! JSON logs through tracing; every line inside a request carries its request id and route.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Install the global subscriber once. `RUST_LOG` overrides the default filter.
pub fn init(default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let _ = tracing::subscriber::set_global_default(subscriber(filter, std::io::stderr));
}

/// The JSON subscriber. Every line lists all its enclosing spans with their fields (`spans`), so a
/// line logged inside a nested span still carries the request span's `request_id`.
pub fn subscriber<W>(filter: EnvFilter, writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_span_list(true)
        .with_writer(writer)
        .finish()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_line_logged_in_a_nested_span_carries_the_request_id() {
        let buffer = Buffer::default();
        let sink = buffer.clone();
        let subscriber = subscriber(EnvFilter::new("info"), move || sink.clone());
        tracing::subscriber::with_default(subscriber, || {
            let request = tracing::info_span!("request", request_id = "req-nested-1", route = "/v1/x");
            let _request = request.enter();
            let use_case = tracing::info_span!("ingest", session_id = "cs_1");
            let _use_case = use_case.enter();
            tracing::info!("deep inside");
        });
        let text = String::from_utf8(buffer.0.lock().expect("lock").clone()).expect("utf-8");
        let line: serde_json::Value = serde_json::from_str(text.lines().next().expect("a line")).expect("JSON");
        assert_eq!(line["fields"]["message"], "deep inside");
        let spans = line["spans"].as_array().expect("spans");
        assert_eq!(spans[0]["request_id"], "req-nested-1", "{line}");
        assert_eq!(spans[1]["session_id"], "cs_1", "{line}");
    }
}
