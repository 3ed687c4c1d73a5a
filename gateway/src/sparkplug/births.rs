//! A bounded cache of Sparkplug births (NBIRTH/DBIRTH metric definitions: name, alias,
//! datatype), persisted in sled, to resolve aliases and datatypes of data messages.
//!
//! Each key (`group/node` for a node, `group/node/device` for a device) keeps a short history
//! of births, each stamped with a *position*: the buffer offset of the birth record (uplink) or
//! a running counter (live ingest). [`BirthCache::resolve`] returns the newest birth *before* a
//! position, so a backlog read after a rebirth is resolved with the aliases that were valid when
//! it was written, also after a restart that re-reads records past newer births.
//!
//! Bounds: at most `max_keys` keys, `history` births per key and `max_definitions` metric
//! definitions in all; the least recently born keys are evicted first (counted).

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::payload::{DataType, Payload};
use crate::state::{StateStore, Tree};

/// One metric definition from a birth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<u64>,
    pub datatype: DataType,
}

/// The metric definitions of one NBIRTH or DBIRTH.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Birth {
    /// Buffer offset (uplink) or arrival counter (ingest) of the birth.
    pub position: u64,
    /// Payload timestamp of the birth.
    #[serde(default)]
    pub timestamp: Option<u64>,
    /// `bdSeq` of an NBIRTH.
    #[serde(default)]
    pub bd_seq: Option<u64>,
    pub metrics: Vec<MetricDef>,
    #[serde(skip)]
    by_alias: HashMap<u64, usize>,
    #[serde(skip)]
    by_name: HashMap<String, usize>,
}

impl Birth {
    /// The definitions of a birth payload; metrics without a name or datatype are skipped
    /// (returned as the second value, for counting).
    pub fn from_payload(p: &Payload, position: u64) -> (Birth, usize) {
        let mut skipped = 0;
        let mut metrics = Vec::with_capacity(p.metrics.len());
        let mut bd_seq = None;
        for m in &p.metrics {
            match (&m.name, m.datatype) {
                (Some(name), Some(datatype)) => {
                    if name == "bdSeq" {
                        bd_seq = m.value.as_ref().and_then(|v| v.as_f64()).map(|f| f as u64);
                    }
                    metrics.push(MetricDef {
                        name: name.clone(),
                        alias: m.alias,
                        datatype,
                    });
                }
                _ => skipped += 1,
            }
        }
        let mut b = Birth {
            position,
            timestamp: p.timestamp,
            bd_seq,
            metrics,
            ..Birth::default()
        };
        b.index();
        (b, skipped)
    }

    fn index(&mut self) {
        self.by_alias = self
            .metrics
            .iter()
            .enumerate()
            .filter_map(|(i, m)| m.alias.map(|a| (a, i)))
            .collect();
        self.by_name = self
            .metrics
            .iter()
            .enumerate()
            .map(|(i, m)| (m.name.clone(), i))
            .collect();
    }

    pub fn by_alias(&self, alias: u64) -> Option<&MetricDef> {
        self.by_alias.get(&alias).map(|i| &self.metrics[*i])
    }

    pub fn by_name(&self, name: &str) -> Option<&MetricDef> {
        self.by_name.get(name).map(|i| &self.metrics[*i])
    }
}

/// The cache key of a node or device.
pub fn key(group: &str, node: &str, device: Option<&str>) -> String {
    match device {
        Some(d) => format!("{group}/{node}/{d}"),
        None => format!("{group}/{node}"),
    }
}

/// Bounds of a [`BirthCache`].
#[derive(Debug, Clone, Copy)]
pub struct CacheLimits {
    pub max_keys: usize,
    pub history: usize,
    pub max_definitions: usize,
}

impl Default for CacheLimits {
    fn default() -> Self {
        CacheLimits {
            max_keys: 4096,
            history: 4,
            max_definitions: 200_000,
        }
    }
}

/// See the module docs.
pub struct BirthCache {
    tree: Option<Tree>,
    limits: CacheLimits,
    entries: HashMap<String, Vec<Arc<Birth>>>,
    definitions: usize,
    evicted: u64,
}

impl BirthCache {
    /// A cache persisted in `tree` (loaded now; unreadable entries are dropped), or in memory
    /// only with `None`.
    pub fn open(tree: Option<Tree>, limits: CacheLimits) -> BirthCache {
        let mut c = BirthCache {
            tree,
            limits,
            entries: HashMap::new(),
            definitions: 0,
            evicted: 0,
        };
        let Some(tree) = c.tree.clone() else {
            return c;
        };
        for item in tree.iter() {
            let Ok((k, v)) = item else { continue };
            let key = String::from_utf8_lossy(&k).into_owned();
            match serde_json::from_slice::<Vec<Birth>>(&v) {
                Ok(mut births) => {
                    births.truncate(limits.history.max(1));
                    let births: Vec<Arc<Birth>> = births
                        .into_iter()
                        .map(|mut b| {
                            b.index();
                            Arc::new(b)
                        })
                        .collect();
                    c.definitions += births.iter().map(|b| b.metrics.len()).sum::<usize>();
                    c.entries.insert(key, births);
                }
                Err(e) => {
                    tracing::warn!(%key, error = %e, "sparkplug birth cache: dropping an unreadable entry");
                    let _ = tree.remove(k);
                }
            }
        }
        c.enforce(None);
        c
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keys evicted to stay within the limits since start.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Records a birth (replacing any at the same or a later position: a re-read after a
    /// restart).
    pub fn record(&mut self, key: &str, birth: Birth) {
        let history = self.limits.history.max(1);
        let list = self.entries.entry(key.to_string()).or_default();
        list.retain(|b| b.position < birth.position);
        list.push(Arc::new(birth));
        while list.len() > history {
            list.remove(0);
        }
        self.persist(key);
        self.enforce(Some(key));
    }

    /// The newest birth of `key` before `position`.
    pub fn resolve(&self, key: &str, position: u64) -> Option<Arc<Birth>> {
        self.entries
            .get(key)?
            .iter()
            .rev()
            .find(|b| b.position < position)
            .cloned()
    }

    /// The newest birth of `key`.
    pub fn latest(&self, key: &str) -> Option<Arc<Birth>> {
        self.entries.get(key)?.last().cloned()
    }

    fn persist(&self, key: &str) {
        let (Some(tree), Some(list)) = (&self.tree, self.entries.get(key)) else {
            return;
        };
        let births: Vec<&Birth> = list.iter().map(|b| b.as_ref()).collect();
        if let Err(e) = StateStore::put_json(tree, key, &births) {
            tracing::warn!(%key, error = %e, "sparkplug birth cache: cannot persist a birth");
        }
    }

    /// Evicts the least recently born keys (never `keep`) until within the limits.
    fn enforce(&mut self, keep: Option<&str>) {
        self.definitions = self
            .entries
            .values()
            .flatten()
            .map(|b| b.metrics.len())
            .sum();
        while self.entries.len() > self.limits.max_keys
            || self.definitions > self.limits.max_definitions
        {
            let victim = self
                .entries
                .iter()
                .filter(|(k, _)| Some(k.as_str()) != keep)
                .min_by_key(|(_, v)| v.last().map(|b| b.position).unwrap_or(0))
                .map(|(k, _)| k.clone());
            let Some(victim) = victim else { break };
            if let Some(list) = self.entries.remove(&victim) {
                self.definitions -= list.iter().map(|b| b.metrics.len()).sum::<usize>();
            }
            if let Some(tree) = &self.tree {
                let _ = tree.remove(victim.as_bytes());
            }
            self.evicted += 1;
            tracing::warn!(key = %victim, "sparkplug birth cache full: evicted the least recently born node/device");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sparkplug::payload::{Metric, MetricValue};

    fn birth(position: u64, names: &[(&str, u64)]) -> Birth {
        let mut p = Payload::new(1, Some(0));
        for (n, a) in names {
            p.metrics
                .push(Metric::new(*n, MetricValue::Int32(0)).with_alias(*a));
        }
        Birth::from_payload(&p, position).0
    }

    #[test]
    fn resolves_by_position_and_survives_reopen() {
        let store = StateStore::temporary().expect("store");
        let tree = store.tree("t").expect("tree");
        let mut c = BirthCache::open(Some(tree.clone()), CacheLimits::default());
        c.record("g/n", birth(10, &[("a", 1)]));
        c.record("g/n", birth(20, &[("b", 1)]));
        let name = |c: &BirthCache, pos| {
            c.resolve("g/n", pos)
                .and_then(|b| b.by_alias(1).map(|m| m.name.clone()))
        };
        assert_eq!(name(&c, 5), None);
        assert_eq!(name(&c, 15).as_deref(), Some("a"));
        assert_eq!(name(&c, 25).as_deref(), Some("b"));
        drop(c);
        let c = BirthCache::open(Some(tree), CacheLimits::default());
        assert_eq!(name(&c, 15).as_deref(), Some("a"));
        assert_eq!(name(&c, 25).as_deref(), Some("b"));
        assert_eq!(
            c.latest("g/n")
                .and_then(|b| b.by_name("b").map(|m| m.datatype)),
            Some(DataType::Int32)
        );
    }

    #[test]
    fn a_reread_birth_replaces_later_ones_and_history_is_bounded() {
        let limits = CacheLimits {
            max_keys: 2,
            history: 2,
            max_definitions: 5,
        };
        let mut c = BirthCache::open(None, limits);
        c.record("k", birth(1, &[("a", 1)]));
        c.record("k", birth(2, &[("b", 1)]));
        c.record("k", birth(3, &[("c", 1)]));
        assert!(c.resolve("k", 2).is_none(), "oldest dropped");
        // Re-reading position 2 after a restart drops 3.
        c.record("k", birth(2, &[("b2", 1)]));
        assert_eq!(
            c.latest("k")
                .and_then(|b| b.by_alias(1).map(|m| m.name.clone()))
                .as_deref(),
            Some("b2")
        );
        c.record("x", birth(4, &[("x", 1)]));
        c.record("y", birth(5, &[("y", 1)]));
        assert_eq!(c.len(), 2);
        assert!(c.latest("k").is_none(), "least recently born evicted");
        assert_eq!(c.evicted(), 1);
        c.record(
            "z",
            birth(6, &[("1", 1), ("2", 2), ("3", 3), ("4", 4), ("5", 5)]),
        );
        assert_eq!(c.len(), 1, "definition budget");
    }
}
