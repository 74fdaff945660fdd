//! Timestamps as image configs carry them (RFC 3339) and the store keeps
//! them (seconds since the epoch).

/// The current time in seconds since the epoch.
pub fn now_unix() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// Formats seconds since the epoch as RFC 3339 (as image configs carry it).
pub fn rfc3339(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

/// Parses an RFC 3339 time to seconds since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    s.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}
