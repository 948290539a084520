//! Generic resources (`--generic-resource SSD=1`), as SwarmKit's
//! scheduler hands them out: a node advertises kinds, either as a count
//! (`SSD=2`, discrete) or as named values (`GPU=uuid1`, `GPU=uuid2`); a
//! task reserves a count of a kind; the scheduler places it only where
//! that many are still free and assigns it exactly which (the named
//! values, or the count), recorded in `AssignedGenericResources`.

use std::collections::{BTreeMap, BTreeSet};

use flotilla_store::models::{
    GenericResources, GenericResourcesInner, GenericResourcesInnerDiscreteResourceSpec,
    GenericResourcesInnerNamedResourceSpec, Node, Task,
};

/// What a node offers, or what its tasks hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pool {
    pub discrete: BTreeMap<String, i64>,
    pub named: BTreeMap<String, BTreeSet<String>>,
}

impl Pool {
    pub fn from_resources(resources: &[GenericResourcesInner]) -> Pool {
        let mut pool = Pool::default();
        pool.add(resources);
        pool
    }

    pub fn add(&mut self, resources: &[GenericResourcesInner]) {
        for r in resources {
            if let Some(d) = &r.discrete_resource_spec {
                *self
                    .discrete
                    .entry(d.kind.clone().unwrap_or_default())
                    .or_default() += d.value.unwrap_or(0);
            }
            if let Some(n) = &r.named_resource_spec {
                self.named
                    .entry(n.kind.clone().unwrap_or_default())
                    .or_default()
                    .insert(n.value.clone().unwrap_or_default());
            }
        }
    }

    /// Takes back what [`Pool::add`] added.
    pub fn remove(&mut self, resources: &[GenericResourcesInner]) {
        for r in resources {
            if let Some(d) = &r.discrete_resource_spec {
                let kind = d.kind.clone().unwrap_or_default();
                if let Some(held) = self.discrete.get_mut(&kind) {
                    *held -= d.value.unwrap_or(0);
                    if *held == 0 {
                        self.discrete.remove(&kind);
                    }
                }
            }
            if let Some(n) = &r.named_resource_spec {
                let kind = n.kind.clone().unwrap_or_default();
                if let Some(values) = self.named.get_mut(&kind) {
                    values.remove(n.value.as_deref().unwrap_or_default());
                    if values.is_empty() {
                        self.named.remove(&kind);
                    }
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.discrete.is_empty() && self.named.is_empty()
    }
}

/// What a node advertises.
pub fn offered(node: &Node) -> Pool {
    let resources = node
        .description
        .as_ref()
        .and_then(|d| d.resources.as_ref())
        .and_then(|r| r.generic_resources.as_deref())
        .unwrap_or_default();
    Pool::from_resources(resources)
}

/// What a task asks for: a count per kind.
pub fn requested(task: &Task) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    let resources = task
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.reservations.as_ref())
        .and_then(|r| r.generic_resources.as_deref())
        .unwrap_or_default();
    for r in resources {
        if let Some(d) = &r.discrete_resource_spec {
            *out.entry(d.kind.clone().unwrap_or_default()).or_default() += d.value.unwrap_or(0);
        }
    }
    out
}

/// Which of `offer`'s resources not in `used` the task gets, or None when
/// the node has not enough of some kind. Named values are taken in order.
pub fn claim(
    offer: &Pool,
    used: &Pool,
    wanted: &BTreeMap<String, i64>,
) -> Option<GenericResources> {
    let mut out = Vec::new();
    for (kind, &count) in wanted {
        if let Some(values) = offer.named.get(kind) {
            let taken = used.named.get(kind);
            let free: Vec<&String> = values
                .iter()
                .filter(|v| taken.is_none_or(|t| !t.contains(*v)))
                .take(count.max(0) as usize)
                .collect();
            if (free.len() as i64) < count {
                return None;
            }
            out.extend(free.into_iter().map(|v| GenericResourcesInner {
                named_resource_spec: Some(GenericResourcesInnerNamedResourceSpec {
                    kind: Some(kind.clone()),
                    value: Some(v.clone()),
                }),
                discrete_resource_spec: None,
            }));
        } else {
            let have = offer.discrete.get(kind).copied().unwrap_or(0);
            let held = used.discrete.get(kind).copied().unwrap_or(0);
            if have - held < count {
                return None;
            }
            out.push(GenericResourcesInner {
                named_resource_spec: None,
                discrete_resource_spec: Some(GenericResourcesInnerDiscreteResourceSpec {
                    kind: Some(kind.clone()),
                    value: Some(count),
                }),
            });
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(kind: &str, value: &str) -> GenericResourcesInner {
        GenericResourcesInner {
            named_resource_spec: Some(GenericResourcesInnerNamedResourceSpec {
                kind: Some(kind.into()),
                value: Some(value.into()),
            }),
            discrete_resource_spec: None,
        }
    }

    fn discrete(kind: &str, value: i64) -> GenericResourcesInner {
        GenericResourcesInner {
            named_resource_spec: None,
            discrete_resource_spec: Some(GenericResourcesInnerDiscreteResourceSpec {
                kind: Some(kind.into()),
                value: Some(value),
            }),
        }
    }

    #[test]
    fn named_values_and_counts_are_handed_out_until_none_is_left() {
        let offer =
            Pool::from_resources(&[named("GPU", "g1"), named("GPU", "g2"), discrete("SSD", 2)]);
        let want = BTreeMap::from([("GPU".to_string(), 1), ("SSD".to_string(), 1)]);
        let first = claim(&offer, &Pool::default(), &want).unwrap();
        assert_eq!(first, vec![named("GPU", "g1"), discrete("SSD", 1)]);
        let used = Pool::from_resources(&first);
        let second = claim(&offer, &used, &want).unwrap();
        assert_eq!(second, vec![named("GPU", "g2"), discrete("SSD", 1)]);
        let mut both = used.clone();
        both.add(&second);
        assert_eq!(claim(&offer, &both, &want), None);
    }
}
