//! What `connector status` reads: per-provider counters, positions, cursors,
//! errors and dead letters, written by the workers into the store so any
//! process can report them.

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use crate::error::Result;
use crate::fanout::sink_cursor;
use crate::sqlite::Store;
use crate::stamp::now_millis;

/// What a task's permanent error is recorded with (`sink STOPPED (restart
/// once fixed): …`), until the task runs again.
pub const STOPPED: &str = "STOPPED (restart once fixed)";

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProviderStats {
    pub provider: String,
    /// Records read from the provider's feed.
    pub received: u64,
    /// Changes merged into the store.
    pub applied: u64,
    /// Our own writes (or no-ops) seen coming back, dropped.
    pub echoes: u64,
    pub filtered: u64,
    /// Documents written to the provider.
    pub sink_writes: u64,
    pub errors: u64,
    /// Dead letters that need a person (`waiting_letters` left out).
    pub dead_letters: u64,
    /// Writes a foreign key refused, tried again by the sink: not dead
    /// letters for an operator to act on (they land by themselves).
    pub waiting_letters: u64,
    /// Changes of the provider's that lost a conflict in the last 7 days
    /// ([`crate::conflicts`]).
    pub conflicts_lost: u64,
    pub position: Option<String>,
    pub position_updated_ms: Option<i64>,
    pub last_commit_ms: Option<i64>,
    pub last_change_ms: Option<i64>,
    /// Source commit → store commit, for the last batch.
    pub source_lag_ms: Option<i64>,
    pub sink_cursor: Option<i64>,
    /// Log entries the sink has not passed yet.
    pub sink_backlog: Option<i64>,
    pub last_error: Option<String>,
    pub last_error_ms: Option<i64>,
    /// Provider-specific health (a PostgreSQL slot's retained WAL, …).
    pub details: Option<serde_json::Value>,
}

/// Live and deleted document counts of one collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CollectionCount {
    pub collection: String,
    pub documents: u64,
    pub deleted: u64,
}

fn read_position(conn: &rusqlite::Connection, key: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT position FROM positions WHERE provider = ?1",
            [key],
            |r| r.get(0),
        )
        .optional()?)
}

impl Store {
    pub fn provider_stats(&self, provider: &str) -> Result<ProviderStats> {
        let mut s = ProviderStats {
            provider: provider.to_string(),
            ..Default::default()
        };
        self.conn()
            .query_row(
                "SELECT received, applied, echoes, filtered, sink_writes, errors,
                        last_change_ms, last_source_lag_ms, last_error, last_error_ms, details
                 FROM provider_stats WHERE provider = ?1",
                [provider],
                |r| {
                    s.received = r.get::<_, i64>(0)? as u64;
                    s.applied = r.get::<_, i64>(1)? as u64;
                    s.echoes = r.get::<_, i64>(2)? as u64;
                    s.filtered = r.get::<_, i64>(3)? as u64;
                    s.sink_writes = r.get::<_, i64>(4)? as u64;
                    s.errors = r.get::<_, i64>(5)? as u64;
                    s.last_change_ms = r.get(6)?;
                    s.source_lag_ms = r.get(7)?;
                    s.last_error = r.get(8)?;
                    s.last_error_ms = r.get(9)?;
                    s.details = r
                        .get::<_, Option<String>>(10)?
                        .and_then(|t| serde_json::from_str(&t).ok());
                    Ok(())
                },
            )
            .optional()?;
        if let Some((pos, at, commit)) = self
            .conn()
            .query_row(
                "SELECT position, updated_ms, last_commit_ms FROM positions WHERE provider = ?1",
                [provider],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?
        {
            s.position = Some(pos);
            s.position_updated_ms = Some(at);
            s.last_commit_ms = commit;
        }
        s.waiting_letters = self.waiting_count(provider)?;
        s.conflicts_lost = self.conflicts_lost(
            provider,
            crate::stamp::now_millis() - crate::conflicts::RETENTION_MS,
        )?;
        s.dead_letters = self
            .dead_letter_count(Some(provider))?
            .saturating_sub(s.waiting_letters);
        s.sink_cursor = self.cursor(&sink_cursor(provider))?;
        let last = self.last_seq()?;
        s.sink_backlog = s.sink_cursor.map(|c| (last - c).max(0));
        Ok(s)
    }

    /// The saved source position of a provider.
    pub fn position(&self, provider: &str) -> Result<Option<String>> {
        read_position(&self.conn(), provider)
    }

    /// Begins an initial sync in one transaction: `start` (the position the
    /// copy is consistent with, when opening it created the feed) becomes the
    /// provider's stream position if it has none, and every `(key, value)`
    /// progress entry without a value gets one. A copy killed at any point
    /// after this is therefore both resumable (its progress entries exist)
    /// and streamed from the right place (a lost feed is detected, not
    /// silently re-created). With `restart` (every collection copied again,
    /// the operator's answer to a lost feed) `start` replaces the position:
    /// the new feed starts where the new copy is consistent. With `fresh`
    /// (`--restart`: these collections copied again) the progress entries
    /// replace the saved ones in the same transaction: a copy killed then
    /// resumes the new copy, where the old "done" marks had the stream
    /// start at the new feed's position over collections never copied
    /// again.
    pub fn begin_initial_sync(
        &mut self,
        provider: &str,
        start: Option<&str>,
        restart: bool,
        fresh: bool,
        progress: &[(String, String)],
    ) -> Result<()> {
        let now = now_millis();
        let tx = self.write()?;
        if let (Some(start), true) = (start, restart) {
            tx.prepare_cached(
                "INSERT INTO positions (provider, position, updated_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (provider) DO UPDATE SET position = excluded.position,
                   updated_ms = excluded.updated_ms",
            )?
            .execute(params![provider, start, now])?;
        }
        let mut insert = tx.prepare_cached(
            "INSERT INTO positions (provider, position, updated_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (provider) DO NOTHING",
        )?;
        if let Some(start) = start {
            insert.execute(params![provider, start, now])?;
        }
        drop(insert);
        let mut entry = tx.prepare_cached(if fresh {
            "INSERT INTO positions (provider, position, updated_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (provider) DO UPDATE SET position = excluded.position,
               updated_ms = excluded.updated_ms"
        } else {
            "INSERT INTO positions (provider, position, updated_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (provider) DO NOTHING"
        })?;
        for (key, value) in progress {
            entry.execute(params![key, value, now])?;
        }
        drop(entry);
        tx.commit()?;
        Ok(())
    }

    /// Replaces the value saved under `key` with `update(old value)`, in
    /// one write transaction (for bookkeeping kept beside the positions).
    pub fn update_position(
        &mut self,
        key: &str,
        update: impl FnOnce(Option<String>) -> String,
    ) -> Result<()> {
        let tx = self.write()?;
        let old = read_position(&tx, key)?;
        tx.execute(
            "INSERT INTO positions (provider, position, updated_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (provider) DO UPDATE SET position = excluded.position,
               updated_ms = excluded.updated_ms",
            params![key, update(old), now_millis()],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Forgets a provider's stream position and initial-sync progress: its
    /// next source starts at its (new) slot's beginning after a full copy.
    /// `begun`: (progress key, progress) of the collections the copy is to
    /// take, recorded as begun in the same transaction, so a copy that
    /// fails before it starts is still owed (`CONNECTOR_INITIAL_SYNC=never`
    /// resumes begun copies only).
    pub fn forget_positions(&mut self, provider: &str, begun: &[(String, String)]) -> Result<()> {
        let tx = self.write()?;
        tx.execute(
            // Not LIKE: `_` in a provider name is a wildcard there.
            "DELETE FROM positions WHERE provider = ?1
               OR substr(provider, 1, length('initial-sync:' || ?1 || ':')) = 'initial-sync:' || ?1 || ':'",
            [provider],
        )?;
        let now = now_millis();
        for (key, progress) in begun {
            tx.prepare_cached(
                "INSERT INTO positions (provider, position, updated_ms) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![key, progress, now])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Records an error for `status` (the message must already be redacted).
    /// A task's error, the provider's last one; but a task STOPPED stays
    /// the last error shown until that task runs again, whatever its other
    /// task meets meanwhile (a sink that stopped for good while the source
    /// retried a reconnect was no longer said to be stopped).
    pub fn record_error(&mut self, provider: &str, stage: &str, message: &str) -> Result<()> {
        self.conn().execute(
            "INSERT INTO provider_stats (provider, errors, last_error, last_error_ms) VALUES (?1, 1, ?2, ?3)
             ON CONFLICT (provider) DO UPDATE SET errors = errors + 1,
               last_error = CASE WHEN instr(last_error, ?4) > 0 AND instr(excluded.last_error, ?4) = 0
                 THEN last_error ELSE excluded.last_error END,
               last_error_ms = CASE WHEN instr(last_error, ?4) > 0 AND instr(excluded.last_error, ?4) = 0
                 THEN last_error_ms ELSE excluded.last_error_ms END",
            params![provider, format!("{stage}: {message}"), now_millis(), STOPPED],
        )?;
        Ok(())
    }

    /// The provider's `task` (`source`, `sink`) runs again: its recorded
    /// STOPPED is history (another task's stays).
    pub fn note_running(&mut self, provider: &str, task: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE provider_stats SET last_error = replace(last_error, ?2, ?3)
             WHERE provider = ?1 AND instr(last_error, ?2) > 0",
            params![
                provider,
                format!("{task} {STOPPED}"),
                format!("{task} stopped, since started again")
            ],
        )?;
        Ok(())
    }

    /// Saves provider-specific health for `status`, stamped `as_of_ms`:
    /// only a running source refreshes it, and a figure from before the
    /// worker stopped (a slot's retained WAL, which grows most then) must
    /// not read as current.
    pub fn set_provider_details(
        &mut self,
        provider: &str,
        details: &serde_json::Value,
    ) -> Result<()> {
        let mut details = details.clone();
        if let Some(obj) = details.as_object_mut() {
            obj.insert("as_of_ms".into(), now_millis().into());
        }
        self.conn().execute(
            "INSERT INTO provider_stats (provider, details) VALUES (?1, ?2)
             ON CONFLICT (provider) DO UPDATE SET details = excluded.details",
            params![provider, details.to_string()],
        )?;
        Ok(())
    }

    /// Every provider name the store has heard of.
    pub fn known_providers(&self) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT provider FROM provider_stats UNION SELECT provider FROM positions
             UNION SELECT provider FROM dead_letters ORDER BY 1",
        )?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        // Positions named `initial-sync:<provider>:<collection>` are progress
        // records, not providers.
        Ok(rows
            .filter(|r| r.as_ref().map_or(true, |p| !p.contains(':')))
            .collect::<Result<_, _>>()?)
    }

    /// Initial-sync progress of a provider: (collections done, collections
    /// started, rows copied).
    pub fn initial_sync_progress(&self, provider: &str) -> Result<(u64, u64, u64)> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT position FROM positions
             WHERE substr(provider, 1, length('initial-sync:' || ?1 || ':')) = 'initial-sync:' || ?1 || ':'",
        )?;
        let rows = stmt.query_map([provider], |r| r.get::<_, String>(0))?;
        let (mut done, mut started, mut copied) = (0, 0, 0);
        for row in rows {
            let v: serde_json::Value = serde_json::from_str(&row?).unwrap_or_default();
            started += 1;
            done += u64::from(v["done"].as_bool().unwrap_or(false));
            copied += v["rows"].as_u64().unwrap_or(0);
        }
        Ok((done, started, copied))
    }

    pub fn collection_counts(&self) -> Result<Vec<CollectionCount>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT collection, sum(body IS NOT NULL), sum(body IS NULL)
             FROM documents GROUP BY collection ORDER BY collection",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(CollectionCount {
                collection: r.get(0)?,
                documents: r.get::<_, i64>(1)? as u64,
                deleted: r.get::<_, i64>(2)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
