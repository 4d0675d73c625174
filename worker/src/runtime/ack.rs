//! Acknowledging source positions once the store has them on disk.
//!
//! A provider may discard what it was told is safe (a PostgreSQL slot frees
//! its WAL), so a position is acknowledged only after an fsync of the
//! store's WAL that covers its commit. Commits themselves do not fsync
//! (`synchronous = NORMAL`): one fsync at most every [`ACK_EVERY`] covers
//! them all. The fsync runs on a blocking thread while the source goes on
//! reading; it took 4–20 ms under load, and on the source's own path it
//! delayed every change behind it by as much.
//!
//! Crash/restart: a position not yet acknowledged is replayed by the
//! provider from the last acknowledged one; the store's saved position (in
//! the same transaction as the changes) skips what was already merged.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use connector_core::{ConnectorError, Result, Source, Stage};

/// How often a source makes its commits durable and acknowledges them.
pub const ACK_EVERY: Duration = Duration::from_millis(100);

pub struct Acks {
    store_path: PathBuf,
    /// The newest merged position not yet covered by an fsync.
    unacked: Option<String>,
    /// An fsync under way, and the position it covers.
    syncing: Option<(JoinHandle<connector_store::Result<()>>, String)>,
    last_sync: Instant,
}

impl Acks {
    pub fn new(store_path: PathBuf) -> Acks {
        Acks {
            store_path,
            unacked: None,
            syncing: None,
            last_sync: Instant::now(),
        }
    }

    /// `position` is merged (committed to the store, not yet on disk).
    pub fn merged(&mut self, position: String) {
        self.unacked = Some(position);
    }

    /// Whether a position waits for its acknowledgement.
    pub fn pending(&self) -> bool {
        self.unacked.is_some() || self.syncing.is_some()
    }

    /// Acknowledges what a finished fsync covered, and starts the next
    /// fsync when one is due. Never waits for the disk.
    pub async fn advance(&mut self, source: &mut dyn Source) -> Result<()> {
        if self.syncing.as_ref().is_some_and(|(h, _)| h.is_finished()) {
            self.finish_sync(source).await?;
        }
        if self.syncing.is_none() && self.last_sync.elapsed() >= ACK_EVERY {
            if let Some(position) = self.unacked.take() {
                let path = self.store_path.clone();
                let fsync =
                    tokio::task::spawn_blocking(move || connector_store::sync_wal_of(&path));
                self.syncing = Some((fsync, position));
                self.last_sync = Instant::now();
            }
        }
        Ok(())
    }

    /// Makes everything merged durable and acknowledges it (shutdown).
    pub async fn flush(&mut self, source: &mut dyn Source) -> Result<()> {
        self.finish_sync(source).await?;
        if let Some(position) = self.unacked.take() {
            let path = self.store_path.clone();
            super::blocking(|| connector_store::sync_wal_of(&path))
                .map_err(ConnectorError::from)?;
            source.committed(&position).await?;
        }
        Ok(())
    }

    async fn finish_sync(&mut self, source: &mut dyn Source) -> Result<()> {
        let Some((fsync, position)) = self.syncing.take() else {
            return Ok(());
        };
        fsync
            .await
            .map_err(|e| {
                ConnectorError::permanent(Stage::Store, format!("the fsync task failed: {e}"))
            })?
            .map_err(ConnectorError::from)?;
        source.committed(&position).await
    }
}
