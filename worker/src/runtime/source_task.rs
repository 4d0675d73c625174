//! Provider feed → store.
//!
//! Each batch is mapped (rejected records become dead letters, filtered
//! ones are counted) and merged in one store transaction together with the
//! source position; only then is the provider told the position is safe
//! (e.g. the PostgreSQL slot is acknowledged, once an fsync covers the
//! commit: [`super::ack`]). A crash before the store commit replays the
//! batch; a crash after it resumes past it.

use std::collections::HashSet;
use std::sync::Arc;

use metrics::{counter, gauge};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use connector_core::metrics as names;
use connector_core::tagged_writes;
use connector_core::value::id_key;
use connector_core::{ConnectorError, Inbound, Provider, ProviderMapping, RawChange, Result};
use connector_store::{NewDeadLetter, SourceApply};

use super::ack::{Acks, ACK_EVERY};
use super::health::Light;
use super::retry::{after_failure, Backoff, Next};
use super::{blocking, provider_lock, Shared};

pub async fn run(
    provider: Arc<dyn Provider>,
    mapping: Arc<ProviderMapping>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let name = provider.spec().name.clone();
    let mut backoff = Backoff::new();
    loop {
        if *shutdown.borrow() {
            return;
        }
        // Held through the session and a copy after a lost feed.
        let taken = provider_lock::take_or_wait(
            &shared,
            &name,
            "source",
            &name,
            "streams or copies",
            &mut shutdown,
        )
        .await;
        let (_lock, outcome) = match taken {
            Ok(Some(lock)) => {
                let outcome =
                    session(&*provider, &mapping, &shared, &mut shutdown, &mut backoff).await;
                (Some(lock), outcome)
            }
            Ok(None) => continue,
            Err(e) => (None, Err(e)),
        };
        let Err(e) = outcome else { return };
        match after_failure("source", &name, &e, &mut backoff, &shared, &mut shutdown).await {
            Next::Retry => {}
            Next::Stop => return,
            Next::Resnapshot => {
                // Streaming restarts at the new slot's start once the copy is done.
                let copied = async {
                    let begun = super::initial_sync::all_begun(&name, &mapping);
                    blocking(|| {
                        shared
                            .open_store()?
                            .forget_positions(&name, &begun)
                            .map_err(ConnectorError::from)
                    })?;
                    super::initial_sync::copy_provider(
                        &*provider,
                        mapping.clone(),
                        &shared,
                        None,
                        true,
                        Some(&shutdown),
                    )
                    .await
                };
                if let Err(e) = copied.await {
                    if after_failure("source", &name, &e, &mut backoff, &shared, &mut shutdown)
                        .await
                        == Next::Stop
                    {
                        return;
                    }
                }
            }
        }
    }
}

/// A feed's or a copy's records, mapped.
#[derive(Debug, Default)]
pub struct Mapped {
    pub changes: Vec<connector_core::DocChange>,
    pub dead: Vec<NewDeadLetter>,
    /// Records the collection filters left out.
    pub filtered: u64,
    /// The documents of filtered upserts: the provider's rows left the
    /// filter there (`SourceApply::left_filter`).
    pub left_filter: Vec<(String, serde_json::Value)>,
    /// Our tagged sink transactions among the records: forgotten by
    /// [`tagged_writes`] once the batch is merged.
    pub tagged_txns: Vec<u64>,
}

impl Mapped {
    /// What the store merges of these `received` records, with the source
    /// `position` after them, if any.
    pub fn part<'a>(&'a self, received: u64, position: Option<&'a str>) -> SourceApply<'a> {
        SourceApply {
            changes: &self.changes,
            dead_letters: &self.dead,
            left_filter: &self.left_filter,
            position,
            position_name: None,
            received,
            filtered: self.filtered,
        }
    }
}

/// Maps a batch: changes to merge, records to keep as dead letters, and
/// what the filters left out.
pub fn map_batch(mapping: &ProviderMapping, raw: &[RawChange]) -> Mapped {
    let mut out = Mapped {
        changes: Vec::with_capacity(raw.len()),
        ..Mapped::default()
    };
    // The documents marked so far, by id key: looked up per change only
    // while there are any (a copy filtering half a table must not compare
    // every change with every mark).
    let mut marked: HashSet<(String, String)> = HashSet::new();
    // Each tagged transaction's record of what our sink wrote, taken once.
    let mut written = std::collections::HashMap::new();
    for r in raw {
        if let (true, Some(txn)) = (r.own_write, r.txn) {
            if out.tagged_txns.last() != Some(&txn) {
                out.tagged_txns.push(txn);
            }
        }
        match mapping.inbound(r) {
            Inbound::Change(mut c) => {
                // A change of a document our tagged transaction did not
                // write (a trigger's, a cascade's) is the database's own.
                if let (true, Some(txn)) = (c.own_write, r.txn) {
                    let docs = written
                        .entry(txn)
                        .or_insert_with(|| tagged_writes::written(mapping.provider(), txn));
                    if let Some(docs) = docs {
                        let key =
                            tagged_writes::loose_key(&c.collection, tagged_writes::id_parts(&c.id));
                        c.own_write = docs.contains(&key);
                    }
                }
                // Marks go after the batch's changes: a later change of
                // the document (back in the filter, or its delete) lifts
                // an earlier mark in the same batch.
                if !marked.is_empty() && marked.remove(&(c.collection.clone(), id_key(&c.id))) {
                    out.left_filter
                        .retain(|(coll, id)| !(coll == &c.collection && id == &c.id));
                }
                out.changes.push(c)
            }
            Inbound::Filtered { collection, id } => {
                out.filtered += 1;
                if let Some(id) = id {
                    marked.insert((collection.clone(), id_key(&id)));
                    out.left_filter.push((collection, id));
                }
            }
            Inbound::NotSynced => {}
            Inbound::TruncateSkipped { collection, table } => {
                warn!(provider = mapping.provider(), %table, %collection, "TRUNCATE skipped: the mapping does not set propagate_truncate");
            }
            Inbound::Rejected(rej) => {
                warn!(provider = mapping.provider(), collection = %rej.collection, field = ?rej.field, reason = %rej.reason, "record rejected; kept as a dead letter");
                out.dead.push(NewDeadLetter {
                    collection: Some(rej.collection),
                    stage: "mapping".into(),
                    field: rej.field,
                    reason: rej.reason,
                    record: serde_json::to_value(r).unwrap_or_default(),
                });
            }
        }
    }
    out
}

async fn session(
    provider: &dyn Provider,
    mapping: &Arc<ProviderMapping>,
    shared: &Shared,
    shutdown: &mut watch::Receiver<bool>,
    backoff: &mut Backoff,
) -> Result<()> {
    let name = provider.spec().name.clone();
    let mut store = blocking(|| shared.open_store())?;
    let begun_only = !shared.auto_initial_sync;
    if blocking(|| super::initial_sync::needed(&store, &name, mapping, begun_only))? {
        shared.health.set(
            &name,
            "source",
            Light::Yellow,
            Some(super::initial_sync::COPYING.into()),
        );
        // With initial sync off, only the copies begun and not finished.
        let only: Vec<Option<String>> = if begun_only {
            blocking(|| super::initial_sync::begun_unfinished(&store, &name, mapping))?
                .into_iter()
                .map(Some)
                .collect()
        } else {
            vec![None]
        };
        for collection in &only {
            super::initial_sync::copy_provider(
                provider,
                mapping.clone(),
                shared,
                collection.as_deref(),
                false,
                Some(shutdown),
            )
            .await?;
        }
        if *shutdown.borrow() {
            return Ok(());
        }
    }
    let resume = blocking(|| store.position(&name)).map_err(ConnectorError::from)?;
    // A new replication session confirms the position it starts from at
    // once; after a failed session that position may still be only in the
    // page cache (its acknowledgements were dropped before their fsync).
    blocking(|| connector_store::sync_wal_of(store.path())).map_err(ConnectorError::from)?;
    let mut source = provider.open_source(mapping.clone(), resume).await?;
    shared.health.set(&name, "source", Light::Green, None);
    // (The provider's feed runs again, in this process or a restarted one.)
    blocking(|| store.note_running(&name, "source")).map_err(ConnectorError::from)?;
    let mut acks = Acks::new(store.path().to_path_buf());
    let in_flight = blocking(|| super::in_flight::load(&store, &name))?;
    loop {
        acks.advance(&mut *source).await?;
        let wait = if acks.pending() {
            ACK_EVERY.min(shared.interval)
        } else {
            shared.interval
        };
        let mut batch = tokio::select! {
            _ = shutdown.changed() => {
                acks.flush(&mut *source).await?;
                return Ok(());
            }
            b = source.next_batch(shared.batch_size, wait) => b?,
        };
        backoff.reset();
        shared.health.set(&name, "source", Light::Green, None);
        if let Some(details) = &batch.status {
            blocking(|| store.set_provider_details(&name, details))
                .map_err(ConnectorError::from)?;
        }
        if batch.changes.is_empty() && batch.position.is_none() {
            continue;
        }
        let mut received = batch.changes.len() as u64;
        let mut raised = in_flight.raise(&mut batch.changes);
        let mapped = map_batch(mapping, &batch.changes);
        let mut tagged_txns = mapped.tagged_txns.clone();
        let mut last_commit = mapped.changes.iter().filter_map(|c| c.commit_ts_ms).max();
        let spilled = batch.spilled.take();
        let applied = blocking(|| {
            store.apply_source_parts(&name, |merge| -> Result<()> {
                merge(mapped.part(received, batch.position.as_deref()))?;
                // A large transaction, read back from disk a chunk at a time
                // into the same store transaction.
                for chunk in spilled
                    .map(|s| s.chunks(shared.batch_size))
                    .transpose()?
                    .into_iter()
                    .flatten()
                {
                    let mut chunk = chunk?;
                    raised += in_flight.raise(&mut chunk);
                    let part = map_batch(mapping, &chunk);
                    merge(part.part(chunk.len() as u64, None))?;
                    received += chunk.len() as u64;
                    tagged_txns.extend(part.tagged_txns);
                    last_commit =
                        last_commit.max(part.changes.iter().filter_map(|c| c.commit_ts_ms).max());
                }
                Ok(())
            })
        })?;
        if raised > 0 {
            debug!(provider = %name, raised, "changes of transactions a copy missed raised above it");
        }
        tagged_writes::forget(&name, tagged_txns.iter().copied());
        let label = name.clone();
        counter!(names::EVENTS_RECEIVED, "provider" => label.clone()).increment(received);
        counter!(names::EVENTS_APPLIED, "provider" => label.clone()).increment(applied.applied);
        counter!(names::ECHOES_DROPPED, "provider" => label.clone()).increment(applied.echoes);
        counter!(names::DEAD_LETTERS, "provider" => label.clone()).increment(applied.dead_letters);
        counter!(names::CONFLICTS, "provider" => label.clone()).increment(applied.conflicts);
        if applied.conflicts > 0 {
            info!(provider = %name, conflicts = applied.conflicts,
                "fields this provider changed concurrently with another one; each kept the later change (connector conflicts lists them)");
        }
        if let Some(ts) = last_commit {
            let lag = (connector_store::stamp::now_millis() - ts).max(0) as f64 / 1000.0;
            gauge!(names::SOURCE_LAG_SECONDS, "provider" => label).set(lag);
        }
        debug!(provider = %name, received, applied = applied.applied, echoes = applied.echoes, "batch merged");
        if applied.applied > 0 {
            shared.wake_sinks();
        }
        if let Some(position) = batch.position {
            acks.merged(position);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connector_core::{MappingSet, ProviderKind, RawOp};
    use serde_json::json;

    fn customer(deleted: bool) -> RawChange {
        RawChange {
            table: "customers".into(),
            schema: None,
            op: RawOp::Update,
            row: json!({"customer_id": 1, "deleted": deleted})
                .as_object()
                .unwrap()
                .clone(),
            before: None,
            commit_ts_ms: Some(1),
            unchanged: vec![],
            unchanged_from: None,
            own_write: false,
            txn: None,
        }
    }

    #[test]
    fn a_later_change_in_the_batch_lifts_a_filter_mark_and_not_the_reverse() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../mappings/retail.yaml");
        let set = Arc::new(MappingSet::load(&[path.into()]).unwrap());
        let mapping = ProviderMapping::new(set, "hq", ProviderKind::Postgres);
        // Soft-deleted (left out by the filter), then back.
        let back = map_batch(&mapping, &[customer(true), customer(false)]);
        assert_eq!(
            (back.filtered, back.left_filter.len(), back.changes.len()),
            (1, 0, 1)
        );
        // Back, then soft-deleted: the mark stands, after the change.
        let left = map_batch(&mapping, &[customer(false), customer(true)]);
        assert_eq!(left.left_filter, vec![("customers".to_string(), json!(1))]);
    }
}
