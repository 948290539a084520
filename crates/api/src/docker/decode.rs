//! Request bodies decoded as the Docker daemon decodes them: with Go's
//! encoding/json, which matches an object's keys to a struct's fields
//! case-insensitively (an exact match first, then any other case), ignores
//! keys that match no field, and treats `null` as "not given".
//!
//! bollard's models spell fields as the Engine API's swagger does and serde
//! matches them exactly, so docker-py's `{"Mode": {"replicated": {…}}}`
//! would otherwise lose its lowercase key. Rather than a list of known
//! spellings, [`GoJson`] wraps a parsed value and, wherever the target type
//! asks for a struct, renames each key to the field it names under Go's
//! rule. Everything else is `serde_json::Value`'s own decoding.

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess,
    Visitor,
};
use serde_json::{Map, Value};

/// Decodes `value` into `T` under Go's rules for keys.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, serde_json::Error> {
    T::deserialize(GoJson(value))
}

/// A JSON value that decodes with Go's case-insensitive keys.
struct GoJson(Value);

/// The field `key` names among `fields`: itself when spelled exactly, else
/// the first field equal to it without regard to case, as Go picks it.
fn field_for<'a>(key: &'a str, fields: &'static [&'static str]) -> &'a str {
    if fields.contains(&key) {
        return key;
    }
    fields
        .iter()
        .find(|f| f.eq_ignore_ascii_case(key) || unicode_fold_eq(f, key))
        .copied()
        .unwrap_or(key)
}

/// Go folds Unicode case too; only a non-ASCII key can need it.
fn unicode_fold_eq(a: &str, b: &str) -> bool {
    !b.is_ascii() && a.to_lowercase() == b.to_lowercase()
}

/// Renames an object's keys to the struct's fields. When two keys name one
/// field (`"Name"` and `"name"`), Go keeps the one that comes last; a JSON
/// object has no order once parsed, so the exact spelling wins here.
fn rename_keys(map: Map<String, Value>, fields: &'static [&'static str]) -> Map<String, Value> {
    let mut out = Map::with_capacity(map.len());
    let mut folded = Vec::new();
    for (key, value) in map {
        let field = field_for(&key, fields);
        if field == key {
            out.insert(key, value);
        } else {
            folded.push((field.to_string(), value));
        }
    }
    for (field, value) in folded {
        out.entry(field).or_insert(value);
    }
    out
}

macro_rules! forward_to_value {
    ($($method:ident)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
                self.0.$method(visitor)
            }
        )*
    };
}

impl<'de> Deserializer<'de> for GoJson {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Object(map) => visitor.visit_map(Entries::new(map)),
            Value::Array(items) => visitor.visit_seq(Items(items.into_iter())),
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            other => visitor.visit_some(GoJson(other)),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Array(items) => visitor.visit_seq(Items(items.into_iter())),
            other => other.deserialize_seq(visitor),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Object(map) => visitor.visit_map(Entries::new(map)),
            other => other.deserialize_map(visitor),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Object(map) => visitor.visit_map(Entries::new(rename_keys(map, fields))),
            other => other.deserialize_struct(name, fields, visitor),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_enum(name, variants, visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_unit()
    }

    forward_to_value! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char deserialize_str
        deserialize_string deserialize_bytes deserialize_byte_buf deserialize_unit
        deserialize_identifier
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_unit_struct(name, visitor)
    }
}

/// An object's entries, each value decoded as [`GoJson`] in turn.
struct Entries {
    iter: serde_json::map::IntoIter,
    value: Option<Value>,
}

impl Entries {
    fn new(map: Map<String, Value>) -> Entries {
        Entries {
            iter: map.into_iter(),
            value: None,
        }
    }
}

impl<'de> MapAccess<'de> for Entries {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        match self.iter.next() {
            Some((key, value)) => {
                self.value = Some(value);
                let key: de::value::StringDeserializer<serde_json::Error> = key.into_deserializer();
                seed.deserialize(key).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<S::Value, Self::Error> {
        let value = self
            .value
            .take()
            .ok_or_else(|| de::Error::custom("a value asked for before its key"))?;
        seed.deserialize(GoJson(value))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

/// An array's items, each decoded as [`GoJson`].
struct Items(std::vec::IntoIter<Value>);

impl<'de> SeqAccess<'de> for Items {
    type Error = serde_json::Error;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, Self::Error> {
        self.0
            .next()
            .map(|value| seed.deserialize(GoJson(value)))
            .transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::ServiceSpec;
    use serde_json::json;

    fn spec(v: Value) -> ServiceSpec {
        from_value(v).expect("decodes")
    }

    #[test]
    fn docker_py_lowercase_modes_are_kept() {
        // docker-py's ServiceMode sends the mode's key in lower case.
        let s = spec(json!({"Name": "web", "Mode": {"replicated": {"Replicas": 5}}}));
        let mode = s.mode.expect("mode");
        assert_eq!(mode.replicated.and_then(|r| r.replicas), Some(5));
        let s = spec(json!({"Name": "agent", "Mode": {"global": {}}}));
        let mode = s.mode.expect("mode");
        assert!(mode.global.is_some() && mode.replicated.is_none());
    }

    #[test]
    fn any_case_names_a_field_and_the_exact_one_wins() {
        let s = spec(json!({
            "name": "lower",
            "TASKTEMPLATE": {"containerspec": {"image": "busybox", "Healthcheck": {"Retries": 3}}},
            "labels": {"Keep": "Case"}
        }));
        assert_eq!(s.name.as_deref(), Some("lower"));
        let c = s.task_template.unwrap().container_spec.unwrap();
        assert_eq!(c.image.as_deref(), Some("busybox"));
        assert_eq!(c.health_check.and_then(|h| h.retries), Some(3));
        // Map keys are data, not fields: left as they are.
        assert_eq!(
            s.labels.unwrap().get("Keep").map(String::as_str),
            Some("Case")
        );

        let s = spec(json!({"name": "folded", "Name": "exact"}));
        assert_eq!(s.name.as_deref(), Some("exact"));
    }

    #[test]
    fn nulls_and_unknown_keys_are_ignored_and_wrong_types_refused() {
        let s = spec(json!({"Name": null, "NoSuchField": [1, 2], "Labels": null}));
        assert!(s.name.is_none() && s.labels.is_none());
        let err = from_value::<ServiceSpec>(json!({"Name": 7})).unwrap_err();
        assert!(err.to_string().contains("invalid type"), "{err}");
        let err = from_value::<ServiceSpec>(json!({"mode": {"replicated": {"replicas": "5"}}}))
            .unwrap_err();
        assert!(err.to_string().contains("invalid type"), "{err}");
    }

    #[test]
    fn arrays_of_structs_fold_too() {
        let s = spec(json!({
            "EndpointSpec": {"ports": [{"targetport": 80, "PublishedPort": 8080}]}
        }));
        let ports = s.endpoint_spec.unwrap().ports.unwrap();
        assert_eq!(ports[0].target_port, Some(80));
        assert_eq!(ports[0].published_port, Some(8080));
    }
}
