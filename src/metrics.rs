//! Prometheus metrics, rendered in the text exposition format (version 0.0.4) by `GET /metrics`.
//!
//! Labels are low-cardinality by construction: route templates (never raw paths), methods, status
//! codes, error codes and fixed verdict names; never tenant, session or user ids.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use crate::store::WriterStats;

/// Upper bounds (seconds) of the request latency buckets.
const LATENCY_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), RequestStats>>,
    webhooks: Mutex<BTreeMap<(&'static str, String), u64>>,
    ws_connections: AtomicI64,
    ws_resumes: AtomicU64,
    ws_closes: Mutex<BTreeMap<u16, u64>>,
    erasures: AtomicU64,
    keys_destroyed: AtomicU64,
}

#[derive(Debug, Default, Clone)]
struct RequestStats {
    count: u64,
    sum_seconds: f64,
    /// Cumulative counts per `LATENCY_BUCKETS` entry.
    buckets: [u64; LATENCY_BUCKETS.len()],
}

impl Metrics {
    pub fn observe_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let stats = requests.entry((method.to_owned(), route.to_owned(), status)).or_default();
        stats.count += 1;
        stats.sum_seconds += seconds;
        for (bucket, bound) in stats.buckets.iter_mut().zip(LATENCY_BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
    }

    /// A LiveKit webhook's verdict: `appended`, `duplicate`, `ignored` or `rejected` (with its code).
    pub fn observe_webhook(&self, verdict: &'static str, code: &str) {
        let mut webhooks = self.webhooks.lock().unwrap_or_else(|p| p.into_inner());
        *webhooks.entry((verdict, code.to_owned())).or_default() += 1;
    }

    pub fn tenant_erased(&self, keys_destroyed: u64) {
        self.erasures.fetch_add(1, Ordering::Relaxed);
        self.keys_destroyed.fetch_add(keys_destroyed, Ordering::Relaxed);
    }

    pub fn ws_opened(&self, resumed: bool) {
        self.ws_connections.fetch_add(1, Ordering::Relaxed);
        if resumed {
            self.ws_resumes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A socket ended; `code` is the close code sent, if the server closed it.
    pub fn ws_closed(&self, code: Option<u16>) {
        self.ws_connections.fetch_sub(1, Ordering::Relaxed);
        if let Some(code) = code {
            *self.ws_closes.lock().unwrap_or_else(|p| p.into_inner()).entry(code).or_default() += 1;
        }
    }

    /// The exposition text; the writer's counters are read at scrape time.
    pub fn render(&self, writer: &WriterStats, queue_depth: usize) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let requests = self.requests.lock().unwrap_or_else(|p| p.into_inner()).clone();
        header(&mut out, "callstream_http_requests_total", "counter", "HTTP requests by method, route and status.");
        for ((method, route, status), stats) in &requests {
            let _ = writeln!(
                out,
                "callstream_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {}",
                escape(route),
                stats.count
            );
        }
        header(
            &mut out,
            "callstream_http_request_duration_seconds",
            "histogram",
            "HTTP request latency by method, route and status.",
        );
        for ((method, route, status), stats) in &requests {
            let labels = format!("method=\"{method}\",route=\"{}\",status=\"{status}\"", escape(route));
            for (bound, count) in LATENCY_BUCKETS.iter().zip(stats.buckets) {
                let _ =
                    writeln!(out, "callstream_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {count}");
            }
            let _ = writeln!(
                out,
                "callstream_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                stats.count
            );
            let _ = writeln!(out, "callstream_http_request_duration_seconds_sum{{{labels}}} {}", stats.sum_seconds);
            let _ = writeln!(out, "callstream_http_request_duration_seconds_count{{{labels}}} {}", stats.count);
        }

        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            header(out, name, "counter", help);
            let _ = writeln!(out, "{name} {value}");
        };
        let gauge = |out: &mut String, name: &str, help: &str, value: i64| {
            header(out, name, "gauge", help);
            let _ = writeln!(out, "{name} {value}");
        };
        let load = |value: &AtomicU64| value.load(Ordering::Relaxed);
        counter(
            &mut out,
            "callstream_events_appended_total",
            "Events appended to the log.",
            load(&writer.events_appended),
        );
        counter(
            &mut out,
            "callstream_writer_groups_committed_total",
            "Transactions committed by the writer.",
            load(&writer.groups_committed),
        );
        counter(
            &mut out,
            "callstream_writer_commands_committed_total",
            "Commands committed by the writer (a group holds many).",
            load(&writer.commands_committed),
        );
        gauge(
            &mut out,
            "callstream_writer_last_group_size",
            "Commands in the writer's last committed group.",
            load(&writer.last_group_size) as i64,
        );
        gauge(&mut out, "callstream_writer_queue_depth", "Commands waiting for the writer.", queue_depth as i64);
        gauge(
            &mut out,
            "callstream_writer_alive",
            "1 while the writer thread runs.",
            i64::from(writer.alive.load(Ordering::Relaxed)),
        );
        gauge(
            &mut out,
            "callstream_ws_connections",
            "Open realtime WebSocket connections.",
            self.ws_connections.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "callstream_ws_resumes_total",
            "WebSocket connections opened with a resume token.",
            self.ws_resumes.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "callstream_tenant_erasures_total",
            "Tenant erasures (crypto-shredding) carried out.",
            self.erasures.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "callstream_data_keys_destroyed_total",
            "Tenant data keys destroyed by erasures.",
            self.keys_destroyed.load(Ordering::Relaxed),
        );
        header(
            &mut out,
            "callstream_ws_closes_total",
            "counter",
            "WebSocket connections closed by the server, by close code.",
        );
        for (code, count) in self.ws_closes.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(out, "callstream_ws_closes_total{{code=\"{code}\"}} {count}");
        }
        header(
            &mut out,
            "callstream_livekit_webhooks_total",
            "counter",
            "LiveKit webhooks by verdict (and error code).",
        );
        for ((verdict, code), count) in self.webhooks.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(
                out,
                "callstream_livekit_webhooks_total{{verdict=\"{verdict}\",code=\"{}\"}} {count}",
                escape(code)
            );
        }
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Label values escape backslash, quote and newline.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_are_cumulative_and_every_sample_is_counted() {
        let metrics = Metrics::default();
        for ms in [0, 3, 3, 40, 20_000] {
            metrics.observe_request("GET", "/health/live", 200, Duration::from_millis(ms));
        }
        let text = metrics.render(&WriterStats::default(), 0);
        let bucket = |le: &str| {
            let prefix = format!(
                "callstream_http_request_duration_seconds_bucket{{method=\"GET\",route=\"/health/live\",status=\"200\",le=\"{le}\"}} "
            );
            text.lines().find_map(|l| l.strip_prefix(&prefix)).map(str::to_owned)
        };
        assert_eq!(bucket("0.001").as_deref(), Some("1"));
        assert_eq!(bucket("0.005").as_deref(), Some("3"));
        assert_eq!(bucket("0.05").as_deref(), Some("4"));
        assert_eq!(bucket("10").as_deref(), Some("4"));
        assert_eq!(bucket("+Inf").as_deref(), Some("5"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
