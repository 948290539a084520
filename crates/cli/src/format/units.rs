//! Byte sizes and CPU counts as the docker CLI reads and prints them
//! (go-units `RAMInBytes`/`BytesSize`, opts `NanoCPUs`).

/// Parses "512M", "1g", "1.5GiB", "1024" into bytes (binary multiples), like
/// go-units `RAMInBytes`.
pub fn parse_ram_bytes(input: &str) -> Result<i64, String> {
    let invalid = || format!("invalid size: '{input}'");
    let number_len = input
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(input.len());
    let (number, suffix) = input.split_at(number_len);
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return Err(invalid());
    }
    let value: f64 = number.parse().map_err(|_| invalid())?;
    let suffix = suffix
        .strip_prefix(' ')
        .unwrap_or(suffix)
        .to_ascii_lowercase();
    let mut chars = suffix.chars();
    let multiplier: f64 = match chars.next() {
        None => 1.0,
        Some('b') if chars.as_str().is_empty() => 1.0,
        Some(c) => {
            let power = "kmgtp".find(c).ok_or_else(invalid)? as i32 + 1;
            match chars.as_str() {
                "" | "b" | "i" | "ib" => 1024f64.powi(power),
                _ => return Err(invalid()),
            }
        }
    };
    Ok((value * multiplier) as i64)
}

/// Formats bytes like go-units `BytesSize` ("512MiB", "1.5GiB").
pub fn bytes_size(bytes: f64) -> String {
    const UNITS: [&str; 9] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"];
    let mut size = bytes;
    let mut unit = 0;
    while size >= 1024.0 && unit < UNITS.len() - 1 {
        size /= 1024.0;
        unit += 1;
    }
    format!("{}{}", format_g4(size), UNITS[unit])
}

/// Go's `%.4g` for values below 10000: four significant digits, no trailing zeros.
fn format_g4(value: f64) -> String {
    let int_digits = if value < 1.0 {
        1
    } else {
        value.log10().floor() as usize + 1
    };
    let decimals = 4usize.saturating_sub(int_digits);
    let text = format!("{value:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// Parses a CPU count ("0.5", "2") into nano CPUs, rejecting more than nine
/// decimals like docker's `opts.NanoCPUs`.
pub fn parse_nano_cpus(input: &str) -> Result<i64, String> {
    let invalid = || format!("failed to parse {input} as a rational number");
    let (int_part, frac_part) = input.split_once('.').unwrap_or((input, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(invalid());
    }
    let all_digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if !all_digits(int_part) || !all_digits(frac_part) {
        return Err(invalid());
    }
    let frac_trimmed = frac_part.trim_end_matches('0');
    if frac_trimmed.len() > 9 {
        return Err("value is too precise".to_string());
    }
    let whole: i64 = if int_part.is_empty() {
        0
    } else {
        int_part.parse().map_err(|_| invalid())?
    };
    let frac: i64 = format!("{frac_trimmed:0<9}")
        .parse()
        .map_err(|_| invalid())?;
    whole
        .checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(frac))
        .ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_sizes() {
        assert_eq!(parse_ram_bytes("512M"), Ok(512 * 1024 * 1024));
        assert_eq!(parse_ram_bytes("1G"), Ok(1024 * 1024 * 1024));
        assert_eq!(parse_ram_bytes("1gb"), Ok(1024 * 1024 * 1024));
        assert_eq!(parse_ram_bytes("1.5GiB"), Ok(1536 * 1024 * 1024));
        assert_eq!(parse_ram_bytes("64k"), Ok(65536));
        assert_eq!(parse_ram_bytes("100"), Ok(100));
        assert_eq!(parse_ram_bytes("100b"), Ok(100));
        assert!(parse_ram_bytes("12x").is_err());
        assert!(parse_ram_bytes("M").is_err());
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(bytes_size(512.0 * 1024.0 * 1024.0), "512MiB");
        assert_eq!(bytes_size(1536.0 * 1024.0 * 1024.0), "1.5GiB");
        assert_eq!(bytes_size(100.0), "100B");
        assert_eq!(bytes_size(8_261_709_824.0), "7.694GiB");
    }

    #[test]
    fn nano_cpus() {
        assert_eq!(parse_nano_cpus("0.5"), Ok(500_000_000));
        assert_eq!(parse_nano_cpus("2"), Ok(2_000_000_000));
        assert_eq!(parse_nano_cpus(".25"), Ok(250_000_000));
        assert_eq!(
            parse_nano_cpus("0.0000000001"),
            Err("value is too precise".into())
        );
        assert!(parse_nano_cpus("abc").is_err());
    }
}
