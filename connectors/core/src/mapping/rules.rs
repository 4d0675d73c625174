//! The mapping rules of one collection, as validated from the YAML files.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::filter::Filter;
use super::yaml_tree::Pos;

/// How a record's `_id` is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdMode {
    /// The record's own id is `_id` (MongoDB `_id`, Cosmos DB `id`, or the
    /// relational `id` column; another column via `providers.X.columns._id`).
    MatchIds,
    /// One top-level field becomes `_id` and stays in the body.
    SingleField(String),
    /// Several top-level fields form a composite `_id` object, in this order.
    MultipleFields(Vec<String>),
}

impl IdMode {
    /// The document fields that make up the id (empty for `match_ids`).
    pub fn fields(&self) -> &[String] {
        match self {
            IdMode::MatchIds => &[],
            IdMode::SingleField(f) => std::slice::from_ref(f),
            IdMode::MultipleFields(fs) => fs,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            IdMode::MatchIds => "match_ids",
            IdMode::SingleField(_) => "single_field",
            IdMode::MultipleFields(_) => "multiple_fields",
        }
    }
}

/// One field transform. Inbound (provider → store) runs them in file order;
/// outbound runs their inverses in reverse order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transform {
    /// Timestamps (epoch milliseconds, RFC 3339, SQL `YYYY-MM-DD hh:mm:ss[+tz]`,
    /// dates, MongoDB `{"$date": …}`) become `YYYY-MM-DDThh:mm:ss.sssZ` strings.
    ToIsoString(String),
    Rename {
        from: String,
        to: String,
    },
    Drop(Vec<String>),
}

/// Per-provider names: table (or collection/container), schema, and column
/// renames from document field to provider column.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProviderNames {
    pub table: Option<String>,
    pub schema: Option<String>,
    /// document field → provider column
    pub columns: BTreeMap<String, String>,
}

/// Where a rule was written, for messages.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    pub file: String,
    pub pos: Pos,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CollectionRule {
    pub name: String,
    pub origin: Origin,
    pub sync: bool,
    pub reason: Option<String>,
    pub id: IdMode,
    pub filter: Option<Filter>,
    pub transforms: Vec<Transform>,
    /// Fields merged as counters (sum of per-provider deltas).
    pub counters: Arc<[String]>,
    /// Whether a TRUNCATE in one provider empties the collection everywhere.
    pub propagate_truncate: bool,
    /// Keyed by provider instance name or provider kind; the instance wins.
    pub providers: BTreeMap<String, ProviderNames>,
}

impl CollectionRule {
    /// The names a provider uses for this collection: the block for its
    /// instance name, else the block for its kind, else the defaults.
    pub fn names_for(&self, provider_name: &str, provider_kind: &str) -> Option<&ProviderNames> {
        self.providers
            .get(provider_name)
            .or_else(|| self.providers.get(provider_kind))
    }

    /// The provider's table (or collection/container) name; the collection
    /// name unless the file renames it.
    pub fn table_for(&self, provider_name: &str, provider_kind: &str) -> &str {
        self.names_for(provider_name, provider_kind)
            .and_then(|n| n.table.as_deref())
            .unwrap_or(&self.name)
    }

    pub fn schema_for(&self, provider_name: &str, provider_kind: &str) -> Option<&str> {
        self.names_for(provider_name, provider_kind)
            .and_then(|n| n.schema.as_deref())
    }

    pub fn is_counter(&self, field: &str) -> bool {
        self.counters.iter().any(|c| c == field)
    }
}
