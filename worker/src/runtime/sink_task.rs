//! Store → provider.
//!
//! Reads the change log after the provider's cursor, keeps the documents the
//! provider does not hold yet (its shadow differs), maps them to rows, writes
//! them in one provider transaction, and only then moves the cursor and the
//! shadows (one store transaction). Rows the provider rejects for their own
//! fault become dead letters and the rest of the batch is written. Woken by
//! local sources after each commit, and polling for other processes' writes.

use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, gauge};
use serde_json::json;
use tokio::sync::{watch, Notify};
use tracing::{debug, warn};

use connector_core::metrics as names;
use connector_core::{ConnectorError, Provider, ProviderMapping, Result, SinkWrite};
use connector_store::{sink_cursor, NewDeadLetter, Pending};

use super::health::Light;
use super::retry::{after_failure, Backoff, Next};
use super::{blocking, Shared};

/// How often an idle sink looks for changes written by other processes.
const POLL: Duration = Duration::from_millis(100);
/// How often a sink that wrote nothing saves how far it has read.
const CURSOR_SAVE_EVERY: Duration = Duration::from_secs(1);
/// How long a recorded write waits for its echo before it is forgotten.
const INTENT_TTL: Duration = Duration::from_secs(600);

pub async fn run(
    provider: Arc<dyn Provider>,
    mapping: Arc<ProviderMapping>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    wake: Arc<Notify>,
) {
    let name = provider.spec().name.clone();
    let mut backoff = Backoff::new();
    loop {
        if *shutdown.borrow() {
            return;
        }
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
    let mut last_expiry = std::time::Instant::now();
    let mut after = blocking(|| store.cursor(&cursor_name))
        .map_err(ConnectorError::from)?
        .unwrap_or(0);
    let mut last_cursor_save = std::time::Instant::now();
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        let (entries, writes) = blocking(|| -> Result<_> {
            let entries = store.read_log(after, shared.batch_size)?;
            let writes = store.pending_writes(&name, &entries, |c| mapping.syncs(c))?;
            Ok((entries, writes))
        })?;
        if last_expiry.elapsed() > INTENT_TTL {
            last_expiry = std::time::Instant::now();
            blocking(|| store.expire_intents(&name, INTENT_TTL.as_millis() as i64))
                .map_err(ConnectorError::from)?;
        }
        let Some(last) = entries.last() else {
            tokio::select! {
                _ = shutdown.changed() => return Ok(()),
                _ = wake.notified() => {},
                _ = tokio::time::sleep(POLL) => {},
            }
            continue;
        };
        let upto = last.seq;
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
        blocking(|| store.record_intents(&name, &mapped)).map_err(ConnectorError::from)?;
        let refused = if rows.is_empty() {
            Vec::new()
        } else {
            sink.write(&rows).await?
        };
        let mut written: Vec<Pending> = Vec::with_capacity(mapped.len());
        for (i, p) in mapped.into_iter().enumerate() {
            match refused.iter().find(|(idx, _)| *idx == i) {
                Some((_, reason)) => {
                    let w = &p.write;
                    warn!(provider = %name, collection = %w.collection, id = %w.id, %reason, "write rejected; kept as a dead letter");
                    rejected.push(dead_letter(w, None, reason.clone()));
                }
                None => written.push(p),
            }
        }
        after = upto;
        // A batch with nothing to write only moves the cursor: kept in
        // memory and saved with the next write (or within a second), since
        // re-reading a few entries after a crash costs nothing.
        if !written.is_empty()
            || !rejected.is_empty()
            || last_cursor_save.elapsed() >= CURSOR_SAVE_EVERY
        {
            blocking(|| store.sink_committed(&name, upto, &written, &rejected))
                .map_err(ConnectorError::from)?;
            last_cursor_save = std::time::Instant::now();
        }
        backoff.reset();
        shared.health.set(&name, "sink", Light::Green, None);
        counter!(names::SINK_WRITES, "provider" => name.clone()).increment(written.len() as u64);
        counter!(names::DEAD_LETTERS, "provider" => name.clone()).increment(rejected.len() as u64);
        let now = connector_store::stamp::now_millis();
        for e in entries.iter().rev().take(1) {
            gauge!(names::FANOUT_LAG_SECONDS, "source" => e.origin.clone(), "sink" => name.clone())
                .set((now - e.at_ms).max(0) as f64 / 1000.0);
        }
        debug!(provider = %name, entries = entries.len(), written = written.len(), upto, "sink batch committed");
    }
}

fn dead_letter(w: &SinkWrite, field: Option<String>, reason: String) -> NewDeadLetter {
    NewDeadLetter {
        collection: Some(w.collection.clone()),
        stage: "sink".into(),
        field,
        reason,
        record: json!({"_id": w.id, "doc": w.doc}),
    }
}
