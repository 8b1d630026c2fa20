//! Instants as the domain sees them: UTC, millisecond precision, RFC 3339 at the edges.
//!
//! Nothing in the domain reads the system time; "now" is always passed in (from the one clock, `src/clock.rs`).

use std::fmt;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(DateTime<Utc>);

impl Timestamp {
    pub const MIN: Timestamp = Timestamp(DateTime::<Utc>::MIN_UTC);

    /// Truncated to the millisecond, the precision the log records.
    pub fn from_datetime(at: DateTime<Utc>) -> Timestamp {
        Timestamp(DateTime::from_timestamp_millis(at.timestamp_millis()).unwrap_or(at))
    }

    pub fn from_unix_millis(millis: i64) -> Option<Timestamp> {
        DateTime::from_timestamp_millis(millis).map(Timestamp)
    }

    pub fn from_unix_seconds(seconds: i64) -> Option<Timestamp> {
        DateTime::from_timestamp(seconds, 0).map(Timestamp)
    }

    /// Any RFC 3339 form with an offset; the result is UTC.
    pub fn parse(raw: &str) -> Option<Timestamp> {
        DateTime::parse_from_rfc3339(raw).ok().map(|at| Timestamp::from_datetime(at.with_timezone(&Utc)))
    }

    pub fn unix_seconds(self) -> i64 {
        self.0.timestamp()
    }

    pub fn unix_millis(self) -> i64 {
        self.0.timestamp_millis()
    }

    pub fn as_datetime(self) -> DateTime<Utc> {
        self.0
    }

    /// `2026-01-02T03:04:05.678Z`: the form the log and the API use.
    pub fn to_rfc3339(self) -> String {
        self.0.to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    /// `2026-01-02T03:04:05Z`, for instants that only have whole seconds (token expiries).
    pub fn to_rfc3339_seconds(self) -> String {
        self.0.to_rfc3339_opts(SecondsFormat::Secs, true)
    }

    pub fn plus_seconds(self, seconds: i64) -> Timestamp {
        Timestamp(self.0 + TimeDelta::seconds(seconds))
    }

    pub fn plus_millis(self, millis: i64) -> Timestamp {
        Timestamp(self.0 + TimeDelta::milliseconds(millis))
    }

    /// Milliseconds from `earlier` to `self` (negative when `earlier` is later).
    pub fn millis_since(self, earlier: Timestamp) -> i64 {
        (self.0 - earlier.0).num_milliseconds()
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

impl schemars::JsonSchema for Timestamp {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Timestamp".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "format": "date-time"})
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Timestamp, D::Error> {
        let raw = std::borrow::Cow::<str>::deserialize(deserializer)?;
        Timestamp::parse(&raw).ok_or_else(|| serde::de::Error::custom("not an RFC 3339 date-time"))
    }
}

#[cfg(test)]
mod tests {
    use super::Timestamp;

    #[test]
    fn rfc3339_round_trips_at_millisecond_precision_in_utc() {
        let at = Timestamp::parse("2026-11-24T21:00:00.123456+02:00").expect("valid");
        assert_eq!(at.to_rfc3339(), "2026-11-24T19:00:00.123Z");
        assert_eq!(Timestamp::parse(&at.to_rfc3339()), Some(at));
        assert_eq!(at.plus_seconds(60).millis_since(at), 60_000);
        assert_eq!(Timestamp::parse("yesterday"), None);
    }
}
