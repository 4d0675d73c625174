//! The per-document CRDT: what a document *is* in the store, and how writes
//! merge into it.
//!
//! * Each field is a last-writer-wins register stamped `(hlc, origin)`; a
//!   field may also be *unset* (removed from a document database).
//! * A delete is a tombstone stamp. A field is visible only when its stamp is
//!   newer than the tombstone: a later write resurrects the document (with
//!   the fields written after the delete), an earlier one does not.
//! * A counter field holds one entry per origin: that origin's cumulative
//!   contribution, last-writer-wins per origin. Its value is the sum of the
//!   entries newer than the tombstone. The hub turns each source delta into
//!   a new cumulative entry (see `Store::apply_source`), so the replicated
//!   [`Write`]s are state, not operations.
//!
//! Every rule is a max over stamps, so merging is commutative, associative
//! and idempotent: replicas that saw the same writes in any order, with any
//! duplicates, hold identical state (property-tested in `tests/`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

use crate::stamp::Stamp;

/// One replicated write to one document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Write {
    pub stamp: Stamp,
    #[serde(flatten)]
    pub kind: WriteKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum WriteKind {
    Set {
        /// field → new value (JSON null is a value).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        fields: BTreeMap<String, Value>,
        /// Fields removed from the document (a MongoDB `$unset`, a column
        /// that vanished from an image).
        #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
        unset: BTreeSet<String>,
        /// counter field → the origin's new cumulative contribution.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        counters: BTreeMap<String, f64>,
        /// The counter totals are what a copy (initial sync) read.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        copied: bool,
    },
    Delete,
}

#[derive(Debug, Clone, PartialEq)]
struct Register {
    /// `None`: the field was unset.
    value: Option<Value>,
    stamp: Stamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CounterEntry {
    #[serde(rename = "n")]
    total: f64,
    #[serde(rename = "t")]
    hlc: u64,
    /// Written by a copy: only the origin's commits after the copy pass it
    /// (see `Store::apply_source`).
    #[serde(rename = "k", default, skip_serializing_if = "std::ops::Not::not")]
    copied: bool,
}

/// The merge state of one document.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(into = "StoredState", from = "StoredState")]
pub struct DocState {
    #[serde(rename = "f", default, skip_serializing_if = "BTreeMap::is_empty")]
    fields: BTreeMap<String, Register>,
    #[serde(rename = "c", default, skip_serializing_if = "BTreeMap::is_empty")]
    counters: BTreeMap<String, BTreeMap<String, CounterEntry>>,
    #[serde(rename = "d", default, skip_serializing_if = "Option::is_none")]
    tombstone: Option<Stamp>,
}

/// How a [`DocState`] is stored: most fields of a document share a few
/// stamps, so stamps are listed once (`s`) and each field refers to one by
/// index: `"name": [i, value]`, or `[i]` when unset. Less than half the
/// bytes of the plain form, written for every change.
#[derive(Serialize, Deserialize)]
struct StoredState {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    s: Vec<Stamp>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    f: BTreeMap<String, StoredRegister>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    c: BTreeMap<String, BTreeMap<String, CounterEntry>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    d: Option<Stamp>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum StoredRegister {
    Set(usize, Value),
    Unset((usize,)),
}

/// `[i, value]` or `[i]`, read in one pass (serde's derived untagged enums
/// buffer every value, then try each variant in turn).
impl<'de> Deserialize<'de> for StoredRegister {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Register;
        impl<'de> serde::de::Visitor<'de> for Register {
            type Value = StoredRegister;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("[stamp index] or [stamp index, value]")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<StoredRegister, A::Error> {
                let i: usize = seq
                    .next_element()?
                    .ok_or_else(|| serde::de::Error::invalid_length(0, &self))?;
                Ok(match seq.next_element::<Value>()? {
                    Some(v) => StoredRegister::Set(i, v),
                    None => StoredRegister::Unset((i,)),
                })
            }
        }
        d.deserialize_seq(Register)
    }
}

impl From<DocState> for StoredState {
    fn from(d: DocState) -> Self {
        let mut stamps: Vec<Stamp> = Vec::new();
        let mut f = BTreeMap::new();
        for (name, reg) in d.fields {
            let i = match stamps.iter().position(|s| *s == reg.stamp) {
                Some(i) => i,
                None => {
                    stamps.push(reg.stamp);
                    stamps.len() - 1
                }
            };
            f.insert(
                name,
                match reg.value {
                    Some(v) => StoredRegister::Set(i, v),
                    None => StoredRegister::Unset((i,)),
                },
            );
        }
        StoredState {
            s: stamps,
            f,
            c: d.counters,
            d: d.tombstone,
        }
    }
}

impl From<StoredState> for DocState {
    fn from(st: StoredState) -> Self {
        let stamp = |i: usize| st.s.get(i).cloned().unwrap_or_else(|| Stamp::new(0, ""));
        let fields =
            st.f.into_iter()
                .map(|(name, r)| {
                    let (i, value) = match r {
                        StoredRegister::Set(i, v) => (i, Some(v)),
                        StoredRegister::Unset((i,)) => (i, None),
                    };
                    (
                        name,
                        Register {
                            value,
                            stamp: stamp(i),
                        },
                    )
                })
                .collect();
        DocState {
            fields,
            counters: st.c,
            tombstone: st.d,
        }
    }
}

impl DocState {
    /// Merges one write. Returns whether anything changed.
    pub fn apply(&mut self, write: &Write) -> bool {
        match &write.kind {
            WriteKind::Delete => {
                if self.tombstone.as_ref().is_some_and(|t| *t >= write.stamp) {
                    return false;
                }
                self.tombstone = Some(write.stamp.clone());
                true
            }
            WriteKind::Set {
                fields,
                unset,
                counters,
                copied,
            } => {
                let mut changed = false;
                let values = fields
                    .iter()
                    .map(|(k, v)| (k, Some(v)))
                    .chain(unset.iter().map(|k| (k, None)));
                for (name, value) in values {
                    let newer = self.fields.get(name).is_none_or(|r| r.stamp < write.stamp);
                    if newer {
                        self.fields.insert(
                            name.clone(),
                            Register {
                                value: value.cloned(),
                                stamp: write.stamp.clone(),
                            },
                        );
                        changed = true;
                    }
                }
                for (name, total) in counters {
                    let entries = self.counters.entry(name.clone()).or_default();
                    let newer = entries
                        .get(&write.stamp.origin)
                        .is_none_or(|e| e.hlc < write.stamp.hlc);
                    if newer {
                        entries.insert(
                            write.stamp.origin.clone(),
                            CounterEntry {
                                total: *total,
                                hlc: write.stamp.hlc,
                                copied: *copied,
                            },
                        );
                        changed = true;
                    }
                }
                changed
            }
        }
    }

    fn visible(&self, stamp: &Stamp) -> bool {
        self.tombstone.as_ref().is_none_or(|t| stamp > t)
    }

    fn entry_visible(&self, origin: &str, hlc: u64) -> bool {
        self.visible(&Stamp::new(hlc, origin))
    }

    /// Whether the document exists (has never been deleted, or was written
    /// after its latest delete).
    pub fn exists(&self) -> bool {
        match &self.tombstone {
            None => !self.fields.is_empty() || !self.counters.is_empty(),
            Some(_) => {
                self.fields.values().any(|r| self.visible(&r.stamp))
                    || self.counters.values().any(|es| {
                        es.iter()
                            .any(|(origin, e)| self.entry_visible(origin, e.hlc))
                    })
            }
        }
    }

    /// The document as providers see it, or `None` when deleted.
    pub fn materialize(&self) -> Option<Map<String, Value>> {
        if !self.exists() {
            return None;
        }
        let mut doc = Map::new();
        for (name, reg) in &self.fields {
            if let (Some(v), true) = (&reg.value, self.visible(&reg.stamp)) {
                doc.insert(name.clone(), v.clone());
            }
        }
        for name in self.counters.keys() {
            if let Some(v) = self.counter_value(name) {
                doc.insert(name.clone(), number(v));
            }
        }
        Some(doc)
    }

    /// The last value written to a plain field, visible or not (a deleted
    /// document keeps its fields' registers under the tombstone).
    pub fn last_value(&self, name: &str) -> Option<&Value> {
        self.fields.get(name)?.value.as_ref()
    }

    /// A counter's visible value (sum of the visible entries), if any entry is visible.
    pub fn counter_value(&self, name: &str) -> Option<f64> {
        let entries = self.counters.get(name)?;
        let mut any = false;
        let mut sum = 0.0;
        for (origin, e) in entries {
            if self.entry_visible(origin, e.hlc) {
                any = true;
                sum += e.total;
            }
        }
        any.then_some(sum)
    }

    /// An origin's visible cumulative contribution to a counter (0 if none,
    /// or if it predates the latest delete).
    pub fn counter_contribution(&self, name: &str, origin: &str) -> f64 {
        self.counters
            .get(name)
            .and_then(|es| es.get(origin))
            .filter(|e| self.entry_visible(origin, e.hlc))
            .map(|e| e.total)
            .unwrap_or(0.0)
    }

    /// The hlc of `origin`'s entry of a counter, and whether a copy wrote
    /// it, if it has one.
    pub fn counter_entry(&self, name: &str, origin: &str) -> Option<(u64, bool)> {
        let e = self.counters.get(name)?.get(origin)?;
        Some((e.hlc, e.copied))
    }

    /// The names of the counter fields this document has.
    pub fn counter_names(&self) -> impl Iterator<Item = &str> {
        self.counters.keys().map(String::as_str)
    }

    /// Whether a plain field has a register the document shows (a value,
    /// or an unset newer than the last delete): one under the tombstone is
    /// the deleted document's, not this one's.
    pub fn has_visible_register(&self, name: &str) -> bool {
        self.fields
            .get(name)
            .is_some_and(|r| self.visible(&r.stamp))
    }

    /// The stamp of a field's current register, if it has one.
    pub fn field_stamp(&self, name: &str) -> Option<&Stamp> {
        self.fields.get(name).map(|r| &r.stamp)
    }

    /// The highest stamp of the named fields (registers and counter
    /// entries) and the tombstone.
    pub fn max_stamp_of<'a>(&self, names: impl Iterator<Item = &'a str>) -> Option<Stamp> {
        names
            .flat_map(|n| {
                let field = self.fields.get(n).map(|r| r.stamp.clone());
                let counter = self.counters.get(n).into_iter().flat_map(|es| {
                    es.iter()
                        .map(|(origin, e)| Stamp::new(e.hlc, origin.clone()))
                });
                field.into_iter().chain(counter)
            })
            .chain(self.tombstone.clone())
            .max()
    }

    /// The highest stamp `origin` has anywhere in the document (a field's
    /// register, a counter entry, the tombstone).
    pub fn max_stamp_by(&self, origin: &str) -> Option<Stamp> {
        let fields = self.fields.values().map(|r| r.stamp.clone());
        let counters = self
            .counters
            .values()
            .filter_map(|es| es.get(origin).map(|e| Stamp::new(e.hlc, origin)));
        fields
            .chain(counters)
            .chain(self.tombstone.clone())
            .filter(|s| s.origin == origin)
            .max()
    }

    /// The highest stamp anywhere in the document.
    pub fn max_stamp(&self) -> Option<Stamp> {
        let fields = self.fields.values().map(|r| r.stamp.clone());
        let counters = self.counters.values().flat_map(|es| {
            es.iter()
                .map(|(origin, e)| Stamp::new(e.hlc, origin.clone()))
        });
        fields.chain(counters).chain(self.tombstone.clone()).max()
    }
}

/// A JSON number for a counter: an integer when it is one (the form a
/// column's value takes, [`connector_core::column_type`]).
pub fn number(v: f64) -> Value {
    if let Some(i) = connector_core::column_type::whole(v) {
        Value::from(i)
    } else {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(hlc: u64, origin: &str, fields: &[(&str, Value)]) -> Write {
        Write {
            stamp: Stamp::new(hlc, origin),
            kind: WriteKind::Set {
                fields: fields
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
                unset: BTreeSet::new(),
                counters: BTreeMap::new(),
                copied: false,
            },
        }
    }

    fn delete(hlc: u64, origin: &str) -> Write {
        Write {
            stamp: Stamp::new(hlc, origin),
            kind: WriteKind::Delete,
        }
    }

    #[test]
    fn fields_merge_independently() {
        let mut d = DocState::default();
        d.apply(&set(
            1,
            "hq",
            &[("status", json!("new")), ("total", json!(10))],
        ));
        d.apply(&set(3, "hq", &[("status", json!("paid"))]));
        d.apply(&set(
            2,
            "shop",
            &[("total", json!(12)), ("status", json!("void"))],
        ));
        assert_eq!(
            serde_json::Value::Object(d.materialize().unwrap()),
            json!({"status": "paid", "total": 12})
        );
    }

    #[test]
    fn a_later_write_resurrects_an_earlier_does_not() {
        let mut d = DocState::default();
        d.apply(&set(1, "hq", &[("a", json!(1)), ("b", json!(2))]));
        d.apply(&delete(5, "shop"));
        assert!(!d.exists());
        d.apply(&set(4, "hq", &[("a", json!(9))]));
        assert_eq!(d.materialize(), None);
        d.apply(&set(6, "hq", &[("b", json!(3))]));
        assert_eq!(
            serde_json::Value::Object(d.materialize().unwrap()),
            json!({"b": 3})
        );
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut d = DocState::default();
        d.apply(&set(1, "hq", &[("a", json!({"x": [1, 2]}))]));
        d.apply(&Write {
            stamp: Stamp::new(2, "shop"),
            kind: WriteKind::Set {
                fields: [("n".to_string(), Value::Null)].into_iter().collect(),
                unset: ["gone".to_string()].into_iter().collect(),
                counters: [("quantity".to_string(), -2.0)].into_iter().collect(),
                copied: true,
            },
        });
        d.apply(&delete(0, "x"));
        let text = serde_json::to_string(&d).unwrap();
        let back: DocState = serde_json::from_str(&text).unwrap();
        assert_eq!(back, d);
        assert_eq!(back.counter_value("quantity"), Some(-2.0));
    }

    #[test]
    fn stored_registers_read_in_every_shape() {
        let text = r#"{"s":[{"t":5,"o":"hq"},{"t":7,"o":"shop"}],
            "f":{"a":[0,{"x":[1]}],"n":[1,null],"gone":[1]}}"#;
        let d: DocState = serde_json::from_str(text).unwrap();
        let doc = d.materialize().unwrap();
        assert_eq!(Value::Object(doc), json!({"a": {"x": [1]}, "n": null}));
        assert_eq!(d.field_stamp("gone"), Some(&Stamp::new(7, "shop")));
        for bad in [
            r#"{"f":{"a":[]}}"#,
            r#"{"f":{"a":[0,1,2]}}"#,
            r#"{"f":{"a":"v"}}"#,
        ] {
            assert!(serde_json::from_str::<DocState>(bad).is_err(), "{bad}");
        }
    }
}
