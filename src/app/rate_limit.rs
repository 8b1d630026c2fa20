//! Per-tenant rate limits by route class: a token bucket per (tenant, class) refilled at the
//! configured rate, holding one second's worth. Checked right after authentication, so a request
//! over the limit is answered 429 `RATE_LIMITED` with `Retry-After` and does nothing.
//!
//! Buckets live in memory (one process owns the database); there is one per tenant and class.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::clock::Clock;
use crate::config::RateLimits;
use crate::domain::time::Timestamp;
use crate::error::{AppError, ErrorCode};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteClass {
    Read,
    Write,
    Ingest,
}

impl RouteClass {
    fn as_str(self) -> &'static str {
        match self {
            RouteClass::Read => "read",
            RouteClass::Write => "write",
            RouteClass::Ingest => "ingest",
        }
    }

    fn per_sec(self, limits: &RateLimits) -> u64 {
        match self {
            RouteClass::Read => limits.read_per_sec,
            RouteClass::Write => limits.write_per_sec,
            RouteClass::Ingest => limits.ingest_per_sec,
        }
    }
}

#[derive(Debug)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<(String, RouteClass), Bucket>>,
    clock: Clock,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Timestamp,
}

impl RateLimiter {
    pub fn new(clock: Clock) -> RateLimiter {
        RateLimiter { buckets: Mutex::default(), clock }
    }

    /// Take one token for `tenant` in `class`, or say how long until one is available.
    pub fn check(&self, tenant: &str, class: RouteClass, limits: &RateLimits) -> Result<(), AppError> {
        let rate = class.per_sec(limits) as f64;
        let now = self.clock.now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket =
            buckets.entry((tenant.to_owned(), class)).or_insert_with(|| Bucket { tokens: rate, refilled: now });
        bucket.tokens = (bucket.tokens + now.millis_since(bucket.refilled).max(0) as f64 / 1000.0 * rate).min(rate);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait_secs = (1.0 - bucket.tokens) / rate;
        Err(AppError::new(
            ErrorCode::RateLimited,
            format!("your tenant sent more than {} {} requests per second; retry later", rate, class.as_str()),
        )
        .with_details(serde_json::json!({
            "class": class.as_str(),
            "limitPerSec": rate as u64,
            "retryAfterMs": (wait_secs * 1000.0).ceil() as u64,
            "retryAfterSecs": wait_secs.ceil().max(1.0) as u64,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: RateLimits = RateLimits { read_per_sec: 100, write_per_sec: 3, ingest_per_sec: 100 };

    #[test]
    fn a_burst_of_one_seconds_worth_passes_then_the_tenant_waits() {
        let limiter = RateLimiter::new(Clock::system());
        for _ in 0..3 {
            limiter.check("t1", RouteClass::Write, &LIMITS).expect("within the burst");
        }
        let err = limiter.check("t1", RouteClass::Write, &LIMITS).expect_err("over the limit");
        let AppError::Rejected(rejection) = err else { panic!("a rejection") };
        assert_eq!(rejection.code, ErrorCode::RateLimited);
        let details = rejection.details.expect("details");
        assert_eq!(details["retryAfterSecs"], 1);
        assert!(details["retryAfterMs"].as_u64().is_some_and(|ms| ms > 0 && ms <= 334), "{details}");
        // Other tenants and other classes have their own buckets.
        limiter.check("t2", RouteClass::Write, &LIMITS).expect("another tenant");
        limiter.check("t1", RouteClass::Read, &LIMITS).expect("another class");
    }
}
