//! The runtime: every provider's source and sink tasks around the store.
//!
//! Per provider two tasks run: the source task (feed → mapping → store, one
//! store transaction per batch, then the provider is told the position is
//! safe) and the sink task (change log → the documents the provider does
//! not hold yet → one provider transaction → cursor and shadows). Batches
//! are bounded by `DITTO_CLOUD_SYNC_BATCH_SIZE`, so memory does not grow
//! with table size, and waits by `DITTO_CLOUD_SYNC_INTERVAL`.
//!
//! Crash/restart: a task holds nothing that is not in the store or the
//! provider. After kill -9 the source resumes at its saved position and the
//! sink at its cursor; both replays are idempotent. On SIGTERM the batch in
//! flight finishes (its position is saved), then the tasks stop.
//!
//! Errors go through [`retry`]: transient → that task reconnects with
//! backoff; permanent → that provider stops (red in `/health`), the others
//! go on.

pub mod ack;
pub mod health;
pub mod http;
pub mod in_flight;
pub mod initial_sync;
pub mod provider_lock;
pub mod retry;
pub mod sink_task;
pub mod source_task;
pub mod systemd;
pub mod verify;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tracing::{error, info, warn};

use connector_core::{ConnectorError, ErrorKind, MappingSet, ProviderMapping, ProviderSpec, Stage};
use connector_store::{sink_cursor, Checkpointer, Store};

use crate::config::Config;
use crate::registry;
use health::{Health, Light};

/// The pause between two compaction slices.
const COMPACT_PAUSE: Duration = Duration::from_millis(5);
/// How often the store's WAL is checked for frames to checkpoint.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(20);

/// (provider, collection, document key, shadow) of a recorded intent.
pub type IntentKey = (String, String, String, Vec<u8>);

/// What every task shares.
pub struct Shared {
    pub store_path: PathBuf,
    pub batch_size: usize,
    pub interval: Duration,
    /// Copy a provider's rows before streaming it (CONNECTOR_INITIAL_SYNC).
    pub auto_initial_sync: bool,
    pub health: Health,
    /// One per sink task in this process; sources wake them after a commit.
    pub sink_wakes: Mutex<Vec<Arc<Notify>>>,
    /// Intents recorded for writes that failed (their outcome unknown):
    /// the retry does not record them again (`sink_task::deliver`).
    pub unwritten_intents: Mutex<HashSet<IntentKey>>,
    /// The process's one store connection, opened on first use, and the
    /// thread that checkpoints its WAL.
    store: Mutex<Option<(Store, Checkpointer)>>,
}

impl Shared {
    pub fn new(config: &Config) -> Arc<Shared> {
        Arc::new(Shared {
            store_path: config.store_path.clone(),
            batch_size: config.batch_size,
            interval: config.sync_interval,
            auto_initial_sync: config.auto_initial_sync,
            health: Health::default(),
            sink_wakes: Mutex::new(Vec::new()),
            unwritten_intents: Mutex::new(HashSet::new()),
            store: Mutex::new(None),
        })
    }

    /// A handle on the process's store connection (see [`Store::share`]).
    pub fn open_store(&self) -> Result<Store, ConnectorError> {
        let mut store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((s, _)) = &*store {
            return Ok(s.share());
        }
        let opened = Store::open(&self.store_path).map_err(ConnectorError::from)?;
        let checkpointer = opened
            .checkpoint_in_background(CHECKPOINT_EVERY)
            .map_err(ConnectorError::from)?;
        let handle = opened.share();
        *store = Some((opened, checkpointer));
        Ok(handle)
    }

    pub fn wake_sinks(&self) {
        for n in self
            .sink_wakes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            n.notify_one();
        }
    }
}

/// Runs a store operation on this worker thread without stalling the others.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// The collections a provider syncs, or only `only` (an error when the
/// provider does not sync it).
pub fn collections(
    mapping: &ProviderMapping,
    only: Option<&str>,
) -> Result<Vec<String>, ConnectorError> {
    let all: Vec<String> = mapping
        .tables()
        .map(|(r, _, _)| r.name.clone())
        .filter(|c| only.is_none_or(|o| o == c))
        .collect();
    match only {
        Some(o) if all.is_empty() => Err(ConnectorError::permanent(
            Stage::Snapshot,
            format!(
                "collection `{o}` is not synced with provider `{}`",
                mapping.provider()
            ),
        )),
        _ => Ok(all),
    }
}

/// Sleeps, or returns `true` early when shutdown is requested.
pub async fn sleep_or_shutdown(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    if *shutdown.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *shutdown.borrow(),
        _ = shutdown.changed() => true,
    }
}

/// A shutdown channel whose sender fires on SIGTERM or Ctrl-C.
pub fn shutdown_on_signals() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    // Registered here, before the caller tells systemd it is ready: a
    // SIGTERM right after must not take the default action (exit at once).
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {},
        }
        info!("shutdown requested: finishing the batches in flight");
        let _ = tx.send(true);
    });
    rx
}

/// `connector run`'s exit code when every provider stopped on a permanent
/// error: a restart cannot help until an operator acts, so the systemd
/// unit does not restart on it (`RestartPreventExitStatus`), and the unit
/// shows failed at once instead of after ten restarts.
pub const ALL_STOPPED: i32 = 3;

/// `connector run`: every given provider until SIGTERM, or until every
/// provider has stopped on a permanent error ([`ALL_STOPPED`]).
pub async fn run(
    config: &Config,
    specs: Vec<ProviderSpec>,
    mappings: Arc<MappingSet>,
) -> Result<i32, crate::commands::Failure> {
    let shared = Shared::new(config);
    // Before a first copy, which can take hours: SIGTERM ends it after the
    // chunk in flight, and systemd hears READY (with the copy as STATUS)
    // and watchdog pings meanwhile, instead of timing the start out.
    let shutdown = shutdown_on_signals();
    systemd::notify_ready();
    tokio::spawn(systemd::watchdog(shared.health.clone(), shutdown.clone()));
    let metrics = http::install_metrics();
    if let Some(addr) = &config.http_addr {
        // A port another process holds is the configuration's fault (two
        // instances given one address): exit 2, which the unit does not
        // restart, rather than cycle through restarts.
        if let Err(message) =
            http::serve(addr, metrics, shared.health.clone(), shutdown.clone()).await
        {
            return Err(crate::commands::Failure { message, code: 2 });
        }
    }
    if config.auto_initial_sync {
        let store = shared.open_store().map_err(|e| e.to_string())?;
        let mut first = Vec::new();
        for spec in &specs {
            let mapping = ProviderMapping::new(mappings.clone(), &spec.name, spec.kind);
            if initial_sync::needed(&store, &spec.name, &mapping, false)
                .map_err(|e| e.to_string())?
            {
                first.push(spec.clone());
            }
        }
        drop(store);
        if !first.is_empty() {
            let names: Vec<&str> = first.iter().map(|s| s.name.as_str()).collect();
            info!(providers = ?names, "first start: copying existing rows before streaming (CONNECTOR_INITIAL_SYNC=never skips this)");
            systemd::notify_status(&format!("copying existing rows of {}", names.join(", ")));
            for name in &names {
                shared.health.set(
                    name,
                    "source",
                    Light::Yellow,
                    Some(initial_sync::COPYING.into()),
                );
            }
            for spec in first {
                // A provider that cannot be copied now (unreachable, say) does
                // not hold the others back: its source task copies it first,
                // with the usual retries, or stops it with the reason.
                let name = spec.name.clone();
                if let Err(e) = initial_sync::run(
                    config,
                    vec![spec],
                    mappings.clone(),
                    None,
                    false,
                    Some(&shutdown),
                )
                .await
                {
                    warn!(provider = %name, error = %e, "initial sync failed; the provider's task retries it");
                }
                if *shutdown.borrow() {
                    systemd::notify_stopping();
                    info!("stopped during the first copy; the next start resumes it");
                    return Ok(0);
                }
            }
        }
    }
    systemd::notify_status("syncing");
    let mut tasks = tokio::task::JoinSet::new();
    let mut names = Vec::new();
    // Which provider's task each is: a task that panics is that provider
    // stopped (red), not a provider left green with nothing running.
    let mut owners: std::collections::HashMap<tokio::task::Id, (String, &'static str)> =
        std::collections::HashMap::new();
    let mut transient_failure = false;
    for spec in specs {
        let (provider, mapping) = match registry::open(&spec, &mappings) {
            Ok(p) => p,
            Err(e) => {
                transient_failure |= e.kind != ErrorKind::Permanent;
                error!(provider = %spec.name, error = %e, "provider cannot start");
                shared
                    .health
                    .set(&spec.name, "source", Light::Red, Some(e.to_string()));
                if let Ok(mut s) = shared.open_store() {
                    let _ = s.record_error(&spec.name, Stage::Connect.as_str(), &e.to_string());
                }
                continue;
            }
        };
        info!(provider = %spec.name, kind = %spec.kind, connection = %spec.redacted_connection(), "starting");
        names.push(spec.name.clone());
        // Known to /health (and to the all-stopped check) before its tasks run.
        for task in ["source", "sink"] {
            shared
                .health
                .set(&spec.name, task, Light::Yellow, Some("starting".into()));
        }
        let wake = Arc::new(Notify::new());
        shared
            .sink_wakes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(wake.clone());
        let source = tasks.spawn(source_task::run(
            provider.clone(),
            mapping.clone(),
            shared.clone(),
            shutdown.clone(),
        ));
        let sink = tasks.spawn(sink_task::run(
            provider,
            mapping,
            shared.clone(),
            shutdown.clone(),
            wake,
        ));
        owners.insert(source.id(), (spec.name.clone(), "source"));
        owners.insert(sink.id(), (spec.name.clone(), "sink"));
    }
    if names.is_empty() {
        // Refused for good (a bad connection string, a mapping conflict):
        // as when every provider stops on a permanent error.
        if !transient_failure {
            error!("no provider could start, and a restart cannot help (see the errors above)");
            return Ok(ALL_STOPPED);
        }
        return Err("no provider could start (see the errors above)".into());
    }
    // Entries are kept until every enabled provider of the configuration
    // has passed them, not only those running in this process (one process
    // per provider is a supported deployment).
    let mut everyone: Vec<String> = config
        .providers
        .iter()
        .filter(|p| p.enabled)
        .map(|p| p.name.clone())
        .collect();
    everyone.extend(names.iter().cloned());
    everyone.sort();
    everyone.dedup();
    tasks.spawn(compact_loop(
        shared.clone(),
        everyone,
        config.compact_every,
        shutdown.clone(),
    ));
    while let Some(joined) = tasks.join_next_with_id().await {
        if let Err(e) = joined {
            if let Some((name, task)) = owners.get(&e.id()) {
                let why = match e.try_into_panic() {
                    Ok(p) => p
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic".into()),
                    Err(e) => e.to_string(),
                };
                let message = format!(
                    "{task} {}: the task failed: {why} (a bug: please report it with the log)",
                    connector_store::STOPPED
                );
                error!(provider = %name, task, %message, "task failed");
                shared
                    .health
                    .set(name, task, Light::Red, Some(message.clone()));
                let stage = if *task == "source" {
                    Stage::Source
                } else {
                    Stage::Sink
                };
                if let Ok(mut s) = shared.open_store() {
                    let _ = s.record_error(name, stage.as_str(), &message);
                }
            }
        }
        if !*shutdown.borrow() && shared.health.all_red() {
            error!("every provider has stopped on a permanent error");
            return Ok(ALL_STOPPED);
        }
    }
    systemd::notify_stopping();
    info!("stopped cleanly");
    Ok(0)
}

/// Drops change-log entries every provider's sink has passed, twice a
/// minute; nothing while one of them has no cursor yet. (A sink that still
/// finds entries missing — a provider added later — compares every document:
/// `sink_task::backfill`.)
async fn compact_loop(
    shared: Arc<Shared>,
    providers: Vec<String>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let cursors: Vec<String> = providers.iter().map(|p| sink_cursor(p)).collect();
    loop {
        if sleep_or_shutdown(every, &mut shutdown).await {
            return;
        }
        let result = compact(&shared, &cursors, &mut shutdown).await;
        match result {
            Ok(0) => {}
            Ok(n) => info!(entries = n, "compacted the change log"),
            Err(e) => warn!(error = %e, "change-log compaction failed; will retry"),
        }
    }
}

/// One compaction: slice after slice, pausing between them so the streams
/// get the store (nothing while a sink has no cursor yet: see
/// [`Store::compact_log_slice`]).
async fn compact(
    shared: &Shared,
    cursors: &[String],
    shutdown: &mut watch::Receiver<bool>,
) -> Result<u64, ConnectorError> {
    let mut store = shared.open_store()?;
    let mut deleted = 0;
    loop {
        match blocking(|| store.compact_log_slice(cursors)).map_err(ConnectorError::from)? {
            0 => return Ok(deleted),
            n => deleted += n,
        }
        if sleep_or_shutdown(COMPACT_PAUSE, shutdown).await {
            return Ok(deleted);
        }
    }
}
