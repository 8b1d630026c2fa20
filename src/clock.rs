//! The one source of "now". Every layer that needs the time takes a `Clock`; nothing else reads
//! the system time.
//!
//! A clock is the system time plus an offset. Only a test clock (`CALLSTREAM_TEST_CLOCK=1`) lets
//! an operator move the offset, and only forward: time in the log never runs backwards.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::domain::time::Timestamp;

#[derive(Clone, Debug)]
pub struct Clock {
    offset_millis: Arc<AtomicI64>,
    adjustable: bool,
}

/// The largest single step a test clock takes: 400 days covers a billing year and its lateness.
pub const MAX_ADVANCE_SECS: i64 = 400 * 86_400;

impl Clock {
    pub fn system() -> Clock {
        Clock { offset_millis: Arc::default(), adjustable: false }
    }

    /// A clock that `advance` may move forward (tests and demos only).
    pub fn adjustable() -> Clock {
        Clock { offset_millis: Arc::default(), adjustable: true }
    }

    pub fn is_adjustable(&self) -> bool {
        self.adjustable
    }

    pub fn now(&self) -> Timestamp {
        let system = chrono::Utc::now();
        Timestamp::from_unix_millis(system.timestamp_millis() + self.offset_millis.load(Ordering::Relaxed))
            .unwrap_or_else(|| Timestamp::from_datetime(system))
    }

    /// Move an adjustable clock forward by `seconds` (1 ..= MAX_ADVANCE_SECS) and answer the new now.
    /// `None` for the system clock or a step out of range.
    pub fn advance(&self, seconds: i64) -> Option<Timestamp> {
        if !self.adjustable || !(1..=MAX_ADVANCE_SECS).contains(&seconds) {
            return None;
        }
        self.offset_millis.fetch_add(seconds * 1000, Ordering::Relaxed);
        Some(self.now())
    }

    /// Bring an adjustable clock to a persisted offset (never backwards).
    pub fn restore(&self, offset_millis: i64) {
        if self.adjustable {
            self.offset_millis.fetch_max(offset_millis, Ordering::Relaxed);
        }
    }

    /// How far an adjustable clock has been moved, in milliseconds.
    pub fn offset_millis(&self) -> i64 {
        self.offset_millis.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::Clock;

    #[test]
    fn only_a_test_clock_moves_and_only_forward() {
        let system = Clock::system();
        assert_eq!(system.advance(60), None);
        let test = Clock::adjustable();
        let before = test.now();
        let after = test.advance(3600).expect("adjustable");
        assert!(after.millis_since(before) >= 3_600_000);
        assert_eq!(test.advance(0), None);
        assert_eq!(test.advance(-5), None);
        let shared = test.clone();
        shared.advance(60).expect("adjustable");
        assert_eq!(test.offset_millis(), 3_660_000, "clones share one offset");
    }
}
