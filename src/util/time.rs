//! Wall-clock helpers: Unix seconds for manifests and caps, RFC 3339 for people,
//! and the RFC 2822 form that APT's Release `Date:` field uses.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn to_system_time(unix: i64) -> SystemTime {
    if unix >= 0 {
        UNIX_EPOCH + Duration::from_secs(unix as u64)
    } else {
        UNIX_EPOCH
    }
}

/// `2026-11-21T20:05:28Z`
pub fn rfc3339(unix: i64) -> String {
    humantime::format_rfc3339_seconds(to_system_time(unix)).to_string()
}

/// `Sat, 21 Nov 2026 20:05:28 UTC`, as Debian's archive writes Release dates.
pub fn rfc2822_utc(unix: i64) -> String {
    let http = httpdate::fmt_http_date(to_system_time(unix));
    match http.strip_suffix(" GMT") {
        Some(stem) => format!("{stem} UTC"),
        None => http,
    }
}

/// Parse a duration such as `1h`, `30d`, `90min` (humantime syntax).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration like 1h, 30d or 90min: {e}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc2822_utc(0), "Thu, 01 Jan 1970 00:00:00 UTC");
        assert_eq!(super::parse_duration("30d").unwrap().as_secs(), 30 * 86400);
        assert!(super::parse_duration("soon").is_err());
    }
}
