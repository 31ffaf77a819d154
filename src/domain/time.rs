//! Calendar dates and UTC instants. Depends on `chrono` for calendar rules.

use chrono::{Datelike, NaiveDate};
use std::fmt;

/// A real calendar date between the years 1 and 9999.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Date(NaiveDate);

impl Date {
    pub fn new(year: i32, month: i32, day: i32) -> Result<Self, String> {
        if !(1..=9999).contains(&year) {
            return Err(format!("year {year} is outside 1 to 9999"));
        }
        let (Ok(m), Ok(d)) = (u32::try_from(month), u32::try_from(day)) else {
            return Err(format!(
                "{year:04}-{month:02}-{day:02} is not a calendar date"
            ));
        };
        NaiveDate::from_ymd_opt(year, m, d)
            .map(Date)
            .ok_or_else(|| format!("{year:04}-{month:02}-{day:02} is not a calendar date"))
    }

    pub fn year(&self) -> i32 {
        self.0.year()
    }
    pub fn month(&self) -> u32 {
        self.0.month()
    }
    pub fn day(&self) -> u32 {
        self.0.day()
    }
}

impl fmt::Debug for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An instant in UTC with nanosecond precision, between 0001-01-01 and
/// 9999-12-31 (the protobuf Timestamp range).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Timestamp {
    seconds: i64,
    nanos: u32,
}

impl Timestamp {
    const MIN_SECONDS: i64 = -62_135_596_800;
    const MAX_SECONDS: i64 = 253_402_300_799;

    pub fn new(seconds: i64, nanos: i32) -> Result<Self, String> {
        if !(Self::MIN_SECONDS..=Self::MAX_SECONDS).contains(&seconds) {
            return Err("must lie between 0001-01-01 and 9999-12-31".into());
        }
        match u32::try_from(nanos) {
            Ok(n) if n < 1_000_000_000 => Ok(Timestamp { seconds, nanos: n }),
            _ => Err(format!("nanos must be 0 to 999,999,999, got {nanos}")),
        }
    }

    /// The current time.
    pub fn now() -> Self {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp {
            seconds: i64::try_from(d.as_secs()).unwrap_or(Self::MAX_SECONDS),
            nanos: d.subsec_nanos(),
        }
    }

    pub fn seconds(&self) -> i64 {
        self.seconds
    }
    pub fn nanos(&self) -> u32 {
        self.nanos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_follow_the_calendar() {
        assert!(Date::new(2024, 2, 29).is_ok());
        assert!(Date::new(2023, 2, 29).is_err());
        assert!(Date::new(2023, 13, 1).is_err());
        assert!(Date::new(2023, -1, 1).is_err());
        assert!(Date::new(0, 1, 1).is_err());
    }
}
