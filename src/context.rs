//! The request context: the id and W3C trace of the request being served, as task-locals, so
//! that error bodies, log lines and outbound calls deep inside a use case can name them. The HTTP
//! edge sets them (`http::request_id`); anything that spawns work carries them (`carry`).

tokio::task_local! {
    static REQUEST_ID: String;
    static TRACE: Trace;
}

/// The trace a request belongs to (W3C `traceparent`: version 00).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// 32 lowercase hex digits, not all zero.
    pub trace_id: String,
    /// 2 hex digits.
    pub flags: String,
}

impl Trace {
    /// `00-<trace id>-<parent id>-<flags>`; anything else (or an all-zero id) is not a trace.
    pub fn parse(header: &str) -> Option<Trace> {
        let parts: Vec<&str> = header.trim().split('-').collect();
        let hex =
            |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let zero = |s: &str| s.bytes().all(|b| b == b'0');
        match parts.as_slice() {
            [version, trace, parent, flags]
                if *version == "00"
                    && hex(trace, 32)
                    && hex(parent, 16)
                    && hex(flags, 2)
                    && !zero(trace)
                    && !zero(parent) =>
            {
                Some(Trace { trace_id: (*trace).to_owned(), flags: (*flags).to_owned() })
            }
            _ => None,
        }
    }

    pub fn start() -> Trace {
        Trace { trace_id: uuid::Uuid::new_v4().simple().to_string(), flags: "01".to_owned() }
    }

    /// A `traceparent` for a call made on this trace's behalf: same trace, a fresh span id.
    pub fn child(&self) -> String {
        let span = &uuid::Uuid::new_v4().simple().to_string()[..16];
        format!("00-{}-{span}-{}", self.trace_id, self.flags)
    }
}

/// Run `future` (typically on a spawned task, where task-locals do not follow) with the current
/// request's id and trace.
pub fn carry<F: std::future::Future>(future: F) -> impl std::future::Future<Output = F::Output> {
    let id = current();
    let trace = TRACE.try_with(Clone::clone).unwrap_or_else(|_| Trace::start());
    REQUEST_ID.scope(id, TRACE.scope(trace, future))
}

/// The `traceparent` an outbound call made while serving the current request should carry.
pub fn outbound_traceparent() -> Option<String> {
    TRACE.try_with(Trace::child).ok()
}

/// The current request's id, for error bodies built deep inside a handler.
pub fn current() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_else(|_| "unknown".to_owned())
}

/// Whether a caller-chosen request id is kept (else one is generated).
pub fn acceptable(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

/// Run `future` as part of a request with this id and trace (what the HTTP middleware does).
pub fn scope<F: std::future::Future>(
    id: String,
    trace: Trace,
    future: F,
) -> impl std::future::Future<Output = F::Output> {
    REQUEST_ID.scope(id, TRACE.scope(trace, future))
}

#[cfg(test)]
mod tests {
    use super::Trace;

    #[test]
    fn traceparent_parsing_follows_w3c() {
        let trace = Trace::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").expect("valid");
        assert_eq!(trace.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        let child = trace.child();
        assert_eq!(Trace::parse(&child), Some(trace.clone()), "a child is a valid traceparent of the same trace");
        for invalid in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(Trace::parse(invalid), None, "{invalid}");
        }
    }
}
