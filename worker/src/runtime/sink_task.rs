//! Store → provider.
//!
//! Reads the change log after the provider's cursor, keeps the documents the
//! provider does not hold yet (its shadow differs), maps them to rows, writes
//! them in one provider transaction, and only then moves the cursor and the
//! shadows (one store transaction). Rows the provider rejects for their own
//! fault become dead letters and the rest of the batch is written. Woken by
//! local sources after each commit, and polling for other processes' writes.
//!
//! The next batch is read and compared while one is written. The
//! documents the written batch held are compared again afterwards
//! (`Store::recheck_pending`): their shadows moved, and a document written
//! by one batch and deleted (or changed back) in the next would otherwise
//! look held already. Shadows and cursor are still recorded in log order;
//! after a crash the cursor is where the last recorded batch ended.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, gauge};
use serde_json::json;
use tokio::sync::{watch, Notify};
use tracing::{debug, info, warn};

use connector_core::metrics as names;
use connector_core::value::id_key;
use connector_core::{
    ConnectorError, Provider, ProviderMapping, Refused, Result, Sink, SinkWrite, Stage,
};
use connector_store::{
    sink_cursor, Kept, NewDeadLetter, Pending, Requeued, SinkRead, Store, SINK_STAGE, WAITING_STAGE,
};

use super::health::Light;
use super::provider_lock;
use super::retry::{after_failure, Backoff, Next};
use super::{blocking, IntentKey, Shared};

/// How often an idle sink looks for changes written by other processes.
const POLL: Duration = Duration::from_millis(100);
/// How often a sink that wrote nothing saves how far it has read.
const CURSOR_SAVE_EVERY: Duration = Duration::from_secs(1);
/// How long a recorded write waits for its echo before it is forgotten.
const INTENT_TTL: Duration = Duration::from_secs(600);
/// How often a sink looks for refused writes due to be tried again.
const WAITING_EVERY: Duration = Duration::from_secs(1);

pub async fn run(
    provider: Arc<dyn Provider>,
    mapping: Arc<ProviderMapping>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    wake: Arc<Notify>,
) {
    let name = provider.spec().name.clone();
    let mut backoff = Backoff::new();
    // One process at a time writes a provider (a `run` of every provider
    // beside a `run --provider`): two sinks wrote each change twice, and
    // the tagged-write record of one was not the other's source's.
    let lock_name = format!("{name}.sink");
    loop {
        if *shutdown.borrow() {
            return;
        }
        let taken = provider_lock::take_or_wait(
            &shared,
            &name,
            "sink",
            &lock_name,
            "writes",
            &mut shutdown,
        )
        .await;
        let _lock = match taken {
            Ok(Some(lock)) => lock,
            Ok(None) => continue,
            Err(e) => {
                if after_failure("sink", &name, &e, &mut backoff, &shared, &mut shutdown).await
                    != Next::Retry
                {
                    return;
                }
                continue;
            }
        };
        let outcome = session(
            &*provider,
            &mapping,
            &shared,
            &mut shutdown,
            &wake,
            &mut backoff,
        )
        .await;
        let Err(e) = outcome else { return };
        if after_failure("sink", &name, &e, &mut backoff, &shared, &mut shutdown).await
            != Next::Retry
        {
            return;
        }
    }
}

async fn session(
    provider: &dyn Provider,
    mapping: &Arc<ProviderMapping>,
    shared: &Shared,
    shutdown: &mut watch::Receiver<bool>,
    wake: &Notify,
    backoff: &mut Backoff,
) -> Result<()> {
    let name = provider.spec().name.clone();
    let cursor_name = sink_cursor(&name);
    let mut store = blocking(|| shared.open_store())?;
    let mut sink = provider.open_sink(mapping.clone()).await?;
    shared.health.set(&name, "sink", Light::Green, None);
    blocking(|| store.note_running(&name, "sink")).map_err(ConnectorError::from)?;
    // Expired at every session's start too: sessions that fail more often
    // than the TTL would never expire anything.
    let mut last_expiry: Option<std::time::Instant> = None;
    let mut last_requeue: Option<std::time::Instant> = None;
    // A cursor behind compacted entries (a provider added later) is caught
    // by the first read, as one compacted past mid-session is.
    let mut after = blocking(|| store.cursor(&cursor_name))
        .map_err(ConnectorError::from)?
        .unwrap_or(0);
    let mut last_cursor_save = std::time::Instant::now();
    let mut saved = after;
    let mut next: Option<tokio::task::JoinHandle<Result<Batch>>> = None;
    let mut touched: HashMap<String, HashSet<String>> = HashMap::new();
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        let (SinkRead { entries, upto }, writes, missed) = match next.take() {
            Some(read) => {
                let (read, ahead, missed) = read.await.map_err(|e| {
                    ConnectorError::permanent(Stage::Store, format!("sink read task failed: {e}"))
                })??;
                let writes = blocking(|| {
                    store.recheck_pending(&name, &read.entries, ahead, &touched, |c| {
                        mapping.syncs(c)
                    })
                })
                .map_err(ConnectorError::from)?;
                (read, writes, missed)
            }
            None => blocking(|| read_batch(&store, &name, mapping, after, shared.batch_size))?,
        };
        if missed {
            // Compacted past this sink's cursor: before it started (it was
            // added later), or meanwhile (by a process whose configuration
            // does not know this provider yet).
            after = backfill(
                shared,
                &mut store,
                &mut *sink,
                mapping,
                &name,
                after,
                shared.batch_size,
            )
            .await?;
            saved = after;
            continue;
        }
        if last_expiry.is_none_or(|t| t.elapsed() > INTENT_TTL) {
            last_expiry = Some(std::time::Instant::now());
            blocking(|| store.expire_intents(&name, INTENT_TTL.as_millis() as i64))
                .map_err(ConnectorError::from)?;
            forget_expired_owed_intents(shared, &store, &name)?;
        }
        if last_requeue.is_none_or(|t| t.elapsed() >= WAITING_EVERY) {
            last_requeue = Some(std::time::Instant::now());
            requeue_waiting(&mut store, &name, mapping)?;
        }
        if upto == after {
            if after != saved && last_cursor_save.elapsed() >= CURSOR_SAVE_EVERY {
                blocking(|| store.sink_committed(&name, after, &[], &[]))
                    .map_err(ConnectorError::from)?;
                saved = after;
                last_cursor_save = std::time::Instant::now();
            }
            tokio::select! {
                _ = shutdown.changed() => return Ok(()),
                _ = wake.notified() => {},
                _ = tokio::time::sleep(POLL) => {},
            }
            continue;
        }
        after = upto;
        // A batch with nothing to write only moves the cursor: kept in
        // memory and saved with the next write (or within a second), since
        // re-reading a few entries after a crash costs nothing.
        let save_cursor = last_cursor_save.elapsed() >= CURSOR_SAVE_EVERY;
        // The next batch is read and planned while this one is written;
        // what this one writes is compared again before that one is used.
        touched.clear();
        for p in &writes {
            touched
                .entry(p.write.collection.clone())
                .or_default()
                .insert(p.key.clone());
        }
        next = Some({
            let (store, name, mapping, batch) = (
                store.share(),
                name.clone(),
                mapping.clone(),
                shared.batch_size,
            );
            tokio::task::spawn_blocking(move || read_batch(&store, &name, &mapping, upto, batch))
        });
        let (written, rejected) = deliver(
            shared,
            &mut store,
            &mut *sink,
            mapping,
            &name,
            writes,
            upto,
            save_cursor,
        )
        .await?;
        if save_cursor || written > 0 || rejected > 0 {
            last_cursor_save = std::time::Instant::now();
            saved = upto;
        }
        backoff.reset();
        shared.health.set(&name, "sink", Light::Green, None);
        counter!(names::SINK_WRITES, "provider" => name.clone()).increment(written as u64);
        counter!(names::DEAD_LETTERS, "provider" => name.clone()).increment(rejected as u64);
        let now = connector_store::stamp::now_millis();
        for e in entries.iter().rev().take(1) {
            gauge!(names::FANOUT_LAG_SECONDS, "source" => e.origin.clone(), "sink" => name.clone())
                .set((now - e.at_ms).max(0) as f64 / 1000.0);
        }
        debug!(provider = %name, entries = entries.len(), written, upto, "sink batch committed");
    }
}

/// Forgets the failed writes of `name` whose intent is gone (expired, or
/// the document moved on and the intent went with its echo): a retry of
/// one records its intent afresh.
fn forget_expired_owed_intents(shared: &Shared, store: &Store, name: &str) -> Result<()> {
    let owed: Vec<IntentKey> = {
        let unwritten = shared
            .unwritten_intents
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        unwritten.iter().filter(|k| k.0 == name).cloned().collect()
    };
    let mut gone = Vec::new();
    for key in owed {
        let (_, collection, id, shadow) = &key;
        if !blocking(|| store.has_intent(name, collection, id, shadow))? {
            gone.push(key);
        }
    }
    let mut unwritten = shared
        .unwritten_intents
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    for key in &gone {
        unwritten.remove(key);
    }
    Ok(())
}

/// A window of the log, the writes it calls for, and whether entries after
/// `after` were compacted before the sink read them.
type Batch = (SinkRead, Vec<Pending>, bool);

/// The log entries after `after` (a window of at most `batch`) and the
/// documents among them the provider does not hold yet.
fn read_batch(
    store: &Store,
    name: &str,
    mapping: &ProviderMapping,
    after: i64,
    batch: usize,
) -> Result<Batch> {
    let read = store.read_log_for_sink(name, after, batch)?;
    // Checked after the read: compaction only moves forward, so a read that
    // missed entries is seen here.
    if store.missed_compacted(after)? {
        return Ok((read, Vec::new(), true));
    }
    let writes = store.pending_writes(name, &read.entries, |c| mapping.syncs(c))?;
    Ok((read, writes, false))
}

/// Writes the pending documents the provider does not hold, then records
/// (one store transaction) the shadows, the dead letters and the cursor
/// `upto` — the cursor alone only when `save_cursor`. Returns how many were
/// written and rejected.
#[allow(clippy::too_many_arguments)]
async fn deliver(
    shared: &Shared,
    store: &mut Store,
    sink: &mut dyn Sink,
    mapping: &ProviderMapping,
    name: &str,
    writes: Vec<Pending>,
    upto: i64,
    save_cursor: bool,
) -> Result<(usize, usize)> {
    let mut rows = Vec::with_capacity(writes.len());
    let mut mapped: Vec<Pending> = Vec::with_capacity(writes.len());
    let mut rejected = Vec::new();
    for p in writes {
        match mapping.outbound(&p.write) {
            Ok(row) => {
                rows.push(row);
                mapped.push(p);
            }
            Err(rej) => rejected.push(dead_letter(&p.write, rej.field, rej.reason)),
        }
    }
    // Recorded before the provider write: its echo may come back through
    // the provider's feed before `sink_committed` stores the shadows.
    // Unneeded where the feed itself marks our writes. A write retried
    // after a failure does not record its intents again: a spare copy
    // would outlive the one echo and take the provider's own later change
    // back to that image for ours.
    let intents = !sink.tags_own_writes();
    let key_of = |p: &Pending| -> IntentKey {
        (
            name.to_string(),
            p.write.collection.clone(),
            p.key.clone(),
            p.shadow.encode(),
        )
    };
    if intents {
        let (retried, fresh): (Vec<&Pending>, Vec<&Pending>) = {
            let unwritten = shared
                .unwritten_intents
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            mapped.iter().partition(|p| unwritten.contains(&key_of(p)))
        };
        blocking(|| {
            store.record_intents(name, &fresh)?;
            store.record_retried_intents(name, &retried)
        })
        .map_err(ConnectorError::from)?;
    }
    let outcome = if rows.is_empty() {
        Ok(Vec::new())
    } else {
        sink.write(&rows).await
    };
    if intents {
        let mut unwritten = shared
            .unwritten_intents
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match &outcome {
            Err(_) => unwritten.extend(mapped.iter().map(key_of)),
            // These documents are written, whatever image an earlier
            // failed write of theirs had (the echo of this one takes the
            // older intents with it: a later write of that image again is
            // a fresh one). Other documents' failed writes stay owed: a
            // session that starts from a saved cursor behind the failed
            // batch reads it in windows cut elsewhere, and one retried
            // later as fresh would leave a spare intent (taking a later
            // change of the provider's own for our echo). Those whose
            // intent is gone are forgotten at the next expiry.
            Ok(_) => {
                let written: HashSet<(&str, &str)> = mapped
                    .iter()
                    .map(|p| (p.write.collection.as_str(), p.key.as_str()))
                    .collect();
                unwritten
                    .retain(|k| !(k.0 == name && written.contains(&(k.1.as_str(), k.2.as_str()))));
            }
        }
    }
    let refused = outcome?;
    if !refused.is_empty() && !sink.tags_own_writes() {
        let never_written: Vec<&Pending> = refused.iter().map(|r| &mapped[r.row]).collect();
        blocking(|| store.drop_intents(name, &never_written)).map_err(ConnectorError::from)?;
    }
    let mut refused: HashMap<usize, Refused> = refused.into_iter().map(|r| (r.row, r)).collect();
    let mut written: Vec<Pending> = Vec::with_capacity(mapped.len());
    for (i, p) in mapped.into_iter().enumerate() {
        match refused.remove(&i) {
            None => written.push(p),
            Some(r) => {
                let mut letter = dead_letter(&p.write, None, r.reason);
                if r.awaits_reference {
                    letter.stage = WAITING_STAGE.into();
                }
                rejected.push(letter);
            }
        }
    }
    let mut needs_a_person = 0;
    if !written.is_empty() || !rejected.is_empty() || save_cursor {
        let kept = blocking(|| store.sink_committed(name, upto, &written, &rejected))
            .map_err(ConnectorError::from)?;
        needs_a_person = kept.iter().filter(|k| **k == Kept::DeadLetter).count();
        for (letter, kept) in rejected.iter().zip(kept) {
            let (collection, id) = (
                letter.collection.as_deref().unwrap_or_default(),
                &letter.record["_id"],
            );
            let reason = &letter.reason;
            match kept {
                Kept::DeadLetter => {
                    warn!(provider = %name, %collection, %id, %reason, "write rejected; kept as a dead letter")
                }
                Kept::Waits => {
                    warn!(provider = %name, %collection, %id, %reason, "write waits for a row it references; tried again until it lands (24 h at most)")
                }
                Kept::WaitsAgain => {
                    debug!(provider = %name, %collection, %id, %reason, "write refused again; still waiting")
                }
            }
        }
    }
    Ok((written.len(), needs_a_person))
}

/// Puts the writes a foreign key refused that are due back on the log
/// (`Store::requeue_waiting`); one refused again a day after its first
/// refusal is a dead letter for a person then (`Kept::DeadLetter`).
fn requeue_waiting(store: &mut Store, name: &str, mapping: &ProviderMapping) -> Result<()> {
    let now = connector_store::stamp::now_millis();
    let Requeued { documents, moot } =
        blocking(|| store.requeue_waiting(name, now, |c| mapping.syncs(c)))
            .map_err(ConnectorError::from)?;
    if !documents.is_empty() {
        info!(provider = %name, writes = documents.len(), "trying refused writes again: they wait for rows they reference");
    }
    for (collection, key) in moot {
        debug!(provider = %name, %collection, id = %key, "a waiting write has nothing left to write; its letter is gone");
    }
    Ok(())
}

/// A sink that missed change-log entries compaction deleted (added after
/// them, or left behind) compares every document with what it holds and
/// writes the difference, then continues from the log's end as of the start.
/// Interrupted, it starts over: documents already written are up to date.
async fn backfill(
    shared: &Shared,
    store: &mut Store,
    sink: &mut dyn Sink,
    mapping: &ProviderMapping,
    name: &str,
    cursor: i64,
    batch: usize,
) -> Result<i64> {
    let mark = blocking(|| store.last_seq()).map_err(ConnectorError::from)?;
    warn!(provider = %name, cursor, log_end = mark, "this sink missed compacted change-log entries; comparing every document");
    let mut after: Option<(String, String)> = None;
    let mut total = 0;
    loop {
        let (entries, writes) = blocking(|| -> Result<_> {
            let entries = store
                .document_entries(after.as_ref().map(|(c, i)| (c.as_str(), i.as_str())), batch)?;
            let writes = store.pending_writes(name, &entries, |c| mapping.syncs(c))?;
            Ok((entries, writes))
        })?;
        let Some(last) = entries.last() else { break };
        after = Some((last.collection.clone(), id_key(&last.id)));
        total += deliver(shared, store, sink, mapping, name, writes, cursor, false)
            .await?
            .0;
    }
    blocking(|| store.sink_committed(name, mark, &[], &[])).map_err(ConnectorError::from)?;
    tracing::info!(provider = %name, written = total, "backfill done");
    Ok(mark)
}

fn dead_letter(w: &SinkWrite, field: Option<String>, reason: String) -> NewDeadLetter {
    NewDeadLetter {
        collection: Some(w.collection.clone()),
        stage: SINK_STAGE.into(),
        field,
        reason,
        record: json!({"_id": w.id, "doc": w.doc}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connector_core::{DocChange, DocOp, MappingSet, ProviderKind};
    use connector_store::SourceApply;
    use serde_json::json;

    /// hq's upsert of order `id`.
    fn order(id: i64) -> DocChange {
        DocChange {
            collection: "orders".into(),
            id: json!(id),
            op: DocOp::Upsert,
            fields: json!({"order_id": id}).as_object().unwrap().clone(),
            before: None,
            commit_ts_ms: Some(1000),
            counters: Arc::from(Vec::<String>::new()),
            unchanged: vec![],
            unchanged_from: None,
            snapshot: false,
            own_write: false,
        }
    }

    #[test]
    fn a_read_after_entries_were_compacted_past_the_cursor_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path().join("store.db")).unwrap();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../mappings/retail.yaml");
        let set = Arc::new(MappingSet::load(&[path.into()]).unwrap());
        let mapping = ProviderMapping::new(set, "shop", ProviderKind::Postgres);
        let changes: Vec<DocChange> = (1..=5).map(order).collect();
        let batch = SourceApply {
            changes: &changes,
            ..Default::default()
        };
        store.apply_source("hq", batch).unwrap();
        let (_, writes, missed) = read_batch(&store, "shop", &mapping, 0, 100).unwrap();
        assert_eq!((writes.len(), missed), (5, false));
        // Another process, configured without shop, compacts up to hq's.
        store.set_cursor(&sink_cursor("hq"), 3).unwrap();
        store.compact_log(&[sink_cursor("hq")]).unwrap();
        let (_, writes, missed) = read_batch(&store, "shop", &mapping, 0, 100).unwrap();
        assert!(missed && writes.is_empty());
        let (_, _, missed) = read_batch(&store, "shop", &mapping, 3, 100).unwrap();
        assert!(!missed);
    }

    /// A provider write that fails once (its outcome unknown), then works.
    struct FailsOnce(bool);

    #[async_trait::async_trait]
    impl Sink for FailsOnce {
        async fn write(
            &mut self,
            _rows: &[connector_core::OutboundRow],
        ) -> Result<Vec<connector_core::Refused>> {
            if std::mem::replace(&mut self.0, false) {
                return Err(ConnectorError::transient(Stage::Sink, "connection reset"));
            }
            Ok(Vec::new())
        }
    }

    /// hq's changes, merged.
    fn merge_from_hq(store: &mut Store, changes: &[DocChange]) {
        store
            .apply_source(
                "hq",
                SourceApply {
                    changes,
                    ..Default::default()
                },
            )
            .unwrap();
    }

    /// shop's feed delivers a commit an hour ahead: an echo of a write made
    /// before now would have come.
    fn shops_feed_moves_on(store: &mut Store) {
        let mut later = order(2);
        later.commit_ts_ms = Some(connector_store::stamp::now_millis() + 3_600_000);
        store
            .apply_source(
                "shop",
                SourceApply {
                    changes: std::slice::from_ref(&later),
                    position: Some("0/9"),
                    ..Default::default()
                },
            )
            .unwrap();
    }

    /// A store in a temporary directory, its runtime state, and shop's
    /// retail mapping.
    fn shop_sink_fixture() -> (tempfile::TempDir, Arc<Shared>, Store, ProviderMapping) {
        let dir = tempfile::tempdir().unwrap();
        let env: std::collections::BTreeMap<String, String> = [(
            "CONNECTOR_STORE".to_string(),
            dir.path().join("store.db").display().to_string(),
        )]
        .into();
        let config = crate::config::Config::from_env(&env).unwrap();
        let shared = Shared::new(&config);
        let store = shared.open_store().unwrap();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../mappings/retail.yaml");
        let set = Arc::new(MappingSet::load(&[path.into()]).unwrap());
        let mapping = ProviderMapping::new(set, "shop", ProviderKind::Postgres);
        (dir, shared, store, mapping)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_batch_retried_after_a_failed_write_records_its_intents_once() {
        let (_dir, shared, mut store, mapping) = shop_sink_fixture();
        let order = order(1);
        let batch = SourceApply {
            changes: std::slice::from_ref(&order),
            ..Default::default()
        };
        store.apply_source("hq", batch).unwrap();
        let mut sink = FailsOnce(true);
        for attempt in 0..2 {
            let (_, writes, _) = read_batch(&store, "shop", &mapping, 0, 100).unwrap();
            let out = deliver(
                &shared, &mut store, &mut sink, &mapping, "shop", writes, 1, true,
            )
            .await;
            assert_eq!(out.is_ok(), attempt == 1);
        }
        assert_eq!(
            store.intent_count("shop").unwrap(),
            1,
            "one intent for one echo"
        );
        assert!(shared.unwritten_intents.lock().unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_failed_write_retried_after_another_batch_still_records_its_intent_once() {
        let (_dir, shared, mut store, mapping) = shop_sink_fixture();
        let orders = [order(1), order(2)];
        merge_from_hq(&mut store, &orders);
        let mut sink = FailsOnce(true);
        let (_, writes, _) = read_batch(&store, "shop", &mapping, 0, 100).unwrap();
        let failed = deliver(
            &shared, &mut store, &mut sink, &mapping, "shop", writes, 2, true,
        )
        .await;
        assert!(failed.is_err());
        // The next session's windows are cut elsewhere: order 2 is written
        // alone first, then order 1.
        let (_, writes, _) = read_batch(&store, "shop", &mapping, 0, 100).unwrap();
        let (first, second): (Vec<Pending>, Vec<Pending>) =
            writes.into_iter().partition(|p| p.write.id == json!(2));
        for batch in [first, second] {
            deliver(
                &shared, &mut store, &mut sink, &mapping, "shop", batch, 2, true,
            )
            .await
            .unwrap();
        }
        // A spare intent for order 1 would take a later change of shop's
        // own to that image for our echo.
        assert_eq!(store.intent_count("shop").unwrap(), 2, "one per write");
        assert!(shared.unwritten_intents.lock().unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_document_back_at_the_image_of_its_failed_write_records_a_fresh_intent() {
        let (_dir, shared, mut store, mapping) = shop_sink_fixture();
        let status = |s: &str, ts: i64| {
            let mut c = order(1);
            c.fields.insert("status".into(), json!(s));
            c.commit_ts_ms = Some(ts);
            c
        };
        let mut sink = FailsOnce(true);
        let mut after = 0;
        // A fails (its intent stays, owed); B is written; then A again.
        for (i, s) in ["a", "b", "a"].into_iter().enumerate() {
            let change = status(s, 1000 + i as i64);
            store
                .apply_source(
                    "hq",
                    SourceApply {
                        changes: std::slice::from_ref(&change),
                        ..Default::default()
                    },
                )
                .unwrap();
            let (read, writes, _) = read_batch(&store, "shop", &mapping, after, 100).unwrap();
            let out = deliver(
                &shared, &mut store, &mut sink, &mapping, "shop", writes, read.upto, true,
            )
            .await;
            assert_eq!(out.is_ok(), i > 0);
            if out.is_ok() {
                after = read.upto;
            }
        }
        // B's echo takes A's old intent with its own; the last write of A
        // needs one of its own, not the old one dated again.
        assert_eq!(store.intent_count("shop").unwrap(), 3);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_retried_intent_lives_from_the_attempt_that_wrote_it() {
        let (_dir, shared, mut store, mapping) = shop_sink_fixture();
        let order1 = order(1);
        merge_from_hq(&mut store, std::slice::from_ref(&order1));
        let mut sink = FailsOnce(true);
        for attempt in 0..2 {
            if attempt == 1 {
                // The write kept failing for longer than intents live.
                std::thread::sleep(std::time::Duration::from_millis(300));
            }
            let (_, writes, _) = read_batch(&store, "shop", &mapping, 0, 100).unwrap();
            let out = deliver(
                &shared, &mut store, &mut sink, &mapping, "shop", writes, 1, true,
            )
            .await;
            assert_eq!(out.is_ok(), attempt == 1);
        }
        // shop's feed moves on; the echo of the write just made is due.
        shops_feed_moves_on(&mut store);
        assert_eq!(store.expire_intents("shop", 200).unwrap(), 0);
        assert_eq!(store.intent_count("shop").unwrap(), 1);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_owed_intent_is_forgotten_once_it_expired() {
        let (_dir, shared, mut store, mapping) = shop_sink_fixture();
        let order1 = order(1);
        merge_from_hq(&mut store, std::slice::from_ref(&order1));
        let (_, writes, _) = read_batch(&store, "shop", &mapping, 0, 100).unwrap();
        let failed = deliver(
            &shared,
            &mut store,
            &mut FailsOnce(true),
            &mapping,
            "shop",
            writes,
            1,
            true,
        )
        .await;
        assert!(failed.is_err());
        forget_expired_owed_intents(&shared, &store, "shop").unwrap();
        assert_eq!(
            shared.unwritten_intents.lock().unwrap().len(),
            1,
            "still owed"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
        shops_feed_moves_on(&mut store);
        assert_eq!(store.expire_intents("shop", 0).unwrap(), 1);
        forget_expired_owed_intents(&shared, &store, "shop").unwrap();
        assert!(shared.unwritten_intents.lock().unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_write_retried_after_its_intent_expired_records_it_again() {
        let (_dir, shared, mut store, mapping) = shop_sink_fixture();
        let order1 = order(1);
        merge_from_hq(&mut store, std::slice::from_ref(&order1));
        let mut sink = FailsOnce(true);
        let (_, writes, _) = read_batch(&store, "shop", &mapping, 0, 100).unwrap();
        let failed = deliver(
            &shared, &mut store, &mut sink, &mapping, "shop", writes, 1, true,
        )
        .await;
        assert!(failed.is_err());
        // The write keeps failing for longer than intents live: shop's feed
        // moves on (a later commit of its own) and the intent expires.
        shops_feed_moves_on(&mut store);
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(store.expire_intents("shop", 0).unwrap(), 1);
        let (_, writes, _) = read_batch(&store, "shop", &mapping, 0, 100).unwrap();
        deliver(
            &shared, &mut store, &mut sink, &mapping, "shop", writes, 1, true,
        )
        .await
        .unwrap();
        // Without it, the echo matched nothing and merged as shop's change.
        assert_eq!(store.intent_count("shop").unwrap(), 1);
    }
}
