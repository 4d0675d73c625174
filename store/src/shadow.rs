//! Shadows: what each provider is known to hold, for echo suppression.
//!
//! For every provider and document the store keeps per-field fingerprints
//! of the image the provider last showed us (its feed) or we last wrote to
//! it (its sink), plus the plain values of counter fields (a counter's delta
//! needs the old number, not a hash). Then:
//!
//! * a feed record equal to the shadow is our own write coming back (or a
//!   no-op): dropped;
//! * otherwise only the fields that differ are merged;
//! * a sink write equal to the shadow is skipped: the provider holds it.
//!
//! It needs nothing from the provider (no origin tags), survives id mapping
//! and transforms (fingerprints are taken in document space), and converges
//! under races: a stale shadow costs at most one redundant write.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

use connector_core::value::fingerprint;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Shadow {
    #[serde(rename = "d")]
    Deleted,
    #[serde(rename = "p")]
    Present {
        #[serde(rename = "f")]
        fingerprints: BTreeMap<String, u64>,
        #[serde(rename = "c", default, skip_serializing_if = "BTreeMap::is_empty")]
        counters: BTreeMap<String, f64>,
    },
}

impl Shadow {
    /// The shadow of a document image.
    pub fn of(doc: &Map<String, Value>, counters: &[String]) -> Shadow {
        Shadow::Present {
            fingerprints: doc
                .iter()
                .map(|(k, v)| (k.clone(), fingerprint(v)))
                .collect(),
            counters: counters
                .iter()
                .filter_map(|c| doc.get(c).and_then(Value::as_f64).map(|n| (c.clone(), n)))
                .collect(),
        }
    }

    /// The shadow of a document, or [`Shadow::Deleted`] for `None`.
    pub fn of_option(doc: Option<&Map<String, Value>>, counters: &[String]) -> Shadow {
        doc.map(|d| Shadow::of(d, counters))
            .unwrap_or(Shadow::Deleted)
    }

    /// Whether two shadows describe the same image (counter values are
    /// covered by the fingerprints).
    pub fn same_image(&self, other: &Shadow) -> bool {
        match (self, other) {
            (Shadow::Deleted, Shadow::Deleted) => true,
            (
                Shadow::Present {
                    fingerprints: a, ..
                },
                Shadow::Present {
                    fingerprints: b, ..
                },
            ) => a == b,
            _ => false,
        }
    }

    pub fn fingerprint(&self, field: &str) -> Option<u64> {
        match self {
            Shadow::Present { fingerprints, .. } => fingerprints.get(field).copied(),
            Shadow::Deleted => None,
        }
    }

    pub fn counter(&self, field: &str) -> Option<f64> {
        match self {
            Shadow::Present { counters, .. } => counters.get(field).copied(),
            Shadow::Deleted => None,
        }
    }

    /// The field names of the image.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        let fps = match self {
            Shadow::Present { fingerprints, .. } => Some(fingerprints),
            Shadow::Deleted => None,
        };
        fps.into_iter().flat_map(|f| f.keys().map(String::as_str))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn equal_images_have_equal_shadows_whatever_the_key_order() {
        let a = json!({"a": 1, "b": {"x": 1, "y": 2}});
        let b: Value = serde_json::from_str(r#"{"b":{"y":2,"x":1},"a":1}"#).unwrap();
        let sa = Shadow::of(a.as_object().unwrap(), &[]);
        let sb = Shadow::of(b.as_object().unwrap(), &[]);
        assert!(sa.same_image(&sb));
        let c = json!({"a": 2, "b": {"x": 1, "y": 2}});
        assert!(!sa.same_image(&Shadow::of(c.as_object().unwrap(), &[])));
        assert!(!sa.same_image(&Shadow::Deleted));
    }

    #[test]
    fn counters_keep_their_values() {
        let doc = json!({"quantity": 7, "sku": "x"});
        let s = Shadow::of(doc.as_object().unwrap(), &["quantity".into()]);
        assert_eq!(s.counter("quantity"), Some(7.0));
        assert_eq!(s.counter("sku"), None);
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Shadow>(&text).unwrap(), s);
    }
}
