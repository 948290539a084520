//! Output of `secret`/`config` `ls` and `inspect`: docker's formatter.go of
//! each group (table, `-q`, `--format`, `--pretty`) and inspect.Inspect.

use serde_json::{json, Value};

use super::Kind;
use crate::client::Result;
use crate::format::duration::human_duration;
use crate::format::go_time_string;
use crate::format::table::{header, render_list, QUIET_FORMAT};
use crate::format::template::{Mode, Template, METHOD_SUFFIX};
use crate::format::{go_time_pretty, natural_cmp};

const SECRET_TABLE_FORMAT: &str =
    "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.CreatedAt}}\t{{.UpdatedAt}}";
const CONFIG_TABLE_FORMAT: &str = "table {{.ID}}\t{{.Name}}\t{{.CreatedAt}}\t{{.UpdatedAt}}";
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// docker's NewFormat for ls: "table" (the default) or its quiet form; any
/// other format is used as given, even with -q.
pub fn choose_format(kind: Kind, format: Option<&str>, quiet: bool) -> &str {
    match format.filter(|f| !f.is_empty()).unwrap_or("table") {
        "table" if quiet => QUIET_FORMAT,
        "table" if kind == Kind::Secret => SECRET_TABLE_FORMAT,
        "table" => CONFIG_TABLE_FORMAT,
        other => other,
    }
}

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn labels(value: &Value) -> serde_json::Map<String, Value> {
    value
        .pointer("/Spec/Labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// `units.HumanDuration(now - t) + " ago"`.
fn ago(timestamp: &str, now: chrono::DateTime<chrono::Utc>) -> String {
    let timestamp = if timestamp.is_empty() {
        ZERO_TIME
    } else {
        timestamp
    };
    let elapsed = chrono::DateTime::parse_from_rfc3339(timestamp)
        .ok()
        .and_then(|t| (now - t.with_timezone(&chrono::Utc)).to_std().ok())
        .unwrap_or_default()
        // Go's Time.Sub saturates at the largest Duration (about 292 years).
        .min(std::time::Duration::from_nanos(i64::MAX as u64));
    format!("{} ago", human_duration(elapsed))
}

/// The list, sorted naturally by name, as docker's secret/config context shows it.
pub fn list(
    kind: Kind,
    mut items: Vec<Value>,
    format: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<String> {
    items.sort_by(|a, b| natural_cmp(text(a, "/Spec/Name"), text(b, "/Spec/Name")));
    let rows: Vec<Value> = items.iter().map(|item| row(kind, item, now)).collect();
    let mut pairs = vec![("ID", "ID"), ("Name", "NAME")];
    if kind == Kind::Secret {
        pairs.push(("Driver", "DRIVER"));
    }
    pairs.extend([
        ("CreatedAt", "CREATED"),
        ("UpdatedAt", "UPDATED"),
        ("Labels", "LABELS"),
    ]);
    Ok(render_list(format, &header(&pairs), &rows)?)
}

fn row(kind: Kind, item: &Value, now: chrono::DateTime<chrono::Utc>) -> Value {
    let labels = labels(item);
    // Go ranges over the map in random order; sorted here so output is stable.
    let joined: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    let mut row = json!({
        "ID": text(item, "/ID"),
        "Name": text(item, "/Spec/Name"),
        "CreatedAt": ago(text(item, "/CreatedAt"), now),
        "UpdatedAt": ago(text(item, "/UpdatedAt"), now),
        "Labels": joined.join(","),
    });
    if kind == Kind::Secret {
        row["Driver"] = json!(text(item, "/Spec/Driver/Name"));
    }
    row[format!("Label{METHOD_SUFFIX}")] = Value::Object(labels);
    row
}

/// docker's pretty inspect template, with the newline its formatter adds.
pub fn pretty(kind: Kind, item: &Value) -> String {
    let time = |pointer: &str| {
        let t = text(item, pointer);
        go_time_pretty(if t.is_empty() { ZERO_TIME } else { t })
    };
    let (id, name) = match kind {
        Kind::Secret => ("ID:              ", "Name:              "),
        Kind::Config => ("ID:\t\t\t", "Name:\t\t\t"),
    };
    let mut out = format!(
        "{id}{}\n{name}{}",
        text(item, "/ID"),
        text(item, "/Spec/Name")
    );
    let labels = labels(item);
    if !labels.is_empty() {
        out.push_str("\nLabels:");
        for (key, value) in &labels {
            out.push_str(&format!("\n - {key}"));
            let value = value.as_str().unwrap_or("");
            if !value.is_empty() {
                out.push_str(&format!("={value}"));
            }
        }
    }
    match kind {
        Kind::Secret => out.push_str(&format!(
            "\nDriver:            {}\nCreated at:        {}\nUpdated at:        {}\n",
            text(item, "/Spec/Driver/Name"),
            time("/CreatedAt"),
            time("/UpdatedAt"),
        )),
        Kind::Config => {
            let data = base64_decode(text(item, "/Spec/Data")).unwrap_or_default();
            out.push_str(&format!(
                "\nCreated at:            \t{}\nUpdated at:            \t{}\nData:\n{}\n",
                time("/CreatedAt"),
                time("/UpdatedAt"),
                String::from_utf8_lossy(&data),
            ));
        }
    }
    out
}

/// docker's inspect.Inspect output for the objects found (see
/// [`crate::format::inspect_output`]).
pub fn inspect_output(
    kind: Kind,
    raws: &[bytes::Bytes],
    template: Option<&Template>,
    errors: &mut Vec<String>,
) -> String {
    crate::format::inspect_output(raws, template, errors, |t, value| {
        // The typed swarm.Secret first, then the raw map, as docker does.
        t.execute(&typed_view(kind, value.clone()), Mode::Strict)
            .or_else(|_| t.execute(&value, Mode::Lenient))
            .map_err(|e| e.to_string())
    })
}

/// The object as docker's template sees swarm.Secret / swarm.Config: every
/// field present and the times printed as Go prints a time.Time.
fn typed_view(kind: Kind, value: Value) -> Value {
    let Value::Object(mut map) = value else {
        return value;
    };
    for (key, zero) in [
        ("ID", json!("")),
        ("Version", json!({})),
        ("CreatedAt", json!(ZERO_TIME)),
        ("UpdatedAt", json!(ZERO_TIME)),
        ("Spec", json!({})),
    ] {
        map.entry(key).or_insert(zero);
    }
    for key in ["CreatedAt", "UpdatedAt"] {
        if let Some(Value::String(t)) = map.get(key) {
            let shown = go_time_string(t);
            map.insert(key.to_string(), Value::String(shown));
        }
    }
    if let Some(Value::Object(version)) = map.get_mut("Version") {
        version.entry("Index").or_insert(json!(0));
    }
    if let Some(Value::Object(spec)) = map.get_mut("Spec") {
        spec.entry("Name").or_insert(json!(""));
        spec.entry("Labels").or_insert(Value::Null);
        spec.entry("Data").or_insert(Value::Null);
        if kind == Kind::Secret {
            spec.entry("Driver").or_insert(Value::Null);
        }
        spec.entry("Templating").or_insert(Value::Null);
    }
    Value::Object(map)
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding, as Go's encoding/json writes a []byte.
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 (padding optional); None if it is not base64.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut bits = 0u32;
    let mut count = 0;
    for c in text.trim_end_matches('=').bytes() {
        let value = ALPHABET.iter().position(|&a| a == c)? as u32;
        bits = (bits << 6) | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> chrono::DateTime<chrono::Utc> {
        "2024-05-01T12:00:00Z".parse().unwrap()
    }

    fn item(id: &str, name: &str, driver: Option<&str>, labels: Value) -> Value {
        let mut spec = json!({"Name": name, "Labels": labels});
        if let Some(driver) = driver {
            spec["Driver"] = json!({"Name": driver});
        }
        json!({
            "ID": id, "Version": {"Index": 11},
            "CreatedAt": "2024-05-01T10:00:00.5Z", "UpdatedAt": "2024-05-01T11:00:00Z",
            "Spec": spec
        })
    }

    fn sample() -> Vec<Value> {
        vec![
            item("ID-10-foo", "10-foo", Some("driver"), json!({})),
            item("ID-1-foo", "1-foo", None, json!(null)),
            item("ID-2-foo", "2-foo", Some("driver"), json!({"a": "1"})),
        ]
    }

    #[test]
    fn secret_table_matches_docker_golden() {
        let format = choose_format(Kind::Secret, None, false);
        assert_eq!(
            list(Kind::Secret, sample(), format, now()).unwrap(),
            "\
ID          NAME      DRIVER    CREATED       UPDATED
ID-1-foo    1-foo               2 hours ago   About an hour ago
ID-2-foo    2-foo     driver    2 hours ago   About an hour ago
ID-10-foo   10-foo    driver    2 hours ago   About an hour ago
"
        );
        assert_eq!(
            list(Kind::Secret, vec![], format, now()).unwrap(),
            "ID        NAME      DRIVER    CREATED   UPDATED\n"
        );
    }

    #[test]
    fn config_table_has_no_driver() {
        let format = choose_format(Kind::Config, Some(""), false);
        assert_eq!(
            list(Kind::Config, sample(), format, now()).unwrap(),
            "\
ID          NAME      CREATED       UPDATED
ID-1-foo    1-foo     2 hours ago   About an hour ago
ID-2-foo    2-foo     2 hours ago   About an hour ago
ID-10-foo   10-foo    2 hours ago   About an hour ago
"
        );
        assert!(list(Kind::Config, sample(), "{{.Driver}}", now()).is_err());
    }

    #[test]
    fn quiet_and_custom_formats() {
        assert_eq!(
            list(
                Kind::Secret,
                sample(),
                choose_format(Kind::Secret, None, true),
                now()
            )
            .unwrap(),
            "ID-1-foo\nID-2-foo\nID-10-foo\n"
        );
        // A custom format wins over -q, as in docker.
        let format = choose_format(Kind::Secret, Some("{{ .Name }} {{ .Labels }}"), true);
        assert_eq!(
            list(Kind::Secret, sample(), format, now()).unwrap(),
            "1-foo \n2-foo a=1\n10-foo \n"
        );
        assert_eq!(
            list(
                Kind::Config,
                sample(),
                "table {{.Name}}\t{{.Label \"a\"}}",
                now()
            )
            .unwrap(),
            "NAME      \n1-foo     \n2-foo     1\n10-foo    \n"
        );
    }

    #[test]
    fn a_zero_time_is_gos_saturated_duration() {
        assert_eq!(ago("", now()), "292 years ago");
        assert_eq!(ago("2024-05-01T12:00:05Z", now()), "Less than a second ago");
    }

    #[test]
    fn secret_pretty_matches_docker_golden() {
        let secret = json!({"ID": "secretID", "Spec": {"Name": "secretName",
            "Labels": {"lbl1": "value1"}, "Driver": {"Name": "driver"}}});
        assert_eq!(
            pretty(Kind::Secret, &secret),
            "\
ID:              secretID
Name:              secretName
Labels:
 - lbl1=value1
Driver:            driver
Created at:        0001-01-01 00:00:00 +0000 utc
Updated at:        0001-01-01 00:00:00 +0000 utc
"
        );
        let bare = item("x", "y", None, json!({}));
        assert_eq!(
            pretty(Kind::Secret, &bare),
            "ID:              x\nName:              y\nDriver:            \nCreated at:        2024-05-01 10:00:00.5 +0000 utc\nUpdated at:        2024-05-01 11:00:00 +0000 utc\n"
        );
    }

    #[test]
    fn config_pretty_matches_docker_golden() {
        let config = json!({"ID": "configID", "Spec": {"Name": "configName",
            "Labels": {"lbl1": "value1", "bare": ""},
            "Data": base64_encode(b"payload here")}});
        assert_eq!(
            pretty(Kind::Config, &config),
            "ID:\t\t\tconfigID\nName:\t\t\tconfigName\nLabels:\n - bare\n - lbl1=value1\nCreated at:            \t0001-01-01 00:00:00 +0000 utc\nUpdated at:            \t0001-01-01 00:00:00 +0000 utc\nData:\npayload here\n"
        );
    }

    #[test]
    fn inspect_json_and_templates() {
        let raws = vec![bytes::Bytes::from(
            r#"{"ID":"a","Version":{"Index":3},"CreatedAt":"2024-05-01T10:00:00Z","UpdatedAt":"2024-05-01T10:00:00Z","Spec":{"Name":"n","Labels":{}}}"#,
        )];
        let mut errors = Vec::new();
        assert_eq!(
            inspect_output(Kind::Secret, &raws, None, &mut errors),
            "[\n    {\n        \"ID\": \"a\",\n        \"Version\": {\n            \"Index\": 3\n        },\n        \"CreatedAt\": \"2024-05-01T10:00:00Z\",\n        \"UpdatedAt\": \"2024-05-01T10:00:00Z\",\n        \"Spec\": {\n            \"Name\": \"n\",\n            \"Labels\": {}\n        }\n    }\n]\n"
        );
        assert_eq!(inspect_output(Kind::Secret, &[], None, &mut errors), "[]\n");
        let template = Template::parse("{{.Spec.Name}} {{.CreatedAt}} {{.Version.Index}}").unwrap();
        assert_eq!(
            inspect_output(Kind::Secret, &raws, Some(&template), &mut errors),
            "n 2024-05-01 10:00:00 +0000 UTC 3\n"
        );
        assert!(errors.is_empty());
    }

    #[test]
    fn base64_round_trips() {
        for data in [&b""[..], b"a", b"ab", b"abc", b"abcd", b"\x00\xff\x10"] {
            assert_eq!(base64_decode(&base64_encode(data)).unwrap(), data);
        }
        assert_eq!(base64_encode(b"payload here"), "cGF5bG9hZCBoZXJl");
        assert_eq!(base64_decode("!!"), None);
    }
}
