//! Checkpoints in the background.
//!
//! In WAL mode every commit appends the pages it changed to the `-wal` file;
//! a checkpoint copies them back into the database file and fsyncs it. Left
//! to SQLite, the checkpoint runs inside the commit that crosses
//! `wal_autocheckpoint`, on the writer's thread, while every task of the
//! process waits for the one connection: under a steady write load that was
//! a 50–100 ms stall every quarter of a second, and a tenth of the worker's
//! CPU on its critical path.
//!
//! A [`Checkpointer`] runs `PRAGMA wal_checkpoint(PASSIVE)` on its own
//! connection and thread instead, every few milliseconds while the WAL
//! grows. A passive checkpoint never blocks writers or readers; it copies
//! the frames committed when it started. When a writer begins and finds
//! every frame copied, it starts the WAL over from its beginning; the
//! worker's tasks leave such moments while they wait on their databases.
//! The writer keeps its own `wal_autocheckpoint`, raised to 128 MB, as a
//! backstop for a writer that never pauses. (At 16 MB, measured, the
//! writer's own checkpoints came often enough to double the p99 latency,
//! though the thread had copied most of their frames.)
//!
//! Crash/restart: a checkpoint only copies committed pages; killed half-way,
//! the WAL still holds them and the next checkpoint (or the next open)
//! copies them again. Nothing is lost, and no transaction waits for it.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;
use tracing::warn;

use crate::error::Result;
use crate::sqlite::Store;

/// The writer's own `wal_autocheckpoint` while a [`Checkpointer`] runs: a
/// backstop (128 MB of WAL).
const WRITER_CHECKPOINT_PAGES: i64 = 32_000;

impl Store {
    /// Moves this connection's checkpoints to a background thread (see the
    /// module docs) until the returned handle is dropped.
    pub fn checkpoint_in_background(&self, every: Duration) -> Result<Checkpointer> {
        let checkpointer = Checkpointer::start(self.path(), every)?;
        self.conn()
            .pragma_update(None, "wal_autocheckpoint", WRITER_CHECKPOINT_PAGES)?;
        Ok(checkpointer)
    }
}

/// A background checkpoint thread; stops (after its current checkpoint)
/// when dropped.
pub struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    progress: Arc<Progress>,
}

/// What the last checkpoint found (all 0 before the first).
#[derive(Default)]
struct Progress {
    runs: AtomicI64,
    wal_frames: AtomicI64,
    copied_frames: AtomicI64,
}

impl Checkpointer {
    /// Starts checkpointing the store at `path`, looking every `every` for
    /// new WAL frames (and sooner while writers outpace it).
    pub fn start(path: &Path, every: Duration) -> Result<Checkpointer> {
        let conn = Connection::open(path)?;
        let (stop, stopped) = mpsc::channel::<()>();
        let progress = Arc::new(Progress::default());
        let shared = progress.clone();
        let thread = std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || run(conn, every, stopped, &shared))
            .map_err(|e| crate::StoreError::Open {
                path: path.display().to_string(),
                message: format!("starting the checkpoint thread: {e}"),
            })?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
            progress,
        })
    }

    /// How many checkpoints have run, and after the last one the frames in
    /// the WAL and how many of them are in the database file.
    pub fn progress(&self) -> (i64, i64, i64) {
        let p = &self.progress;
        (
            p.runs.load(Ordering::Acquire),
            p.wal_frames.load(Ordering::Acquire),
            p.copied_frames.load(Ordering::Acquire),
        )
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(conn: Connection, every: Duration, stopped: mpsc::Receiver<()>, progress: &Progress) {
    let mut wait = every;
    loop {
        match stopped.recv_timeout(wait) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        // (busy, frames in the WAL, frames copied into the database)
        let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        });
        if let Ok((_, log, copied)) = result {
            progress.wal_frames.store(log, Ordering::Release);
            progress.copied_frames.store(copied, Ordering::Release);
            progress.runs.fetch_add(1, Ordering::AcqRel);
        }
        wait = match result {
            // Frames were left (written while it ran): go on soon.
            Ok((_, log, copied)) if copied < log => every / 4,
            Ok(_) => every,
            Err(e) => {
                warn!(error = %e, "background checkpoint failed; retrying in 5 s");
                Duration::from_secs(5)
            }
        };
    }
}
