//! Creating, relabelling and removing secrets and configs, with SwarmKit's
//! checks and words: the name rules, the size limits, data that never
//! changes once created.

use std::collections::BTreeMap;

use flotilla_store::secrets::{DataKind, DataObject};
use flotilla_store::{ids, Kind, Op, Store};

use crate::error::{Error, Result};

/// What a create or update request carries (Docker's SecretSpec /
/// ConfigSpec), decoded by the API.
#[derive(Debug, Clone, Default)]
pub struct DataSpec {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Base64, as the API carries it.
    pub data: Option<String>,
    /// A secret driver (external secret stores).
    pub driver: Option<String>,
    /// The template driver.
    pub templating: Option<String>,
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidSpec(msg.into())
}

/// SwarmKit's name rule: up to 64 of [a-zA-Z0-9-_.], starting and ending
/// with a letter or digit.
fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// The size of base64 data once decoded, or why it is not base64.
fn decoded_len(data: &str) -> std::result::Result<usize, String> {
    let clean: Vec<u8> = data.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let valid = clean
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'='));
    if !valid || !clean.len().is_multiple_of(4) {
        return Err("the data is not valid base64".into());
    }
    let pad = clean.iter().rev().take_while(|c| **c == b'=').count();
    if pad > 2 {
        return Err("the data is not valid base64".into());
    }
    Ok(clean.len() / 4 * 3 - pad)
}

/// Checks a create request.
pub fn validate(kind: DataKind, spec: &DataSpec) -> Result<()> {
    if !valid_name(&spec.name) {
        return Err(invalid(
            "invalid name, only 64 [a-zA-Z0-9-_.] characters allowed, and the start and end character must be [a-zA-Z0-9]",
        ));
    }
    if spec.driver.as_deref().is_some_and(|d| !d.is_empty()) {
        return Err(Error::InvalidArgument(format!(
            "{} drivers are not supported by Flotilla: the data goes in the request",
            kind.name()
        )));
    }
    if let Some(t) = spec.templating.as_deref() {
        if !t.is_empty() && t != "golang" {
            return Err(Error::InvalidArgument(format!(
                "template driver {t:?} is not supported: the one template driver is golang"
            )));
        }
    }
    let size = decoded_len(spec.data.as_deref().unwrap_or_default()).map_err(invalid)?;
    if size == 0 || size >= kind.max_size() {
        return Err(invalid(format!(
            "{} data must be larger than 0 and less than {} KiB",
            kind.name(),
            kind.max_size() / 1024
        )));
    }
    Ok(())
}

/// `POST /secrets/create` or `/configs/create`: the new ID.
pub async fn create(store: &Store, kind: DataKind, spec: DataSpec) -> Result<String> {
    validate(kind, &spec)?;
    let now = ids::now();
    let id = ids::new_id();
    let object = DataObject {
        id: id.clone(),
        version: 0,
        created_at: now.clone(),
        updated_at: now,
        name: spec.name,
        labels: spec.labels,
        data: spec.data.unwrap_or_default(),
        templating: spec.templating.filter(|t| !t.is_empty()),
    };
    store
        .propose_one(Op::CreateData {
            kind,
            object: Box::new(object),
        })
        .await?;
    Ok(id)
}

fn lookup(store: &Store, kind: DataKind, key: &str) -> Result<DataObject> {
    store
        .read(|s| s.find_data(kind, key).cloned())
        .ok_or_else(|| Error::not_found(Kind::from(kind), key))
}

/// `POST /secrets/{id}/update?version=N`: only the labels may change, as
/// SwarmKit allows.
pub async fn update(
    store: &Store,
    kind: DataKind,
    key: &str,
    version: u64,
    spec: DataSpec,
) -> Result<()> {
    let current = lookup(store, kind, key)?;
    let data_changed = spec
        .data
        .as_deref()
        .is_some_and(|d| !d.is_empty() && d != current.data);
    let templating_changed = spec.templating.as_deref().unwrap_or_default()
        != current.templating.as_deref().unwrap_or_default();
    if spec.name != current.name || data_changed || templating_changed {
        return Err(invalid("only updates to Labels are allowed"));
    }
    store
        .propose_one(Op::UpdateDataLabels {
            kind,
            id: current.id,
            expected: version,
            labels: spec.labels,
            updated_at: ids::now(),
        })
        .await?;
    Ok(())
}

/// `DELETE /secrets/{id}`.
pub async fn remove(store: &Store, kind: DataKind, key: &str) -> Result<()> {
    let current = lookup(store, kind, key)?;
    store
        .propose_one(Op::RemoveData {
            kind,
            id: current.id,
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, data: &str) -> DataSpec {
        DataSpec {
            name: name.into(),
            data: Some(data.into()),
            ..Default::default()
        }
    }

    #[test]
    fn names_sizes_and_drivers_are_checked() {
        assert!(validate(DataKind::Secret, &spec("db_password", "c2VjcmV0")).is_ok());
        for bad in ["", "-x", "x-", "a b", &"x".repeat(65)] {
            let e = validate(DataKind::Secret, &spec(bad, "c2VjcmV0")).unwrap_err();
            assert!(e.to_string().contains("invalid name"), "{bad}: {e}");
        }
        let e = validate(DataKind::Secret, &spec("s", "")).unwrap_err();
        assert!(
            e.to_string()
                .contains("larger than 0 and less than 500 KiB"),
            "{e}"
        );
        let big = "A".repeat(500 * 1024 / 3 * 4 + 8);
        assert!(validate(DataKind::Secret, &spec("s", &big)).is_err());
        assert!(
            validate(DataKind::Config, &spec("c", &big)).is_ok(),
            "a config may be bigger"
        );
        let e = validate(DataKind::Secret, &spec("s", "not base64!")).unwrap_err();
        assert!(e.to_string().contains("base64"), "{e}");
        let mut driven = spec("s", "c2VjcmV0");
        driven.driver = Some("vault".into());
        assert!(validate(DataKind::Secret, &driven).is_err());
        let mut templated = spec("s", "c2VjcmV0");
        templated.templating = Some("golang".into());
        assert!(validate(DataKind::Secret, &templated).is_ok());
        assert_eq!(decoded_len("c2VjcmV0"), Ok(6));
        assert_eq!(decoded_len("c2VjcmU="), Ok(5));
    }
}
