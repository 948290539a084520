//! Output helpers shared by every command: templates, tables, durations,
//! sizes, and the small string rules of docker's formatter package.

pub mod duration;
pub mod json;
pub mod table;
pub use flotilla_gotemplate as template;
pub mod units;

/// docker's inspect.Inspect output for the objects found: an indented JSON
/// array ("[]" for none), or the template once per object through
/// `execute` (a blank line for none); a template that fails on an object
/// adds to `errors`.
pub fn inspect_output(
    raws: &[bytes::Bytes],
    template: Option<&template::Template>,
    errors: &mut Vec<String>,
    execute: impl Fn(&template::Template, serde_json::Value) -> std::result::Result<String, String>,
) -> String {
    let Some(template) = template else {
        let joined: Vec<String> = raws
            .iter()
            .map(|r| String::from_utf8_lossy(r).trim().to_string())
            .collect();
        return format!("{}\n", json::indent(&format!("[{}]", joined.join(","))));
    };
    let mut text = String::new();
    for raw in raws {
        let result = serde_json::from_slice::<serde_json::Value>(raw)
            .map_err(|e| format!("unable to read inspect data: {e}"))
            .and_then(|value| {
                execute(template, value).map_err(|e| format!("template parsing error: {e}"))
            });
        match result {
            Ok(done) => {
                text.push_str(&done);
                text.push('\n');
            }
            Err(err) => errors.push(err),
        }
    }
    if text.is_empty() {
        text.push('\n');
    }
    text
}

use std::cmp::Ordering;

/// docker's `formatter.TruncateID`: drop an algorithm prefix, keep 12 characters.
pub fn truncate_id(id: &str) -> String {
    let id = id.split_once(':').map_or(id, |(_, rest)| rest);
    id.chars().take(12).collect()
}

/// docker's `formatter.PrettyPrint` for strings: first letter upper case, the rest lower.
pub fn pretty_print(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        None => String::new(),
        Some(first) => first
            .to_uppercase()
            .chain(chars.as_str().to_lowercase().chars())
            .collect(),
    }
}

/// docker's `formatter.Ellipsis`: cut to `max` characters, ending in "…".
pub fn ellipsis(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// `sortorder.NaturalLess` as a comparator: digit runs compare as numbers.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let (da, db) = (a[i].is_ascii_digit(), b[j].is_ascii_digit());
        if da != db {
            return if da {
                Ordering::Less
            } else {
                Ordering::Greater
            };
        }
        if !da {
            if a[i] != b[j] {
                return a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
            continue;
        }
        let (zi, zj) = (skip_zeros(a, i), skip_zeros(b, j));
        let (ei, ej) = (end_of_digits(a, zi), end_of_digits(b, zj));
        let order = (ei - zi)
            .cmp(&(ej - zj))
            .then_with(|| a[zi..ei].cmp(&b[zj..ej]))
            .then_with(|| zi.cmp(&zj));
        if order != Ordering::Equal {
            return order;
        }
        i = ei;
        j = ej;
    }
    (a.len() - i).cmp(&(b.len() - j))
}

fn skip_zeros(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && s[i] == b'0' {
        i += 1;
    }
    i
}

fn end_of_digits(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && s[i].is_ascii_digit() {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        let mut names = vec!["web.10", "web.2", "web.1", "api.1", "web.1"];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(names, vec!["api.1", "web.1", "web.1", "web.2", "web.10"]);
        assert_eq!(natural_cmp("a", "ab"), Ordering::Less);
    }

    #[test]
    fn small_string_rules() {
        assert_eq!(truncate_id("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(truncate_id("abc"), "abc");
        assert_eq!(pretty_print("running"), "Running");
        assert_eq!(pretty_print("REACHABLE"), "Reachable");
        assert_eq!(ellipsis("abcdef", 4), "abc…");
        assert_eq!(ellipsis("abc", 4), "abc");
    }
}

/// The wire text of a bollard enum or other plain value ("running", "manager").
pub fn enum_text<T: serde::Serialize>(value: &Option<T>) -> String {
    value
        .as_ref()
        .and_then(|v| serde_json::to_value(v).ok())
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Go's `time.Time.String()` for an RFC 3339 timestamp:
/// "2024-05-01 10:00:00.123456789 +0000 UTC" (a fixed offset has no zone
/// name, so Go repeats the offset: "+0200 +0200").
pub fn go_time_string(timestamp: &str) -> String {
    let Ok(parsed) = chrono::DateTime::parse_from_rfc3339(timestamp) else {
        return timestamp.to_string();
    };
    let nanos = parsed.timestamp_subsec_nanos();
    let fraction = if nanos == 0 {
        String::new()
    } else {
        format!(".{}", format!("{nanos:09}").trim_end_matches('0'))
    };
    let offset = parsed.format("%z").to_string();
    let zone = if parsed.offset().local_minus_utc() == 0 {
        "UTC".to_string()
    } else {
        offset.clone()
    };
    format!(
        "{}{fraction} {offset} {zone}",
        parsed.format("%Y-%m-%d %H:%M:%S")
    )
}

/// Go's `time.Time.String()` as `PrettyPrint` shows it:
/// "2024-05-01 10:00:00.123456789 +0000 utc" (the zone lower-cased by
/// PrettyPrint, which lower-cases everything after the first character).
pub fn go_time_pretty(timestamp: &str) -> String {
    pretty_print(&go_time_string(timestamp))
}

/// An image as list commands show it: a tagged reference loses its digest
/// and the default registry ("docker.io/library/busybox:1@sha256:..." →
/// "busybox:1"); anything else is shown unchanged, as docker does.
pub fn display_image(image: &str) -> String {
    let name_tag = image.split_once('@').map_or(image, |(name, _)| name);
    let last_segment = name_tag.rsplit('/').next().unwrap_or(name_tag);
    if !last_segment.contains(':') {
        return image.to_string();
    }
    let familiar = name_tag
        .strip_prefix("docker.io/library/")
        .or_else(|| name_tag.strip_prefix("docker.io/"))
        .unwrap_or(name_tag);
    familiar.to_string()
}

#[cfg(test)]
mod more_tests {
    use super::*;

    #[test]
    fn go_time_strings() {
        assert_eq!(
            go_time_pretty("2017-05-22T16:37:04.226296393Z"),
            "2017-05-22 16:37:04.226296393 +0000 utc"
        );
        assert_eq!(
            go_time_pretty("2017-05-22T16:37:04.5Z"),
            "2017-05-22 16:37:04.5 +0000 utc"
        );
        assert_eq!(
            go_time_pretty("2017-05-22T16:37:04Z"),
            "2017-05-22 16:37:04 +0000 utc"
        );
    }

    #[test]
    fn images_lose_digests_only_when_tagged() {
        assert_eq!(display_image("busybox:1@sha256:abc"), "busybox:1");
        assert_eq!(
            display_image("docker.io/library/busybox:latest@sha256:abc"),
            "busybox:latest"
        );
        assert_eq!(display_image("busybox@sha256:abc"), "busybox@sha256:abc");
        assert_eq!(display_image("localhost:5000/app"), "localhost:5000/app");
        assert_eq!(
            display_image("localhost:5000/app:2"),
            "localhost:5000/app:2"
        );
    }
}

/// A bollard date field shown like docker's `PrettyPrint(time.Time)`.
pub fn date_pretty<T: serde::Serialize>(date: &Option<T>) -> String {
    crate::client::date_text(date)
        .map(|t| go_time_pretty(&t))
        .unwrap_or_default()
}
