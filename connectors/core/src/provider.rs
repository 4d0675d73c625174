//! Provider instances and the traits a provider crate implements.
//!
//! A provider *kind* is a database product (postgres, mongodb, …); a provider
//! *instance* is one configured database with a unique name (`hq`, `shop`).
//! Each provider crate implements [`Provider`] and hands out a [`Source`]
//! (change feed → [`RawChange`]s), a [`Sink`] (idempotent batched writes) and
//! a [`Snapshot`] (initial sync by key ranges). The worker runs them; they
//! never talk to the store or to each other directly.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use crate::change::RawChange;
use crate::error::Result;
use crate::mapping::{OutboundRow, ProviderMapping};
use crate::redact::redact;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProviderKind {
    Postgres,
    MongoDb,
    SqlServer,
    CosmosDb,
    /// Any ODBC database (IBM DB2 first); the SQL dialect is an option.
    Odbc,
}

impl ProviderKind {
    pub const ALL: [ProviderKind; 5] = [
        ProviderKind::Postgres,
        ProviderKind::MongoDb,
        ProviderKind::SqlServer,
        ProviderKind::CosmosDb,
        ProviderKind::Odbc,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Postgres => "postgres",
            ProviderKind::MongoDb => "mongodb",
            ProviderKind::SqlServer => "sqlserver",
            ProviderKind::CosmosDb => "cosmosdb",
            ProviderKind::Odbc => "odbc",
        }
    }

    /// The field or column that holds a record's own id, used by `match_ids`.
    pub fn native_id_field(self) -> &'static str {
        match self {
            ProviderKind::MongoDb => "_id",
            ProviderKind::Postgres
            | ProviderKind::SqlServer
            | ProviderKind::CosmosDb
            | ProviderKind::Odbc => "id",
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProviderKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        ProviderKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .or(match s {
                "postgresql" | "pg" => Some(ProviderKind::Postgres),
                "mongo" => Some(ProviderKind::MongoDb),
                "mssql" => Some(ProviderKind::SqlServer),
                "cosmos" => Some(ProviderKind::CosmosDb),
                "db2" | "ibmcloud" => Some(ProviderKind::Odbc),
                _ => None,
            })
            .ok_or_else(|| {
                format!("unknown provider kind `{s}` (expected postgres, mongodb, sqlserver, cosmosdb or odbc)")
            })
    }
}

/// Provider instance names: lowercase letters, digits, `_` and `-`,
/// starting with a letter (they become metric labels and unit names).
pub fn valid_provider_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// One configured provider instance.
#[derive(Clone, PartialEq, Eq)]
pub struct ProviderSpec {
    pub name: String,
    pub kind: ProviderKind,
    pub enabled: bool,
    /// Secret: print [`ProviderSpec::redacted_connection`] instead.
    pub connection_string: String,
    pub database: Option<String>,
    pub schema: Option<String>,
    /// Kind-specific settings (`dialect` for ODBC, `slot`, `publication`, …).
    pub options: BTreeMap<String, String>,
}

impl ProviderSpec {
    pub fn redacted_connection(&self) -> String {
        redact(&self.connection_string)
    }
}

impl fmt::Debug for ProviderSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderSpec")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("enabled", &self.enabled)
            .field("connection_string", &self.redacted_connection())
            .field("database", &self.database)
            .field("schema", &self.schema)
            .field("options", &self.options)
            .finish()
    }
}

/// A batch of changes read from a feed, ending on a transaction boundary.
#[derive(Debug, Default)]
pub struct SourceBatch {
    pub changes: Vec<RawChange>,
    /// The position after the last change, to be saved with them; `None`
    /// when nothing new was read.
    pub position: Option<String>,
    /// Provider-specific health for `connector status` (e.g. a replication
    /// slot's retained WAL), when the source refreshed it.
    pub status: Option<Value>,
    /// The changes of a transaction too large to hold in memory, which
    /// follow `changes` and end the batch ([`crate::spill`]); `position` is
    /// after it.
    pub spilled: Option<crate::spill::Spill>,
}

/// A provider's change feed.
#[async_trait]
pub trait Source: Send {
    /// Waits at most `max_wait` for changes and returns up to about `max` of
    /// them (never splitting a source transaction). A source opened with a
    /// resume position returns nothing at or before it: the store saved that
    /// position together with the changes it covers.
    async fn next_batch(&mut self, max: usize, max_wait: Duration) -> Result<SourceBatch>;

    /// The store has durably committed everything up to `position`; the
    /// provider may now release it (acknowledge an LSN, prune a journal).
    async fn committed(&mut self, position: &str) -> Result<()>;
}

/// A row a sink did not write, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Its index in the batch.
    pub row: usize,
    pub reason: String,
    /// Refused by a foreign key ([`crate::error::is_missing_reference`]):
    /// the write may pass once the row it waits for is written (or
    /// deleted), so the worker tries it again by itself.
    pub awaits_reference: bool,
}

/// A provider's write side.
#[async_trait]
pub trait Sink: Send {
    /// Writes the rows in one provider transaction, idempotently (upserts and
    /// deletes by key). Rows the provider rejects for their own fault are
    /// returned, in batch order, and are not written; the others are.
    async fn write(&mut self, rows: &[OutboundRow]) -> Result<Vec<Refused>>;

    /// Whether the provider's own feed marks what this sink writes
    /// ([`crate::RawChange::own_write`]). Then the store need not record
    /// what the sink is about to write to recognise the echoes.
    fn tags_own_writes(&self) -> bool {
        false
    }
}

/// One chunk of an initial sync of one collection, in key order.
#[derive(Debug, Default)]
pub struct SnapshotChunk {
    pub rows: Vec<RawChange>,
    /// The key of the last row, from which the next chunk starts.
    pub last_key: Option<Value>,
    /// No rows after this chunk.
    pub done: bool,
}

/// What a copy did not see: see [`Snapshot::in_flight`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InFlight {
    /// The stamp of the copied rows.
    pub as_of_ms: i64,
    /// [`crate::RawChange::txn`] of the transactions in progress.
    pub txns: Vec<u64>,
    /// Every transaction from this id on was not seen either (PostgreSQL's
    /// snapshot `xmax`: a transaction committing when the snapshot was taken
    /// may be at or past it and not listed; a journal's next sequence).
    /// Ids compare as plain numbers: a provider whose ids wrap around widens
    /// them (PostgreSQL's 32-bit xids to `xid8`).
    pub from: Option<u64>,
}

/// Reads existing rows for `initial-sync`.
#[async_trait]
pub trait Snapshot: Send {
    /// Where the feed streams from after this copy: the position the copy
    /// is consistent with where opening it created the feed (a replication
    /// slot's consistent point, a journal's high-water mark), else the
    /// feed's own (an existing slot's confirmed position). The worker saves
    /// it as the provider's position if the store has none, so streaming
    /// starts there and a feed lost later is detected rather than silently
    /// re-created.
    fn start_position(&self) -> Option<String> {
        None
    }
    /// Why a copy cannot start its feed (an ODBC journal that setup has
    /// not made): the copy refuses to start, as the stream would, rather
    /// than copy for hours and leave the changes made until setup ran
    /// behind it. `None` where the feed is there (and for readers).
    fn feed_missing(&self) -> Option<String> {
        None
    }
    /// Whether a copy of every collection again (`initial-sync --restart`)
    /// should move the stream from the saved position `saved` to
    /// [`Snapshot::start_position`]: only when the feed behind `saved` is
    /// gone (a slot this copy had to create, a journal that started its
    /// numbering over). A feed that is merely behind must be read on from
    /// `saved`: the copy shows no deletes, only the feed has them.
    async fn restarts_feed(&mut self, _saved: &str) -> Result<bool> {
        Ok(true)
    }
    /// The transactions in progress when the copy's snapshot was taken, and
    /// the copy's stamp. Their changes are not in the copy, but a commit
    /// stamped before it became visible (PostgreSQL takes the commit time
    /// before the flush and any synchronous-replication wait) can carry an
    /// older time than the copy: the worker raises their streamed commit
    /// times above the copy's stamp so they win over it.
    fn in_flight(&self) -> Option<InFlight> {
        None
    }
    /// The foreign keys between the mapped tables in this provider, as
    /// `(child, parent)` collections: the copy takes parents first, so a
    /// target with the same keys receives the fan-out in an order it takes.
    async fn foreign_keys(&mut self) -> Result<Vec<(String, String)>> {
        Ok(Vec::new())
    }
    /// Approximate number of rows, for progress bars.
    async fn estimate_rows(&mut self, collection: &str) -> Result<Option<u64>>;
    /// The rows after `after` (exclusive) in key order, at most `limit`.
    async fn chunk(
        &mut self,
        collection: &str,
        after: Option<&Value>,
        limit: usize,
    ) -> Result<SnapshotChunk>;
}

/// Per-collection count and order-independent checksum (`connector verify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Digest {
    pub count: u64,
    pub checksum: u64,
}

impl Digest {
    pub fn add(&mut self, doc_hash: u64) {
        self.count += 1;
        self.checksum = self.checksum.wrapping_add(doc_hash);
    }
}

/// What a provider crate exposes to the worker.
#[async_trait]
pub trait Provider: Send + Sync {
    fn spec(&self) -> &ProviderSpec;
    /// Connects and returns a one-line description of the server.
    async fn test_connection(&self) -> Result<String>;
    /// Creates what the feed needs (publication, slot, triggers …); with
    /// `dry_run` only returns the statements. Idempotent.
    async fn setup(&self, mapping: &ProviderMapping, dry_run: bool) -> Result<Vec<String>>;
    async fn open_source(
        &self,
        mapping: Arc<ProviderMapping>,
        resume_from: Option<String>,
    ) -> Result<Box<dyn Source>>;
    async fn open_sink(&self, mapping: Arc<ProviderMapping>) -> Result<Box<dyn Sink>>;
    /// Reads existing rows for an initial sync: it may make what streaming
    /// after the copy needs (a PostgreSQL slot with an exported snapshot).
    async fn open_snapshot(&self, mapping: Arc<ProviderMapping>) -> Result<Box<dyn Snapshot>>;

    /// Reads existing rows and changes nothing in the provider (`verify`,
    /// which maps them like incoming changes and compares them with the
    /// store): a provider whose [`Provider::open_snapshot`] makes anything
    /// reads without it here.
    async fn open_reader(&self, mapping: Arc<ProviderMapping>) -> Result<Box<dyn Snapshot>> {
        self.open_snapshot(mapping).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_kinds() {
        assert!(valid_provider_name("hq"));
        assert!(valid_provider_name("shop-2_eu"));
        assert!(!valid_provider_name("Hq"));
        assert!(!valid_provider_name("2hq"));
        assert!(!valid_provider_name(""));
        assert_eq!("db2".parse::<ProviderKind>(), Ok(ProviderKind::Odbc));
        assert!("oracle"
            .parse::<ProviderKind>()
            .unwrap_err()
            .contains("oracle"));
    }

    #[test]
    fn debug_output_redacts_the_connection_string() {
        let spec = ProviderSpec {
            name: "hq".into(),
            kind: ProviderKind::Postgres,
            enabled: true,
            connection_string: "postgres://u:hunter2@h/db".into(),
            database: None,
            schema: None,
            options: BTreeMap::new(),
        };
        let shown = format!("{spec:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("u:***@h"));
    }
}
