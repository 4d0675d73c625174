//! The records that flow through the fleet.
//!
//! A provider's source turns its feed into [`RawChange`]s (provider column
//! names, provider table names). Inbound mapping turns each into a
//! [`DocChange`] (collection, `_id`, document fields) or rejects it. The store
//! merges `DocChange`s and fans the merged documents out as [`SinkWrite`]s,
//! which outbound mapping turns into provider rows ([`crate::mapping::OutboundRow`]).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;

/// A JSON object: a row, a document, or a before image.
pub type Fields = Map<String, Value>;

/// What happened to a row in the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawOp {
    Insert,
    Update,
    Delete,
    /// A row read by initial sync (not a change: no before image).
    Snapshot,
    /// The whole table was emptied (`row` is empty).
    Truncate,
}

/// One row change as the provider reported it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawChange {
    /// The provider's table, collection or container name (without schema).
    pub table: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    pub op: RawOp,
    /// The new image (insert, update, snapshot) or the key / old image (delete).
    pub row: Fields,
    /// The old image, where the feed has one (REPLICA IDENTITY FULL, Mongo pre-images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Fields>,
    /// The source's commit time, milliseconds since the Unix epoch. For a
    /// snapshot row: the time the snapshot is consistent as of, so changes
    /// committed after it win over it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_ts_ms: Option<i64>,
    /// Columns the feed did not send because they did not change
    /// (PostgreSQL's unchanged TOAST values): the store keeps its values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unchanged: Vec<String>,
    /// The key of the row whose stored document holds the `unchanged`
    /// values, when it is not this row's own: the old key of an update that
    /// changed the primary key (the new key has no document yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unchanged_from: Option<Fields>,
    /// Written by this fleet's own sink, as the provider itself says
    /// (PostgreSQL: the transaction carries the sink's replication origin).
    /// The store records it as what the provider holds and merges nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub own_write: bool,
    /// The provider's id of the transaction that made the change, where its
    /// feed has one (PostgreSQL: the xid, widened to 64 bits; a journal's
    /// sequence number), never reused. A transaction a copy's snapshot
    /// saw in progress is raised above the copy's stamp
    /// ([`crate::provider::InFlight`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txn: Option<u64>,
}

/// The store-side operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DocOp {
    /// Insert, update or snapshot row: the fields are the whole new image.
    Upsert,
    Delete,
    /// Every document of the collection is deleted (`id` is null).
    Truncate,
}

/// A mapped change of one document.
#[derive(Debug, Clone, PartialEq)]
pub struct DocChange {
    pub collection: String,
    pub id: Value,
    pub op: DocOp,
    /// The new image in document field names (id fields included; `_id` not).
    pub fields: Fields,
    /// The mapped before image, where the feed had one.
    pub before: Option<Fields>,
    pub commit_ts_ms: Option<i64>,
    /// Fields of this collection that merge as counters.
    pub counters: Arc<[String]>,
    /// Fields not sent because unchanged: taken from the store's document.
    pub unchanged: Vec<String>,
    /// The id of the document that holds the `unchanged` values, when it is
    /// not this one (see [`RawChange::unchanged_from`]).
    pub unchanged_from: Option<Value>,
    /// A snapshot row (initial sync) rather than a live change.
    pub snapshot: bool,
    /// See [`RawChange::own_write`].
    pub own_write: bool,
}

/// A merged document on its way to one provider: `doc` is `None` for a delete.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkWrite {
    pub collection: String,
    pub id: Value,
    pub doc: Option<Fields>,
}
