//! Placement constraints: `node.id==x`, `node.hostname!=y`, `node.role==manager`,
//! `node.labels.k==v`, `engine.labels.k==v`, `node.platform.os==linux`,
//! `node.platform.arch==x86_64`. Parsed when a service is created, so a
//! bad one is refused then, not discovered by the scheduler.

use flotilla_store::models::{Node, NodeSpecRoleEnum};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    pub key: String,
    pub equal: bool,
    pub value: String,
}

pub fn parse(expr: &str) -> Result<Constraint, String> {
    let (key, equal, value) = if let Some((k, v)) = expr.split_once("==") {
        (k, true, v)
    } else if let Some((k, v)) = expr.split_once("!=") {
        (k, false, v)
    } else {
        return Err(format!(
            "constraint expected one operator from ==, !=: {expr}"
        ));
    };
    let (key, value) = (key.trim(), value.trim());
    if key.is_empty()
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(format!("key '{key}' is invalid"));
    }
    if value.is_empty() || value.contains("==") || value.contains("!=") {
        return Err(format!("value '{value}' is invalid"));
    }
    if !is_attribute(key) {
        return Err(format!("constraint key '{key}' is not supported: expected node.id, node.hostname, node.role, node.platform.os, node.platform.arch, node.labels.<name> or engine.labels.<name>"));
    }
    Ok(Constraint {
        key: key.to_string(),
        equal,
        value: value.to_string(),
    })
}

pub fn parse_all(exprs: &[String]) -> Result<Vec<Constraint>, String> {
    exprs.iter().map(|e| parse(e)).collect()
}

/// Whether `key` names a node attribute constraints and placement
/// preferences can use.
pub fn is_attribute(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    matches!(
        lower.as_str(),
        "node.id" | "node.hostname" | "node.role" | "node.platform.os" | "node.platform.arch"
    ) || (lower.starts_with("node.labels.") && lower.len() > 12)
        || (lower.starts_with("engine.labels.") && lower.len() > 14)
}

/// A node's value of attribute `key` (see [`is_attribute`]); None when
/// the node has no such label.
pub fn attribute(node: &Node, key: &str) -> Option<String> {
    let lower = key.to_ascii_lowercase();
    match lower.as_str() {
        "node.id" => node.id.clone(),
        "node.hostname" => node.description.as_ref().and_then(|d| d.hostname.clone()),
        "node.role" => node.spec.as_ref().and_then(|s| s.role).map(|r| match r {
            NodeSpecRoleEnum::MANAGER => "manager".to_string(),
            _ => "worker".to_string(),
        }),
        "node.platform.os" => node
            .description
            .as_ref()
            .and_then(|d| d.platform.as_ref())
            .and_then(|p| p.os.clone()),
        "node.platform.arch" => node
            .description
            .as_ref()
            .and_then(|d| d.platform.as_ref())
            .and_then(|p| p.architecture.clone()),
        _ => {
            let (labels, name) = if lower.starts_with("node.labels.") {
                (
                    node.spec.as_ref().and_then(|s| s.labels.as_ref()),
                    &key[12..],
                )
            } else {
                (
                    node.description
                        .as_ref()
                        .and_then(|d| d.engine.as_ref())
                        .and_then(|e| e.labels.as_ref()),
                    &key[14..],
                )
            };
            labels.and_then(|l| l.get(name).cloned())
        }
    }
}

impl Constraint {
    pub fn matches(&self, node: &Node) -> bool {
        // IDs, hostnames and roles compare case-insensitively, as in SwarmKit;
        // a label that is absent never equals anything.
        let equal = attribute(node, &self.key).is_some_and(|a| a.eq_ignore_ascii_case(&self.value));
        equal == self.equal
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_store::models::{NodeDescription, NodeSpec};
    use std::collections::HashMap;

    fn node() -> Node {
        Node {
            id: Some("abc".into()),
            spec: Some(NodeSpec {
                role: Some(NodeSpecRoleEnum::WORKER),
                labels: Some(HashMap::from([("zone".to_string(), "east".to_string())])),
                ..Default::default()
            }),
            description: Some(NodeDescription {
                hostname: Some("worker1".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn parses_and_matches() {
        let n = node();
        assert!(parse("node.hostname==worker1").unwrap().matches(&n));
        assert!(!parse("node.hostname!=worker1").unwrap().matches(&n));
        assert!(parse("node.role == worker").unwrap().matches(&n));
        assert!(parse("node.labels.zone==east").unwrap().matches(&n));
        assert!(parse("node.labels.rack!=r1").unwrap().matches(&n));
        assert!(!parse("node.labels.rack==r1").unwrap().matches(&n));
        assert!(parse("node.id==ABC").unwrap().matches(&n));
    }

    #[test]
    fn rejects_bad_syntax() {
        assert!(parse("node.hostname=worker1").is_err());
        assert!(parse("==x").is_err());
        assert!(parse("node.hostname==").is_err());
        assert!(parse("node.colour==red").is_err());
    }
}
