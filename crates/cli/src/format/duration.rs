//! Go's `time.Duration` text forms and docker's `units.HumanDuration`, so
//! flags and output read exactly as they do with the docker CLI.

use std::time::Duration;

const NS_PER_US: u128 = 1_000;
const NS_PER_MS: u128 = 1_000_000;
const NS_PER_S: u128 = 1_000_000_000;

/// Parses Go duration syntax ("10s", "1m30s", "500ms", "1.5h", "0") into
/// nanoseconds, as `time.ParseDuration` does: integer arithmetic with the
/// fraction of each unit scaled through a float, overflow past
/// ±9223372036854775807ns refused, and Go's error texts.
pub fn parse_go_duration(input: &str) -> Result<i64, String> {
    const LIMIT: u64 = 1 << 63;
    let invalid = || format!("time: invalid duration {}", go_quote(input));
    let (negative, mut rest) = match input.as_bytes().first() {
        Some(b'-') => (true, &input[1..]),
        Some(b'+') => (false, &input[1..]),
        _ => (false, input),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let bytes = rest.as_bytes();
        if !(bytes[0] == b'.' || bytes[0].is_ascii_digit()) {
            return Err(invalid());
        }
        // The integer part, refusing overflow.
        let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
        let mut whole: u64 = 0;
        for &b in &bytes[..digits] {
            if whole > LIMIT / 10 {
                return Err(invalid());
            }
            whole = whole * 10 + u64::from(b - b'0');
            if whole > LIMIT {
                return Err(invalid());
            }
        }
        rest = &rest[digits..];
        // The fraction: digits past what fits are ignored.
        let (mut fraction, mut scale, mut fraction_digits) = (0u64, 1f64, 0usize);
        if let Some(after) = rest.strip_prefix('.') {
            fraction_digits = after.bytes().take_while(|b| b.is_ascii_digit()).count();
            let mut overflow = false;
            for b in after.bytes().take(fraction_digits) {
                if overflow {
                    continue;
                }
                if fraction > (LIMIT - 1) / 10 {
                    overflow = true;
                    continue;
                }
                let next = fraction * 10 + u64::from(b - b'0');
                if next > LIMIT {
                    overflow = true;
                    continue;
                }
                fraction = next;
                scale *= 10.0;
            }
            rest = &after[fraction_digits..];
        }
        if digits == 0 && fraction_digits == 0 {
            return Err(invalid());
        }
        let unit_len = rest
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_text = &rest[..unit_len];
        let unit: u64 = match unit_text {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => {
                return Err(format!(
                    "time: missing unit in duration {}",
                    go_quote(input)
                ))
            }
            other => {
                return Err(format!(
                    "time: unknown unit {} in duration {}",
                    go_quote(other),
                    go_quote(input)
                ))
            }
        };
        rest = &rest[unit_len..];
        if whole > LIMIT / unit {
            return Err(invalid());
        }
        let mut value = whole * unit;
        if fraction > 0 {
            value += (fraction as f64 * (unit as f64 / scale)) as u64;
            if value > LIMIT {
                return Err(invalid());
            }
        }
        total += value;
        if total > LIMIT {
            return Err(invalid());
        }
    }
    if negative {
        return Ok((total as i64).wrapping_neg());
    }
    if total > LIMIT - 1 {
        return Err(invalid());
    }
    Ok(total as i64)
}

/// Go's `quote` in the time package: double quotes, with `"` and `\\`
/// escaped and other non-printable bytes as \\xNN.
fn go_quote(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Formats nanoseconds like Go's `time.Duration.String()` ("1m30s", "500ms", "0s").
pub fn format_go_duration(nanos: i64) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let u = nanos.unsigned_abs() as u128;
    if u == 0 {
        return "0s".to_string();
    }
    if u < NS_PER_S {
        let (unit, digits, scale) = if u < NS_PER_US {
            ("ns", 0, 1)
        } else if u < NS_PER_MS {
            ("µs", 3, NS_PER_US)
        } else {
            ("ms", 6, NS_PER_MS)
        };
        return format!("{sign}{}{}{unit}", u / scale, fraction(u % scale, digits));
    }
    let secs = u / NS_PER_S;
    let frac = fraction(u % NS_PER_S, 9);
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    if h > 0 {
        format!("{sign}{h}h{m}m{s}{frac}s")
    } else if secs >= 60 {
        format!("{sign}{m}m{s}{frac}s")
    } else {
        format!("{sign}{s}{frac}s")
    }
}

/// The ".5" part of a duration: `digits` decimals, trailing zeros removed.
fn fraction(value: u128, digits: usize) -> String {
    if value == 0 || digits == 0 {
        return String::new();
    }
    let text = format!("{value:0digits$}");
    format!(".{}", text.trim_end_matches('0'))
}

/// docker's `units.HumanDuration`: "Less than a second", "5 seconds", "About a minute"...
pub fn human_duration(d: Duration) -> String {
    let seconds = d.as_secs();
    let minutes = seconds / 60;
    let hours = ((d.as_secs_f64() / 3600.0) + 0.5) as u64;
    match () {
        _ if seconds < 1 => "Less than a second".to_string(),
        _ if seconds == 1 => "1 second".to_string(),
        _ if seconds < 60 => format!("{seconds} seconds"),
        _ if minutes == 1 => "About a minute".to_string(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".to_string(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", seconds / 3600 / 24 / 365),
    }
}

/// Time elapsed since an RFC 3339 timestamp from the daemon (zero if it cannot
/// be read or lies in the future, as Go's time.Since of a zero time would be huge
/// but docker never shows that for a valid task).
pub fn since(timestamp: &str) -> Duration {
    chrono::DateTime::parse_from_rfc3339(timestamp)
        .ok()
        .and_then(|t| {
            (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
                .to_std()
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse_go_duration("10s"), Ok(10_000_000_000));
        assert_eq!(parse_go_duration("1m30s"), Ok(90_000_000_000));
        assert_eq!(parse_go_duration("500ms"), Ok(500_000_000));
        assert_eq!(parse_go_duration("1.5h"), Ok(5_400_000_000_000));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration("-2s"), Ok(-2_000_000_000));
        assert!(parse_go_duration("10").is_err());
        assert!(parse_go_duration("abc").is_err());
        assert!(parse_go_duration("5d").is_err());
        assert!(parse_go_duration("").is_err());
    }

    #[test]
    fn parses_go_durations_exactly() {
        assert_eq!(parse_go_duration("2160h"), Ok(7_776_000_000_000_000));
        assert_eq!(parse_go_duration(".5s"), Ok(500_000_000));
        assert_eq!(parse_go_duration("1.s"), Ok(1_000_000_000));
        assert_eq!(parse_go_duration("1.1h"), Ok(3_960_000_000_000));
        assert_eq!(parse_go_duration("1h2m3.5s"), Ok(3_723_500_000_000));
        assert_eq!(parse_go_duration("3µs"), Ok(3_000));
        assert_eq!(parse_go_duration("3μs"), Ok(3_000));
        assert_eq!(parse_go_duration("+5m"), Ok(300_000_000_000));
        assert_eq!(parse_go_duration("-0"), Ok(0));
        assert_eq!(parse_go_duration("9223372036854775807ns"), Ok(i64::MAX));
        assert_eq!(parse_go_duration("-9223372036854775808ns"), Ok(i64::MIN));
        assert_eq!(
            parse_go_duration("9223372036854775808ns"),
            Err("time: invalid duration \"9223372036854775808ns\"".to_string())
        );
        assert_eq!(
            parse_go_duration("2562048h"),
            Err("time: invalid duration \"2562048h\"".to_string())
        );
        assert_eq!(
            parse_go_duration(".s"),
            Err("time: invalid duration \".s\"".to_string())
        );
        assert_eq!(
            parse_go_duration("10"),
            Err("time: missing unit in duration \"10\"".to_string())
        );
        assert_eq!(
            parse_go_duration("90d"),
            Err("time: unknown unit \"d\" in duration \"90d\"".to_string())
        );
        assert_eq!(
            parse_go_duration("1h-2m"),
            Err("time: unknown unit \"h-\" in duration \"1h-2m\"".to_string())
        );
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format_go_duration(0), "0s");
        assert_eq!(format_go_duration(10_000_000_000), "10s");
        assert_eq!(format_go_duration(90_000_000_000), "1m30s");
        assert_eq!(format_go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(format_go_duration(500_000_000), "500ms");
        assert_eq!(format_go_duration(1_500_000_000), "1.5s");
        assert_eq!(format_go_duration(1_500), "1.5µs");
        assert_eq!(format_go_duration(7), "7ns");
    }

    #[test]
    fn human_durations() {
        let s = Duration::from_secs;
        assert_eq!(
            human_duration(Duration::from_millis(300)),
            "Less than a second"
        );
        assert_eq!(human_duration(s(1)), "1 second");
        assert_eq!(human_duration(s(5)), "5 seconds");
        assert_eq!(human_duration(s(60)), "About a minute");
        assert_eq!(human_duration(s(3 * 60)), "3 minutes");
        assert_eq!(human_duration(s(3600)), "About an hour");
        assert_eq!(human_duration(s(5 * 3600)), "5 hours");
        assert_eq!(human_duration(s(3 * 86400)), "3 days");
        assert_eq!(human_duration(s(21 * 86400)), "3 weeks");
        assert_eq!(human_duration(s(90 * 86400)), "3 months");
        assert_eq!(human_duration(s(3 * 365 * 86400)), "3 years");
    }
}
