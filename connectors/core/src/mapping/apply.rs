//! Per-record mapping for one provider instance.
//!
//! Inbound (provider → store), in this order: provider column names become
//! document field names (`providers.X.columns`, and for `match_ids` the
//! provider's native id column becomes `_id`); transforms run in file order;
//! the filter decides; the id is built and checked (top-level, present,
//! non-null, scalar unless composite). Anything wrong with the record itself
//! is a [`Rejection`] for the dead-letter table, never a panic or a silent
//! drop. Outbound runs the same steps backwards.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::rules::{CollectionRule, IdMode};
use super::transform;
use super::MappingSet;
use crate::change::{DocChange, DocOp, Fields, RawChange, RawOp, SinkWrite};
use crate::provider::ProviderKind;

/// Why a record cannot be synced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub collection: String,
    pub field: Option<String>,
    pub reason: String,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "collection `{}`", self.collection)?;
        if let Some(field) = &self.field {
            write!(f, ", field `{field}`")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// The outcome of mapping one incoming record.
#[allow(clippy::large_enum_variant)] // short-lived, never stored in bulk
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    Change(DocChange),
    /// The table has no collection, or its collection has `sync: false`.
    NotSynced,
    /// An upsert that does not pass the collection's filter; `id`: its
    /// document's id, where it has one (the fleet then stops writing that
    /// provider's row, which left the filter there).
    Filtered {
        collection: String,
        id: Option<Value>,
    },
    /// A TRUNCATE of a collection whose mapping does not opt in
    /// (`propagate_truncate`): to be logged and skipped.
    TruncateSkipped {
        collection: String,
        table: String,
    },
    Rejected(Rejection),
}

/// One row for a provider to write: `row` is `None` for a delete.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundRow {
    pub collection: String,
    pub table: String,
    pub schema: Option<String>,
    /// Key columns and their values, in id order.
    pub key: Vec<(String, Value)>,
    /// The whole row in provider column names, key columns included.
    pub row: Option<Fields>,
}

struct Bound {
    rule_index: usize,
    table: String,
    schema: Option<String>,
    /// provider column → document field
    inbound: HashMap<String, String>,
    /// document field → provider column
    outbound: HashMap<String, String>,
}

/// The mapping set bound to one provider instance.
pub struct ProviderMapping {
    provider: String,
    kind: ProviderKind,
    set: Arc<MappingSet>,
    bound: Vec<Bound>,
    by_table: HashMap<String, usize>,
    by_collection: HashMap<String, usize>,
    /// Collections this provider's names put on one table (the files are
    /// checked one by one, per provider kind; names resolve per instance).
    conflicts: Vec<String>,
}

impl ProviderMapping {
    pub fn new(set: Arc<MappingSet>, provider: &str, kind: ProviderKind) -> Self {
        let mut bound = Vec::new();
        let mut by_table = HashMap::new();
        let mut by_collection = HashMap::new();
        let mut conflicts = Vec::new();
        for (rule_index, rule) in set.rules().iter().enumerate() {
            if !rule.sync {
                continue;
            }
            let mut outbound: HashMap<String, String> = HashMap::new();
            if rule.id == IdMode::MatchIds {
                outbound.insert("_id".into(), kind.native_id_field().into());
            }
            if let Some(names) = rule.names_for(provider, kind.as_str()) {
                outbound.extend(names.columns.clone());
            }
            let mut inbound: HashMap<String, String> = HashMap::new();
            let mut by_name: Vec<(&String, &String)> = outbound.iter().collect();
            by_name.sort();
            for (f, c) in by_name {
                if let Some(other) = inbound.insert(c.clone(), f.clone()) {
                    // Which field a column's value went to would change
                    // from one start to the next, and both write it.
                    conflicts.push(format!(
                        "collection `{}`: fields `{other}` and `{f}` both map to column `{c}` in provider `{provider}`{}; give each its own column",
                        rule.name,
                        if other == "_id" || f == "_id" {
                            " (match_ids reads the record's id from it)"
                        } else {
                            ""
                        }
                    ));
                }
            }
            let table = rule.table_for(provider, kind.as_str()).to_string();
            if let Some(other) = by_table.insert(table.clone(), bound.len()) {
                let other: &Bound = &bound[other];
                conflicts.push(format!(
                    "collections `{}` and `{}` both map to table `{table}` in provider `{provider}`: \
                     its changes would all go to one of them, and both would write it",
                    set.rules()[other.rule_index].name,
                    rule.name
                ));
            }
            by_collection.insert(rule.name.clone(), bound.len());
            bound.push(Bound {
                rule_index,
                table,
                schema: rule.schema_for(provider, kind.as_str()).map(str::to_string),
                inbound,
                outbound,
            });
        }
        ProviderMapping {
            provider: provider.to_string(),
            kind,
            set,
            bound,
            by_table,
            by_collection,
            conflicts,
        }
    }

    /// Whether this provider's mapping is usable: no two collections on one
    /// table (the mapping files are checked one at a time and per provider
    /// kind; this is the instance's resolved names over all files).
    pub fn check(&self) -> Result<(), String> {
        match self.conflicts.first() {
            Some(c) => Err(c.clone()),
            None => Ok(()),
        }
    }

    /// Whether a collection's table keeps its columns apart in the document:
    /// two columns whose values land in one document field (a rename onto
    /// a column the table has too, two columns mapped to one field) would
    /// overwrite each other, one winning on the way in and the other on
    /// the way out.
    pub fn check_columns<'a>(
        &self,
        collection: &str,
        columns: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), String> {
        let Some(&i) = self.by_collection.get(collection) else {
            return Ok(());
        };
        let b = &self.bound[i];
        let rule = self.rule(b);
        let mut fields: HashMap<String, &str> = HashMap::new();
        for column in columns {
            let field = b.inbound.get(column).map_or(column, String::as_str);
            let Some(field) = transform::inbound_name(&rule.transforms, field) else {
                continue;
            };
            if let Some(other) = fields.insert(field.clone(), column) {
                return Err(format!(
                    "collection `{collection}`: columns `{other}` and `{column}` of table {} both become the document field `{field}` \
                     (through the mapping's renames); drop one of them in the mapping, or rename it to a field of its own",
                    b.table
                ));
            }
        }
        Ok(())
    }

    pub fn provider(&self) -> &str {
        &self.provider
    }

    pub fn kind(&self) -> ProviderKind {
        self.kind
    }

    pub fn set(&self) -> &MappingSet {
        &self.set
    }

    fn rule(&self, b: &Bound) -> &CollectionRule {
        &self.set.rules()[b.rule_index]
    }

    /// The synced collections with this provider's table and schema names.
    pub fn tables(&self) -> impl Iterator<Item = (&CollectionRule, &str, Option<&str>)> {
        self.bound
            .iter()
            .map(|b| (self.rule(b), b.table.as_str(), b.schema.as_deref()))
    }

    /// Whether this provider syncs the collection.
    pub fn syncs(&self, collection: &str) -> bool {
        self.by_collection.contains_key(collection)
    }

    /// The provider column that holds a document field.
    pub fn column_for(&self, collection: &str, field: &str) -> Option<String> {
        let b = &self.bound[*self.by_collection.get(collection)?];
        Some(
            b.outbound
                .get(field)
                .cloned()
                .unwrap_or_else(|| field.to_string()),
        )
    }

    /// The provider's key columns of a collection, in id order.
    pub fn key_columns(&self, collection: &str) -> Option<Vec<String>> {
        let b = &self.bound[*self.by_collection.get(collection)?];
        let rule = self.rule(b);
        let fields: Vec<String> = match &rule.id {
            IdMode::MatchIds => vec!["_id".into()],
            other => other.fields().to_vec(),
        };
        Some(
            fields
                .iter()
                .map(|f| {
                    let f = transform::outbound_name(&rule.transforms, f);
                    b.outbound.get(&f).cloned().unwrap_or(f)
                })
                .collect(),
        )
    }

    /// Maps one incoming record.
    pub fn inbound(&self, raw: &RawChange) -> Inbound {
        let Some(b) = self.by_table.get(&raw.table).map(|i| &self.bound[*i]) else {
            return Inbound::NotSynced;
        };
        let rule = self.rule(b);
        if raw.op == RawOp::Truncate {
            if !rule.propagate_truncate {
                return Inbound::TruncateSkipped {
                    collection: rule.name.clone(),
                    table: raw.table.clone(),
                };
            }
            return Inbound::Change(DocChange {
                collection: rule.name.clone(),
                id: Value::Null,
                op: DocOp::Truncate,
                fields: Fields::new(),
                before: None,
                commit_ts_ms: raw.commit_ts_ms,
                counters: rule.counters.clone(),
                unchanged: Vec::new(),
                unchanged_from: None,
                snapshot: false,
                own_write: false,
            });
        }
        let reject = |field: Option<&str>, reason: String| {
            Inbound::Rejected(Rejection {
                collection: rule.name.clone(),
                field: field.map(str::to_string),
                reason,
            })
        };
        let mut fields = rename_keys(&raw.row, &b.inbound);
        if let Err((field, reason)) = transform::apply_inbound(&rule.transforms, &mut fields) {
            return reject(Some(&field), reason);
        }
        for c in rule.counters.iter() {
            if let Some(v) = fields.get(c) {
                if !(v.is_number() || v.is_null()) {
                    return reject(
                        Some(c),
                        format!("counter `{c}` must be a number, found {v}"),
                    );
                }
            }
        }
        let op = match raw.op {
            RawOp::Delete => DocOp::Delete,
            _ => DocOp::Upsert,
        };
        if op == DocOp::Upsert {
            if let Some(filter) = &rule.filter {
                if !filter.matches(&fields) {
                    let id = doc_id(rule, &b.outbound, &mut fields.clone()).ok();
                    return Inbound::Filtered {
                        collection: rule.name.clone(),
                        id,
                    };
                }
            }
        }
        let id = match doc_id(rule, &b.outbound, &mut fields) {
            Ok(id) => id,
            Err((field, reason)) => return reject(field.as_deref(), reason),
        };
        // The old key of a primary key change: its document's id (it holds
        // the values the feed left out as unchanged).
        let unchanged_from = raw.unchanged_from.as_ref().and_then(|key| {
            let mut k_fields = rename_keys(key, &b.inbound);
            transform::apply_inbound(&rule.transforms, &mut k_fields).ok()?;
            doc_id(rule, &b.outbound, &mut k_fields).ok()
        });
        let before = raw.before.as_ref().and_then(|before| {
            let mut b_fields = rename_keys(before, &b.inbound);
            transform::apply_inbound(&rule.transforms, &mut b_fields).ok()?;
            b_fields.shift_remove("_id");
            Some(b_fields)
        });
        Inbound::Change(DocChange {
            collection: rule.name.clone(),
            id,
            op,
            fields: if op == DocOp::Delete {
                Fields::new()
            } else {
                fields
            },
            before,
            commit_ts_ms: raw.commit_ts_ms,
            counters: rule.counters.clone(),
            // Through the column renames and the transforms, as the values
            // went (a renamed TOAST column is kept under its new name).
            unchanged: raw
                .unchanged
                .iter()
                .filter_map(|c| {
                    let field = b.inbound.get(c).map_or(c.as_str(), String::as_str);
                    transform::inbound_name(&rule.transforms, field)
                })
                .collect(),
            unchanged_from,
            snapshot: raw.op == RawOp::Snapshot,
            own_write: raw.own_write,
        })
    }

    /// Maps one merged document to this provider's row.
    pub fn outbound(&self, write: &SinkWrite) -> Result<OutboundRow, Rejection> {
        let Some(b) = self
            .by_collection
            .get(&write.collection)
            .map(|i| &self.bound[*i])
        else {
            return Err(Rejection {
                collection: write.collection.clone(),
                field: None,
                reason: format!("provider `{}` does not sync this collection", self.provider),
            });
        };
        let rule = self.rule(b);
        let column = |f: &str| {
            let f = transform::outbound_name(&rule.transforms, f);
            b.outbound.get(&f).cloned().unwrap_or(f)
        };
        let key: Vec<(String, Value)> = match (&rule.id, &write.id) {
            (IdMode::MatchIds, id) => vec![(column("_id"), id.clone())],
            (IdMode::SingleField(f), id) => vec![(column(f), id.clone())],
            (IdMode::MultipleFields(fs), Value::Object(parts)) => {
                let mut key = Vec::new();
                for f in fs {
                    let Some(v) = parts.get(f) else {
                        return Err(Rejection {
                            collection: rule.name.clone(),
                            field: Some(f.clone()),
                            reason: format!("composite id {} lacks `{f}`", write.id),
                        });
                    };
                    key.push((column(f), v.clone()));
                }
                key
            }
            (IdMode::MultipleFields(_), other) => {
                return Err(Rejection {
                    collection: rule.name.clone(),
                    field: Some("_id".into()),
                    reason: format!("composite id expected, found {other}"),
                })
            }
        };
        let row = write.doc.as_ref().map(|doc| {
            let mut fields = doc.clone();
            transform::apply_outbound(&rule.transforms, &mut fields);
            let mut row = rename_keys(&fields, &b.outbound);
            for (col, v) in &key {
                row.entry(col.clone()).or_insert_with(|| v.clone());
            }
            row
        });
        Ok(OutboundRow {
            collection: rule.name.clone(),
            table: b.table.clone(),
            schema: b.schema.clone(),
            key,
            row,
        })
    }
}

/// The document id of a record's (renamed, transformed) fields, by the
/// collection's id rule; `match_ids` takes `_id` out of the fields.
fn doc_id(
    rule: &CollectionRule,
    outbound: &HashMap<String, String>,
    fields: &mut Fields,
) -> Result<Value, (Option<String>, String)> {
    match &rule.id {
        IdMode::MatchIds => match fields.shift_remove("_id") {
            Some(v) => scalar_id(v, "_id").map_err(|r| (Some("_id".to_string()), r)),
            None => Err((
                Some("_id".into()),
                format!(
                    "the record has no `{}` (match_ids takes the record's own id)",
                    outbound.get("_id").map(String::as_str).unwrap_or("_id")
                ),
            )),
        },
        IdMode::SingleField(f) => match fields.get(f) {
            Some(v) => scalar_id(v.clone(), f).map_err(|r| (Some(f.clone()), r)),
            None => Err((Some(f.clone()), format!("id field `{f}` is missing"))),
        },
        IdMode::MultipleFields(fs) => {
            let mut id = Map::new();
            let mut err = None;
            for f in fs {
                match fields.get(f) {
                    Some(v) => match scalar_id(v.clone(), f) {
                        Ok(v) => {
                            id.insert(f.clone(), v);
                        }
                        Err(r) => {
                            err = Some((Some(f.clone()), r));
                            break;
                        }
                    },
                    None => {
                        err = Some((Some(f.clone()), format!("id field `{f}` is missing")));
                        break;
                    }
                }
            }
            match err {
                Some(e) => Err(e),
                None => Ok(Value::Object(id)),
            }
        }
    }
}

/// `fields` under the names `names` gives them. A field the map leaves
/// alone whose name another field is renamed to is left out: with
/// `columns: {city: name}` the provider's `name` column holds the city,
/// and the document's own `name` has no column there (written into `name`
/// too, the two overwrote each other in whatever order the document had).
fn rename_keys(fields: &Fields, names: &HashMap<String, String>) -> Fields {
    if names.is_empty() {
        return fields.clone();
    }
    fields
        .iter()
        .filter_map(|(k, v)| match names.get(k) {
            Some(to) => Some((to.clone(), v.clone())),
            None if names.values().any(|to| to == k) => None,
            None => Some((k.clone(), v.clone())),
        })
        .collect()
}

fn scalar_id(v: Value, field: &str) -> Result<Value, String> {
    match v {
        Value::Null => Err(format!("id field `{field}` is null")),
        Value::Object(_) | Value::Array(_) => Err(format!(
            "id field `{field}` holds {}, but an id part must be a string, number or boolean",
            if v.is_object() { "an object" } else { "a list" }
        )),
        Value::String(ref s) if s.is_empty() => Err(format!("id field `{field}` is empty")),
        other => Ok(other),
    }
}
