//! Times as vendors and CSV files write them, read with `jiff` into unix seconds.

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::Timestamp;

/// Unix seconds of an ISO 8601 date or date-time: with an offset (`Z`, `+05:30`, `+0530`,
/// `-03:30`), or without one, read as UTC; `T` or a space between date and time; a date alone
/// is its midnight in UTC. `None` for anything else.
pub fn iso8601_seconds(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(at) = text.parse::<Timestamp>() {
        return Some(at.as_second());
    }
    let local = match text.parse::<DateTime>() {
        Ok(local) => local,
        Err(_) => text
            .parse::<Date>()
            .ok()?
            .to_datetime(jiff::civil::Time::midnight()),
    };
    TimeZone::UTC
        .to_timestamp(local)
        .ok()
        .map(|at| at.as_second())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_with_and_without_a_colon() {
        let utc = Some(1564400550);
        assert_eq!(iso8601_seconds("2019-07-29T11:42:30Z"), utc);
        assert_eq!(iso8601_seconds("2019-07-29T17:12:30+05:30"), utc);
        assert_eq!(iso8601_seconds("2019-07-29T17:12:30+0530"), utc);
        assert_eq!(iso8601_seconds("2019-07-29T08:12:30-03:30"), utc);
        assert_eq!(iso8601_seconds("2019-07-29 11:42:30"), utc);
        assert_eq!(iso8601_seconds("2019-07-29T11:42:30"), utc);
        assert_eq!(iso8601_seconds("2019-07-29"), Some(1564358400));
        assert_eq!(iso8601_seconds("yesterday"), None);
    }
}
