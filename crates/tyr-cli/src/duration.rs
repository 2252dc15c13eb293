//! `--since`/`--until` values: a duration back from now (`90s`, `15m`, `24h`, `7d`, `2w`,
//! `1h30m`) or an RFC 3339 timestamp.

use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime, UtcOffset};

/// Parses a duration such as `24h` or `1h30m` (units `s`, `m`, `h`, `d`, `w`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "invalid duration `{text}` (expected e.g. 90s, 15m, 24h, 7d, 2w or an RFC 3339 time)"
        )
    };
    let mut total: i64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: i64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err(bad()),
        };
        let n: i64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(bad)?;
    }
    if !digits.is_empty() || text.is_empty() {
        return Err(bad());
    }
    Ok(Duration::seconds(total))
}

/// Resolves a `--since`/`--until` value against `now` into an RFC 3339 UTC timestamp.
pub fn resolve_time(text: &str, now: OffsetDateTime) -> Result<String, String> {
    let at = match OffsetDateTime::parse(text, &Rfc3339) {
        Ok(t) => t,
        Err(_) => now
            .checked_sub(parse_duration(text)?)
            .ok_or_else(|| format!("duration `{text}` is too long"))?,
    };
    at.to_offset(UtcOffset::UTC)
        .format(&Rfc3339)
        .map_err(|e| format!("cannot format `{text}`: {e}"))
}
