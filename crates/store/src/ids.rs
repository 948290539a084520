//! Object IDs and timestamps in Docker's formats.

use rand::Rng;

/// A new object ID like SwarmKit's: 25 characters of lowercase base 36
/// drawn from 128 random bits.
pub fn new_id() -> String {
    let mut n: u128 = rand::rng().random();
    let mut out = [b'0'; 25];
    for slot in out.iter_mut().rev() {
        let digit = (n % 36) as u8;
        *slot = if digit < 10 {
            b'0' + digit
        } else {
            b'a' + digit - 10
        };
        n /= 36;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Now, as Docker writes times: RFC 3339 with nanoseconds, in UTC.
pub fn now() -> String {
    format_time(chrono::Utc::now())
}

pub fn format_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

pub fn parse_time(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_25_base36_chars_and_distinct() {
        let a = new_id();
        let b = new_id();
        assert_eq!(a.len(), 25);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase()));
        assert_ne!(a, b);
    }

    #[test]
    fn times_round_trip() {
        let s = now();
        assert!(s.ends_with('Z'));
        assert_eq!(format_time(parse_time(&s).expect("parse")), s);
    }
}
