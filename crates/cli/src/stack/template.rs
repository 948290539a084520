//! Variable interpolation in compose files, after docker/cli's
//! cli/compose/template and cli/compose/interpolation: `$VAR`, `${VAR}`,
//! `${VAR:-default}` (unset or empty), `${VAR-default}` (unset),
//! `${VAR:?message}` / `${VAR?message}` (required) and `$$` for a literal
//! `$`. It runs on the parsed YAML before the typed parse, on values only
//! (never on keys), and a value that changed at a path docker casts
//! (`deploy.replicas`, `healthcheck.retries`, `read_only`, ...) becomes an
//! integer, float or boolean again.
//!
//! One deliberate difference from docker: an unbraced `$VAR` ends at the
//! name, so `$NAME-api` is the value of NAME followed by "-api" (docker
//! reads it as `${NAME-api}`, a known docker bug).

use serde_yaml::Value;

/// Looks a variable up: `None` when unset.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Substitutes the variables of one string. The error is docker's
/// InvalidTemplateError text: the template itself, or for a required
/// variable without a value "required variable NAME is missing a value: MSG".
pub fn substitute(template: &str, lookup: Lookup) -> Result<String, String> {
    let invalid = || template.to_string();
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').ok_or_else(invalid)?;
            out.push_str(&braced(&body[..end], lookup).map_err(|e| e.unwrap_or_else(invalid))?);
            rest = &body[end + 1..];
        } else {
            let len = name_len(after);
            if len == 0 {
                return Err(invalid());
            }
            out.push_str(&lookup(&after[..len]).unwrap_or_default());
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Length of a variable name (`[_a-zA-Z][_a-zA-Z0-9]*`) at the start of `text`.
fn name_len(text: &str) -> usize {
    let bytes = text.as_bytes();
    match bytes.first() {
        Some(b) if b.is_ascii_alphabetic() || *b == b'_' => {}
        _ => return 0,
    }
    bytes
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
        .count()
}

/// The inside of `${...}`; `Err(None)` means an invalid template, `Err(Some)`
/// a required variable without a value.
fn braced(body: &str, lookup: Lookup) -> Result<String, Option<String>> {
    let len = name_len(body);
    if len == 0 {
        return Err(None);
    }
    let (name, op) = body.split_at(len);
    let value = lookup(name);
    let required = |message: &str| {
        Some(format!(
            "required variable {name} is missing a value: {message}"
        ))
    };
    if op.is_empty() {
        Ok(value.unwrap_or_default())
    } else if let Some(default) = op.strip_prefix(":-") {
        Ok(value
            .filter(|v| !v.is_empty())
            .unwrap_or(default.to_string()))
    } else if let Some(default) = op.strip_prefix('-') {
        Ok(value.unwrap_or(default.to_string()))
    } else if let Some(message) = op.strip_prefix(":?") {
        value
            .filter(|v| !v.is_empty())
            .ok_or_else(|| required(message))
    } else if let Some(message) = op.strip_prefix('?') {
        value.ok_or_else(|| required(message))
    } else {
        Err(None)
    }
}

/// What a value at a path is cast to after interpolation changed it.
#[derive(Clone, Copy)]
enum Cast {
    Int,
    Float,
    Bool,
}

/// docker's interpolateTypeCastMapping ("*" is any key, "[]" any list item).
const CASTS: &[(&str, Cast)] = &[
    ("services.*.configs.[].mode", Cast::Int),
    ("services.*.secrets.[].mode", Cast::Int),
    ("services.*.healthcheck.retries", Cast::Int),
    ("services.*.healthcheck.disable", Cast::Bool),
    ("services.*.deploy.replicas", Cast::Int),
    ("services.*.deploy.update_config.parallelism", Cast::Int),
    (
        "services.*.deploy.update_config.max_failure_ratio",
        Cast::Float,
    ),
    ("services.*.deploy.rollback_config.parallelism", Cast::Int),
    (
        "services.*.deploy.rollback_config.max_failure_ratio",
        Cast::Float,
    ),
    ("services.*.deploy.restart_policy.max_attempts", Cast::Int),
    (
        "services.*.deploy.placement.max_replicas_per_node",
        Cast::Int,
    ),
    ("services.*.ports.[].target", Cast::Int),
    ("services.*.ports.[].published", Cast::Int),
    ("services.*.ulimits.*", Cast::Int),
    ("services.*.ulimits.*.hard", Cast::Int),
    ("services.*.ulimits.*.soft", Cast::Int),
    ("services.*.privileged", Cast::Bool),
    ("services.*.oom_score_adj", Cast::Int),
    ("services.*.read_only", Cast::Bool),
    ("services.*.stdin_open", Cast::Bool),
    ("services.*.tty", Cast::Bool),
    ("services.*.init", Cast::Bool),
    ("services.*.volumes.[].read_only", Cast::Bool),
    ("services.*.volumes.[].volume.nocopy", Cast::Bool),
    ("networks.*.external", Cast::Bool),
    ("networks.*.internal", Cast::Bool),
    ("networks.*.attachable", Cast::Bool),
    ("volumes.*.external", Cast::Bool),
    ("secrets.*.external", Cast::Bool),
    ("configs.*.external", Cast::Bool),
];

fn cast_for(path: &[String]) -> Option<Cast> {
    CASTS.iter().find_map(|(pattern, cast)| {
        let parts: Vec<&str> = pattern.split('.').collect();
        (parts.len() == path.len()
            && parts
                .iter()
                .zip(path)
                .all(|(p, k)| *p == "*" || *p == k.as_str()))
        .then_some(*cast)
    })
}

fn apply_cast(cast: Cast, text: &str) -> Result<Value, String> {
    match cast {
        Cast::Int => text
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| format!("strconv.Atoi: parsing {text:?}: invalid syntax")),
        Cast::Float => text
            .parse::<f64>()
            .map(Value::from)
            .map_err(|_| format!("strconv.ParseFloat: parsing {text:?}: invalid syntax")),
        Cast::Bool => match text.to_lowercase().as_str() {
            "y" | "yes" | "true" | "on" => Ok(Value::Bool(true)),
            "n" | "no" | "false" | "off" => Ok(Value::Bool(false)),
            _ => Err(format!("invalid boolean: {text}")),
        },
    }
}

/// Interpolates every string value of a parsed compose file in place.
pub fn interpolate(value: &mut Value, lookup: Lookup) -> Result<(), String> {
    walk(value, &mut Vec::new(), lookup)
}

fn walk(value: &mut Value, path: &mut Vec<String>, lookup: Lookup) -> Result<(), String> {
    match value {
        Value::String(text) => {
            let new = substitute(text, lookup).map_err(|err| {
                format!(
                    "invalid interpolation format for {}: {err:?}; you may need to escape any $ with another $",
                    path.join(".")
                )
            })?;
            if new == *text {
                return Ok(());
            }
            *value = match cast_for(path) {
                Some(cast) => apply_cast(cast, &new).map_err(|e| {
                    format!(
                        "error while interpolating {}: failed to cast to expected type: {e}",
                        path.join(".")
                    )
                })?,
                None => Value::String(new),
            };
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                path.push(key_text(key));
                walk(item, path, lookup)?;
                path.pop();
            }
        }
        Value::Sequence(items) => {
            for item in items {
                path.push("[]".into());
                walk(item, path, lookup)?;
                path.pop();
            }
        }
        Value::Tagged(tagged) => walk(&mut tagged.value, path, lookup)?,
        _ => {}
    }
    Ok(())
}

/// A mapping key as text (YAML allows numbers and booleans as keys).
pub fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env() -> HashMap<&'static str, &'static str> {
        HashMap::from([("FOO", "foo"), ("EMPTY", ""), ("N", "3")])
    }

    fn sub(text: &str) -> Result<String, String> {
        let env = env();
        substitute(text, &|k| env.get(k).map(|v| v.to_string()))
    }

    #[test]
    fn forms() {
        assert_eq!(sub("$FOO").unwrap(), "foo");
        assert_eq!(sub("${FOO}").unwrap(), "foo");
        assert_eq!(sub("x${FOO}y").unwrap(), "xfooy");
        assert_eq!(sub("$FOO-api").unwrap(), "foo-api");
        assert_eq!(sub("${UNSET}").unwrap(), "");
        assert_eq!(sub("$UNSET.x").unwrap(), ".x");
        assert_eq!(sub("${UNSET:-dflt}").unwrap(), "dflt");
        assert_eq!(sub("${EMPTY:-dflt}").unwrap(), "dflt");
        assert_eq!(sub("${EMPTY-dflt}").unwrap(), "");
        assert_eq!(sub("${UNSET-dflt}").unwrap(), "dflt");
        assert_eq!(sub("${FOO:-dflt}").unwrap(), "foo");
        assert_eq!(sub("${UNSET:-a b:c}").unwrap(), "a b:c");
        assert_eq!(sub("$$FOO costs $$5").unwrap(), "$FOO costs $5");
        assert_eq!(sub("no vars").unwrap(), "no vars");
    }

    #[test]
    fn errors() {
        assert_eq!(sub("a $ b").unwrap_err(), "a $ b");
        assert_eq!(sub("${FOO").unwrap_err(), "${FOO");
        assert_eq!(sub("$5").unwrap_err(), "$5");
        assert_eq!(sub("${}").unwrap_err(), "${}");
        assert_eq!(
            sub("${UNSET:?set it}").unwrap_err(),
            "required variable UNSET is missing a value: set it"
        );
        assert_eq!(
            sub("${EMPTY:?}").unwrap_err(),
            "required variable EMPTY is missing a value: "
        );
        assert_eq!(sub("${EMPTY?x}").unwrap(), "");
    }

    #[test]
    fn walks_values_and_casts() {
        let env = env();
        let lookup = |k: &str| env.get(k).map(|v| v.to_string());
        let mut doc: Value = serde_yaml::from_str(
            "services:\n  web:\n    image: \"busybox:${FOO}\"\n    deploy:\n      replicas: ${N}\n    read_only: \"${UNSET:-yes}\"\n    environment:\n      $FOO: $$HOME\n",
        )
        .unwrap();
        interpolate(&mut doc, &lookup).unwrap();
        let web = &doc["services"]["web"];
        assert_eq!(web["image"], Value::from("busybox:foo"));
        assert_eq!(web["deploy"]["replicas"], Value::from(3));
        assert_eq!(web["read_only"], Value::Bool(true));
        // Keys are never interpolated; `$$` leaves one `$`.
        assert_eq!(web["environment"]["$FOO"], Value::from("$HOME"));
    }

    #[test]
    fn errors_name_the_path() {
        let lookup = |_: &str| None;
        let mut doc: Value =
            serde_yaml::from_str("services:\n  web:\n    image: \"a $ b\"\n").unwrap();
        assert_eq!(
            interpolate(&mut doc, &lookup).unwrap_err(),
            "invalid interpolation format for services.web.image: \"a $ b\"; you may need to escape any $ with another $"
        );
        let mut doc: Value =
            serde_yaml::from_str("services:\n  web:\n    deploy:\n      replicas: ${X:-two}\n")
                .unwrap();
        assert_eq!(
            interpolate(&mut doc, &lookup).unwrap_err(),
            "error while interpolating services.web.deploy.replicas: failed to cast to expected type: strconv.Atoi: parsing \"two\": invalid syntax"
        );
    }
}
