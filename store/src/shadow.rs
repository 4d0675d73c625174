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

use connector_core::value::{counter_number, fingerprint};

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
                .filter_map(|c| doc.get(c).and_then(counter_number).map(|n| (c.clone(), n)))
                .collect(),
        }
    }

    /// This image with `fields` (values the feed left out as unchanged)
    /// fingerprinted as `seen` had them: the provider holds its old values
    /// there, whatever the store filled in meanwhile. A field `seen` lacks
    /// keeps the filled fingerprint.
    pub fn keeping_unchanged(mut self, seen: Option<&Shadow>, fields: &[String]) -> Shadow {
        if let (
            Shadow::Present { fingerprints, .. },
            Some(Shadow::Present {
                fingerprints: old, ..
            }),
        ) = (&mut self, seen)
        {
            for f in fields {
                if let Some(fp) = old.get(f) {
                    fingerprints.insert(f.clone(), *fp);
                }
            }
        }
        self
    }

    /// The shadow of a document, or [`Shadow::Deleted`] for `None`.
    pub fn of_option(doc: Option<&Map<String, Value>>, counters: &[String]) -> Shadow {
        doc.map(|d| Shadow::of(d, counters))
            .unwrap_or(Shadow::Deleted)
    }

    /// Whether two shadows describe the same image (counter values are
    /// covered by the fingerprints).
    pub fn same_image(&self, other: &Shadow) -> bool {
        self.compare(other, |a, b| a == b)
    }

    /// Both deleted, or both present and `fields` holds for their
    /// fingerprints.
    fn compare(
        &self,
        other: &Shadow,
        fields: impl Fn(&BTreeMap<String, u64>, &BTreeMap<String, u64>) -> bool,
    ) -> bool {
        match (self, other) {
            (Shadow::Deleted, Shadow::Deleted) => true,
            (
                Shadow::Present {
                    fingerprints: a, ..
                },
                Shadow::Present {
                    fingerprints: b, ..
                },
            ) => fields(a, b),
            _ => false,
        }
    }

    /// Whether a provider showing one of the two images holds the other, as
    /// far as its table can: equal on every field both have. A field one
    /// side lacks is a column the other's table does not have (a sink writes
    /// only the columns its table has and never clears one the document
    /// lacks), so nothing any write could change. Between an image the
    /// provider's feed shows (all its columns) and the store's document or
    /// a write our sink recorded; two images from one provider's feed
    /// compare with [`Shadow::same_image`], and whether a sink must write
    /// with [`Shadow::covers`]. (A document database, where a missing field
    /// is an unset one, would need a shadow that says its image is
    /// complete.)
    pub fn agrees_with(&self, other: &Shadow) -> bool {
        self.compare(other, |a, b| {
            let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
            small
                .iter()
                .all(|(k, v)| large.get(k).is_none_or(|w| w == v))
        })
    }

    /// Whether what a provider holds (`self`, written or shown by it)
    /// covers the document `doc`: every field of the document, equal. A
    /// field only the provider has is a column the document never had
    /// (nothing a write could clear). A document field the provider lacks
    /// is written, even if its table has no such column (one redundant
    /// write per change, its echo then agrees): a column added to the
    /// table is filled that way.
    pub fn covers(&self, doc: &Shadow) -> bool {
        self.compare(doc, |held, doc| {
            doc.iter().all(|(k, v)| held.get(k) == Some(v))
        })
    }

    /// The fields both images have and disagree on (in name order);
    /// `None` when one is deleted and the other is not.
    pub fn disagreements<'a>(&'a self, other: &Shadow) -> Option<Vec<&'a str>> {
        match (self, other) {
            (Shadow::Deleted, Shadow::Deleted) => Some(Vec::new()),
            (
                Shadow::Present {
                    fingerprints: a, ..
                },
                Shadow::Present {
                    fingerprints: b, ..
                },
            ) => Some(
                a.iter()
                    .filter(|(k, v)| b.get(*k).is_some_and(|w| w != *v))
                    .map(|(k, _)| k.as_str())
                    .collect(),
            ),
            _ => None,
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

/// A compact binary form for the store (shadows are written for every
/// change: JSON with 20-digit numbers tripled their size).
///
/// `D` for deleted; `P`, then u16 field count and per field a u16 name
/// length, the name and the u64 fingerprint, then u16 counter count and per
/// counter the name and its f64 value. Little endian.
impl Shadow {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Shadow::Deleted => vec![b'D'],
            Shadow::Present {
                fingerprints,
                counters,
            } => {
                let mut out = Vec::with_capacity(3 + fingerprints.len() * 20);
                out.push(b'P');
                let name = |out: &mut Vec<u8>, n: &str| {
                    out.extend_from_slice(&(n.len().min(u16::MAX as usize) as u16).to_le_bytes());
                    out.extend_from_slice(&n.as_bytes()[..n.len().min(u16::MAX as usize)]);
                };
                out.extend_from_slice(&(fingerprints.len() as u16).to_le_bytes());
                for (n, fp) in fingerprints {
                    name(&mut out, n);
                    out.extend_from_slice(&fp.to_le_bytes());
                }
                out.extend_from_slice(&(counters.len() as u16).to_le_bytes());
                for (n, v) in counters {
                    name(&mut out, n);
                    out.extend_from_slice(&v.to_le_bytes());
                }
                out
            }
        }
    }

    /// `None` for bytes that are not an encoded shadow.
    pub fn decode(bytes: &[u8]) -> Option<Shadow> {
        fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            if b.len() < n {
                return None;
            }
            let (h, t) = b.split_at(n);
            *b = t;
            Some(h)
        }
        fn u16_(b: &mut &[u8]) -> Option<usize> {
            take(b, 2).map(|h| u16::from_le_bytes([h[0], h[1]]) as usize)
        }
        fn name(b: &mut &[u8]) -> Option<String> {
            let n = u16_(b)?;
            Some(String::from_utf8_lossy(take(b, n)?).into_owned())
        }
        fn eight(b: &mut &[u8]) -> Option<[u8; 8]> {
            take(b, 8)?.try_into().ok()
        }
        let mut b = bytes;
        match take(&mut b, 1)?[0] {
            b'D' => Some(Shadow::Deleted),
            b'P' => {
                let mut fingerprints = BTreeMap::new();
                for _ in 0..u16_(&mut b)? {
                    let n = name(&mut b)?;
                    fingerprints.insert(n, u64::from_le_bytes(eight(&mut b)?));
                }
                let mut counters = BTreeMap::new();
                for _ in 0..u16_(&mut b)? {
                    let n = name(&mut b)?;
                    counters.insert(n, f64::from_le_bytes(eight(&mut b)?));
                }
                Some(Shadow::Present {
                    fingerprints,
                    counters,
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_binary_form_round_trips() {
        let doc = json!({"quantity": 7, "sku": "x", "ünïcode": [1, 2]});
        let s = Shadow::of(doc.as_object().unwrap(), &["quantity".into()]);
        assert_eq!(Shadow::decode(&s.encode()), Some(s));
        assert_eq!(
            Shadow::decode(&Shadow::Deleted.encode()),
            Some(Shadow::Deleted)
        );
        assert_eq!(Shadow::decode(b"P\x05"), None);
        assert_eq!(Shadow::decode(b""), None);
    }

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
    fn a_table_holds_a_document_when_the_fields_both_have_agree() {
        let shadow = |v: Value| Shadow::of(v.as_object().unwrap(), &[]);
        let doc = shadow(json!({"id": 1, "name": "scanner", "note": "dented"}));
        // a table without `note`; one with an extra column the document lacks
        let narrow = shadow(json!({"id": 1, "name": "scanner"}));
        let wide = shadow(json!({"id": 1, "name": "scanner", "note": "dented", "rack": 4}));
        assert!(narrow.agrees_with(&doc) && doc.agrees_with(&narrow));
        assert!(wide.agrees_with(&doc) && doc.agrees_with(&wide));
        assert!(!narrow.same_image(&doc));
        let renamed = shadow(json!({"id": 1, "name": "old scanner"}));
        assert!(!renamed.agrees_with(&doc) && !doc.agrees_with(&renamed));
        assert!(!narrow.agrees_with(&Shadow::Deleted));
        assert!(Shadow::Deleted.agrees_with(&Shadow::Deleted));
    }

    #[test]
    fn what_a_provider_holds_covers_the_document_field_by_field() {
        let shadow = |v: Value| Shadow::of(v.as_object().unwrap(), &[]);
        let doc = shadow(json!({"id": 1, "name": "scanner"}));
        assert!(shadow(json!({"id": 1, "name": "scanner", "rack": 4})).covers(&doc));
        assert!(!shadow(json!({"id": 1})).covers(&doc), "a field to fill");
        assert!(!shadow(json!({"id": 1, "name": "old"})).covers(&doc));
        assert!(!Shadow::Deleted.covers(&doc) && Shadow::Deleted.covers(&Shadow::Deleted));
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
