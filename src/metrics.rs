//! Prometheus metrics through the `metrics` facade and `metrics-exporter-prometheus`
//! (docs/operations.md lists every name and label).
//!
//! Each application owns its recorder (no process-global one), so two servers in one process (the
//! test suite, the demo) never mix their numbers. Recording goes through the exporter's sharded,
//! atomic registry: no lock of ours on the request path. Values that live elsewhere (the writer's
//! counters, billing backlogs in the database) are read at scrape time.
//!
//! Labels are low-cardinality by construction: route templates (never raw paths), methods, status
//! codes, error codes and fixed verdict names; never tenant, session or user ids.

use std::time::Duration;

use metrics::{Counter, Gauge, Key, Label, Level, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};

use crate::store::{BillingBacklog, WriterStats};

/// Upper bounds (seconds) of the request latency buckets.
const LATENCY_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

const METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, None);

const HTTP_REQUESTS: &str = "callstream_http_requests_total";
const HTTP_DURATION: &str = "callstream_http_request_duration_seconds";
const WEBHOOKS: &str = "callstream_livekit_webhooks_total";
const WS_CLOSES: &str = "callstream_ws_closes_total";

/// `(name, help)` of every metric, described once so `/metrics` carries `# HELP` lines.
const COUNTERS: &[(&str, &str)] = &[
    (HTTP_REQUESTS, "HTTP requests by method, route and status."),
    (WEBHOOKS, "LiveKit webhooks by verdict (and error code)."),
    (WS_CLOSES, "WebSocket connections closed by the server, by close code."),
    ("callstream_events_appended_total", "Events appended to the log."),
    ("callstream_writer_groups_committed_total", "Transactions committed by the writer."),
    ("callstream_writer_commands_committed_total", "Commands committed by the writer (a group holds many)."),
    ("callstream_ws_resumes_total", "WebSocket connections opened with a resume token."),
    ("callstream_tenant_erasures_total", "Tenant erasures (crypto-shredding) carried out."),
    ("callstream_data_keys_destroyed_total", "Tenant data keys destroyed by erasures."),
];

const GAUGES: &[(&str, &str)] = &[
    ("callstream_writer_last_group_size", "Commands in the writer's last committed group."),
    ("callstream_writer_queue_depth", "Commands waiting for the writer."),
    ("callstream_writer_alive", "1 while the writer thread runs."),
    ("callstream_ws_connections", "Open realtime WebSocket connections."),
    ("callstream_billing_outbox_backlog", "Billing outbox items waiting for delivery."),
    ("callstream_billing_dead_letters", "Billing deliveries dead-lettered and not replayed."),
    ("callstream_billing_alert_backlog", "Reconciliation alerts waiting for delivery."),
    ("callstream_billing_alerts_dead_lettered", "Reconciliation alerts whose delivery was given up."),
    ("callstream_reconciliation_runs", "Reconciliation runs recorded (every revision)."),
    ("callstream_reconciliation_mismatches", "Mismatches found by reconciliation runs."),
    ("callstream_build_info", "Always 1; the labels name the build."),
];

pub struct Metrics {
    recorder: PrometheusRecorder,
    ws_connections: Gauge,
    ws_resumes: Counter,
    erasures: Counter,
    keys_destroyed: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.to_owned()), &LATENCY_BUCKETS)
            .expect("the latency buckets are not empty")
            .build_recorder();
        for (name, help) in COUNTERS {
            recorder.describe_counter((*name).into(), None, SharedString::const_str(help));
        }
        for (name, help) in GAUGES {
            recorder.describe_gauge((*name).into(), None, SharedString::const_str(help));
        }
        recorder.describe_histogram(
            HTTP_DURATION.into(),
            Some(Unit::Seconds),
            SharedString::const_str("HTTP request latency by method, route and status."),
        );
        let counter = |name: &'static str| recorder.register_counter(&Key::from_static_name(name), &METADATA);
        let metrics = Metrics {
            ws_connections: recorder.register_gauge(&Key::from_static_name("callstream_ws_connections"), &METADATA),
            ws_resumes: counter("callstream_ws_resumes_total"),
            erasures: counter("callstream_tenant_erasures_total"),
            keys_destroyed: counter("callstream_data_keys_destroyed_total"),
            recorder,
        };
        let build = Key::from_parts(
            "callstream_build_info",
            vec![
                Label::new("version", env!("CARGO_PKG_VERSION")),
                Label::new("commit", option_env!("CALLSTREAM_GIT_COMMIT").unwrap_or("unknown")),
            ],
        );
        metrics.recorder.register_gauge(&build, &METADATA).set(1.0);
        metrics
    }

    fn counter(&self, name: &'static str, labels: Vec<Label>) -> Counter {
        self.recorder.register_counter(&Key::from_parts(name, labels), &METADATA)
    }

    fn gauge(&self, name: &'static str) -> Gauge {
        self.recorder.register_gauge(&Key::from_static_name(name), &METADATA)
    }

    pub fn observe_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let labels = || {
            vec![
                Label::new("method", method.to_owned()),
                Label::new("route", route.to_owned()),
                Label::new("status", status.to_string()),
            ]
        };
        self.counter(HTTP_REQUESTS, labels()).increment(1);
        self.recorder
            .register_histogram(&Key::from_parts(HTTP_DURATION, labels()), &METADATA)
            .record(elapsed.as_secs_f64());
    }

    /// A LiveKit webhook's verdict: `appended`, `duplicate`, `ignored` or `rejected` (with its code).
    pub fn observe_webhook(&self, verdict: &'static str, code: &str) {
        self.counter(WEBHOOKS, vec![Label::new("verdict", verdict), Label::new("code", code.to_owned())]).increment(1);
    }

    pub fn tenant_erased(&self, keys_destroyed: u64) {
        self.erasures.increment(1);
        self.keys_destroyed.increment(keys_destroyed);
    }

    pub fn ws_opened(&self, resumed: bool) {
        self.ws_connections.increment(1.0);
        if resumed {
            self.ws_resumes.increment(1);
        }
    }

    /// A socket ended; `code` is the close code sent, if the server closed it.
    pub fn ws_closed(&self, code: Option<u16>) {
        self.ws_connections.decrement(1.0);
        if let Some(code) = code {
            self.counter(WS_CLOSES, vec![Label::new("code", code.to_string())]).increment(1);
        }
    }

    /// The exposition text; the writer's counters and the billing backlog are read at scrape time
    /// (`backlog` is `None` when the database could not be read: those gauges keep their values).
    pub fn render(&self, writer: &WriterStats, queue_depth: usize, backlog: Option<&BillingBacklog>) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let absolute = |name: &'static str, value: u64| self.counter(name, Vec::new()).absolute(value);
        absolute("callstream_events_appended_total", writer.events_appended.load(Relaxed));
        absolute("callstream_writer_groups_committed_total", writer.groups_committed.load(Relaxed));
        absolute("callstream_writer_commands_committed_total", writer.commands_committed.load(Relaxed));
        self.gauge("callstream_writer_last_group_size").set(writer.last_group_size.load(Relaxed) as f64);
        self.gauge("callstream_writer_queue_depth").set(queue_depth as f64);
        self.gauge("callstream_writer_alive").set(f64::from(u8::from(writer.alive.load(Relaxed))));
        if let Some(backlog) = backlog {
            for (name, value) in [
                ("callstream_billing_outbox_backlog", backlog.outbox_pending),
                ("callstream_billing_dead_letters", backlog.dead_letters_open),
                ("callstream_billing_alert_backlog", backlog.alerts_pending),
                ("callstream_billing_alerts_dead_lettered", backlog.alerts_dead_lettered),
                ("callstream_reconciliation_runs", backlog.reconciliation_runs),
                ("callstream_reconciliation_mismatches", backlog.mismatches),
            ] {
                self.gauge(name).set(value as f64);
            }
        }
        self.recorder.handle().render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, prefix: &str) -> Option<String> {
        text.lines().find_map(|l| l.strip_prefix(prefix)).map(|v| v.trim().to_owned())
    }

    #[test]
    fn latency_buckets_are_cumulative_and_every_sample_is_counted() {
        let metrics = Metrics::new();
        for ms in [0, 3, 3, 40, 20_000] {
            metrics.observe_request("GET", "/health/live", 200, Duration::from_millis(ms));
        }
        let text = metrics.render(&WriterStats::default(), 0, None);
        let bucket = |le: &str| {
            sample(
                &text,
                &format!(
                    "callstream_http_request_duration_seconds_bucket{{method=\"GET\",route=\"/health/live\",status=\"200\",le=\"{le}\"}} "
                ),
            )
        };
        assert_eq!(bucket("0.001").as_deref(), Some("1"));
        assert_eq!(bucket("0.005").as_deref(), Some("3"));
        assert_eq!(bucket("0.05").as_deref(), Some("4"));
        assert_eq!(bucket("10").as_deref(), Some("4"));
        assert_eq!(bucket("+Inf").as_deref(), Some("5"));
    }

    #[test]
    fn two_applications_keep_their_own_numbers() {
        let (one, two) = (Metrics::new(), Metrics::new());
        one.ws_opened(true);
        assert_eq!(
            sample(&one.render(&WriterStats::default(), 0, None), "callstream_ws_connections "),
            Some("1".into())
        );
        assert_eq!(
            sample(&two.render(&WriterStats::default(), 0, None), "callstream_ws_connections "),
            Some("0".into())
        );
    }

    #[test]
    fn label_values_are_escaped_and_build_info_is_present() {
        let metrics = Metrics::new();
        metrics.observe_webhook("rejected", "a\"b");
        let text = metrics.render(&WriterStats::default(), 0, Some(&BillingBacklog::default()));
        assert!(text.contains(r#"callstream_livekit_webhooks_total{verdict="rejected",code="a\"b"} 1"#), "{text}");
        assert!(text.contains("# HELP callstream_billing_outbox_backlog "), "{text}");
        assert!(text.contains(&format!("callstream_build_info{{version=\"{}\"", env!("CARGO_PKG_VERSION"))), "{text}");
    }
}
