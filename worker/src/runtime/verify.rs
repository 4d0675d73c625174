//! `connector verify`: per collection, the store against every provider.
//!
//! Each provider's rows are read through its snapshot reader and mapped
//! exactly like incoming changes, then hashed per document
//! (`value::doc_hash`); the count and the wrapping sum of hashes compare
//! whole collections regardless of order. When they differ, the ids are
//! named: missing on one side, or present on both with other values. Rows
//! the mapping rejects (no id) cannot be compared; their number is told.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use connector_core::provider::Digest;
use connector_core::value::{doc_hash, id_key};
use connector_core::{ConnectorError, DocOp, MappingSet, ProviderSpec};

use super::source_task::map_batch;
use super::{blocking, Shared};
use crate::config::Config;
use crate::registry;

pub struct Difference {
    pub provider: String,
    pub collection: String,
    pub store: Digest,
    pub provider_digest: Digest,
    /// Ids (canonical JSON) and what is wrong with them, at most 20.
    pub ids: Vec<(String, &'static str)>,
}

/// Compares; returns every collection that differs (empty: all equal).
pub async fn run(
    config: &Config,
    specs: Vec<ProviderSpec>,
    mappings: Arc<MappingSet>,
    only: Option<&str>,
    mut report: impl FnMut(&str, &str, Digest, Digest, usize),
) -> Result<Vec<Difference>, ConnectorError> {
    let shared = Shared::new(config);
    let store = blocking(|| shared.open_store())?;
    let mut diffs = Vec::new();
    for spec in specs {
        let (provider, mapping) = registry::open(&spec, &mappings)?;
        let mut snapshot = provider.open_reader(mapping.clone()).await?;
        let collections = super::collections(&mapping, only)?;
        for collection in collections {
            // Compared on the fields both sides have, per document: a
            // column one table lacks is no difference, nor a column a
            // document lacks (a sink writes only its table's columns and
            // never clears one the document lacks: the row keeps its value,
            // e.g. the NULL it was inserted with, or a default such as
            // now() of a column only that database has; comparing it, every
            // row another database added would differ for ever). A value
            // there that should have reached the store is not seen.
            let mut in_store: HashSet<String> = HashSet::new();
            blocking(|| {
                store.for_each_document(&collection, |_, _, doc| {
                    for k in doc.keys() {
                        if !in_store.contains(k) {
                            in_store.insert(k.clone());
                        }
                    }
                })
            })
            .map_err(ConnectorError::from)?;
            // The documents lacking some of those fields, with theirs (few:
            // most documents of a collection have every field).
            let mut partial: BTreeMap<String, HashSet<String>> = BTreeMap::new();
            blocking(|| {
                store.for_each_document(&collection, |k, _, doc| {
                    if doc.len() < in_store.len() {
                        partial.insert(k, doc.keys().cloned().collect());
                    }
                })
            })
            .map_err(ConnectorError::from)?;
            let mut in_provider: HashSet<String> = HashSet::new();
            let mut theirs: BTreeMap<String, u64> = BTreeMap::new();
            let mut after = None;
            // Rows the mapping rejects (a NULL id): never synced, so not
            // compared, but told.
            let mut rejected = 0;
            loop {
                let chunk = snapshot.chunk(&collection, after.as_ref(), 10_000).await?;
                let mapped = map_batch(&mapping, &chunk.rows);
                rejected += mapped.dead.len();
                for c in mapped.changes.iter().filter(|c| c.op == DocOp::Upsert) {
                    in_provider.extend(c.fields.keys().cloned());
                    let k = id_key(&c.id);
                    let names = partial.get(&k).unwrap_or(&in_store);
                    theirs.insert(k, doc_hash(&c.id, &fields_in(&c.fields, names)));
                }
                after = chunk.last_key;
                if chunk.done {
                    break;
                }
            }
            let mut ours: BTreeMap<String, u64> = BTreeMap::new();
            blocking(|| {
                store.for_each_document(&collection, |k, id, doc| {
                    ours.insert(k, doc_hash(id, &fields_in(doc, &in_provider)));
                })?;
                // Rows that left the provider's filter are not synced there.
                for k in store.left_filter(&spec.name, &collection)? {
                    ours.remove(&k);
                }
                Ok::<(), connector_store::StoreError>(())
            })
            .map_err(ConnectorError::from)?;
            let digest = |m: &BTreeMap<String, u64>| {
                let mut d = Digest::default();
                m.values().for_each(|h| d.add(*h));
                d
            };
            let (d_store, d_provider) = (digest(&ours), digest(&theirs));
            report(&spec.name, &collection, d_store, d_provider, rejected);
            if d_store != d_provider {
                let mut ids = Vec::new();
                for (k, h) in &ours {
                    match theirs.get(k) {
                        None => ids.push((k.clone(), "missing in the provider")),
                        Some(t) if t != h => ids.push((k.clone(), "different values")),
                        _ => {}
                    }
                }
                for k in theirs.keys().filter(|k| !ours.contains_key(*k)) {
                    ids.push((k.clone(), "missing in the store"));
                }
                ids.truncate(20);
                diffs.push(Difference {
                    provider: spec.name.clone(),
                    collection,
                    store: d_store,
                    provider_digest: d_provider,
                    ids,
                });
            }
        }
    }
    Ok(diffs)
}

/// The fields of `doc` named in `names`.
fn fields_in(
    doc: &serde_json::Map<String, serde_json::Value>,
    names: &HashSet<String>,
) -> serde_json::Map<String, serde_json::Value> {
    doc.iter()
        .filter(|(k, _)| names.contains(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}
