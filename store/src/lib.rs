//! The store: a Ditto-style CRDT document hub on one SQLite file.
//!
//! Every provider talks only to the store. Sources merge their changes in
//! ([`Store::apply_source`]), sinks read the change log out
//! ([`Store::read_log`], [`Store::pending_writes`], [`Store::sink_committed`]),
//! and the store is the single place where conflicts are resolved
//! ([`merge`]: per-field last-writer-wins by HLC stamp, tombstones, counters).
//!
//! ## Crash and restart
//!
//! Everything that must agree commits together, in one SQLite transaction
//! (WAL mode; see [`Durability`] for when commits reach the disk):
//! * a source batch, its dead letters and the source position: after a
//!   restart the source resumes from the saved position; changes replayed
//!   from before it merge idempotently (same stamps, same result);
//! * a sink's shadows and its cursor, *after* the provider committed: a crash
//!   in between makes the sink rewrite the same documents, which its
//!   idempotent upserts absorb.
//!
//! Several processes may open the same file (one per provider under
//! systemd): writers take the lock at `BEGIN IMMEDIATE` and wait up to 30 s
//! for each other, so the change log stays gap-free.

mod apply;
mod checkpoint;
mod conflicts;
mod dead_letters;
mod documents;
mod error;
mod fanout;
pub mod merge;
mod schema;
pub mod shadow;
mod sqlite;
pub mod stamp;
mod status;
mod waiting;

pub use apply::{Applied, SourceApply};
pub use checkpoint::Checkpointer;
pub use conflicts::{Conflict, RETENTION_MS as CONFLICT_RETENTION_MS};
pub use dead_letters::{DeadLetter, NewDeadLetter, SINK_STAGE, WAITING_STAGE};
pub use error::{Result, StoreError};
pub use fanout::{sink_cursor, LogEntry, Pending, SinkRead, SINK_SCAN};
pub use merge::{DocState, Write, WriteKind};
pub use sqlite::{sync_wal_of, Durability, Store};
pub use stamp::Stamp;
pub use status::{CollectionCount, ProviderStats, STOPPED};
pub use waiting::{wait_after, Kept, Requeued, GIVE_UP_AFTER_MS};
