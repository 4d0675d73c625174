//! Opening the store file and the row-level helpers every part shares.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{Map, Value};

use crate::error::{Result, StoreError};
use crate::merge::DocState;
use crate::schema;
use crate::shadow::Shadow;

/// How long a writer waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Durability of each commit. `Normal` (the default) survives any process
/// crash (kill -9): a committed transaction is in the WAL file, which the OS
/// holds. Against power loss, callers that acknowledge a position to a
/// database first call [`sync_wal_of`] (the source tasks do, at most every
/// 100 ms): one fsync makes every earlier commit durable, instead of one
/// fsync per commit. `Full` fsyncs every commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    Full,
    Normal,
}

/// Pages the connection keeps in memory (SQLite's default is 2 MB).
const CACHE_KIB: i64 = 32 * 1024;

/// A handle on the store. [`Store::open`] makes a connection; [`Store::share`]
/// another handle on the same one, which is how the tasks of one process
/// use the store: one connection per process keeps its page cache warm,
/// where a connection per task found it invalidated by every other task's
/// commit and re-read its pages for each lookup (a quarter of the worker's
/// CPU). Calls on shared handles take turns; several processes still share
/// one file safely (WAL mode serializes their writes).
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

/// A transaction holding this process's connection until it ends; rolled
/// back unless committed. [`Store::write`] takes the store's write lock from
/// the start (`BEGIN IMMEDIATE`); [`Store::read`] gives many lookups one
/// snapshot and one round of file locking, instead of one per statement in
/// autocommit mode.
pub(crate) struct Tx<'a> {
    conn: MutexGuard<'a, Connection>,
    open: bool,
}

impl Tx<'_> {
    pub fn commit(mut self) -> Result<()> {
        self.conn.execute_batch("COMMIT")?;
        self.open = false;
        Ok(())
    }
}

impl Deref for Tx<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.open {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

impl Store {
    pub fn open(path: impl AsRef<Path>) -> Result<Store> {
        Self::open_with(path, Durability::Normal)
    }

    pub fn open_with(path: impl AsRef<Path>, durability: Durability) -> Result<Store> {
        let path = path.as_ref().to_path_buf();
        let fail = |message: String| StoreError::Open {
            path: path.display().to_string(),
            message,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
        }
        let conn = Connection::open(&path).map_err(|e| fail(e.to_string()))?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.set_prepared_statement_cache_capacity(64);
        conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
        // Checkpoints copy hot pages back into the file: every 8,000 pages
        // (32 MB of WAL) rather than SQLite's 1,000, each page is copied
        // once for many commits.
        conn.pragma_update(None, "wal_autocheckpoint", 8000)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(
            None,
            "synchronous",
            match durability {
                Durability::Full => "FULL",
                Durability::Normal => "NORMAL",
            },
        )?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let mut store = Store {
            conn: Arc::new(Mutex::new(conn)),
            path,
        };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&mut self) -> Result<()> {
        // A store of this schema needs nothing written: a read-only command
        // (`status` while a large transaction merges) must not wait for
        // the write lock, nor need write access to the file.
        if self.schema_is_current()? {
            return Ok(());
        }
        let path = self.path.display().to_string();
        let tx = self.write()?;
        tx.execute_batch(schema::DDL)?;
        let version: Option<String> = tx
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        match version.as_deref().map(str::parse::<i64>) {
            None => {
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)",
                    [schema::VERSION.to_string()],
                )?;
            }
            Some(Ok(v)) if v <= schema::VERSION => {
                for (from, sql) in schema::UPGRADES {
                    if v <= *from {
                        tx.execute_batch(sql)?;
                    }
                }
                if v < schema::VERSION {
                    tx.execute(
                        "UPDATE meta SET value = ?1 WHERE key = 'schema_version'",
                        [schema::VERSION.to_string()],
                    )?;
                }
            }
            Some(_) => {
                return Err(StoreError::Open {
                    path,
                    message: format!(
                        "the store was written by a newer connector (schema {version:?}, this one reads {})",
                        schema::VERSION
                    ),
                })
            }
        }
        tx.execute_batch(schema::INDEXES)?;
        tx.commit()?;
        Ok(())
    }

    fn schema_is_current(&self) -> Result<bool> {
        let conn = self.conn();
        let has_meta: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta')",
            [],
            |r| r.get(0),
        )?;
        if !has_meta {
            return Ok(false);
        }
        let version: Option<String> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        Ok(version == Some(schema::VERSION.to_string()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Another handle on this store's connection (see [`Store`]).
    pub fn share(&self) -> Store {
        Store {
            conn: self.conn.clone(),
            path: self.path.clone(),
        }
    }

    /// The connection, for one call (a panic elsewhere does not poison it:
    /// SQLite rolls back what that call left open).
    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A read transaction (see [`Tx`]).
    pub(crate) fn read(&self) -> Result<Tx<'_>> {
        self.begin("BEGIN")
    }

    /// A write transaction that holds the write lock from its start.
    pub(crate) fn write(&mut self) -> Result<Tx<'_>> {
        self.begin("BEGIN IMMEDIATE")
    }

    fn begin(&self, begin: &str) -> Result<Tx<'_>> {
        let conn = self.conn();
        if !conn.is_autocommit() {
            // left open by a call that panicked
            let _ = conn.execute_batch("ROLLBACK");
        }
        conn.execute_batch(begin)?;
        Ok(Tx { conn, open: true })
    }
}

/// Loads a document's merge state (default when absent).
pub(crate) fn load_state(tx: &Connection, collection: &str, id: &str) -> Result<DocState> {
    let text: Option<String> = tx
        .prepare_cached("SELECT state FROM documents WHERE collection = ?1 AND id = ?2")?
        .query_row(params![collection, id], |r| r.get(0))
        .optional()?;
    Ok(match text {
        Some(t) => serde_json::from_str(&t)?,
        None => DocState::default(),
    })
}

/// Saves a document's merge state and its materialized `body`.
pub(crate) fn save_state(
    tx: &Connection,
    collection: &str,
    id: &str,
    state: &DocState,
    body: Option<&Map<String, Value>>,
    seq: i64,
    now_ms: i64,
) -> Result<()> {
    let body = body.map(serde_json::to_string).transpose()?;
    tx.prepare_cached(
        "INSERT INTO documents (collection, id, body, state, updated_seq, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (collection, id) DO UPDATE SET
           body = excluded.body, state = excluded.state,
           updated_seq = excluded.updated_seq, updated_ms = excluded.updated_ms",
    )?
    .execute(params![
        collection,
        id,
        body,
        serde_json::to_string(state)?,
        seq,
        now_ms
    ])?;
    Ok(())
}

/// A provider's two shadows of one document (see the schema).
#[derive(Debug, Default)]
pub(crate) struct Shadows {
    pub held: Option<Shadow>,
    pub seen: Option<Shadow>,
    /// `held` is unknown (a dead letter put back): the sink writes whatever
    /// the document is, a delete too.
    pub unknown: bool,
    /// The provider's row left the collection's filter there: the fleet
    /// no longer writes it (until the provider's own feed brings it back).
    pub left_filter: bool,
}

/// `held` of a provider whose row left the collection's filter.
pub(crate) const LEFT_FILTER: &[u8] = b"F";

pub(crate) fn load_shadows(
    tx: &Connection,
    provider: &str,
    collection: &str,
    id: &str,
) -> Result<Shadows> {
    type Blobs = (Option<Vec<u8>>, Option<Vec<u8>>);
    let row: Option<Blobs> = tx
        .prepare_cached(
            "SELECT held, seen FROM shadows WHERE provider = ?1 AND collection = ?2 AND id = ?3",
        )?
        .query_row(params![provider, collection, id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    let Some((held, seen)) = row else {
        return Ok(Shadows::default());
    };
    let seen = seen.and_then(|b| Shadow::decode(&b));
    // held NULL: the same as seen; empty: unknown (re-queued); `F`: left
    // the filter.
    let (unknown, left_filter) = match held.as_deref() {
        Some(b) => (b.is_empty(), b == LEFT_FILTER),
        None => (false, false),
    };
    let held = match held {
        None => seen.clone(),
        Some(b) => Shadow::decode(&b),
    };
    Ok(Shadows {
        held,
        seen,
        unknown,
        left_filter,
    })
}

/// The provider's row of this document does not pass the collection's
/// filter there ([`LEFT_FILTER`]); its `seen` stays.
pub(crate) fn mark_left_filter(
    tx: &Connection,
    provider: &str,
    collection: &str,
    id: &str,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO shadows (provider, collection, id, held) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (provider, collection, id) DO UPDATE SET held = excluded.held",
    )?
    .execute(params![provider, collection, id, LEFT_FILTER])?;
    Ok(())
}

/// The provider's feed reported `image`: it is both seen and held.
pub(crate) fn save_seen(
    tx: &Connection,
    provider: &str,
    collection: &str,
    id: &str,
    image: &Shadow,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO shadows (provider, collection, id, held, seen) VALUES (?1, ?2, ?3, NULL, ?4)
         ON CONFLICT (provider, collection, id) DO UPDATE SET held = NULL, seen = excluded.seen",
    )?
    .execute(params![provider, collection, id, image.encode()])?;
    Ok(())
}

/// The provider's feed reported our own sink's write `image`: it is seen;
/// `held` keeps what the sink recorded last (it may have written again
/// since), or stays "same as seen" if the sink's commit was never recorded.
/// A `held` equal to the image becomes "same as seen" (NULL): the same
/// meaning in half the bytes, for nearly every row a sink wrote.
pub(crate) fn save_own_echo(
    tx: &Connection,
    provider: &str,
    collection: &str,
    id: &str,
    image: &Shadow,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO shadows (provider, collection, id, held, seen) VALUES (?1, ?2, ?3, NULL, ?4)
         ON CONFLICT (provider, collection, id) DO UPDATE SET seen = excluded.seen,
           held = CASE WHEN held = excluded.seen THEN NULL ELSE held END",
    )?
    .execute(params![provider, collection, id, image.encode()])?;
    Ok(())
}

/// A sink wrote `image` to the provider: it is held (seen comes with the
/// echo). Unless the feed has shown the provider holding something else
/// since the write was planned (`seen` then is neither what it was,
/// `planned_seen`, nor the image: a change of the provider's own, after our
/// write or before it): `held` then stays as that change left it, and our
/// echo, if it comes later, corrects it. Recording the image over it made
/// the store believe the provider held our write while it held its own
/// newer change.
pub(crate) fn save_held(
    tx: &Connection,
    provider: &str,
    collection: &str,
    id: &str,
    image: &Shadow,
    planned_seen: Option<&Shadow>,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO shadows (provider, collection, id, held) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (provider, collection, id) DO UPDATE SET held = excluded.held
         WHERE shadows.seen IS ?5 OR shadows.seen = excluded.held",
    )?
    .execute(params![
        provider,
        collection,
        id,
        image.encode(),
        planned_seen.map(Shadow::encode)
    ])?;
    Ok(())
}

/// A document's materialized body (`None` when absent or deleted).
pub(crate) fn load_body(
    tx: &Connection,
    collection: &str,
    id: &str,
) -> Result<Option<Map<String, Value>>> {
    let text: Option<Option<String>> = tx
        .prepare_cached("SELECT body FROM documents WHERE collection = ?1 AND id = ?2")?
        .query_row(params![collection, id], |r| r.get(0))
        .optional()?;
    parse_body(text.flatten())
}

/// Parses a stored body.
pub(crate) fn parse_body(text: Option<String>) -> Result<Option<Map<String, Value>>> {
    Ok(match text {
        Some(t) => match serde_json::from_str(&t)? {
            Value::Object(m) => Some(m),
            _ => None,
        },
        None => None,
    })
}

/// The WAL of the store file at `path`. SQLite follows a symlinked store to
/// the real file and keeps the WAL beside that, so must we: beside the link
/// there is none, and syncing nothing acknowledged positions not on disk.
fn wal_of(path: &Path) -> std::path::PathBuf {
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut wal = real.into_os_string();
    wal.push("-wal");
    wal.into()
}

/// Makes every transaction committed so far to the store file at `path`
/// durable (fsync of its WAL). It needs no connection: a task runs it on
/// another thread while it goes on.
pub fn sync_wal_of(path: &Path) -> Result<()> {
    let wal = wal_of(path);
    match std::fs::File::open(&wal) {
        Ok(f) => f.sync_data().map_err(|e| StoreError::Open {
            path: path.display().to_string(),
            message: format!("fsync of the WAL failed: {e}"),
        }),
        // No WAL (just checkpointed and removed): the database file is synced.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::Open {
            path: path.display().to_string(),
            message: format!("opening the WAL to fsync it: {e}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wal_of_a_symlinked_store_is_the_real_files() {
        let dir = tempfile::tempdir().unwrap();
        let (real, link) = (dir.path().join("real.db"), dir.path().join("link.db"));
        let store = Store::open(&real).unwrap();
        drop(store);
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let mut store = Store::open(&link).unwrap();
        store.set_cursor("x", 1).unwrap();
        let wal = wal_of(&link);
        assert!(wal.exists(), "{}", wal.display());
        assert!(!dir.path().join("link.db-wal").exists());
        sync_wal_of(&link).unwrap();
    }
}
