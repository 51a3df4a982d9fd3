//! Parsing the units operators type: durations (`80ms`), rates (`100mbit`)
//! and ratios (`1%`). Each error says what forms are accepted.

use std::time::Duration;

/// Parses a duration such as `80ms`, `1.5s` or `0ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration ({e}); write e.g. 80ms, 1s, 0ms"))
}

/// Parses a rate in bits per second: `100mbit`, `1gbit`, `512kbit`,
/// `2500bit`. Byte-based units are refused on purpose: `tc` users read
/// `mbps` as megabytes, others as megabits.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let err =
        || format!("{s:?} is not a rate; write e.g. 100mbit, 1gbit, 512kbit (bits per second)");
    let (num, mult) = if let Some(n) = t.strip_suffix("gbit") {
        (n, 1e9)
    } else if let Some(n) = t.strip_suffix("mbit") {
        (n, 1e6)
    } else if let Some(n) = t.strip_suffix("kbit") {
        (n, 1e3)
    } else if let Some(n) = t.strip_suffix("bit") {
        (n, 1.0)
    } else {
        return Err(err());
    };
    let value: f64 = num.trim().parse().map_err(|_| err())?;
    if !value.is_finite() || value <= 0.0 {
        return Err(format!("{s:?}: a rate must be greater than zero"));
    }
    Ok((value * mult).round() as u64)
}

/// Parses a ratio as a percentage (`1%`, `0.5%`) or a fraction (`0.01`).
pub fn parse_ratio(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let err = || format!("{s:?} is not a ratio; write e.g. 1%, 0.5% or 0.01");
    let value = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map_err(|_| err())? / 100.0,
        None => t.parse::<f64>().map_err(|_| err())?,
    };
    if !(0.0..=1.0).contains(&value) {
        return Err(format!("{s:?} is outside 0%..100%"));
    }
    Ok(value)
}

/// Formats a rate for tables: `100mbit`, `1.5gbit`.
pub fn format_rate(bps: u64) -> String {
    let (v, unit) = match bps {
        b if b >= 1_000_000_000 => (b as f64 / 1e9, "gbit"),
        b if b >= 1_000_000 => (b as f64 / 1e6, "mbit"),
        b if b >= 1_000 => (b as f64 / 1e3, "kbit"),
        b => (b as f64, "bit"),
    };
    format!("{}{unit}", (v * 100.0).round() / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("100mbit"), Ok(100_000_000));
        assert_eq!(parse_rate("1.5Gbit"), Ok(1_500_000_000));
        assert_eq!(parse_rate("512kbit"), Ok(512_000));
        assert!(parse_rate("100mbps").unwrap_err().contains("100mbit"));
        assert!(parse_rate("0mbit").is_err());
        assert!(parse_rate("fast").is_err());
        assert_eq!(format_rate(100_000_000), "100mbit");
    }

    #[test]
    fn ratios() {
        assert_eq!(parse_ratio("1%"), Ok(0.01));
        assert_eq!(parse_ratio("0.25"), Ok(0.25));
        assert!(parse_ratio("150%").is_err());
        assert!(parse_ratio("lots").unwrap_err().contains("1%"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("80ms"), Ok(Duration::from_millis(80)));
        assert!(parse_duration("80").unwrap_err().contains("80ms"));
    }
}
