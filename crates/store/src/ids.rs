//! Object IDs and timestamps in Docker's formats.

use rand::Rng;

/// A new object ID like SwarmKit's: 25 characters of lowercase base 36
/// drawn from 128 random bits.
pub fn new_id() -> String {
    base36(rand::rng().random())
}

/// An ID in the same format that every manager derives alike from `seed`
/// (FNV-1a, 128 bits): for objects an op creates as it applies, such as the
/// ingress network of a new swarm.
pub fn derived_id(seed: &str) -> String {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013b;
    let n = seed
        .bytes()
        .fold(OFFSET, |h, b| (h ^ u128::from(b)).wrapping_mul(PRIME));
    base36(n)
}

fn base36(mut n: u128) -> String {
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
        let d = derived_id("cluster-1/ingress");
        assert_eq!(d, derived_id("cluster-1/ingress"));
        assert_ne!(d, derived_id("cluster-2/ingress"));
        assert_eq!(d.len(), 25);
    }

    #[test]
    fn times_round_trip() {
        let s = now();
        assert!(s.ends_with('Z'));
        assert_eq!(format_time(parse_time(&s).expect("parse")), s);
    }
}
