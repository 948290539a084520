//! Docker's `filters` query parameter: JSON mapping each filter name to its
//! values, either `{"name": {"web": true}}` or the older `{"name": ["web"]}`.

use std::collections::HashMap;

use crate::error::ApiError;

#[derive(Debug, Default, Clone)]
pub struct Filters(HashMap<String, Vec<String>>);

impl Filters {
    pub fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Filters, ApiError> {
        let Some(raw) = raw.filter(|r| !r.is_empty()) else {
            return Ok(Filters::default());
        };
        let value: serde_json::Value = serde_json::from_str(raw)
            .map_err(|e| ApiError::bad_request(format!("invalid filter: {e}")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| ApiError::bad_request("invalid filter: expected a JSON object"))?;
        let mut out = HashMap::new();
        for (key, v) in obj {
            if !allowed.contains(&key.as_str()) {
                return Err(ApiError::bad_request(format!("invalid filter '{key}'")));
            }
            let values: Vec<String> = match v {
                serde_json::Value::Object(m) => m.keys().cloned().collect(),
                serde_json::Value::Array(a) => a
                    .iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect(),
                _ => return Err(ApiError::bad_request(format!("invalid filter '{key}'"))),
            };
            out.insert(key.clone(), values);
        }
        Ok(Filters(out))
    }

    pub fn get(&self, key: &str) -> Option<&[String]> {
        self.0.get(key).map(Vec::as_slice).filter(|v| !v.is_empty())
    }

    /// True when the filter is absent or any of its values satisfies `f`.
    pub fn any(&self, key: &str, f: impl Fn(&str) -> bool) -> bool {
        self.get(key).is_none_or(|vals| vals.iter().any(|v| f(v)))
    }

    /// `label` filters: `key` (present) or `key=value`, all must hold.
    pub fn labels(&self, key: &str, labels: Option<&HashMap<String, String>>) -> bool {
        self.get(key).is_none_or(|vals| {
            vals.iter().all(|want| match want.split_once('=') {
                Some((k, v)) => labels.and_then(|l| l.get(k)).is_some_and(|x| x == v),
                None => labels.is_some_and(|l| l.contains_key(want.as_str())),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms() {
        let f = Filters::parse(Some(r#"{"name":{"web":true}}"#), &["name"]).unwrap();
        assert_eq!(f.get("name").unwrap(), &["web".to_string()]);
        let f = Filters::parse(Some(r#"{"name":["a","b"]}"#), &["name"]).unwrap();
        assert!(f.any("name", |v| v == "b"));
        assert!(Filters::parse(Some(r#"{"colour":["x"]}"#), &["name"]).is_err());
        assert!(Filters::parse(Some("nope"), &["name"]).is_err());
    }
}
