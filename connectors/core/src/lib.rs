//! The shared model of the connector fleet.
//!
//! Everything a provider crate and the worker agree on lives here, and
//! nothing heavier: documents and changes ([`change`]), canonical JSON and
//! fingerprints ([`value`]), primary key changes ([`key_change`]), one JSON form per SQL value ([`column_type`]), the YAML mapping rules ([`mapping`]), the provider
//! traits ([`provider`]), the typed errors that decide retry vs give up
//! ([`error`]), connection-string redaction ([`redact`]), which documents our tagged sink transactions wrote ([`tagged_writes`]), a large source transaction kept on disk ([`spill`]) and metric names
//! ([`metrics`]). No driver, no runtime, no store: a change here rebuilds
//! only what truly depends on it.

pub mod change;
pub mod clock;
pub mod column_type;
pub mod error;
pub mod key_change;
pub mod mapping;
pub mod metrics;
pub mod provider;
pub mod redact;
pub mod row_passes;
pub mod sink_plan;
pub mod spill;
pub mod table_order;
pub mod tagged_writes;
pub mod value;

pub use change::{DocChange, DocOp, Fields, RawChange, RawOp, SinkWrite};
pub use column_type::ColumnType;
pub use error::{ConnectorError, ErrorKind, Result, Stage};
pub use mapping::{Inbound, MappingSet, OutboundRow, ProviderMapping, Rejection};
pub use provider::{
    InFlight, Provider, ProviderKind, ProviderSpec, Refused, Sink, Snapshot, Source, SourceBatch,
};
