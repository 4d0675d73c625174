//! `connector initial-sync`: copies the rows a provider already holds into
//! the store, collection by collection, in key order.
//!
//! Each chunk is merged in one store transaction together with the
//! collection's progress (`initial-sync:<provider>:<collection>` in the
//! positions table: the last key copied, rows so far, done or not). After a
//! crash the copy resumes after the last finished chunk; a collection
//! already done is skipped (`--restart` copies it again). Snapshot rows are
//! stamped with the time the provider's snapshot is consistent as of, so a
//! change committed after it (and streamed later) wins over it; the
//! transactions the snapshot saw running are saved first, so their changes
//! win too however early they were stamped ([`super::in_flight`]). The run's
//! `sink` tasks then fan the documents out to the other providers.
//!
//! Inside `connector run` a shutdown request (SIGTERM) ends the copy after
//! the chunk in flight has committed; the next start resumes after it.

use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};
use tokio::sync::watch;
use tracing::warn;

use connector_core::table_order::TableOrder;
use connector_core::{ConnectorError, MappingSet, Provider, ProviderMapping, ProviderSpec, Stage};
use connector_store::SourceApply;

use super::retry::{Backoff, Decision};
use super::source_task::map_batch;
use super::{blocking, provider_lock, Shared};
use crate::config::Config;
use crate::registry;

/// What `/health` says of a provider whose rows are being copied.
pub const COPYING: &str = "copying existing rows";

/// Rows read per chunk (and merged per store transaction).
pub const CHUNK_ROWS: usize = 5000;

pub fn progress_key(provider: &str, collection: &str) -> String {
    format!("initial-sync:{provider}:{collection}")
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Progress {
    pub after: Option<Value>,
    pub rows: u64,
    pub done: bool,
}

impl Progress {
    fn parse(text: Option<String>) -> Progress {
        let Some(v) = text.and_then(|t| serde_json::from_str::<Value>(&t).ok()) else {
            return Progress::default();
        };
        Progress {
            after: v.get("after").filter(|a| !a.is_null()).cloned(),
            rows: v.get("rows").and_then(Value::as_u64).unwrap_or(0),
            done: v.get("done").and_then(Value::as_bool).unwrap_or(false),
        }
    }

    fn to_json(&self) -> String {
        json!({"after": self.after, "rows": self.rows, "done": self.done}).to_string()
    }
}

/// Whether `connector run` must copy a provider's rows first: a collection
/// whose copy was begun and not finished (a killed initial sync resumes), or,
/// for a provider that has never streamed (no saved position), a collection
/// never fully copied. This is Debezium's `snapshot.mode=initial`;
/// `CONNECTOR_INITIAL_SYNC=never` (`begun_only`) leaves out the second kind
/// only: a copy begun and not finished (an `initial-sync` interrupted, a
/// re-snapshot after a lost feed that failed) always resumes, or the stream
/// would start past rows nobody copied. A provider that streams without
/// ever having been copied (initial sync turned off earlier) is not copied
/// behind the operator's back.
pub fn needed(
    store: &connector_store::Store,
    provider: &str,
    mapping: &ProviderMapping,
    begun_only: bool,
) -> Result<bool, ConnectorError> {
    let streamed = store
        .position(provider)
        .map_err(ConnectorError::from)?
        .is_some();
    for (rule, _, _) in mapping.tables() {
        let saved = store
            .position(&progress_key(provider, &rule.name))
            .map_err(ConnectorError::from)?;
        let begun = saved.is_some();
        if !Progress::parse(saved).done && (begun || (!streamed && !begun_only)) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Every collection of the provider as a copy begun and not finished:
/// (progress key, progress), for [`connector_store::Store::forget_positions`].
pub fn all_begun(provider: &str, mapping: &ProviderMapping) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (rule, _, _) in mapping.tables() {
        let key = progress_key(provider, &rule.name);
        if !out.iter().any(|(k, _)| *k == key) {
            out.push((key, Progress::default().to_json()));
        }
    }
    out
}

/// The collections whose copy was begun and not finished.
pub fn begun_unfinished(
    store: &connector_store::Store,
    provider: &str,
    mapping: &ProviderMapping,
) -> Result<Vec<String>, ConnectorError> {
    let mut out = Vec::new();
    for (rule, _, _) in mapping.tables() {
        let saved = store
            .position(&progress_key(provider, &rule.name))
            .map_err(ConnectorError::from)?;
        if saved.is_some() && !Progress::parse(saved).done && !out.contains(&rule.name) {
            out.push(rule.name.clone());
        }
    }
    Ok(out)
}

/// One collection's result, for the summary.
pub struct Copied {
    pub provider: String,
    pub collection: String,
    pub rows: u64,
    pub seconds: f64,
    pub skipped: bool,
}

pub async fn run(
    config: &Config,
    specs: Vec<ProviderSpec>,
    mappings: Arc<MappingSet>,
    only: Option<&str>,
    restart: bool,
    shutdown: Option<&watch::Receiver<bool>>,
) -> Result<Vec<Copied>, ConnectorError> {
    let shared = Shared::new(config);
    let mut out = Vec::new();
    // Every provider's lock first: nothing is copied when one is held.
    let mut locks = Vec::new();
    for spec in &specs {
        let Some(lock) = provider_lock::try_acquire(&shared.store_path, &spec.name)? else {
            return Err(ConnectorError::permanent(
                Stage::Snapshot,
                format!(
                    "provider {} is streamed (or copied) by another process: its lock {} is held. \
                     Stop that `connector run` first; it copies what it needs by itself when it starts \
                     (a copy beside the stream could overwrite commits the copy did not see)",
                    spec.name,
                    provider_lock::lock_path(&shared.store_path, &spec.name).display()
                ),
            ));
        };
        locks.push(lock);
    }
    for spec in specs {
        let (provider, mapping) = registry::open(&spec, &mappings)?;
        out.extend(copy_provider(&*provider, mapping, &shared, only, restart, shutdown).await?);
        if stopping(shutdown) {
            break;
        }
    }
    Ok(out)
}

/// Whether a shutdown was requested.
pub fn stopping(shutdown: Option<&watch::Receiver<bool>>) -> bool {
    shutdown.is_some_and(|s| *s.borrow())
}

/// Waits `d`, or less when a shutdown is requested; returns whether it was.
async fn pause(d: std::time::Duration, shutdown: Option<&watch::Receiver<bool>>) -> bool {
    match shutdown {
        Some(s) => super::sleep_or_shutdown(d, &mut s.clone()).await,
        None => {
            tokio::time::sleep(d).await;
            false
        }
    }
}

/// Copies one provider's collections (or only `only`); `restart` ignores
/// earlier progress. Also what a source does when its feed lost history
/// and the provider is configured to re-snapshot. Returns early, with what
/// it copied, once `shutdown` fires (the chunk in flight committed).
pub async fn copy_provider(
    provider: &dyn Provider,
    mapping: Arc<ProviderMapping>,
    shared: &Shared,
    only: Option<&str>,
    restart: bool,
    shutdown: Option<&watch::Receiver<bool>>,
) -> Result<Vec<Copied>, ConnectorError> {
    let spec = provider.spec().clone();
    let mut out = Vec::new();
    {
        let mut collections = super::collections(&mapping, only)?;
        let mut snapshot = provider.open_snapshot(mapping.clone()).await?;
        // Parents first (stable: otherwise in the mapping's order).
        let order = match snapshot.foreign_keys().await {
            Ok(keys) => TableOrder::from_foreign_keys(keys),
            Err(e) => {
                warn!(provider = %spec.name, error = %e, "cannot read the foreign keys; copying in the mapping's order");
                TableOrder::default()
            }
        };
        collections.sort_by_key(|c| order.rank(c));
        if let Some(why) = snapshot.feed_missing() {
            return Err(ConnectorError::permanent(Stage::Snapshot, why));
        }
        let mut store = blocking(|| shared.open_store())?;
        let start = snapshot.start_position();
        let saved = blocking(|| store.position(&spec.name)).map_err(ConnectorError::from)?;
        // A copy that starts the provider's feed (no position yet) marks
        // every collection begun, not only those it copies: the stream then
        // starts here, and `needed` has `run` copy the others before it.
        let first = start.is_some() && saved.is_none();
        let marked = if first {
            super::collections(&mapping, None)?
        } else {
            collections.clone()
        };
        let begun: Vec<(String, String)> = marked
            .iter()
            .map(|c| (progress_key(&spec.name, c), Progress::default().to_json()))
            .collect();
        // Every collection copied again over a feed that is gone: the feed
        // restarts with this copy (a slot this copy created, a journal
        // that started over).
        let restart_feed = match (restart && only.is_none(), saved.as_deref()) {
            (true, Some(s)) => snapshot.restarts_feed(s).await?,
            _ => false,
        };
        blocking(|| {
            store.begin_initial_sync(&spec.name, start.as_deref(), restart_feed, restart, &begun)
        })
        .map_err(ConnectorError::from)?;
        save_in_flight(&mut store, &spec.name, &*snapshot)?;
        for collection in collections {
            if stopping(shutdown) {
                break;
            }
            let key = progress_key(&spec.name, &collection);
            let mut progress = if restart {
                Progress::default()
            } else {
                Progress::parse(blocking(|| store.position(&key)).map_err(ConnectorError::from)?)
            };
            if progress.done {
                eprintln!(
                    "{}/{collection}: already copied ({} rows); skipping (--restart copies again)",
                    spec.name, progress.rows
                );
                out.push(Copied {
                    provider: spec.name.clone(),
                    collection,
                    rows: progress.rows,
                    seconds: 0.0,
                    skipped: true,
                });
                continue;
            }
            let estimate = snapshot.estimate_rows(&collection).await?;
            let bar = progress_bar(&spec.name, &collection, estimate, progress.rows);
            let started = Instant::now();
            let start_rows = progress.rows;
            let mut backoff = Backoff::new();
            // The chunk before this one, being merged on a blocking thread
            // while this one is read: the database's work and the store's
            // overlap. Chunks still commit one after another, in key order.
            let mut merging: Merging = None;
            loop {
                let chunk = match snapshot
                    .chunk(&collection, progress.after.as_ref(), CHUNK_ROWS)
                    .await
                {
                    Ok(c) => c,
                    Err(e) => match backoff.decide(&e) {
                        Decision::RetryAfter(d) => {
                            // The chunk being merged commits (or fails) first:
                            // nothing of this copy runs on behind a retry.
                            settle(&mut merging, &bar).await?;
                            warn!(provider = %spec.name, %collection, error = %e, "snapshot read failed; retrying");
                            if pause(d, shutdown).await {
                                break;
                            }
                            snapshot = provider.open_snapshot(mapping.clone()).await?;
                            save_in_flight(&mut store, &spec.name, &*snapshot)?;
                            continue;
                        }
                        Decision::GiveUp | Decision::Resnapshot => {
                            settle(&mut merging, &bar).await?;
                            return Err(e);
                        }
                    },
                };
                backoff.reset();
                let n = chunk.rows.len() as u64;
                progress.rows += n;
                progress.after = chunk.last_key.clone().or(progress.after.take());
                progress.done = chunk.done;
                let position = progress.to_json();
                settle(&mut merging, &bar).await?;
                let (mapping, mut store, name, key) = (
                    mapping.clone(),
                    store.share(),
                    spec.name.clone(),
                    key.clone(),
                );
                merging = Some(tokio::task::spawn_blocking(move || {
                    let mapped = map_batch(&mapping, &chunk.rows);
                    store
                        .apply_source(
                            &name,
                            SourceApply {
                                changes: &mapped.changes,
                                dead_letters: &mapped.dead,
                                left_filter: &mapped.left_filter,
                                position: Some(&position),
                                position_name: Some(&key),
                                received: n,
                                filtered: mapped.filtered,
                            },
                        )
                        .map_err(ConnectorError::from)?;
                    Ok(n)
                }));
                if chunk.done || stopping(shutdown) {
                    break;
                }
                // Test hook: a copy slow enough to be killed halfway.
                if let Some(ms) = std::env::var("CONNECTOR_TEST_PAUSE_AFTER_CHUNK_MS")
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                {
                    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                }
            }
            settle(&mut merging, &bar).await?;
            bar.finish_and_clear();
            let seconds = started.elapsed().as_secs_f64();
            let rows = progress.rows - start_rows;
            eprintln!(
                "{}/{collection}: {rows} rows in {seconds:.1}s ({:.0} rows/s){}{}",
                spec.name,
                rows as f64 / seconds.max(1e-9),
                if start_rows > 0 {
                    format!(", resumed after {start_rows}")
                } else {
                    String::new()
                },
                if progress.done {
                    ""
                } else {
                    "; stopped before the end (the next start resumes it)"
                }
            );
            out.push(Copied {
                provider: spec.name.clone(),
                collection,
                rows,
                seconds,
                skipped: false,
            });
        }
    }
    Ok(out)
}

/// Saves the transactions a newly opened snapshot saw running, before any
/// of its rows is merged ([`super::in_flight`]).
fn save_in_flight(
    store: &mut connector_store::Store,
    provider: &str,
    snapshot: &dyn connector_core::Snapshot,
) -> Result<(), ConnectorError> {
    match snapshot.in_flight() {
        Some(copy) => blocking(|| super::in_flight::save(store, provider, &copy)),
        None => Ok(()),
    }
}

/// A chunk being merged on a blocking thread, returning its row count.
type Merging = Option<tokio::task::JoinHandle<Result<u64, ConnectorError>>>;

/// Waits for the chunk being merged, if any, and counts its rows on `bar`.
async fn settle(merging: &mut Merging, bar: &ProgressBar) -> Result<(), ConnectorError> {
    let Some(merge) = merging.take() else {
        return Ok(());
    };
    let rows = merge.await.map_err(|e| {
        ConnectorError::permanent(Stage::Store, format!("initial sync merge task failed: {e}"))
    })??;
    bar.inc(rows);
    Ok(())
}

fn progress_bar(provider: &str, collection: &str, estimate: Option<u64>, done: u64) -> ProgressBar {
    let bar =
        ProgressBar::with_draw_target(estimate.map(|e| e.max(done)), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{prefix:>24} [{bar:30}] {human_pos}/{human_len} rows  {per_sec:>12}  ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(format!("{provider}/{collection}"));
    bar.set_position(done);
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use connector_core::{MappingSet, ProviderKind};

    #[test]
    fn a_resnapshot_that_fails_before_its_copy_begins_is_still_owed() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = connector_store::Store::open(dir.path().join("store.db")).unwrap();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../mappings/retail.yaml");
        let set = Arc::new(MappingSet::load(&[path.into()]).unwrap());
        let mapping = ProviderMapping::new(set, "hq", ProviderKind::Postgres);
        // hq streamed; every copy done.
        let done: Vec<(String, String)> = all_begun("hq", &mapping)
            .into_iter()
            .map(|(k, _)| {
                (
                    k,
                    Progress {
                        done: true,
                        ..Default::default()
                    }
                    .to_json(),
                )
            })
            .collect();
        store
            .begin_initial_sync("hq", Some("0/10"), true, false, &done)
            .unwrap();
        assert!(!needed(&store, "hq", &mapping, true).unwrap());
        // The slot is lost: positions forgotten, then the copy fails before
        // it records anything. With CONNECTOR_INITIAL_SYNC=never (begun
        // only), the next session must still copy, not stream.
        store
            .forget_positions("hq", &all_begun("hq", &mapping))
            .unwrap();
        assert_eq!(store.position("hq").unwrap(), None);
        assert!(needed(&store, "hq", &mapping, true).unwrap());
        // Forgotten without marks (before), it streamed without copying.
        store.forget_positions("hq", &[]).unwrap();
        assert!(!needed(&store, "hq", &mapping, true).unwrap());
    }
}
